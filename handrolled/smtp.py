"""Hand-rolled SMTP client: the driver around handrolled.smtp_protocol, and its CLI.

No smtplib: the dialogue is ours (smtp_protocol.ClientConnection); this module owns the TCP
socket, TLS, timeouts and the transcript.  Messages may be composed with ``email``.

API
---
``send_mail(server, port, *, mail_from, recipients, message, ...) -> SmtpResult``
    One delivery attempt.  Bad arguments (CR/LF/NUL in an address or the HELO name, AUTH over
    plain TCP without ``allow_plain_auth``, ...) raise before anything is sent; everything
    that happens once we try to connect is reported in the result (``delivered``, ``error``).
    ``delivered`` is True only when the server answered the final dot with 250.
``smtp_client(port=1025, mailserver="127.0.0.1") -> SmtpResult``
    The seed assignment: HELO Alice, MAIL, RCPT, DATA, "\\r\\n My message", "\\r\\n.\\r\\n", QUIT.
``compose_message(...) -> bytes``
    An RFC 5322 message from swaks-like options; refuses CR/LF/NUL in header values.
``exit_status(result) -> int``
    0 delivered, 1 refused by the server, 2 any other failure.
``main(argv=None, runner=None) -> int``
    ``wiretwin smtp --server H --port N --from A --to B ...`` (``runner`` defaults to send_mail).
"""

from __future__ import annotations

import argparse
import base64
import email.policy
import email.utils
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage

from handrolled import smtp_protocol as proto
from handrolled.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SmtpReplyError,
    UsageError,
    WiretwinError,
    WiretwinTimeout,
)
from handrolled.results import (
    Direction,
    Implementation,
    RecipientOutcome,
    Reply,
    SmtpResult,
    TranscriptLine,
)

__all__ = [
    "SmtpSession",
    "compose_message",
    "exit_status",
    "main",
    "send_mail",
    "smtp_client",
]

log = logging.getLogger(__name__)

REDACTED = b"<redacted>"
RECV_SIZE = 4096
Connect = Callable[[str, int, float], socket.socket]


