"""The rules hand-rolled ping takes from iputils and the RFCs, as pure functions: no I/O.

``default_fill(size, pattern)`` and ``stamp_payload(fill, now_ns)``: iputils' payload (its
fill, its send time as a struct timeval over the first 16 octets).  ``too_big_mtu``,
``error_outcome`` and ``payload_difference``: how an ICMP error or a reply settles a probe.
``answers(probe)`` and ``exit_wait_us(...)``: what counts towards -c and how long a -c run
still listens after its last probe (iputils' __schedule_exit()).  The engine that applies
them is ``handrolled.ping``.
"""

from __future__ import annotations

import struct

from handrolled.icmp import Icmp6Type, IcmpType, UnreachCode, default_payload
from handrolled.requests import PING_TIMESTAMP_SIZE
from handrolled.results import Outcome, Probe

__all__ = [
    "ERRORS",
    "MIN_INTERVAL_NS",
    "NS_PER_S",
    "answers",
    "default_fill",
    "error_outcome",
    "exit_wait_us",
    "payload_difference",
    "stamp_payload",
    "too_big_mtu",
]

NS_PER_S = 1_000_000_000
MIN_INTERVAL_NS = 10_000_000  # iputils' MININTERVAL: -i 0 / -f send at least every 10 ms
_TIMEVAL = struct.Struct("@ll")  # struct timeval: tv_sec, tv_usec (native longs)


def default_fill(size: int, pattern: bytes | None = None) -> bytes:
    """iputils' payload before its timestamp: byte i = i (mod 256), or ``pattern`` repeated
    from the first payload octet (-p; iputils' fill() covers the timestamp area too)."""
    if pattern:
        return (pattern * (size // len(pattern) + 1))[:size]
    return default_payload(size)


def stamp_payload(fill: bytes, now_ns: int) -> bytes:
    """``fill`` with its first 16 octets replaced by ``now_ns`` as a struct timeval, as iputils'
    pinger() writes the send time (host byte order); a shorter payload carries no timestamp."""
    if len(fill) < PING_TIMESTAMP_SIZE or _TIMEVAL.size != PING_TIMESTAMP_SIZE:
        return fill
    sec, nsec = divmod(now_ns, NS_PER_S)
    return _TIMEVAL.pack(sec, nsec // 1000) + fill[PING_TIMESTAMP_SIZE:]


_UNREACHABLE_TYPES = {
    False: (IcmpType.DEST_UNREACHABLE, IcmpType.PARAMETER_PROBLEM),
    True: (Icmp6Type.DEST_UNREACHABLE, Icmp6Type.PACKET_TOO_BIG, Icmp6Type.PARAMETER_PROBLEM),
}


def too_big_mtu(icmp_type: int, code: int, info: int, v6: bool) -> int | None:
    """The MTU a too-big error names: frag-needed's next-hop MTU (RFC 1191 §4: the low 16 bits
    of the word after the checksum; ee_info on the error queue) or Packet Too Big's (RFC 4443
    §3.2); None for any other error."""
    if v6:
        return info if icmp_type == Icmp6Type.PACKET_TOO_BIG else None
    if icmp_type == IcmpType.DEST_UNREACHABLE and code == UnreachCode.FRAGMENTATION_NEEDED:
        return info & 0xFFFF
    return None


def error_outcome(icmp_type: int, v6: bool) -> Outcome | None:
    if icmp_type == (Icmp6Type.TIME_EXCEEDED if v6 else IcmpType.TIME_EXCEEDED):
        return Outcome.TIME_EXCEEDED
    if icmp_type in _UNREACHABLE_TYPES[v6]:
        return Outcome.UNREACHABLE
    return None


def payload_difference(sent: bytes, got: bytes) -> str:
    if len(sent) != len(got):
        return f"payload length {len(got)}, sent {len(sent)}"
    at = next(i for i, (a, b) in enumerate(zip(sent, got, strict=True)) if a != b)
    return f"payload byte {at} is {got[at]:#04x}, sent {sent[at]:#04x}"


ERRORS = (Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE)


def answers(probe: Probe) -> bool:
    """Counts towards -c as iputils' nreceived + nerrors (not a duplicate, checksum good)."""
    if probe.outcome is Outcome.CORRUPT:
        return "checksum" not in probe.note  # a wrong payload is still a reply to iputils
    return probe.outcome is Outcome.REPLY or probe.outcome in ERRORS


def exit_wait_us(received: int, tmax_us: int, interval_ms: int, linger_ms: int) -> int:
    """iputils' __schedule_exit(): how long a -c run without -w waits once its last probe is
    sent, in microseconds: twice the longest RTT so far, at least the interval, if any reply
    came; else the linger time (-W).  0: no limit (setitimer() with a zero value arms nothing,
    so only the answers or an interrupt end the run)."""
    if received:
        return max(2 * tmax_us, 1000 * interval_ms)
    return 1000 * linger_ms
