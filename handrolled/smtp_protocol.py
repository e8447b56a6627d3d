"""Sans-I/O SMTP client state machine (RFC 5321), in the style of h11.  Pure: no I/O.

The driver (handrolled/smtp.py) owns the socket.  This module turns the client's intentions
into command bytes and turns the bytes the server sends into complete replies:

    conn = ClientConnection()
    conn.receive_data(b"220 mx.example ESMTP\\r\\n")
    conn.next_event()            # -> Answer(command=Command.GREETING, reply=Reply(220, ...))
    wire = conn.send(Ehlo("client.example"))     # -> b"EHLO client.example\\r\\n"

Every legal move is one entry of ``TRANSITIONS``: sending a command, or receiving the reply to
one (classified as OK, CHALLENGE or FAIL).  Anything else is a ``LocalProtocolError`` (we misused
the protocol) or a ``RemoteProtocolError`` (the server did).  Buffers are bounded: an over-long
reply line, a reply with too many lines or octets, and bytes that arrive when no reply is
pending are errors, never hangs.

API
---
``ClientConnection(pipelining=True)``
    ``.send(event) -> bytes``; ``.send_all(events) -> list[bytes]`` (a group, all or
    nothing); ``.can_send(command) -> bool``; ``.receive_data(data)``
    (``b""`` means EOF);
    ``.next_event() -> Answer | ConnectionClosed | NEED_DATA``; ``.tls_established()``;
    ``.foresee(line, events)`` (the bytes ``send_all(events)`` will make once ``line``,
    DATA's 354 heard before, arrives: None when not known); ``.state``, ``.extensions``,
    ``.pipelining``, ``.pending``, ``.in_transaction`` (MAIL
    accepted and no dot or RSET since: the next MAIL needs RSET first).  With PIPELINING the
    groups are MAIL, RCPT..., DATA, which the previous message's content or an RSET may open,
    and the content then QUIT (RFC 2920 §3.1).
``encode_data(message) -> bytes`` / ``decode_data(wire) -> bytes``
    The DATA body: CRLF normalisation, dot-stuffing and the final ``.CRLF`` (RFC 5321 §4.5.2).
``data_size(message) -> int``
    The octets SIZE declares (RFC 1870): ``len(decode_data(encode_data(message)))``.
``encode_reply(reply) -> bytes`` / ``decode_reply(wire) -> Reply``
    One whole reply, for tests and tools.
``parse_ehlo(reply) -> dict[str, str]``
    EHLO keywords (upper case) to their parameters (RFC 5321 §4.1.1.1).
``forbidden_char(value) -> "CR" | "LF" | "NUL" | None``
    The first character that may never appear inside a command line or header.
``address_problem(address)`` / ``domain_problem(name)`` / ``message_problem(message)``
    Why a mailbox, an EHLO name or a message cannot be sent (None: it can); the rules
    ``handrolled.requests.MailRequest`` applies before connecting and the codec on encoding.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from typing import ClassVar

from handrolled.errors import LocalProtocolError, RemoteProtocolError
from handrolled.record import Record, field
from handrolled.results import Reply

__all__ = [
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "MAX_REPLY_OCTETS",
    "MAX_TEXT_LINE",
    "NEED_DATA",
    "TRANSITIONS",
    "Answer",
    "Auth",
    "AuthResponse",
    "ClientConnection",
    "Command",
    "ConnectionClosed",
    "Content",
    "Data",
    "Ehlo",
    "Helo",
    "MailFrom",
    "Noop",
    "Quit",
    "RcptTo",
    "Rset",
    "StartTls",
    "State",
    "Verdict",
    "address_problem",
    "check_address",
    "check_domain",
    "data_size",
    "decode_data",
    "decode_reply",
    "domain_problem",
    "encode_data",
    "encode_reply",
    "forbidden_char",
    "message_problem",
    "parse_ehlo",
]

MAX_REPLY_LINE = 512  # RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF
MAX_COMMAND_LINE = 512  # RFC 5321 §4.5.3.1.4; parameters from extensions add to it
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3: a reverse- or forward-path, "<" and ">" included
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_AUTH_LINE = 12288  # RFC 4954 §4: AUTH lines may be up to 12288 octets
MAX_TEXT_LINE = 1000  # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF
MAX_REPLY_LINES = 100  # our bound on one (multiline) reply
MAX_REPLY_OCTETS = 16384  # our bound on one reply
MAX_BUFFER = 1 << 20  # our bound on unread bytes from the server


class Command(enum.Enum):
    """What a reply answers.  GREETING and CONTENT are not commands but are answered."""

    # Speed: members are singletons compared by identity, so the identity hash serves as
    # well as Enum's own (which hashes the name, in Python) and costs nothing.
    __hash__ = object.__hash__

    GREETING = "greeting"  # the server's opening reply (RFC 5321 §3.1)
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"  # RFC 3207
    AUTH = "AUTH"  # RFC 4954
    AUTH_RESPONSE = "auth-response"  # a line answering a 334 challenge (RFC 4954 §4)
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    CONTENT = "content"  # the message and its final dot (RFC 5321 §4.1.1.4)
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


class State(enum.Enum):
    """Where the client is in the dialogue, as of what it has sent."""

    # Speed: members are singletons compared by identity, so the identity hash serves as
    # well as Enum's own (which hashes the name, in Python) and costs nothing.
    __hash__ = object.__hash__

    GREETING = "greeting"  # waiting for the server's 220
    REFUSED = "refused"  # the greeting was not 220: only QUIT is left (RFC 5321 §3.1)
    HELLO = "hello"  # must say EHLO or HELO (at the start, after a failed EHLO, after TLS)
    HELLO_SENT = "hello-sent"
    READY = "ready"  # session open, no mail transaction
    STARTTLS_SENT = "starttls-sent"
    TLS = "tls"  # 220 to STARTTLS: the driver must handshake, then call tls_established()
    AUTH_SENT = "auth-sent"
    AUTH_CHALLENGE = "auth-challenge"  # 334: send an AuthResponse
    MAIL_SENT = "mail-sent"
    RCPT_SENT = "rcpt-sent"  # at least one RCPT sent
    DATA_SENT = "data-sent"
    CONTENT = "content"  # 354: send the Content
    CONTENT_SENT = "content-sent"
    QUIT_SENT = "quit-sent"
    CLOSED = "closed"
    ERROR = "error"  # the server broke the protocol; nothing more may be done


class Verdict(enum.Enum):
    __hash__ = object.__hash__  # see Command

    OK = "ok"
    CHALLENGE = "challenge"  # 334 to AUTH (RFC 4954 §4)
    FAIL = "fail"


# --- events the client sends ----------------------------------------------------------------


class Ehlo(Record):
    name: str
    command: ClassVar[Command] = Command.EHLO


class Helo(Record):
    name: str
    command: ClassVar[Command] = Command.HELO


class StartTls(Record):
    command: ClassVar[Command] = Command.STARTTLS


class Auth(Record):
    """``AUTH mechanism [initial-response]``; the response is already base64 (RFC 4954 §4)."""

    mechanism: str
    initial_response: str | None = field(default=None, repr=False)
    command: ClassVar[Command] = Command.AUTH


class AuthResponse(Record):
    """One base64 line answering a 334 challenge, or ``*`` to cancel (RFC 4954 §4)."""

    response: str = field(repr=False)
    command: ClassVar[Command] = Command.AUTH_RESPONSE


class MailFrom(Record):
    """``MAIL FROM:<address> [params]``; ``address`` may be empty (the null reverse-path)."""

    address: str
    params: tuple[str, ...] = ()
    command: ClassVar[Command] = Command.MAIL


class RcptTo(Record):
    address: str
    params: tuple[str, ...] = ()
    command: ClassVar[Command] = Command.RCPT


class Data(Record):
    command: ClassVar[Command] = Command.DATA


class Content(Record):
    """The RFC 5322 message as given; ``send`` normalises, dot-stuffs and ends it."""

    message: bytes = field(repr=False)
    command: ClassVar[Command] = Command.CONTENT


class Rset(Record):
    command: ClassVar[Command] = Command.RSET


class Noop(Record):
    command: ClassVar[Command] = Command.NOOP


class Quit(Record):
    command: ClassVar[Command] = Command.QUIT


Event = (
    Ehlo | Helo | StartTls | Auth | AuthResponse | MailFrom | RcptTo | Data | Content | Rset
) | (Noop | Quit)

# --- events the client receives -------------------------------------------------------------


class Answer(Record):
    """A complete reply and the command it answers.

    ``argument`` is the address for MAIL/RCPT and the name for EHLO/HELO, so a driver can pair
    pipelined replies with recipients.  ``raw`` is each reply line exactly as received.
    """

    command: Command
    reply: Reply
    verdict: Verdict
    argument: str = ""
    raw: tuple[bytes, ...] = ()


class ConnectionClosed(Record):
    """The server closed the connection where that is allowed (after QUIT, or when idle)."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()  # next_event(): no complete reply buffered yet

