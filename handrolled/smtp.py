"""Hand-rolled SMTP client: the driver around handrolled.smtp_protocol.

No smtplib: the dialogue is ours (smtp_protocol.ClientConnection); handrolled.smtp_io owns
the socket, TLS, timeouts and the transcript (``SmtpSession``); this module is the dialogue of
one message.  Many messages over one connection: handrolled.smtp_session.  The command line
(``wiretwin smtp``, ``python -m handrolled.smtp``) is handrolled.cli.smtp.

API
---
``send_mail(request, *, connect=..., clock_ns=..., monotonic=..., stop_after=None)``
    One delivery attempt for a ``handrolled.requests.MailRequest`` (validated when it was
    made: nothing here re-checks its fields) -> ``SmtpResult``.  Everything that happens once
    we try to connect is reported in the result: ``delivered`` (True only when the server
    answered the final dot with 250), ``error``, ``stage`` (where the dialogue ended) and
    ``refusal`` (the server's 4xx/5xx that ended it).  ``stop_after`` (a ``STOP_POINTS``
    stage, swaks' --quit-after): stop there, deliver nothing, no error.  A CA file that
    cannot be loaded raises UsageError before connecting.
``smtp_client(port=1025, mailserver="127.0.0.1") -> SmtpResult``
    The seed assignment: HELO Alice, MAIL, RCPT, DATA, "\\r\\n My message", "\\r\\n.\\r\\n", QUIT.
``SmtpSession``
    One connection (socket, ClientConnection, transcript), for driving a dialogue by hand.
"""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence

from handrolled import smtp_protocol as proto
from handrolled.errors import (
    LocalProtocolError,
    SmtpReplyError,
    UsageError,
    WiretwinError,
)
from handrolled.requests import MailRequest
from handrolled.results import (
    Implementation,
    RecipientOutcome,
    Reply,
    SmtpResult,
    SmtpStage,
)
from handrolled.smtp_io import SmtpSession, _cipher, _Refused, _ServerClosing, _Stop, _wrap

__all__ = ["MailRequest", "SmtpSession", "send_mail", "smtp_client"]

log = logging.getLogger(__name__)

Connect = Callable[[str, int, float], socket.socket]


