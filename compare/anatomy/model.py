"""The anatomy data model: leaf fields laid over a packet's bits, layers, checksum work.

Every view (terminal, Markdown, JSON, HTML, worksheet) is rendered from one ``Anatomy``; none
re-parses another's text.  Leaves carry absolute bit offsets into ``Anatomy.packet`` (the IP
datagram), so together they tile the packet: every bit belongs to exactly one leaf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A value as JSON can carry it: ints, text (addresses, hex of byte strings), booleans.
Value = int | str | bool | None


@dataclass
class Field:
    """One leaf field: where it sits, what our decoder and scapy read there, what it means."""

    layer: str  # the layer's unique name, e.g. "IPv4", "ICMP", "IPv4 (quoted)"
    name: str
    bit_offset: int  # from the first bit of the packet
    bit_length: int
    value: Value  # the hand-rolled decoder's value
    meaning: str = ""
    rfc: str = ""
    scapy: Value = None  # scapy's value for the same bits (None: scapy has no such field)
    agree: bool | None = None  # None: nothing to compare
    display: str = ""  # a friendlier rendering of value ("DF", "echo request"...)

    @property
    def byte_start(self) -> int:
        return self.bit_offset // 8

    @property
    def byte_end(self) -> int:
        """One past the last byte any bit of the field touches."""
        return (self.bit_offset + self.bit_length + 7) // 8

    @property
    def is_bits(self) -> bool:
        """True for a field that does not start and end on byte boundaries (shown as bits)."""
        return self.bit_offset % 8 != 0 or self.bit_length % 8 != 0

    def bits(self, packet: bytes) -> str:
        """The field's bits as 0/1 text."""
        start = self.bit_offset
        return "".join(
            str(packet[(start + i) // 8] >> (7 - (start + i) % 8) & 1)
            for i in range(self.bit_length)
        )

    def raw(self, packet: bytes) -> bytes:
        """The bytes the field touches (whole bytes, for bit fields the ones it shares)."""
        return packet[self.byte_start : self.byte_end]


@dataclass
class Layer:
    """A header (or payload) occupying ``packet[start:end]``; depth 1 inside an ICMP error."""

    name: str
    kind: str  # "ipv4", "ipv6", "icmp", "icmp6", "udp", "tcp"
    start: int
    end: int
    depth: int = 0
    summary: str = ""


@dataclass
class Word:
    """One 16-bit word of a checksum sum and what adding it did."""

    label: str  # where it comes from: "pseudo: source address", "offset 20"
    word: int
    total: int  # the running sum after adding and folding
    carried: bool  # a carry out of bit 15 was folded back in (RFC 1071 §2 (B))


@dataclass
class ChecksumWork:
    """The checksum of one layer worked out word by word (sender's view: field zeroed)."""

    layer: str
    covers: str
    rfc: str
    words: list[Word]
    pseudo_header: list[tuple[str, bytes]]  # named parts; empty for IPv4 headers and ICMPv4
    total: int  # one's complement sum, checksum field counted as zero
    computed: int  # ~total & 0xFFFF (UDP: 0 sent as 0xFFFF)
    stored: int
    verifies: bool
    receiver_total: int  # the sum over everything including the stored checksum
    scapy: int | None = None  # what scapy computes when asked to rebuild the field
    note: str = ""


@dataclass
class Anatomy:
    """A dissected packet: its bytes, its layers, its leaves, its checksums."""

    title: str
    packet: bytes
    layers: list[Layer] = field(default_factory=list)
    fields: list[Field] = field(default_factory=list)
    checksums: list[ChecksumWork] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def disagreements(self) -> list[Field]:
        return [f for f in self.fields if f.agree is False]

    def fields_of(self, layer: str) -> list[Field]:
        return [f for f in self.fields if f.layer == layer]

    def find(self, layer: str, name: str) -> Field:
        """The leaf ``name`` of ``layer``; KeyError if there is none."""
        for f in self.fields:
            if f.layer == layer and f.name == name:
                return f
        raise KeyError(f"{layer}.{name}")

    def to_json(self) -> dict[str, Any]:
        """The --json document: the packet in hex and its leaf fields, in bit order."""
        return {
            "packet": self.packet.hex(),
            "fields": [
                {
                    "layer": f.layer,
                    "name": f.name,
                    "bit_offset": f.bit_offset,
                    "bit_length": f.bit_length,
                    "value": f.value,
                    "scapy": f.scapy,
                    "agree": f.agree,
                    "rfc": f.rfc,
                }
                for f in self.fields
            ],
        }


def uncovered(fields: list[Field], nbits: int) -> list[tuple[int, int]]:
    """Bit ranges [start, end) of a packet of ``nbits`` no leaf covers, or covered twice.

    Empty when the leaves tile the packet exactly.
    """
    problems: list[tuple[int, int]] = []
    pos = 0
    for f in sorted(fields, key=lambda f: f.bit_offset):
        if f.bit_offset != pos:
            problems.append((min(pos, f.bit_offset), max(pos, f.bit_offset)))
        pos = max(pos, f.bit_offset + f.bit_length)
    if pos != nbits:
        problems.append((min(pos, nbits), max(pos, nbits)))
    return problems
