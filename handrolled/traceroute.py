"""Hand-rolled traceroute: ICMP echo, UDP and TCP SYN probes, many TTLs in flight at once.

API
---
``run_trace(host, *, method=Method.ICMP, port=None, probes_per_hop=3, first_ttl=1,
max_hops=30, sim_queries=16, wait=(5.0, 3.0, 10.0), family=None, resolve=True, ident=None,
payload=None, on_hop=None) -> TraceResult``
    The runner shared with reference/traceroute.py.  ``wait`` is traceroute(8)'s -w
    MAX,HERE,NEAR (see handrolled/tracer_core.py).  ``on_hop`` is called with each Hop, in TTL
    order, as soon as all its probes are done.  Timeouts and ICMP errors are outcomes.
``get_route(hostname) -> list[list[str]]``
    The seed's rows: ``['1', '12ms', '198.51.100.1', 'r1.lab.test']``, ``'hostname not
    returnable'`` without reverse DNS, ``['3', '*', 'Request timed out']`` for a silent hop;
    the destination last.  One ICMP probe per hop, MAX wait 2 s (the seed's TIMEOUT).
``build_packet(ident=None, seq=1, payload=None) -> bytes``: the seed's echo request.
``main(argv=None, runner=None) -> int``: the CLI (``python -m handrolled.traceroute HOST``).

What goes on the wire (so another implementation can reproduce it byte for byte)
---------------------------------------------------------------------------------
Probes are numbered k = 0, 1, ... in sending order: k = (ttl - first_ttl) * probes_per_hop + i.
- ICMP: echo request, identifier ``ident`` (None: pid & 0xffff), sequence k + 1, payload
  ``payload`` or ``DEFAULT_PAYLOAD`` (32 bytes, byte i = i, the project's default pattern).
- UDP: source port ``ident`` if given (else one the kernel picks, held for the trace),
  destination port ``port`` (default 33434) + k, payload as for ICMP, checksum always set.
- TCP: a 20-byte SYN header, no options: source port ``ident`` + k if ident is given (else one
  kernel-picked port per probe), destination port ``port`` (default 80), sequence number k + 1,
  acknowledgment 0, window ``TCP_WINDOW``, urgent 0; ``payload`` (default none) follows it.
The kernel builds the IP header (TTL / hop limit per probe via IP_TTL / IPV6_UNICAST_HOPS).

Matching: a reply belongs to a probe through what it quotes or echoes (ICMP ident/seq, UDP
ports, TCP ports + sequence; for a SYN-ACK/RST, ports + ack - 1), never by arrival order.
Outcomes: REPLY when the destination answers (echo reply; UDP port unreachable from the
destination; TCP SYN-ACK or RST), TIME_EXCEEDED, UNREACHABLE (a final error with an
annotation such as !X), TIMEOUT, CORRUPT (matched but the checksum or echoed payload is bad).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from handrolled import net
from handrolled import transport as tp
from handrolled.cli.common import Parser, jsonable
from handrolled.errors import MalformedPacket, ResolveError, UsageError, WiretwinError
from handrolled.icmp import (
    DestinationUnreachable,
    EchoMessage,
    Icmp6Type,
    IcmpError,
    IcmpType,
    TimeExceeded,
    Unreach6Code,
    UnreachCode,
    decode_icmp,
    decode_icmp6,
    default_payload,
    encode_echo_request,
)
from handrolled.ip import IpProto, decode_ipv4
from handrolled.net import resolve as resolve_host
from handrolled.results import Hop, Implementation, Method, Outcome, Probe, TraceResult
from handrolled.tracenet import Received, TraceSockets, source_address
from handrolled.tracer_core import TraceScheduler, parse_wait

__all__ = [
    "DEFAULT_PAYLOAD",
    "DEFAULT_TCP_PORT",
    "DEFAULT_UDP_PORT",
    "TCP_WINDOW",
    "ReverseResolver",
    "annotation",
    "build_packet",
    "format_header",
    "format_hop",
    "get_route",
    "main",
    "result_to_json",
    "run_trace",
]

log = logging.getLogger(__name__)

DEFAULT_PAYLOAD_SIZE = 32  # traceroute(8)'s default: 60-byte IPv4 packets for ICMP
DEFAULT_PAYLOAD = default_payload(DEFAULT_PAYLOAD_SIZE)
DEFAULT_UDP_PORT = 33434  # the classic "unlikely" base port
DEFAULT_TCP_PORT = 80
TCP_WINDOW = 64240  # what Linux advertises in a SYN on Ethernet (44 * 1460)
NO_NAME = "hostname not returnable"
SEED_TIMEOUT = 2.0

# ICMP destination-unreachable codes -> traceroute(8)'s annotations (RFC 792, RFC 1812 §5.2.7.1)
_UNREACH4 = {
    0: "!N",
    1: "!H",
    2: "!P",
    3: "",  # port unreachable: the destination itself answered
    4: "!F",
    5: "!S",
    6: "!N",
    7: "!H",
    9: "!X",
    10: "!X",
    11: "!N",
    12: "!H",
    13: "!X",
    14: "!V",
    15: "!C",
}
# ICMPv6 destination-unreachable codes (RFC 4443 §3.1)
_UNREACH6 = {0: "!N", 1: "!X", 2: "!H", 3: "!H", 4: ""}


def annotation(icmp_type: int | None, code: int | None, v6: bool) -> str:
    """traceroute(8)'s mark for an ICMP error: ``!H !N !P !X ...`` or ``!<code>``; "" if none."""
    if icmp_type is None or code is None:
        return ""
    if icmp_type != (Icmp6Type.DEST_UNREACHABLE if v6 else IcmpType.DEST_UNREACHABLE):
        return ""
    marks = _UNREACH6 if v6 else _UNREACH4
    return marks.get(code, f"!<{code}>")


