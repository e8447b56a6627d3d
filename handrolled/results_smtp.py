"""The SMTP part of the result contract: transcripts, replies, per-recipient outcomes.

Import these from ``handrolled.results`` like the rest of the contract; they live here so that
ping and traceroute, which never need them, do not create them at start-up (see the note in
handrolled/results.py).  Data only, the same conventions: frozen, slotted records and enums,
times in ns since the epoch.  Pure (tests/test_boundaries.py)."""

from __future__ import annotations

import enum

from handrolled.record import Record, field
from handrolled.results import _SMTP_TYPES, Implementation

# the names handrolled.results serves on first use: listed once, there
__all__ = sorted(_SMTP_TYPES)


class Direction(enum.Enum):
    SENT = "->"  # client to server
    RECEIVED = "<-"  # server to client


class TranscriptLine(Record):
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


class Reply(Record):
    code: int
    lines: tuple[str, ...]  # the text of each line, without code, separator or CRLF

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class RecipientOutcome(Record):
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


class SmtpResult(Record):
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


class MessageOutcome(Record):
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


class SmtpSessionResult(Record):
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