# --- the transition table -------------------------------------------------------------------


class _Send(Record):
    command: Command


class _Got(Record):
    command: Command
    verdict: Verdict


S, C, V = State, Command, Verdict
_ANY = (V.OK, V.FAIL)

TRANSITIONS: dict[tuple[State, _Send | _Got], State] = {
    # RFC 5321 §3.1: the session opens with the server's greeting.
    (S.GREETING, _Got(C.GREETING, V.OK)): S.HELLO,
    (S.GREETING, _Got(C.GREETING, V.FAIL)): S.REFUSED,
    (S.REFUSED, _Send(C.QUIT)): S.QUIT_SENT,
    # §4.1.1.1 / §3.2: EHLO, falling back to HELO when EHLO is refused.
    (S.HELLO, _Send(C.EHLO)): S.HELLO_SENT,
    (S.HELLO, _Send(C.HELO)): S.HELLO_SENT,
    (S.HELLO, _Send(C.QUIT)): S.QUIT_SENT,
    (S.HELLO_SENT, _Got(C.EHLO, V.OK)): S.READY,
    (S.HELLO_SENT, _Got(C.EHLO, V.FAIL)): S.HELLO,
    (S.HELLO_SENT, _Got(C.HELO, V.OK)): S.READY,
    (S.HELLO_SENT, _Got(C.HELO, V.FAIL)): S.HELLO,
    (S.READY, _Send(C.EHLO)): S.HELLO_SENT,
    # RFC 3207: STARTTLS, then a fresh EHLO over TLS (tls_established() takes TLS to HELLO).
    (S.READY, _Send(C.STARTTLS)): S.STARTTLS_SENT,
    (S.STARTTLS_SENT, _Got(C.STARTTLS, V.OK)): S.TLS,
    (S.STARTTLS_SENT, _Got(C.STARTTLS, V.FAIL)): S.READY,
    # RFC 4954 §4: AUTH, any number of 334 challenges, then 235 or a failure.
    (S.READY, _Send(C.AUTH)): S.AUTH_SENT,
    (S.AUTH_SENT, _Got(C.AUTH, V.OK)): S.READY,
    (S.AUTH_SENT, _Got(C.AUTH, V.CHALLENGE)): S.AUTH_CHALLENGE,
    (S.AUTH_SENT, _Got(C.AUTH, V.FAIL)): S.READY,
    (S.AUTH_CHALLENGE, _Send(C.AUTH_RESPONSE)): S.AUTH_SENT,
    (S.AUTH_SENT, _Got(C.AUTH_RESPONSE, V.OK)): S.READY,
    (S.AUTH_SENT, _Got(C.AUTH_RESPONSE, V.CHALLENGE)): S.AUTH_CHALLENGE,
    (S.AUTH_SENT, _Got(C.AUTH_RESPONSE, V.FAIL)): S.READY,
    # §3.3: a mail transaction.  With PIPELINING (RFC 2920) MAIL, RCPT... and DATA go out as
    # one group, so replies to MAIL and RCPT may arrive after DATA was sent: they do not move
    # the state; the reply to DATA does.
    (S.READY, _Send(C.MAIL)): S.MAIL_SENT,
    (S.MAIL_SENT, _Got(C.MAIL, V.OK)): S.MAIL_SENT,
    (S.MAIL_SENT, _Got(C.MAIL, V.FAIL)): S.READY,
    (S.MAIL_SENT, _Send(C.RCPT)): S.RCPT_SENT,
    (S.RCPT_SENT, _Send(C.RCPT)): S.RCPT_SENT,
    (S.RCPT_SENT, _Send(C.DATA)): S.DATA_SENT,
    **{(S.RCPT_SENT, _Got(C.MAIL, v)): S.RCPT_SENT for v in _ANY},
    **{(S.RCPT_SENT, _Got(C.RCPT, v)): S.RCPT_SENT for v in _ANY},
    **{(S.DATA_SENT, _Got(C.MAIL, v)): S.DATA_SENT for v in _ANY},
    **{(S.DATA_SENT, _Got(C.RCPT, v)): S.DATA_SENT for v in _ANY},
    (S.DATA_SENT, _Got(C.DATA, V.OK)): S.CONTENT,
    (S.DATA_SENT, _Got(C.DATA, V.FAIL)): S.READY,
    (S.CONTENT, _Send(C.CONTENT)): S.CONTENT_SENT,
    (S.CONTENT_SENT, _Got(C.CONTENT, V.OK)): S.READY,
    (S.CONTENT_SENT, _Got(C.CONTENT, V.FAIL)): S.READY,
    # §3.3: after the final dot's reply, the next transaction needs no RSET.  RFC 2920 §3.1
    # lets the content open the next group (content, MAIL, RCPT..., DATA in one write), and
    # QUIT may end a group: the reply to the dot then arrives after they were sent and, like
    # the replies to MAIL and RCPT, does not move the state.
    (S.CONTENT_SENT, _Send(C.MAIL)): S.MAIL_SENT,
    (S.CONTENT_SENT, _Send(C.QUIT)): S.QUIT_SENT,
    **{(s, _Got(C.CONTENT, v)): s for s in (S.MAIL_SENT, S.RCPT_SENT, S.DATA_SENT) for v in _ANY},
    **{(S.QUIT_SENT, _Got(C.CONTENT, v)): S.QUIT_SENT for v in _ANY},
    # §4.1.1.5 RSET aborts the transaction; §4.1.1.9 NOOP changes nothing.  RFC 2920 §3.1:
    # RSET may open a group (RSET, MAIL, RCPT..., DATA), its reply then arriving later.
    **{(s, _Send(C.RSET)): S.READY for s in (S.READY, S.MAIL_SENT, S.RCPT_SENT)},
    **{
        (s, _Got(C.RSET, v)): s
        for s in (S.READY, S.MAIL_SENT, S.RCPT_SENT, S.DATA_SENT)
        for v in _ANY
    },
    **{(s, _Send(C.NOOP)): s for s in (S.READY, S.MAIL_SENT, S.RCPT_SENT)},
    **{(s, _Got(C.NOOP, v)): s for s in (S.READY, S.MAIL_SENT, S.RCPT_SENT) for v in _ANY},
    # §4.1.1.10 QUIT, from anywhere a command may be sent.
    **{(s, _Send(C.QUIT)): S.QUIT_SENT for s in (S.READY, S.MAIL_SENT, S.RCPT_SENT)},
    **{(S.QUIT_SENT, _Got(C.QUIT, v)): S.CLOSED for v in _ANY},
}
del S, C, V
# Speed: TRANSITIONS indexed by state, so a move is two lookups of identity-hashed keys
# instead of hashing a (state, record) pair; TRANSITIONS stays the one table.
_SEND = {c: _Send(c) for c in Command}
_ON_SEND: dict[State, dict[Command, State]] = {s: {} for s in State}
_ON_GOT: dict[State, dict[tuple[Command, Verdict], State]] = {s: {} for s in State}
for (_state, _symbol), _new in TRANSITIONS.items():
    if isinstance(_symbol, _Send):
        _ON_SEND[_state][_symbol.command] = _new
    else:
        _ON_GOT[_state][_symbol.command, _symbol.verdict] = _new