def build_packet(ident: int | None = None, seq: int = 1, payload: bytes | None = None) -> bytes:
    """The seed's ``build_packet()``: an ICMPv4 echo request with a valid checksum."""
    ident = os.getpid() & 0xFFFF if ident is None else ident
    return encode_echo_request(ident, seq, DEFAULT_PAYLOAD if payload is None else payload)


# -- reverse DNS -------------------------------------------------------------------------------


class ReverseResolver:
    """``net.reverse_name`` (gethostbyaddr) per distinct address, cached, in a few daemon threads.

    ``request`` starts a lookup early (when a reply arrives); ``name`` waits for it at most
    ``per_name`` seconds after it was requested and never more than ``budget`` seconds in
    total over the resolver's life, so a dead resolver costs a bounded delay.
    """

    def __init__(
        self,
        *,
        per_name: float = 1.0,
        budget: float = 3.0,
        workers: int = 4,
        lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.per_name = per_name
        self.budget = budget
        self._lookup = lookup or net.reverse_name
        self._jobs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._results: dict[str, str | None] = {}
        self._events: dict[str, threading.Event] = {}
        self._requested_at: dict[str, float] = {}
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._waited = 0.0

    def request(self, addr: str) -> None:
        with self._lock:
            if addr in self._events:
                return
            self._events[addr] = threading.Event()
            self._requested_at[addr] = time.monotonic()
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, daemon=True, name="wiretwin-rdns")
                self._threads.append(thread)
                thread.start()
        self._jobs.put(addr)

    def _work(self) -> None:
        while True:
            addr = self._jobs.get()
            try:
                name = self._lookup(addr)
            except Exception as exc:  # a lookup failure is "no name", never a crash
                log.debug("reverse lookup of %s failed: %s", addr, exc)
                name = None
            with self._lock:
                self._results[addr] = name
            self._events[addr].set()

    def name(self, addr: str) -> str | None:
        """The name of ``addr``, or None when it has none or did not answer in time."""
        self.request(addr)
        event = self._events[addr]
        if not event.is_set():
            left = self._requested_at[addr] + self.per_name - time.monotonic()
            left = min(left, self.budget - self._waited)
            if left > 0:
                started = time.monotonic()
                event.wait(left)
                self._waited += time.monotonic() - started
        with self._lock:
            return self._results.get(addr)


