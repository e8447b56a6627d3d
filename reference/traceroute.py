"""Reference traceroute built with scapy: our own TTL loop, ICMP, UDP and TCP SYN probes.

Not scapy's ``traceroute()``: that one is a TCP traceroute with random source ports and
``sr()``'s single global timeout.  Here, as in traceroute(8) and the hand-rolled tracer:

- probe ``n`` (0-based) has TTL ``first_ttl + n // probes_per_hop``; probes are sent in that
  order with at most ``sim_queries`` in flight;
- a probe expires ``timeout(n)`` seconds after it was sent, where ``-w MAX,HERE,NEAR`` means: at
  most MAX, but HERE x (RTT + 1 ms) of a reply already seen from the same hop, else NEAR x
  (RTT + 1 ms) of a reply to a later probe (a factor of 0 disables that rule);
- a final reply (the destination answered, or anyone said "unreachable") ends the trace at that
  hop: later probes are not sent, hops beyond it are dropped;
- replies are matched to probes through the quoted datagram by scapy itself (``hashret()``
  lookup, then ``reply.answers(probe)``), never by arrival order.

Per-probe identifiers (deterministic, so compare can lay the bytes side by side):

- ICMP: echo identifier ``ident``, sequence ``n + 1``: reference.ping's echo request;
- UDP: source port ``ident``, destination port ``port + n`` (33434 by default); with
  ``fixed_port`` (traceroute(8) -U) destination ``port`` (53 by default) for every probe and
  source port ``(ident + n) & 0xffff``, one per probe;
- TCP: source port ``(ident + n) & 0xffff`` (one per probe, as traceroute(8) -T binds a
  socket per probe), destination ``port`` (80 by default), sequence number ``n + 1``, SYN only,
  no options, window 64240 (what a Linux SYN advertises; scapy's own default is 8192).  The
  ports and window are the hand-rolled tracer's documented choices too: they are inputs of the
  comparison, so that the two sides' probes are identical byte for byte.  Our own kernel
  answers the destination's SYN-ACK with a RST (no socket owns the port): a half-open probe.
- IP header: reference.common's ``ip_header`` with ID ``n + 1`` (IPv6 flow label 0), then the
  request's traceroute(8) knobs, as the kernel applies them to the hand-rolled probes: DF set
  only with ``dont_fragment`` (traceroute(8) clears it otherwise: IP_PMTUDISC_DONT), TOS /
  traffic class ``tos``, source ``source`` (else scapy's route picks it, as the kernel does).
- payload: ``request.data_len`` bytes of the default pattern (``packet_len`` sets it).
- ``send_wait``: at least that long between two sends; ``interface``: the sending socket is
  bound to that device (SO_BINDTODEVICE); replies are read on every interface.

Times: send = scapy's ``sent_time`` (right before sendto), receive = the kernel's capture stamp
(``pkt.time``), both on the wall clock, which also schedules the waits.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handrolled.errors import ResolveError, UsageError
from handrolled.record import replace
from handrolled.requests import TraceRequest
from handrolled.results import Hop, Implementation, Method, Outcome, Probe, TraceResult
from reference.common import (
    ICMP_ERRORS,
    PORT_UNREACHABLE,
    default_payload,
    icmp6_layer,
    ip_header,
    open_l3,
    reply_fields,
    reverse_names,
    scapy_conf,
    to_ns,
)
from reference.common import resolve as resolve_host
from reference.ping import build_request

log = logging.getLogger(__name__)

TCP_WINDOW = 64240  # see the module docstring
WAIT_PRECISION = 0.001  # traceroute(8)'s DEF_WAIT_PREC: 1 ms added to an RTT before scaling
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


@dataclass
class _Slot:
    index: int
    ttl: int
    request: Any = None
    sent: bytes = b""
    sent_time: float | None = None
    src_port: int | None = None
    dst_port: int | None = None
    probe: Probe | None = None  # set when done
    rtt: float | None = None  # seconds, for the wait rules
    number: int | None = None  # --mtu: the probe number of a resend (else ``index``)
    mtu: int | None = None  # --mtu: the size this probe was rebuilt to (F=)

    @property
    def done(self) -> bool:
        return self.probe is not None


def source_port(method: Method, ident: int, index: int, fixed_port: bool = False) -> int:
    """The probe's source port (see the module docstring)."""
    step = index if method is Method.TCP or fixed_port else 0
    return (ident + step) & 0xFFFF


