"""Real SMTP servers for tests: aiosmtpd in-process, scripted misbehaving servers, the lab.

Imported by tests/conftest.py (``from smtpd_fixtures import *``).  Everything listens on
127.0.0.1 on a port the kernel picks, or inside the lab's target namespace; nothing else.

Fixtures
--------
``smtp_server``            recording aiosmtpd (SIZE, 8BITMIME, SMTPUTF8, PIPELINING), plain TCP
``smtp_plain_server``      the same without PIPELINING in its EHLO reply
``smtp_tls_server``        STARTTLS with a certificate from ``smtp_test_ca``; AUTH after TLS
``smtp_implicit_tls_server``  TLS from the first byte (port-465 style), AUTH allowed
``smtp_auth_server``       AUTH PLAIN/LOGIN over plain TCP (for allow_plain_auth tests)
``smtp_test_ca``           a throwaway CA (``cryptography``) that issues server certificates
``scripted_smtp_server``   factory: ``start(script)`` runs ``script(peer)`` for one connection
``lab_smtp_server``        the recording server listening in the lab's target namespace
Helpers: ``SmtpdServer`` (aiosmtpd on a socket we made, via ``create_server(sock=...)``),
``RecordingHandler``, ``ScriptedServer``, ``ScriptPeer``, ``happy_script``, ``skip_or_fail``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from compare.certs import CA, server_context
from compare.smtpserver import LabSmtpServer, SmtpdServer

__all__ = [
    "AUTH_PASSWORD",
    "AUTH_USER",
    "SERVER_NAME",
    "ReceivedMessage",
    "RecordingHandler",
    "ScriptPeer",
    "ScriptedServer",
    "SmtpdServer",
    "TestCA",
    "happy_script",
    "lab_smtp_server",
    "scripted_smtp_server",
    "smtp_auth_server",
    "smtp_implicit_tls_server",
    "smtp_plain_server",
    "smtp_server",
    "smtp_test_ca",
    "smtp_tls_server",
]

SERVER_NAME = "smtpd.wiretwin.test"  # given to aiosmtpd so it never calls getfqdn() (DNS)
AUTH_USER = "alice"
AUTH_PASSWORD = "s3cret-Pa55w0rd-never-logged"
STEP_TIMEOUT = 10.0  # seconds: every wait in these helpers is bounded
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(problem: str) -> None:
    """Skip the calling test because of ``problem``; under CI=true, fail it instead."""
    if IN_CI:
        pytest.fail(f"CI=true: {problem}", pytrace=False)
    pytest.skip(problem)


def _listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    # IPPROTO_TCP named, as getaddrinfo() names it for aiosmtpd's own Controller: asyncio
    # sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without it the
    # server's Nagle holds each pipelined reply back until our delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(16)
    return sock


# --- aiosmtpd -------------------------------------------------------------------------------


@dataclass
class ReceivedMessage:
    """One message as the server got it, after it undid the dot-stuffing."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    smtp_utf8: bool
    tls: bool
    authenticated: bool


@dataclass
class RecordingHandler:
    """aiosmtpd handler that records every message; refuses recipients in ``refuse``."""

    pipelining: bool = True
    refuse: set[str] = field(default_factory=set)
    # Transactions (counted by MAIL from 1, over all connections) whose RCPTs get 550, and
    # whose content gets 554 after the final dot.
    refuse_rcpt_in: set[int] = field(default_factory=set)
    refuse_content_in: set[int] = field(default_factory=set)
    messages: list[ReceivedMessage] = field(default_factory=list)
    helo_names: list[str] = field(default_factory=list)
    auth_attempts: list[tuple[str, bytes]] = field(default_factory=list)  # (mechanism, login)
    transactions: int = 0
    # Every chunk one recv() returned to the server, after the first EHLO of each connection
    # (the hook wraps the connection's data_received, which asyncio calls once per recv()):
    # bytes in one chunk arrived together.
    chunks: list[bytes] = field(default_factory=list)

    def _record_chunks(self, server) -> None:
        if getattr(server, "_wiretwin_recording", False):
            return
        received = server.data_received

        def data_received(data: bytes) -> None:
            self.chunks.append(bytes(data))
            received(data)

        server.data_received = data_received
        server._wiretwin_recording = True

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self._record_chunks(server)
        self.helo_names.append(hostname)
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd reads line by line, so it copes; it just never says so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self._record_chunks(server)
        self.helo_names.append(hostname)
        session.host_name = hostname
        return f"250 {SERVER_NAME}"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.transactions += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse or self.transactions in self.refuse_rcpt_in:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.transactions in self.refuse_content_in:
            return "554 5.7.1 message refused"
        self.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content,
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                smtp_utf8=envelope.smtp_utf8,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 Message accepted for delivery"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            self.auth_attempts.append((mechanism, auth_data.login))
            ok = auth_data.login == AUTH_USER.encode() and (
                auth_data.password == AUTH_PASSWORD.encode()
            )
            return AuthResult(success=ok, handled=False)  # aiosmtpd then replies 235/535
        return AuthResult(success=False, handled=False)


