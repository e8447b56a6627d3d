"""The independent side: scapy's dissection of the same bytes, field by field.

Each of our layers is paired, in order, with the scapy layer of the matching class; each leaf
reads the scapy field that covers the same bits.  A leaf scapy has no field for keeps
``scapy=None`` and ``agree=None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from compare.anatomy.model import Anatomy, Field, Value

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.layers.inet import ICMP, IP, TCP, UDP, ICMPerror, IPerror, TCPerror, UDPerror  # noqa: E402
from scapy.layers.inet6 import IPerror6, IPv6, _ICMPv6  # noqa: E402
from scapy.packet import Packet, Padding, Raw  # noqa: E402

_CLASSES: dict[str, tuple[type, ...]] = {
    "ipv4": (IP, IPerror),
    "ipv6": (IPv6, IPerror6),
    "icmp": (ICMP, ICMPerror),
    "icmp6": (_ICMPv6,),
    "udp": (UDP, UDPerror),
    "tcp": (TCP, TCPerror),
}
_CHECKSUM_FIELD = {
    "ipv4": "chksum",
    "icmp": "chksum",
    "icmp6": "cksum",
    "udp": "chksum",
    "tcp": "chksum",
}


def _f(name: str) -> Callable[[Packet], Any]:
    return lambda layer: layer.getfieldval(name) if name in layer.fields else None


def _bit(name: str, shift: int) -> Callable[[Packet], Any]:
    return lambda layer: int(layer.getfieldval(name)) >> shift & 1


def _payload(layer: Packet) -> bytes:
    """The bytes scapy left undissected after ``layer`` (Raw), without link padding."""
    pay = layer.payload
    return bytes(pay.load) if isinstance(pay, Raw) else b""


def _header_tail(length_field: str, scale: int, fixed: int) -> Callable[[Packet], Any]:
    def get(layer: Packet) -> bytes:
        end = int(layer.getfieldval(length_field)) * scale
        return bytes(layer.original or bytes(layer))[fixed:end]

    return get


_TCP_FLAGS = ("cwr", "ece", "urg", "ack", "psh", "rst", "syn", "fin")

_GETTERS: dict[str, dict[str, Callable[[Packet], Any]]] = {
    "ipv4": {
        "version": _f("version"),
        "ihl": _f("ihl"),
        "dscp": lambda p: p.tos >> 2,
        "ecn": lambda p: p.tos & 3,
        "total_length": _f("len"),
        "identification": _f("id"),
        "flag_reserved": _bit("flags", 2),
        "flag_df": _bit("flags", 1),
        "flag_mf": _bit("flags", 0),
        "fragment_offset": _f("frag"),
        "ttl": _f("ttl"),
        "protocol": _f("proto"),
        "header_checksum": _f("chksum"),
        "src": _f("src"),
        "dst": _f("dst"),
        "options": _header_tail("ihl", 4, 20),
    },
    "ipv6": {
        "version": _f("version"),
        "traffic_class": _f("tc"),
        "flow_label": _f("fl"),
        "payload_length": _f("plen"),
        "next_header": _f("nh"),
        "hop_limit": _f("hlim"),
        "src": _f("src"),
        "dst": _f("dst"),
    },
    "icmp": {
        "type": _f("type"),
        "code": _f("code"),
        "checksum": _f("chksum"),
        "identifier": _f("id"),
        "sequence": _f("seq"),
        "payload": _payload,
        "unused": _f("reserved"),
        "length": _f("length"),
        "next_hop_mtu": _f("nexthopmtu"),
        "unused_2": lambda p: p.unused if isinstance(p.unused, int) else None,
    },
    "icmp6": {
        "type": _f("type"),
        "code": _f("code"),
        "checksum": _f("cksum"),
        "identifier": _f("id"),
        "sequence": _f("seq"),
        "payload": _f("data"),
        "length": _f("length"),
        "unused": _f("unused"),
        "mtu": _f("mtu"),
        "pointer": _f("ptr"),
    },
    "udp": {
        "src_port": _f("sport"),
        "dst_port": _f("dport"),
        "length": _f("len"),
        "checksum": _f("chksum"),
        "payload": _payload,
    },
    "tcp": {
        "src_port": _f("sport"),
        "dst_port": _f("dport"),
        "seq": _f("seq"),
        "ack": _f("ack"),
        "data_offset": _f("dataofs"),
        "reserved": _f("reserved"),
        **{f"flag_{n}": _bit("flags", 7 - i) for i, n in enumerate(_TCP_FLAGS)},
        "window": _f("window"),
        "checksum": _f("chksum"),
        "urgent_pointer": _f("urgptr"),
        "options": _header_tail("dataofs", 4, 20),
        "payload": _payload,
    },
}


def normalise(value: Any) -> Value:
    """A scapy (or our) value as JSON carries it: bytes as hex, flag sets as int."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def parse(packet: bytes) -> Packet:
    """scapy's dissection of an IP datagram."""
    return IPv6(packet) if packet and packet[0] >> 4 == 6 else IP(packet)