def build_probe(
    method: Method,
    version: int,
    dst: str,
    *,
    ttl: int,
    index: int,
    ident: int,
    port: int,
    payload: bytes,
    dont_fragment: bool = False,
    tos: int = 0,
    src: str | None = None,
    fixed_port: bool = False,
    flow: int | None = None,
) -> Any:
    """Probe ``index`` as a scapy packet (fields as documented in the module docstring).

    ``flow`` not None: probe ``index`` of that flow, as Paris traceroute lays it out (Paris:
    flow 0): UDP source port ``ident``, destination ``port + flow``, checksum index + 1 via
    payload[0:2]; TCP source ``ident + flow``, sequence index + 1; ICMP identifier ``ident``,
    checksum that of the classic probe with sequence 1 (plus ``flow``, within 1..0xfffe),
    sequence index + 1, payload[0:2] compensating.
    """
    from scapy.layers.inet import TCP, UDP
    from scapy.packet import Raw

    def build(seq: int, data: bytes) -> Any:
        if method is Method.ICMP:
            pkt = build_request(version, dst, ident, seq, data, ttl)
            return _knobs(pkt, version, dont_fragment, tos, src)
        ip = _knobs(ip_header(version, dst, ttl, seq), version, dont_fragment, tos, src)
        if method is Method.UDP and flow is not None:
            pkt = ip / UDP(sport=ident, dport=(port + flow) & 0xFFFF)
        elif method is Method.UDP:
            sport = source_port(method, ident, index, fixed_port)
            pkt = ip / UDP(sport=sport, dport=port if fixed_port else (port + index) & 0xFFFF)
        else:
            sport = source_port(method, ident, index) if flow is None else (ident + flow) & 0xFFFF
            pkt = ip / TCP(sport=sport, dport=port, seq=index + 1, flags="S", window=TCP_WINDOW,
                           options=[])  # fmt: skip
        return pkt / Raw(load=data) if data else pkt

    seq = (index + 1) & 0xFFFF
    first = build(seq, payload)
    if flow is None or method is Method.TCP:
        return first
    if method is Method.UDP:
        target = index % 0xFFFE + 1  # the checksum names the probe
    else:
        base = _checksum_of(build(1, payload))
        target = (base - 1 + flow) % 0xFFFE + 1
    word = compensation(_checksum_of(first), int.from_bytes(payload[:2], "big"), target)
    return build(seq, word.to_bytes(2, "big") + payload[2:])


def _checksum_of(pkt: Any) -> int:
    """The checksum field of the transport layer of ``pkt`` as scapy fills it in."""
    from scapy.compat import raw

    data = raw(pkt)
    start = (data[0] & 0x0F) * 4 if data[0] >> 4 == 4 else 40  # RFC 791 IHL; RFC 8200 fixed
    offset = 6 if data[9 if data[0] >> 4 == 4 else 6] == 17 else 2  # UDP: octet 6; ICMP: 2
    return int.from_bytes(data[start + offset : start + offset + 2], "big")


def compensation(checksum: int, word: int, target: int) -> int:
    """RFC 1624 eqn. 3 solved for the new word: the 16 bits that, replacing ``word``, make a
    message's one's complement checksum ``target`` instead of ``checksum``."""
    total = (0xFFFF ^ target) + checksum + word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _knobs(ip: Any, version: int, dont_fragment: bool, tos: int, src: str | None) -> Any:
    """Set traceroute(8)'s -F, -t and -s on the outermost IP layer of ``ip`` (in place)."""
    if version == 4:
        ip.flags = "DF" if dont_fragment else 0  # RFC 791 §3.1; IP_PMTUDISC_DONT clears DF
        ip.tos = tos
    else:
        ip.tc = tos  # RFC 8200 §7: the traffic class
    if src is not None:
        ip.src = src
    return ip


def source_of(source: str, version: int) -> str:
    """-s's address in the destination's family; traceroute(8)'s mismatch error otherwise."""
    try:
        return resolve_host(source, version)[0]
    except ResolveError:
        resolve_host(source, None)  # does not resolve at all: that error, not a mismatch
        raise UsageError(f"source {source}: IP version mismatch in addresses specified") from None


