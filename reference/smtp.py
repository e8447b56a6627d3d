"""Reference SMTP clients: scapy's StreamSocket with our SMTP layers, and smtplib as a witness.

``send_mail`` drives the dialogue (RFC 5321) with :mod:`reference.smtp_layers` packets over a
kernel TCP socket wrapped in scapy's ``StreamSocket``: greeting, EHLO (HELO fallback),
STARTTLS (RFC 3207) or implicit TLS, AUTH PLAIN/LOGIN (RFC 4954), MAIL with SIZE (RFC 1870),
BODY=8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531) when needed, RCPT per recipient,
PIPELINING (RFC 2920) when offered, DATA with CRLF normalisation and dot-stuffing, QUIT.
Commands go out in upper case (RFC 5321 2.4).

``send_mail_smtplib`` does the same job with the standard library's smtplib and records its
transcript by wrapping its send and its reply file.  smtplib sends lower-case commands
(``ehlo``, ``mail FROM:``, ``rcpt TO:``, ``data``, ``quit``), ``size=`` in lower case, no
pipelining, and sends a bytes message as is (no bare-LF normalisation): differences compare
must name, not hide.

Both take the same ``handrolled.requests.MailRequest`` as the hand-rolled client (it validated
its fields when it was made, so a bad input gets the same verdict on every side) and follow the
same contract: everything from the connection attempt on is reported in the SmtpResult
(``error``, ``stage``, ``refusal``), and ``delivered`` is True only when the server answered
the final dot with 250.  A line enters the transcript once it has been written.  AUTH secrets
never reach the transcript, the log or an error message.
"""

from __future__ import annotations

import base64
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from handrolled.errors import RemoteProtocolError, SmtpReplyError, UsageError, WiretwinTimeout
from handrolled.requests import MailRequest
from handrolled.results import (
    Direction,
    Implementation,
    RecipientOutcome,
    Reply,
    SmtpResult,
    SmtpStage,
    TranscriptLine,
)
from reference.smtp_layers import MAX_REPLY_LINE, SMTPCommand, SmtpStreamSocket

log = logging.getLogger(__name__)

REDACTED = b"<redacted>"
MAX_REPLY_LINES = 100  # a reply longer than this is the server misbehaving
_LINE_END = re.compile(rb"\r\n|\r|\n")


# --- shared helpers ---------------------------------------------------------------------------


def encode_body(message: bytes) -> bytes:
    """The DATA body: every line end made CRLF (bare CR and LF too, RFC 5321 2.3.8), lines
    starting with "." doubled (4.5.2), then the terminating ``.CRLF``."""
    lines = _LINE_END.split(message)
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return stuffed + b".\r\n"


def message_size(message: bytes) -> int:
    """RFC 1870 6.1: octets with CRLF line ends, without dot-stuffing or the final dot."""
    lines = _LINE_END.split(message)
    if lines and lines[-1] == b"":
        lines.pop()
    return sum(len(line) + 2 for line in lines)


class _Refused(SmtpReplyError):
    """The server's reply that ended the dialogue, kept whole for ``SmtpResult.refusal``."""

    def __init__(self, reply: Reply, stage: str, lead: tuple[str, ...] = ()) -> None:
        super().__init__(reply.code, (*lead, *reply.lines), stage)
        self.reply = reply


def _refusal(reply: Reply) -> Reply | None:
    """RFC 5321 §4.2.1: a 4yz or 5yz reply refuses; anything else that ends the dialogue
    (251 or 354 to the final dot) is the server breaking the protocol, not a refusal."""
    return reply if 400 <= reply.code < 600 else None


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


def _mail_params(
    extensions: dict[str, str], mail_from: str, recipients: Sequence[str], message: bytes
) -> list[str]:
    """MAIL FROM parameters, or SmtpReplyError-free refusal (ValueError) if the server can't."""
    params = []
    size = message_size(message)
    if "SIZE" in extensions:
        limit = extensions["SIZE"].strip()
        if limit.isdigit() and int(limit) and size > int(limit):
            raise ValueError(f"the message is {size} octets; the server accepts at most {limit}")
        params.append(f"SIZE={size}")
    if not message.isascii():
        if "8BITMIME" not in extensions:
            raise ValueError("the message has 8-bit content and the server lacks 8BITMIME")
        params.append("BODY=8BITMIME")
    if not all(a.isascii() for a in (mail_from, *recipients)):
        if "SMTPUTF8" not in extensions:
            raise ValueError("an address is not ASCII and the server lacks SMTPUTF8")
        params.append("SMTPUTF8")
    return params


