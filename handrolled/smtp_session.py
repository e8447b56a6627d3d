"""Many messages over one SMTP connection: the job of Postfix's smtp-source, hand-rolled.

RFC 5321 §3.3: after the reply to the final dot the server is back in its initial state, so
the next ``MAIL`` needs no ``RSET`` (only a transaction that MAIL opened and no dot ended, as
when every recipient was refused, is aborted with RSET first, §4.1.1.5).  RFC 2920 §3.1:
with PIPELINING the message content may open the next group, so each message costs one
write and one wait for 354::

    MAIL RCPT... DATA            -> 250 250... 354
    content MAIL RCPT... DATA    -> 250 (the dot)  250 250... 354
    ...
    content QUIT                 -> 250 (the dot)  221

Without PIPELINING (not offered, or ``pipelining=False``) each command waits for its reply.

Speed: a pipelined message costs one send and a recv per segment the server writes (about
4 system calls against aiosmtpd, which writes each reply on its own; smtplib makes 16 and
waits out four round trips).  The bytes of a repeated group come from the codec's cache,
its replies' Answers too (smtp_protocol), and the kernel bounds each call (smtp_io).  What
is left is the wait for 354, which no client may skip (RFC 2920 §3.1), and the server's own
work bounds the rate: it is idle from its 354 until the next group arrives, so that is the
one stretch where the client's time counts.  There the client only checks that the bytes
are the 354 it foresaw and writes (SmtpSession.read_then_send, ClientConnection.foresee);
parsing, outcomes and the transcript come after the write, while the server works
(benchmarks/bench_smtp_sessions.py sets a floor client beside ours and times that stretch).

API
---
``send_session(request, *, connect=..., clock_ns=..., monotonic=...) -> SmtpSessionResult``
    ``request.count`` copies of ``request.mail.message`` over one connection; one
    ``MessageOutcome`` per message, a refusal of one message touching no other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from handrolled import smtp_protocol as proto
from handrolled.errors import UsageError, WiretwinError
from handrolled.requests import MailSessionRequest
from handrolled.results import (
    Implementation,
    MessageOutcome,
    SmtpSessionResult,
    SmtpStage,
)
from handrolled.smtp import (  # the one-message dialogue's steps, shared
    Connect,
    _connect,
    _mail_params,
    _Outcome,
    _quit,
    _record_rcpt,
    _tls_context,
    _transaction,
    failed,
    greet,
    open_session,
)
from handrolled.smtp_io import SmtpSession, _Refused, _ServerClosing

__all__ = ["send_session"]

log = logging.getLogger(__name__)


class _Message(_Outcome):
    """One message's transaction; ``finished`` once its outcome can no longer change."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = SmtpStage.MAIL
        self.finished = False
        # Speed: a delivered message's outcome is made when its dot's reply is recorded,
        # while the server works (nothing changes it after), not all at the session's end.
        self.sealed: MessageOutcome | None = None

    def refused(self, answer: proto.Answer, lead: tuple[str, ...] = ()) -> None:
        failed(_Refused(answer, lead), self)
        self.finished = True

    def outcome(self, why: str | None) -> MessageOutcome:
        if self.sealed is not None:
            return self.sealed
        error = self.error
        if not self.finished and not self.delivered:
            error = f"not delivered: {why or 'the session ended'}"
        return MessageOutcome(
            recipients=tuple(self.recipients),
            delivered=self.delivered,
            final_reply=self.final_reply,
            stage=SmtpStage.DONE if self.delivered else self.stage,
            refusal=self.refusal,
            error=error,
        )


def _settled(message: _Message | None, answer: proto.Answer) -> None:
    """The reply to a final dot; ``message`` None: the empty body that closed a DATA no
    recipient was accepted for (RFC 2920 §3.1), whose reply decides nothing."""
    if message is None:
        return
    message.final_reply = answer.reply
    if answer.verdict is proto.Verdict.OK:
        message.delivered = message.finished = True
        message.sealed = message.outcome(None)
    else:
        message.refused(answer)


