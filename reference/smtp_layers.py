"""scapy layers for SMTP lines (scapy has none): a command line and a reply line.

RFC 5321 grammar, one line per packet:

    command    = verb [ SP argument ] CRLF                               (section 4.1.1)
    reply-line = reply-code [ ( "-" / SP ) textstring ] CRLF             (section 4.2)

Both classes keep every field as the exact bytes seen, so ``bytes(pkt)`` rebuilds the line as
it was on the wire, and hand anything after the line end to scapy as padding: that is what
lets ``StreamSocket`` (see :class:`SmtpStreamSocket`) take exactly one line per ``recv``.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from scapy.fields import Field, StrField
from scapy.packet import Packet, Padding
from scapy.supersocket import StreamSocket

MAX_REPLY_LINE = 512  # RFC 5321 4.5.3.1.5, CRLF included
MAX_LINE_BUFFER = 4096  # give up looking for a line end after this many octets


class _UntilField(StrField):
    """Bytes up to (not including) the first of ``stops``; all of it if none occurs."""

    __slots__ = ("stops",)

    def __init__(self, name: str, default: bytes, stops: tuple[bytes, ...]) -> None:
        super().__init__(name, default)
        self.stops = stops

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        ends = [i for i in (s.find(stop) for stop in self.stops) if i >= 0]
        end = min(ends) if ends else len(s)
        return s[end:], s[:end]


class _ArgumentField(StrField):
    """``[ SP argument ]``: the value excludes the space; empty means no space on the wire."""

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:
        val = self.i2m(pkt, val)
        return s + (b" " + val if val else b"")

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        if not s.startswith(b" "):
            return s, b""
        end = s.find(b"\r\n")
        end = len(s) if end < 0 else end
        return s[end:], s[1:end]


class _SeparatorField(StrField):
    """Reply-line separator: ``-`` (more lines follow), SP (last line) or absent (last line)."""

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        if s[:1] in (b"-", b" "):
            return s[1:], s[:1]
        return s, b""


class _EndOfLineField(StrField):
    """The line end as seen: CRLF, or a bare LF (which the driver refuses), or nothing yet."""

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        for end in (b"\r\n", b"\n"):
            if s.startswith(end):
                return s[len(end) :], end
        return s, b""


class _FixedField(Field[bytes, bytes]):
    """Exactly ``length`` octets (fewer if the data ends first)."""

    __slots__ = ("length",)

    def __init__(self, name: str, default: bytes, length: int) -> None:
        super().__init__(name, default)
        self.length = length

    def addfield(self, pkt: Packet, s: bytes, val: bytes) -> bytes:
        return s + bytes(val)

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes]:
        return s[self.length :], s[: self.length]


class _LinePacket(Packet):
    """Common behaviour: one line per packet, the rest is padding; stream reassembly."""

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    @classmethod
    def tcp_reassemble(cls, data: bytes, metadata: dict, session: dict) -> Packet | None:
        """scapy's stream hook: a packet once a whole line is buffered, else None (need more)."""
        end = data.find(b"\n")
        if end < 0:
            if len(data) > MAX_LINE_BUFFER:  # hand over the gibberish; the driver refuses it
                return cls(data[:MAX_LINE_BUFFER]) / Padding(load=data[MAX_LINE_BUFFER:])
            return None
        return cls(data)


class SMTPCommand(_LinePacket):
    """A client command line (RFC 5321 4.1.1): ``verb [SP argument] CRLF``."""

    name = "SMTP command"
    fields_desc = [
        _UntilField("verb", b"NOOP", stops=(b" ", b"\r\n")),
        _ArgumentField("argument", b""),
        _EndOfLineField("eol", b"\r\n"),
    ]

    def mysummary(self) -> str:
        return self.sprintf("SMTP %verb% %argument%")


class SMTPReply(_LinePacket):
    """One server reply line (RFC 5321 4.2): ``code ("-" / SP) text CRLF``."""

    name = "SMTP reply line"
    fields_desc = [
        _FixedField("code", b"250", 3),
        _SeparatorField("separator", b" "),
        _UntilField("text", b"", stops=(b"\r\n", b"\n")),
        _EndOfLineField("eol", b"\r\n"),
    ]

    @property
    def reply_code(self) -> int | None:
        """The code as an int, or None when the three octets are not digits."""
        code = bytes(self.code)
        return int(code) if len(code) == 3 and code.isdigit() else None

    @property
    def is_last(self) -> bool:
        return self.separator != b"-"

    def mysummary(self) -> str:
        return self.sprintf("SMTP %code%%separator%%text%")


class SmtpStreamSocket(StreamSocket):
    """scapy's StreamSocket for SMTP lines over a kernel TCP (or TLS) socket.

    Two scapy quirks handled here:
    - ``StreamSocket.recv`` peeks with ``MSG_PEEK``, which ``ssl.SSLSocket.recv`` refuses
      (ValueError: non-zero flags), so after STARTTLS it cannot read at all; and
      ``StreamSocketPeekless`` does not hand out a second line already buffered before it
      blocks in ``recv`` again (a multi-line EHLO reply arriving in one segment hangs it).
      We keep scapy's dissection and stream hook (``tcp_reassemble`` + padding) but buffer
      the bytes ourselves.
    - ``SuperSocket.send`` uses ``socket.send``, which may write only part of a long DATA
      body; we use ``sendall``.
    """

    def __init__(self, sock: socket.socket, basecls: type[Packet] = SMTPReply) -> None:
        super().__init__(sock, basecls=basecls)
        self.pending = b""

    def recv(self, x: int | None = None, **kwargs: Any) -> Packet | None:
        while True:
            pkt = (
                self.rcvcls(self.pending, self.metadata, self.streamsession)
                if self.pending
                else None
            )
            if pkt is not None:
                break
            data = self.ins.recv(x or 65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.pending += data
        self.metadata.clear()
        pad = pkt.getlayer(Padding)
        rest = b""
        if pad is not None:
            rest = bytes(pad.load)
            if pad.underlayer is not None:
                del pad.underlayer.payload
        self.pending = rest
        return pkt

    def send(self, x: Packet | bytes) -> int:
        data = bytes(x)
        if isinstance(x, Packet):
            x.sent_time = time.time()
        self.outs.sendall(data)
        return len(data)

    def rewrap(self, sock: socket.socket) -> None:
        """Carry on over ``sock`` (the TLS-wrapped socket after STARTTLS)."""
        self.ins = self.outs = sock
