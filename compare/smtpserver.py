"""aiosmtpd on a socket made elsewhere (``SmtpdServer``), and the recording server the SMTP
comparison runs inside the lab's target namespace (``LabSmtpServer``).  The tests' fixtures
(tests/smtpd_fixtures.py) serve their handlers through the same ``SmtpdServer``.

The lab server runs on listening sockets created inside the namespace (a socket keeps its
namespace), one on the node's IPv4 and one on its IPv6 address by default (a client that
resolves the node's name tries IPv6 first, RFC 6724, and is answered there rather than with a
reset), served from threads of the harness process, and records every message it accepts:
envelope and content exactly as received after the dot is removed.  A recipient whose local
part starts with ``refuse`` is refused with 550, so scenarios can exercise partial refusal.
Its EHLO reply offers PIPELINING (aiosmtpd copes with pipelined commands, but never says so),
so the comparison's pipelined scenarios really pipeline.

TLS: ``tls="starttls"`` offers STARTTLS (RFC 3207) and requires it before MAIL;
``tls="implicit"`` speaks TLS from the first byte (RFC 8314 §3, port 465).  The certificate
comes from a throwaway CA (``LabCA``, made with ``cryptography`` once per lab) that clients trust
through the request's ``cafile``.  ``auth`` names the mechanisms offered (RFC 4954: PLAIN,
LOGIN) for the one known user ``AUTH_USER`` / ``AUTH_PASSWORD``.  The server keeps its own log
of each connection: every chunk of client bytes as it received them (after decryption) and the
credentials each AUTH carried.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from compare.lab import Lab
from handrolled.results import Family

REFUSE_PREFIX = "refuse"
START_TIMEOUT = 10.0  # seconds: starting and stopping the server are bounded
AUTH_USER = "wiretwin-user"
AUTH_PASSWORD = "lab-secret-Pa55"  # a throwaway lab credential; never in a transcript
MECHANISMS = ("PLAIN", "LOGIN")  # what aiosmtpd implements (RFC 4616, draft-murchison LOGIN)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # the message as delivered (dot-unstuffed, CRLF line ends)


@dataclass
class Connection:
    """The server's log of one connection: client bytes per read, decrypted; AUTH seen."""

    chunks: list[bytes] = field(default_factory=list)
    auths: list[tuple[str, str, str]] = field(default_factory=list)  # (mechanism, user, pass)
    nodelay: bool | None = None  # TCP_NODELAY on the server's socket (None: not a TCP socket)

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)


