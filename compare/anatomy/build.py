"""Packets built from parameters, with our encoders, as the lab would carry them.

Addresses default to the lab's (client 198.51.100.1 / 2001:db8:0:1::1, target 203.0.113.10 /
2001:db8:0:a::2, the second router 198.51.100.6 / 2001:db8:0:2::2).  An ICMP error quotes the
probe as the router received it (TTL / hop limit 1 for time exceeded) and, as Linux does
(RFC 1812 §4.3.2.3), as much of it as fits unless ``quote`` says how many bytes past its IP
header to keep (RFC 792: at least 8).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from handrolled import record
from handrolled import transport as tp
from handrolled.errors import UsageError
from handrolled.icmp import (
    Icmp6Type,
    IcmpType,
    Unreach6Code,
    UnreachCode,
    encode_echo_reply,
    encode_echo_request,
    encode_icmp_error,
)
from handrolled.ip import IpProto, IPv4Header, IPv6Header, encode_ipv4, encode_ipv6

KINDS = (
    "echo-request",
    "echo-reply",
    "time-exceeded",
    "dest-unreachable",
    "packet-too-big",
    "udp-probe",
    "tcp-syn",
)
PROBES = ("icmp", "udp", "tcp")
TCP_WINDOW = 64240  # what Linux (and handrolled.traceroute) advertises in a SYN


@dataclass(frozen=True)
class Params:
    """What a built packet is made of; every field has a deterministic default."""

    kind: str = "echo-request"
    v6: bool = False
    ident: int = 1  # ICMP identifier; UDP/TCP source port when sport is None
    seq: int = 1
    payload: bytes = b"hello"
    ttl: int = 64  # of the probe as sent (an error's quote shows the TTL it arrived with)
    ip_id: int = 1
    sport: int | None = None
    dport: int | None = None  # UDP: 33434 + seq - 1; TCP: 80
    probe: str = "icmp"  # what an ICMP error quotes
    code: int | None = None
    src: str | None = None
    dst: str | None = None
    router: str | None = None
    quote: int | None = None  # bytes of the quoted payload kept after its IP header
    mtu: int = 1280


def _addrs(p: Params) -> tuple[str, str, str]:
    if p.v6:
        return p.src or "2001:db8:0:1::1", p.dst or "2001:db8:0:a::2", p.router or "2001:db8:0:2::2"
    return p.src or "198.51.100.1", p.dst or "203.0.113.10", p.router or "198.51.100.6"


def _ip(p: Params, src: str, dst: str, proto: int, ttl: int, body: bytes) -> bytes:
    if p.v6:
        return encode_ipv6(IPv6Header(src, dst, next_header=proto, hop_limit=ttl), body)
    header = IPv4Header(src, dst, protocol=proto, ttl=ttl, identification=p.ip_id & 0xFFFF)
    return encode_ipv4(header, body)


def probe(p: Params, ttl: int | None = None) -> bytes:
    """The probe ``p.probe`` (or the kind itself for udp-probe / tcp-syn) as an IP datagram."""
    src, dst, _ = _addrs(p)
    ttl = p.ttl if ttl is None else ttl
    what = {"udp-probe": "udp", "tcp-syn": "tcp"}.get(p.kind, p.probe)
    sport = p.sport if p.sport is not None else p.ident
    if what == "udp":
        dport = p.dport if p.dport is not None else 33434 + p.seq - 1  # traceroute's ports
        body = tp.encode_udp(tp.UdpDatagram(sport, dport, p.payload), src=src, dst=dst)
        return _ip(p, src, dst, IpProto.UDP, ttl, body)
    if what == "tcp":
        dport = p.dport if p.dport is not None else 80
        seg = tp.TcpSegment(sport, dport, seq=p.seq, flags=tp.TcpFlags.SYN, window=TCP_WINDOW)
        body = tp.encode_tcp(record.replace(seg, payload=p.payload), src=src, dst=dst)
        return _ip(p, src, dst, IpProto.TCP, ttl, body)
    if what != "icmp":
        raise UsageError(f"unknown probe {what!r} (choose from {', '.join(PROBES)})")
    body = encode_echo_request(p.ident, p.seq, p.payload, v6=p.v6, src=src, dst=dst)
    return _ip(p, src, dst, IpProto.ICMPV6 if p.v6 else IpProto.ICMP, ttl, body)


def _error(p: Params, icmp_type: int, code: int, info: int, answerer: str, ttl: int) -> bytes:
    src, _, _ = _addrs(p)
    quoted = probe(p, ttl)
    header = 40 if p.v6 else 20
    if p.quote is not None:
        if p.quote < 8:
            raise UsageError("an ICMP error quotes at least 8 bytes past the IP header (RFC 792)")
        quoted = quoted[: header + p.quote]
    limit = 1280 - 40 - 8 if p.v6 else 576 - 20 - 8  # RFC 4443 §2.4 (c); RFC 1812 §4.3.2.3
    quoted = quoted[:limit]
    message = encode_icmp_error(icmp_type, code, quoted, info=info, v6=p.v6, src=answerer, dst=src)
    return _ip(p, answerer, src, IpProto.ICMPV6 if p.v6 else IpProto.ICMP, 64, message)


def build(p: Params) -> bytes:
    """The IP datagram of kind ``p.kind``."""
    src, dst, router = _addrs(p)
    proto = IpProto.ICMPV6 if p.v6 else IpProto.ICMP
    if p.kind == "echo-request":
        return probe(dataclasses.replace(p, probe="icmp"))
    if p.kind in ("udp-probe", "tcp-syn"):
        return probe(p)
    if p.kind == "echo-reply":
        body = encode_echo_reply(p.ident, p.seq, p.payload, v6=p.v6, src=dst, dst=src)
        return _ip(p, dst, src, proto, 64, body)
    if p.kind == "time-exceeded":
        icmp_type = Icmp6Type.TIME_EXCEEDED if p.v6 else IcmpType.TIME_EXCEEDED
        return _error(p, icmp_type, p.code or 0, 0, router, 1)
    if p.kind == "dest-unreachable":
        icmp_type = Icmp6Type.DEST_UNREACHABLE if p.v6 else IcmpType.DEST_UNREACHABLE
        port = Unreach6Code.PORT if p.v6 else UnreachCode.PORT
        return _error(p, icmp_type, port if p.code is None else p.code, 0, dst, max(1, p.ttl - 6))
    if p.kind == "packet-too-big":
        if not p.v6:
            raise UsageError("packet-too-big is ICMPv6 (use -6); IPv4 says dest-unreachable code 4")
        return _error(p, Icmp6Type.PACKET_TOO_BIG, 0, p.mtu, router, max(1, p.ttl - 1))
    raise UsageError(f"unknown packet kind {p.kind!r} (choose from {', '.join(KINDS)})")
