"""The checksums worked out as a student would on paper (RFC 1071 §1-§2).

The words are summed with each carry out of bit 15 folded back in at once (the end-around
carry), the checksum field counted as zero; the complement is the checksum.  The receiver's
check adds every word including the stored checksum: all ones (0xffff) means it verifies.
The verdict is cross-checked against handrolled.checksum and scapy's own recomputation.
"""

from __future__ import annotations

import ipaddress
import struct

from compare.anatomy import scapy_side
from compare.anatomy.model import Anatomy, ChecksumWork, Layer, Word
from handrolled.checksum import internet_checksum, pseudo_header
from handrolled.ip import IpProto

_PROTO = {"icmp6": IpProto.ICMPV6, "udp": IpProto.UDP, "tcp": IpProto.TCP}
_RFC = {
    "ipv4": "RFC 791 §3.1, RFC 1071",
    "icmp": "RFC 792, RFC 1071",
    "icmp6": "RFC 4443 §2.3, RFC 8200 §8.1",
    "udp": "RFC 768, RFC 8200 §8.1",
    "tcp": "RFC 9293 §3.1, RFC 8200 §8.1",
}
_FIELD_AT = {"ipv4": 10, "icmp": 2, "icmp6": 2, "udp": 6, "tcp": 16}


def fold_sum(data: bytes, labels: list[str]) -> tuple[list[Word], int]:
    """Sum ``data`` as big-endian 16-bit words, folding each carry; one label per word."""
    if len(data) % 2:
        data += b"\x00"  # RFC 1071 §4.1: an odd byte is padded with zero on the right
    words, total = [], 0
    for i, (word,) in enumerate(struct.iter_unpack("!H", data)):
        total += word
        carried = total > 0xFFFF
        if carried:
            total = (total & 0xFFFF) + 1
        words.append(Word(labels[i], word, total, carried))
    return words, total


def pseudo_parts(src: str, dst: str, proto: int, length: int) -> list[tuple[str, bytes]]:
    """The pseudo-header's fields, named (RFC 768 / RFC 9293 §3.1, or RFC 8200 §8.1)."""
    whole = pseudo_header(src, dst, proto, length)
    n = 4 if ipaddress.ip_address(src).version == 4 else 16
    parts = [("source address", whole[:n]), ("destination address", whole[n : 2 * n])]
    if n == 4:
        parts += [("zero", whole[8:9]), ("protocol", whole[9:10]), ("length", whole[10:12])]
    else:
        parts += [("upper-layer length", whole[32:36]), ("zero", whole[36:39])]
        parts += [("next header", whole[39:40])]
    return parts


def _ip_around(anatomy: Anatomy, layer: Layer) -> Layer | None:
    before = [x for x in anatomy.layers if x.kind in ("ipv4", "ipv6") and x.start < layer.start]
    return before[-1] if before else None


def work(anatomy: Anatomy, layer: Layer) -> ChecksumWork | None:
    """The checksum of ``layer`` worked out; None for a layer without one."""
    at = _FIELD_AT.get(layer.kind)
    if at is None:
        return None
    packet = anatomy.packet
    data = packet[layer.start : layer.end]
    stored = struct.unpack_from("!H", data, at)[0]
    zeroed = data[:at] + b"\x00\x00" + data[at + 2 :]
    parts: list[tuple[str, bytes]] = []
    ip = _ip_around(anatomy, layer)
    v6_ip = ip is not None and ip.kind == "ipv6"
    if layer.kind in _PROTO:
        if ip is None:
            return None
        src = anatomy.find(ip.name, "src").value
        dst = anatomy.find(ip.name, "dst").value
        parts = pseudo_parts(str(src), str(dst), _PROTO[layer.kind], len(data))
    pseudo = b"".join(p for _, p in parts)
    owner = [name for name, part in parts for _ in part]  # pseudo-header byte -> its part
    labels = [
        "pseudo: " + " + ".join(dict.fromkeys(owner[i : i + 2])) for i in range(0, len(owner), 2)
    ]
    labels += [
        f"offset {layer.start + i}"
        + (" (checksum as 0)" if i == at else "")
        + (" + zero pad (RFC 1071 §4.1)" if i + 1 == len(data) else "")
        for i in range(0, len(data), 2)
    ]
    words, total = fold_sum(pseudo + zeroed, labels)
    computed = ~total & 0xFFFF
    note = ""
    if layer.kind == "udp":
        if stored == 0 and not v6_ip:
            note = "a UDP checksum of 0 means none was computed (RFC 768)"
        if computed == 0:
            computed, note = 0xFFFF, "a computed 0 is sent as 0xffff (RFC 768)"
    _, receiver = fold_sum(pseudo + data, [""] * ((len(pseudo) + len(data) + 1) // 2))
    independent = internet_checksum(pseudo + data) == 0  # handrolled.checksum's own verdict
    verifies = receiver == 0xFFFF
    if verifies != independent:
        note = (note + "; " if note else "") + "handrolled.checksum disagrees with this sum"
    what = {
        "ipv4": f"the IPv4 header ({len(data)} bytes)",
        "icmp": f"the whole ICMP message ({len(data)} bytes), no pseudo-header",
    }.get(layer.kind, f"pseudo-header ({len(pseudo)} bytes) + {layer.name} ({len(data)} bytes)")
    return ChecksumWork(
        layer=layer.name,
        covers=what,
        rfc=_RFC[layer.kind],
        words=words,
        pseudo_header=parts,
        total=total,
        computed=computed,
        stored=stored,
        verifies=verifies,
        receiver_total=receiver,
        scapy=scapy_side.scapy_checksum(packet, layer.name, anatomy),
        note=note,
    )


def add_checksums(anatomy: Anatomy) -> Anatomy:
    """Work out every checksum that can be checked: IPv4 headers, and the outer message's."""
    for layer in anatomy.layers:
        if layer.depth > 0 and layer.kind != "ipv4":
            continue  # a quoted message is cut short: its checksum cannot be checked
        done = work(anatomy, layer)
        if done is not None:
            anatomy.checksums.append(done)
    return anatomy