def _record(
    answers: list[proto.Answer], earlier: _Message | None, message: _Message, rcpts: int
) -> None:
    """A group's replies, in order, into the messages they decide: a final dot's into
    ``earlier``, MAIL's, each RCPT's and DATA's into ``message`` (``answers`` may stop
    short: the replies read before the dialogue ended).  The message is finished unless its
    content is to go."""
    mail = last = None
    seen = 0
    for answer in answers:
        command = answer.command
        if command is proto.Command.CONTENT:
            _settled(earlier, answer)
        elif command is proto.Command.MAIL:
            mail = last = answer
            message.stage = SmtpStage.RCPT  # a MailRequest has one recipient at least
        elif command is proto.Command.RCPT:
            _record_rcpt(message, answer)
            last, seen = answer, seen + 1
            if seen == rcpts:
                message.stage = SmtpStage.DATA
        elif command is proto.Command.DATA and mail is not None:  # (last is set with mail)
            if mail.verdict is not proto.Verdict.OK:
                message.refused(mail)
            elif not any(r.accepted for r in message.recipients):
                message.refused(last, ("every recipient was refused",))
            elif answer.verdict is not proto.Verdict.OK:
                message.refused(answer)
            else:
                message.stage = SmtpStage.CONTENT
        # an RSET's reply decides nothing: a refused RSET shows in the next MAIL's reply


def _closing(exc: _ServerClosing, earlier: _Message | None, message: _Message) -> None:
    """Keep a 421 with the message whose command it answered: the final dot of the earlier
    message (answered first), else one of this message's MAIL, RCPT or DATA."""
    if exc.answer.command is proto.Command.CONTENT:
        if earlier is None:  # the empty body's dot: no message of ours
            return
        earlier.final_reply = exc.reply
        message = earlier
    elif exc.answer.command is proto.Command.RCPT:
        _record_rcpt(message, exc.answer)
    message.refused(exc.answer)


def _pipelined(
    session: SmtpSession,
    r: MailSessionRequest,
    params: tuple[str, ...],
    messages: list[_Message],
    out: _Outcome,
) -> None:
    """RFC 2920 §3.1: [content,] MAIL, RCPT..., DATA per write; the last content with QUIT.

    Speed: the server is idle from its 354 until the next group arrives, so nothing lies
    between reading a 354 and writing that group but the check that it is the 354 we
    expect (SmtpSession.read_then_send).  What follows the 354 is decided before it comes,
    from the replies to the dot, MAIL and RCPT; the outcomes and transcript lines are made
    after that write, while the server is busy with it.
    """
    mail = proto.MailFrom(r.mail.mail_from, params)
    group = (mail, *(proto.RcptTo(a) for a in r.mail.recipients), proto.Data())
    rcpts = len(group) - 2
    body, empty, quit_ = proto.Content(r.mail.message), proto.Content(b""), proto.Quit()
    # What follows a 354 (made once: the state machine remembers groups by their events):
    # this message, or an empty body when MAIL or every RCPT was refused (RFC 2920 §3.1: a
    # DATA that got 354 anyway is ended by a lone dot); then the next group, or QUIT.
    follow = {
        (good, last): (body if good else empty, *((quit_,) if last else group))
        for good in (True, False)
        for last in (True, False)
    }
    ok = proto.Verdict.OK
    sent = False  # this message's group went out behind the last content
    earlier: _Message | None = None  # the message whose content opens this group
    go_ahead: bytes | None = None  # the last 354, as it came
    for i in range(r.count):
        lead = 1 if sent else 0  # a reply to read before MAIL's: the last dot's, or RSET's
        if not sent:
            # RFC 5321 §4.1.1.5: a transaction MAIL opened and no dot ended is aborted first
            if session.conn.in_transaction:
                session.send(proto.Rset(), *group)
                lead = 1
            else:
                session.send(*group)
        message = _Message()  # counted once its MAIL is on the wire
        messages.append(message)
        answers: list[proto.Answer] = []
        try:
            for _ in range(lead + 1 + rcpts):  # all but DATA's
                answers.append(session.read())
            good = answers[lead].verdict is ok and any(a.verdict is ok for a in answers[lead + 1 :])
            data = session.read_then_send(follow[good, i == r.count - 1], go_ahead, answers)
        except BaseException as exc:
            _record(answers, earlier, message, rcpts)
            if isinstance(exc, _ServerClosing):  # 421 (RFC 5321 §3.8): it still answers
                _closing(exc, earlier, message)
            raise
        _record(answers, earlier, message, rcpts)  # after the write: the server is busy
        sent = data.verdict is ok
        go_ahead = data.raw[0] if sent else None
        earlier = message if good and sent else None
    out.stage = SmtpStage.QUIT
    if not sent:
        if _quit(session):
            out.stage = SmtpStage.DONE
        return
    try:
        _settled(earlier, session.read())  # the last dot's reply
    except _ServerClosing as exc:  # a 421 to the last dot: kept with its message
        if earlier is not None:
            _closing(exc, earlier, earlier)
        raise
    try:
        if session.read().verdict is proto.Verdict.OK:
            out.stage = SmtpStage.DONE
    except (WiretwinError, OSError) as exc:  # every message is decided: QUIT changes nothing
        log.debug("QUIT: %s", exc)


