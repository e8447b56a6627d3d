"""Hand-rolled traceroute: ICMP echo, UDP and TCP SYN probes, many TTLs in flight at once.

API
---
``run_trace(request: TraceRequest, *, on_hop=None, on_start=None) -> TraceResult``
    The engine; reference/traceroute.py's twin takes the same ``handrolled.requests``
    TraceRequest (validated there, once).  ``request.wait`` is traceroute(8)'s -w
    MAX,HERE,NEAR (see handrolled/tracer_core.py).  ``on_hop`` is called with each Hop, in TTL
    order, as soon as all its probes are done; ``on_start()`` once the sockets are open,
    before the first probe (traceroute(8) prints its header there, so a refused socket is
    reported alone).  Timeouts and ICMP errors are outcomes.  Raw sockets when permitted,
    else (no CAP_NET_RAW) an ordinary UDP socket or a datagram ICMP socket whose error queue
    reports the ICMP errors (handrolled/tracenet.py), as traceroute(8) does; TCP needs raw
    sockets.
``get_route(hostname) -> list[list[str]]``
    The seed's rows: ``['1', '12ms', '198.51.100.1', 'r1.lab.test']``, ``'hostname not
    returnable'`` without reverse DNS, ``['3', '*', 'Request timed out']`` for a silent hop;
    the destination last.  One ICMP probe per hop, MAX wait 2 s (the seed's TIMEOUT).
``build_packet(ident=None, seq=1, payload=None) -> bytes``: the seed's echo request.
The command line (``python -m handrolled.traceroute HOST``, traceroute(8)'s flags and output)
is handrolled/cli/traceroute.py.

What goes on the wire (so another implementation can reproduce it byte for byte)
---------------------------------------------------------------------------------
Probes are numbered k = 0, 1, ... in sending order: k = (ttl - first_ttl) * probes_per_hop + i.
- ICMP: echo request, identifier ``ident`` (None: pid & 0xffff; on a datagram ICMP socket the
  socket's port, which the kernel writes), sequence k + 1, payload ``payload`` or
  ``request.data_len(family)`` bytes (32 unless ``packet_len`` says otherwise) of the
  project's default pattern (byte i = i & 0xff).
- UDP: source port ``ident`` if given (else one the kernel picks, held for the trace),
  destination port ``request.dst_port`` (default 33434) + k, payload as for ICMP, checksum
  always set.  With ``fixed_port`` (-U): destination ``request.dst_port`` (default 53) for
  every probe, source port ``ident`` + k if ident is given, else one the kernel picks per
  probe.
- TCP: a 20-byte SYN header, no options: source port ``ident`` + k if ident is given (else one
  kernel-picked port per probe), destination port ``request.dst_port`` (default 80), sequence
  number k + 1,
  acknowledgment 0, window ``TCP_WINDOW``, urgent 0; ``payload`` (default none) follows it.
The kernel builds the IP header (TTL / hop limit per probe via IP_TTL / IPV6_UNICAST_HOPS;
DF only with ``dont_fragment``, TOS / traffic class ``tos``, source ``source``: what
traceroute(8) sets).  ``Probe.sent`` is the transport bytes on the wire; on the unprivileged
paths the kernel writes the UDP header / the ICMP checksum from the same fields by the same
rules (RFC 768, RFC 792, RFC 4443 §2.3), so ``sent`` is computed for them, and a lab test
(tests/handrolled/test_traceroute_cli.py) checks it against a capture.  Probes are spaced at
least ``send_wait`` apart (-z).

Matching: a reply belongs to a probe through what it quotes or echoes (ICMP ident/seq, UDP
ports, TCP ports + sequence; for a SYN-ACK/RST, ports + ack - 1), never by arrival order.
Outcomes: REPLY when the destination answers (echo reply; UDP port unreachable from the
destination; TCP SYN-ACK or RST), TIME_EXCEEDED, UNREACHABLE (a final error with an
annotation such as !X), TIMEOUT, CORRUPT (matched but the checksum or echoed payload is bad).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from handrolled import paths
from handrolled import transport as tp
from handrolled.errors import MalformedPacket, ResolveError, UsageError
from handrolled.icmp import (
    DestinationUnreachable,
    EchoMessage,
    IcmpError,
    TimeExceeded,
    decode_icmp,
    decode_icmp6,
    default_payload,
    encode_echo_request,
)
from handrolled.ip import IpProto, decode_ipv4
from handrolled.names import ReverseResolver
from handrolled.names import resolve as resolve_host
from handrolled.record import Record, replace
from handrolled.requests import TraceRequest
from handrolled.results import Family, Hop, Implementation, Method, Outcome, Probe, TraceResult
from handrolled.tracenet import RawReceived, TraceSockets, source_for
from handrolled.tracepaths import (
    TCP_WINDOW,
    MtuProbing,
    _Match,
    build_flow,
    match_error,
    match_queued,
    match_tcp,
    run_multipath,
    too_big,
)
from handrolled.tracer_core import TraceScheduler

__all__ = [
    "DEFAULT_PAYLOAD",
    "DEFAULT_PAYLOAD_SIZE",
    "TCP_WINDOW",
    "Tracer",
    "build_packet",
    "get_route",
    "route_rows",
    "run_trace",
]

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD_SIZE = 32  # traceroute(8)'s default: 60-byte IPv4 packets for ICMP
DEFAULT_PAYLOAD = default_payload(DEFAULT_PAYLOAD_SIZE)
NO_NAME = "hostname not returnable"
SEED_TIMEOUT = 2.0


def build_packet(ident: int | None = None, seq: int = 1, payload: bytes | None = None) -> bytes:
    """The seed's ``build_packet()``: an ICMPv4 echo request with a valid checksum."""
    ident = os.getpid() & 0xFFFF if ident is None else ident
    return encode_echo_request(ident, seq, DEFAULT_PAYLOAD if payload is None else payload)