# -- the tracer --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Sent:
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


@dataclass(frozen=True, slots=True)
class _Match:
    k: int
    outcome: Outcome
    final: bool
    icmp_type: int | None
    icmp_code: int | None
    reply_ttl: int | None
    note: str = ""


class Tracer:
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
        family: int,
        ident: int | None,
        port: int,
        payload: bytes,
        resolver: ReverseResolver | None,
        clock: Callable[[], float] = time.monotonic,
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
        self.sent: dict[int, _Sent] = {}
        self._keys: dict[tuple, int] = {}
        if method is Method.ICMP:
            self.ident = (os.getpid() & 0xFFFF) if ident is None else ident
        elif method is Method.UDP:
            # hold the source port for the trace (``sockets`` None: pure use, e.g. in tests)
            self.ident = ident if sockets is None else sockets.reserve_udp_port(ident)
            if self.ident is None:
                raise UsageError("a UDP trace without sockets needs an explicit ident (port)")
        else:
            self.ident = ident if ident is not None else 0  # per-probe ports, see _build

    # -- probe construction -------------------------------------------------------------------

    def _build(self, k: int, ttl: int) -> _Sent:
        seq = (k + 1) & 0xFFFF
        if self.method is Method.ICMP:
            data = encode_echo_request(
                self.ident, seq, self.payload, v6=self.v6, src=self.src, dst=self.dst
            )
            self._keys[("icmp", self.ident, seq)] = k
            return _Sent(k, ttl, data, 0, self.ident, seq)
        if self.method is Method.UDP:
            dst_port = (self.port + k) & 0xFFFF
            datagram = tp.UdpDatagram(self.ident, dst_port, self.payload)
            data = tp.encode_udp(datagram, src=self.src, dst=self.dst)
            self._keys[("udp", self.ident, dst_port)] = k
            return _Sent(k, ttl, data, 0, self.ident, seq, self.ident, dst_port)
        if self.sockets is not None and not self.ident:
            src_port = self.sockets.reserve_tcp_port(None)
        else:
            src_port = (self.ident + k) & 0xFFFF
        tcp_seq = k + 1
        segment = tp.TcpSegment(
            src_port, self.port, seq=tcp_seq, flags=tp.TcpFlags.SYN, window=TCP_WINDOW
        )
        segment = dataclasses.replace(segment, payload=self.payload)
        data = tp.encode_tcp(segment, src=self.src, dst=self.dst)
        self._keys[("tcp", src_port, self.port, tcp_seq)] = k
        return _Sent(k, ttl, data, 0, src_port, tcp_seq, src_port, self.port)

    # -- reply matching -----------------------------------------------------------------------

    def _match(self, rec: Received) -> _Match | None:
        """Which probe ``rec`` answers, and how; None for anything that is not ours."""
        try:
            if rec.kind == "tcp":
                return self._match_tcp(rec)
            return self._match_icmp(rec)
        except MalformedPacket as exc:
            log.debug("ignoring malformed packet from %s: %s", rec.src, exc)
            return None

    def _match_icmp(self, rec: Received) -> _Match | None:
        reply_ttl = rec.hop_limit
        if self.v6:
            msg = decode_icmp6(rec.data, src=rec.src, dst=self.src)
        else:
            header, body = decode_ipv4(rec.data)
            reply_ttl = header.ttl
            msg = decode_icmp(body)
        if isinstance(msg, EchoMessage):
            if not msg.is_reply or self.method is not Method.ICMP:
                return None
            k = self._keys.get(("icmp", msg.ident, msg.seq))
            if k is None or rec.src != self.dst:
                return None
            note = ""
            if msg.checksum_ok is False:
                note = "bad ICMP checksum"
            elif msg.payload != self.payload:
                note = "echoed payload differs"
            outcome = Outcome.CORRUPT if note else Outcome.REPLY
            return _Match(k, outcome, True, msg.icmp_type, msg.code, reply_ttl, note)
        if not isinstance(msg, (TimeExceeded, DestinationUnreachable)):
            return None
        k = self._quoted_key(msg)
        if k is None:
            return None
        if isinstance(msg, TimeExceeded):
            return _Match(k, Outcome.TIME_EXCEEDED, False, msg.icmp_type, msg.code, reply_ttl)
        port_unreach = msg.code == (Unreach6Code.PORT if self.v6 else UnreachCode.PORT)
        if port_unreach and rec.src == self.dst and self.method is Method.UDP:
            outcome = Outcome.REPLY  # the destination's answer to a UDP probe
        else:
            outcome = Outcome.UNREACHABLE
        return _Match(k, outcome, True, msg.icmp_type, msg.code, reply_ttl)

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
            return self._keys.get(("udp", *quoted.ports))
        if quoted.protocol != IpProto.TCP:
            return None
        head = tp.decode_tcp_quoted(quoted.data)
        return self._keys.get(("tcp", head.src_port, head.dst_port, head.seq))

    def _match_tcp(self, rec: Received) -> _Match | None:
        if rec.src != self.dst:
            return None
        reply_ttl = rec.hop_limit
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
        ok = tp.transport_checksum_ok(rec.src, self.src, IpProto.TCP, data)
        note = "" if ok else "TCP checksum does not verify (checksum offload?)"
        return _Match(k, Outcome.REPLY, True, None, None, reply_ttl, note)

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
        hard_stop = started + len(sched.slots) * max(wait_max, 0.01) + 5.0
        while not sched.finished:
            for k in sched.to_send():
                ttl = sched.ttl_of(k)
                sent = self._build(k, ttl)
                self.sent[k] = sent
                try:
                    sent.send_ns = sockets.send(sent.data, ttl)
                except OSError as exc:  # refused locally (EHOSTUNREACH, EACCES...): lost, say why
                    log.debug("sendto failed with TTL %d: %s", ttl, exc)
                    sent.send_ns = time.time_ns()
                    sched.mark_lost(k, self.clock())
                    note = f"sendto: {exc.strerror or exc}"
                    sent.probe = self._probe(sent, Outcome.TIMEOUT, note=note)
                    continue
                sched.mark_sent(k, self.clock())
            deadline = sched.next_deadline()
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

    def _handle(self, rec: Received) -> None:
        match = self._match(rec)
        if match is None:
            return
        sent = self.sent.get(match.k)
        if sent is None:
            return
        rtt_ns = max(rec.recv_ns - sent.send_ns, 0)
        final = match.final and match.outcome is not Outcome.CORRUPT
        if not self.sched.on_reply(match.k, rtt=rtt_ns / 1e9, final=final):
            log.debug("late or duplicate reply for probe %d from %s", match.k, rec.src)
            return
        if self.resolver is not None:
            self.resolver.request(rec.src)
        sent.probe = self._probe(
            sent,
            match.outcome,
            recv_ns=rec.recv_ns,
            rtt_ms=rtt_ns / 1e6,
            reply_from=rec.src,
            reply_ttl=match.reply_ttl,
            icmp_type=match.icmp_type,
            icmp_code=match.icmp_code,
            received=rec.data,
            kernel_timestamp=rec.kernel_timestamp,
            note=match.note,
        )

    def _settle_timeout(self, k: int) -> None:
        sent = self.sent[k]
        sent.probe = self._probe(sent, Outcome.TIMEOUT)

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
            **reply,  # type: ignore[arg-type]
        )

    def _hop(self, ttl: int) -> Hop:
        q = self.sched.probes_per_hop
        base = (ttl - self.sched.first_ttl) * q
        probes = []
        for k in range(base, base + q):
            probe = self.sent[k].probe
            assert probe is not None  # the scheduler released the hop: every probe is settled
            if self.resolver is not None and probe.reply_from is not None:
                name = self.resolver.name(probe.reply_from)
                probe = dataclasses.replace(probe, reply_name=name)
            probes.append(probe)
        return Hop(ttl=ttl, probes=tuple(probes))


