"""Ping's statistics: iputils' summary line from the raw probes of one run.

``summarize(probes) -> PingSummary``: transmitted (duplicates aside), received (good replies),
duplicates, errors (ICMP errors and corrupt replies), loss, and min/avg/max with both spreads:
``stdev_ms`` (statistics.stdev, the seed's) and ``mdev_ms`` (population, iputils' mdev).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from handrolled.results import Outcome, PingSummary, Probe

__all__ = ["summarize"]


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