class _LoggingSMTP(SMTP):
    """aiosmtpd's protocol, logging what each read delivered (asyncio hands a TLS session's
    plaintext to the same data_received)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not hasattr(self, "wiretwin_log"):  # STARTTLS calls this again on the TLS transport
            self.wiretwin_log = Connection()
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                self.wiretwin_log.nodelay = bool(nodelay)
            self.event_handler.connections.append(self.wiretwin_log)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.wiretwin_log.chunks.append(bytes(data))
        super().data_received(data)


@dataclass
class _Recorder:
    messages: list[Received] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)

    def authenticator(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        server.wiretwin_log.auths.append((mechanism, user, password))
        ok = (user, password) == (AUTH_USER, AUTH_PASSWORD)
        return AuthResult(success=ok, handled=False)  # aiosmtpd replies 235 or 535

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")  # RFC 2920; aiosmtpd reads line by line
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0].lower().startswith(REFUSE_PREFIX):
            return "550 5.1.1 mailbox refused by the wiretwin lab"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        )
        return "250 2.0.0 accepted by the wiretwin lab"


class SmtpdServer:
    """aiosmtpd serving ``sock`` (already bound, e.g. inside a namespace) from a thread.

    Uses the asyncio ``create_server(sock=...)`` path, so the socket may come from anywhere.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: object,  # an aiosmtpd handler
        *,
        ssl_context: ssl.SSLContext | None = None,
        hostname: str = "smtpd.wiretwin.test",
        smtp_class: type[SMTP] = SMTP,
        **smtp_kwargs: object,
    ) -> None:
        self.smtp_class = smtp_class
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.handler = handler
        self.ssl_context = ssl_context
        # A hostname given means aiosmtpd never calls getfqdn() (a DNS lookup).
        self.smtp_kwargs = {"hostname": hostname, "enable_SMTPUTF8": True, **smtp_kwargs}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.connections = 0  # connections accepted (asyncio calls the factory once for each)

    @property
    def messages(self) -> list:
        return self.handler.messages

    def __enter__(self) -> SmtpdServer:
        self._thread = threading.Thread(target=self._serve, name="smtpd", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("aiosmtpd did not start")
        if self._error is not None:
            raise RuntimeError(f"aiosmtpd failed to start: {self._error}") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:

            def factory() -> SMTP:
                self.connections += 1
                return self.smtp_class(self.handler, loop=loop, **self.smtp_kwargs)

            server = loop.run_until_complete(
                loop.create_server(factory, sock=self.sock, ssl=self.ssl_context)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


class LabCA:
    """The lab run's throwaway CA (``compare.certs``) and one server certificate it signs for
    ``names`` (DNS names or addresses, in subjectAltName: RFC 6125 §6.4)."""

    def __init__(self, names: list[str]) -> None:
        from compare import certs  # cryptography is imported only once a TLS scenario runs

        directory = Path(tempfile.mkdtemp(prefix="wiretwin-ca-"))
        atexit.register(shutil.rmtree, directory, True)
        ca = certs.CA(directory, "wiretwin lab CA")
        self.directory, self.cafile = directory, ca.cafile
        self.certfile, self.keyfile = ca.issue(names)

    def server_context(self) -> ssl.SSLContext:
        from compare import certs

        return certs.server_context(self.certfile, self.keyfile)


_CAS: dict[str, LabCA] = {}


def lab_ca(lab: Lab, role: str = "target") -> LabCA:
    """The lab run's CA and the node's certificate (its name and addresses), made once."""
    node = lab.nodes[role]
    key = f"{getattr(lab, 'lab_id', id(lab))}:{role}"
    if key not in _CAS:
        names = [n for n in (node.hostname, node.addr(4), node.addr(6)) if n]
        _CAS[key] = LabCA(names)
    return _CAS[key]


class LabSmtpServer:
    """``with LabSmtpServer(lab, "target", 25) as server: ... server.messages``.

    ``family`` 4 or 6: listen on that address of the node only; None: on both.  ``tls``:
    None, "starttls" (offered and required before MAIL) or "implicit"; ``auth``: the AUTH
    mechanisms offered (over TLS only), e.g. ("PLAIN", "LOGIN") or ("LOGIN",).
    """

    def __init__(
        self,
        lab: Lab,
        role: str = "target",
        port: int = 25,
        family: Family | None = None,
        *,
        tls: str | None = None,
        auth: tuple[str, ...] = (),
    ) -> None:
        self.lab, self.role, self.port, self.family = lab, role, port, family
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls {tls!r}: None, 'starttls' or 'implicit'")
        self.tls, self.auth = tls, tuple(m.upper() for m in auth)
        self.recorder = _Recorder()
        self._stack = contextlib.ExitStack()

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def connections(self) -> list[Connection]:
        """The server's log: one entry per connection accepted, in order."""
        return self.recorder.connections

    def _smtp_options(self) -> dict[str, object]:
        options: dict[str, object] = {"smtp_class": _LoggingSMTP}
        if self.tls is not None:
            context = lab_ca(self.lab, self.role).server_context()
            if self.tls == "implicit":
                options["ssl_context"] = context  # RFC 8314 §3.3: TLS from the first byte
            else:
                options.update(tls_context=context, require_starttls=True)
        if self.auth:
            options.update(
                authenticator=self.recorder.authenticator,
                # aiosmtpd counts only STARTTLS as TLS; implicit TLS is TLS all along
                auth_require_tls=self.tls == "starttls",
                auth_exclude_mechanism=[m for m in MECHANISMS if m not in self.auth],
            )
        return options

    def __enter__(self) -> LabSmtpServer:
        node = self.lab.nodes[self.role]
        families: tuple[Family, ...] = (4, 6) if self.family is None else (self.family,)
        options = self._smtp_options()
        try:
            for family in families:
                af = socket.AF_INET6 if family == 6 else socket.AF_INET
                # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets made so,
                # and Nagle would hold each pipelined reply ~40 ms for the client's ACK
                sock = self._stack.enter_context(
                    self.lab.socket(self.role, af, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                )
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == 6:  # this socket for IPv6 only; IPv4 has its own
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((node.addr(family), self.port))
                sock.listen(16)
                self._stack.enter_context(
                    SmtpdServer(sock, self.recorder, hostname=node.hostname or "lab", **options)
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