def run_trace(
    host: str,
    *,
    method: Method = Method.ICMP,
    port: int | None = None,
    probes_per_hop: int = 3,
    first_ttl: int = 1,
    max_hops: int = 30,
    sim_queries: int = 16,
    wait: tuple[float, float, float] = (5.0, 3.0, 10.0),
    family: int | None = None,
    resolve: bool = True,
    ident: int | None = None,
    payload: bytes | None = None,
    on_hop: Callable[[Hop], None] | None = None,
) -> TraceResult:
    """Trace the route to ``host``; see the module docstring for the wire format."""
    method = Method(method)
    if port is None:
        port = DEFAULT_TCP_PORT if method is Method.TCP else DEFAULT_UDP_PORT
    if not 0 <= port <= 0xFFFF:
        raise UsageError(f"port {port} is outside 0..65535")
    if ident is not None and not 0 <= ident <= 0xFFFF:
        raise UsageError(f"ident {ident} is outside 0..65535")
    if payload is None:
        payload = b"" if method is Method.TCP else DEFAULT_PAYLOAD
    if len(payload) > 65000:
        raise UsageError(f"payload of {len(payload)} bytes is too large")
    scheduler = TraceScheduler(
        first_ttl=first_ttl,
        max_hops=max_hops,
        probes_per_hop=probes_per_hop,
        sim_queries=sim_queries,
        wait=tuple(wait),  # type: ignore[arg-type]
    )
    address, fam = resolve_host(host, family)
    src = source_address(address, fam)
    started_ns = time.time_ns()
    t0 = time.monotonic()
    resolver = ReverseResolver() if resolve else None
    with TraceSockets(method, fam, address, src) as sockets:
        tracer = Tracer(
            sockets,
            scheduler,
            method=method,
            dst=address,
            src=src,
            family=fam,
            ident=ident,
            port=port,
            payload=payload,
            resolver=resolver,
        )
        hops = tracer.run(on_hop)
    reached = any(p.outcome is Outcome.REPLY for hop in hops for p in hop.probes)
    return TraceResult(
        target=host,
        address=address,
        family=fam,
        method=method,
        hops=tuple(hops),
        reached=reached,
        implementation=Implementation.HANDROLLED,
        port=None if method is Method.ICMP else port,
        started_ns=started_ns,
        elapsed_ms=(time.monotonic() - t0) * 1000.0,
    )


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
    result = run_trace(
        address, probes_per_hop=1, max_hops=30, wait=(SEED_TIMEOUT, 3.0, 10.0), family=family
    )
    return route_rows(result)


