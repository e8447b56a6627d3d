"""The hand-rolled side: leaf fields read by our own decoders (handrolled.ip/icmp/transport).

The layout (offsets, lengths, RFC sections) is the RFC diagrams'; every value comes from the
decoder's dataclass, except the few bits our decoders do not keep (TCP's reserved bits, the
ICMPv4 error's unused octets), which are read from the bits and say so in their meaning.
"""

from __future__ import annotations

from compare.anatomy.model import Anatomy, Field, Layer, Value
from compare.anatomy.names import (
    ECHO4,
    ECHO6,
    ICMP4_ERRORS,
    ICMP6_ERRORS,
    IP4,
    IP6,
    TCP,
    TCP_FLAG_MEANING,
    UDP,
    icmp_code_name,
    icmp_type_name,
    proto_name,
    shown_bytes,
)
from handrolled.errors import MalformedPacket
from handrolled.icmp import (
    EchoMessage,
    Icmp6Type,
    IcmpError,
    IcmpType,
    OtherIcmp,
    decode_icmp,
    decode_icmp6,
)
from handrolled.ip import IpProto, IPv4Flags, decode_ipv4, decode_ipv6
from handrolled.transport import TcpFlags, decode_tcp, decode_tcp_quoted, decode_udp


class _Dissector:
    """Walks a packet with our decoders, laying leaves over its bits."""

    def __init__(self, packet: bytes) -> None:
        self.packet = packet
        self.layers: list[Layer] = []
        self.fields: list[Field] = []

    def _layer(self, name: str, kind: str, start: int, end: int, depth: int, summary: str) -> str:
        taken = {layer.name for layer in self.layers}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name} #{n}", n + 1
        self.layers.append(Layer(unique, kind, start, end, depth, summary))
        return unique

    def leaf(
        self,
        layer: str,
        base: int,
        name: str,
        bit: int,
        length: int,
        value: Value,
        meaning: str,
        rfc: str,
        display: str = "",
    ) -> None:
        """Add a leaf at bit ``bit`` of the layer starting at byte ``base``."""
        if length <= 0:
            return
        self.fields.append(
            Field(layer, name, base * 8 + bit, length, value, meaning, rfc, display=display)
        )

    def raw_leaf(self, layer: str, start: int, end: int, name: str, meaning: str, rfc: str) -> None:
        data = self.packet[start:end]
        self.leaf(layer, start, name, 0, 8 * len(data), data.hex(), meaning, rfc, shown_bytes(data))

    # ---- IP ---------------------------------------------------------------------------------
    def ip(self, start: int, end: int, depth: int = 0) -> None:
        version = self.packet[start] >> 4
        if version == 4:
            self.ipv4(start, end, depth)
        elif version == 6:
            self.ipv6(start, end, depth)
        else:
            raise MalformedPacket(f"IP version {version}: not an IPv4 or IPv6 packet")

    def ipv4(self, start: int, end: int, depth: int) -> None:
        quoted = depth > 0
        hdr, payload = decode_ipv4(self.packet[start:end], truncated_ok=quoted)
        hl = hdr.header_length
        name = self._layer(
            "IPv4 (quoted)" if quoted else "IPv4",
            "ipv4",
            start,
            start + hl,
            depth,
            f"{hdr.src} -> {hdr.dst}, {proto_name(hdr.protocol)}, TTL {hdr.ttl}",
        )
        flags = IPv4Flags(hdr.flags)
        lf = self.leaf
        lf(name, start, "version", 0, 4, hdr.version, "IP version: 4", IP4)
        lf(name, start, "ihl", 4, 4, hdr.ihl, f"header length in 32-bit words ({hl} bytes)", IP4)
        lf(
            name,
            start,
            "dscp",
            8,
            6,
            hdr.tos >> 2,
            "differentiated services code point",
            "RFC 2474 §3",
        )
        lf(
            name,
            start,
            "ecn",
            14,
            2,
            hdr.tos & 3,
            "explicit congestion notification",
            "RFC 3168 §5",
        )
        lf(name, start, "total_length", 16, 16, hdr.total_length, "header + data, in bytes", IP4)
        lf(name, start, "identification", 32, 16, hdr.identification, "groups fragments", IP4)
        lf(name, start, "flag_reserved", 48, 1, int(IPv4Flags.RESERVED in flags), "must be 0", IP4)
        lf(name, start, "flag_df", 49, 1, int(IPv4Flags.DF in flags), "don't fragment", IP4)
        lf(name, start, "flag_mf", 50, 1, int(IPv4Flags.MF in flags), "more fragments", IP4)
        lf(name, start, "fragment_offset", 51, 13, hdr.fragment_offset, "in 8-byte units", IP4)
        ttl_meaning = "hops left; each router decrements it" + (
            " (as the quoting router saw it)" if quoted else ""
        )
        lf(name, start, "ttl", 64, 8, hdr.ttl, ttl_meaning, IP4)
        lf(
            name,
            start,
            "protocol",
            72,
            8,
            hdr.protocol,
            "the next header",
            "RFC 790",
            proto_name(hdr.protocol),
        )
        verdict = "verifies" if hdr.checksum_ok else "does NOT verify"
        lf(
            name,
            start,
            "header_checksum",
            80,
            16,
            hdr.checksum,
            f"RFC 1071 over the header; {verdict}",
            IP4,
            f"0x{hdr.checksum:04x}",
        )
        lf(name, start, "src", 96, 32, hdr.src, "source address", IP4)
        lf(name, start, "dst", 128, 32, hdr.dst, "destination address", IP4)
        if hl > 20:
            self.raw_leaf(
                name, start + 20, start + hl, "options", "IP options (and padding)", "RFC 791 §3.1"
            )
        self.upper(hdr.protocol, start + hl, start + hl + len(payload), depth, hdr.src, hdr.dst)
        self.trailer(start + hl + len(payload), end, depth)

    def ipv6(self, start: int, end: int, depth: int) -> None:
        quoted = depth > 0
        hdr, body = decode_ipv6(self.packet[start:end], truncated_ok=quoted)
        upper = hdr.upper_protocol if hdr.upper_protocol is not None else hdr.next_header
        name = self._layer(
            "IPv6 (quoted)" if quoted else "IPv6",
            "ipv6",
            start,
            start + 40,
            depth,
            f"{hdr.src} -> {hdr.dst}, {proto_name(upper)}, hop limit {hdr.hop_limit}",
        )
        lf = self.leaf
        lf(name, start, "version", 0, 4, hdr.version, "IP version: 6", IP6)
        lf(
            name,
            start,
            "traffic_class",
            4,
            8,
            hdr.traffic_class,
            "DSCP (6 bits) + ECN (2 bits)",
            IP6,
        )
        lf(
            name,
            start,
            "flow_label",
            12,
            20,
            hdr.flow_label,
            "labels a flow; 0: none",
            "RFC 8200 §6",
        )
        lf(
            name,
            start,
            "payload_length",
            32,
            16,
            hdr.payload_length,
            "bytes after this header",
            IP6,
        )
        lf(
            name,
            start,
            "next_header",
            48,
            8,
            hdr.next_header,
            "the next header",
            IP6,
            proto_name(hdr.next_header),
        )
        hop_meaning = "hops left; each router decrements it" + (
            " (as the quoting router saw it)" if quoted else ""
        )
        lf(name, start, "hop_limit", 56, 8, hdr.hop_limit, hop_meaning, IP6)
        lf(name, start, "src", 64, 128, hdr.src, "source address", IP6)
        lf(name, start, "dst", 192, 128, hdr.dst, "destination address", IP6)
        stop = start + 40 + (hdr.payload_length or 0)
        stop = min(stop, end)
        upper_start = stop - len(body)
        if upper_start > start + 40:
            self.raw_leaf(
                name,
                start + 40,
                upper_start,
                "extension_headers",
                "walked to reach the upper layer",
                "RFC 8200 §4",
            )
        self.upper(upper, upper_start, stop, depth, hdr.src, hdr.dst)
        self.trailer(stop, end, depth)

    def trailer(self, start: int, end: int, depth: int) -> None:
        if end > start:
            name = self._layer("trailer", "raw", start, end, depth, "bytes beyond the IP length")
            self.raw_leaf(
                name, start, end, "trailer", "not part of the IP datagram (link padding)", "RFC 894"
            )

    # ---- upper layers -----------------------------------------------------------------------
    def upper(self, proto: int, start: int, end: int, depth: int, src: str, dst: str) -> None:
        if start >= end:
            return
        if proto == IpProto.ICMP:
            self.icmp(start, end, depth, v6=False, src=src, dst=dst)
        elif proto == IpProto.ICMPV6:
            self.icmp(start, end, depth, v6=True, src=src, dst=dst)
        elif proto == IpProto.UDP:
            self.udp(start, end, depth)
        elif proto == IpProto.TCP:
            self.tcp(start, end, depth)
        else:
            name = self._layer("data", "raw", start, end, depth, proto_name(proto))
            self.raw_leaf(
                name, start, end, "data", f"{proto_name(proto)} data, not dissected", "RFC 790"
            )

    def icmp(self, start: int, end: int, depth: int, *, v6: bool, src: str, dst: str) -> None:
        data = self.packet[start:end]
        quoted = depth > 0
        if v6:
            msg = decode_icmp6(data, src=None if quoted else src, dst=None if quoted else dst)
        else:
            msg = decode_icmp(data)
        label = ("ICMPv6" if v6 else "ICMP") + (" (quoted)" if quoted else "")
        kind = "icmp6" if v6 else "icmp"
        tname = icmp_type_name(msg.icmp_type, v6)
        name = self._layer(label, kind, start, end, depth, tname)
        if isinstance(msg, EchoMessage):
            rfc = ECHO6 if v6 else ECHO4
        elif v6:
            rfc = ICMP6_ERRORS.get(msg.icmp_type, "RFC 4443 §2.1")
        else:
            rfc = ICMP4_ERRORS.get(msg.icmp_type, "RFC 792")
        lf = self.leaf
        lf(name, start, "type", 0, 8, msg.icmp_type, "message type", rfc, tname)
        lf(
            name,
            start,
            "code",
            8,
            8,
            msg.code,
            "refines the type",
            rfc,
            icmp_code_name(msg.icmp_type, msg.code, v6),
        )
        if quoted:
            verdict = "not checked: the quote may be cut short"
        elif msg.checksum_ok is None:
            verdict = "not checked (no pseudo-header)"
        else:
            verdict = "verifies" if msg.checksum_ok else "does NOT verify"
        covers = "pseudo-header + message" if v6 else "the ICMP message"
        lf(
            name,
            start,
            "checksum",
            16,
            16,
            msg.checksum,
            f"RFC 1071 over {covers}; {verdict}",
            "RFC 4443 §2.3" if v6 else rfc,
            f"0x{msg.checksum:04x}",
        )
        if isinstance(msg, EchoMessage):
            lf(name, start, "identifier", 32, 16, msg.ident, "matches replies to requests", rfc)
            lf(name, start, "sequence", 48, 16, msg.seq, "numbers the requests", rfc)
            self.raw_leaf(name, start + 8, end, "payload", "echoed back unchanged", rfc)
        elif isinstance(msg, IcmpError):
            self.icmp_error_info(name, start, msg, v6)
            quote_end = end
            length = (msg.info >> 24) * 8 if v6 else ((msg.info >> 16) & 0xFF) * 4
            if length and start + 8 + length <= end:  # RFC 4884 §4: extensions follow
                quote_end = start + 8 + length
            self.ip(start + 8, quote_end, depth + 1)
            if quote_end < end:
                self.raw_leaf(
                    name, quote_end, end, "extensions", "ICMP extension structure", "RFC 4884 §7"
                )
        elif isinstance(msg, OtherIcmp):
            self.raw_leaf(name, start + 4, end, "body", "message body", rfc)

    def icmp_error_info(self, name: str, start: int, msg: IcmpError, v6: bool) -> None:
        info = msg.info
        lf = self.leaf
        if v6 and msg.icmp_type in (Icmp6Type.PACKET_TOO_BIG, Icmp6Type.PARAMETER_PROBLEM):
            what = "mtu" if msg.icmp_type == Icmp6Type.PACKET_TOO_BIG else "pointer"
            lf(
                name,
                start,
                what,
                32,
                32,
                info,
                "next-hop MTU" if what == "mtu" else "offset of the problem",
                ICMP6_ERRORS[msg.icmp_type],
            )
            return
        if v6:
            lf(
                name,
                start,
                "length",
                32,
                8,
                info >> 24,
                "quoted datagram length in 64-bit words (0: none given)",
                "RFC 4884 §4.1",
            )
            lf(
                name,
                start,
                "unused",
                40,
                24,
                info & 0xFFFFFF,
                "sent as 0",
                ICMP6_ERRORS.get(msg.icmp_type, "RFC 4443"),
            )
            return
        rfc = ICMP4_ERRORS.get(msg.icmp_type, "RFC 792")
        lf(name, start, "unused", 32, 8, info >> 24, "sent as 0", rfc)
        lf(
            name,
            start,
            "length",
            40,
            8,
            (info >> 16) & 0xFF,
            "quoted datagram length in 32-bit words (0: none given)",
            "RFC 4884 §4.1",
        )
        if msg.icmp_type == IcmpType.DEST_UNREACHABLE:
            lf(
                name,
                start,
                "next_hop_mtu",
                48,
                16,
                info & 0xFFFF,
                "MTU of the next hop (code 4 only)",
                "RFC 1191 §4",
            )
        else:
            lf(name, start, "unused_2", 48, 16, info & 0xFFFF, "sent as 0", rfc)

    def udp(self, start: int, end: int, depth: int) -> None:
        data = self.packet[start:end]
        dgram = decode_udp(data)
        quoted = depth > 0
        name = self._layer(
            "UDP (quoted)" if quoted else "UDP",
            "udp",
            start,
            end,
            depth,
            f"port {dgram.src_port} -> {dgram.dst_port}",
        )
        lf = self.leaf
        lf(name, start, "src_port", 0, 16, dgram.src_port, "sender's port", UDP)
        lf(
            name,
            start,
            "dst_port",
            16,
            16,
            dgram.dst_port,
            "receiver's port (traceroute: 33434 + probe)",
            UDP,
        )
        lf(name, start, "length", 32, 16, dgram.length, "header + data, in bytes", UDP)
        lf(
            name,
            start,
            "checksum",
            48,
            16,
            dgram.checksum,
            "RFC 1071 over pseudo-header + datagram",
            UDP,
            f"0x{dgram.checksum:04x}",
        )
        stop = start + 8 + len(dgram.payload)
        self.raw_leaf(
            name,
            start + 8,
            stop,
            "payload",
            "the probe's data" + (" (quoted, may be cut)" if quoted else ""),
            UDP,
        )
        if stop < end:
            self.raw_leaf(name, stop, end, "beyond_length", "bytes beyond the UDP length", UDP)

    def tcp(self, start: int, end: int, depth: int) -> None:
        data = self.packet[start:end]
        quoted = depth > 0
        label = "TCP (quoted)" if quoted else "TCP"
        lf = self.leaf
        try:
            seg = decode_tcp(data)
        except MalformedPacket:
            if not quoted:
                raise
            head = decode_tcp_quoted(data)
            name = self._layer(
                label, "tcp", start, end, depth, f"port {head.src_port} -> {head.dst_port}"
            )
            lf(name, start, "src_port", 0, 16, head.src_port, "sender's port", TCP)
            lf(name, start, "dst_port", 16, 16, head.dst_port, "receiver's port", TCP)
            lf(name, start, "seq", 32, 32, head.seq, "sequence number", TCP)
            self.raw_leaf(
                name, start + 8, end, "rest", "the rest of the header, cut by the quote", TCP
            )
            return
        flags = TcpFlags(seg.flags)
        shown = "|".join(f.name for f in TcpFlags if f and f in flags and f.name) or "none"
        name = self._layer(
            label, "tcp", start, end, depth, f"port {seg.src_port} -> {seg.dst_port} [{shown}]"
        )
        lf(name, start, "src_port", 0, 16, seg.src_port, "sender's port", TCP)
        lf(name, start, "dst_port", 16, 16, seg.dst_port, "receiver's port", TCP)
        lf(name, start, "seq", 32, 32, seg.seq, "sequence number (SYN: the ISN)", TCP)
        lf(name, start, "ack", 64, 32, seg.ack, "acknowledgment number (valid with ACK)", TCP)
        lf(
            name,
            start,
            "data_offset",
            96,
            4,
            seg.data_offset,
            f"header length in 32-bit words ({seg.header_length} bytes)",
            TCP,
        )
        reserved = self.packet[start + 12] & 0x0F  # our decoder drops these bits: read them here
        lf(name, start, "reserved", 100, 4, reserved, "must be 0 (read from the bits)", TCP)
        for i, flag in enumerate(reversed(TcpFlags.__members__.values())):
            if flag == TcpFlags.NONE:
                continue
            rfc = "RFC 3168 §6.1" if flag in (TcpFlags.CWR, TcpFlags.ECE) else TCP
            lf(
                name,
                start,
                f"flag_{flag.name.lower()}",
                104 + i,
                1,
                int(flag in flags),
                TCP_FLAG_MEANING[flag],
                rfc,
            )
        lf(name, start, "window", 112, 16, seg.window, "receive window, in bytes", TCP)
        lf(
            name,
            start,
            "checksum",
            128,
            16,
            seg.checksum,
            "RFC 1071 over pseudo-header + segment",
            TCP,
            f"0x{seg.checksum:04x}",
        )
        lf(name, start, "urgent_pointer", 144, 16, seg.urgent, "valid with URG", TCP)
        hl = seg.header_length
        if hl > 20:
            self.raw_leaf(name, start + 20, start + hl, "options", "TCP options", "RFC 9293 §3.2")
        self.raw_leaf(name, start + hl, end, "payload", "segment data", TCP)


def dissect(packet: bytes, title: str = "") -> Anatomy:
    """Lay our decoders' leaves over ``packet`` (an IPv4 or IPv6 datagram).

    Raises ``MalformedPacket`` when the bytes do not decode.
    """
    packet = bytes(packet)
    if not packet:
        raise MalformedPacket("empty packet")
    d = _Dissector(packet)
    d.ip(0, len(packet))
    d.fields.sort(key=lambda f: f.bit_offset)
    return Anatomy(title or d.layers[0].summary, packet, d.layers, d.fields)
