"""The socket side of one SMTP connection, for the hand-rolled client: ``SmtpSession`` (the
socket, TLS, timeouts and the transcript around an ``smtp_protocol.ClientConnection``) and the
errors that end a dialogue.  The dialogues are handrolled.smtp (one message) and
handrolled.smtp_session (many over one connection).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable

from handrolled import smtp_protocol as proto
from handrolled.errors import RemoteProtocolError, SmtpReplyError, WiretwinError, WiretwinTimeout
from handrolled.record import replace
from handrolled.results import Direction, TranscriptLine

__all__ = ["SmtpSession"]

log = logging.getLogger("handrolled.smtp")  # one logger for the client's dialogue

REDACTED = b"<redacted>"
_SECRET = proto._SECRET  # the commands that may carry secrets (see _redact)
_SEND_LATE = "timed out after {:g} s sending"
_REPLY_LATE = "no complete reply within {:g} s"
_SEND_TIMEOUTS = (
    TimeoutError,
    BlockingIOError,
)  # a send Python timed out, or the kernel (SO_SNDTIMEO)
RECV_SIZE = 4096


class _Stop(WiretwinError):
    """Ends the dialogue early with a one-line reason (a local decision, not the server's)."""


# How errors name what a reply answered (SmtpReplyError's ``stage``).
_NAMES = {
    proto.Command.GREETING: "the connection (greeting)",
    proto.Command.AUTH_RESPONSE: "AUTH",
    proto.Command.MAIL: "MAIL FROM",
    proto.Command.RCPT: "RCPT TO",
    proto.Command.CONTENT: "the message (final dot)",
}


class _Refused(SmtpReplyError):
    """The server's reply that ends the dialogue; keeps the reply and what it answered."""

    def __init__(self, answer: proto.Answer, lead: tuple[str, ...] = ()) -> None:
        name = _NAMES.get(answer.command, answer.command.value)
        super().__init__(answer.reply.code, (*lead, *answer.reply.lines), name)
        self.answer = answer
        self.reply = answer.reply


class _ServerClosing(_Refused):
    """A reply that closed the session (421, RFC 5321 §3.8): nothing more may be sent."""


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
        self._transcript: list[TranscriptLine] = []
        # Speed: replies read and not yet in the transcript, as (answer, when its bytes came,
        # inside TLS).  A pipelined session reads a group's replies and writes the next group
        # at once; their lines are made after that write (_hear), while the server works.
        self._heard: list[tuple[proto.Answer, int, bool]] = []
        self.clock_ns = clock_ns
        self.monotonic = monotonic
        self.tls: str | None = None
        self.tls_cipher: str | None = None
        self._unanswered: deque[int] = deque()  # transcript index of each command sent
        self._sock_timeout: float | None = None  # the timeout the socket last got
        # Speed: a socket with a Python-level timeout polls before every recv and send, two
        # system calls each; a blocking socket whose calls the kernel bounds (SO_RCVTIMEO,
        # SO_SNDTIMEO, socket(7)) makes one.  Linux, plain TCP: OpenSSL must see its own
        # would-block, so TLS keeps Python's timeouts.
        self._kernel_timeouts = sys.platform == "linux" and not isinstance(sock, ssl.SSLSocket)
        if self._kernel_timeouts:
            sock.settimeout(None)
        self._received_ns = 0  # when the last bytes from the server arrived

    # --- writing ----------------------------------------------------------------------------

    def send(self, *events: proto.Event) -> None:
        """Send events as one write (a pipelined group when there are several).

        Every event is encoded before a byte goes out, and a group that cannot be encoded
        whole leaves the connection as it was; a line enters the transcript only once all of
        it has been handed to the kernel.
        """
        datas = self.conn.send_all(events)
        self._write(events, datas, b"".join(datas))

    def _write(
        self, events: tuple[proto.Event, ...], datas: list[bytes], wire: bytes, written: int = 0
    ) -> None:
        """Hand ``wire`` (``datas`` joined) to the kernel from octet ``written`` on, then
        record what went."""
        deadline = None
        try:
            while written < len(wire):
                deadline = self._bound(deadline, _SEND_LATE)
                try:
                    # speed: the whole group as it is; a memoryview slice only for a remainder
                    written += self.sock.send(memoryview(wire)[written:] if written else wire)
                except _SEND_TIMEOUTS as exc:
                    raise self._send_late() from exc
        finally:
            self._record_sent(events, datas, written)

    def _send_late(self) -> WiretwinTimeout:
        return WiretwinTimeout(_SEND_LATE.format(self.timeout))

    def _bound(self, deadline: float | None, late: str) -> float:
        """Bound the next socket call of a step by what is left of its timeout; the step's
        deadline (None: its first call).  Speed: the first call has the whole timeout, which
        the socket already holds (no settimeout, an ioctl, on the common path); only a later
        one needs a shorter timeout.  WiretwinTimeout ``late`` once nothing is left."""
        if deadline is None:
            remaining = self.timeout
            deadline = self.monotonic() + remaining
        else:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise WiretwinTimeout(late.format(self.timeout))
        self._settimeout(remaining)
        return deadline

    def _settimeout(self, seconds: float) -> None:
        if seconds == self._sock_timeout:
            return
        if self._kernel_timeouts:
            self._kernel_timeout(_timeval(seconds))
        else:
            self.sock.settimeout(seconds)
        self._sock_timeout = seconds

    def _kernel_timeout(self, timeval: bytes) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)

    def _record_sent(
        self, events: tuple[proto.Event, ...], datas: list[bytes], written: int
    ) -> None:
        now, end, debug = self.clock_ns(), 0, log.isEnabledFor(logging.DEBUG)
        tls = self.tls is not None
        if self._heard:  # the replies read before this write come first
            self._hear()
        transcript = self._transcript
        for event, data in zip(events, datas, strict=True):
            end += len(data)
            if end > written:
                return
            shown, redacted = _redact(event, data) if event.command in _SECRET else (data, False)
            self._unanswered.append(len(transcript))
            transcript.append(TranscriptLine(Direction.SENT, shown, now, redacted, tls))
            if debug:
                log.debug("-> %r", shown)

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> proto.Answer:
        """The next reply; raises RemoteProtocolError, WiretwinTimeout or OSError."""
        return self._read(None)

    def _read(self, deadline: float | None) -> proto.Answer:
        # deadline None: the reply's first recv, when it needs one (speed: the clock is read
        # only if we must wait)
        while True:
            event = self.conn.next_event()
            if isinstance(event, proto.Answer):
                if self._unanswered:
                    self._unanswered.popleft()
                self._heard.append((event, self._received_ns, self.tls is not None))
                if log.isEnabledFor(logging.DEBUG):
                    for raw in event.raw:
                        log.debug("<- %r", raw)
                if (
                    self.conn.state is proto.State.CLOSED
                    and event.command is not proto.Command.QUIT
                ):
                    raise _ServerClosing(event)
                return event
            if isinstance(event, proto.ConnectionClosed):
                raise RemoteProtocolError("the server closed the connection")
            deadline = self._bound(deadline, _REPLY_LATE)
            self.conn.receive_data(self._recv())

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (TimeoutError, BlockingIOError) as exc:  # Python's timeout or the kernel's
            raise WiretwinTimeout(_REPLY_LATE.format(self.timeout)) from exc
        # Each reply is stamped with the time its bytes arrived: truer than when it is
        # parsed, and (speed) one clock read per recv, not one per reply.
        self._received_ns = self.clock_ns()
        return data

    def read_then_send(
        self, events: tuple[proto.Event, ...], go_ahead: bytes | None, into: list[proto.Answer]
    ) -> proto.Answer:
        """The next reply, appended to ``into``; when it is a success, ``events`` go out
        right after it as one write (as ``send``), else nothing is sent.

        Speed (RFC 2920 §3.1: after DATA's 354 the content, and the next group behind it):
        the server waits from its 354 until these bytes arrive.  ``go_ahead`` is the line of
        a success heard before (the last 354); when the state machine foresees what
        ``events`` make once that line arrives (``ClientConnection.foresee``) and exactly
        that line comes, those bytes are written before anything else is done; the line is
        then fed to the state machine and ``events`` sent through it, which makes the
        same bytes, and only then are the transcript and the caller's bookkeeping done.
        """
        wire = None if go_ahead is None else self.conn.foresee(go_ahead, events)
        deadline = None
        if wire is not None:
            deadline = self._bound(None, _REPLY_LATE)
            data = self._recv()
            if data == go_ahead:
                return self._go(events, wire, data, into)
            self.conn.receive_data(data)  # something else: read it as any reply
        answer = self._read(deadline)
        into.append(answer)
        if answer.verdict is proto.Verdict.OK:
            self.send(*events)
        return answer

    def _go(
        self,
        events: tuple[proto.Event, ...],
        wire: bytes,
        data: bytes,
        into: list[proto.Answer],
    ) -> proto.Answer:
        """``data``, the foreseen go-ahead, has arrived: ``wire`` first, then the rest."""
        written, error = 0, None
        try:
            written = self.sock.send(wire)  # the server's wait ends here
        except OSError as exc:  # the state machine must still hear the reply and the send
            error = exc
        self.conn.receive_data(data)
        answer = self._read(None)  # whole in the buffer: no recv
        into.append(answer)
        datas = self.conn.send_all(events)  # the bytes foreseen (ClientConnection.foresee)
        if error is not None:
            self._record_sent(events, datas, 0)
            if isinstance(error, _SEND_TIMEOUTS):
                raise self._send_late() from error
            raise error
        # a remainder the kernel did not take gets a bound of its own (at worst twice the
        # timeout for the whole write)
        self._write(events, datas, wire, written)
        return answer

    def command(self, event: proto.Event) -> proto.Answer:
        self.send(event)
        return self.read()

    # --- TLS --------------------------------------------------------------------------------

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """RFC 3207 §4.2: the handshake after 220 to STARTTLS, then EHLO again."""
        if self._kernel_timeouts:  # from here on Python's timeouts (see __init__)
            self._kernel_timeout(_timeval(0.0, unbounded=True))
            self._kernel_timeouts = False
        self.sock = _wrap(self.sock, context, server_hostname, self.timeout, self.monotonic)
        self._sock_timeout = None  # a new socket object
        self.conn.tls_established()
        self.tls = "starttls"
        self.tls_cipher = _cipher(self.sock)

    def _hear(self) -> None:
        """Move the replies read into the transcript, a line each (``expected`` False for a
        refusal, swaks' ``<**``)."""
        append, received = self._transcript.append, Direction.RECEIVED
        for answer, time_ns, tls in self._heard:
            expected = answer.verdict is not proto.Verdict.FAIL
            for raw in answer.raw:
                append(TranscriptLine(received, raw, time_ns, False, tls, expected))
        self._heard.clear()

    @property
    def transcript(self) -> list[TranscriptLine]:
        """Every line sent and received so far, in order (the list itself)."""
        if self._heard:
            self._hear()
        return self._transcript

    def lines(self) -> tuple[TranscriptLine, ...]:
        """The transcript; a command the dialogue ended before answering is not expected."""
        lines = list(self.transcript)
        for i in self._unanswered:
            lines[i] = replace(lines[i], expected=False)
        return tuple(lines)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError as exc:  # nothing useful left to do with the socket
            log.debug("close: %s", exc)