# -- output ------------------------------------------------------------------------------------


def packet_length(method: Method, family: int, payload_len: int) -> int:
    """The IP datagram length traceroute(8) prints in its header line."""
    ip = 40 if family == 6 else 20
    return ip + (20 if method is Method.TCP else 8) + payload_len


def format_header(target: str, address: str, max_hops: int, length: int) -> str:
    return f"traceroute to {target} ({address}), {max_hops} hops max, {length} byte packets"


def format_hop(hop: Hop, *, numeric: bool = False) -> str:
    """One line in traceroute(8)'s shape: `` 3  name (addr)  1.234 ms  1.301 ms !X``."""
    parts = [f"{hop.ttl:2d} "]
    previous: str | None = None
    for probe in hop.probes:
        if probe.reply_from is None or probe.rtt_ms is None:
            parts.append(" *")
            continue
        if probe.reply_from != previous:
            if numeric:
                parts.append(f" {probe.reply_from}")
            else:
                parts.append(f" {probe.reply_name or probe.reply_from} ({probe.reply_from})")
            previous = probe.reply_from
        parts.append(f"  {probe.rtt_ms:.3f} ms")
        mark = annotation(probe.icmp_type, probe.icmp_code, hop_is_v6(probe))
        if probe.outcome is Outcome.UNREACHABLE and mark:
            parts.append(f" {mark}")
    return "".join(parts)