del _state, _symbol, _new
_MAX_ENCODED = 64

# The reply codes that count as success for each command (RFC 5321 §4.3.2, RFC 3207 §4,
# RFC 4954 §6).  Anything else is FAIL, except 334 to AUTH, which is a CHALLENGE.
_OK_CODES: dict[Command, frozenset[int]] = {
    Command.GREETING: frozenset({220}),
    Command.EHLO: frozenset({250}),
    Command.HELO: frozenset({250}),
    Command.STARTTLS: frozenset({220}),
    Command.AUTH: frozenset({235}),
    Command.AUTH_RESPONSE: frozenset({235}),
    Command.MAIL: frozenset({250}),
    Command.RCPT: frozenset({250, 251}),
    Command.DATA: frozenset({354}),
    Command.CONTENT: frozenset({250}),
    Command.RSET: frozenset({250}),
    Command.NOOP: frozenset({250}),
    Command.QUIT: frozenset({221}),
}

# RFC 2920 §3.1: only these may be followed by another command before their reply arrives
# (the message content may open a group) ...
_PIPELINE_HEAD = frozenset({Command.MAIL, Command.RCPT, Command.CONTENT, Command.RSET})
# ... and these may follow them (DATA and QUIT only last: their replies change the state).
# Our groups: [content or RSET,] MAIL, RCPT..., DATA; and content, QUIT.
_PIPELINE_TAIL = frozenset({Command.MAIL, Command.RCPT, Command.DATA, Command.QUIT})

