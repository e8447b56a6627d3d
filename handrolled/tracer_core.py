"""Which traceroute probe to send next and when each one gives up.  Pure, clock-injected.

The driver (handrolled/traceroute.py) owns the sockets; this module owns the bookkeeping that
traceroute(8) keeps in its ``do_it`` loop, so it can be tested with a fake clock:

- probes are numbered ``index = (ttl - first_ttl) * probes_per_hop + i``; they are sent in index
  order, keeping at most ``sim_queries`` in flight (sent, not yet answered or expired);
- a probe expires ``timeout_for(index)`` seconds after it was sent, where the timeout follows
  traceroute(8)'s ``-w MAX,HERE,NEAR``: at most MAX, but only HERE times the RTT of a reply
  already seen from the same hop, else NEAR times the RTT of a reply to a later probe (a factor
  of 0 disables that rule); so probes past a silent hop expire after a few RTTs, not MAX;
- a final reply (the destination answered, or a router said it is unreachable) ends the trace at
  that probe's hop: later probes are not sent and their replies are ignored;
- hops are released in TTL order once each of their probes is done (``pop_complete_hops``);
- ``send_wait`` (traceroute(8)'s -z): at least that many seconds between two sends, so a
  probe waits for ``next_send_at()`` before ``to_send(now)`` offers it.

Times are floats in seconds on any monotonic scale the caller chooses.  The options are
checked for the user by ``handrolled.requests.TraceRequest``; the scheduler only asserts them.
"""

from __future__ import annotations

from handrolled.record import Record

__all__ = ["WAIT_PRECISION", "Slot", "TraceScheduler"]

# traceroute(8) adds 1 ms to an observed RTT before scaling it (DEF_WAIT_PREC), so a reply
# measured at ~0 ms still leaves the next probe a moment to answer.
WAIT_PRECISION = 0.001


class Slot(Record, frozen=False):
    """Bookkeeping for one probe."""

    index: int
    ttl: int
    sent_at: float | None = None
    done: bool = False
    rtt: float | None = None  # seconds, set when a reply matched
    final: bool = False