def _fit_for_quit(exc: BaseException) -> bool:
    """QUIT after the server's refusal or a local decision; not after a timeout, a lost
    connection, a broken dialogue, or 421 (the server is closing, RFC 5321 3.8).  smtplib
    reports a line that is not a reply as code -1."""
    if isinstance(exc, SmtpReplyError | smtplib.SMTPResponseException):
        code = exc.code if isinstance(exc, SmtpReplyError) else exc.smtp_code
        return code > 0 and code != 421
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return False
    return isinstance(exc, ValueError | smtplib.SMTPException)  # SMTPException: local refusals


def _one_line(exc: BaseException) -> str:
    text = str(exc).replace("\r", " ").replace("\n", " ").strip()
    return text or type(exc).__name__


# --- scapy StreamSocket client ------------------------------------------------------------------


class _Dialogue:
    """One SMTP connection over scapy's StreamSocket, keeping the transcript."""

    def __init__(
        self, sock: socket.socket, timeout: float, transcript: list[TranscriptLine]
    ) -> None:
        sock.settimeout(timeout)
        self.sock = sock
        self.stream = SmtpStreamSocket(sock)
        self.timeout = timeout
        self.transcript = transcript

    def _record(self, direction: Direction, data: bytes, redacted: bool = False) -> None:
        tls = isinstance(self.sock, ssl.SSLSocket)  # the swaks transcript's ~> and <~
        self.transcript.append(TranscriptLine(direction, data, time.time_ns(), redacted, tls))

    def send(self, *commands: tuple[str, str]) -> None:
        """Send one or more (verb, argument) commands as one write (a pipelined group)."""
        lines = [
            bytes(SMTPCommand(verb=verb.encode("ascii"), argument=argument.encode("utf-8")))
            for verb, argument in commands
        ]
        self._write(b"".join(lines))
        for data in lines:  # on the wire now (sendall returned)
            self._record(Direction.SENT, data)

    def send_secret(self, verb: str, secret: str, prefix: str = "") -> None:
        """A line carrying an AUTH secret: the transcript gets a placeholder."""
        if verb:
            pkt = SMTPCommand(verb=verb.encode("ascii"), argument=secret.encode("ascii"))
        else:  # a bare response line to a 334 challenge
            pkt = SMTPCommand(verb=secret.encode("ascii"))
        placeholder = (prefix.encode() + b" " if prefix else b"") + REDACTED + b"\r\n"
        self._write(bytes(pkt))
        self._record(Direction.SENT, placeholder, redacted=True)

    def send_body(self, body: bytes) -> None:
        self._write(body)
        self._record(Direction.SENT, body)

    def _write(self, data: bytes) -> None:
        try:
            self.stream.send(data)  # SmtpStreamSocket.send: sendall, not scapy's socket.send
        except TimeoutError as exc:
            raise WiretwinTimeout(f"timed out after {self.timeout:g} s sending") from exc

    def reply(self) -> Reply:
        """Read one whole reply (RFC 5321 4.2.1: ``code-`` lines, then ``code SP``)."""
        code: int | None = None
        lines: list[str] = []
        while True:
            try:
                line = self.stream.recv()
            except TimeoutError as exc:
                raise WiretwinTimeout(f"no complete reply within {self.timeout:g} s") from exc
            except EOFError as exc:
                raise RemoteProtocolError("the server closed the connection") from exc
            raw = bytes(line)
            self._record(Direction.RECEIVED, raw)
            if line.eol != b"\r\n":
                raise RemoteProtocolError(f"reply line does not end in CRLF: {raw[:60]!r}")
            if len(raw) > MAX_REPLY_LINE:
                raise RemoteProtocolError(f"reply line of {len(raw)} octets (limit 512)")
            this_code = line.reply_code
            if this_code is None or (line.separator == b"" and line.text):
                raise RemoteProtocolError(f"not an SMTP reply line: {raw[:60]!r}")
            if code is not None and this_code != code:
                raise RemoteProtocolError(f"reply code changed from {code} to {this_code}")
            code = this_code
            lines.append(bytes(line.text).decode("utf-8", errors="replace"))
            if line.is_last:
                return Reply(code, tuple(lines))
            if len(lines) >= MAX_REPLY_LINES:
                raise RemoteProtocolError(f"reply of more than {MAX_REPLY_LINES} lines")

    def command(self, verb: str, argument: str = "") -> Reply:
        self.send((verb, argument))
        return self.reply()

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        if self.stream.pending:
            # RFC 3207 5: anything the server sent before the handshake must not survive it
            # (the STARTTLS command-injection class of bugs).
            raise RemoteProtocolError("the server sent data after its 220 to STARTTLS")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.stream.rewrap(self.sock)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError as exc:
            log.debug("close: %s", exc)


