"""Hand-rolled ping: the Pinger engine, ``run_ping`` and the seed's ``ping()``.

API
---
``run_ping(request, *, on_probe=None, sock=None) -> PingResult``
    Ping as the ``requests.PingRequest`` says (validated when it was built): send ``count`` echo
    requests ``interval`` s apart (``deadline``: stop everything after that many seconds), each
    waited for ``timeout`` s after it was sent.  No payload means ``icmp.default_payload(size)``;
    no ident means ``os.getpid() & 0xFFFF`` (a datagram socket binds to it as its local port,
    the identifier the kernel writes).  ``on_probe`` is called with each Probe as it settles
    (reply, error, timeout, duplicate).  ``sock``: an ``net.IcmpSocket`` to use instead of
    opening one.  Raises ResolveError, UsageError (a payload too large for the resolved
    family), RawSocketPermissionError; timeouts and ICMP errors are outcomes.  On Ctrl-C the
    KeyboardInterrupt propagates carrying ``.partial_result`` (a PingResult so far).
``Pinger(sock, address, *, ident, payload, ttl)``: the matching engine: ``send(seq)``,
    ``handle(received) -> list[Probe]``, ``expire(now_ns) -> list[Probe]``, ``next_deadline()``.
``summarize(probes) -> PingSummary``: iputils-style statistics from raw probes.
``ping(host, timeout=1) -> list[str]``: the seed contract ([min, avg, max, stdev] as strings).

The command line (``python -m handrolled.ping HOST``) is ``handrolled.cli.ping``.

Replies are matched by source, identifier and sequence; a reply with a bad checksum or a
payload unlike the one sent is CORRUPT (counted as an error, not as received); a second reply to
an answered probe is a DUPLICATE; ICMP errors quoting our probe are TIME_EXCEEDED /
UNREACHABLE.  A reply later than ``timeout`` leaves the probe TIMEOUT (logged, not counted).
"""

from __future__ import annotations

import collections
import logging
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from handrolled import net
from handrolled.errors import MalformedPacket, UsageError
from handrolled.icmp import (
    EchoMessage,
    Icmp6Type,
    IcmpError,
    IcmpType,
    decode_icmp,
    decode_icmp6,
    default_payload,
    encode_echo_request,
)
from handrolled.ip import decode_ipv4
from handrolled.requests import PingRequest
from handrolled.results import Implementation, Outcome, PingResult, PingSummary, Probe

__all__ = ["SEED_NO_ANSWER", "Pinger", "ping", "run_ping", "summarize"]

log = logging.getLogger(__name__)

SEED_NO_ANSWER = ["0", "0.0", "0", "0.0"]
NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class _Sent:
    seq: int
    message: bytes
    send_ns: int
    deadline_ns: int  # monotonic
    settled: Probe | None = None