@contextlib.contextmanager
def serve_recording(
    handler: RecordingHandler | None = None,
    *,
    sock: socket.socket | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **smtp_kwargs: object,
) -> Iterator[SmtpdServer]:
    """A recording aiosmtpd on ``sock`` (default: 127.0.0.1, a port the kernel picks)."""
    sock = sock or _listening_socket()
    with (
        sock,
        SmtpdServer(
            sock,
            handler or RecordingHandler(),
            ssl_context=ssl_context,
            hostname=SERVER_NAME,
            **smtp_kwargs,
        ) as server,
    ):
        yield server


# --- a throwaway CA -------------------------------------------------------------------------


class TestCA(CA):
    """A CA made in the test (``compare.certs``); ``issue`` makes certificates it signs, for DNS
    names and IP addresses, ``expired``: valid for a day that ended yesterday."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "wiretwin test CA")

    def server_context(self, names: list[str], *, expired: bool = False) -> ssl.SSLContext:
        stem = "-".join(names)[:60].replace(":", "_") + ("-expired" if expired else "")
        return server_context(*self.issue(names, stem=stem, expired=expired))


@pytest.fixture(scope="session")
def smtp_test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("smtp-ca"))


@pytest.fixture
def smtp_server() -> Iterator[SmtpdServer]:
    """Recording aiosmtpd on 127.0.0.1: SIZE, 8BITMIME, SMTPUTF8 and PIPELINING."""
    with serve_recording() as server:
        yield server


@pytest.fixture
def smtp_plain_server() -> Iterator[SmtpdServer]:
    """Recording aiosmtpd that does not offer PIPELINING."""
    with serve_recording(RecordingHandler(pipelining=False)) as server:
        yield server


@pytest.fixture
def smtp_tls_server(smtp_test_ca: TestCA) -> Iterator[SmtpdServer]:
    """STARTTLS (required before MAIL) with a certificate for 127.0.0.1 and localhost."""
    handler = RecordingHandler()
    context = smtp_test_ca.server_context(["localhost", "127.0.0.1"])
    with serve_recording(
        handler,
        tls_context=context,
        require_starttls=True,
        authenticator=handler.authenticator,
        auth_require_tls=True,
    ) as server:
        server.cafile = str(smtp_test_ca.cafile)  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def smtp_implicit_tls_server(smtp_test_ca: TestCA) -> Iterator[SmtpdServer]:
    """TLS from the first byte; AUTH offered (the link is encrypted)."""
    handler = RecordingHandler()
    context = smtp_test_ca.server_context(["localhost", "127.0.0.1"])
    with serve_recording(
        handler,
        ssl_context=context,
        authenticator=handler.authenticator,
        auth_require_tls=False,  # aiosmtpd only knows about STARTTLS-made TLS
    ) as server:
        server.cafile = str(smtp_test_ca.cafile)  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpdServer]:
    """AUTH PLAIN and LOGIN over plain TCP, credentials AUTH_USER / AUTH_PASSWORD."""
    handler = RecordingHandler()
    with serve_recording(
        handler, authenticator=handler.authenticator, auth_require_tls=False
    ) as server:
        yield server


# --- scripted misbehaving servers -----------------------------------------------------------


class ScriptPeer:
    """The server's end of one connection, for scripts; every read is bounded in time."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.conn.settimeout(STEP_TIMEOUT)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def readline(self) -> bytes:
        """One line from the client, CRLF included; b"" if it closed."""
        while b"\n" not in self._buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        line += b"\n"
        return line

    def read_data(self) -> bytes:
        """The DATA body up to and including the final ``.CRLF``."""
        body = b""
        while True:
            line = self.readline()
            body += line
            if not line or line == b".\r\n":
                return body

    def expect(self, verb: bytes) -> bytes:
        line = self.readline()
        if not line.upper().startswith(verb):
            raise AssertionError(f"expected {verb!r} from the client, got {line!r}")
        return line

    def shutdown_write(self) -> None:
        """EOF towards the client, connection left half-open."""
        self.conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.conn.close()