def _connect(server: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with a connect timeout (resolves through the system resolver)."""
    return socket.create_connection((server, port), timeout=timeout)


# The SmtpStage of what a reply answered.
_STAGE_OF = {
    proto.Command.GREETING: SmtpStage.GREETING,
    proto.Command.EHLO: SmtpStage.EHLO,
    proto.Command.HELO: SmtpStage.EHLO,
    proto.Command.STARTTLS: SmtpStage.STARTTLS,
    proto.Command.AUTH: SmtpStage.AUTH,
    proto.Command.AUTH_RESPONSE: SmtpStage.AUTH,
    proto.Command.MAIL: SmtpStage.MAIL,
    proto.Command.RCPT: SmtpStage.RCPT,
    proto.Command.DATA: SmtpStage.DATA,
    proto.Command.CONTENT: SmtpStage.CONTENT,
    proto.Command.QUIT: SmtpStage.QUIT,
}


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


def _hello(session: SmtpSession, helo_name: str) -> None:
    """EHLO, falling back to HELO when the server refuses EHLO (RFC 5321 §3.2)."""
    answer = session.command(proto.Ehlo(helo_name))
    if answer.verdict is proto.Verdict.OK:
        return
    if session.conn.state is not proto.State.HELLO:
        raise _Refused(answer)
    answer = session.command(proto.Helo(helo_name))
    if answer.verdict is not proto.Verdict.OK:
        raise _Refused(answer)


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
        raise _Refused(answer)


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
        self.stage = SmtpStage.CONNECT  # the step under way
        self.refusal: Reply | None = None


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
    out.stage = SmtpStage.MAIL
    if session.conn.pipelining:
        session.send(mail, *rcpts, proto.Data())
        mail_answer = session.read()
        out.stage = SmtpStage.RCPT
        for _ in rcpts:
            rcpt_answers.append(session.read())
            _record_rcpt(out, rcpt_answers[-1])
        out.stage = SmtpStage.DATA
        data_answer: proto.Answer | None = session.read()
    else:
        mail_answer = session.command(mail)
        if mail_answer.verdict is not proto.Verdict.OK:
            raise _Refused(mail_answer)
        out.stage = SmtpStage.RCPT
        for rcpt in rcpts:
            rcpt_answers.append(session.command(rcpt))
            _record_rcpt(out, rcpt_answers[-1])
        data_answer = None
    accepted = [r for r in out.recipients if r.accepted]
    if mail_answer.verdict is not proto.Verdict.OK:
        _end_refused_data(session, data_answer)
        raise _Refused(mail_answer)
    if not accepted:
        _end_refused_data(session, data_answer)
        raise _Refused(rcpt_answers[-1], ("every recipient was refused",))
    out.stage = SmtpStage.DATA
    if data_answer is None:
        data_answer = session.command(proto.Data())
    if data_answer.verdict is not proto.Verdict.OK:
        raise _Refused(data_answer)
    out.stage = SmtpStage.CONTENT
    final = session.command(proto.Content(message))
    out.final_reply = final.reply
    if final.verdict is not proto.Verdict.OK:
        raise _Refused(final)
    out.delivered = True


def _end_refused_data(session: SmtpSession, data_answer: proto.Answer | None) -> None:
    """RFC 2920 §3.1: DATA accepted though no recipient was: send an empty message's dot."""
    if data_answer is not None and data_answer.verdict is proto.Verdict.OK:
        session.command(proto.Content(b""))


def _quit(session: SmtpSession) -> bool:
    """QUIT where the protocol still allows it; True if answered 221.  A failure here changes
    nothing else."""
    if not session.conn.can_send(proto.Command.QUIT):
        return False
    try:
        return session.command(proto.Quit()).verdict is proto.Verdict.OK
    except (WiretwinError, OSError) as exc:
        log.debug("QUIT: %s", exc)
        return False


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
    # one line: a line break inside the server's text (a bare CR, U+2028...) becomes a space
    return " ".join(str(exc).splitlines()) if str(exc) else type(exc).__name__


def open_session(
    r: MailRequest,
    context: ssl.SSLContext | None,
    connect: Connect,
    clock_ns: Callable[[], int],
    monotonic: Callable[[], float],
) -> SmtpSession:
    """Connect as ``r`` says (implicit TLS from the first byte, RFC 8314)."""
    sock = connect(r.server, r.port, r.timeout)
    if r.tls and context is not None:
        try:
            sock = _wrap(sock, context, r.server, r.timeout, monotonic)
        except BaseException:
            sock.close()
            raise
    session = SmtpSession(
        sock, timeout=r.timeout, pipelining=r.pipelining, clock_ns=clock_ns, monotonic=monotonic
    )
    if r.tls:
        session.tls, session.tls_cipher = "implicit", _cipher(sock)
    return session


def failed(exc: BaseException, out: _Outcome) -> bool:
    """Record why the dialogue ended in ``out``; True if the connection is still fit for QUIT
    (a refusal or a local decision; not a 421, a network, TLS or protocol failure)."""
    out.error = _describe(exc)
    if isinstance(exc, _Refused):
        out.stage = _STAGE_OF.get(exc.answer.command, out.stage)
        if 400 <= exc.reply.code < 600:  # RFC 5321 §4.2.1: 4yz/5yz, a refusal
            out.refusal = exc.reply
    if isinstance(exc, _ServerClosing):
        return False
    return isinstance(exc, SmtpReplyError | _Stop | LocalProtocolError)


def send_mail(
    request: MailRequest,
    *,
    connect: Connect = _connect,
    clock_ns: Callable[[], int] = time.time_ns,
    monotonic: Callable[[], float] = time.monotonic,
    stop_after: SmtpStage | None = None,
) -> SmtpResult:
    """Deliver ``request.message`` (RFC 5322, before dot-stuffing) as ``request`` says.

    ``connect(server, port, timeout)`` opens the TCP connection; ``clock_ns`` stamps the
    transcript, ``monotonic`` bounds each step by ``request.timeout``.  ``stop_after`` (one
    of ``STOP_POINTS``, swaks' --quit-after): QUIT once that step succeeded, delivering
    nothing; the result has no error and that stage.  After DATA's 354 QUIT would be message
    text (RFC 5321 §4.1.1.4), so DATA drops the connection instead.
    """
    if not isinstance(request, MailRequest):
        raise UsageError(f"send_mail wants a MailRequest, not {type(request).__name__}")
    if stop_after is not None and stop_after not in STOP_POINTS:
        raise UsageError(f"stop_after {stop_after!r}: not a stop point")
    r = request
    context = _tls_context(r.insecure, r.cafile) if (r.starttls or r.tls) else None
    started_ns, t0 = clock_ns(), monotonic()
    out = _Outcome()
    session: SmtpSession | None = None
    polite = True  # the connection is still fit for QUIT
    try:
        session = open_session(r, context, connect, clock_ns, monotonic)
        greet(session, r, context, out, stop_after)
        params = _mail_params(session, r.mail_from, r.recipients, r.message) if r.ehlo else ()
        if stop_after is not None:
            _until(session, r, params, out, stop_after)
        _transaction(session, r.mail_from, r.recipients, r.message, params, out)
    except _Reached:
        polite = stop_after is not SmtpStage.DATA
    except (WiretwinError, OSError) as exc:  # ssl.SSLError and timeouts are OSErrors
        polite = failed(exc, out)
        log.info("not delivered: %s", out.error)
    if session is not None:
        if polite:
            if out.delivered:
                out.stage = SmtpStage.QUIT
            if _quit(session) and out.delivered:
                out.stage = SmtpStage.DONE
        session.close()
    return SmtpResult(
        server=r.server,
        port=r.port,
        mail_from=r.mail_from,
        recipients=tuple(out.recipients),
        transcript=session.lines() if session else (),
        delivered=out.delivered,
        implementation=Implementation.HANDROLLED,
        final_reply=out.final_reply,
        extensions=tuple(session.conn.extensions.items()) if session else (),
        tls=session.tls if session else None,
        error=out.error,
        started_ns=started_ns,
        elapsed_ms=(monotonic() - t0) * 1000.0,
        stage=out.stage,
        refusal=out.refusal,
        tls_cipher=session.tls_cipher if session else None,
    )


class _Reached(WiretwinError):
    """The stop point the caller asked for (``stop_after``): not an error."""


def _check(stop: SmtpStage | None, stage: SmtpStage) -> None:
    if stop is stage:
        raise _Reached(stage.value)


def greet(
    session: SmtpSession,
    r: MailRequest,
    context: ssl.SSLContext | None,
    out: _Outcome,
    stop: SmtpStage | None = None,
) -> None:
    """Greeting, EHLO (or the seed's HELO), STARTTLS, AUTH: everything before MAIL.  ``stop``
    as swaks' --quit-after: TLS right after the handshake (or where it would have been),
    EHLO after the last one, AUTH where it is or would be."""
    out.stage = SmtpStage.GREETING
    greeting = session.read()
    if greeting.verdict is not proto.Verdict.OK:
        raise _Refused(greeting)
    _check(stop, SmtpStage.GREETING)
    out.stage = SmtpStage.EHLO
    if r.ehlo:
        _hello(session, r.helo_name)
    else:
        answer = session.command(proto.Helo(r.helo_name))
        if answer.verdict is not proto.Verdict.OK:
            raise _Refused(answer)
    if r.starttls and context is not None:
        out.stage = SmtpStage.STARTTLS
        if "STARTTLS" not in session.conn.extensions:
            raise _Stop("the server does not offer STARTTLS; refusing to go on without TLS")
        answer = session.command(proto.StartTls())
        if answer.verdict is not proto.Verdict.OK:
            raise _Refused(answer)
        session.start_tls(context, r.server)
        _check(stop, SmtpStage.STARTTLS)
        out.stage = SmtpStage.EHLO
        _hello(session, r.helo_name)
    _check(stop, SmtpStage.EHLO)
    out.stage = SmtpStage.STARTTLS
    _check(stop, SmtpStage.STARTTLS)
    out.stage = SmtpStage.AUTH
    if r.auth is not None:
        _authenticate(session, *r.auth)
    _check(stop, SmtpStage.AUTH)
    out.stage = SmtpStage.MAIL


def _until(
    session: SmtpSession, r: MailRequest, params: tuple[str, ...], out: _Outcome, stop: SmtpStage
) -> None:
    """MAIL, RCPT..., DATA one at a time, up to ``stop`` (a stop point, not a delivery)."""
    answer = session.command(proto.MailFrom(r.mail_from, params))
    if answer.verdict is not proto.Verdict.OK:
        raise _Refused(answer)
    _check(stop, SmtpStage.MAIL)
    out.stage = SmtpStage.RCPT
    for address in r.recipients:
        answer = session.command(proto.RcptTo(address))
        _record_rcpt(out, answer)
    if not any(o.accepted for o in out.recipients):
        raise _Refused(answer, ("every recipient was refused",))
    _check(stop, SmtpStage.RCPT)
    out.stage = SmtpStage.DATA
    answer = session.command(proto.Data())
    if answer.verdict is not proto.Verdict.OK:
        raise _Refused(answer)
    raise _Reached("data")  # after 354 only the message and its dot may follow (§4.1.1.4)


STOP_POINTS = frozenset(
    {SmtpStage.GREETING, SmtpStage.EHLO, SmtpStage.STARTTLS, SmtpStage.AUTH}
    | {SmtpStage.MAIL, SmtpStage.RCPT, SmtpStage.DATA}
)


def smtp_client(port: int = 1025, mailserver: str = "127.0.0.1") -> SmtpResult:
    """The seed: HELO Alice, MAIL FROM, RCPT TO, DATA, "\\r\\n My message", ".", QUIT.

    Plain TCP, one command at a time, nothing printed (the dialogue is logged at DEBUG).
    The body on the wire is exactly "\\r\\n My message" followed by "\\r\\n.\\r\\n".
    """
    request = MailRequest(
        mailserver,
        port,
        mail_from="alice@example.com",
        recipients=("bob@example.com",),
        message=b"\r\n My message",
        ehlo=False,
        helo_name="Alice",
        pipelining=False,
    )
    result = send_mail(request)
    if not result.delivered:
        log.warning("smtp_client: not delivered: %s", result.error)
    return result


if __name__ == "__main__":  # python -m handrolled.smtp: the command line lives in handrolled.cli
    from handrolled.cli import smtp as _cli
    from handrolled.cli.common import run_module

    sys.exit(run_module(_cli.main))