def _classify(
    method: Method, version: int, reply: Any, target: str
) -> tuple[Outcome, int | None, int | None]:
    """(outcome, ICMP type, ICMP code) for a reply that answers one of our probes."""
    from scapy.layers.inet import ICMP, TCP

    if version == 4:
        icmp = reply.getlayer(ICMP)
        icmp_type = icmp.type if icmp is not None else None
        code = icmp.code if icmp is not None else None
    else:
        icmp6 = icmp6_layer(reply)
        icmp_type = icmp6.type if icmp6 is not None else None
        code = icmp6.code if icmp6 is not None else None
    if icmp_type is None and TCP in reply:  # SYN-ACK or RST from the destination
        return Outcome.REPLY, None, None
    error = ICMP_ERRORS[version].get(icmp_type)
    if error is Outcome.UNREACHABLE:
        destination_says_port_closed = (
            method is Method.UDP and code == PORT_UNREACHABLE[version] and reply.src == target
        )
        outcome = Outcome.REPLY if destination_says_port_closed else Outcome.UNREACHABLE
        return outcome, icmp_type, code
    return error or Outcome.REPLY, icmp_type, code  # time exceeded, or an echo reply


def too_big_mtu(reply: Any, version: int) -> int | None:
    """The MTU of a frag-needed (type 3 code 4: RFC 1191 §4's next-hop MTU) or an ICMPv6
    Packet Too Big (RFC 4443 §3.2); None for any other reply."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6PacketTooBig

    if version == 6:
        ptb = reply.getlayer(ICMPv6PacketTooBig)
        return int(ptb.mtu) if ptb is not None else None
    icmp = reply.getlayer(ICMP)
    if icmp is not None and icmp.type == 3 and icmp.code == 4:
        return int(icmp.nexthopmtu) or None
    return None


def link_mtu(version: int, dst: str, src: str | None) -> int | None:
    """The MTU of the interface scapy's route to ``dst`` leaves by (SIOCGIFMTU)."""
    import fcntl
    import struct

    from scapy.config import conf

    table = conf.route if version == 4 else conf.route6
    iface = table.route(dst)[0]
    name = getattr(iface, "name", iface)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:  # linux/sockios.h SIOCGIFMTU: struct ifreq {name[16]; int mtu}
            out = fcntl.ioctl(s.fileno(), 0x8921, struct.pack("16si", name.encode()[:15], 0))
        except OSError:
            return None
    return struct.unpack("16si", out)[1]


def _same_checksum(reply: Any, probe: Any) -> bool:
    """The ICMP error quotes ``probe``'s UDP checksum (RFC 792: the first 64 bits)."""
    from scapy.layers.inet import UDP, UDPerror

    quoted = reply.getlayer(UDPerror)
    return quoted is not None and quoted.chksum == _checksum_of(probe) and UDP in probe


def flow_of(method: Method, data: bytes) -> tuple[int, int] | None:
    """What an ECMP router hashes, read from a probe's bytes (whole IP datagram): ports for
    UDP/TCP, identifier and checksum for ICMP echo."""
    start = (data[0] & 0x0F) * 4 if data[0] >> 4 == 4 else 40
    head = data[start : start + 8]
    if len(head) < 8:
        return None
    if method is Method.ICMP:
        return int.from_bytes(head[4:6], "big"), int.from_bytes(head[2:4], "big")
    return int.from_bytes(head[0:2], "big"), int.from_bytes(head[2:4], "big")