class Pinger:
    """Sends echo requests on one ICMP socket and matches what comes back to them."""

    def __init__(
        self,
        sock: net.IcmpSocket,
        address: str,
        *,
        ident: int,
        payload: bytes,
        ttl: int,
        timeout: float = 1.0,
        clock: Callable[[], int] = net.monotonic_ns,
    ) -> None:
        self.sock = sock
        self.address = address
        self.payload = payload
        self.ttl = ttl
        self.timeout_ns = int(timeout * NS_PER_S)
        self.clock = clock
        # A datagram socket's kernel writes its local port as the identifier (and the checksum):
        # encode that identifier ourselves so ``sent`` is the bytes on the wire.
        self.ident = sock.ident if sock.kind == "dgram" and sock.ident is not None else ident
        # ICMPv6's checksum covers a pseudo-header with our source address (RFC 4443 §2.3).
        # The kernel fills it in for us anyway; we compute it too, so that ``sent`` is exactly
        # the bytes on the wire and the checksum can be taught from it.
        self.src = self.dst = None
        if sock.v6:
            try:
                self.src, self.dst = net.source_address(address, 6), address
            except UsageError:
                log.debug("no route to %s yet: the kernel will fill the ICMPv6 checksum", address)
        self.sent: dict[int, _Sent] = {}
        self.order: list[int] = []
        self.duplicates: dict[int, list[Probe]] = {}
        # Probes not yet settled, in send order, settled ones dropped lazily from the left.  One
        # timeout for all on a monotonic clock: deadlines come in send order too, so expiring and
        # the next deadline look only at the front (no scan of every probe ever sent).
        self._waiting: collections.deque[_Sent] = collections.deque()
        self._pending = 0

    # ---- sending ----------------------------------------------------------------------------
    def send(self, seq: int) -> Probe | None:
        """Send echo request ``seq``; returns a settled Probe only if sending failed."""
        seq &= 0xFFFF
        message = encode_echo_request(
            self.ident, seq, self.payload, v6=self.sock.v6, src=self.src, dst=self.dst
        )
        deadline = self.clock() + self.timeout_ns
        try:
            send_ns = self.sock.send(message, self.address)
        except OSError as exc:  # e.g. ENETUNREACH: the probe is lost, say why
            send_ns = net.now_ns()
            entry = self._track(seq, message, send_ns, deadline)
            return self._settle(entry, Outcome.TIMEOUT, note=f"sendto: {exc.strerror or exc}")
        if self.sock.kind == "dgram" and self.sock.ident not in (None, self.ident):
            # autobound on this first send: re-encode with the identifier the kernel used
            self.ident = self.sock.ident
            message = encode_echo_request(
                self.ident, seq, self.payload, v6=self.sock.v6, src=self.src, dst=self.dst
            )
        self._track(seq, message, send_ns, deadline)
        return None

    def _track(self, seq: int, message: bytes, send_ns: int, deadline: int) -> _Sent:
        entry = _Sent(seq, message, send_ns, deadline)
        if seq in self.sent:
            self.order.remove(seq)  # sequence wrapped after 65536 probes
            if self.sent[seq].settled is None:
                self._pending -= 1  # the older probe with this number is no longer tracked
        self.sent[seq] = entry
        self.order.append(seq)
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
            if now_ns is not None and now_ns < entry.deadline_ns:
                break  # and so are all sent after it
            out.append(self._settle(entry, Outcome.TIMEOUT))
        return out

    def handle(self, received: net.Received) -> list[Probe]:
        """Match one received message; return the probes it settles (usually zero or one)."""
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
        if r.error is not None:
            # Datagram socket error queue: r.data is our own echo request that provoked it.
            msg = decode_icmp6(r.data) if self.sock.v6 else decode_icmp(r.data)
            if not isinstance(msg, EchoMessage) or msg.ident != self.ident:
                return []
            return self._settle_error(msg.seq, r.error.icmp_type, r.error.icmp_code, r, common)
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
                    self.duplicates.setdefault(entry.seq, []).append(dup)
                    return [dup]
                log.debug("late reply to seq %d from %s ignored", msg.seq, r.source)
                return []
            note = ""
            if msg.checksum_ok is False:
                note = "bad checksum"
            elif msg.payload != self.payload:
                note = _payload_difference(self.payload, msg.payload)
            outcome = Outcome.CORRUPT if note else Outcome.REPLY
            return [self._settle(entry, outcome, note=note, **fields)]
        if isinstance(msg, IcmpError):
            echo = msg.quoted.echo
            if echo is None or echo[0] != self.ident or msg.quoted.dst != self.address:
                return []
            note = "" if msg.checksum_ok is not False else "bad checksum on ICMP error"
            return self._settle_error(echo[1], msg.icmp_type, msg.code, r, common, note)
        return []

    def _settle_error(
        self, seq: int, icmp_type: int, code: int, r: net.Received, common: dict, note: str = ""
    ) -> list[Probe]:
        """Settle probe ``seq`` with the ICMP error that quotes it (raw or error-queue path)."""
        entry = self.sent.get(seq)
        if entry is None or entry.settled is not None:
            return []
        outcome = _error_outcome(icmp_type, self.sock.v6)
        if outcome is None:
            return []
        rtt_ms = (r.recv_ns - entry.send_ns) / 1e6
        fields = dict(common, rtt_ms=rtt_ms, icmp_type=icmp_type, icmp_code=code, note=note)
        return [self._settle(entry, outcome, **fields)]

    def probes(self) -> tuple[Probe, ...]:
        """Every settled probe in the order sent, each followed by its duplicates."""
        out: list[Probe] = []
        for seq in self.order:
            entry = self.sent[seq]
            if entry.settled is not None:
                out.append(entry.settled)
            out.extend(self.duplicates.get(seq, ()))
        return tuple(out)


_UNREACHABLE_TYPES = {
    False: (IcmpType.DEST_UNREACHABLE, IcmpType.PARAMETER_PROBLEM),
    True: (Icmp6Type.DEST_UNREACHABLE, Icmp6Type.PACKET_TOO_BIG, Icmp6Type.PARAMETER_PROBLEM),
}