class TraceScheduler:
    """The send/expire/release state machine of a parallel traceroute."""

    def __init__(
        self,
        *,
        first_ttl: int = 1,
        max_hops: int = 30,
        probes_per_hop: int = 3,
        sim_queries: int = 16,
        wait: tuple[float, float, float] = (5.0, 3.0, 10.0),
        send_wait: float = 0.0,
    ) -> None:
        # TraceRequest has told the user about bad options; these guard internal callers.
        assert 1 <= first_ttl <= max_hops <= 255, (first_ttl, max_hops)
        assert probes_per_hop >= 1 and sim_queries >= 1, (probes_per_hop, sim_queries)
        assert len(wait) == 3 and all(w >= 0 for w in wait), wait
        assert send_wait >= 0, send_wait
        self.send_wait = float(send_wait)
        self._last_send: float | None = None
        self.first_ttl = first_ttl
        self.max_hops = max_hops
        self.probes_per_hop = probes_per_hop
        self.sim_queries = sim_queries
        self.wait_max, self.here_factor, self.near_factor = (float(w) for w in wait)
        count = (max_hops - first_ttl + 1) * probes_per_hop
        self.slots = [Slot(i, first_ttl + i // probes_per_hop) for i in range(count)]
        self.end = count  # one past the last index that belongs to the trace
        self._released = 0  # hops already returned by pop_complete_hops

    # -- queries ------------------------------------------------------------------------------

    def ttl_of(self, index: int) -> int:
        return self.slots[index].ttl

    @property
    def in_flight(self) -> int:
        return sum(1 for s in self.slots[: self.end] if s.sent_at is not None and not s.done)

    @property
    def finished(self) -> bool:
        """Every hop of the trace has been released."""
        return self._released * self.probes_per_hop >= self.end

    @property
    def reached(self) -> bool:
        return any(s.final for s in self.slots[: self.end])

    def timeout_for(self, index: int) -> float:
        """Seconds after its sending at which probe ``index`` gives up (traceroute(8)'s -w)."""
        if self.here_factor:
            base = index - index % self.probes_per_hop
            for slot in self.slots[base : base + self.probes_per_hop]:
                if slot.rtt is not None and slot.rtt > 0:
                    return min((slot.rtt + WAIT_PRECISION) * self.here_factor, self.wait_max)
        if self.near_factor:
            for slot in self.slots[index + 1 : self.end]:
                if slot.sent_at is None:
                    break  # like traceroute(8): look forward over probes already sent
                if slot.rtt is not None and slot.rtt > 0:
                    return min((slot.rtt + WAIT_PRECISION) * self.near_factor, self.wait_max)
        return self.wait_max

    def deadline_of(self, index: int) -> float | None:
        slot = self.slots[index]
        if slot.sent_at is None or slot.done:
            return None
        return slot.sent_at + self.timeout_for(index)

    def next_deadline(self) -> float | None:
        """The earliest moment an in-flight probe will expire, or None if none is in flight."""
        deadlines = [self.deadline_of(s.index) for s in self.slots[: self.end]]
        return min((d for d in deadlines if d is not None), default=None)

    # -- transitions --------------------------------------------------------------------------

    def next_send_at(self) -> float | None:
        """When ``send_wait`` lets the next probe go; None: no wait, nothing sent yet, or no
        probe could go then anyway (none left, or ``sim_queries`` in flight)."""
        if not self.send_wait or self._last_send is None:
            return None
        start = self._released * self.probes_per_hop
        unsent = any(s.sent_at is None for s in self.slots[start : self.end])
        if not unsent or self.in_flight >= self.sim_queries:
            return None
        return self._last_send + self.send_wait

    def to_send(self, now: float | None = None) -> list[int]:
        """Indexes to send now, in order, keeping at most ``sim_queries`` in flight.

        With ``send_wait`` at most one, and none before ``next_send_at()`` (``now`` is then
        required).  The caller sends each and reports it with ``mark_sent``.
        """
        budget = self.sim_queries - self.in_flight
        if self.send_wait:
            assert now is not None, "to_send needs now when send_wait is set"
            due = self.next_send_at()
            budget = min(budget, 0 if due is not None and now < due else 1)
        picked: list[int] = []
        start = self._released * self.probes_per_hop
        for slot in self.slots[start : self.end]:
            if budget <= 0:
                break
            if slot.sent_at is None:
                picked.append(slot.index)
                budget -= 1
        return picked

    def mark_sent(self, index: int, at: float) -> None:
        self.slots[index].sent_at = at
        self._last_send = at

    def mark_lost(self, index: int, at: float) -> None:
        """Probe ``index`` could not be sent (the local stack refused it): done at once."""
        self.slots[index].sent_at = at
        self.slots[index].done = True
        self._last_send = at

    def on_reply(self, index: int, *, rtt: float, final: bool) -> bool:
        """Record a reply to probe ``index`` after ``rtt`` seconds; False if it no longer counts.

        The driver measures ``rtt`` (kernel timestamps where it has them); it feeds the HERE and
        NEAR rules.
        """
        if not 0 <= index < self.end:
            return False
        slot = self.slots[index]
        if slot.sent_at is None or slot.done:
            return False
        slot.done = True
        slot.rtt = max(rtt, 0.0)
        if final:
            slot.final = True
            hop_end = (index // self.probes_per_hop + 1) * self.probes_per_hop
            if hop_end < self.end:
                self.end = hop_end
        return True

    def expire(self, now: float) -> list[int]:
        """Mark every in-flight probe whose deadline has passed as expired; return them."""
        expired = []
        for slot in self.slots[: self.end]:
            deadline = self.deadline_of(slot.index)
            if deadline is not None and deadline <= now:
                expired.append(slot.index)
        for index in expired:  # decide all first: an expiry must not shorten another's wait
            self.slots[index].done = True
        return expired

    def pop_complete_hops(self) -> list[int]:
        """TTLs whose probes are all done, in order, each returned once."""
        ttls = []
        q = self.probes_per_hop
        while self._released * q < self.end:
            hop = self.slots[self._released * q : (self._released + 1) * q]
            if not all(s.done for s in hop):
                break
            ttls.append(hop[0].ttl)
            self._released += 1
        return ttls
