"""The result contract shared by handrolled/, reference/ and compare/.

Data only: frozen, slotted records (handrolled/record.py) and enums, no I/O and no behaviour
beyond trivial derived views.  Both implementations fill these in from raw observations;
compare/ reads them and recomputes every summary from the raw probes as a third opinion.

Conventions
-----------
- Times are integers in nanoseconds since the Unix epoch (CLOCK_REALTIME), the clock that
  kernel socket timestamps (SO_TIMESTAMPNS) and pcap files use, so a probe's times can be
  laid beside a capture of the same probe.  Durations reported to people are float
  milliseconds (``rtt_ms``).
- Addresses are strings in their canonical text form (``ipaddress.ip_address(x).compressed``).
- Timeouts and ICMP errors are outcomes, never exceptions.

Start-up
--------
The contract's types are ``Record``s, which cost tens of microseconds to make where a frozen
dataclass compiles six methods at import (about a millisecond a class on a small machine:
handrolled/record.py).  The SMTP types, which ping and traceroute never use, live in
handrolled/results_smtp.py and load on first use through this module (PEP 562
``__getattr__``): ``from handrolled.results import SmtpResult`` works as before.
"""

from __future__ import annotations

import enum

from handrolled.record import Record

# typing.TYPE_CHECKING without importing typing, which a client run has no other use for (~3 ms)
TYPE_CHECKING = False

# The IP version, the one convention for "address family" across handrolled/, reference/ and
# compare/: 4 or 6, never socket.AF_INET/AF_INET6 (net.address_family converts at the socket).
if TYPE_CHECKING:
    from typing import Literal

    Family = Literal[4, 6]
else:
    Family = int  # annotations are text here (PEP 563): only type checkers read the Literal


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


class Probe(Record):
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


class PingSummary(Record):
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


class PingResult(Record):
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


class Hop(Record):
    """One TTL of a trace: every probe sent with that TTL, in the order sent."""

    ttl: int
    probes: tuple[Probe, ...]


class TraceResult(Record):
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


# -- SMTP: handrolled/results_smtp.py, loaded on first use ----------------------------------------
_SMTP_TYPES = frozenset(
    {
        "Direction",
        "MessageOutcome",
        "RecipientOutcome",
        "Reply",
        "SmtpResult",
        "SmtpSessionResult",
        "SmtpStage",
        "TranscriptLine",
    }
)

if TYPE_CHECKING:
    from handrolled.results_smtp import (  # noqa: F401 (re-exported for type checkers)
        Direction,
        MessageOutcome,
        RecipientOutcome,
        Reply,
        SmtpResult,
        SmtpSessionResult,
        SmtpStage,
        TranscriptLine,
    )


def lazy_names(namespace: dict[str, object], source: str, names: frozenset[str]) -> tuple:
    """PEP 562 ``(__getattr__, __dir__)`` for the module whose globals are ``namespace``: each
    of ``names`` is read from module ``source``, imported on its first use, and kept in
    ``namespace``, so later lookups are ordinary attribute reads."""

    def __getattr__(name: str) -> object:
        if name in names:
            import sys

            # the import statement's own machinery (importlib.import_module bypasses it, and
            # with it -X importtime's report, which tests/test_startup_lazy.py reads)
            __import__(source)
            value = namespace[name] = getattr(sys.modules[source], name)
            return value
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_names(globals(), "handrolled.results_smtp", _SMTP_TYPES)