def _connect(server: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with a connect timeout (resolves through the system resolver)."""
    return socket.create_connection((server, port), timeout=timeout)


class _Stop(WiretwinError):
    """Ends the dialogue early with a one-line reason (a local decision, not the server's)."""


# How errors name what a reply answered (SmtpReplyError's ``stage``).
_STAGES = {
    proto.Command.GREETING: "the connection (greeting)",
    proto.Command.AUTH_RESPONSE: "AUTH",
    proto.Command.MAIL: "MAIL FROM",
    proto.Command.RCPT: "RCPT TO",
    proto.Command.CONTENT: "the message (final dot)",
}


class _ServerClosing(SmtpReplyError):
    """A reply that closed the session (421, RFC 5321 §3.8): nothing more may be sent."""

    def __init__(self, answer: proto.Answer) -> None:
        stage = _STAGES.get(answer.command, answer.command.value)
        super().__init__(answer.reply.code, answer.reply.lines, stage)
        self.answer = answer


class SmtpSession:
    """One SMTP connection: a socket, a ClientConnection and the transcript being written.

    ``clock_ns`` stamps transcript lines (wall clock, like results.py); ``monotonic`` bounds
    each reply by ``timeout`` seconds, however slowly the server drips it.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float = 30.0,
        pipelining: bool = True,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock = sock
        self.timeout = timeout
        self.conn = proto.ClientConnection(pipelining=pipelining)
        self.transcript: list[TranscriptLine] = []
        self.clock_ns = clock_ns
        self.monotonic = monotonic
        self.tls: str | None = None

    # --- writing ----------------------------------------------------------------------------

    def send(self, *events: proto.Event) -> None:
        """Send events as one write (a pipelined group when there are several)."""
        wire = bytearray()
        now = self.clock_ns()
        for event in events:
            data = self.conn.send(event)
            wire += data
            shown, redacted = _redact(event, data)
            self.transcript.append(TranscriptLine(Direction.SENT, shown, now, redacted))
            log.debug("-> %r", shown)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(wire)
        except TimeoutError as exc:
            raise WiretwinTimeout(f"timed out after {self.timeout:g} s sending") from exc

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> proto.Answer:
        """The next reply; raises RemoteProtocolError, WiretwinTimeout or OSError."""
        deadline = self.monotonic() + self.timeout
        while True:
            event = self.conn.next_event()
            if isinstance(event, proto.Answer):
                now = self.clock_ns()
                for raw in event.raw:
                    self.transcript.append(TranscriptLine(Direction.RECEIVED, raw, now))
                    log.debug("<- %r", raw)
                if (
                    self.conn.state is proto.State.CLOSED
                    and event.command is not proto.Command.QUIT
                ):
                    raise _ServerClosing(event)
                return event
            if isinstance(event, proto.ConnectionClosed):
                raise RemoteProtocolError("the server closed the connection")
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise WiretwinTimeout(f"no complete reply within {self.timeout:g} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError as exc:
                raise WiretwinTimeout(f"no complete reply within {self.timeout:g} s") from exc
            self.conn.receive_data(data)

    def command(self, event: proto.Event) -> proto.Answer:
        self.send(event)
        return self.read()

    # --- TLS --------------------------------------------------------------------------------

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """RFC 3207 §4.2: the handshake after 220 to STARTTLS, then EHLO again."""
        self.sock = _wrap(self.sock, context, server_hostname, self.timeout)
        self.conn.tls_established()
        self.tls = "starttls"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError as exc:  # nothing useful left to do with the socket
            log.debug("close: %s", exc)


def _wrap(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str, timeout: float
) -> socket.socket:
    sock.settimeout(timeout)
    return context.wrap_socket(sock, server_hostname=server_hostname)


def _redact(event: proto.Event, data: bytes) -> tuple[bytes, bool]:
    """What the transcript may show of ``data``: AUTH secrets are replaced (RFC 4954)."""
    if isinstance(event, proto.AuthResponse):
        return REDACTED + b"\r\n", True
    if isinstance(event, proto.Auth) and event.initial_response is not None:
        return b"AUTH " + event.mechanism.upper().encode() + b" " + REDACTED + b"\r\n", True
    return data, False


def _tls_context(insecure: bool, cafile: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # a missing or unreadable CA file (ssl.SSLError is an OSError)
        raise UsageError(f"cannot load CA file {cafile}: {exc.strerror or exc}") from exc
    if insecure:
        log.warning("TLS certificate verification is OFF (insecure): the server is not checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- the dialogue ---------------------------------------------------------------------------


def _validate(
    mail_from: str,
    recipients: Sequence[str],
    helo_name: str,
    starttls: bool,
    tls: bool,
    auth: tuple[str, str] | None,
    allow_plain_auth: bool,
    timeout: float,
) -> None:
    """Refuse bad arguments before anything is sent."""
    if isinstance(recipients, str):
        raise UsageError("recipients must be a sequence of addresses, not one string")
    if not recipients:
        raise UsageError("at least one recipient is needed")
    if starttls and tls:
        raise UsageError("choose one of STARTTLS and implicit TLS, not both")
    if not timeout > 0:
        raise UsageError("timeout must be positive")
    proto.check_domain(helo_name)
    if mail_from:
        proto.check_address(mail_from, "sender")
    for address in recipients:
        proto.check_address(address, "recipient")
    if auth is not None:
        user, password = auth
        for value, what in ((user, "user name"), (password, "password")):
            if proto.forbidden_char(value):
                raise UsageError(f"the {what} contains CR, LF or NUL")
        if not (starttls or tls) and not allow_plain_auth:
            raise UsageError(
                "refusing AUTH over an unencrypted connection: use STARTTLS or TLS "
                "(or allow_plain_auth / --allow-plain-auth if you really mean it)"
            )


def _refused(answer: proto.Answer, stage: str) -> SmtpReplyError:
    return SmtpReplyError(answer.reply.code, answer.reply.lines, stage)


def _hello(session: SmtpSession, helo_name: str) -> None:
    """EHLO, falling back to HELO when the server refuses EHLO (RFC 5321 §3.2)."""
    answer = session.command(proto.Ehlo(helo_name))
    if answer.verdict is proto.Verdict.OK:
        return
    if session.conn.state is not proto.State.HELLO:
        raise _refused(answer, "EHLO")
    answer = session.command(proto.Helo(helo_name))
    if answer.verdict is not proto.Verdict.OK:
        raise _refused(answer, "HELO")


def _authenticate(session: SmtpSession, user: str, password: str) -> None:
    """AUTH PLAIN (RFC 4616) if offered, else LOGIN; secrets stay out of logs and errors."""
    offered = session.conn.extensions.get("AUTH")
    if offered is None:
        raise _Stop("the server does not offer AUTH")
    mechanisms = {m.upper() for m in offered.split()}
    if "PLAIN" in mechanisms:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        answer = session.command(proto.Auth("PLAIN", token))
    elif "LOGIN" in mechanisms:
        answer = session.command(proto.Auth("LOGIN"))
        for secret in (user, password):
            if answer.verdict is not proto.Verdict.CHALLENGE:
                break
            token = base64.b64encode(secret.encode()).decode("ascii")
            answer = session.command(proto.AuthResponse(token))
    else:
        raise _Stop(f"no AUTH mechanism we support (PLAIN, LOGIN); the server offers {offered}")
    if answer.verdict is proto.Verdict.CHALLENGE:  # more than we can answer: cancel (RFC 4954 §4)
        answer = session.command(proto.AuthResponse("*"))
    if answer.verdict is not proto.Verdict.OK:
        raise _refused(answer, "AUTH")


def _mail_params(
    session: SmtpSession, mail_from: str, recipients: Sequence[str], message: bytes
) -> tuple[str, ...]:
    """MAIL parameters, checking SIZE, 8BITMIME and SMTPUTF8 against the server's EHLO."""
    extensions = session.conn.extensions
    params: list[str] = []
    # RFC 1870 §4: octets after 354, CRLFs included, without dot-stuffing or the final dot
    size = proto.data_size(message)
    if "SIZE" in extensions:
        limit = extensions["SIZE"]
        if limit.isdigit() and int(limit) and size > int(limit):
            raise _Stop(f"the message is {size} octets; the server accepts at most {limit}")
        params.append(f"SIZE={size}")
    if not message.isascii():  # RFC 6152
        if "8BITMIME" not in extensions:
            raise _Stop("the message has 8-bit content and the server does not offer 8BITMIME")
        params.append("BODY=8BITMIME")
    if not all(a.isascii() for a in (mail_from, *recipients)):  # RFC 6531
        if "SMTPUTF8" not in extensions:
            raise _Stop("an address is not ASCII and the server does not offer SMTPUTF8")
        params.append("SMTPUTF8")
    return tuple(params)


class _Outcome:
    """What the transaction produced, filled in as it goes."""

    def __init__(self) -> None:
        self.recipients: list[RecipientOutcome] = []
        self.final_reply: Reply | None = None
        self.delivered = False
        self.error: str | None = None


def _transaction(
    session: SmtpSession,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    params: tuple[str, ...],
    out: _Outcome,
) -> None:
    """The mail transaction; a 421 that ends it is kept in ``out`` like any other answer."""
    try:
        _exchange(session, mail_from, recipients, message, params, out)
    except _ServerClosing as exc:  # 421: keep what it answered in the result
        if exc.answer.command is proto.Command.RCPT:
            _record_rcpt(out, exc.answer)
        elif exc.answer.command is proto.Command.CONTENT:
            out.final_reply = exc.answer.reply
        raise


def _record_rcpt(out: _Outcome, answer: proto.Answer) -> None:
    accepted = answer.verdict is proto.Verdict.OK
    out.recipients.append(RecipientOutcome(answer.argument, answer.reply, accepted))


def _exchange(
    session: SmtpSession,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    params: tuple[str, ...],
    out: _Outcome,
) -> None:
    """MAIL, RCPT..., DATA (one group with PIPELINING, RFC 2920), the content, its reply."""
    mail = proto.MailFrom(mail_from, params)
    rcpts = [proto.RcptTo(address) for address in recipients]
    rcpt_answers: list[proto.Answer] = []
    if session.conn.pipelining:
        session.send(mail, *rcpts, proto.Data())
        mail_answer = session.read()
        for _ in rcpts:
            rcpt_answers.append(session.read())
            _record_rcpt(out, rcpt_answers[-1])
        data_answer: proto.Answer | None = session.read()
    else:
        mail_answer = session.command(mail)
        if mail_answer.verdict is not proto.Verdict.OK:
            raise _refused(mail_answer, "MAIL FROM")
        for rcpt in rcpts:
            rcpt_answers.append(session.command(rcpt))
            _record_rcpt(out, rcpt_answers[-1])
        data_answer = None
    accepted = [r for r in out.recipients if r.accepted]
    if mail_answer.verdict is not proto.Verdict.OK:
        _end_refused_data(session, data_answer)
        raise _refused(mail_answer, "MAIL FROM")
    if not accepted:
        _end_refused_data(session, data_answer)
        last = rcpt_answers[-1]
        raise SmtpReplyError(
            last.reply.code, ("every recipient was refused", *last.reply.lines), "RCPT TO"
        )
    if data_answer is None:
        data_answer = session.command(proto.Data())
    if data_answer.verdict is not proto.Verdict.OK:
        raise _refused(data_answer, "DATA")
    final = session.command(proto.Content(message))
    out.final_reply = final.reply
    if final.verdict is not proto.Verdict.OK:
        raise _refused(final, "the message (final dot)")
    out.delivered = True


def _end_refused_data(session: SmtpSession, data_answer: proto.Answer | None) -> None:
    """RFC 2920 §3.1: DATA accepted though no recipient was: send an empty message's dot."""
    if data_answer is not None and data_answer.verdict is proto.Verdict.OK:
        session.command(proto.Content(b""))


def _quit(session: SmtpSession) -> None:
    """QUIT where the protocol still allows it; a failure here changes nothing."""
    if not session.conn.can_send(proto.Command.QUIT):
        return
    try:
        session.command(proto.Quit())
    except (WiretwinError, OSError) as exc:
        log.debug("QUIT: %s", exc)


def _describe(exc: BaseException) -> str:
    """One line for ``SmtpResult.error``; never includes secrets (we never put them in)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the server name: {exc.strerror or exc}"
    if isinstance(exc, OSError) and not isinstance(exc, WiretwinError):
        return f"connection failed: {exc.strerror or exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _run(
    server: str,
    port: int,
    *,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    ehlo: bool,
    helo_name: str = "wiretwin.invalid",
    starttls: bool = False,
    tls: bool = False,
    auth: tuple[str, str] | None = None,
    allow_plain_auth: bool = False,
    insecure: bool = False,
    cafile: str | None = None,
    timeout: float = 30.0,
    pipelining: bool = True,
    connect: Connect = _connect,
    clock_ns: Callable[[], int] = time.time_ns,
    monotonic: Callable[[], float] = time.monotonic,
) -> SmtpResult:
    """One delivery; send_mail with ``ehlo``, the seed (HELO only) without.  The defaults are
    send_mail's (smtp_client passes only what it changes)."""
    _validate(mail_from, recipients, helo_name, starttls, tls, auth, allow_plain_auth, timeout)
    context = _tls_context(insecure, cafile) if (starttls or tls) else None
    started_ns, t0 = clock_ns(), monotonic()
    out = _Outcome()
    session: SmtpSession | None = None
    polite = True  # the connection is still fit for QUIT
    try:
        sock = connect(server, port, timeout)
        if tls and context is not None:
            sock = _wrap(sock, context, server, timeout)
        session = SmtpSession(
            sock, timeout=timeout, pipelining=pipelining, clock_ns=clock_ns, monotonic=monotonic
        )
        if tls:
            session.tls = "implicit"
        greeting = session.read()
        if greeting.verdict is not proto.Verdict.OK:
            raise _refused(greeting, "the connection (greeting)")
        if ehlo:
            _hello(session, helo_name)
        else:
            answer = session.command(proto.Helo(helo_name))
            if answer.verdict is not proto.Verdict.OK:
                raise _refused(answer, "HELO")
        if starttls and context is not None:
            if "STARTTLS" not in session.conn.extensions:
                raise _Stop("the server does not offer STARTTLS; refusing to go on without TLS")
            answer = session.command(proto.StartTls())
            if answer.verdict is not proto.Verdict.OK:
                raise _refused(answer, "STARTTLS")
            session.start_tls(context, server)
            _hello(session, helo_name)
        if auth is not None:
            _authenticate(session, *auth)
        params = _mail_params(session, mail_from, recipients, message) if ehlo else ()
        _transaction(session, mail_from, recipients, message, params, out)
    except (WiretwinError, OSError) as exc:  # ssl.SSLError and timeouts are OSErrors
        out.error = _describe(exc)
        polite = isinstance(exc, SmtpReplyError | _Stop | LocalProtocolError)
        log.info("not delivered: %s", out.error)
    if session is not None:
        if polite:
            _quit(session)
        session.close()
    transcript = tuple(session.transcript) if session else ()
    extensions = tuple(session.conn.extensions.items()) if session else ()
    return SmtpResult(
        server=server,
        port=port,
        mail_from=mail_from,
        recipients=tuple(out.recipients),
        transcript=transcript,
        delivered=out.delivered,
        implementation=Implementation.HANDROLLED,
        final_reply=out.final_reply,
        extensions=extensions,
        tls=session.tls if session else None,
        error=out.error,
        started_ns=started_ns,
        elapsed_ms=(monotonic() - t0) * 1000.0,
    )


def send_mail(
    server: str,
    port: int,
    *,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    helo_name: str = "wiretwin.invalid",
    starttls: bool = False,
    tls: bool = False,
    auth: tuple[str, str] | None = None,
    allow_plain_auth: bool = False,
    insecure: bool = False,
    cafile: str | None = None,
    timeout: float = 30.0,
    pipelining: bool = True,
    connect: Connect = _connect,
    clock_ns: Callable[[], int] = time.time_ns,
    monotonic: Callable[[], float] = time.monotonic,
) -> SmtpResult:
    """Deliver ``message`` (RFC 5322, before dot-stuffing) to ``recipients`` via ``server``."""
    return _run(
        server,
        port,
        mail_from=mail_from,
        recipients=recipients,
        message=message,
        helo_name=helo_name,
        ehlo=True,
        starttls=starttls,
        tls=tls,
        auth=auth,
        allow_plain_auth=allow_plain_auth,
        insecure=insecure,
        cafile=cafile,
        timeout=timeout,
        pipelining=pipelining,
        connect=connect,
        clock_ns=clock_ns,
        monotonic=monotonic,
    )


def smtp_client(port: int = 1025, mailserver: str = "127.0.0.1") -> SmtpResult:
    """The seed: HELO Alice, MAIL FROM, RCPT TO, DATA, "\\r\\n My message", ".", QUIT.

    Plain TCP, one command at a time, nothing printed (the dialogue is logged at DEBUG).
    The body on the wire is exactly "\\r\\n My message" followed by "\\r\\n.\\r\\n".
    """
    result = _run(
        mailserver,
        port,
        mail_from="alice@example.com",
        recipients=["bob@example.com"],
        message=b"\r\n My message",
        ehlo=False,
        helo_name="Alice",
        pipelining=False,
    )
    if not result.delivered:
        log.warning("smtp_client: not delivered: %s", result.error)
    return result


# --- composing ------------------------------------------------------------------------------


def _check_header(name: str, value: str) -> None:
    # RFC 5322 §2.2: a field name is printable US-ASCII except colon; the value may not
    # carry CR, LF or NUL (we fold, the caller does not).
    if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
        raise UsageError(f"bad header name {name!r}")
    bad = proto.forbidden_char(value)
    if bad:
        raise UsageError(f"header {name} contains {bad}: refused before sending")


def compose_message(
    mail_from: str,
    recipients: Sequence[str],
    *,
    subject: str = "",
    body: str = "",
    headers: Sequence[tuple[str, str]] = (),
    date: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """An RFC 5322 message (CRLF line ends).  Header values with CR/LF/NUL are refused."""
    fields = [("From", mail_from), ("To", ", ".join(recipients)), ("Subject", subject)]
    if date is not None:
        fields.append(("Date", date))
    if message_id is not None:
        fields.append(("Message-ID", message_id))
    fields.extend(headers)
    for name, value in fields:
        _check_header(name, value)
    utf8 = not all(a.isascii() for a in (mail_from, *recipients))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    for name, value in fields:
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=policy)


# --- results for people ---------------------------------------------------------------------


def exit_status(result: SmtpResult) -> int:
    """0 delivered; 1 the server refused (the last reply before RSET/QUIT was 4xx/5xx, or
    every recipient was refused); 2 anything else (network, TLS, protocol, local checks)."""
    if result.delivered:
        return 0
    if result.recipients and not any(r.accepted for r in result.recipients):
        return 1
    last_code = 0
    after_quit = False
    for line in result.transcript:
        if line.direction is Direction.SENT:
            after_quit = line.data[:4].upper() in (b"QUIT", b"RSET")
        elif not after_quit and line.data[:3].isdigit():
            last_code = int(line.data[:3])
    return 1 if last_code >= 400 else 2


def _transcript_text(result: SmtpResult) -> list[str]:
    lines = []
    for entry in result.transcript:
        text = entry.data.decode("utf-8", errors="replace")
        for part in text.removesuffix("\r\n").split("\r\n"):
            lines.append(f"{entry.direction.value} {part}")
    return lines


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "__dataclass_fields__"):
        return {name: _jsonable(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and hasattr(type(value), "__members__"):
        return value.value
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wiretwin smtp", description="Send one message over SMTP (hand-rolled).")
    p.add_argument("--server", required=True, help="SMTP server name or address")
    p.add_argument("--port", type=int, help="default 25, or 465 with --tls")
    p.add_argument("--from", dest="mail_from", required=True, help="envelope sender")
    p.add_argument("--to", dest="recipients", action="append", required=True, help="recipient")
    p.add_argument("--subject", default="wiretwin test")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="the body text")
    body.add_argument("--body-file", help="read the body text from a file")
    body.add_argument("--data", help="the whole raw message from a file, '-' for stdin")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    secure = p.add_mutually_exclusive_group()
    secure.add_argument("--starttls", action="store_true", help="require STARTTLS (RFC 3207)")
    secure.add_argument("--tls", action="store_true", help="implicit TLS (RFC 8314)")
    p.add_argument("--insecure", action="store_true", help="do NOT verify the certificate")
    p.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    p.add_argument("--auth", action="store_true", help="authenticate (AUTH PLAIN or LOGIN)")
    p.add_argument("--user", help="user name for --auth")
    p.add_argument(
        "--password-file", help="file holding the password (else $WIRETWIN_SMTP_PASSWORD)"
    )
    p.add_argument("--allow-plain-auth", action="store_true", help="allow AUTH without TLS")
    p.add_argument("--helo", default="wiretwin.invalid", help="name for EHLO/HELO")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    p.add_argument("--no-pipelining", action="store_true", help="one command at a time")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _build(args: argparse.Namespace) -> tuple[bytes, tuple[str, str] | None]:
    if args.data is not None:
        if args.data == "-":
            message = sys.stdin.buffer.read()
        else:
            try:
                with open(args.data, "rb") as f:
                    message = f.read()
            except OSError as exc:
                raise UsageError(f"cannot read {args.data}: {exc.strerror}") from exc
    else:
        text = _read_text(args.body_file) if args.body_file else (args.body or "")
        headers = []
        for header in args.header:
            name, sep, value = header.partition(":")
            if not sep:
                raise UsageError(f"--header wants 'Name: value', got {header!r}")
            headers.append((name.strip(), value.strip()))
        domain = args.mail_from.rpartition("@")[2] or "wiretwin.invalid"
        message = compose_message(
            args.mail_from,
            args.recipients,
            subject=args.subject,
            body=text,
            headers=headers,
            date=email.utils.formatdate(localtime=True),
            message_id=email.utils.make_msgid(domain=domain),  # domain given: no DNS lookup
        )
    auth = None
    if args.auth:
        if not args.user:
            raise UsageError("--auth needs --user")
        if args.password_file:
            password = _read_text(args.password_file).removesuffix("\n").removesuffix("\r")
        elif "WIRETWIN_SMTP_PASSWORD" in os.environ:
            password = os.environ["WIRETWIN_SMTP_PASSWORD"]
        else:
            raise UsageError("--auth needs --password-file or $WIRETWIN_SMTP_PASSWORD")
        auth = (args.user, password)
    return message, auth


def main(argv: list[str] | None = None, runner: Callable[..., SmtpResult] | None = None) -> int:
    """``wiretwin smtp``: exit 0 delivered, 1 refused by the server, 2 any other error."""
    runner = runner or send_mail
    try:
        args = _parser().parse_args(argv)
        message, auth = _build(args)
        port = args.port or (465 if args.tls else 25)
        result = runner(
            args.server,
            port,
            mail_from=args.mail_from,
            recipients=args.recipients,
            message=message,
            helo_name=args.helo,
            starttls=args.starttls,
            tls=args.tls,
            auth=auth,
            allow_plain_auth=args.allow_plain_auth,
            insecure=args.insecure,
            cafile=args.cafile,
            timeout=args.timeout,
            pipelining=not args.no_pipelining,
        )
    except WiretwinError as exc:
        print(f"wiretwin smtp: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    status = exit_status(result)
    if args.json:
        print(json.dumps({"exit_status": status, **_jsonable(result)}, indent=2))  # type: ignore[dict-item]
    elif not args.quiet:
        for line in _transcript_text(result):
            print(line)
        for r in result.recipients:
            if not r.accepted:
                print(f"refused: {r.address}: {r.reply.code} {r.reply.text}", file=sys.stderr)
    if result.error:
        print(f"wiretwin smtp: {result.error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