class ScriptedServer:
    """Accepts one connection on 127.0.0.1 and runs ``script(peer)`` on it, in a thread."""

    def __init__(self, script: Callable[[ScriptPeer], None]) -> None:
        self.script = script
        self.sock = _listening_socket()
        self.host, self.port = self.sock.getsockname()[:2]
        self.peer: ScriptPeer | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="scripted-smtp", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(STEP_TIMEOUT)
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            self.error = exc
            return
        self.peer = ScriptPeer(conn)
        try:
            self.script(self.peer)
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def finish(self) -> None:
        """Wait for the script; re-raise what it raised (a broken script is a broken test,
        and so is one stuck waiting for the client), except the client hanging up on it."""
        self._thread.join(STEP_TIMEOUT * 2)
        self.sock.close()
        if self.error is not None and not isinstance(self.error, ConnectionError):
            raise self.error


def happy_script(
    fail_at: str | None = None,
    reply: bytes = b"",
    *,
    ehlo_lines: tuple[bytes, ...] = (b"SIZE 1000000", b"8BITMIME"),
) -> Callable[[ScriptPeer], None]:
    """A well-behaved SMTP server that answers ``reply`` at stage ``fail_at``.

    Stages: greeting, EHLO, HELO, MAIL, RCPT, DATA, dot, QUIT.  After a failing reply the
    script keeps serving (as real servers do) until QUIT or EOF.  No PIPELINING.
    """

    def answer(stage: str, normal: bytes) -> bytes:
        return reply if stage == fail_at else normal

    def script(peer: ScriptPeer) -> None:
        peer.send(answer("greeting", b"220 scripted.test ESMTP\r\n"))
        for _ in range(50):  # bounded: a test dialogue is a handful of commands
            line = peer.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                ext = b"".join(b"250-" + e + b"\r\n" for e in ehlo_lines)
                peer.send(answer("EHLO", b"250-scripted.test\r\n" + ext + b"250 HELP\r\n"))
            elif verb == b"HELO":
                peer.send(answer("HELO", b"250 scripted.test\r\n"))
            elif verb == b"MAIL":
                peer.send(answer("MAIL", b"250 2.1.0 OK\r\n"))
            elif verb == b"RCPT":
                peer.send(answer("RCPT", b"250 2.1.5 OK\r\n"))
            elif verb == b"DATA":
                out = answer("DATA", b"354 go ahead\r\n")
                peer.send(out)
                if out.startswith(b"354"):
                    peer.read_data()
                    peer.send(answer("dot", b"250 2.0.0 queued\r\n"))
            elif verb == b"RSET":
                peer.send(b"250 OK\r\n")
            elif verb == b"QUIT":
                peer.send(answer("QUIT", b"221 bye\r\n"))
                return
            else:
                peer.send(b"502 5.5.2 command not recognised\r\n")

    return script


@pytest.fixture
def scripted_smtp_server() -> Iterator[Callable[[Callable[[ScriptPeer], None]], ScriptedServer]]:
    """Factory: ``server = scripted_smtp_server(script)``; the script's errors fail the test."""
    servers: list[ScriptedServer] = []

    def start(script: Callable[[ScriptPeer], None]) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.finish()


# --- the lab --------------------------------------------------------------------------------


@pytest.fixture
def lab_smtp_server(lab) -> Iterator[LabSmtpServer]:
    """The comparison's recording server (PIPELINING offered) on the lab target's IPv4 and
    IPv6 addresses, port 25: sockets made inside the target namespace, served from this
    process."""
    with LabSmtpServer(lab, "target", 25) as server:
        yield server
