"""The Tracer's parts for paths that branch and shrink (issue 12), kept out of traceroute.py.

- ``run_multipath``: the MDA's rounds (paths.MdaPlanner).  Each round's probes go out in plan
  order (TTL, then flow), at most ``sim_queries`` in flight, each waiting at most
  ``wait_max`` seconds; a probe planned beyond a final answer is never sent (its number stays
  unused, as on the reference side).
- ``build_flow``: probe k of flow f as handrolled/paths.py lays it out (Paris: flow 0).
- ``MtuProbing``: --mtu (a local EMSGSIZE, frag-needed, Packet Too Big shrink the probes;
  ``too_big`` reads the MTU an error names).
- ``match_queued`` / ``match_tcp``: the error-queue and TCP-answer matching rules.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Callable

from handrolled import paths
from handrolled import transport as tp
from handrolled.icmp import (
    DestinationUnreachable,
    Icmp6Type,
    IcmpType,
    PacketTooBig,
    Unreach6Code,
    UnreachCode,
    default_payload,
    encode_echo_request,
)
from handrolled.ip import IpProto, decode_ipv4
from handrolled.paths import MdaPlanner
from handrolled.record import Record
from handrolled.results import Hop, Method, Outcome, Probe
from handrolled.tracenet import RawReceived

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see results.py)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "TCP_WINDOW",
    "MtuProbing",
    "build_flow",
    "match_error",
    "match_queued",
    "match_tcp",
    "run_multipath",
    "too_big",
]

TCP_WINDOW = 64240  # what Linux advertises in a SYN on Ethernet (44 * 1460)

log = logging.getLogger(__name__)


class _Match(Record):
    k: int
    outcome: Outcome
    final: bool
    icmp_type: int | None
    icmp_code: int | None
    reply_ttl: int | None
    note: str = ""
    mtu: int | None = None  # --mtu: the MTU a frag-needed / Packet Too Big names


def match_queued(
    self,  # a handrolled.traceroute.Tracer
    rec: RawReceived,
) -> _Match | None:
    """An ICMP error from a datagram socket's error queue (IP_RECVERR).

    The kernel matched it to our socket; ``rec.data`` is what it quoted of our probe (UDP:
    the payload, with the destination port in ``rec.dst_port``; ICMP: our echo request).
    """
    err = rec.error
    assert err is not None
    if rec.kind == "udp":
        if self.method is not Method.UDP or rec.dst_port is None:
            return None
        src_port = self.ident if rec.src_port is None else rec.src_port
        if self.paris:  # the payload's first word differs with every checksum
            k = self._keys.get(("udp-word", src_port, rec.dst_port, rec.data[:2]))
        else:
            k = self._keys.get(("udp", src_port, rec.dst_port))
    else:
        if self.method is not Method.ICMP or len(rec.data) < 8:
            return None
        # RFC 792 / RFC 4443 §4.1: identifier and sequence at octets 4 and 6
        ident = int.from_bytes(rec.data[4:6], "big")
        seq = int.from_bytes(rec.data[6:8], "big")
        k = self._keys.get(("icmp", ident, seq))
    if k is None:
        return None
    too_big4 = err.icmp_type == IcmpType.DEST_UNREACHABLE and err.icmp_code == 4
    too_big6 = err.icmp_type == Icmp6Type.PACKET_TOO_BIG
    if self.mtu_size and err.info and (too_big6 if self.v6 else too_big4):
        # --mtu: ee_info is the MTU the error named (RFC 1191 §4 / RFC 4443 §3.2)
        return _Match(k, Outcome.UNREACHABLE, False, err.icmp_type, err.icmp_code, rec.ttl,
                      mtu=err.info)  # fmt: skip
    exceeded = Icmp6Type.TIME_EXCEEDED if self.v6 else IcmpType.TIME_EXCEEDED
    unreachable = Icmp6Type.DEST_UNREACHABLE if self.v6 else IcmpType.DEST_UNREACHABLE
    if err.icmp_type not in (exceeded, unreachable):
        return None  # as on the raw path: only time exceeded and unreachable count
    is_exceeded = err.icmp_type == exceeded
    return match_error(self, k, is_exceeded, err.icmp_type, err.icmp_code, rec.ttl, rec.source)


def match_error(
    self,  # a handrolled.traceroute.Tracer
    k: int,
    exceeded: bool,
    icmp_type: int,
    code: int,
    reply_ttl: int | None,
    source: str,
) -> _Match:
    """Probe ``k``'s match for a time exceeded (``exceeded``) or destination unreachable
    from ``source``: a port unreachable from the destination is its answer to a UDP probe
    (RFC 792; RFC 4443 §3.1), any other unreachable ends the trace as UNREACHABLE."""
    if exceeded:
        return _Match(k, Outcome.TIME_EXCEEDED, False, icmp_type, code, reply_ttl)
    port_unreach = code == (Unreach6Code.PORT if self.v6 else UnreachCode.PORT)
    if port_unreach and source == self.dst and self.method is Method.UDP:
        outcome = Outcome.REPLY
    else:
        outcome = Outcome.UNREACHABLE
    return _Match(k, outcome, True, icmp_type, code, reply_ttl)


def match_tcp(self, rec: RawReceived) -> _Match | None:
    if rec.source != self.dst:
        return None
    reply_ttl = rec.ttl
    data = rec.data
    if not self.v6:
        header, data = decode_ipv4(rec.data)
        reply_ttl = header.ttl
    segment = tp.decode_tcp(data)
    flags = tp.TcpFlags(segment.flags)
    if not (flags & tp.TcpFlags.RST or (flags & tp.TcpFlags.SYN and flags & tp.TcpFlags.ACK)):
        return None
    seq = (segment.ack - 1) & 0xFFFFFFFF  # RFC 793 §3.4: both acknowledge our SYN
    k = self._keys.get(("tcp", segment.dst_port, segment.src_port, seq))
    if k is None:
        return None
    # Not CORRUPT on a bad checksum: over loopback and veth the sender's checksum is often
    # left to offload (CHECKSUM_PARTIAL) and a raw socket sees it unfinished.
    ok = tp.transport_checksum_ok(rec.source, self.src, IpProto.TCP, data)
    note = "" if ok else "TCP checksum does not verify (checksum offload?)"
    return _Match(k, Outcome.REPLY, True, None, None, reply_ttl, note)


class MtuProbing:
    """handrolled.traceroute.Tracer's --mtu part (traceroute(8)'s: start big with DF set,
    shrink to what the path says: a local EMSGSIZE, a frag-needed or a Packet Too Big)."""

    mtu_size: int | None
    sockets: Any
    sched: Any
    sent: dict
    _keys: dict
    _retries: int
    v6: bool
    payload: bytes
    clock: Callable[[], float]

    def _resize(self, size: int) -> None:
        self.mtu_size = size
        headers = (40 if self.v6 else 20) + 8  # IP + UDP / ICMP echo header
        self.payload = default_payload(max(size - headers, 0))

    def _send(self, sent: Any) -> Any:  # a traceroute._Sent
        """Send ``sent``; --mtu: on EMSGSIZE rebuild it to the route's MTU (F=) and resend."""
        assert self.sockets is not None
        for _ in range(4):
            try:
                sent.send_ns = self.sockets.send(sent.data, sent.ttl)
                return sent
            except OSError as exc:
                size = self.mtu_size
                mtu = self.sockets.local_mtu() if size and exc.errno == errno.EMSGSIZE else None
                if mtu is None or size is None or mtu >= size:
                    raise
                self._resize(mtu)
                sent = self._build(sent.k, sent.ttl)
                sent.mtu = self.sent[sent.k].mtu = mtu
                self.sent[sent.k] = sent
        raise OSError(errno.EMSGSIZE, "still too big")

    def _resend_smaller(self, k: int, mtu: int) -> None:
        """A router said probe ``k`` was too big: send it again at ``mtu`` bytes, numbered
        after every planned probe (count + retries so far), so both copies show on the wire."""
        if self.mtu_size is None or mtu >= self.mtu_size:
            return  # no smaller than what we sent: not ours to act on
        self._resize(mtu)
        retry = len(self.sched.slots) + self._retries
        self._retries += 1
        sent = self._build(retry, self.sent[k].ttl)
        for key, value in list(self._keys.items()):
            if value == retry:
                self._keys[key] = k
        sent.k, sent.mtu = k, mtu
        self.sent[k] = sent
        try:
            self._send(sent)
        except OSError as exc:
            log.debug("resending probe %d at %d bytes failed: %s", k, mtu, exc)
        self.sched.slots[k].sent_at = self.clock()