def _extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters (RFC 5321 4.1.1.1)."""
    found: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.upper()] = params
    return found


def _all_refused(outcomes: list[RecipientOutcome]) -> SmtpReplyError:
    """Every RCPT was refused: the error carries the last refusal's code and words."""
    return _Refused(outcomes[-1].reply, "RCPT", ("every recipient was refused",))


def _expect(reply: Reply, stage: str, *codes: int) -> Reply:
    if reply.code not in codes:
        raise _Refused(reply, stage)
    return reply


def _hello(d: _Dialogue, helo_name: str) -> dict[str, str]:
    reply = d.command("EHLO", helo_name)
    if reply.code == 250:
        return _extensions(reply)
    if 500 <= reply.code < 600:  # RFC 5321 4.1.4: an old server; fall back to HELO
        _expect(d.command("HELO", helo_name), "HELO", 250)
        return {}
    raise _Refused(reply, "EHLO")


def _authenticate(d: _Dialogue, extensions: dict[str, str], user: str, password: str) -> None:
    offered = extensions.get("AUTH", "").upper().split()
    if "PLAIN" in offered:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        d.send_secret("AUTH", f"PLAIN {token}", prefix="AUTH PLAIN")
        _expect(d.reply(), "AUTH", 235)
    elif "LOGIN" in offered:
        _expect(d.command("AUTH", "LOGIN"), "AUTH", 334)
        d.send_secret("", base64.b64encode(user.encode()).decode())
        _expect(d.reply(), "AUTH", 334)
        d.send_secret("", base64.b64encode(password.encode()).decode())
        _expect(d.reply(), "AUTH", 235)
    else:
        raise ValueError("the server offers neither AUTH PLAIN nor AUTH LOGIN")


@dataclass
class _Attempt:
    """What one delivery attempt found, filled in as it goes; ``result()`` is its SmtpResult."""

    server: str
    port: int
    mail_from: str
    implementation: Implementation
    transcript: list[TranscriptLine] = field(default_factory=list)
    outcomes: list[RecipientOutcome] = field(default_factory=list)
    final: Reply | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    tls: str | None = None
    error: str | None = None
    stage: SmtpStage = SmtpStage.CONNECT  # the step under way
    refusal: Reply | None = None
    started_ns: int = field(default_factory=time.time_ns)
    start: float = field(default_factory=time.monotonic)

    def result(self) -> SmtpResult:
        if self.error is not None:
            log.info("smtp (%s) failed: %s", self.implementation.value, self.error)
        return SmtpResult(
            server=self.server,
            port=self.port,
            mail_from=self.mail_from,
            recipients=tuple(self.outcomes),
            transcript=tuple(self.transcript),
            delivered=self.final is not None and self.final.code == 250 and self.error is None,
            implementation=self.implementation,
            final_reply=self.final,
            extensions=tuple(self.extensions.items()),
            tls=self.tls,
            error=self.error,
            started_ns=self.started_ns,
            elapsed_ms=(time.monotonic() - self.start) * 1000.0,
            stage=self.stage,
            refusal=self.refusal,
        )

    def failed(self, exc: BaseException) -> None:
        """Record why the attempt ended; a server refusal keeps its reply."""
        if isinstance(exc, _Refused):
            self.refusal = _refusal(exc.reply)
        self.error = _one_line(exc)

    def quit_answered(self, code: int) -> None:
        """QUIT answered ``code``: a delivered dialogue is DONE with 221 (RFC 5321 §4.1.1.10)."""
        if self.final is not None and self.error is None and code == 221:
            self.stage = SmtpStage.DONE