def _lockstep(
    session: SmtpSession,
    r: MailSessionRequest,
    params: tuple[str, ...],
    messages: list[_Message],
    out: _Outcome,
) -> None:
    """RFC 5321 §3.3: one transaction after another, each command answered before the next."""
    m = r.mail
    for _ in range(r.count):
        message = _Message()
        messages.append(message)
        if session.conn.in_transaction:  # RFC 5321 §4.1.1.5: no dot ended the last one
            answer = session.command(proto.Rset())
            if answer.verdict is not proto.Verdict.OK:
                raise _Refused(answer)
        try:
            _transaction(session, m.mail_from, m.recipients, m.message, params, message)
        except _Refused as exc:  # kept with this message (_transaction records RCPT and dot)
            failed(exc, message)
            message.finished = True
            if isinstance(exc, _ServerClosing):  # 421: the session ends (RFC 5321 §3.8)
                raise
            continue  # a refusal: the server is back in its initial state (§3.3)
        message.finished = True
    out.stage = SmtpStage.QUIT
    if _quit(session):
        out.stage = SmtpStage.DONE


def send_session(
    request: MailSessionRequest,
    *,
    connect: Connect = _connect,
    clock_ns: Callable[[], int] = time.time_ns,
    monotonic: Callable[[], float] = time.monotonic,
) -> SmtpSessionResult:
    """Deliver ``request.count`` copies of the message over one connection.

    Everything after we try to connect is in the result: per message its outcome, for the
    session its transcript, stage and error.  A message is delivered only when the server
    answered its final dot with 250.
    """
    if not isinstance(request, MailSessionRequest):
        raise UsageError(f"send_session wants a MailSessionRequest, not {type(request).__name__}")
    r = request.mail
    context = _tls_context(r.insecure, r.cafile) if (r.starttls or r.tls) else None
    started_ns, t0 = clock_ns(), monotonic()
    out = _Outcome()
    messages: list[_Message] = []
    session: SmtpSession | None = None
    pipelined = False
    try:
        session = open_session(r, context, connect, clock_ns, monotonic)
        greet(session, r, context, out)
        out.stage = SmtpStage.MAIL
        params = _mail_params(session, r.mail_from, r.recipients, r.message) if r.ehlo else ()
        pipelined = session.conn.pipelining
        (_pipelined if pipelined else _lockstep)(session, request, params, messages, out)
    except (WiretwinError, OSError) as exc:  # ssl.SSLError and timeouts are OSErrors
        if failed(exc, out) and session is not None:
            _quit(session)
        log.info("session ended: %s", out.error)
    if session is not None:
        session.close()
    outcomes = [m.outcome(out.error) for m in messages]
    never = f"not sent: {out.error or 'the session ended'}"
    outcomes += [MessageOutcome((), False, error=never)] * (request.count - len(messages))
    return SmtpSessionResult(
        server=r.server,
        port=r.port,
        mail_from=r.mail_from,
        messages=tuple(outcomes),
        transcript=session.lines() if session else (),
        implementation=Implementation.HANDROLLED,
        extensions=tuple(session.conn.extensions.items()) if session else (),
        tls=session.tls if session else None,
        tls_cipher=session.tls_cipher if session else None,
        pipelined=pipelined,
        connections=1 if session else 0,
        error=out.error,
        started_ns=started_ns,
        elapsed_ms=(monotonic() - t0) * 1000.0,
        stage=out.stage,
        refusal=out.refusal,
    )
