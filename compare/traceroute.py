"""Traceroute scenarios: the hand-rolled and the scapy tracer, same path, same inputs."""

from __future__ import annotations

from dataclasses import dataclass

from compare import tolerance, wire
from compare.core import Row, Sides, both_ran, run_side
from compare.lab import Lab
from handrolled.results import Method, Outcome, TraceResult

IDENT = 0x7774  # ICMP identifier; UDP source port; TCP base source port
PAYLOAD = b"wiretwin:traceroute:same-bytes:)"  # 32 bytes, as traceroute(8)'s 60-byte probes
SIDES = Sides("handrolled.traceroute:run_trace", "reference.traceroute:run_trace")
UNREACHABLE_CODE = {4: 13, 6: 1}  # admin-prohibited: ICMP 3/13, ICMPv6 1/1
# Median over hops of (min RTT - promised RTT).  A trace sends its probes as one burst, so a
# single pause of the VM (or of the lab's delay process) lands on every hop at once; over 24
# traces one such pause added 2 ms to all hops.  The per-probe check against the wire stays
# tight; this one, and the cross-run comparison of the two sides, allow for one pause.
TRACE_EXCESS_MS = 5.0


@dataclass(frozen=True)
class TraceScenario:
    name: str
    to: str  # lab role of the destination
    family: int
    method: Method
    probes_per_hop: int


def scenarios(lab: Lab, quick: bool = False) -> list[TraceScenario]:
    q = 1 if quick else 2
    out = []
    for family in (4, 6):
        for method, flag in ((Method.ICMP, "-I"), (Method.UDP, "-U"), (Method.TCP, "-T")):
            out.append(
                TraceScenario(f"traceroute -{family} {flag} target", "target", family, method, q)
            )
        out.append(
            TraceScenario(
                f"traceroute -{family} -I prohibited", "prohibited", family, Method.ICMP, q
            )
        )
    return out


def _hop_list(result: TraceResult) -> list[tuple[int, str]]:
    hops = []
    for hop in result.hops:
        answered = [p.reply_from for p in hop.probes if p.reply_from]
        hops.append((hop.ttl, answered[0] if answered else "*"))
    return hops


def _outcomes(result: TraceResult) -> list[tuple]:
    return [
        (hop.ttl, i, p.outcome.value, p.reply_from, p.icmp_type, p.icmp_code)
        for hop in result.hops
        for i, p in enumerate(hop.probes)
    ]