def send_mail(request: MailRequest) -> SmtpResult:
    """Deliver ``request.message`` (RFC 5322, before dot-stuffing) with scapy SMTP packets."""
    if not isinstance(request, MailRequest):
        raise UsageError(f"send_mail wants a MailRequest, not {type(request).__name__}")
    r = request
    context = _tls_context(r.insecure, r.cafile) if (r.tls or r.starttls) else None
    run = _Attempt(r.server, r.port, r.mail_from, Implementation.REFERENCE)
    d: _Dialogue | None = None
    polite = True  # the dialogue is still fit for QUIT
    try:
        sock = socket.create_connection((r.server, r.port), timeout=r.timeout)
        if r.tls and context is not None:
            sock.settimeout(r.timeout)
            sock = context.wrap_socket(sock, server_hostname=r.server)
            run.tls = "implicit"
        d = _Dialogue(sock, r.timeout, run.transcript)
        _transaction(d, run, r, context)
    except (OSError, RemoteProtocolError, SmtpReplyError, ValueError) as exc:
        polite = _fit_for_quit(exc)
        if isinstance(exc, TimeoutError) and not isinstance(exc, WiretwinTimeout):
            exc = WiretwinTimeout(f"timed out after {r.timeout:g} s")
        run.failed(exc)
    if d is not None:
        if polite:
            if run.error is None:
                run.stage = SmtpStage.QUIT
            run.quit_answered(_quit(d))
        d.close()
    return run.result()


def _transaction(
    d: _Dialogue, run: _Attempt, r: MailRequest, context: ssl.SSLContext | None
) -> None:
    run.stage = SmtpStage.GREETING
    _expect(d.reply(), "greeting", 220)
    run.stage = SmtpStage.EHLO
    if r.ehlo:
        extensions = run.extensions = _hello(d, r.helo_name)
    else:  # RFC 821 HELO only, as the seed does
        _expect(d.command("HELO", r.helo_name), "HELO", 250)
        extensions = run.extensions = {}
    if r.starttls and context is not None:
        run.stage = SmtpStage.STARTTLS
        if "STARTTLS" not in extensions:  # asked for: no silent downgrade
            raise ValueError("the server does not offer STARTTLS")
        _expect(d.command("STARTTLS"), "STARTTLS", 220)
        d.start_tls(context, run.server)
        run.tls = "starttls"
        run.stage = SmtpStage.EHLO
        extensions = run.extensions = _hello(d, r.helo_name)  # RFC 3207 4.2: forget, ask again
    if r.auth is not None:
        run.stage = SmtpStage.AUTH
        _authenticate(d, extensions, *r.auth)
    run.stage = SmtpStage.MAIL
    mail_from, recipients, message = r.mail_from, r.recipients, r.message
    params = _mail_params(extensions, mail_from, recipients, message) if r.ehlo else []
    mail_arg = " ".join([f"FROM:<{mail_from}>", *params])
    rcpts = [("RCPT", f"TO:<{rcpt}>") for rcpt in recipients]
    outcomes = run.outcomes
    data_reply: Reply | None = None
    if r.pipelining and "PIPELINING" in extensions:
        d.send(("MAIL", mail_arg), *rcpts, ("DATA", ""))  # RFC 2920 3.1: DATA ends the group
        mail_reply = d.reply()
        run.stage = SmtpStage.RCPT
        for rcpt in recipients:
            reply = d.reply()
            outcomes.append(RecipientOutcome(rcpt, reply, 200 <= reply.code < 300))
        run.stage = SmtpStage.DATA
        data_reply = d.reply()
        run.stage = SmtpStage.MAIL
        _expect(mail_reply, "MAIL", 250)
        run.stage = SmtpStage.RCPT
    else:
        _expect(d.command("MAIL", mail_arg), "MAIL", 250)
        run.stage = SmtpStage.RCPT
        for rcpt, (verb, arg) in zip(recipients, rcpts, strict=True):
            reply = d.command(verb, arg)
            outcomes.append(RecipientOutcome(rcpt, reply, 200 <= reply.code < 300))
    if not any(o.accepted for o in outcomes):
        if data_reply is not None and data_reply.code == 354:
            d.send_body(b".\r\n")  # RFC 2920 3.1: DATA went through, nobody to deliver to
            d.reply()
        raise _all_refused(outcomes)
    run.stage = SmtpStage.DATA
    if data_reply is None:
        data_reply = d.command("DATA")
    _expect(data_reply, "DATA", 354)
    run.stage = SmtpStage.CONTENT
    d.send_body(encode_body(message))
    run.final = final = d.reply()
    _expect(final, "the message (final dot)", 250)


