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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP

from compare.lab import Lab
from handrolled.results import Family

REFUSE_PREFIX = "refuse"
START_TIMEOUT = 10.0  # seconds: starting and stopping the server are bounded


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # the message as delivered (dot-unstuffed, CRLF line ends)


@dataclass
class _Recorder:
    messages: list[Received] = field(default_factory=list)

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
        **smtp_kwargs: object,
    ) -> None:
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
                return SMTP(self.handler, loop=loop, **self.smtp_kwargs)

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


class LabSmtpServer:
    """``with LabSmtpServer(lab, "target", 25) as server: ... server.messages``.

    ``family`` 4 or 6: listen on that address of the node only; None: on both.
    """

    def __init__(
        self, lab: Lab, role: str = "target", port: int = 25, family: Family | None = None
    ) -> None:
        self.lab, self.role, self.port, self.family = lab, role, port, family
        self.recorder = _Recorder()
        self._stack = contextlib.ExitStack()

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    def __enter__(self) -> LabSmtpServer:
        node = self.lab.nodes[self.role]
        families: tuple[Family, ...] = (4, 6) if self.family is None else (self.family,)
        try:
            for family in families:
                af = socket.AF_INET6 if family == 6 else socket.AF_INET
                sock = self._stack.enter_context(self.lab.socket(self.role, af, socket.SOCK_STREAM))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == 6:  # this socket for IPv6 only; IPv4 has its own
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((node.addr(family), self.port))
                sock.listen(16)
                self._stack.enter_context(
                    SmtpdServer(sock, self.recorder, hostname=node.hostname or "lab")
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
