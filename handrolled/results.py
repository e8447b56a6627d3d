"""The result contract shared by handrolled/, reference/ and compare/.

Data only: frozen, slotted dataclasses and enums, no I/O and no behaviour beyond trivial
derived views.  Both implementations fill these in from raw observations; compare/ reads them
and recomputes every summary from the raw probes as a third opinion.

Conventions
-----------
- Times are integers in nanoseconds since the Unix epoch (CLOCK_REALTIME), the clock that
  kernel socket timestamps (SO_TIMESTAMPNS) and pcap files use, so a probe's times can be
  laid beside a capture of the same probe.  Durations reported to people are float
  milliseconds (``rtt_ms``).
- Addresses are strings in their canonical text form (``ipaddress.ip_address(x).compressed``).
- Timeouts and ICMP errors are outcomes, never exceptions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

# The IP version, the one convention for "address family" across handrolled/, reference/ and
# compare/: 4 or 6, never socket.AF_INET/AF_INET6 (net.address_family converts at the socket).
Family = Literal[4, 6]


class Outcome(enum.Enum):
    """What became of one probe."""

    REPLY = "reply"  # echo reply (or, for UDP/TCP traceroute, the destination's answer)
    TIME_EXCEEDED = "time-exceeded"  # ICMP type 11 / ICMPv6 type 3 from a router
    UNREACHABLE = "unreachable"  # ICMP type 3 / ICMPv6 type 1; the code is in Probe.icmp_code
    TIMEOUT = "timeout"  # nothing matched before the wait ran out
    CORRUPT = "corrupt"  # a reply matched by ident/seq but with a bad checksum or payload
    DUPLICATE = "duplicate"  # a second reply to a probe already answered


class Method(enum.Enum):
    """How a probe is carried."""

    ICMP = "icmp"  # ICMP echo request (ICMPv6 echo request for IPv6)
    UDP = "udp"  # UDP datagram to a high port (classic traceroute, 33434+)
    TCP = "tcp"  # TCP SYN


class Implementation(enum.Enum):
    HANDROLLED = "handrolled"
    REFERENCE = "reference"
    SMTPLIB = "smtplib"  # the standard library's smtplib, the second SMTP witness


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe sent and what came back for it.

    ``sent`` is exactly what was handed to the socket: for an ICMP socket the ICMP message
    (type, code, checksum, ident, seq, payload); for a socket with IP_HDRINCL the whole IP
    datagram; for UDP/TCP probes the transport header and payload.  ``received`` is the bytes
    of the reply as read from the socket (for IPv4 raw sockets this includes the IP header).
    """

    seq: int
    ident: int
    ttl: int
    sent: bytes
    send_ns: int
    outcome: Outcome
    method: Method = Method.ICMP
    recv_ns: int | None = None
    rtt_ms: float | None = None  # as the implementation reports it (recv - send, in ms)
    reply_from: str | None = None  # source address of the reply or ICMP error
    reply_name: str | None = None  # reverse DNS of reply_from; None: not looked up / no name
    reply_ttl: int | None = None  # TTL / hop limit of the reply as received
    icmp_type: int | None = None
    icmp_code: int | None = None
    received: bytes | None = None
    src_port: int | None = None  # UDP/TCP probes
    dst_port: int | None = None
    kernel_timestamp: bool = False  # recv_ns came from the kernel (SO_TIMESTAMPNS)
    note: str = ""  # why CORRUPT, which field differed, etc.
    # traceroute: what an ECMP router hashes (UDP/TCP: source and destination port; ICMP:
    # identifier and checksum), and the path MTU this probe was sized to (traceroute(8)'s F=;
    # ping -M: the MTU its frag-needed / Packet Too Big / local EMSGSIZE named)
    flow: tuple[int, ...] | None = None
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class PingSummary:
    """iputils-style statistics; RTTs in milliseconds, None when nothing came back."""

    transmitted: int
    received: int
    duplicates: int = 0
    errors: int = 0  # ICMP errors (time exceeded, unreachable) and corrupt replies
    loss_percent: float = 100.0
    min_ms: float | None = None
    avg_ms: float | None = None
    max_ms: float | None = None
    stdev_ms: float | None = None  # sample standard deviation (statistics.stdev); 0.0 for one
    mdev_ms: float | None = None  # iputils' mdev: population standard deviation


@dataclass(frozen=True, slots=True)
class PingResult:
    target: str  # as the user gave it
    address: str  # what it resolved to
    family: Family
    ident: int  # the identifier we chose (a datagram socket may rewrite it: see probes)
    payload: bytes
    probes: tuple[Probe, ...]
    summary: PingSummary
    implementation: Implementation
    socket_kind: str = "raw"  # "raw" or "dgram"
    started_ns: int = 0
    elapsed_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Hop:
    """One TTL of a trace: every probe sent with that TTL, in the order sent."""

    ttl: int
    probes: tuple[Probe, ...]