def too_big(msg: object, v6: bool) -> int | None:
    """The MTU a "too big" error names: frag-needed's next-hop MTU (RFC 1191 §4: the low 16
    bits after the checksum) or Packet Too Big's (RFC 4443 §3.2); None for anything else."""
    if v6:
        return msg.info if isinstance(msg, PacketTooBig) else None
    if isinstance(msg, DestinationUnreachable) and msg.code == UnreachCode.FRAGMENTATION_NEEDED:
        return (msg.info & 0xFFFF) or None
    return None


def build_flow(tracer, k: int, flow: int) -> tuple[bytes, int, int, tuple, list[tuple]]:
    """(bytes, ident, seq, (source port, destination port), match keys) of probe ``k`` in flow
    ``flow`` of ``tracer`` (a handrolled.traceroute.Tracer), as handrolled/paths.py lays it
    out."""
    t = tracer
    seq = (k + 1) & 0xFFFF
    if t.method is Method.ICMP:
        if t._icmp_base is None:  # the classic first probe's checksum
            first = encode_echo_request(t.ident, 1, t.payload, v6=t.v6, src=t.src, dst=t.dst)
            t._icmp_base = int.from_bytes(first[2:4], "big")
        checksum = paths.icmp_flow_checksum(t._icmp_base, flow)
        data = paths.icmp_flow_probe(
            t.ident, seq, t.payload, checksum, v6=t.v6, src=t.src, dst=t.dst
        )
        return data, t.ident, seq, (), [("icmp", t.ident, seq)]
    if t.method is Method.UDP:
        src_port, dst_port = t.ident, (t.port + flow) & 0xFFFF
        # RFC 768: the checksum names the probe (1..0xfffe)
        data = paths.udp_flow_probe(
            src_port, dst_port, t.payload, k % 0xFFFE + 1, src=t.src, dst=t.dst
        )
        keys = [
            ("udp-sum", src_port, dst_port, data[6:8]),
            ("udp-word", src_port, dst_port, data[8:10]),  # the error queue's (payload) key
        ]
        return data, src_port, seq, (src_port, dst_port), keys
    src_port = (t.ident + flow) & 0xFFFF
    if t.sockets is not None and flow and not t._flow_ports.get(flow):
        t._flow_ports[flow] = t.sockets.reserve_tcp_port(src_port)
    segment = tp.TcpSegment(
        src_port, t.port, seq=k + 1, flags=tp.TcpFlags.SYN, window=TCP_WINDOW, payload=t.payload
    )
    data = tp.encode_tcp(segment, src=t.src, dst=t.dst)
    return data, src_port, k + 1, (src_port, t.port), [("tcp", src_port, t.port, k + 1)]