def hop_is_v6(probe: Probe) -> bool:
    return probe.reply_from is not None and ":" in probe.reply_from


def result_to_json(result: TraceResult) -> dict:
    """The whole TraceResult as JSON-ready data (bytes as hex, enums by value)."""
    data = jsonable(result)
    assert isinstance(data, dict)
    return data


# -- CLI ---------------------------------------------------------------------------------------

EXIT_REACHED = 0
EXIT_NOT_REACHED = 1
EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="traceroute", description="Hand-rolled traceroute (wiretwin).")
    p.add_argument("host")
    how = p.add_mutually_exclusive_group()
    how.add_argument("-I", "--icmp", dest="method", action="store_const", const=Method.ICMP)
    how.add_argument("-U", "--udp", dest="method", action="store_const", const=Method.UDP)
    how.add_argument("-T", "--tcp", dest="method", action="store_const", const=Method.TCP)
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4)
    fam.add_argument("-6", dest="family", action="store_const", const=6)
    p.add_argument("-p", "--port", type=int, help="UDP base port (33434) or TCP port (80)")
    p.add_argument("-q", "--queries", type=int, default=3, help="probes per hop (3)")
    p.add_argument("-f", "--first", type=int, default=1, help="first TTL (1)")
    p.add_argument("-m", "--max-hops", type=int, default=30, help="max TTL (30)")
    p.add_argument("-N", "--sim-queries", type=int, default=16, help="probes in flight (16)")
    p.add_argument("-w", "--wait", default="5,3,10", help="MAX[,HERE,NEAR] (5,3,10)")
    p.add_argument("-n", dest="numeric", action="store_true", help="no reverse DNS")
    p.add_argument("--ident", type=int, help="ICMP identifier / source port")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(method=Method.ICMP)
    return p


def main(argv: list[str] | None = None, runner: Callable[..., TraceResult] | None = None) -> int:
    """``traceroute [-I|-U|-T] [-4|-6] [-n] [-q N] [-f N] [-m N] [-N N] [-w W] [-p P] HOST``.

    Exit status: 0 the destination answered, 1 it did not, 2 an error (one line on stderr).
    """
    runner = runner or run_trace
    out = sys.stdout
    try:
        args = _parser().parse_args(argv)
        wait = parse_wait(args.wait)
        TraceScheduler(  # validate every option before printing anything
            first_ttl=args.first,
            max_hops=args.max_hops,
            probes_per_hop=args.queries,
            sim_queries=args.sim_queries,
            wait=wait,
        )
        host = args.host
        if args.json:
            on_hop = None
        else:
            address, fam = resolve_host(args.host, args.family)
            payload_len = 0 if args.method is Method.TCP else DEFAULT_PAYLOAD_SIZE
            length = packet_length(args.method, fam, payload_len)
            print(format_header(args.host, address, args.max_hops, length), file=out, flush=True)
            host, args.family = address, fam  # trace the address we announced

            def on_hop(hop: Hop) -> None:
                print(format_hop(hop, numeric=args.numeric), file=out, flush=True)

        result = runner(
            host,
            method=args.method,
            port=args.port,
            probes_per_hop=args.queries,
            first_ttl=args.first,
            max_hops=args.max_hops,
            sim_queries=args.sim_queries,
            wait=wait,
            family=args.family,
            resolve=not args.numeric,
            ident=args.ident,
            on_hop=on_hop,
        )
    except (WiretwinError, OSError) as exc:
        print(f"traceroute: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    if args.json:
        json.dump(result_to_json(result), out, indent=2)
        out.write("\n")
    return EXIT_REACHED if result.reached else EXIT_NOT_REACHED


def _run_module(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(list(argv))
    except BrokenPipeError:  # `... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(_run_module(sys.argv[1:]))