def _wrap(
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str,
    timeout: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> ssl.SSLSocket:
    """The TLS handshake, bounded by ``timeout`` in all: a socket timeout alone bounds each
    read, and a server trickling its handshake a byte at a time would never reach it."""
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    deadline = monotonic() + timeout
    tls.setblocking(False)
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                readable, writable = [tls], []
            except ssl.SSLWantWriteError:
                readable, writable = [], [tls]
            remaining = deadline - monotonic()
            if remaining <= 0 or not any(select.select(readable, writable, [], remaining)):
                raise WiretwinTimeout(f"TLS handshake not done within {timeout:g} s")
    except BaseException:
        tls.close()
        raise
    tls.settimeout(timeout)
    return tls


def _timeval(seconds: float, unbounded: bool = False) -> bytes:
    """A struct timeval (Linux: two longs) for SO_RCVTIMEO/SO_SNDTIMEO.  All zeros means no
    bound at all, so a bound never rounds down to it: at least one microsecond."""
    micros = 0 if unbounded else max(1, int(seconds * 1_000_000))
    return struct.pack("@ll", *divmod(micros, 1_000_000))


def _cipher(sock: socket.socket) -> str | None:
    """The TLS version, cipher and secret bits, as swaks shows them."""
    cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
    return f"{cipher[1]}:{cipher[0]}:{cipher[2]}" if cipher else None


def _redact(event: proto.Event, data: bytes) -> tuple[bytes, bool]:
    """What the transcript may show of ``data``: AUTH secrets are replaced (RFC 4954)."""
    if isinstance(event, proto.AuthResponse):
        return REDACTED + b"\r\n", True
    if isinstance(event, proto.Auth) and event.initial_response is not None:
        return b"AUTH " + event.mechanism.upper().encode() + b" " + REDACTED + b"\r\n", True
    return data, False