def run_multipath(
    tracer,  # handrolled.traceroute.Tracer (not imported: that module imports this one)
    planner: MdaPlanner,
    *,
    wait_max: float,
    sim_queries: int,
    on_hop: Callable[[Hop], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Hop]:
    """Run rounds until the planner's stopping rule holds at every TTL; the hops, in order,
    each with every probe sent to its TTL (in sending order)."""
    sockets = tracer.sockets
    while plan := planner.next_round():
        pending = deque(plan)
        deadlines: dict[int, float] = {}
        while pending or deadlines:
            while pending and len(deadlines) < sim_queries:
                k, ttl, flow = pending.popleft()
                if ttl > planner.end:
                    continue  # beyond the destination: never sent
                sent = tracer._build(k, ttl, flow)
                tracer.sent[k] = sent
                try:
                    sent.send_ns = sockets.send(sent.data, ttl)
                except OSError as exc:
                    tracer._settle_lost(sent, exc)
                    planner.record(ttl, None, False)
                    continue
                deadlines[k] = clock() + wait_max
            if not deadlines:
                continue
            timeout = max(min(deadlines.values()) - clock(), 0.0)
            for rec in sockets.wait(min(timeout, 1.0)):
                match = tracer._match(rec)
                if match is None or match.k not in deadlines:
                    continue
                del deadlines[match.k]
                sent = tracer.sent[match.k]
                tracer._settle_reply(sent, match, rec, max(rec.recv_ns - sent.send_ns, 0))
                final = match.final and match.outcome is not Outcome.CORRUPT
                planner.record(sent.ttl, rec.source, final)
            now = clock()
            for k in [k for k, at in deadlines.items() if at <= now]:
                del deadlines[k]
                tracer._settle_timeout(k)
                planner.record(tracer.sent[k].ttl, None, False)
    hops = []
    for mda_hop in planner.branches():
        probes: list[Probe] = [
            tracer._named(sent.probe)
            for _, sent in sorted(tracer.sent.items())
            if sent.ttl == mda_hop.ttl and sent.probe is not None
        ]
        hop = Hop(ttl=mda_hop.ttl, probes=tuple(probes))
        hops.append(hop)
        if on_hop is not None:
            on_hop(hop)
    return hops
