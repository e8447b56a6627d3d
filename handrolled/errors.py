"""Exceptions: one root, h11's split for protocol errors, OS-facing errors that also subclass
the matching builtin (as aiosmtplib does).  Part of the shared contract with results.py:
reference/ and compare/ may import this module.

Timeouts and ICMP errors met while probing are *outcomes* (results.Outcome), not exceptions;
these are for misuse, malformed input and failures that end the whole job.
"""

from __future__ import annotations


class WiretwinError(Exception):
    """Root of every error wiretwin raises on purpose."""


class UsageError(WiretwinError, ValueError):
    """Bad input from the user or caller (TTL out of range, size that does not fit, ...)."""


class ResolveError(WiretwinError, OSError):
    """A host name did not resolve."""

    def __init__(self, host: str, reason: str = "") -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"cannot resolve {host!r}" + (f": {reason}" if reason else ""))


class LocalProtocolError(WiretwinError):
    """We were about to misuse the protocol (e.g. a command out of order, CR/LF in an address)."""


class RemoteProtocolError(WiretwinError):
    """The peer broke the protocol (gibberish, an over-long line, an unexpected reply)."""


class MalformedPacket(WiretwinError, ValueError):
    """Bytes that do not decode as the packet they claim to be."""


class RawSocketPermissionError(WiretwinError, PermissionError):
    """Neither a raw nor a datagram ICMP socket could be opened; the message names the fix."""


class WiretwinTimeout(WiretwinError, TimeoutError):
    """A whole operation (connect, a read) ran out of time."""


class SmtpReplyError(WiretwinError):
    """The SMTP server answered with an error reply; carries its code and lines."""

    def __init__(self, code: int, lines: tuple[str, ...] | list[str], stage: str = "") -> None:
        self.code = code
        self.lines = tuple(lines)
        self.stage = stage
        where = f" to {stage}" if stage else ""
        super().__init__(f"server replied {code}{where}: {' '.join(self.lines)}")
