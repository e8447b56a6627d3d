"""Paths that branch: Paris traceroute's constant flows and the MDA's stopping rule.  Pure.

Flows (what a per-flow ECMP router hashes: RFC 2992; Linux's fib_multipath_hash_policy=1 reads
addresses, protocol and ports) and how a probe stays in one while it is still told apart
(Augustin et al., "Avoiding traceroute anomalies with Paris traceroute", IMC 2006):

- UDP: source and destination port fixed per flow; probe k's UDP checksum is k + 1, set by
  the first two payload bytes (RFC 1071 §2(4)), so an ICMP error's quoted UDP header (RFC 792:
  the first 64 bits) still names the probe.  Flow f: destination port base + f.
- TCP: ports fixed per flow, the sequence number (k + 1) tells probes apart.  Flow f: source
  port ident + f.
- ICMP echo: identifier and checksum fixed, the first two payload bytes compensate for the
  sequence number (k + 1).  Flow f's checksum: ``icmp_flow_checksum(base, f)`` where base is
  the checksum of the classic first probe (sequence 1, payload unchanged).

The MDA (Augustin, Friedman, Teixeira, "Multipath tracing with Paris traceroute", E2EMON
2007; Veitch et al., "Failure control in multipath route tracing", INFOCOM 2009): at each TTL,
probe with distinct flows; having seen k next hops, stop once n_k flows in all have been
sent, where n_k is the least n for which k + 1 equally likely next hops would all have shown
with probability at least the confidence (``stopping_point``).  Here the rule is applied per
TTL (every flow probes every TTL), not per vertex.
"""

from __future__ import annotations

import math

from handrolled.icmp import encode_echo_request
from handrolled.record import Record, field
from handrolled.results import Method
from handrolled.transport import UdpDatagram, checksum_compensation, encode_udp

__all__ = [
    "MdaPlanner",
    "failure_probability",
    "flow_of",
    "icmp_flow_checksum",
    "icmp_flow_probe",
    "stopping_point",
    "stopping_table",
    "udp_flow_probe",
]

MAX_NEXT_HOPS = 64  # the stopping table's reach; beyond it the rule stops probing


def flow_of(method: Method, data: bytes) -> tuple[int, int] | None:
    """The flow a probe's transport bytes belong to: (source port, destination port) for UDP
    and TCP (RFC 768, RFC 793 §3.1: octets 0-3), (identifier, checksum) for ICMP echo."""
    if len(data) < 8:
        return None
    if method is Method.ICMP:
        return int.from_bytes(data[4:6], "big"), int.from_bytes(data[2:4], "big")
    return int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")


def _with_word(payload: bytes, word: int) -> bytes:
    return word.to_bytes(2, "big") + payload[2:]


def udp_flow_probe(
    src_port: int, dst_port: int, payload: bytes, checksum: int, *, src: str, dst: str
) -> bytes:
    """A UDP datagram whose checksum is ``checksum`` (1..0xfffe), set through payload[0:2]."""
    first = encode_udp(UdpDatagram(src_port, dst_port, payload), src=src, dst=dst)
    now = int.from_bytes(first[6:8], "big")
    word = checksum_compensation(now, int.from_bytes(payload[0:2], "big"), checksum)
    return encode_udp(UdpDatagram(src_port, dst_port, _with_word(payload, word)), src=src, dst=dst)


def icmp_flow_checksum(base: int, flow: int) -> int:
    """Flow ``flow``'s ICMP checksum: ``base`` for flow 0, then the next values (1..0xfffe)."""
    return (base - 1 + flow) % 0xFFFE + 1


def icmp_flow_probe(
    ident: int,
    seq: int,
    payload: bytes,
    checksum: int,
    *,
    v6: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """An echo request (RFC 792 / RFC 4443 §4.1) whose checksum is ``checksum`` whatever
    ``seq`` is: payload[0:2] compensates."""
    first = encode_echo_request(ident, seq, payload, v6=v6, src=src, dst=dst)
    now = int.from_bytes(first[2:4], "big")
    word = checksum_compensation(now, int.from_bytes(payload[0:2], "big"), checksum)
    return encode_echo_request(ident, seq, _with_word(payload, word), v6=v6, src=src, dst=dst)


def failure_probability(next_hops: int, probes: int) -> float:
    """P(some of ``next_hops`` equally likely next hops unseen after ``probes`` probes with
    distinct flows): inclusion-exclusion over the hops missed."""
    k = next_hops
    return sum((-1) ** (i + 1) * math.comb(k, i) * ((k - i) / k) ** probes for i in range(1, k + 1))


def stopping_point(seen: int, confidence: float = 0.95) -> int:
    """n_k: flows to send in all, having seen ``seen`` (k) next hops, before ruling out a
    k+1th at ``confidence`` (Veitch et al. 2009, §3; 95 %: 6, 11, 16, 21, 27, ...)."""
    k = max(seen, 1)
    n = k
    while failure_probability(k + 1, n) > 1 - confidence:
        n += 1
    return n


def stopping_table(confidence: float = 0.95, up_to: int = 10) -> tuple[int, ...]:
    """(n_1, ..., n_up_to) at ``confidence``."""
    return tuple(stopping_point(k, confidence) for k in range(1, up_to + 1))


class MdaHop(Record, frozen=False):
    """One TTL of a multipath trace: the flows sent and the addresses that answered."""

    ttl: int
    flows: int = 0
    addresses: set[str] = field(default_factory=set)


class MdaPlanner:
    """Rounds of (ttl, flow) probes until every TTL meets the stopping rule.  Pure.

    Round 1 sends n_1 flows to every TTL from ``first_ttl`` to ``max_hops``; each later round
    tops every TTL up to n_k for the k addresses seen there.  A final answer at TTL h ends
    the trace there: TTLs beyond h are dropped and planned probes to them never sent.
    Probe numbers run over the plans in order, sent or not, so two implementations that see
    the same answers number every probe alike.
    """

    def __init__(self, first_ttl: int, max_hops: int, confidence: float = 0.95) -> None:
        self.confidence = confidence
        self.hops = {ttl: MdaHop(ttl) for ttl in range(first_ttl, max_hops + 1)}
        self.end = max_hops
        self.numbered = 0  # probe numbers handed out so far

    def next_round(self) -> list[tuple[int, int, int]]:
        """(probe number, ttl, flow) of the next round; empty when the trace is done."""
        plan = []
        for ttl, hop in self.hops.items():
            if ttl > self.end:
                break
            want = stopping_point(len(hop.addresses), self.confidence)
            if len(hop.addresses) >= MAX_NEXT_HOPS:
                want = hop.flows
            for flow in range(hop.flows, want):
                plan.append((self.numbered, ttl, flow))
                self.numbered += 1
            hop.flows = max(hop.flows, want)
        return plan

    def record(self, ttl: int, address: str | None, final: bool) -> None:
        """A probe to ``ttl`` was answered from ``address`` (None: timed out)."""
        if address is not None:
            self.hops[ttl].addresses.add(address)
        if final:  # the destination (or an unreachable) answered: the trace ends here
            self.end = min(self.end, ttl)

    def branches(self) -> list[MdaHop]:
        """The TTLs of the trace, in order, up to its end."""
        return [hop for ttl, hop in self.hops.items() if ttl <= self.end]
