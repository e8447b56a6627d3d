"""Checks that hold a side's probes against the frames captured while it ran.

Shared by the ping and traceroute scenarios: find each probe on the wire, check that what the
side says it sent is what left, diff the two sides' packets field by field, and judge each
reported RTT against the RTT the capture saw for that same probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compare import packets, tolerance
from compare.capture import Frame
from compare.scenario import Difference, Row
from handrolled.results import Method, Outcome, Probe

IP_LAYERS = ("ipv4", "ipv6")


@dataclass
class WireProbe:
    """A probe as the capture saw it."""

    request: bytes  # the IP datagram that left
    sent_ns: int
    reply_ns: int | None = None  # first matching answer on the wire

    @property
    def rtt_ms(self) -> float | None:
        return None if self.reply_ns is None else (self.reply_ns - self.sent_ns) / 1e6


def probe_key_of(probe: Probe) -> packets.ProbeKey:
    if probe.method is Method.ICMP:
        return ("icmp", probe.ident, probe.seq)
    return (probe.method.value, probe.src_port or 0, probe.dst_port or 0)


@dataclass(frozen=True)
class Keys:
    """How probes are told apart: from a side's Probe, from a datagram that left, from an
    answer.  The default reads ports / ident+seq; compare/paths.py's Paris probes share their
    ports and add the UDP checksum or TCP sequence."""

    probe: Callable[[Probe], tuple] = probe_key_of
    sent: Callable[[bytes], tuple | None] = packets.probe_key
    reply: Callable[[bytes], tuple | None] = packets.reply_key


CLASSIC = Keys()


def index_wire(frames: Sequence[Frame], keys: Keys = CLASSIC) -> dict[tuple, WireProbe]:
    """Outgoing probes by key, each with the first incoming answer that quotes or echoes it."""
    wire: dict[tuple, WireProbe] = {}
    for frame in frames:
        datagram = frame.ip
        if not datagram:
            continue
        if frame.outgoing:
            key = keys.sent(datagram)
            if key is not None and key not in wire:
                wire[key] = WireProbe(datagram, frame.time_ns)
        else:
            answer = keys.reply(datagram)
            if answer is not None:
                hit = wire.get(answer[0])
                if hit is not None and hit.reply_ns is None and _from_target(answer, datagram, hit):
                    hit.reply_ns = frame.time_ns
    return wire


def _addresses(datagram: bytes) -> tuple[bytes, bytes]:
    """(source, destination) of an IPv4 (RFC 791) or IPv6 (RFC 8200) datagram, packed."""
    if datagram[0] >> 4 == 6:
        return datagram[8:24], datagram[24:40]
    return datagram[12:16], datagram[16:20]


def _from_target(answer: tuple[packets.ProbeKey, str], datagram: bytes, hit: WireProbe) -> bool:
    """An echo reply answers our request only from the address the request went to (RFC 792):
    a forger's reply with our identifier and sequence from elsewhere is not the answer."""
    if answer[1] != "echo-reply":
        return True
    return _addresses(datagram)[0] == _addresses(hit.request)[1]


def sent_bytes_of(probe: Probe, datagram: bytes) -> bytes:
    """The part of the wire datagram comparable with ``Probe.sent``.

    An ICMP or UDP socket is handed the transport message; a socket with IP_HDRINCL (first byte
    looks like an IP header of the same version) the whole datagram.
    """
    version = datagram[0] >> 4
    if probe.sent and probe.sent[0] >> 4 == version and len(probe.sent) == len(datagram):
        return datagram
    return packets.transport(datagram)


def _order(pair: tuple[Probe, WireProbe]) -> tuple[int, int]:
    return pair[0].ttl, pair[0].seq


def match(
    probes: Sequence[Probe], wire: dict[packets.ProbeKey, WireProbe], keys: Keys = CLASSIC
) -> tuple[dict[packets.ProbeKey, tuple[Probe, WireProbe]], list[packets.ProbeKey], int]:
    """Each probe (duplicates aside) with its wire datagram: (found by key, keys missing from
    the wire, probes looked for)."""
    found, missing = {}, []
    unique = [p for p in probes if p.outcome is not Outcome.DUPLICATE]
    for probe in unique:
        key = keys.probe(probe)
        hit = wire.get(key)
        if hit is None:
            hit = _by_sent_bytes(probe, wire)
        if hit is None:
            missing.append(key)
        else:
            found[key] = (probe, hit)
    return found, missing, len(unique)


def _by_sent_bytes(probe: Probe, wire: dict[packets.ProbeKey, WireProbe]) -> WireProbe | None:
    """The datagram carrying exactly the bytes ``probe`` says it sent, when its reported fields
    do not lead to it (e.g. a codec that packs the identifier in host order reports one value
    and sends another): so the field-by-field diff can still name what went wrong."""
    if not probe.sent:
        return None
    return next((w for w in wire.values() if sent_bytes_of(probe, w.request) == probe.sent), None)


def _pairs(
    found: dict[str, dict[packets.ProbeKey, tuple[Probe, WireProbe]]],
) -> list[tuple[tuple[Probe, WireProbe], tuple[Probe, WireProbe]]]:
    # The two sides' packets, pairwise by position (same inputs -> same sequence of probes).
    left = sorted(found["handrolled"].values(), key=_order)
    right = sorted(found["reference"].values(), key=_order)
    return list(zip(left, right, strict=False))


def packet_pairs(
    sides: dict[str, Sequence[Probe]], frames: dict[str, Sequence[Frame]]
) -> list[tuple[Probe, WireProbe, WireProbe]]:
    """The two sides' probes as they left, paired by position (TTL, then sequence): the
    handrolled probe, its wire datagram, and the reference's wire datagram at that position."""
    found = {impl: match(probes, index_wire(frames[impl]))[0] for impl, probes in sides.items()}
    return [(probe_l, wire_l, wire_r) for (probe_l, wire_l), (_, wire_r) in _pairs(found)]


