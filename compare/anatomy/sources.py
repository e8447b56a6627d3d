"""Where a packet comes from: a pcap file (any link type we meet), by 1-based index.

pcap and pcapng are read with scapy's raw readers (no dissection: the bytes as captured);
the link-layer header is stripped here so the anatomy starts at the IP header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from handrolled.errors import UsageError

LINK_NULL = 0
LINK_ETHERNET = 1
LINK_RAW = (101, 228, 229)  # raw IP, raw IPv4, raw IPv6
LINK_SLL = 113
LINK_SLL2 = 276
_IP_ETHERTYPES = {0x0800: 4, 0x86DD: 6}
_VLAN = (0x8100, 0x88A8)


class PcapError(UsageError):
    """A pcap file that cannot be read, or a packet in it that is not IP."""


@dataclass(frozen=True)
class Captured:
    """One packet of a capture: its 1-based index, time, link header and the IP datagram."""

    index: int
    time_ns: int
    link: str  # what was stripped, e.g. "Ethernet 02:..:01 -> 02:..:02"
    ip: bytes | None  # None: not an IP packet
    why_not: str = ""


def _ethernet(frame: bytes) -> tuple[str, bytes | None, str]:
    if len(frame) < 14:
        return "Ethernet (short)", None, "frame shorter than an Ethernet header"
    offset = 12
    (ethertype,) = struct.unpack_from("!H", frame, offset)
    while ethertype in _VLAN and len(frame) >= offset + 6:  # IEEE 802.1Q tags
        offset += 4
        (ethertype,) = struct.unpack_from("!H", frame, offset)
    link = f"Ethernet {frame[6:12].hex(':')} -> {frame[0:6].hex(':')}"
    if ethertype not in _IP_ETHERTYPES:
        return link, None, f"ethertype 0x{ethertype:04x} is not IPv4 or IPv6"
    return link, frame[offset + 2 :], ""


def strip_link(linktype: int, frame: bytes) -> tuple[str, bytes | None, str]:
    """(link description, IP datagram or None, why not) for a frame of ``linktype``."""
    if linktype == LINK_ETHERNET:
        return _ethernet(frame)
    if linktype in LINK_RAW:
        return "raw IP", frame, ""
    if linktype == LINK_SLL and len(frame) >= 16:
        proto = struct.unpack_from("!H", frame, 14)[0]
        ok = proto in _IP_ETHERTYPES
        return "Linux cooked", frame[16:] if ok else None, "" if ok else f"protocol 0x{proto:04x}"
    if linktype == LINK_SLL2 and len(frame) >= 20:
        proto = struct.unpack_from("!H", frame, 0)[0]
        ok = proto in _IP_ETHERTYPES
        return (
            "Linux cooked v2",
            frame[20:] if ok else None,
            "" if ok else f"protocol 0x{proto:04x}",
        )
    if linktype == LINK_NULL and len(frame) >= 4:
        return "BSD loopback", frame[4:], ""
    return f"link type {linktype}", None, f"link type {linktype} is not supported"


def read_pcap(path: str | Path) -> list[Captured]:
    """Every packet of a pcap/pcapng file; ``PcapError`` if it cannot be read."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    path = Path(path)
    out = []
    try:
        with RawPcapReader(str(path)) as reader:
            default_link = getattr(reader, "linktype", LINK_ETHERNET)
            for i, (frame, meta) in enumerate(reader, start=1):
                linktype = getattr(meta, "linktype", None) or default_link
                link, ip, why = strip_link(linktype, bytes(frame))
                out.append(Captured(i, _time_ns(meta), link, ip, why))
    except FileNotFoundError as exc:
        raise PcapError(f"{path}: no such file") from exc
    except (OSError, EOFError, Scapy_Exception, struct.error, ValueError) as exc:
        raise PcapError(f"{path}: not a readable pcap file ({exc})") from exc
    return out


def _time_ns(meta) -> int:
    if hasattr(meta, "tshigh"):  # pcapng: a 64-bit count of tsresol units
        ticks = meta.tshigh << 32 | meta.tslow
        resol = getattr(meta, "tsresol", 1_000_000)
        return ticks * 1_000_000_000 // resol
    sec = getattr(meta, "sec", 0)
    frac = getattr(meta, "usec", 0)
    return sec * 1_000_000_000 + frac * 1000


def packet_at(path: str | Path, index: int) -> Captured:
    """Packet ``index`` (1-based, as Wireshark numbers them) of a capture, as an IP datagram."""
    packets = read_pcap(path)
    if not packets:
        raise PcapError(f"{path}: the capture holds no packets")
    if not 1 <= index <= len(packets):
        raise PcapError(f"{path}: --index {index} out of range (1..{len(packets)})")
    found = packets[index - 1]
    if found.ip is None:
        raise PcapError(f"{path}: packet {index} is not IP ({found.why_not})")
    return found
