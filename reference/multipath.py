"""Reference traceroute --multipath: the MDA's rounds with scapy probes.

The same plan as the hand-rolled engine, built independently: round 1 sends n_1 flows to every TTL;
each later round tops a TTL up to n_k flows for the k addresses it has shown; a final answer at TTL
h drops the TTLs beyond it (probes planned there keep their numbers but are never sent).  Probe
numbers run over the plans in order; flow f's probe k is ``reference.traceroute.build_probe(...,
index=k, flow=f)``.  n_k (Veitch et al., INFOCOM 2009): the least n for which k + 1 equally likely
next hops would all have shown with probability at least the confidence, here from the occupancy
chain (after each probe, the number of distinct next hops seen grows by one with probability (K -
seen) / K), not from the inclusion-exclusion sum the hand-rolled side uses.
"""

from __future__ import annotations

import select
import time
from collections import deque
from typing import Any

from handrolled.record import replace
from handrolled.requests import TraceRequest
from handrolled.results import Hop, Outcome, Probe
from reference.common import open_l3, reply_fields, reverse_names, to_ns
from reference.traceroute import _classify, _same_checksum, flow_of


def all_seen_probability(next_hops: int, probes: int) -> float:
    """P(every one of ``next_hops`` equally likely next hops seen after ``probes`` probes)."""
    dist = [1.0] + [0.0] * next_hops  # dist[j]: P(j distinct seen)
    for _ in range(probes):
        new = [0.0] * (next_hops + 1)
        for seen, p in enumerate(dist):
            if p:
                new[seen] += p * seen / next_hops
                if seen < next_hops:
                    new[seen + 1] += p * (next_hops - seen) / next_hops
        dist = new
    return dist[next_hops]


def flows_needed(seen: int, confidence: float) -> int:
    """n_k for k = max(seen, 1)."""
    k = max(seen, 1)
    n = 1
    while all_seen_probability(k + 1, n) < confidence:
        n += 1
    return n


def run_multipath(
    request: TraceRequest,
    *,
    address: str,
    version: int,
    build: Any,
    ident: int,
    on_hop: Any = None,
) -> list[Hop]:
    """The hops of a multipath trace to ``address`` (each with every probe sent to its TTL);
    ``build(ttl=, index=, flow=)`` makes probe ``index`` of ``flow``."""
    from scapy.compat import raw

    method = request.method
    max_wait = request.wait[0]
    ttls = range(request.first_ttl, request.max_hops + 1)
    seen: dict[int, set[str]] = {ttl: set() for ttl in ttls}
    flows: dict[int, int] = dict.fromkeys(ttls, 0)
    end = request.max_hops
    numbered = 0
    probes: dict[int, Probe] = {}
    ttl_of: dict[int, int] = {}
    sock = open_l3(version)
    try:
        while True:
            plan = []
            for ttl in ttls:
                if ttl > end:
                    break
                want = flows_needed(len(seen[ttl]), request.confidence)
                for flow in range(flows[ttl], want):
                    plan.append((numbered, ttl, flow))
                    numbered += 1
                flows[ttl] = max(flows[ttl], want)
            if not plan:
                break
            pending = deque(plan)
            flight: dict[int, tuple[Any, float, int]] = {}  # number -> (packet, sent, ttl)
            while pending or flight:
                while pending and len(flight) < request.sim_queries:
                    k, ttl, flow = pending.popleft()
                    if ttl > end:
                        continue
                    pkt = build(ttl=ttl, index=k, flow=flow)
                    sock.send(pkt)
                    flight[k] = (pkt, pkt.sent_time, ttl)
                    ttl_of[k] = ttl
                wake = min(sent + max_wait for _, sent, _ in flight.values()) if flight else 0
                if flight and select.select([sock], [], [], max(0.0, wake - time.time()))[0]:
                    reply = sock.recv()
                    if reply is None or getattr(reply, "version", None) != version:
                        continue
                    for k, (pkt, sent, ttl) in list(flight.items()):
                        if not reply.answers(pkt):
                            continue
                        if method.value == "udp" and not _same_checksum(reply, pkt):
                            continue
                        if float(reply.time) > sent + max_wait:
                            continue
                        outcome, icmp_type, code = _classify(method, version, reply, address)
                        fields = reply_fields(reply, version, sent)
                        fields.update(icmp_type=icmp_type, icmp_code=code)
                        probes[k] = _probe(request, k, ttl, pkt, raw, ident, outcome,
                                           **fields)  # fmt: skip
                        del flight[k]
                        seen[ttl].add(reply.src)
                        if outcome in (Outcome.REPLY, Outcome.UNREACHABLE):
                            end = min(end, ttl)
                        break
                now = time.time()
                for k, (pkt, sent, ttl) in list(flight.items()):
                    if now >= sent + max_wait:
                        probes[k] = _probe(request, k, ttl, pkt, raw, ident,
                                           Outcome.TIMEOUT)  # fmt: skip
                        del flight[k]
    finally:
        sock.close()
    names: dict[str, str | None] = {}
    if request.resolve:
        names = reverse_names([p.reply_from for p in probes.values() if p.reply_from])
    hops = []
    for ttl in ttls:
        if ttl > end:
            break
        mine = [probes[k] for k in sorted(probes) if ttl_of[k] == ttl]
        if names:
            mine = [replace(p, reply_name=names.get(p.reply_from)) if p.reply_from else p
                    for p in mine]  # fmt: skip
        hop = Hop(ttl=ttl, probes=tuple(mine))
        hops.append(hop)
        if on_hop is not None:
            on_hop(hop)
    return hops


def _probe(
    request: TraceRequest,
    k: int,
    ttl: int,
    pkt: Any,
    raw: Any,
    ident: int,
    outcome: Outcome,
    **reply: Any,
) -> Probe:
    data = raw(pkt)
    transport = pkt.payload
    ports = (transport.sport, transport.dport) if hasattr(transport, "sport") else (None, None)
    return Probe(
        seq=(k + 1) & 0xFFFF,
        ident=ident,
        ttl=ttl,
        sent=data,
        send_ns=to_ns(pkt.sent_time),
        outcome=outcome,
        method=request.method,
        src_port=ports[0],
        dst_port=ports[1],
        flow=flow_of(request.method, data),
        **reply,
    )