def wire_rows(
    scenario: str,
    sides: dict[str, Sequence[Probe]],
    frames: dict[str, Sequence[Frame]],
    keys: Keys = CLASSIC,
) -> list[Row]:
    """Rows: probes found on the wire, sent == wire, packet diffs, RTT vs wire."""
    rows: list[Row] = []
    found: dict[str, dict[packets.ProbeKey, tuple[Probe, WireProbe]]] = {}
    cells, details, ok = {}, [], True
    for impl, probes in sides.items():
        found[impl], missing, looked_for = match(probes, index_wire(frames[impl], keys), keys)
        cells[impl] = f"{len(found[impl])}/{looked_for} on the wire"
        if missing:
            ok = False
            details.append(f"{impl}: probes not seen on the wire: {missing[:5]}")
    rows.append(Row.of_sides(scenario, "every probe seen on the wire", cells, ok, details))

    cells, details, ok = {}, [], True
    differences: list[Difference] = []
    for impl in sides:
        bad = []
        for key, (probe, hit) in found[impl].items():
            wire_part = sent_bytes_of(probe, hit.request)
            if probe.sent != wire_part:
                bad.append(key)
                for diff in packets.diff_bytes("sent", "bytes", probe.sent, wire_part, 0)[:1]:
                    details.append(
                        f"{impl} {key}: reported sent bytes differ from the wire: {diff.describe()}"
                    )
                    differences.append(
                        Difference(
                            diff.field,
                            (diff.left, diff.right),
                            diff.offset,
                            f"{impl} probe {key}",
                            (probe.sent, wire_part),
                            (f"{impl} reported", "wire"),
                        )
                    )
        cells[impl] = "identical" if not bad else f"{len(bad)} differ"
        ok = ok and not bad
    check = "reported sent bytes = wire bytes"
    rows.append(Row.of_sides(scenario, check, cells, ok, details, differences=differences[:10]))

    left, right = list(found["handrolled"].values()), list(found["reference"].values())
    ip_details: list[str] = []
    transport_details: list[str] = []
    ip_diffs: list[Difference] = []
    transport_diffs: list[Difference] = []
    allowed: set[packets.Allowed] = set()
    ip_ok = transport_ok = len(left) == len(right)
    if len(left) != len(right):
        ip_details.append(f"handrolled sent {len(left)} probes, reference {len(right)}")
    for (probe_l, wire_l), (_probe_r, wire_r) in _pairs(found):
        for diff in packets.diff_datagrams(wire_l.request, wire_r.request):
            label = f"probe seq {probe_l.seq} ttl {probe_l.ttl}: {diff.describe()}"
            is_ip = diff.layer in IP_LAYERS
            if diff.allowed:
                allowed.add(diff.allowed)
                continue
            (ip_details if is_ip else transport_details).append(label)
            (ip_diffs if is_ip else transport_diffs).append(
                Difference(
                    f"{diff.layer}.{diff.field}",
                    (diff.left, diff.right),
                    diff.offset,
                    f"probe seq {probe_l.seq} ttl {probe_l.ttl}",
                    (wire_l.request, wire_r.request),
                )
            )
            if is_ip:
                ip_ok = False
            else:
                transport_ok = False

    def met(ip: bool) -> list[packets.Allowed]:
        ordered = sorted(allowed, key=lambda a: (a.layer, a.field))
        return [a for a in ordered if (a.layer in IP_LAYERS) == ip]

    n = f"{len(left)} pairs"
    rows.append(
        Row(
            scenario,
            "transport bytes identical (ICMP/UDP/TCP)",
            n,
            n,
            transport_ok,
            transport_details[:10],
            met(ip=False),
            transport_diffs[:10],
        )
    )
    rows.append(
        Row(
            scenario,
            "IP header field by field",
            n,
            n,
            ip_ok,
            ip_details[:10],
            met(ip=True),
            ip_diffs[:10],
        )
    )

    cells, details, ok = {}, [], True
    for impl in sides:
        deltas, early_probes = [], []
        for key, (probe, hit) in found[impl].items():
            if (
                probe.outcome in (Outcome.REPLY, Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE)
                and probe.rtt_ms is not None
                and hit.rtt_ms is not None
            ):
                delta = probe.rtt_ms - hit.rtt_ms
                deltas.append(delta)
                if delta < -tolerance.WIRE_EARLY_MS:
                    early_probes.append(
                        f"{impl} {key}: reported {probe.rtt_ms:.3f} ms < wire {hit.rtt_ms:.3f} ms"
                    )
        if len(early_probes) > tolerance.WIRE_EARLY_ALLOWED:
            ok = False
            details += early_probes
        mid = tolerance.median(deltas)
        if mid is not None and abs(mid) > tolerance.WIRE_MEDIAN_MS:
            ok = False
            limit = tolerance.WIRE_MEDIAN_MS
            details.append(
                f"{impl}: median (reported - wire) {mid * 1000:.0f} us, beyond {limit} ms"
            )
        cells[impl] = (
            "no RTTs"
            if mid is None
            else f"median {mid * 1000:+.0f} us, min {min(deltas) * 1000:+.0f} us (n={len(deltas)})"
        )
    early, limit = tolerance.WIRE_EARLY_MS, tolerance.WIRE_MEDIAN_MS
    check = f"RTT vs wire (each >= -{early} ms but one, |median| <= {limit} ms)"
    rows.append(Row.of_sides(scenario, check, cells, ok, details))
    return rows