# -- the tracer --------------------------------------------------------------------------------


class _Sent(Record, frozen=False):
    """What we know about a probe once sent."""

    k: int
    ttl: int
    data: bytes
    send_ns: int
    ident: int
    seq: int
    src_port: int | None = None
    dst_port: int | None = None
    probe: Probe | None = None  # set when the probe is settled (reply or timeout)
    flow: tuple[int, ...] | None = None  # what an ECMP router hashes (see paths.flow_of)
    mtu: int | None = None  # --mtu: the path MTU this probe was sized to (F=)


class Tracer(MtuProbing):
    """One trace's driver: builds probes, sends them through ``sockets``, matches replies.

    ``clock`` is a monotonic clock in seconds (scheduling only; probe times are ns since the
    epoch: sends by the clock read before sendto, replies by the kernel's receive stamp where
    there is one).
    """

    def __init__(
        self,
        sockets: TraceSockets | None,
        scheduler: TraceScheduler,
        *,
        method: Method,
        dst: str,
        src: str,
        family: Family,
        ident: int | None,
        port: int,
        payload: bytes,
        resolver: ReverseResolver | None,
        clock: Callable[[], float] = time.monotonic,
        fixed_port: bool = False,
        paris: bool = False,
        mtu: int | None = None,
    ) -> None:
        self.sockets = sockets
        self.sched = scheduler
        self.method = method
        self.dst = dst
        self.src = src
        self.family = family
        self.v6 = family == 6
        self.port = port
        self.payload = payload
        self.resolver = resolver
        self.clock = clock
        self.fixed_port = fixed_port
        # probes carry flows (Paris: one for the whole trace; MDA: many; handrolled/paths.py),
        # so UDP probes share ports and are matched by checksum
        self.paris = paris
        self.sent: dict[int, _Sent] = {}
        self.mtu_size = mtu  # --mtu: the datagram size probes are built to (None: off)
        self._retries = 0
        self._keys: dict[tuple, int] = {}
        if method is Method.ICMP:
            self.ident = (os.getpid() & 0xFFFF) if ident is None else ident
            if sockets is not None and sockets.icmp_ident is not None:
                self.ident = sockets.icmp_ident  # a datagram socket's: the kernel writes it
        elif method is Method.UDP and fixed_port and not paris:
            self.ident = ident if ident is not None else 0  # per-probe ports, see _build
        elif method is Method.UDP:
            # hold the source port for the trace (``sockets`` None: pure use, e.g. in tests)
            self.ident = ident if sockets is None else sockets.reserve_udp_port(ident)
            if self.ident is None:
                raise UsageError("a UDP trace without sockets needs an explicit ident (port)")
        elif paris and sockets is not None and ident is None:
            self.ident = sockets.reserve_tcp_port(None)  # one source port for the trace
        else:
            self.ident = ident if ident is not None else 0  # per-probe ports, see _build
        self._icmp_base: int | None = None  # paths: the checksum ICMP flows are built on
        self._flow_ports: dict[int, int] = {}  # TCP flows: the source ports held

    # -- probe construction -------------------------------------------------------------------

    def _build(self, k: int, ttl: int, flow: int | None = None) -> _Sent:
        """Probe ``k`` with ``ttl``; ``flow`` (paths.py): the flow number it belongs to
        (Paris: always 0; MDA: one per flow), None for a classic probe."""
        if flow is None and self.paris:
            flow = 0
        if flow is not None:
            return self._build_flow(k, ttl, flow)
        seq = (k + 1) & 0xFFFF
        if self.method is Method.ICMP:
            data = encode_echo_request(
                self.ident, seq, self.payload, v6=self.v6, src=self.src, dst=self.dst
            )
            self._keys[("icmp", self.ident, seq)] = k
            return _Sent(k, ttl, data, 0, self.ident, seq)
        if self.method is Method.UDP:
            if not self.fixed_port:
                src_port, dst_port = self.ident, (self.port + k) & 0xFFFF
            elif self.sockets is not None and not self.ident:
                src_port, dst_port = self.sockets.reserve_udp_port(None), self.port
            else:
                src_port, dst_port = (self.ident + k) & 0xFFFF, self.port
                if self.sockets is not None:
                    self.sockets.reserve_udp_port(src_port)
            datagram = tp.UdpDatagram(src_port, dst_port, self.payload)
            data = tp.encode_udp(datagram, src=self.src, dst=self.dst)
            self._keys[("udp", src_port, dst_port)] = k
            return _Sent(k, ttl, data, 0, src_port, seq, src_port, dst_port)
        if self.sockets is not None and not self.ident:
            src_port = self.sockets.reserve_tcp_port(None)
        else:
            src_port = (self.ident + k) & 0xFFFF
        tcp_seq = k + 1
        syn = tp.TcpSegment(src_port, self.port, tcp_seq, window=TCP_WINDOW, payload=self.payload)
        data = tp.encode_tcp(syn, src=self.src, dst=self.dst)
        self._keys[("tcp", src_port, self.port, tcp_seq)] = k
        return _Sent(k, ttl, data, 0, src_port, tcp_seq, src_port, self.port)

    def _build_flow(self, k: int, ttl: int, flow: int) -> _Sent:
        """Probe ``k`` in flow ``flow``, as handrolled/paths.py lays it out."""
        data, ident, seq, ports, keys = build_flow(self, k, flow)
        for key in keys:
            self._keys[key] = k
        return _Sent(k, ttl, data, 0, ident, seq, *ports)

    # -- reply matching -----------------------------------------------------------------------

    def _match(self, rec: RawReceived) -> _Match | None:
        """Which probe ``rec`` answers, and how; None for anything that is not ours."""
        try:
            if rec.kind == "tcp":
                return match_tcp(self, rec)
            if rec.error is not None:
                return match_queued(self, rec)
            return self._match_icmp(rec)
        except MalformedPacket as exc:
            log.debug("ignoring malformed packet from %s: %s", rec.source, exc)
            return None

    def _match_icmp(self, rec: RawReceived) -> _Match | None:
        reply_ttl = rec.ttl
        if self.v6:
            msg = decode_icmp6(rec.data, src=rec.source, dst=self.src)
        elif rec.kind == "dgram":  # a datagram ICMP socket reads the message without IP header
            msg = decode_icmp(rec.data)
        else:
            header, body = decode_ipv4(rec.data)
            reply_ttl = header.ttl
            msg = decode_icmp(body)
        if isinstance(msg, EchoMessage):
            if not msg.is_reply or self.method is not Method.ICMP:
                return None
            k = self._keys.get(("icmp", msg.ident, msg.seq))
            if k is None or rec.source != self.dst:
                return None
            note = ""
            if msg.checksum_ok is False:
                note = "bad ICMP checksum"
            elif msg.payload != (self.sent[k].data[8:] if k in self.sent else self.payload):
                # RFC 792: the data echoed as sent (Paris compensates in its first word)
                note = "echoed payload differs"
            outcome = Outcome.CORRUPT if note else Outcome.REPLY
            return _Match(k, outcome, True, msg.icmp_type, msg.code, reply_ttl, note)
        mtu = too_big(msg, self.v6) if self.mtu_size else None
        if mtu is not None:  # --mtu: the probe is sent again, smaller (see _resend_smaller)
            k = self._quoted_key(msg)  # type: ignore[arg-type]
            if k is None:
                return None
            return _Match(
                k, Outcome.UNREACHABLE, False, msg.icmp_type, msg.code, reply_ttl, mtu=mtu
            )
        if not isinstance(msg, (TimeExceeded, DestinationUnreachable)):
            return None
        k = self._quoted_key(msg)
        if k is None:
            return None
        exceeded = isinstance(msg, TimeExceeded)
        return match_error(self, k, exceeded, msg.icmp_type, msg.code, reply_ttl, rec.source)

    def _quoted_key(self, msg: IcmpError) -> int | None:
        quoted = msg.quoted
        if quoted.dst != self.dst:
            return None
        if self.method is Method.ICMP:
            if quoted.echo is None:
                return None
            return self._keys.get(("icmp", *quoted.echo))
        if self.method is Method.UDP:
            if quoted.protocol != IpProto.UDP or quoted.ports is None:
                return None
            if self.paris:  # RFC 792: the quoted 64 bits hold the UDP checksum (octets 6-7)
                return self._keys.get(("udp-sum", *quoted.ports, quoted.data[6:8]))
            return self._keys.get(("udp", *quoted.ports))
        if quoted.protocol != IpProto.TCP:
            return None
        head = tp.decode_tcp_quoted(quoted.data)
        return self._keys.get(("tcp", head.src_port, head.dst_port, head.seq))

    # -- the loop -----------------------------------------------------------------------------

    def run(self, on_hop: Callable[[Hop], None] | None = None) -> list[Hop]:
        sockets = self.sockets
        if sockets is None:
            raise UsageError("Tracer.run needs sockets")
        sched = self.sched
        hops: list[Hop] = []
        wait_max = sched.wait_max
        started = self.clock()
        # a hard bound: every probe expires within MAX of its sending, and sending is never
        # blocked for longer than that, so the whole trace fits in count * MAX (+ slack)
        hard_stop = started + len(sched.slots) * (max(wait_max, 0.01) + sched.send_wait) + 5.0
        while not sched.finished:
            for k in sched.to_send(self.clock()):
                ttl = sched.ttl_of(k)
                sent = self._build(k, ttl)
                self.sent[k] = sent
                try:
                    sent = self._send(sent)
                except OSError as exc:  # refused locally (EHOSTUNREACH, EACCES...): lost, say why
                    log.debug("sendto failed with TTL %d: %s", ttl, exc)
                    sched.mark_lost(k, self.clock())
                    self._settle_lost(sent, exc)
                    continue
                sched.mark_sent(k, self.clock())
            deadline = sched.next_deadline()
            send_at = sched.next_send_at()
            if send_at is not None and (deadline is None or send_at < deadline):
                deadline = send_at  # -z: wake up for the next send
            now = self.clock()
            timeout = 0.0 if deadline is None else max(deadline - now, 0.0)
            for rec in sockets.wait(min(timeout, 1.0)):
                self._handle(rec)
            now = self.clock()
            if now >= hard_stop:
                log.warning("trace exceeded its time bound; expiring what is left")
                now = float("inf")
            for k in sched.expire(now):
                self._settle_timeout(k)
            for ttl in sched.pop_complete_hops():
                hop = self._hop(ttl)
                hops.append(hop)
                if on_hop is not None:
                    on_hop(hop)
        return hops

    def _handle(self, rec: RawReceived) -> None:
        match = self._match(rec)
        if match is None:
            return
        sent = self.sent.get(match.k)
        if sent is None:
            return
        if match.mtu is not None:
            self._resend_smaller(match.k, match.mtu)
            return
        rtt_ns = max(rec.recv_ns - sent.send_ns, 0)
        final = match.final and match.outcome is not Outcome.CORRUPT
        if not self.sched.on_reply(match.k, rtt=rtt_ns / 1e9, final=final):
            log.debug("late or duplicate reply for probe %d from %s", match.k, rec.source)
            return
        self._settle_reply(sent, match, rec, rtt_ns)

    def _settle_reply(self, sent: _Sent, match: _Match, rec: RawReceived, rtt_ns: int) -> None:
        """Settle ``sent`` with ``rec``, the reply ``match`` says answers it."""
        if self.resolver is not None:
            self.resolver.request(rec.source)
        sent.probe = self._probe(
            sent,
            match.outcome,
            recv_ns=rec.recv_ns,
            rtt_ms=rtt_ns / 1e6,
            reply_from=rec.source,
            reply_ttl=match.reply_ttl,
            icmp_type=match.icmp_type,
            icmp_code=match.icmp_code,
            received=rec.data,
            kernel_timestamp=rec.kernel_timestamp,
            note=match.note,
        )
        self._release(sent)

    def _settle_lost(self, sent: _Sent, exc: OSError) -> None:
        """Settle ``sent``, which the local stack refused, as a timeout that says why."""
        sent.send_ns = time.time_ns()
        sent.probe = self._probe(sent, Outcome.TIMEOUT, note=f"sendto: {exc.strerror or exc}")
        self._release(sent)

    def _settle_timeout(self, k: int) -> None:
        sent = self.sent[k]
        sent.probe = self._probe(sent, Outcome.TIMEOUT)
        self._release(sent)

    def _release(self, sent: _Sent) -> None:
        # -U over datagram sockets: one socket per probe, closed once the probe is settled
        # (traceroute(8)'s probe_done()), so a long trace never runs out of descriptors
        held = self.fixed_port and not self.paris  # Paris holds one port for the trace
        if held and self.sockets is not None and sent.src_port is not None:
            self.sockets.release_udp_port(sent.src_port)

    def _probe(self, sent: _Sent, outcome: Outcome, **reply: object) -> Probe:
        """The Probe for ``sent``; ``reply`` holds the fields of what answered it, if anything."""
        return Probe(
            seq=sent.seq,
            ident=sent.ident,
            ttl=sent.ttl,
            sent=sent.data,
            send_ns=sent.send_ns,
            outcome=outcome,
            method=self.method,
            src_port=sent.src_port,
            dst_port=sent.dst_port,
            flow=paths.flow_of(self.method, sent.data),
            mtu=sent.mtu,
            **reply,  # type: ignore[arg-type]
        )

    def _hop(self, ttl: int) -> Hop:
        q = self.sched.probes_per_hop
        base = (ttl - self.sched.first_ttl) * q
        probes = []
        for k in range(base, base + q):
            probe = self.sent[k].probe
            assert probe is not None  # the scheduler released the hop: every probe is settled
            probes.append(self._named(probe))
        return Hop(ttl=ttl, probes=tuple(probes))

    def _named(self, probe: Probe) -> Probe:
        """``probe`` with the reverse name of who answered it (with resolving on)."""
        if self.resolver is None or probe.reply_from is None:
            return probe
        return replace(probe, reply_name=self.resolver.name(probe.reply_from))