def _quit(d: _Dialogue) -> int:
    """QUIT; the reply's code (0: none).  A failure here changes nothing else."""
    try:
        d.send(("QUIT", ""))
        return d.reply().code
    except (OSError, RemoteProtocolError) as exc:  # ssl.SSLError is an OSError
        log.debug("QUIT: %s", exc)
        return 0


# --- smtplib witness ------------------------------------------------------------------------------


class _Recorder:
    """Wraps smtplib's reply file (``sock.makefile('rb')``) to record each line read."""

    def __init__(self, file: Any, transcript: list[TranscriptLine], tls: bool = False) -> None:
        self.file = file
        self.transcript = transcript
        self.tls = tls

    def readline(self, limit: int = -1) -> bytes:
        line = self.file.readline(limit)
        if line:
            now = time.time_ns()
            self.transcript.append(TranscriptLine(Direction.RECEIVED, line, now, tls=self.tls))
        return line

    def close(self) -> None:
        self.file.close()


def _recording(base: type[smtplib.SMTP]) -> type[smtplib.SMTP]:
    class Recording(base):  # type: ignore[valid-type, misc]
        """smtplib with its transcript recorded; debuglevel stays 0 (it would print)."""

        redact_auth = False

        def __init__(self, run: _Attempt, *args: Any, **kwargs: Any) -> None:
            self.run = run  # before smtplib connects and reads the greeting
            self.transcript = run.transcript
            super().__init__(*args, **kwargs)

        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            sock = super()._get_socket(host, port, timeout)
            self.run.stage = SmtpStage.GREETING  # connected (and TLS up, for SMTP_SSL)
            return sock

        def send(self, s: bytes | str) -> None:
            data = s.encode("ascii") if isinstance(s, str) else s
            shown, redacted = data, False
            if self.redact_auth:  # AUTH secrets (and LOGIN's challenge answers) never recorded
                head = data.split(b" ")[:2] if data[:4].upper() == b"AUTH" else []
                shown = (b" ".join(head) + b" " if len(head) == 2 else b"") + REDACTED + b"\r\n"
                if data.strip().upper() in (b"AUTH LOGIN", b"AUTH CRAM-MD5"):
                    shown = data
                redacted = shown != data
            super().send(s)
            tls = isinstance(self.sock, ssl.SSLSocket)
            line = TranscriptLine(Direction.SENT, shown, time.time_ns(), redacted, tls)
            self.transcript.append(line)
            if self.run.stage is SmtpStage.DATA and data.endswith(b"\r\n.\r\n"):
                self.run.stage = SmtpStage.CONTENT  # smtplib.data(): the message, after 354

        def getreply(self) -> tuple[int, bytes]:
            if self.file is None and self.sock is not None:
                tls = isinstance(self.sock, ssl.SSLSocket)
                self.file = _Recorder(self.sock.makefile("rb"), self.transcript, tls)
            return super().getreply()

    return Recording


