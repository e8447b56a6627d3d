"""Packets captured live in the lab: one probe (or one short trace) from the lab's client.

A lab is built for the occasion (``Lab`` as a context manager: torn down on the way out), a
capture runs on the client's link, the probe leaves through a raw socket made inside the
client's namespace with our own encoders, and every IP packet seen on the wire is returned in
order.  Every packet stays inside the lab's namespaces.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from compare.anatomy.build import KINDS
from handrolled import transport as tp
from handrolled.errors import UsageError
from handrolled.icmp import encode_echo_request

IPV6_UNICAST_HOPS = getattr(socket, "IPV6_UNICAST_HOPS", 16)
SETTLE_S = 0.4  # how long the capture waits for answers (the lab's RTTs are a few ms)
IDENT = 0x7761  # "wa": fixed, so a capture's probes are recognisable


@dataclass(frozen=True)
class Seen:
    """One IP packet on the client's link, numbered from 1 as the pcap numbers it."""

    index: int
    outgoing: bool
    time_ns: int
    ip: bytes
    frame: bytes


def _send(lab, v6: bool, probe: str, dst: str, ttl: int, seq: int, payload: bytes) -> None:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    src = lab.client.addr(6 if v6 else 4)
    if probe == "icmp":
        proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
        data = encode_echo_request(IDENT, seq, payload, v6=v6, src=src, dst=dst)
    elif probe == "udp":
        proto = socket.IPPROTO_UDP
        datagram = tp.UdpDatagram(IDENT, 33434 + seq - 1, payload)
        data = tp.encode_udp(datagram, src=src, dst=dst)
    elif probe == "tcp":
        proto = socket.IPPROTO_TCP
        segment = tp.TcpSegment(IDENT + seq, 80, seq=seq, flags=tp.TcpFlags.SYN, window=64240)
        data = tp.encode_tcp(segment, src=src, dst=dst)
    else:
        raise UsageError(f"unknown probe {probe!r}")
    sock = lab.socket("client", family, socket.SOCK_RAW, proto)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.sendto(data, (dst, 0))
    finally:
        sock.close()


def capture(probes: list[tuple[str, str, int]], v6: bool = False) -> tuple[list[Seen], list]:
    """Build a lab, send ``probes`` ((probe, target role, ttl), ...); the IP packets and frames."""
    from compare.capture import Capture
    from compare.lab import Lab
    from compare.scenario import CLIENT_IFACE

    payload = b"wiretwin anatomy"
    with Lab.create({}) as lab, Capture(lab.ns("client"), CLIENT_IFACE) as cap:
        time.sleep(0.05)
        for seq, (probe, role, ttl) in enumerate(probes, start=1):
            dst = lab.nodes[role].addr(6 if v6 else 4)
            _send(lab, v6, probe, dst, ttl, seq, payload)
            time.sleep(0.02)
        time.sleep(SETTLE_S)
    seen = []
    for n, frame in enumerate(cap.frames, start=1):
        if frame.ip:
            seen.append(Seen(n, frame.outgoing, frame.time_ns, frame.ip, frame.data))
    return seen, cap.frames


def plan(kind: str, probe: str, hop: int) -> tuple[list[tuple[str, str, int]], bool]:
    """The probe that makes the lab produce a packet of ``kind``, and whether we send it."""
    if kind not in KINDS:
        raise UsageError(f"unknown packet kind {kind!r} (choose from {', '.join(KINDS)})")
    if kind == "packet-too-big":
        raise UsageError("the lab has no link that answers with packet-too-big")
    if kind in ("echo-request", "echo-reply"):
        return [("icmp", "target", 64)], kind == "echo-request"
    if kind == "udp-probe":
        return [("udp", "target", 64)], True
    if kind == "tcp-syn":
        return [("tcp", "target", 64)], True
    if kind == "time-exceeded":
        return [(probe, "target", hop)], False
    # dest-unreachable: UDP to the target's closed port, or ICMP to the prohibited host
    return ([("udp", "target", 64)] if probe == "udp" else [(probe, "prohibited", 64)]), False


def trace_probes(hops: int = 7) -> list[tuple[str, str, int]]:
    """One ICMP echo per TTL 1..hops towards the target: a traceroute's worth of packets."""
    return [("icmp", "target", ttl) for ttl in range(1, hops + 1)]
