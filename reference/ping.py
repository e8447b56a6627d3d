"""Reference ping built with scapy: ``IP()/ICMP()/Raw()`` and ``IPv6()/ICMPv6EchoRequest()``.

Same request (``handrolled.requests.PingRequest``) and result type as
``handrolled.ping.run_ping``; nothing of handrolled's codec is used.  Replies are matched the
way scapy's ``sndrcv`` matches them: a ``hashret()`` lookup, confirmed by
``reply.answers(request)``.  RTT = the capture timestamp the kernel put on the
reply (``pkt.time``) minus scapy's ``sent_time``, taken right before ``sendto``.

The IP header is built here, not by the kernel, so each field that scapy would default
differently from Linux is set on purpose (see :func:`reference.common.ip_header`).  Runs inside
a lab namespace when started there (``ip netns exec``; see reference.common for the routing
table).
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from handrolled.errors import UsageError
from handrolled.requests import PingRequest
from handrolled.results import Implementation, Outcome, PingResult, PingSummary, Probe
from reference.common import (
    ICMP_ERRORS,
    default_payload,
    icmp6_layer,
    ip_header,
    open_l3,
    reply_fields,
    resolve,
    scapy_conf,
    to_ns,
)

log = logging.getLogger(__name__)


def kernel_default_ttl(version: int) -> int:
    """The TTL / hop limit the kernel of this namespace would put on our probe.

    IPv4: net.ipv4.ip_default_ttl (per namespace).  IPv6: net.ipv6.conf.all.hop_limit (the
    kernel actually uses the output device's value; they agree unless someone changed one).
    """
    path = (
        "/proc/sys/net/ipv4/ip_default_ttl"
        if version == 4
        else "/proc/sys/net/ipv6/conf/all/hop_limit"
    )
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return 64


_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)  # asm-generic/socket.h
MIN_INTERVAL = 0.010  # iputils' MININTERVAL: -i 0 sends again after 10 ms while one is out
TIMEVAL = struct.Struct("@ll")  # iputils' timestamp: struct timeval (16 octets on 64-bit Linux)


def fill_payload(size: int, pattern: bytes | None) -> bytes:
    """iputils' setup()/fill(): byte i = i, or -p's pattern repeated from the first octet."""
    if pattern:
        return bytes(pattern[i % len(pattern)] for i in range(size))
    return default_payload(size)


def timestamped(fill: bytes, wall_ns: int) -> bytes:
    """iputils' pinger(): the send time as a struct timeval over the first 16 octets."""
    if len(fill) < TIMEVAL.size:
        return fill
    return TIMEVAL.pack(wall_ns // 1_000_000_000, wall_ns % 1_000_000_000 // 1000) + fill[16:]


def _errno_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_source(version: int, source: str) -> None:
    """Refuse a source address this host does not have, as bind(2) does for the hand-rolled
    side (IP_HDRINCL would let scapy send from any address)."""
    af = socket.AF_INET6 if version == 6 else socket.AF_INET
    with socket.socket(af, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((source, 0))
        except OSError as exc:
            raise UsageError(f"bind: {_errno_text(exc)}") from exc


def device_source(version: int, dst: str, device: str) -> str:
    """The address the kernel sends from to ``dst`` through ``device`` (UDP connect probe)."""
    af = socket.AF_INET6 if version == 6 else socket.AF_INET
    with socket.socket(af, socket.SOCK_DGRAM) as probe:
        bind_to_device(probe, device)
        try:
            probe.connect((dst, 1025))
        except OSError as exc:
            raise UsageError(f"connect: {_errno_text(exc)}") from exc
        return probe.getsockname()[0].split("%")[0]


def bind_to_device(sock: socket.socket, device: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, device.encode() + b"\0")
    except OSError as exc:
        raise UsageError(f"SO_BINDTODEVICE {device}: {_errno_text(exc)}") from exc


def build_request(
    version: int,
    dst: str,
    ident: int,
    seq: int,
    payload: bytes,
    ttl: int,
    *,
    tos: int | None = None,
    src: str | None = None,
    pmtu: str | None = None,
) -> Any:
    """One echo request as a scapy packet, every header field chosen deliberately.

    IP header: :func:`reference.common.ip_header` with ID ``seq`` (the reasons for each field
    are there); ``ttl`` is the caller's, else the namespace's ip_default_ttl (see
    :func:`kernel_default_ttl`).  ICMP (RFC 792): type 8, code 0, the caller's identifier and
    sequence, the payload as given.  The ICMPv6 checksum covers the pseudo-header (RFC 4443
    2.3): scapy computes it from the source address its routing table picks.
    """
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest
    from scapy.packet import Raw

    ip = ip_header(version, dst, ttl, seq)
    if version == 4 and pmtu == "dont":
        ip.flags = 0  # -M dont: DF clear (RFC 791 §3.1); do / want: DF, as ip_header sets it
    if tos is not None:  # -Q: RFC 791 §3.1 type of service / RFC 8200 §7 traffic class
        if version == 4:
            ip.tos = tos
        else:
            ip.tc = tos
    if src is not None:
        ip.src = src
    if version == 4:
        pkt = ip / ICMP(type=8, code=0, id=ident, seq=seq & 0xFFFF)
        return pkt / Raw(load=payload) if payload else pkt
    return ip / ICMPv6EchoRequest(id=ident, seq=seq & 0xFFFF, data=payload)


def icmp_checksum_ok(reply: Any) -> bool:
    """Recompute the reply's ICMP / ICMPv6 checksum with scapy and compare."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import IPv6

    if IP in reply and ICMP in reply:
        layer = reply[ICMP].copy()
        got = layer.chksum
        layer.chksum = None
        return ICMP(bytes(layer)).chksum == got
    if IPv6 in reply:
        ip6 = reply[IPv6].copy()
        icmp = ip6.payload
        got = getattr(icmp, "cksum", None)
        icmp.cksum = None
        return IPv6(bytes(ip6)).payload.cksum == got
    return True


@dataclass
class _Pending:
    seq: int
    request: Any
    sent: bytes
    sent_time: float  # wall clock, as the kernel's receive stamp (``reply.time``)
    expires: float  # sent_time + timeout: a reply stamped later is late
    ttl: int
    payload: bytes = b""
    done: Probe | None = None
    duplicates: list[Probe] = field(default_factory=list)


def _classify(version: int, reply: Any) -> tuple[Outcome, int | None, int | None]:
    """Outcome, ICMP type and code of a reply that answers one of our requests."""
    from scapy.layers.inet import ICMP

    if version == 4:
        icmp = reply[ICMP]
        return ICMP_ERRORS[4].get(icmp.type, Outcome.REPLY), icmp.type, icmp.code
    icmp6 = icmp6_layer(reply)
    icmp_type = icmp6.type if icmp6 is not None else None
    code = icmp6.code if icmp6 is not None else None
    if icmp_type == _PACKET_TOO_BIG:  # RFC 4443 §3.2: an error, as iputils counts it
        return Outcome.UNREACHABLE, icmp_type, code
    return ICMP_ERRORS[6].get(icmp_type, Outcome.REPLY), icmp_type, code


_PACKET_TOO_BIG = 2  # ICMPv6 type (RFC 4443 §3.2)


def too_big_mtu(version: int, reply: Any) -> int | None:
    """The MTU a frag-needed (RFC 1191 §4: ``nexthopmtu``) or Packet Too Big (RFC 4443 §3.2)
    names, read by scapy's dissector; None for any other reply."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6PacketTooBig

    if version == 4:
        if ICMP in reply and reply[ICMP].type == 3 and reply[ICMP].code == 4:
            return int(reply[ICMP].nexthopmtu)
        return None
    return int(reply[ICMPv6PacketTooBig].mtu) if ICMPv6PacketTooBig in reply else None


def _corrupt_reason(version: int, reply: Any, payload: bytes) -> str:
    """Why a matched echo reply is not a faithful echo ('' if it is)."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoReply

    if version == 4 and ICMP in reply and reply[ICMP].type == 0:
        echoed = bytes(reply[ICMP].payload)
    elif version == 6 and ICMPv6EchoReply in reply:
        echoed = bytes(reply[ICMPv6EchoReply].data)
    else:
        return ""
    if not icmp_checksum_ok(reply):
        return "bad ICMP checksum"
    if echoed != payload:
        return "echoed payload differs from the one sent"
    return ""


def _echo_key(version: int, reply: Any, ident: int) -> int | None:
    """Sequence number of an echo reply carrying our identifier (for CORRUPT detection only)."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoReply

    if version == 4 and ICMP in reply and reply[ICMP].type == 0 and reply[ICMP].id == ident:
        return reply[ICMP].seq
    if version == 6 and ICMPv6EchoReply in reply and reply[ICMPv6EchoReply].id == ident:
        return reply[ICMPv6EchoReply].seq
    return None


def summarize(probes: tuple[Probe, ...] | list[Probe]) -> PingSummary:
    """iputils-style statistics from raw probes (DUPLICATE entries are not transmissions)."""
    transmitted = sum(1 for p in probes if p.outcome is not Outcome.DUPLICATE)
    rtts = [p.rtt_ms for p in probes if p.outcome is Outcome.REPLY and p.rtt_ms is not None]
    duplicates = sum(1 for p in probes if p.outcome is Outcome.DUPLICATE)
    errors = sum(
        1
        for p in probes
        if p.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE, Outcome.CORRUPT)
    )
    received = len(rtts)
    loss = 100.0 * (transmitted - received) / transmitted if transmitted else 100.0
    if not rtts:
        return PingSummary(transmitted, received, duplicates, errors, loss)
    avg = statistics.fmean(rtts)
    return PingSummary(
        transmitted=transmitted,
        received=received,
        duplicates=duplicates,
        errors=errors,
        loss_percent=loss,
        min_ms=min(rtts),
        avg_ms=avg,
        max_ms=max(rtts),
        stdev_ms=statistics.stdev(rtts) if len(rtts) > 1 else 0.0,
        mdev_ms=statistics.pstdev(rtts),
    )


def linger_exit_after(replies: int, longest_rtt: float, interval: float, linger: float) -> float:
    """How long iputils' ping -c N (no -w) still listens after sending its last probe, in
    seconds: twice the longest round trip seen, but no less than the interval, once any echo
    reply came; with none, the -W linger time.  0 means no limit (iputils arms no timer then).

    ping_common.c __schedule_exit() works in whole milliseconds for -i and -W and in whole
    microseconds for the round trip, so the inputs are cut to those units first.
    """
    if replies:
        rtt_us = round(longest_rtt * 1_000_000)
        return max(2 * rtt_us, 1000 * int(interval * 1000)) / 1_000_000
    return int(linger * 1000) / 1000


def run_ping(
    request: PingRequest,
    *,
    on_probe: Callable[[Probe], None] | None = None,
    on_send: Callable[[int], None] | None = None,
) -> PingResult:
    """Ping as ``request`` says, with scapy; timeouts and ICMP errors are outcomes.

    A probe is sent every ``interval`` s (0: as soon as none is out, else after 10 ms); each
    waits up to ``timeout`` s for its reply.  Without a deadline the run ends when ``count``
    probes (None: no end) are answered or expired; with one, when ``count`` answers (replies
    and ICMP errors) are in, at the first ICMP error, or when ``deadline`` s have passed, as
    iputils' main loop.  The default payload carries each send time as a struct timeval in
    its first 16 octets.  A second reply to an answered probe is a DUPLICATE probe.  The
    request was validated when it was built; what is left here needs the resolved family.
    ``on_send(seq)`` is called as each probe is about to go.

    With ``request.linger`` (iputils' -W) no probe expires on its own and a late reply still
    counts; a ``count`` run without a deadline ends once every probe is answered or at the
    time :func:`linger_exit_after` gives, counted from its last send.
    """
    if request.socket_kind == "dgram":
        # Not a bad request but one this side cannot carry out: scapy builds the IP header.
        raise UsageError("socket kind 'dgram': the scapy reference only sends through raw sockets")
    host, count, interval, timeout = request.host, request.count, request.interval, request.timeout
    deadline, seq_start, linger = request.deadline, request.seq_start, request.linger
    if linger is not None:
        timeout = math.inf  # -W: a reply counts whenever it comes before the run ends
    address, version = resolve(host, request.family)
    request.check_fits(version)
    fill = fill_payload(request.payload_size, request.pattern)
    payload = fill if request.payload is None else request.payload
    stamp = request.timestamped
    ident = (os.getpid() & 0xFFFF) if request.ident is None else request.ident
    hop_limit = request.ttl if request.ttl is not None else kernel_default_ttl(version)
    source = request.source
    if source is not None:
        check_source(version, source)
    elif request.interface is not None:
        source = device_source(version, address, request.interface)

    scapy_conf()
    from scapy.compat import raw

    sock = open_l3(version)
    started_ns = time.time_ns()
    start = time.monotonic()
    end_by = start + deadline if deadline is not None else math.inf
    by_time = deadline is not None
    pending: dict[int, _Pending] = {}  # by seq, in send order
    history: list[_Pending] = []  # every probe sent (a sequence number may come round again)
    by_hash: dict[bytes, list[_Pending]] = {}
    finished: list[Probe] = []
    tally = {"answers": 0, "errors": 0}
    # -W's end of run: only for a -c run without -w; armed (finite) once the last probe is out
    lingering = linger is not None and count is not None and not by_time
    exit_at = math.inf
    timed = request.payload_size >= TIMEVAL.size  # iputils times replies only then
    longest = [0.0]  # the longest RTT of an echo so far, seconds (duplicates too)

    def finish(item: _Pending, probe: Probe) -> None:
        if item.done is None:
            item.done = probe
            if probe.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE):
                tally["errors"] += 1
                tally["answers"] += 1
            elif probe.outcome is Outcome.REPLY or (
                probe.outcome is Outcome.CORRUPT and "checksum" not in probe.note
            ):
                tally["answers"] += 1  # iputils' nreceived counts a wrong payload, not a bad sum
        else:
            item.duplicates.append(probe)
        echo = probe.outcome in (Outcome.REPLY, Outcome.DUPLICATE) or (
            probe.outcome is Outcome.CORRUPT and "checksum" not in probe.note
        )
        if timed and echo and probe.rtt_ms is not None:
            longest[0] = max(longest[0], probe.rtt_ms / 1000)
        finished.append(probe)
        if on_probe is not None:
            on_probe(probe)

    def probe_for(item: _Pending, outcome: Outcome, reply: Any = None, note: str = "") -> Probe:
        if reply is None:
            return Probe(
                seq=item.seq, ident=ident, ttl=item.ttl, sent=item.sent,
                send_ns=to_ns(item.sent_time), outcome=outcome, note=note,
            )  # fmt: skip
        icmp_outcome, icmp_type, code = _classify(version, reply)
        return Probe(
            seq=item.seq,
            ident=ident,
            ttl=item.ttl,
            sent=item.sent,
            send_ns=to_ns(item.sent_time),
            outcome=outcome if outcome is not Outcome.REPLY else icmp_outcome,
            icmp_type=icmp_type,
            icmp_code=code,
            note=note,
            mtu=too_big_mtu(version, reply),
            **reply_fields(reply, version, item.sent_time),
        )

    def late(item: _Pending, reply: Any) -> bool:
        # Judged by the kernel's stamp, not by when we got round to reading the reply: a reply
        # queued behind other frames (the socket sees the whole namespace) or read after a CPU
        # pause still counts if it arrived in time.  Duplicates of an answer always count.
        if item.done is not None:
            return item.done.outcome is Outcome.TIMEOUT
        return float(reply.time) > item.expires

    def handle(reply: Any) -> None:
        if version == 6 and icmp6_layer(reply) is not None and not icmp_checksum_ok(reply):
            # The client's kernel discards an ICMPv6 message whose checksum fails (RFC 4443
            # §2.3; icmpv6_rcv): no socket of the host ever sees it, so neither do we.
            log.info("ICMPv6 message with a bad checksum from %s dropped", reply.src)
            return
        for item in by_hash.get(reply.hashret(), ()):
            if reply.answers(item.request):
                if late(item, reply):
                    log.info("late reply for seq %d ignored", item.seq)
                    return
                if item.done is not None:
                    finish(item, probe_for(item, Outcome.DUPLICATE, reply))
                    return
                reason = _corrupt_reason(version, reply, item.payload)
                outcome = Outcome.CORRUPT if reason else Outcome.REPLY
                finish(item, probe_for(item, outcome, reply, reason))
                return
        # scapy's answers() refuses an ICMPv6 echo reply whose data differs, and a corrupted
        # identifier/sequence hashes elsewhere: look for a damaged echo of ours by ident/seq.
        seq = _echo_key(version, reply, ident)
        item = pending.get(seq) if seq is not None else None
        if item is not None and item.done is None and reply.src == address:
            if late(item, reply):
                log.info("late reply for seq %d ignored", item.seq)
                return
            reason = _corrupt_reason(version, reply, item.payload) or "reply does not answer"
            finish(item, probe_for(item, Outcome.CORRUPT, reply, reason))

    try:
        if request.interface is not None:
            bind_to_device(sock.outs, request.interface)
        sent_count = 0
        next_send = start
        last_send = start
        while True:
            # 1. Drain what has arrived before judging any probe expired (its stamp decides).
            while select.select([sock], [], [], 0)[0]:
                reply = sock.recv()
                if reply is not None and request.user_latency:
                    reply.time = time.time()  # -U: the time read as the receive returned
                if reply is not None and getattr(reply, "version", None) == version:
                    handle(reply)
            now = time.monotonic()
            if lingering and exit_at == math.inf and sent_count >= (count or 0):
                replies = tally["answers"] - tally["errors"]
                wait = linger_exit_after(replies, longest[0], interval, linger or 0.0)
                if wait > 0:  # nothing armed at 0: worked out again on the next pass
                    exit_at = now + wait
            if now >= min(end_by, exit_at) or (by_time and tally["errors"]):
                break
            if count is not None and tally["answers"] >= count:
                break
            more = count is None or by_time or sent_count < count
            in_flight = any(item.done is None for item in pending.values())
            if more and interval == 0:
                next_send = last_send + (MIN_INTERVAL if in_flight and sent_count else 0.0)
            # 2. Send when the next probe is due.
            if more and now >= next_send:
                seq = (seq_start + sent_count) & 0xFFFF
                if on_send is not None:
                    on_send(seq)
                data = timestamped(payload, time.time_ns()) if stamp else payload
                packet = build_request(
                    version, address, ident, seq, data, hop_limit, tos=request.tos, src=source,
                    pmtu=request.pmtu_discovery,
                )  # fmt: skip
                wire = raw(packet)
                sock.send(packet)  # sets packet.sent_time = time.time() right before sendto
                item = _Pending(
                    seq=seq,
                    request=packet,
                    sent=wire,
                    sent_time=packet.sent_time,
                    expires=packet.sent_time + timeout,
                    ttl=hop_limit,
                    payload=data,
                )
                old = pending.get(seq)
                if old is not None and old.done is None:
                    finish(old, probe_for(old, Outcome.TIMEOUT, note="sequence number reused"))
                pending[seq] = item
                history.append(item)
                by_hash.setdefault(packet.hashret(), []).append(item)
                sent_count += 1
                last_send = now
                next_send += interval
                continue
            # 3. Expire what is still unanswered (every reply stamped in time was read above).
            wall = time.time()
            for item in pending.values():
                if item.done is None and item.expires <= wall:
                    finish(item, probe_for(item, Outcome.TIMEOUT))
            if by_time and tally["errors"]:
                break
            if not more and all(item.done is not None for item in pending.values()):
                break
            # 4. Sleep until a reply, the next send, the earliest expiry or the deadline.
            waits = [end_by - now, exit_at - now]
            waits += [i.expires - wall for i in pending.values() if i.done is None]
            if more:
                waits.append(next_send - now)
            pause = min(waits)
            if pause == math.inf:  # nothing timed (-W 0, no answer yet): only an answer ends it
                pause = 1.0
            select.select([sock], [], [], max(0.0, pause))
    except KeyboardInterrupt as exc:
        exc.partial_result = _result(  # type: ignore[attr-defined]
            request, address, version, ident, payload, history, finish, probe_for, started_ns,
            start,
        )  # fmt: skip
        raise
    finally:
        sock.close()
    return _result(
        request, address, version, ident, payload, history, finish, probe_for, started_ns, start
    )


def _result(
    request: PingRequest,
    address: str,
    version: int,
    ident: int,
    payload: bytes,
    history: list[_Pending],
    finish: Callable[[_Pending, Probe], None],
    probe_for: Callable[..., Probe],
    started_ns: int,
    start: float,
) -> PingResult:
    for item in history:
        if item.done is None:  # cut short by the deadline, the count or Ctrl-C
            finish(item, probe_for(item, Outcome.TIMEOUT, note="deadline"))
    probes = tuple(p for item in history for p in (item.done, *item.duplicates) if p)
    return PingResult(
        target=request.host,
        address=address,
        family=version,
        ident=ident,
        payload=payload,
        probes=probes,
        summary=summarize(probes),
        implementation=Implementation.REFERENCE,
        socket_kind="raw",
        started_ns=started_ns,
        elapsed_ms=(time.monotonic() - start) * 1000.0,
    )
