"""Hand-rolled ping: the Pinger engine, ``run_ping`` and the seed's ``ping()``.

API
---
``run_ping(request, *, on_probe=None, sock=None, on_send=None) -> PingResult``
    Ping as the ``requests.PingRequest`` says (validated when it was built), as iputils'
    main loop does: ``count`` echo requests ``interval`` s apart (None: until the deadline or
    Ctrl-C), each waited for ``timeout`` s; with a ``deadline``, ``count`` answers end the run
    early and so does the first ICMP error.  The request's ``linger`` (seconds, 0 for no
    limit) waits as iputils' -W instead of ``timeout``: no probe expires on its own, an answer
    counts whenever it comes before the run ends, and a ``count`` run without a deadline ends,
    once its last probe is sent, after twice the longest RTT so far (at least ``interval``) if
    any reply came, else after ``linger`` (``exit_wait_us``).  ``interval`` 0: the next probe
    as soon as none is in flight, else after 10 ms.  No payload means iputils' default: the
    fill (byte i = i, or the request's pattern) with each probe's send time as a struct timeval
    over its first 16 octets (``stamp_payload``); an explicit payload is sent as given.  No
    ident means ``os.getpid() & 0xFFFF`` (a datagram socket binds to it as its local port, the
    identifier the kernel writes).  TOS, source address and device go to the socket
    (``net.open_ping_socket``), and so does -M (``pmtu_discovery``): a frag-needed or Packet
    Too Big settles its probe UNREACHABLE with the MTU it names in ``Probe.mtu``, a send the
    kernel refuses with EMSGSIZE (past the path MTU it learnt) too, its note
    ``LOCAL_EMSGSIZE`` and no ICMP type; ``user_latency`` times in user space.  ``on_send(seq)`` is
    called as each probe is about to go, ``on_probe`` with each Probe as it settles (reply,
    error, timeout, duplicate).  ``sock``: an ``net.IcmpSocket`` to use instead of opening
    one.  Raises ResolveError, UsageError (a payload too large for the resolved family, a
    device or source that cannot be bound), RawSocketPermissionError; timeouts and ICMP
    errors are outcomes.  On Ctrl-C the KeyboardInterrupt propagates carrying
    ``.partial_result`` (a PingResult so far).
``Pinger(sock, address, *, ident, payload, ttl, ...)``: the matching engine: ``send(seq)``,
    ``handle(received) -> list[Probe]``, ``expire(now_ns) -> list[Probe]``, ``next_deadline()``.
The statistics (``summarize``) are ``handrolled.ping_stats``.
The rules it applies (iputils' payload, how an error or reply settles a probe, the -c/-W end
of a run) are pure functions in ``handrolled.ping_rules``; ``default_fill``, ``stamp_payload``
and ``exit_wait_us`` are re-exported here.
``ping(host, timeout=1) -> list[str]``: the seed contract ([min, avg, max, stdev] as strings;
    four timestamped echo requests a second apart).

The command line (``python -m handrolled.ping HOST``) is ``handrolled.cli.ping``.

Replies are matched by source, identifier and sequence; a reply with a bad checksum or a
payload unlike the one that probe carried is CORRUPT (counted as an error, not as received); a
second reply to an answered probe is a DUPLICATE; ICMP errors quoting our probe are
TIME_EXCEEDED / UNREACHABLE.  A reply later than ``timeout`` leaves the probe TIMEOUT (with
``linger``, only one that comes after the run has ended).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import sys
from collections.abc import Callable

from handrolled import names, net, sockopts
from handrolled.errors import MalformedPacket, ResolveError, UsageError
from handrolled.icmp import (
    EchoMessage,
    IcmpError,
    decode_icmp,
    decode_icmp6,
    encode_echo_request,
)
from handrolled.ip import decode_ipv4
from handrolled.ping_rules import (
    ERRORS,
    MIN_INTERVAL_NS,
    NS_PER_S,
    answers,
    default_fill,
    error_outcome,
    exit_wait_us,
    payload_difference,
    stamp_payload,
    too_big_mtu,
)
from handrolled.ping_stats import summarize
from handrolled.record import Record, field, replace
from handrolled.requests import PING_TIMESTAMP_SIZE, PingRequest
from handrolled.results import Implementation, Outcome, PingResult, Probe

__all__ = [
    "SEED_NO_ANSWER",
    "Pinger",
    "default_fill",
    "exit_wait_us",
    "ping",
    "run_ping",
    "stamp_payload",
]

log = logging.getLogger(__name__)

SEED_NO_ANSWER = ["0", "0.0", "0", "0.0"]
LOCAL_EMSGSIZE = "local error: message too long"  # the note of a send refused with EMSGSIZE


class _Sent(Record, frozen=False):
    seq: int
    message: bytes
    send_ns: int
    deadline_ns: int | None  # monotonic; None: waits until the run ends
    payload: bytes = b""
    settled: Probe | None = None
    duplicates: list[Probe] = field(default_factory=list)


class Pinger:
    """Sends echo requests on one ICMP socket and matches what comes back to them.

    ``payload``: the bytes every probe carries, or with ``timestamped`` the fill whose first 16
    octets each send overwrites with its send time.  A reply must come from ``address`` and
    carry our identifier and a sequence number we sent; its payload must be the probe's.
    ``user_latency``: send and receive times read in user space around the system calls
    (iputils -U) instead of the kernel's stamps.  ``source``: our address, when bound to one
    (the ICMPv6 pseudo-header's source).
    """

    def __init__(
        self,
        sock: net.IcmpSocket,
        address: str,
        *,
        ident: int,
        payload: bytes,
        ttl: int,
        timeout: float | None = 1.0,
        clock: Callable[[], int] = net.monotonic_ns,
        timestamped: bool = False,
        user_latency: bool = False,
        source: str | None = None,
    ) -> None:
        self.sock = sock
        self.address = address
        self.payload = payload
        self.ttl = ttl
        # None: no probe expires on its own (iputils' -W); expire(None) settles them at the end
        self.timeout_ns = None if timeout is None else int(timeout * NS_PER_S)
        self.clock = clock
        self.timestamped = timestamped
        self.user_latency = user_latency
        # A datagram socket's kernel writes its local port as the identifier (and the checksum):
        # encode that identifier ourselves so ``sent`` is the bytes on the wire.
        self.ident = sock.ident if sock.kind == "dgram" and sock.ident is not None else ident
        # ICMPv6's checksum covers a pseudo-header with our source address (RFC 4443 §2.3).
        # The kernel fills it in for us anyway; we compute it too, so that ``sent`` is exactly
        # the bytes on the wire and the checksum can be taught from it.
        self.src = self.dst = None
        if sock.v6:
            try:
                self.src = source or names.source_address(address, 6)
                self.dst = address
            except UsageError:
                log.debug("no route to %s yet: the kernel will fill the ICMPv6 checksum", address)
        self.sent: dict[int, _Sent] = {}  # the latest probe with each sequence number
        self.history: list[_Sent] = []  # every probe, in the order sent (seq may wrap)
        # Probes not yet settled, in send order, settled ones dropped lazily from the left.  One
        # timeout for all on a monotonic clock: deadlines come in send order too, so expiring and
        # the next deadline look only at the front (no scan of every probe ever sent).
        self._waiting: collections.deque[_Sent] = collections.deque()
        self._pending = 0

    # ---- sending ----------------------------------------------------------------------------
    def _encode(self, seq: int, payload: bytes) -> bytes:
        return encode_echo_request(
            self.ident, seq, payload, v6=self.sock.v6, src=self.src, dst=self.dst
        )

    def send(self, seq: int) -> Probe | None:
        """Send echo request ``seq``; returns a settled Probe only if sending failed."""
        seq &= 0xFFFF
        before = net.now_ns()
        payload = stamp_payload(self.payload, before) if self.timestamped else self.payload
        message = self._encode(seq, payload)
        deadline = None if self.timeout_ns is None else self.clock() + self.timeout_ns
        try:
            send_ns = self.sock.send(message, self.address)
        except OSError as exc:  # e.g. ENETUNREACH: the probe is lost, say why
            send_ns = net.now_ns()
            entry = self._track(seq, message, send_ns, deadline, payload)
            if exc.errno == errno.EMSGSIZE:
                # -M do past a path MTU the kernel learnt: a local error naming that MTU, an
                # error as iputils counts it ("local error: message too long, mtu=N")
                mtu = names.path_mtu(self.address, self.sock.family)
                return self._settle(entry, Outcome.UNREACHABLE, note=LOCAL_EMSGSIZE, mtu=mtu)
            return self._settle(entry, Outcome.TIMEOUT, note=f"sendto: {sockopts.strerror(exc)}")
        if self.user_latency:
            send_ns = before  # -U: the time read in user space before the send call
        if self.sock.kind == "dgram" and self.sock.ident not in (None, self.ident):
            # autobound on this first send: re-encode with the identifier the kernel used
            self.ident = self.sock.ident
            message = self._encode(seq, payload)
        self._track(seq, message, send_ns, deadline, payload)
        return None

    def _track(
        self, seq: int, message: bytes, send_ns: int, deadline: int | None, payload: bytes
    ) -> _Sent:
        entry = _Sent(seq, message, send_ns, deadline, payload)
        old = self.sent.get(seq)
        if old is not None and old.settled is None:
            # sequence wrapped (65536 in flight): the older probe can no longer be matched
            self._settle(old, Outcome.TIMEOUT, note="sequence number reused before an answer")
        self.sent[seq] = entry
        self.history.append(entry)
        self._waiting.append(entry)
        self._pending += 1
        return entry

    def _first_waiting(self) -> _Sent | None:
        """The earliest-sent probe still unsettled (and still tracked), or None."""
        while self._waiting:
            entry = self._waiting[0]
            if entry.settled is None and self.sent.get(entry.seq) is entry:
                return entry
            self._waiting.popleft()
        return None

    @property
    def pending(self) -> int:
        return self._pending

    def next_deadline(self) -> int | None:
        first = self._first_waiting()
        return None if first is None else first.deadline_ns

    # ---- settling ---------------------------------------------------------------------------
    def _probe(self, entry: _Sent, outcome: Outcome, **fields: object) -> Probe:
        return Probe(
            seq=entry.seq,
            ident=self.ident,
            ttl=self.ttl,
            sent=entry.message,
            send_ns=entry.send_ns,
            outcome=outcome,
            **fields,  # type: ignore[arg-type]
        )

    def _settle(self, entry: _Sent, outcome: Outcome, **fields: object) -> Probe:
        if entry.settled is None:
            self._pending -= 1
        entry.settled = self._probe(entry, outcome, **fields)
        return entry.settled

    def expire(self, now_ns: int | None = None) -> list[Probe]:
        """Settle as TIMEOUT every probe whose wait is over (all of them if ``now_ns`` is None)."""
        out = []
        while (entry := self._first_waiting()) is not None:
            if now_ns is not None and (entry.deadline_ns is None or now_ns < entry.deadline_ns):
                break  # and so are all sent after it
            out.append(self._settle(entry, Outcome.TIMEOUT))
        return out

    def handle(self, received: net.Received) -> list[Probe]:
        """Match one received message; return the probes it settles (usually zero or one)."""
        if self.user_latency:  # -U: the time read in user space as the receive call returned
            received = replace(received, recv_ns=net.now_ns(), kernel_timestamp=False)
        try:
            return self._handle(received)
        except MalformedPacket as exc:
            log.debug("ignoring malformed packet from %s: %s", received.source, exc)
            return []

    def _handle(self, r: net.Received) -> list[Probe]:
        common = {
            "recv_ns": r.recv_ns,
            "reply_from": r.source,
            "reply_ttl": r.ttl,
            "received": r.data,
            "kernel_timestamp": r.kernel_timestamp,
        }
        if (err := r.error) is not None:
            # Datagram socket error queue: r.data is our own echo request that provoked it.
            msg = decode_icmp6(r.data) if self.sock.v6 else decode_icmp(r.data)
            if not isinstance(msg, EchoMessage) or msg.ident != self.ident:
                return []
            common["mtu"] = too_big_mtu(err.icmp_type, err.icmp_code, err.info, self.sock.v6)
            return self._settle_error(msg.seq, err.icmp_type, err.icmp_code, r, common)
        data = r.data
        if r.has_ip_header:
            _ip, data = decode_ipv4(data)
        msg = decode_icmp6(data) if self.sock.v6 else decode_icmp(data)
        if isinstance(msg, EchoMessage):
            if not msg.is_reply or msg.ident != self.ident or r.source != self.address:
                return []  # someone else's (a raw socket sees every ICMP message on the host)
            entry = self.sent.get(msg.seq)
            if entry is None:
                return []
            fields = dict(
                common,
                rtt_ms=(r.recv_ns - entry.send_ns) / 1e6,
                icmp_type=msg.icmp_type,
                icmp_code=msg.code,
            )
            if entry.settled is not None:
                if entry.settled.outcome in (Outcome.REPLY, Outcome.CORRUPT):
                    dup = self._probe(entry, Outcome.DUPLICATE, **fields)
                    entry.duplicates.append(dup)
                    return [dup]
                log.debug("late reply to seq %d from %s ignored", msg.seq, r.source)
                return []
            note = ""
            if msg.checksum_ok is False:
                note = "bad checksum"
            elif msg.payload != entry.payload:
                note = payload_difference(entry.payload, msg.payload)
            outcome = Outcome.CORRUPT if note else Outcome.REPLY
            return [self._settle(entry, outcome, note=note, **fields)]
        if isinstance(msg, IcmpError):
            echo = msg.quoted.echo
            if echo is None or echo[0] != self.ident or msg.quoted.dst != self.address:
                return []
            note = "" if msg.checksum_ok is not False else "bad checksum on ICMP error"
            common["mtu"] = too_big_mtu(msg.icmp_type, msg.code, msg.info, self.sock.v6)
            return self._settle_error(echo[1], msg.icmp_type, msg.code, r, common, note)
        return []

    def _settle_error(
        self, seq: int, icmp_type: int, code: int, r: net.Received, common: dict, note: str = ""
    ) -> list[Probe]:
        """Settle probe ``seq`` with the ICMP error that quotes it (raw or error-queue path)."""
        entry = self.sent.get(seq)
        if entry is None or entry.settled is not None:
            return []
        outcome = error_outcome(icmp_type, self.sock.v6)
        if outcome is None:
            return []
        rtt_ms = (r.recv_ns - entry.send_ns) / 1e6
        fields = dict(common, rtt_ms=rtt_ms, icmp_type=icmp_type, icmp_code=code, note=note)
        return [self._settle(entry, outcome, **fields)]

    def probes(self) -> tuple[Probe, ...]:
        """Every settled probe in the order sent, each followed by its duplicates."""
        out: list[Probe] = []
        for entry in self.history:
            if entry.settled is not None:
                out.append(entry.settled)
            out.extend(entry.duplicates)
        return tuple(out)


def run_ping(
    request: PingRequest,
    *,
    on_probe: Callable[[Probe], None] | None = None,
    sock: net.IcmpSocket | None = None,
    on_send: Callable[[int], None] | None = None,
) -> PingResult:
    """Ping as ``request`` says; see the module docstring."""
    address, version = names.resolve(request.host, request.family if sock is None else sock.family)
    request.check_fits(version)
    fill = default_fill(request.payload_size, request.pattern)
    payload = fill if request.payload is None else request.payload
    ttl = request.ttl
    chosen = os.getpid() & 0xFFFF if request.ident is None else request.ident
    own = sock is None
    source = request.source
    if sock is None:
        sock = net.open_ping_socket(
            version,
            request.socket_kind,
            ttl=ttl,
            ident=chosen,
            tos=request.tos,
            source=source,
            device=request.interface,
            pmtu=request.pmtu_discovery,
        )
    else:
        if ttl is not None:
            sock.set_ttl(ttl)
        if request.tos is not None:
            sockopts.set_tos(sock.sock, version, request.tos)
        if request.pmtu_discovery is not None:
            sockopts.set_pmtu_discovery(sock.sock, version, request.pmtu_discovery)
    started_ns = net.now_ns()
    start = net.monotonic_ns()
    host = request.host
    try:
        if source is None and request.interface is not None and version == 6:
            source = names.source_address_via(address, 6, request.interface)
        pinger = Pinger(
            sock,
            address,
            ident=chosen,
            payload=payload,
            ttl=ttl if ttl is not None else sock.get_ttl(),
            timeout=request.timeout if request.linger is None else None,
            timestamped=request.timestamped,
            user_latency=request.user_latency,
            source=source,
        )
        try:
            _drive(pinger, request, start, on_probe, on_send)
        except KeyboardInterrupt as exc:
            # Ctrl-C: what is still in flight is lost; hand the statistics so far to the caller.
            for probe in pinger.expire():
                _emit(on_probe, probe)
            exc.partial_result = _result(  # type: ignore[attr-defined]
                host, address, version, chosen, payload, pinger, sock, started_ns, start
            )
            raise
    finally:
        if own:
            sock.close()
    return _result(host, address, version, chosen, payload, pinger, sock, started_ns, start)


def _emit(on_probe: Callable[[Probe], None] | None, probe: Probe) -> None:
    if on_probe is not None:
        on_probe(probe)


def _drive(
    pinger: Pinger,
    request: PingRequest,
    start: int,
    on_probe: Callable[[Probe], None] | None,
    on_send: Callable[[int], None] | None,
) -> None:
    """iputils' main loop: send on schedule, read what comes back, stop when it says.

    Without a deadline: ``count`` probes (None: no end), then until each has settled, or with
    the request's ``linger`` until ``count`` answers or exit_wait_us() after the last probe.
    With a deadline: probes keep going until ``count`` answers or the first ICMP error (iputils
    20221126 main_loop), or the deadline.  ``interval`` 0: the next probe as soon as nothing is
    in flight, else MIN_INTERVAL_NS after the last (pinger()'s bound for -i 0 and -f).
    """
    count, seq_start, linger = request.count, request.seq_start, request.linger
    by_time = request.deadline is not None
    # iputils keeps -W and -i in whole milliseconds (int(optval * 1000)), RTTs in microseconds
    lingering = linger is not None and count is not None and not by_time
    linger_ms = int(linger * 1000) if linger is not None else 0
    interval_ms = int(request.interval * 1000)
    timed = request.payload_size >= PING_TIMESTAMP_SIZE  # iputils' rts->timing
    nreceived = tmax_us = 0
    end = start + int(request.deadline * NS_PER_S) if by_time else None
    interval_ns = int(request.interval * NS_PER_S)
    next_send = start
    last_send = start
    sent = answered = 0
    stop = False

    def settle(probe: Probe) -> None:
        nonlocal answered, stop, nreceived, tmax_us
        _emit(on_probe, probe)
        if answers(probe):
            answered += 1
            nreceived += probe.outcome not in ERRORS  # iputils counts errors apart
        echoed = probe.outcome in (Outcome.REPLY, Outcome.CORRUPT, Outcome.DUPLICATE)
        if timed and echoed and probe.rtt_ms is not None and "checksum" not in probe.note:
            tmax_us = max(tmax_us, round(probe.rtt_ms * 1000))  # gather_statistics(), dups too
        if by_time and probe.outcome in ERRORS:
            stop = True  # iputils: "if (rts->deadline && rts->nerrors) break;"

    while not stop:
        now = net.monotonic_ns()
        if lingering and end is None and sent >= count:  # type: ignore[operator] (set)
            # schedule_exit(): armed after the last send; a zero wait arms nothing and is
            # worked out again on the next pass (a reply may have come by then)
            wait_us = exit_wait_us(nreceived, tmax_us, interval_ms, linger_ms)
            end = now + wait_us * 1000 if wait_us else None
        if end is not None and now >= end:
            break
        if count is not None and answered >= count:
            break
        more = count is None or by_time or sent < count
        if more and interval_ns == 0:
            next_send = last_send + (MIN_INTERVAL_NS if pinger.pending and sent else 0)
        if more and now >= next_send:
            seq = (seq_start + sent) & 0xFFFF
            if on_send is not None:
                on_send(seq)
            failed = pinger.send(seq)
            sent += 1
            last_send = now
            next_send += interval_ns
            if failed is not None:
                settle(failed)
            continue
        for probe in pinger.expire(now):
            settle(probe)
        if stop or (not more and pinger.pending == 0):
            break
        wake = [t for t in (pinger.next_deadline(), end) if t is not None]
        if more:
            wake.append(next_send)
        if not wake:  # nothing in flight, nothing to send: only an interrupt ends this
            wake.append(now + NS_PER_S)
        received = pinger.sock.recv(max(0, min(wake) - now) / NS_PER_S)
        if received is not None:
            for probe in pinger.handle(received):
                settle(probe)
    for probe in pinger.expire():
        _emit(on_probe, probe)


def _result(
    host: str,
    address: str,
    version: int,
    ident: int,
    payload: bytes,
    pinger: Pinger,
    sock: net.IcmpSocket,
    started_ns: int,
    start: int,
) -> PingResult:
    probes = pinger.probes()
    return PingResult(
        target=host,
        address=address,
        family=version,
        ident=ident,
        payload=payload,
        probes=probes,
        summary=summarize(probes),
        implementation=Implementation.HANDROLLED,
        socket_kind=sock.kind,
        started_ns=started_ns,
        elapsed_ms=(net.monotonic_ns() - start) / 1e6,
    )


# ---- the seed contract --------------------------------------------------------------------------
def ping(host: str, timeout: float = 1) -> list[str]:
    """The seed's ping: four echo requests a second apart; [min, avg, max, stdev] in ms, as str.

    An unresolvable host, or one that never answers, gives ``['0', '0.0', '0', '0.0']``.
    """
    try:
        result = run_ping(PingRequest(host, count=4, interval=1.0, timeout=timeout))
    except (ResolveError, UsageError):
        return list(SEED_NO_ANSWER)
    s = result.summary
    if not s.received:
        return list(SEED_NO_ANSWER)
    return [str(round(v, 2)) for v in (s.min_ms, s.avg_ms, s.max_ms, s.stdev_ms)]


if __name__ == "__main__":  # python -m handrolled.ping: the command line lives in cli/ping.py
    from handrolled.cli import ping as _cli
    from handrolled.cli.common import run_module

    sys.exit(run_module(_cli.main))
