"""Wire capture inside a lab namespace, and pcap files.

A capture is an AF_PACKET socket opened inside the node's namespace (compare/lab/netns.py) and read
by a thread: every Ethernet frame the interface sends or receives, with the kernel's timestamp
(SO_TIMESTAMPNS) and its direction.  This is the strongest truth the harness has: what each
implementation really put on the wire, and when.

pcap files are written by hand (the classic format, nanosecond variant: magic 0xa1b23c4d,
LINKTYPE_ETHERNET), readable by Wireshark, tcpdump and scapy's rdpcap.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from compare.lab import netns

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
MAX_FRAMES = 200_000  # a bound: a capture never grows without limit


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured Ethernet frame."""

    time_ns: int  # kernel timestamp (CLOCK_REALTIME)
    outgoing: bool  # sent by the captured node
    data: bytes  # the whole Ethernet frame

    @property
    def ethertype(self) -> int:
        return struct.unpack_from("!H", self.data, 12)[0] if len(self.data) >= 14 else 0

    @property
    def ip(self) -> bytes:
        """The IP datagram the frame carries (b"" for non-IP frames)."""
        return self.data[14:] if self.ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else b""


class Capture:
    """Capture every frame on ``iface`` inside namespace ``ns`` while the context is open.

    ``ns`` None: this process's own namespace; ``iface`` None: every interface (on loopback
    each packet is then seen twice, once leaving and once arriving).
    """

    def __init__(self, ns: str | None, iface: str | None) -> None:
        self.ns = ns
        self.iface = iface
        self.frames: list[Frame] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Capture:
        proto = socket.htons(ETH_P_ALL)
        if self.ns is None:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, proto)
        else:
            sock = netns.netns_socket(self.ns, socket.AF_PACKET, socket.SOCK_RAW, proto)
        if self.iface is not None:
            sock.bind((self.iface, 0))  # looked up in the socket's own namespace
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.ns}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        ancillary = socket.CMSG_SPACE(16)
        while not self._stop.is_set() or self._readable(0):
            if not self._readable(0.05):
                continue
            data, anc, _flags, addr = sock.recvmsg(65535, ancillary)
            stamp = 0
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("=qq", value[:16])
                    stamp = sec * 1_000_000_000 + nsec
            if len(self.frames) < MAX_FRAMES:
                self.frames.append(Frame(stamp, addr[2] == socket.PACKET_OUTGOING, data))

    def _readable(self, timeout: float) -> bool:
        assert self._sock is not None
        return bool(select.select([self._sock], [], [], timeout)[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()


def write_pcap(path: str | Path, frames: list[Frame]) -> None:
    """Write frames as a nanosecond-resolution pcap file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for frame in frames:
            sec, nsec = divmod(frame.time_ns, 1_000_000_000)
            out.write(struct.pack("<IIII", sec, nsec, len(frame.data), len(frame.data)))
            out.write(frame.data)