def _error_outcome(icmp_type: int, v6: bool) -> Outcome | None:
    if icmp_type == (Icmp6Type.TIME_EXCEEDED if v6 else IcmpType.TIME_EXCEEDED):
        return Outcome.TIME_EXCEEDED
    if icmp_type in _UNREACHABLE_TYPES[v6]:
        return Outcome.UNREACHABLE
    return None


def _payload_difference(sent: bytes, got: bytes) -> str:
    if len(sent) != len(got):
        return f"payload length {len(got)}, sent {len(sent)}"
    at = next(i for i, (a, b) in enumerate(zip(sent, got, strict=True)) if a != b)
    return f"payload byte {at} is {got[at]:#04x}, sent {sent[at]:#04x}"


def summarize(probes: Sequence[Probe]) -> PingSummary:
    """iputils-style statistics from raw probes (stdev: statistics.stdev; mdev: population)."""
    transmitted = sum(1 for p in probes if p.outcome is not Outcome.DUPLICATE)
    rtts = [p.rtt_ms for p in probes if p.outcome is Outcome.REPLY and p.rtt_ms is not None]
    duplicates = sum(1 for p in probes if p.outcome is Outcome.DUPLICATE)
    errors = sum(
        1
        for p in probes
        if p.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE, Outcome.CORRUPT)
    )
    loss = 100.0 * (transmitted - len(rtts)) / transmitted if transmitted else 100.0
    if not rtts:
        return PingSummary(transmitted, 0, duplicates, errors, loss)
    return PingSummary(
        transmitted=transmitted,
        received=len(rtts),
        duplicates=duplicates,
        errors=errors,
        loss_percent=loss,
        min_ms=min(rtts),
        avg_ms=statistics.fmean(rtts),
        max_ms=max(rtts),
        stdev_ms=statistics.stdev(rtts) if len(rtts) > 1 else 0.0,
        mdev_ms=statistics.pstdev(rtts),
    )


def run_ping(
    request: PingRequest,
    *,
    on_probe: Callable[[Probe], None] | None = None,
    sock: net.IcmpSocket | None = None,
) -> PingResult:
    """Ping as ``request`` says; see the module docstring."""
    address, version = net.resolve(request.host, request.family if sock is None else sock.family)
    request.check_fits(version)
    payload = default_payload(request.payload_size) if request.payload is None else request.payload
    ttl = request.ttl
    chosen = os.getpid() & 0xFFFF if request.ident is None else request.ident
    own = sock is None
    if sock is None:
        sock = net.open_icmp_socket(version, request.socket_kind, ttl=ttl, ident=chosen)
    elif ttl is not None:
        sock.set_ttl(ttl)
    started_ns = net.now_ns()
    start = net.monotonic_ns()
    host = request.host
    try:
        pinger = Pinger(
            sock,
            address,
            ident=chosen,
            payload=payload,
            ttl=ttl if ttl is not None else sock.get_ttl(),
            timeout=request.timeout,
        )
        try:
            _drive(pinger, request, start, on_probe)
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
) -> None:
    count, seq_start = request.count, request.seq_start
    end = start + int(request.deadline * NS_PER_S) if request.deadline is not None else None
    interval_ns = int(request.interval * NS_PER_S)
    next_send = start
    sent = 0
    while True:  # bounded: count sends, each waited for at most timeout (or the deadline)
        now = net.monotonic_ns()
        if end is not None and now >= end:
            break
        if sent < count and now >= next_send:
            failed = pinger.send(seq_start + sent)
            sent += 1
            next_send += interval_ns
            if failed is not None:
                _emit(on_probe, failed)
            continue
        for probe in pinger.expire(now):
            _emit(on_probe, probe)
        if sent >= count and pinger.pending == 0:
            break
        wake = [t for t in (pinger.next_deadline(), end) if t is not None]
        if sent < count:
            wake.append(next_send)
        received = pinger.sock.recv(max(0, min(wake) - now) / NS_PER_S)
        if received is not None:
            for probe in pinger.handle(received):
                _emit(on_probe, probe)
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
    except (net.ResolveError, UsageError):
        return list(SEED_NO_ANSWER)
    s = result.summary
    if not s.received:
        return list(SEED_NO_ANSWER)
    return [str(round(v, 2)) for v in (s.min_ms, s.avg_ms, s.max_ms, s.stdev_ms)]


if __name__ == "__main__":  # python -m handrolled.ping: the command line lives in cli/ping.py
    from handrolled.cli import ping as _cli
    from handrolled.cli.common import run_module

    sys.exit(run_module(_cli.main))