def run_trace(
    request: TraceRequest,
    *,
    on_hop: Callable[[Hop], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> TraceResult:
    """Trace the route ``request`` describes with scapy probes; silent hops are TIMEOUT probes.

    The request was validated when it was made (handrolled/requests.py, shared with the
    hand-rolled engine).  Payload None means ``request.data_len(family)`` bytes of
    reference.common's pattern.  Reverse DNS (``request.resolve``) runs per distinct address,
    cached, within a time budget.  ``packet_len``, ``dont_fragment``, ``tos``, ``source``,
    ``send_wait``, ``interface`` and ``fixed_port`` as the module docstring says;
    ``on_start()`` is called once the socket is open, before the first probe.
    """
    if not isinstance(request, TraceRequest):
        raise TypeError(f"run_trace takes a TraceRequest, not {type(request).__name__}")
    job = request  # (the loop below names each scapy probe ``request``)
    method = request.method
    host, resolve = request.host, request.resolve
    first_ttl, max_hops = request.first_ttl, request.max_hops
    probes_per_hop, sim_queries = request.probes_per_hop, request.sim_queries
    if request.mtu:
        sim_queries = 1  # traceroute(8) --mtu: one probe at a time
    max_wait, here, near = request.wait
    port = request.dst_port  # None for ICMP
    address, version = resolve_host(host, request.family)
    payload = request.payload
    if payload is None:
        payload = default_payload(request.data_len(version))
    src = None if request.source is None else source_of(request.source, version)
    send_wait, dont_fragment, tos = request.send_wait, request.dont_fragment, request.tos
    dont_fragment = dont_fragment or request.mtu  # --mtu: DF set
    headers = (20 if version == 4 else 40) + 8  # IP + UDP / ICMP echo header
    mtu_size = len(payload) + headers if request.mtu else None
    retries = 0
    fixed_port = request.fixed_port
    flows = request.paris  # every probe in flow 0
    last_send: float | None = None
    ident = (os.getpid() & 0xFFFF) if request.ident is None else request.ident

    scapy_conf()
    from scapy.compat import raw

    total = (max_hops - first_ttl + 1) * probes_per_hop
    slots = [_Slot(index=n, ttl=first_ttl + n // probes_per_hop) for n in range(total)]
    by_hash: dict[bytes, list[_Slot]] = {}
    names: dict[str, str | None] = {}
    hops: list[Hop] = []
    end = total  # probes at or past this index are never sent (a final hop was seen)
    next_index = 0
    started_ns = time.time_ns()
    start = time.monotonic()

    def timeout_for(slot: _Slot) -> float:
        # traceroute(8)'s get_timeout(): HERE looks at the probe's own hop, NEAR forward.
        if here:
            first = slot.index - slot.index % probes_per_hop
            for other in slots[first : first + probes_per_hop]:
                if other.rtt is not None and other.rtt > 0:
                    return min(max_wait, (other.rtt + WAIT_PRECISION) * here)
        if near:
            for other in slots[slot.index + 1 : next_index]:
                if other.rtt is not None and other.rtt > 0:
                    return min(max_wait, (other.rtt + WAIT_PRECISION) * near)
        return max_wait

    def probe_for(slot: _Slot, reply: Any = None) -> Probe:
        # No reply: the probe timed out; else the reply decides the outcome (see _classify).
        common = {
            "seq": ((slot.index if slot.number is None else slot.number) + 1) & 0xFFFF,
            "mtu": slot.mtu,
            "ident": ident,
            "ttl": slot.ttl,
            "sent": slot.sent,
            "send_ns": to_ns(slot.sent_time or 0.0),
            "method": method,
            "src_port": slot.src_port,
            "dst_port": slot.dst_port,
            "flow": flow_of(method, slot.sent) if slot.sent else None,
        }
        if reply is None:
            return Probe(outcome=Outcome.TIMEOUT, **common)
        outcome, icmp_type, code = _classify(method, version, reply, address)
        fields = reply_fields(reply, version, slot.sent_time or 0.0)
        return Probe(outcome=outcome, icmp_type=icmp_type, icmp_code=code, **fields, **common)

    def make(*, ttl: int, index: int, flow: int | None = 0 if flows else None) -> Any:
        return build_probe(method, version, address, ttl=ttl, index=index, ident=ident,
                           port=port or 0, payload=payload, dont_fragment=dont_fragment, tos=tos,
                           src=src, fixed_port=fixed_port, flow=flow)  # fmt: skip

    def resend(slot: Any, mtu: int) -> None:
        # a router said too big: the probe again at ``mtu`` bytes, numbered after every
        # planned probe (total + resends so far)
        nonlocal payload, mtu_size, retries
        mtu_size, payload = mtu, default_payload(max(mtu - headers, 0))
        slot.number, slot.mtu = total + retries, mtu
        retries += 1
        slot.request = make(ttl=slot.ttl, index=slot.number)
        slot.sent = raw(slot.request)
        if method is not Method.ICMP:
            slot.src_port, slot.dst_port = slot.request.payload.sport, slot.request.payload.dport
        sock.send(slot.request)
        slot.sent_time = slot.request.sent_time
        by_hash.setdefault(slot.request.hashret(), []).append(slot)

    def handle(reply: Any) -> None:
        nonlocal end
        for slot in by_hash.get(reply.hashret(), ()):
            if slot.index >= end or slot.done or not reply.answers(slot.request):
                continue
            mtu = too_big_mtu(reply, version) if mtu_size else None
            if mtu is not None:
                if mtu < (mtu_size or 0):
                    resend(slot, mtu)
                return
            if flows and method is Method.UDP and not _same_checksum(reply, slot.request):
                continue  # Paris: every probe has the same ports; the checksum tells them apart
            if float(reply.time) > slot.sent_time + timeout_for(slot):
                continue  # stamped after its wait ran out: traceroute(8) would not count it
            slot.probe = probe_for(slot, reply)
            slot.rtt = float(reply.time) - slot.sent_time
            if slot.probe.outcome in (Outcome.REPLY, Outcome.UNREACHABLE):
                hop_end = (slot.ttl - first_ttl + 1) * probes_per_hop
                end = min(end, hop_end)
            return

    def release_hops() -> None:
        # Hops leave in TTL order once every probe of theirs is done (or was never sent).
        while True:
            first = (len(hops)) * probes_per_hop
            if first >= end:
                return
            members = slots[first : first + probes_per_hop]
            if not all(s.done for s in members):
                return
            probes = tuple(s.probe for s in members if s.probe is not None)
            if resolve:
                wanted = [
                    p.reply_from for p in probes if p.reply_from and p.reply_from not in names
                ]
                if wanted:
                    names.update(reverse_names(wanted))
                probes = tuple(
                    replace(p, reply_name=names.get(p.reply_from)) if p.reply_from else p
                    for p in probes
                )
            hop = Hop(ttl=members[0].ttl, probes=probes)
            hops.append(hop)
            if on_hop is not None:
                on_hop(hop)

    if request.multipath:  # the MDA's rounds (reference/multipath.py)
        from reference.multipath import run_multipath

        if on_start is not None:
            on_start()
        hops = run_multipath(
            request,
            address=address,
            version=version,
            build=make,
            ident=ident,
            on_hop=on_hop,
        )
        return _result(request, address, version, hops, started_ns, start)
    sock = open_l3(version)
    if request.interface is not None:
        try:
            name = request.interface.encode() + b"\0"
            sock.outs.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name)
        except OSError as exc:
            sock.close()
            raise UsageError(f"interface {request.interface}: {exc.strerror or exc}") from exc
    try:
        if on_start is not None:  # the socket is open: the CLI prints its header now
            on_start()
        while True:
            # 1. Drain what has arrived before judging any probe expired (its stamp decides).
            while select.select([sock], [], [], 0)[0]:
                reply = sock.recv()
                if reply is not None and getattr(reply, "version", None) == version:
                    handle(reply)
            now = time.time()
            in_flight = [s for s in slots[:next_index] if not s.done and s.index < end]
            for slot in in_flight:
                if now >= slot.sent_time + timeout_for(slot):
                    slot.probe = probe_for(slot)
            in_flight = [s for s in in_flight if not s.done]
            release_hops()
            if next_index >= end and not in_flight:
                break
            # 2. Send while fewer than sim_queries probes are in flight (and -z allows).
            send_due = None if not send_wait or last_send is None else last_send + send_wait
            can_send = next_index < end and len(in_flight) < sim_queries
            if can_send and (send_due is None or time.time() >= send_due):
                slot = slots[next_index]
                request = make(ttl=slot.ttl, index=slot.index)
                limit = link_mtu(version, address, src) if mtu_size else None
                if limit is not None and len(raw(request)) > limit:
                    # the kernel would refuse it (EMSGSIZE): rebuild at the link's MTU
                    mtu_size, payload = limit, default_payload(max(limit - headers, 0))
                    slot.mtu = limit
                    request = make(ttl=slot.ttl, index=slot.index)
                slot.request = request
                slot.sent = raw(request)
                if method is not Method.ICMP:
                    slot.src_port, slot.dst_port = request.payload.sport, request.payload.dport
                sock.send(request)  # sets request.sent_time right before sendto
                slot.sent_time = last_send = request.sent_time
                by_hash.setdefault(request.hashret(), []).append(slot)
                next_index += 1
                continue
            # 3. Sleep until a reply, the earliest expiry or the next send -z allows.
            wakes = [s.sent_time + timeout_for(s) for s in in_flight]
            if can_send and send_due is not None:
                wakes.append(send_due)
            wake = min(wakes)
            select.select([sock], [], [], max(0.0, wake - time.time()))
    finally:
        sock.close()
    return _result(job, address, version, hops, started_ns, start)


def _result(
    request: TraceRequest, address: str, version: int, hops: list[Hop], started_ns: int,
    start: float,
) -> TraceResult:  # fmt: skip
    reached = any(
        p.outcome is Outcome.REPLY and p.reply_from == address for hop in hops for p in hop.probes
    )
    return TraceResult(
        target=request.host,
        address=address,
        family=version,  # type: ignore[arg-type]
        method=request.method,
        hops=tuple(hops),
        reached=reached,
        implementation=Implementation.REFERENCE,
        port=request.dst_port,
        started_ns=started_ns,
        elapsed_ms=(time.monotonic() - start) * 1000.0,
    )