def run_trace(
    request: TraceRequest,
    *,
    on_hop: Callable[[Hop], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> TraceResult:
    """Trace the route ``request`` describes; see the module docstring for the wire format.

    Raw sockets when permitted, else datagram ones (UDP and ICMP; see handrolled/tracenet.py).
    """
    if not isinstance(request, TraceRequest):
        raise TypeError(f"run_trace takes a TraceRequest, not {type(request).__name__}")
    method = request.method
    port = request.dst_port
    scheduler = TraceScheduler(
        first_ttl=request.first_ttl,
        max_hops=request.max_hops,
        probes_per_hop=request.probes_per_hop,
        sim_queries=1 if request.mtu else request.sim_queries,  # --mtu: one at a time
        wait=request.wait,
        send_wait=request.send_wait,
    )
    address, fam = resolve_host(request.host, request.family)
    payload = request.payload
    if payload is None:
        payload = default_payload(request.data_len(fam))
    if request.source is not None:
        src = source_of(request.source, fam)
    else:
        src = source_for(address, fam, request.interface)
    started_ns = time.time_ns()
    t0 = time.monotonic()
    resolver = ReverseResolver() if request.resolve else None
    with TraceSockets(
        method,
        fam,
        address,
        src,
        ident=request.ident,
        dont_fragment=request.dont_fragment,
        tos=request.tos,
        interface=request.interface,
        bind_source=request.source is not None,
        mtu_discovery=request.mtu,
    ) as sockets:
        tracer = Tracer(
            sockets,
            scheduler,
            method=method,
            dst=address,
            src=src,
            family=fam,
            ident=request.ident,
            port=port or 0,
            payload=payload,
            resolver=resolver,
            fixed_port=request.fixed_port,
            paris=request.paris or request.multipath,
            mtu=(len(payload) + (40 if fam == 6 else 20) + 8) if request.mtu else None,
        )
        if on_start is not None:
            on_start()
        if request.multipath:
            planner = paths.MdaPlanner(request.first_ttl, request.max_hops, request.confidence)
            hops = run_multipath(
                tracer,
                planner,
                wait_max=request.wait[0],
                sim_queries=request.sim_queries,
                on_hop=on_hop,
            )
        else:
            hops = tracer.run(on_hop)
    reached = any(p.outcome is Outcome.REPLY for hop in hops for p in hop.probes)
    return TraceResult(
        target=request.host,
        address=address,
        family=fam,
        method=method,
        hops=tuple(hops),
        reached=reached,
        implementation=Implementation.HANDROLLED,
        port=port,
        started_ns=started_ns,
        elapsed_ms=(time.monotonic() - t0) * 1000.0,
    )


def source_of(source: str, family: Family) -> str:
    """The address -s names, in the destination's family (traceroute(8): "IP version mismatch
    in addresses specified" otherwise)."""
    try:
        return resolve_host(source, family)[0]
    except ResolveError:
        resolve_host(source, None)  # does not resolve at all: that error, not a mismatch
        raise UsageError(f"source {source}: IP version mismatch in addresses specified") from None


# -- the seed contract -------------------------------------------------------------------------


def route_rows(result: TraceResult) -> list[list[str]]:
    """The seed's rows for a trace: the first answered probe of each hop, or a timeout row."""
    rows = []
    for hop in result.hops:
        answered = [p for p in hop.probes if p.reply_from is not None and p.rtt_ms is not None]
        if not answered:
            rows.append([str(hop.ttl), "*", "Request timed out"])
            continue
        probe = answered[0]
        rtt = f"{round(probe.rtt_ms)}ms"  # type: ignore[arg-type]
        rows.append([str(hop.ttl), rtt, str(probe.reply_from), probe.reply_name or NO_NAME])
    return rows


def get_route(hostname: str) -> list[list[str]]:
    """The seed's ``get_route``: one ICMP probe per TTL, rows of strings, destination last.

    Like the seed (gethostbyname) it traces the IPv4 address when the name has one.

    Raises ``ResolveError`` when ``hostname`` does not resolve.  Prints nothing.
    """
    try:  # the seed resolves with gethostbyname: IPv4 first
        address, family = resolve_host(hostname, 4)
    except ResolveError:
        address, family = resolve_host(hostname, None)
    request = TraceRequest(
        address, probes_per_hop=1, max_hops=30, wait=(SEED_TIMEOUT, 3.0, 10.0), family=family
    )
    return route_rows(run_trace(request))


if __name__ == "__main__":  # the command line lives in handrolled/cli/traceroute.py
    from handrolled.cli.common import run_module
    from handrolled.cli.traceroute import main

    # this module's own engine: importing handrolled.traceroute again would run it twice
    sys.exit(run_module(lambda argv: main(argv, runner=run_trace)))
