"""`--seed-skeleton`: the course skeleton's echo request next to network byte order.

The skeleton packs its header with ``struct.pack("bbHHh", ICMP_ECHO_REQUEST, 0, myChecksum,
ID, 1)``: native byte order.  On a little-endian machine the identifier and sequence number
leave least significant byte first, while RFC 792 fields are big-endian (RFC 1700, "Data
Notations").  Its ``checksum()`` sums little-endian words and swaps the result, and ``htons``
swaps it back into network order before the native pack: the checksum field comes out right,
and since the one's complement sum does not depend on byte order (RFC 1071 §2 (B)) it verifies
over the swapped bytes too.  Nothing complains: the reply echoes the same bytes, the skeleton
unpacks them with the same native format, and only a dissector shows the identifier swapped.
"""

from __future__ import annotations

import struct
import textwrap
from dataclasses import dataclass

from tabulate import tabulate

from handrolled.checksum import checksum as seed_checksum
from handrolled.checksum import internet_checksum
from handrolled.icmp import decode_icmp

SKELETON = 'struct.pack("bbHHh", ICMP_ECHO_REQUEST, 0, myChecksum, ID, 1)'
_FIELDS = (("type", "b"), ("code", "b"), ("checksum", "H"), ("identifier", "H"), ("sequence", "h"))


def _htons_le(value: int) -> int:
    """socket.htons on a little-endian machine: swap the two bytes."""
    return (value & 0xFF) << 8 | value >> 8


@dataclass
class SeedView:
    ident: int
    seq: int
    data: bytes
    skeleton: bytes  # what the skeleton sends on a little-endian machine
    network: bytes  # the same message in network byte order (handrolled.icmp's)
    seed_sum: int  # checksum() over the zero-checksum header + data
    rows: list[dict]

    def to_json(self) -> dict:
        return {
            "skeleton": self.skeleton.hex(),
            "network": self.network.hex(),
            "fields": self.rows,
            "checksum_function": self.seed_sum,
            "htons_on_little_endian": _htons_le(self.seed_sum),
        }


def _note(name: str, sk: bytes, nw: bytes, skeleton: bytes) -> str:
    if len(sk) == 1:
        return "one byte: no byte order"
    if name == "checksum":
        right = internet_checksum(skeleton[:2] + b"\x00\x00" + skeleton[4:])
        ok = struct.pack("!H", right) == sk
        return (
            "network order, "
            + ("right for the bytes sent" if ok else "WRONG")
            + (" (which differ: the identifier does)" if sk != nw else "")
        )
    return "swapped: least significant byte first" if sk != nw else "same (a palindrome)"


def seed_view(ident: int, seq: int, data: bytes) -> SeedView:
    """Both encodings of one echo request and which of their bytes differ."""
    zero = struct.pack("<bbHHh", 8, 0, 0, ident, seq)  # "<": the skeleton on little-endian
    seed_sum = seed_checksum(zero + data)
    skeleton = struct.pack("<bbHHh", 8, 0, _htons_le(seed_sum), ident, seq) + data
    csum = internet_checksum(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data)
    network = struct.pack("!BBHHH", 8, 0, csum, ident, seq) + data
    rows, offset = [], 0
    wire = decode_icmp(skeleton)
    read_back = {"identifier": wire.ident, "sequence": wire.seq, "checksum": wire.checksum}
    for name, code in _FIELDS:
        size = struct.calcsize(code)
        sk, nw = skeleton[offset : offset + size], network[offset : offset + size]
        rows.append(
            {
                "offset": offset,
                "field": name,
                "format": code,
                "skeleton_bytes": sk.hex(" "),
                "network_bytes": nw.hex(" "),
                "differs": sk != nw,
                "receiver_reads": read_back.get(name, sk[0] if size == 1 else None),
                "note": _note(name, sk, nw, skeleton),
            }
        )
        offset += size
    return SeedView(ident, seq, data, skeleton, network, seed_sum, rows)


def explanation(view: SeedView) -> list[str]:
    """The why, in sentences, with this packet's numbers."""
    swapped = [r["field"] for r in view.rows if r["note"].startswith("swapped")]
    verifies = internet_checksum(view.skeleton) == 0
    return [
        f"The skeleton packs its header with {SKELETON}: native byte order, no '!'.",
        f"On a little-endian machine these fields leave in the other order: {', '.join(swapped)}"
        " (RFC 792 fields are big-endian, network byte order; RFC 1700 'Data Notations').",
        f"A receiver reads identifier {view.rows[3]['receiver_reads']} (sent as {view.ident})"
        f" and sequence {view.rows[4]['receiver_reads']} (sent as {view.seq}).",
        f"checksum() sums little-endian words and swaps its result: 0x{view.seed_sum:04x};"
        f" htons() swaps it again (0x{_htons_le(view.seed_sum):04x}), and the native pack puts"
        f" {view.skeleton[2:4].hex(' ')} on the wire: network order, the right bytes.",
        "The one's complement sum does not depend on byte order (RFC 1071 §2 (B)), so the"
        f" checksum over the swapped bytes still verifies: {'yes' if verifies else 'no'}.",
        "So htons on the checksum hides the problem: the reply echoes the same bytes, the"
        " skeleton unpacks them with the same native format and matches its ID; only a"
        " dissector (tcpdump, scapy, this page) shows the identifier and sequence swapped.",
    ]


def render_seed(view: SeedView, markdown: bool = False) -> str:
    headers = ["off", "field (fmt)", "skeleton", "network", "reads", "why"]
    rows = [
        [
            r["offset"],
            f"{r['field']} ({r['format']})",
            r["skeleton_bytes"] + (" *" if r["differs"] else ""),
            r["network_bytes"],
            r["receiver_reads"] if r["receiver_reads"] is not None else "",
            r["note"],
        ]
        for r in view.rows
    ]
    fmt = "github" if markdown else "grid"
    widths = None if markdown else [3, 14, 8, 8, 6, 36]
    table = tabulate(
        rows, headers=headers, tablefmt=fmt, maxcolwidths=widths, disable_numparse=True
    )
    title = "The seed skeleton's echo request vs network byte order"
    lines = [f"## {title}" if markdown else title, "", table]
    lines += ["* differs from network order (skeleton: a little-endian machine)", ""]
    lines.append(f"skeleton: {view.skeleton.hex(' ')}")
    lines.append(f"network:  {view.network.hex(' ')}")
    lines.append("")
    for sentence in explanation(view):
        lines += [f"- {sentence}"] if markdown else textwrap.wrap(sentence, 100)
    return "\n".join(lines) + "\n"