_SECRET = frozenset({Command.AUTH, Command.AUTH_RESPONSE})
_CONTENT_ONLY = frozenset({Command.CONTENT})
_ENDS_TRANSACTION = frozenset(
    {Command.CONTENT, Command.RSET, Command.EHLO, Command.HELO, Command.STARTTLS}
)


def verdict_for(command: Command, code: int) -> Verdict:
    """Classify a reply code as an answer to ``command``."""
    if code in _OK_CODES[command]:
        return Verdict.OK
    if code == 334 and command in _SECRET:
        return Verdict.CHALLENGE
    return Verdict.FAIL


# --- checks on what we send -----------------------------------------------------------------


def forbidden_char(value: str) -> str | None:
    """ "CR", "LF" or "NUL" if ``value`` holds one (it would end or corrupt a line), else None."""
    for char, name in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if char in value:
            return name
    return None


def _control(value: str) -> str | None:
    """The first control character (C0, DEL, C1) or Unicode line/paragraph separator."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


def address_problem(address: str) -> str | None:
    """Why ``address`` cannot go between the angle brackets of MAIL/RCPT, or None.

    RFC 5321 §4.1.2: a mailbox holds no controls, no white space outside quotes (we send none)
    and no "<" or ">"; §4.5.3.1.3: a path, brackets included, is at most 256 octets.
    """
    bad = forbidden_char(address)
    if bad:
        return f"contains {bad}"
    control = _control(address)
    if control:
        return f"contains the control character {control}"
    if any(c in "<>" or c.isspace() for c in address):
        return "contains '<', '>' or white space"
    path = len(address.encode("utf-8")) + 2
    if path > MAX_PATH:
        return f"makes a {path}-octet path; the limit is {MAX_PATH} (RFC 5321 §4.5.3.1.3)"
    return None


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")  # RFC 5321 §4.1.2
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")  # §4.1.3


def _address_literal_ok(literal: str) -> bool:
    """RFC 5321 §4.1.3: [IPv4], [IPv6:...] or [tag:content]."""
    inner = literal[1:-1]
    try:
        if inner.upper().startswith("IPV6:"):
            return ipaddress.ip_address(inner[5:]).version == 6
        if ":" not in inner:
            return ipaddress.ip_address(inner).version == 4
    except ValueError:
        return False
    return bool(_GENERAL_LITERAL.match(inner))


def domain_problem(name: str) -> str | None:
    """Why ``name`` cannot be the EHLO/HELO argument, or None.

    RFC 5321 §4.1.1.1: the argument is a Domain or an address-literal.  §4.1.2: a Domain is
    dot-separated labels of ASCII letters, digits and inner hyphens (a name in another script
    goes as its IDNA A-label, "xn--..."); labels are 1-63 octets (RFC 1035 §2.3.4), the whole
    at most 255 (RFC 5321 §4.5.3.1.2).
    """
    bad = forbidden_char(name)
    if bad:
        return f"contains {bad}"
    control = _control(name)
    if control:
        return f"contains the control character {control}"
    if not name:
        return "is empty"
    if not name.isascii():
        return "is not ASCII: give a domain in its IDNA A-label form (xn--...)"
    if any(c.isspace() for c in name):
        return "contains white space"
    if len(name) > MAX_DOMAIN:
        return f"is {len(name)} octets; a domain is at most {MAX_DOMAIN} (RFC 5321 §4.5.3.1.2)"
    if name.startswith("["):
        if name.endswith("]") and _address_literal_ok(name):
            return None
        return "is not an address literal ([192.0.2.1], [IPv6:2001:db8::1]; RFC 5321 §4.1.3)"
    if not all(_LABEL.match(label) for label in name.split(".")):
        return (
            "is not a domain: labels of letters, digits and inner hyphens, 1-63 octets, "
            "separated by single dots (RFC 5321 §4.1.2)"
        )
    return None


def check_address(address: str, what: str = "address") -> None:
    """Refuse a mailbox that would break the command line (see ``address_problem``)."""
    problem = address_problem(address)
    if problem:
        raise LocalProtocolError(f"{what} {address!r} {problem}: refused before sending")


def check_domain(name: str) -> None:
    """Refuse an EHLO/HELO name that is not a domain or address literal (``domain_problem``)."""
    problem = domain_problem(name)
    if problem:
        raise LocalProtocolError(f"HELO name {name!r} {problem}: refused before sending")


# --- the DATA body --------------------------------------------------------------------------


def _lines(message: bytes) -> list[bytes]:
    """Split on CRLF, bare CR or bare LF (all become CRLF on the wire, RFC 5321 §2.3.8)."""
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


def encode_data(message: bytes) -> bytes:
    """The DATA body for ``message``: CRLF line ends, dot-stuffed, ending ``CRLF.CRLF``.

    RFC 5321 §4.5.2: a line that starts with "." gets one more.  A message that does not end
    with a line break gets one, so the final dot is on a line of its own (§4.1.1.4).
    """
    lines = _lines(message)
    if lines and lines[-1] == b"":
        lines.pop()  # the message ended with a line break
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


def data_size(message: bytes) -> int:
    """RFC 1870 §4: the octets ``encode_data`` sends, CRLFs included, without dot-stuffing or
    the final dot."""
    lines = _lines(message)
    if lines and lines[-1] == b"":
        lines.pop()
    return sum(len(line) + 2 for line in lines)


def decode_data(wire: bytes) -> bytes:
    """Undo ``encode_data`` as a server does: drop the final dot line and one leading dot."""
    if not (wire == b".\r\n" or wire.endswith(b"\r\n.\r\n")):
        raise RemoteProtocolError("DATA body does not end with CRLF.CRLF")
    body = wire[:-3]
    out = bytearray()
    for line in body.split(b"\r\n")[:-1]:
        out += (line[1:] if line.startswith(b".") else line) + b"\r\n"
    return bytes(out)


def message_problem(message: bytes) -> str | None:
    """Why ``message`` cannot be sent as DATA content, or None: RFC 5321 §4.5.3.1.6, a text
    line is at most 1000 octets with its CRLF."""
    for number, line in enumerate(_lines(message), start=1):
        # +1: a dot-stuffed line may be one octet longer on the wire (§4.5.3.1.6)
        if len(line) + 2 > MAX_TEXT_LINE:
            return (
                f"line {number} is {len(line)} octets; SMTP allows 998 (RFC 5321 "
                "§4.5.3.1.6): wrap it or use a transfer encoding"
            )
    return None


def _check_text_lines(message: bytes) -> None:
    problem = message_problem(message)
    if problem:
        raise LocalProtocolError(f"message {problem}")


# --- replies --------------------------------------------------------------------------------


# RFC 5321 §4.2: Reply-code [ SP / "-" text ]; the first digit 2-5, the second 0-5.
_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?\Z", re.DOTALL)


def _parse_line(line: bytes) -> tuple[int, bool, str]:
    """One reply line without its CRLF -> (code, is_last, text).  RFC 5321 §4.2."""
    match = _REPLY_LINE.match(line)
    if match:  # speed: one regular expression decides a well-formed line
        code, sep, text = match.groups()
        return int(code), sep != b"-", text.decode("utf-8", errors="replace") if text else ""
    head = line[:3]
    if len(head) != 3 or not head.isdigit() or head[0:1] not in b"2345" or head[1:2] > b"5":
        raise RemoteProtocolError(f"not an SMTP reply line: {line[:40]!r}")
    sep = line[3:4]
    if sep not in (b"", b" ", b"-"):
        raise RemoteProtocolError(f"bad separator after reply code: {line[:40]!r}")
    text = line[4:].decode("utf-8", errors="replace")
    return int(head), sep != b"-", text


def encode_reply(reply: Reply) -> bytes:
    """A reply as a server sends it: ``250-first``... ``250 last`` (RFC 5321 §4.2.1)."""
    lines = reply.lines or ("",)
    out = bytearray()
    for i, text in enumerate(lines):
        sep = "-" if i < len(lines) - 1 else " "
        out += f"{reply.code:03d}{sep}{text}\r\n".encode()
    return bytes(out)


def decode_reply(wire: bytes) -> Reply:
    """Exactly one complete reply -> Reply; trailing bytes or a partial reply are errors."""
    conn = ClientConnection()
    conn.receive_data(wire)
    event = conn.next_event()
    if not isinstance(event, Answer):
        raise RemoteProtocolError("incomplete reply")
    if conn.buffered:
        raise RemoteProtocolError("trailing data after the reply")
    return event.reply


def parse_ehlo(reply: Reply) -> dict[str, str]:
    """EHLO reply -> {KEYWORD: parameters}; the first line is the server's name."""
    extensions: dict[str, str] = {}
    for text in reply.lines[1:]:
        keyword, _, params = text.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