def chain(pkt: Packet) -> list[Packet]:
    """The header layers of a scapy packet, in order (Raw, padding and IPv6 extensions out)."""
    out = []
    layer: Packet = pkt
    while layer and not isinstance(layer, Raw | Padding):
        if not type(layer).__name__.startswith("IPv6ExtHdr"):
            out.append(layer)
        layer = layer.payload
    return out


def pair_layers(anatomy: Anatomy, pkt: Packet) -> dict[str, Packet]:
    """Our layer name -> the scapy layer that dissects the same header."""
    scapy_layers = chain(pkt)
    pairs: dict[str, Packet] = {}
    i = 0
    for layer in anatomy.layers:
        classes = _CLASSES.get(layer.kind)
        if classes is None:
            continue
        if i < len(scapy_layers) and isinstance(scapy_layers[i], classes):
            pairs[layer.name] = scapy_layers[i]
            i += 1
    return pairs


def scapy_value(kind: str, leaf: Field, layer: Packet) -> Value:
    """What scapy reads for ``leaf`` in ``layer`` (None if it has no such field)."""
    getter = _GETTERS.get(kind, {}).get(leaf.name)
    if getter is None:
        return None
    try:
        return normalise(getter(layer))
    except (AttributeError, TypeError, ValueError):
        return None


def annotate(anatomy: Anatomy) -> Anatomy:
    """Fill each leaf's ``scapy`` and ``agree`` from scapy's dissection of the same bytes."""
    try:
        pairs = pair_layers(anatomy, parse(anatomy.packet))
    except Exception:  # scapy's dissectors raise anything on damaged input
        pairs = {}
        anatomy.notes.append("scapy could not dissect these bytes: no scapy column.")
    kinds = {layer.name: layer.kind for layer in anatomy.layers}
    for leaf in anatomy.fields:
        layer = pairs.get(leaf.layer)
        leaf.scapy = None if layer is None else scapy_value(kinds[leaf.layer], leaf, layer)
        leaf.agree = None if leaf.scapy is None else normalise(leaf.value) == leaf.scapy
    return anatomy


def scapy_checksum(packet: bytes, layer_name: str, anatomy: Anatomy) -> int | None:
    """The checksum scapy computes for a layer when the field is deleted and rebuilt."""
    kind = next(layer.kind for layer in anatomy.layers if layer.name == layer_name)
    field_name = _CHECKSUM_FIELD.get(kind)
    pkt = parse(packet)
    paired = list(pair_layers(anatomy, pkt))
    if field_name is None or layer_name not in paired:
        return None  # scapy did not dissect this layer (e.g. a fragment's payload)
    index = paired.index(layer_name)
    try:
        target = chain(pkt)[index]
        delattr(target, field_name)
        rebuilt = parse(bytes(pkt))
        return int(chain(rebuilt)[index].getfieldval(field_name))
    except Exception:  # scapy's builders raise anything on damaged input: no opinion, then
        return None