def run(lab: Lab, sc: TraceScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    dest = lab.nodes[sc.to]
    kwargs = {
        "method": sc.method,
        "probes_per_hop": sc.probes_per_hop,
        "first_ttl": 1,
        "max_hops": 10,
        "sim_queries": 16,
        "wait": (2.0, 3.0, 10.0),
        "family": sc.family,
        "resolve": True,
        "ident": IDENT,
        "payload": b"" if sc.method is Method.TCP else PAYLOAD,
    }
    host = dest.hostname
    runs = {
        "handrolled": run_side(lab, "handrolled", sides.handrolled, (host,), kwargs, sides.env),
        "reference": run_side(lab, "reference", sides.reference, (host,), kwargs),
    }
    rows = [both_ran(sc.name, runs)]
    if not rows[0].ok:
        return rows, runs
    res: dict[str, TraceResult] = {impl: r.result for impl, r in runs.items()}

    hops = {impl: _hop_list(r) for impl, r in res.items()}
    show = {impl: " ".join(a for _, a in h) for impl, h in hops.items()}
    same = hops["handrolled"] == hops["reference"]
    rows.append(
        Row(
            sc.name,
            "same hop list",
            show["handrolled"],
            show["reference"],
            same,
            [] if same else [f"handrolled {hops['handrolled']}", f"reference {hops['reference']}"],
        )
    )

    truth = lab.hops(sc.to)
    expected = [(n.ttl, n.addr(sc.family) if n.answers else "*") for n in truth]
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        problems = []
        if hops[impl] != expected:
            problems.append(f"hops {hops[impl]} != promised {expected}")
        names = {
            p.reply_from: p.reply_name for hop in result.hops for p in hop.probes if p.reply_from
        }
        for node in truth:
            addr = node.addr(sc.family)
            if node.answers and addr in names and names[addr] != node.hostname:
                problems.append(f"ttl {node.ttl}: name {names[addr]!r}, promised {node.hostname!r}")
        last = result.hops[-1].probes if result.hops else ()
        if sc.to == "prohibited":
            code = UNREACHABLE_CODE[sc.family]
            if not any(p.outcome is Outcome.UNREACHABLE and p.icmp_code == code for p in last):
                problems.append(f"last hop is not unreachable code {code}")
        elif not result.reached:
            problems.append("did not report reaching the destination")
        cells[impl] = "as promised" if not problems else f"{len(problems)} differ"
        ok = ok and not problems
        details += [f"{impl}: {p}" for p in problems]
    rows.append(
        Row(
            sc.name,
            "hops, names, end vs lab truth",
            cells["handrolled"],
            cells["reference"],
            ok,
            details,
        )
    )

    left, right = _outcomes(res["handrolled"]), _outcomes(res["reference"])
    rows.append(
        Row(
            sc.name,
            "same outcome per probe",
            f"{len(left)} probes",
            f"{len(right)} probes",
            left == right,
            [] if left == right else [f"first difference: {_first_diff(left, right)}"],
        )
    )

    flat = {impl: [p for hop in r.hops for p in hop.probes] for impl, r in res.items()}
    rows += wire.wire_rows(sc.name, flat, {i: r.frames for i, r in runs.items()})

    # RTTs per answering hop (the minimum over its probes).  One or two probes per hop are too
    # few for a per-hop upper bound on these VMs (a CPU pause lands on some hop in most runs),
    # so: every hop must be at or above its promised RTT (a one-sided noise can never push a
    # measurement below it), and the median over hops of (measured - promised) must stay
    # within the slack of the lab's window.
    mins: dict[str, dict[int, float]] = {}
    excess: dict[str, float] = {}
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        mins[impl] = {}
        for hop in result.hops:
            rtts = [p.rtt_ms for p in hop.probes if p.rtt_ms is not None]
            if rtts:
                mins[impl][hop.ttl] = min(rtts)
        answering = [n for n in truth if n.answers and n.ttl in mins[impl]]
        below = [n for n in answering if mins[impl][n.ttl] < lab.rtt_tolerance(n)[0]]
        over = [mins[impl][n.ttl] - n.rtt_ms for n in answering]
        excess[impl] = tolerance.median(over) or 0.0
        cells[impl] = f"median excess {excess[impl]:+.3f} ms over {len(answering)} hops"
        details += [
            f"{impl}: ttl {n.ttl} {mins[impl][n.ttl]:.3f} ms < promised {n.rtt_ms} ms"
            for n in below
        ]
        if (
            below
            or excess[impl] > TRACE_EXCESS_MS
            or len(answering) < sum(n.answers for n in truth)
        ):
            ok = False
            limit, n = TRACE_EXCESS_MS, len(answering)
            details.append(f"{impl}: median excess {excess[impl]:.3f} ms (limit {limit}), {n} hops")
    limit = TRACE_EXCESS_MS
    rows.append(
        Row(
            sc.name,
            f"RTT per hop vs lab truth (each >= promised - 0.05, median excess <= {limit})",
            cells["handrolled"],
            cells["reference"],
            ok,
            details,
        )
    )
    gap = abs(excess["handrolled"] - excess["reference"])
    ok = gap <= TRACE_EXCESS_MS
    rows.append(
        Row(
            sc.name,
            f"RTT sides agree (|median excess diff| <= {TRACE_EXCESS_MS} ms)",
            f"{excess['handrolled']:+.3f} ms",
            f"{excess['reference']:+.3f} ms",
            ok,
            [] if ok else [f"gap {gap:.3f} ms"],
        )
    )
    return rows, runs


def _first_diff(left: list, right: list) -> str:
    for a, b in zip(left, right, strict=False):
        if a != b:
            return f"handrolled {a} vs reference {b}"
    return f"handrolled has {len(left)} probes, reference {len(right)}"