@dataclass(frozen=True, slots=True)
class TraceResult:
    target: str
    address: str
    family: Family
    method: Method
    hops: tuple[Hop, ...]
    reached: bool  # the destination answered
    implementation: Implementation
    port: int | None = None  # base destination port for UDP/TCP
    started_ns: int = 0
    elapsed_ms: float = 0.0


class Direction(enum.Enum):
    SENT = "->"  # client to server
    RECEIVED = "<-"  # server to client


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One line (or block: the message body is one entry) of an SMTP dialogue.

    ``data`` is the exact bytes including the CRLF.  A redacted entry (AUTH secrets) has
    ``redacted=True`` and data replaced by a placeholder: secrets never appear here.
    ``tls``: carried inside TLS (after the STARTTLS handshake, or implicit TLS).
    ``expected`` False (swaks' ``**>``/``<**``): a reply that was not the success its command
    wanted (a refusal, RFC 5321 §4.2.1), or a command the dialogue ended before answering.
    """

    direction: Direction
    data: bytes
    time_ns: int
    redacted: bool = False
    tls: bool = False
    expected: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without code, separator or CRLF

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    address: str
    reply: Reply
    accepted: bool  # 2xx to RCPT TO


class SmtpStage(enum.Enum):
    """Where an SMTP dialogue ended: the step under way when it stopped (DONE: delivered and
    QUIT answered).  A refusal's stage is the command its reply answered."""

    CONNECT = "connect"  # TCP connection (and implicit TLS, RFC 8314)
    GREETING = "greeting"  # the server's opening reply (RFC 5321 §3.1)
    EHLO = "ehlo"  # EHLO, or its HELO fallback (§3.2)
    STARTTLS = "starttls"  # STARTTLS and the handshake (RFC 3207)
    AUTH = "auth"  # RFC 4954
    MAIL = "mail"  # MAIL FROM, and the checks of its parameters against EHLO
    RCPT = "rcpt"
    DATA = "data"
    CONTENT = "content"  # the message and its final dot (§4.1.1.4)
    QUIT = "quit"  # delivered; QUIT was not answered with 221
    DONE = "done"


@dataclass(frozen=True, slots=True)
class SmtpResult:
    server: str
    port: int
    mail_from: str
    recipients: tuple[RecipientOutcome, ...]
    transcript: tuple[TranscriptLine, ...]
    delivered: bool  # True only if the server answered the final dot with 250
    implementation: Implementation
    final_reply: Reply | None = None  # the reply to the final dot
    extensions: tuple[tuple[str, str], ...] = field(default=())  # EHLO keyword, parameters
    tls: str | None = None  # None, "starttls" or "implicit"
    error: str | None = None  # one line: why it was not delivered (None: stopped as asked)
    started_ns: int = 0
    elapsed_ms: float = 0.0
    stage: SmtpStage = SmtpStage.CONNECT  # where the dialogue ended
    # The server's 4xx/5xx reply that ended the dialogue (every recipient refused: the last
    # RCPT reply); None when nothing was refused (delivered, or a network, TLS, protocol or
    # local failure).
    refusal: Reply | None = None
    tls_cipher: str | None = None  # "TLSv1.3:TLS_AES_256_GCM_SHA384:256", as swaks shows it


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """One message of an SMTP session: what became of its mail transaction (RFC 5321 §3.3).

    ``stage`` is where its transaction ended (DONE: the final dot answered 250); ``refusal``
    the server's 4xx/5xx that ended it; ``error`` one line when it was not delivered
    (refused, or never sent because the session ended first: then ``stage`` is MAIL and
    ``recipients`` empty).
    """

    recipients: tuple[RecipientOutcome, ...]
    delivered: bool  # True only if the server answered this message's final dot with 250
    final_reply: Reply | None = None
    stage: SmtpStage = SmtpStage.MAIL
    refusal: Reply | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SmtpSessionResult:
    """Many messages over one connection: one ``MessageOutcome`` per message asked for, in
    order, and the session's own transcript, stage and error (why it ended early)."""

    server: str
    port: int
    mail_from: str
    messages: tuple[MessageOutcome, ...]
    transcript: tuple[TranscriptLine, ...]
    implementation: Implementation
    extensions: tuple[tuple[str, str], ...] = field(default=())
    tls: str | None = None
    tls_cipher: str | None = None
    pipelined: bool = False  # transactions were pipelined across (RFC 2920 §3.1)
    connections: int = 0  # TCP connections opened (1 once connected)
    error: str | None = None  # one line: why the session ended before its last message
    started_ns: int = 0
    elapsed_ms: float = 0.0
    stage: SmtpStage = SmtpStage.CONNECT  # where the session ended (DONE: QUIT answered)
    refusal: Reply | None = None  # a refusal that ended the session (greeting, EHLO, 421...)

    @property
    def delivered(self) -> int:
        """How many messages the server accepted."""
        return sum(m.delivered for m in self.messages)
