"""A recording SMTP server (aiosmtpd) listening inside a lab namespace, for the SMTP comparison.

It runs its own asyncio loop in a thread of the harness process, on a listening socket created
inside the namespace (a socket keeps its namespace), and records every message it accepts:
envelope and content exactly as received after the dot is removed.  A recipient whose local
part starts with ``refuse`` is refused with 550, so scenarios can exercise partial refusal.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP

from compare.lab import Lab

REFUSE_PREFIX = "refuse"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes  # the message as delivered (dot-unstuffed, CRLF line ends)


@dataclass
class _Recorder:
    messages: list[Received] = field(default_factory=list)

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


class LabSmtpServer:
    """``with LabSmtpServer(lab, "target", 25) as server: ... server.messages``."""

    def __init__(
        self, lab: Lab, role: str = "target", port: int = 25, family: int = socket.AF_INET
    ) -> None:
        self.lab, self.role, self.port, self.family = lab, role, port, family
        self.recorder = _Recorder()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    def __enter__(self) -> LabSmtpServer:
        sock = self.lab.socket(self.role, self.family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = self.lab.nodes[self.role].addr(6 if self.family == socket.AF_INET6 else 4)
        sock.bind((address, self.port))
        sock.listen(16)
        sock.setblocking(False)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        hostname = self.lab.nodes[self.role].hostname or address

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            factory = lambda: SMTP(self.recorder, hostname=hostname, enable_SMTPUTF8=True)  # noqa: E731
            self._server = self._loop.run_until_complete(
                self._loop.create_server(factory, sock=sock)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="lab-smtp", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the lab SMTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is None:
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