def _smtplib_reply(code: int, text: bytes | str) -> Reply:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return Reply(code, tuple(text.split("\n")))


def send_mail_smtplib(request: MailRequest) -> SmtpResult:
    """The same job through ``smtplib`` (the second witness); ``pipelining`` is ignored:
    smtplib never pipelines.  The message bytes go to ``SMTP.data`` as they are."""
    if not isinstance(request, MailRequest):
        raise UsageError(f"send_mail_smtplib wants a MailRequest, not {type(request).__name__}")
    r = request
    context = _tls_context(r.insecure, r.cafile) if (r.tls or r.starttls) else None
    run = _Attempt(r.server, r.port, r.mail_from, Implementation.SMTPLIB)
    run.tls = "implicit" if r.tls else None
    cls = _recording(smtplib.SMTP_SSL if r.tls else smtplib.SMTP)
    client: Any = None
    polite = True  # the dialogue is still fit for QUIT
    try:
        # Given the host, smtplib connects and reads the greeting in its constructor (and
        # remembers the host for TLS server_hostname, which connect() alone does not).
        client = cls(run, r.server, r.port, local_hostname=r.helo_name, timeout=r.timeout,
                     **({"context": context} if r.tls else {}))  # fmt: skip
        _smtplib_dialogue(client, run, r, context)
    except smtplib.SMTPResponseException as exc:  # SMTPConnectError, SMTPDataError, ...
        reply = _smtplib_reply(exc.smtp_code, exc.smtp_error)
        run.failed(_Refused(reply, type(exc).__name__))
        polite = _fit_for_quit(exc)
    except (smtplib.SMTPException, OSError, ValueError, SmtpReplyError) as exc:
        run.failed(exc)
        polite = _fit_for_quit(exc)
    if client is not None:
        if polite and client.sock is not None:
            if run.error is None:
                run.stage = SmtpStage.QUIT
            try:
                run.quit_answered(client.quit()[0])
            except (smtplib.SMTPException, OSError) as exc:
                log.debug("QUIT: %s", exc)
        client.close()
    return run.result()


def _smtplib_dialogue(
    client: Any, run: _Attempt, r: MailRequest, context: ssl.SSLContext | None
) -> None:
    run.stage = SmtpStage.EHLO
    if r.ehlo:
        client.ehlo_or_helo_if_needed()
    else:  # RFC 821 HELO only, as the seed does
        code, text = client.helo(r.helo_name)
        if code != 250:
            raise smtplib.SMTPHeloError(code, text)
    if r.starttls and context is not None:
        run.stage = SmtpStage.STARTTLS
        if not client.has_extn("starttls"):
            raise ValueError("the server does not offer STARTTLS")
        client.starttls(context=context)
        run.tls = "starttls"
        run.stage = SmtpStage.EHLO
        client.ehlo()
    run.extensions = {k.upper(): v for k, v in client.esmtp_features.items()}
    if r.auth is not None:
        run.stage = SmtpStage.AUTH
        client.redact_auth = True
        try:
            client.login(*r.auth)
        finally:
            client.redact_auth = False
    run.stage = SmtpStage.MAIL
    mail_from, recipients, message = r.mail_from, r.recipients, r.message
    options = []
    if client.does_esmtp and client.has_extn("size"):  # as smtplib.sendmail does
        options.append(f"size={len(message)}")
    if not message.isascii() and client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(a.isascii() for a in (mail_from, *recipients)):
        options.append("SMTPUTF8")
    code, text = client.mail(mail_from, options)
    if code != 250:
        raise _Refused(_smtplib_reply(code, text), "MAIL")
    run.stage = SmtpStage.RCPT
    for rcpt in recipients:
        code, text = client.rcpt(rcpt)
        reply = _smtplib_reply(code, text)
        run.outcomes.append(RecipientOutcome(rcpt, reply, 200 <= code < 300))
    if not any(o.accepted for o in run.outcomes):
        raise _all_refused(run.outcomes)
    run.stage = SmtpStage.DATA
    code, text = client.data(message)
    run.final = _smtplib_reply(code, text)
    if code != 250:
        raise _Refused(run.final, "the message (final dot)")
