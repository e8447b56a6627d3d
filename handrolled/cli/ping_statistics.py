"""iputils ping's statistics (ping_common.c finish()), in its own arithmetic, from our probes.

``iputils_stats(probes, started_ns) -> IputilsStats``: the counters and figures finish()
prints (integer microseconds, duplicates in the RTT figures, a bad checksum "corrupted", a
wrong payload still received, mdev as an integer square root); ``statistics_lines(host,
stats, timing=, fast=)``: its block of lines.  Pure: no I/O.
"""

from __future__ import annotations

import bisect
import math
import struct

from handrolled.record import Record
from handrolled.results import Outcome, Probe

__all__ = ["IputilsStats", "bad_checksum", "iputils_stats", "statistics_lines", "whole_us"]


def whole_us(rtt_ms: float | None) -> int:
    """An RTT as iputils holds it: whole microseconds."""
    return max(0, round((rtt_ms or 0.0) * 1000))


def _float32(value: float) -> float:
    """printf("%g", (float)x): iputils computes the loss in single precision."""
    return struct.unpack("f", struct.pack("f", value))[0]


def bad_checksum(probe: Probe) -> bool:
    return probe.outcome is Outcome.CORRUPT and "checksum" in probe.note.lower()


class IputilsStats(Record):
    """The figures of iputils' finish(), from raw probes, in its integer microseconds."""

    transmitted: int
    received: int
    duplicates: int
    corrupted: int
    errors: int
    time_ms: int
    rtt_us: tuple[int, int, int, int] | None  # min, avg, max, mdev
    pipe: int
    ewma_us: int  # rtt/8 of iputils' moving average (its ``rts->rtt`` is 8 times this)
    ipg_us: int

    @property
    def loss(self) -> str:
        lost = (self.transmitted - self.received) * 100.0 / self.transmitted
        return f"{_float32(lost):g}"


def iputils_stats(probes: tuple[Probe, ...] | list[Probe], started_ns: int) -> IputilsStats:
    """iputils' counters from probes: received = replies (a wrong payload included, a bad
    checksum not), duplicates, corrupted (bad checksum), errors (ICMP errors); RTT figures over
    replies and duplicates alike, mdev as its integer square root."""
    sent = sorted(p.send_ns for p in probes if p.outcome is not Outcome.DUPLICATE)
    received = duplicates = corrupted = errors = 0
    trips: list[int] = []
    ewma = 0
    pipe = -1
    for p in probes:
        if bad_checksum(p):
            corrupted += 1
            continue
        if p.outcome in (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE):
            errors += 1
        elif p.outcome is Outcome.DUPLICATE:
            duplicates += 1
        elif p.outcome in (Outcome.REPLY, Outcome.CORRUPT):
            received += 1
        else:
            continue
        if p.recv_ns is not None and p.outcome is not Outcome.DUPLICATE:
            # acknowledge(): how many were sent by the time this answer came, less its place
            place = bisect.bisect_left(sent, p.send_ns) + 1
            pipe = max(pipe, bisect.bisect_right(sent, p.recv_ns) - place + 1)
        if p.outcome in (Outcome.REPLY, Outcome.CORRUPT, Outcome.DUPLICATE):
            t = whole_us(p.rtt_ms)
            trips.append(t)
            ewma = t * 8 if not ewma else ewma + t - int(ewma / 8)
    time_ms = (sent[-1] - sent[0] + 500_000) // 1_000_000 if len(sent) > 1 else 0
    rtt = None
    if received and trips:
        total = received + duplicates
        tsum, tsum2 = sum(trips), float(sum(t * t for t in trips))
        avg = tsum // total
        if tsum < 2**31 - 1:
            var = int((tsum2 - (tsum * tsum) // total) / total)
        else:
            var = int(tsum2 / total - avg * avg)
        rtt = (min(trips), avg, max(trips), math.isqrt(var) if var > 0 else 0)
    ipg = (sent[-1] - sent[0]) // 1000 // (len(sent) - 1) if len(sent) > 1 else 0
    return IputilsStats(
        len(sent), received, duplicates, corrupted, errors, time_ms, rtt, pipe, ewma // 8, ipg
    )


def _ms3(us: int) -> str:
    return f"{us // 1000}.{us % 1000:03d}"


def statistics_lines(host: str, stats: IputilsStats, *, timing: bool, fast: bool) -> list[str]:
    """iputils' finish() block, without its leading newline.  ``fast``: -i 0 or -f (ipg/ewma)."""
    parts = [f"{stats.transmitted} packets transmitted", f"{stats.received} received"]
    if stats.duplicates:
        parts.append(f"+{stats.duplicates} duplicates")
    if stats.corrupted:
        parts.append(f"+{stats.corrupted} corrupted")
    if stats.errors:
        parts.append(f"+{stats.errors} errors")
    if stats.transmitted:
        parts.append(f"{stats.loss}% packet loss")
        parts.append(f"time {stats.time_ms}ms")
    figures = []
    if stats.received and timing and stats.rtt_us is not None:
        figures.append("rtt min/avg/max/mdev = " + "/".join(_ms3(v) for v in stats.rtt_us) + " ms")
    if stats.pipe > 1:
        figures.append(f"pipe {stats.pipe}")
    if stats.received and fast and stats.transmitted > 1:
        figures.append(f"ipg/ewma {_ms3(stats.ipg_us)}/{_ms3(stats.ewma_us)} ms")
    return [f"--- {host} ping statistics ---", ", ".join(parts), ", ".join(figures)]