# --- the connection -------------------------------------------------------------------------


class ClientConnection:
    """An SMTP client's side of one session; holds no socket (see module docstring)."""

    def __init__(self, pipelining: bool = True) -> None:
        self.state = State.GREETING
        self.want_pipelining = pipelining
        self._extensions: dict[str, str] = {}
        self.mail_params: tuple[str, ...] = ()  # of the current transaction
        # RFC 5321 §3.3: the server accepted MAIL and the transaction has not ended (only the
        # dot's reply, RSET, or a new EHLO/HELO end it, §4.1.1.4-5, §4.1.4; a refused DATA
        # does not), so a new MAIL would be "nested": RSET first.
        self.in_transaction = False
        # (event, mail_params) -> (wire, argument).  Speed: a session sends the same MAIL,
        # RCPT and content thousands of times; they encode the same way until the extensions
        # change.  Never AUTH (secrets stay only where the caller put them).
        self._encoded: dict[tuple[Event, tuple[str, ...]], tuple[bytes, str]] = {}
        # the groups send_all has made: key -> (events, state, mail_params, awaited, wires)
        self._groups: dict[tuple, tuple] = {}
        # (command, argument, reply line) -> the Answer to a one-line reply (see _take_line)
        self._answers: dict[tuple[Command, str, bytes], Answer] = {}
        self.pending: list[tuple[Command, str]] = [(Command.GREETING, "")]
        self._buffer = bytearray()
        self._reply_raw: list[bytes] = []
        self._reply_lines: list[str] = []
        self._reply_code: int | None = None
        self._reply_octets = 0
        self._eof = False

    @property
    def extensions(self) -> dict[str, str]:
        """EHLO keywords (upper case) to their parameters; {} before EHLO and after TLS."""
        return self._extensions

    @extensions.setter
    def extensions(self, value: dict[str, str]) -> None:
        self._extensions = value
        self._encoded.clear()  # what may be sent depends on what the server offers
        self._groups.clear()

    @property
    def pipelining(self) -> bool:
        """RFC 2920: on when we want it and the server's EHLO offered it."""
        return self.want_pipelining and "PIPELINING" in self.extensions

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # --- sending ----------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Bytes for ``event``; raises LocalProtocolError when it is not allowed now."""
        command = event.command
        if self.state is State.ERROR:
            self._check_usable()
        if self._buffer and not self.pending:
            error = self._unexpected_data()
            self.state = State.ERROR
            raise error
        if self.pending and not self._may_pipeline(command):
            waiting = self.pending[0][0].value
            raise LocalProtocolError(
                f"cannot send {command.value} while the reply to {waiting} is outstanding"
            )
        new_state = _ON_SEND[self.state].get(command)
        if new_state is None:
            raise LocalProtocolError(f"cannot send {command.value} in state {self.state.value}")
        if command is Command.MAIL and self.in_transaction and not self._ending():
            raise LocalProtocolError(
                "a mail transaction is still open (MAIL was accepted, no final dot): "
                "RSET first (RFC 5321 §4.1.1.5)"
            )
        key = (event, self.mail_params)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encode(event)
            if command not in _SECRET and len(self._encoded) < _MAX_ENCODED:
                self._encoded[key] = encoded
        wire, argument = encoded
        self.state = new_state
        if isinstance(event, MailFrom):
            self.mail_params = event.params
        self.pending.append((command, argument))
        return wire

    def send_all(self, events: Sequence[Event]) -> list[bytes]:
        """Bytes for each of ``events``, a pipelined group: all of them, or (on
        LocalProtocolError) none, and the connection as it was."""
        if self.state is State.ERROR or (self._buffer and not self.pending):
            return [self.send(event) for event in events]  # raises, as send() says why
        # Speed: a session sends the same group, in the same state, thousands of times, and
        # what send() makes of it (bytes, new state, replies awaited) depends only on what
        # it reads: the state, the commands awaiting replies, whether a transaction is open,
        # the MAIL parameters, the extensions (a change clears this memo) and the events
        # themselves.  Kept by identity: the memo holds the events, so their ids stay theirs.
        key = self._group_key(events, self.state, tuple([c for c, _ in self.pending]))
        done = self._groups.get(key)
        if done is not None:
            _, self.state, self.mail_params, awaited, wires = done
            self.pending += awaited
            return list(wires)
        state, pending, params = self.state, len(self.pending), self.mail_params
        try:
            wires = [self.send(event) for event in events]
        except LocalProtocolError:
            self.state, self.mail_params = state, params
            del self.pending[pending:]
            raise
        secret = any(event.command in _SECRET for event in events)
        if not secret and len(self._groups) < _MAX_ENCODED:
            awaited = tuple(self.pending[pending:])
            done = (tuple(events), self.state, self.mail_params, awaited, tuple(wires))
            self._groups[key] = done
        return wires

    def _group_key(self, events: Sequence[Event], state: State, awaited: tuple) -> tuple:
        return (
            tuple(map(id, events)),
            state,
            awaited,
            self.in_transaction,
            self.mail_params,
            self.want_pipelining,
        )

    def foresee(self, line: bytes, events: Sequence[Event]) -> bytes | None:
        """The bytes ``send_all(events)`` would return once exactly ``line`` is received,
        when that is already known; else None.  Changes nothing.

        Known for one reply only, DATA's go-ahead (RFC 2920 §3.1: after the 354, the content
        and the next group behind it), which moves nothing but the state (see ``_apply``):
        when it is the one reply awaited (nothing else buffered or half read), ``line`` is a
        354 this connection has already heard to the same DATA, and ``send_all`` has already
        made ``events`` from the state it leads to.  A pipelining driver may write what this
        returns as soon as ``line`` arrives, then feed ``line`` and call ``send_all(events)``,
        which returns these bytes.
        """
        if (
            len(self.pending) != 1
            or self._buffer
            or self._reply_code is not None
            or self._eof
            or self.state is State.ERROR
        ):
            return None
        answer = self._answers.get((*self.pending[0], line))
        if answer is None or answer.command is not Command.DATA or answer.verdict is not Verdict.OK:
            return None
        state = _ON_GOT[self.state].get((Command.DATA, Verdict.OK))
        done = None if state is None else self._groups.get(self._group_key(events, state, ()))
        return None if done is None else b"".join(done[4])

    def _ending(self) -> bool:
        """A pending dot or RSET will end the open transaction before the next MAIL."""
        return any(c in (Command.CONTENT, Command.RSET) for c, _ in self.pending)

    def _may_pipeline(self, command: Command) -> bool:
        """RFC 2920 §3.1: ``command`` may go out before the pending replies arrive."""
        if command not in _PIPELINE_TAIL or not (
            self.want_pipelining and "PIPELINING" in self._extensions  # self.pipelining, inlined
        ):
            return False
        # QUIT ends only a group the content opened
        allowed = _CONTENT_ONLY if command is Command.QUIT else _PIPELINE_HEAD
        return all(pending in allowed for pending, _ in self.pending)

    def can_send(self, command: Command) -> bool:
        """Whether the state allows sending ``command`` (TRANSITIONS); ignores pending replies."""
        return (self.state, _SEND[command]) in TRANSITIONS

    def _encode(self, event: Event) -> tuple[bytes, str]:
        limit = MAX_COMMAND_LINE
        match event:
            case Ehlo(name) | Helo(name):
                check_domain(name)
                line, argument = f"{event.command.value} {name}", name
            case StartTls() | Data() | Rset() | Noop() | Quit():
                line, argument = event.command.value, ""
            case Auth(mechanism, initial):
                if not mechanism.isascii() or not mechanism.replace("-", "").isalnum():
                    raise LocalProtocolError(f"bad SASL mechanism name {mechanism!r}")
                line = f"AUTH {mechanism.upper()}" + ("" if initial is None else f" {initial}")
                argument, limit = mechanism.upper(), MAX_AUTH_LINE
                self._check_b64(initial)
            case AuthResponse(response):
                self._check_b64(response)
                line, argument, limit = response, "", MAX_AUTH_LINE
            case MailFrom(address, params) | RcptTo(address, params):
                what = "sender" if isinstance(event, MailFrom) else "recipient"
                if isinstance(event, RcptTo) or address:
                    check_address(address, what)
                self._check_params(params)
                self._check_utf8(address, params if isinstance(event, MailFrom) else None)
                verb = "MAIL FROM" if isinstance(event, MailFrom) else "RCPT TO"
                line = f"{verb}:<{address}>" + "".join(f" {p}" for p in params)
                argument = address
                limit += sum(len(p) + 1 for p in params)  # RFC 5321 §4.5.3.1.4 allowance
            case Content(message):
                return self._encode_content(message), ""
            case _:
                raise LocalProtocolError(f"not an SMTP client event: {event!r}")
        wire = line.encode("utf-8") + b"\r\n"
        if len(wire) > limit:
            raise LocalProtocolError(
                f"{event.command.value} line is {len(wire)} octets; the limit is {limit}"
            )
        return wire, argument

    @staticmethod
    def _check_b64(value: str | None) -> None:
        if value is None:
            return
        bad = forbidden_char(value)
        if bad or not value.isascii() or " " in value:
            raise LocalProtocolError("AUTH data must be one line of base64")

    def _check_params(self, params: tuple[str, ...]) -> None:
        for param in params:
            bad = forbidden_char(param)
            if bad or " " in param or not param:
                raise LocalProtocolError(f"bad MAIL/RCPT parameter {param!r}")
            keyword = param.partition("=")[0].upper()
            needs = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8"}.get(keyword)
            if needs and needs not in self.extensions:
                raise LocalProtocolError(f"{param} needs the server to offer {needs}")

    def _check_utf8(self, address: str, mail_params: tuple[str, ...] | None) -> None:
        params = self.mail_params if mail_params is None else mail_params
        if not address.isascii() and "SMTPUTF8" not in (p.upper() for p in params):
            raise LocalProtocolError(
                f"address {address!r} is not ASCII: the transaction needs SMTPUTF8 (RFC 6531)"
            )

    def _encode_content(self, message: bytes) -> bytes:
        _check_text_lines(message)
        eight_bit = not message.isascii()
        if eight_bit and not any(p.upper() == "BODY=8BITMIME" for p in self.mail_params):
            raise LocalProtocolError(
                "the message has 8-bit octets: MAIL needs BODY=8BITMIME (RFC 6152)"
            )
        return encode_data(message)

    def tls_established(self) -> None:
        """The driver finished the TLS handshake after 220 to STARTTLS.

        RFC 3207 §4.2: forget everything learnt before TLS and say EHLO again.
        """
        self._check_usable()
        if self.state is not State.TLS:
            raise LocalProtocolError(f"tls_established() in state {self.state.value}")
        self.extensions = {}
        self.state = State.HELLO

    # --- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; ``b""`` means it closed the connection."""
        if not data:
            self._eof = True
            return
        self._buffer += data

    def next_event(self) -> Answer | ConnectionClosed | _NeedData:
        """The next complete reply, ConnectionClosed, or NEED_DATA."""
        if self.state is State.ERROR:
            self._check_usable()
        if not self._buffer and not self._eof:
            return NEED_DATA  # speed: what a driver hears each time before it reads
        try:
            return self._next_event()
        except RemoteProtocolError:
            self.state = State.ERROR
            raise

    def _next_event(self) -> Answer | ConnectionClosed | _NeedData:
        if len(self._buffer) > MAX_BUFFER:
            raise RemoteProtocolError(f"more than {MAX_BUFFER} unread octets from the server")
        if self._buffer and not self.pending:
            # RFC 3207 §5 / RFC 2920: bytes nobody asked for (after 220 to STARTTLS they would
            # be read as if they came over TLS) are the server's error.
            raise self._unexpected_data()
        while True:
            end = self._buffer.find(b"\n", 0, MAX_REPLY_LINE)
            if end < 0:
                if len(self._buffer) >= MAX_REPLY_LINE:
                    raise RemoteProtocolError(
                        f"reply line longer than {MAX_REPLY_LINE} octets (RFC 5321 §4.5.3.1.5)"
                    )
                return self._at_end_of_buffer()
            if end == 0 or self._buffer[end - 1] != 0x0D:
                raise RemoteProtocolError(
                    "reply line ends in a bare LF, not CRLF (RFC 5321 §2.3.8)"
                )
            raw = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            answer = self._take_line(raw)
            if answer is not None:
                if self._buffer and self.state is State.TLS:
                    raise RemoteProtocolError(
                        "data after 220 to STARTTLS, before the TLS handshake (RFC 3207 §5)"
                    )
                return answer

    def _unexpected_data(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"unexpected data from the server in state {self.state.value}: "
            f"{bytes(self._buffer[:40])!r}"
        )

    def _at_end_of_buffer(self) -> ConnectionClosed | _NeedData:
        if not self._eof:
            return NEED_DATA
        if self._buffer or self._reply_raw:
            raise RemoteProtocolError("connection closed in the middle of a reply")
        if self.pending and (
            self.state is not State.QUIT_SENT or self.pending[0][0] is not Command.QUIT
        ):  # after QUIT the server may close without its 221; before, a reply is missing
            raise RemoteProtocolError(
                f"connection closed while waiting for the reply to {self.pending[0][0].value}"
            )
        self.pending.clear()
        self.state = State.CLOSED
        return ConnectionClosed()

    def _take_line(self, raw: bytes) -> Answer | None:
        if self._reply_code is None:
            # Speed: a session hears the same one-line replies (250 to MAIL, 354 to DATA...)
            # thousands of times, and an Answer is an immutable value: the one made for this
            # command, argument and line serves again, without parsing it or building its
            # Reply and Answer anew.  Only the transition is made each time.
            answer = self._answers.get((*self.pending[0], raw))
            if answer is not None:
                del self.pending[0]
                return self._apply(answer)
        code, last, text = _parse_line(raw[:-2])
        if last and self._reply_code is None:  # a one-line reply, the common case
            return self._answer(Reply(code, (text,)), (raw,))
        if self._reply_code is not None and code != self._reply_code:
            raise RemoteProtocolError(
                f"reply code changed from {self._reply_code} to {code} inside one reply"
            )
        self._reply_code = code
        self._reply_raw.append(raw)
        self._reply_lines.append(text)
        self._reply_octets += len(raw)
        if len(self._reply_raw) > MAX_REPLY_LINES or self._reply_octets > MAX_REPLY_OCTETS:
            raise RemoteProtocolError(
                f"reply longer than {MAX_REPLY_LINES} lines or {MAX_REPLY_OCTETS} octets"
            )
        if not last:
            return None
        reply = Reply(code, tuple(self._reply_lines))
        raw_lines = tuple(self._reply_raw)
        self._reply_raw, self._reply_lines, self._reply_code = [], [], None
        self._reply_octets = 0
        return self._answer(reply, raw_lines)

    def _answer(self, reply: Reply, raw: tuple[bytes, ...]) -> Answer:
        command, argument = self.pending.pop(0)
        answer = Answer(command, reply, verdict_for(command, reply.code), argument, raw)
        if len(raw) == 1 and len(self._answers) < _MAX_ENCODED:
            self._answers[command, argument, raw[0]] = answer
        return self._apply(answer)

    def _apply(self, answer: Answer) -> Answer:
        """Make the transition ``answer`` calls for (its command is no longer pending)."""
        command, reply, verdict = answer.command, answer.reply, answer.verdict
        if reply.code == 421 and command is not Command.QUIT:
            # RFC 5321 §3.8: the server is closing the channel; no other reply will come.
            self.pending.clear()
            self.state = State.CLOSED
            return answer
        state = _ON_GOT[self.state].get((command, verdict))
        if state is None:
            raise RemoteProtocolError(
                f"reply {verdict.value} to {command.value} makes no sense in state "
                f"{self.state.value}"
            )
        self.state = state
        if command is Command.MAIL:
            self.in_transaction = self.in_transaction or verdict is Verdict.OK
        elif command in _ENDS_TRANSACTION and (command is Command.CONTENT or verdict is Verdict.OK):
            self.in_transaction = False
        if command is Command.EHLO or command is Command.HELO:
            if verdict is Verdict.OK and command is Command.EHLO:
                self.extensions = parse_ehlo(reply)
            elif verdict is Verdict.FAIL:
                self.extensions = {}
        if state is State.READY:
            self.mail_params = ()  # no transaction open
        return answer

    def _check_usable(self) -> None:
        if self.state is State.ERROR:
            raise LocalProtocolError("the connection is in the ERROR state")
