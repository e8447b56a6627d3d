"""Traceroute scenarios: the hand-rolled and the scapy tracer, same path, same inputs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from compare import tolerance, wire
from compare.lab import EARLY_SLACK_MS, RTT_ATTEMPTS, Lab
from compare.ping import families_of
from compare.scenario import Context, Difference, Row, Sides, both_ran, run_side
from handrolled.requests import TraceRequest
from handrolled.results import Method, Outcome, TraceResult

IDENT = 0x7774  # ICMP identifier; UDP source port; TCP base source port
PAYLOAD = b"wiretwin:traceroute:same-bytes:)"  # 32 bytes, as traceroute(8)'s 60-byte probes
SIDES = Sides("handrolled.traceroute:run_trace", "reference.traceroute:run_trace")
# Median over hops of (min RTT - promised RTT).  A trace sends its probes as one burst, so a
# single pause of the VM (or of the lab's delay process) lands on every hop at once; over 24
# traces one such pause added 2 ms to all hops.  The per-probe check against the wire stays
# tight; this one, and the cross-run comparison of the two sides, allow for one pause.
TRACE_EXCESS_MS = 5.0
METHODS = ((Method.ICMP, "-I"), (Method.UDP, "-U"), (Method.TCP, "-T"))  # and traceroute(8)'s flag


@dataclass(frozen=True)
class TraceScenario:
    name: str
    to: str | None  # lab role of the destination (None: a host the user named)
    family: int
    method: Method
    probes_per_hop: int
    host: str | None = None  # the user's host, when ``to`` is None
    max_hops: int = 10
    port: int | None = None  # UDP base / TCP port; None: the method's default
    ident: int = IDENT
    lost: tuple[int, int] | None = None  # (ttl, index in its hop) of the probe the lab drops


def _probes_per_hop(quick: bool) -> int:
    return 1 if quick else 2


def scenarios(lab: Lab, quick: bool = False) -> list[TraceScenario]:
    q = _probes_per_hop(quick)
    out = []
    for family in (4, 6):
        for method, flag in METHODS:
            out.append(
                TraceScenario(f"traceroute -{family} {flag} target", "target", family, method, q)
            )
        out.append(
            TraceScenario(
                f"traceroute -{family} -I prohibited", "prohibited", family, Method.ICMP, q
            )
        )
    # The other unreachable answers (!H, !N), each method in each family once.
    for family, method, flag, role in UNREACHABLE_TRACES:
        out.append(TraceScenario(f"traceroute -{family} {flag} {role}", role, family, method, q))
    return out + lost_probe_scenarios(lab)


# (family, method, traceroute(8)'s flag, lab role): ICMP, UDP and TCP probes in both families
# meet host- and net-unreachable (prohibited's !X is traced above).
UNREACHABLE_TRACES = (
    (4, Method.UDP, "-U", "hostunreach"),
    (4, Method.TCP, "-T", "netunreach"),
    (4, Method.ICMP, "-I", "netunreach"),
    (6, Method.ICMP, "-I", "hostunreach"),
    (6, Method.UDP, "-U", "netunreach"),
    (6, Method.TCP, "-T", "hostunreach"),
)
LOST_PER_HOP = 3  # traceroute(8)'s default -q: the lost probe is the middle one of its hop


def lost_probe_scenarios(lab: Lab) -> list[TraceScenario]:
    """Traces whose one probe r4 drops (lab promises "lost_probe"): a ``*`` inside hop 4's line.
    UDP: the base port that puts the promised port on the hop's middle probe (probe k goes to
    port + k); ICMP: the promised identifier, whose promised sequence (k + 1) must fall at the
    lossy hop."""
    lost = lab.promises()["lost_probe"]
    ttl, q = lost["ttl"], LOST_PER_HOP
    udp_base = lost["udp_dst_port"] - ((ttl - 1) * q + 1)
    icmp_index = lost["icmp_seq"] - 1 - (ttl - 1) * q
    assert 0 <= icmp_index < q, "the promised ICMP sequence is not at the lossy hop"
    name = f"-q {q} target (r4 loses one probe)"
    return [
        TraceScenario(f"traceroute -4 -U -p {udp_base} {name}", "target", 4, Method.UDP, q,
                      port=udp_base, lost=(ttl, 1)),
        TraceScenario(f"traceroute -6 -I {name}", "target", 6, Method.ICMP, q,
                      ident=lost["icmp_ident"], lost=(ttl, icmp_index)),
    ]  # fmt: skip


def explicit_scenarios(host: str, quick: bool = False) -> list[TraceScenario]:
    """A host the user names: the two tracers against each other, no truth."""
    q = _probes_per_hop(quick)
    return [
        TraceScenario(f"traceroute -{f} {flag} {host}", None, f, m, q, host=host, max_hops=30)
        for f in families_of(host)
        for m, flag in METHODS
    ]


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


def run(ctx: Context, sc: TraceScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    lab = ctx.lab if sc.to is not None else None
    host = lab.nodes[sc.to].hostname if lab is not None else sc.host
    # one request, the same object for both sides (each unpickles it in its own process)
    request = TraceRequest(
        host,
        method=sc.method,
        probes_per_hop=sc.probes_per_hop,
        first_ttl=1,
        max_hops=sc.max_hops,
        sim_queries=16,
        wait=(2.0, 3.0, 10.0),
        family=sc.family,
        resolve=True,
        ident=sc.ident,
        port=sc.port,
        payload=b"" if sc.method is Method.TCP else PAYLOAD,
    )
    runs = {
        "handrolled": run_side(ctx.site, "handrolled", sides.handrolled, (request,), {}, sides.env),
        "reference": run_side(ctx.site, "reference", sides.reference, (request,), {}),
    }
    rows = [both_ran(sc.name, runs)]
    if not rows[0].ok:
        return rows, runs
    res: dict[str, TraceResult] = {impl: r.result for impl, r in runs.items()}

    hops = {impl: _hop_list(r) for impl, r in res.items()}
    show = {impl: " ".join(a for _, a in h) for impl, h in hops.items()}
    same = hops["handrolled"] == hops["reference"]
    details = [] if same else [f"handrolled {hops['handrolled']}", f"reference {hops['reference']}"]
    rows.append(Row.of_sides(sc.name, "same hop list", show, same, details))
    names = {impl: _names(r) for impl, r in res.items()}
    same = names["handrolled"] == names["reference"]
    details = (
        [] if same else [f"handrolled {names['handrolled']}", f"reference {names['reference']}"]
    )
    rows.append(Row(sc.name, "same reverse-DNS names", f"{len(names['handrolled'])} names",
                    f"{len(names['reference'])} names", same, details))  # fmt: skip
    if lab is not None:
        rows.append(_truth_row(lab, sc, res, hops, names))
        if sc.to in lab.promises()["unreachable"]:
            marks = _handrolled_marks(ctx, res["handrolled"], sides)
            rows.append(_annotation_row(lab, sc, res, marks))
        if sc.lost is not None:
            rows.append(_lost_row(lab, sc, res))

    left, right = _outcomes(res["handrolled"]), _outcomes(res["reference"])
    same = left == right
    details = [] if same else [f"first difference: {_first_diff(left, right)}"]
    counts = f"{len(left)} probes", f"{len(right)} probes"
    rows.append(Row(sc.name, "same outcome per probe", *counts, same, details))

    flat = {impl: [p for hop in r.hops for p in hop.probes] for impl, r in res.items()}
    rows += wire.wire_rows(sc.name, flat, {i: r.frames for i, r in runs.items()})

    def again(impl: str) -> TraceResult | None:
        # the same trace once more, uncaptured: for the RTT-vs-truth check only
        target, env = (
            (sides.handrolled, sides.env) if impl == "handrolled" else (sides.reference, None)
        )
        try:
            return ctx.site.call(target, (request,), {}, env)
        except Exception:  # the first run's rows already report a side that fails
            return None

    rows += _rtt_rows(lab, sc, res, again)
    return rows, runs


def _names(result: TraceResult) -> dict[str, str | None]:
    return {p.reply_from: p.reply_name for hop in result.hops for p in hop.probes if p.reply_from}


def _truth_row(
    lab: Lab, sc: TraceScenario, res: dict[str, TraceResult], hops: dict, names: dict
) -> Row:
    """Hops, their names (``names``: each side's :func:`_names`) and the trace's end, against
    what the lab promises."""
    truth = lab.hops(sc.to)
    expected = [(n.ttl, n.addr(sc.family) if n.answers else "*") for n in truth]
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        problems = []
        if hops[impl] != expected:
            problems.append(f"hops {hops[impl]} != promised {expected}")
        named = names[impl]
        for node in truth:
            addr = node.addr(sc.family)
            if node.answers and addr in named and named[addr] != node.hostname:
                problems.append(f"ttl {node.ttl}: name {named[addr]!r}, promised {node.hostname!r}")
        last = result.hops[-1].probes if result.hops else ()
        unreachable = lab.promises()["unreachable"].get(sc.to)
        if unreachable is not None:
            icmp_type, code = unreachable[f"ipv{sc.family}_type_code"]
            if not any(
                p.outcome is Outcome.UNREACHABLE and (p.icmp_type, p.icmp_code) == (icmp_type, code)
                for p in last
            ):
                problems.append(f"last hop is not unreachable type {icmp_type} code {code}")
        elif not result.reached:
            problems.append("did not report reaching the destination")
        cells[impl] = "as promised" if not problems else f"{len(problems)} differ"
        ok = ok and not problems
        details += [f"{impl}: {p}" for p in problems]
    check = "hops, names, end vs lab truth"
    return Row.of_sides(sc.name, check, cells, ok, details)


# traceroute(8)'s marks for an ICMP error (traceroute 2.1, parse_icmp_res()), the harness's own
# table: IPv4 destination unreachable (RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1) ...
TRACEROUTE8_MARKS4 = {
    0: "!N", 6: "!N", 11: "!N",  # net, net unknown, net for TOS (8, isolated: not listed)
    1: "!H", 7: "!H", 12: "!H",  # host, host unknown, host for TOS
    9: "!X", 10: "!X", 13: "!X",  # net / host / communication administratively prohibited
    2: "!P", 3: "", 4: "!F", 5: "!S", 14: "!V", 15: "!C",  # port: the destination answered
}  # fmt: skip
# ... and ICMPv6 destination unreachable (RFC 4443 3.1); any other code is "!<code>".
TRACEROUTE8_MARKS6 = {0: "!N", 1: "!X", 2: "!H", 3: "!H", 4: ""}
MARK = re.compile(r" (![^ ]*)")


def traceroute8_mark(family: int, icmp_type: int | None, code: int | None) -> str:
    """What traceroute(8) prints after a probe answered by ICMP ``icmp_type``/``code``: "" for
    time exceeded, echo replies and TCP answers."""
    if icmp_type is None or code is None:
        return ""
    if icmp_type == (1 if family == 6 else 3):  # destination unreachable
        return (TRACEROUTE8_MARKS6 if family == 6 else TRACEROUTE8_MARKS4).get(code, f"!<{code}>")
    return ""


def handrolled_hop_marks(result: TraceResult) -> list[list[str]]:
    """Run in the hand-rolled side's child: the marks its traceroute(8)-shaped hop lines print
    (handrolled.cli.traceroute.format_hop, numeric), per hop in order."""
    from handrolled.cli.traceroute import format_hop

    return [MARK.findall(format_hop(hop, numeric=True)) for hop in result.hops]


def _handrolled_marks(ctx: Context, result: TraceResult, sides: Sides) -> list[list[str]] | str:
    """The hand-rolled side's printed marks (from its own, possibly patched, code), or why not."""
    try:
        return ctx.site.call("compare.traceroute:handrolled_hop_marks", (result,), {}, sides.env)
    except Exception as exc:  # reported in the row
        return f"{type(exc).__name__}: {exc}"


def _reference_marks(result: TraceResult) -> list[list[str]]:
    return [
        [m for p in hop.probes if (m := traceroute8_mark(result.family, p.icmp_type, p.icmp_code))]
        for hop in result.hops
    ]


def _annotation_row(
    lab: Lab, sc: TraceScenario, res: dict[str, TraceResult], handrolled: list[list[str]] | str
) -> Row:
    """The marks traceroute(8) prints (!H !N !X, ...): the hand-rolled side's own hop lines and
    the reference's answers read through traceroute(8)'s table, per hop, against each other
    and against the lab's promise (the last hop's probes all carry the promised mark, no other
    hop any)."""
    promised = lab.promises()["unreachable"][sc.to]["traceroute"]
    reference = _reference_marks(res["reference"])
    marks = {"handrolled": handrolled, "reference": reference}
    diffs: list[Difference] = []
    q, n_hops = sc.probes_per_hop, len(lab.hops(sc.to))
    want: list[list[str]] = [[] for _ in range(n_hops - 1)] + [[promised] * q]
    if isinstance(handrolled, str):
        diffs.append(Difference("annotation", (f"hop lines not rendered: {handrolled}", "-")))
    else:
        for i in range(max(len(handrolled), len(reference))):
            left = " ".join(handrolled[i]) if i < len(handrolled) else "(no hop)"
            right = " ".join(reference[i]) if i < len(reference) else "(no hop)"
            if left != right:
                diffs.append(Difference("annotation", (left or "none", right or "none"), None,
                                        f"hop {i + 1}"))  # fmt: skip
    for impl, per_hop in marks.items():
        if isinstance(per_hop, str):
            continue
        for i, (got, exp) in enumerate(zip(per_hop, want, strict=False)):
            if got != exp:
                values = (" ".join(got) or "none", " ".join(exp) or "none")
                where = f"{impl} hop {i + 1}"
                diffs.append(
                    Difference("annotation", values, None, where, labels=(impl, "lab truth"))
                )
        if len(per_hop) != len(want):
            diffs.append(Difference("hops", (str(len(per_hop)), str(len(want))), None, impl,
                                    labels=(impl, "lab truth")))  # fmt: skip
    cells = {impl: (m if isinstance(m, str) else " ".join(x for hop in m for x in hop) or "none")
             for impl, m in marks.items()}  # fmt: skip
    cells["handrolled"] = cells["handrolled"][:60]
    details = [d.describe() for d in diffs[:10]]
    check = f"annotations (traceroute(8) marks) vs each other and lab truth ({promised} at the end)"
    return Row.of_sides(sc.name, check, cells, not details, details, differences=diffs[:10])


def _lost_row(lab: Lab, sc: TraceScenario, res: dict[str, TraceResult]) -> Row:
    """The probe the lab drops (lab promises "lost_probe") is a ``*`` inside its hop's line:
    it timed out, and every other probe of that hop was answered by the lossy router."""
    ttl, index = sc.lost  # type: ignore[misc]
    router = lab.nodes[lab.promises()["lost_probe"]["router"]].addr(sc.family)
    diffs: list[Difference] = []
    cells = {}
    for impl, result in res.items():
        hop = next((h for h in result.hops if h.ttl == ttl), None)
        shown = []
        for i in range(sc.probes_per_hop):
            p = hop.probes[i] if hop is not None and i < len(hop.probes) else None
            got = "missing" if p is None else "*" if p.outcome is Outcome.TIMEOUT else (
                p.reply_from or "?")  # fmt: skip
            want = "*" if i == index else router
            shown.append(got if got in ("*", "missing") else "r")
            if got != want:
                diffs.append(Difference("probe answer", (got, want), None,
                                        f"{impl} hop {ttl} probe {i + 1}",
                                        labels=(impl, "lab truth")))  # fmt: skip
        cells[impl] = f"hop {ttl}: " + " ".join(shown)
    check = f"lost probe vs lab truth (hop {ttl}, probe {index + 1} of {sc.probes_per_hop}: *)"
    return Row.of_sides(
        sc.name, check, cells, not diffs, [d.describe() for d in diffs], differences=diffs
    )


def _hop_minima(result: TraceResult) -> dict[int, float]:
    """The minimum RTT per answering hop."""
    mins = {}
    for hop in result.hops:
        rtts = [p.rtt_ms for p in hop.probes if p.rtt_ms is not None]
        if rtts:
            mins[hop.ttl] = min(rtts)
    return mins


def _rtt_rows(
    lab: Lab | None,
    sc: TraceScenario,
    res: dict[str, TraceResult],
    again: Callable[[str], TraceResult | None] | None = None,
) -> list[Row]:
    """RTTs per answering hop (the minimum over its probes), against the lab and across sides.

    One or two probes per hop are too few for a per-hop upper bound on these VMs, so: every hop
    must be at or above its promised RTT (one-sided noise can never push a measurement below
    it), and the median over hops of (measured - promised) must stay within TRACE_EXCESS_MS.
    A trace is one burst, so one CPU pause moves every hop at once: a side whose median comes
    out late (and no hop early) traces again, uncaptured (``again``), up to RTT_ATTEMPTS runs
    in all, each hop keeping its minimum over the runs (as Lab.settle_min_rtts does).  A
    systematic excess stays late on every run and fails.
    The two sides are compared hop by hop, with or without a lab: the median over the TTLs both
    answered of (handrolled - reference) must stay within TRACE_EXCESS_MS.
    """
    mins = {impl: _hop_minima(result) for impl, result in res.items()}
    rows = []
    limit = TRACE_EXCESS_MS
    if lab is not None:
        truth = {n.ttl: n for n in lab.hops(sc.to) if n.answers}
        excess: dict[str, float] = {}
        cells, details, ok = {}, [], True
        for impl in res:
            measured = 1
            while True:
                answering = [n for ttl, n in truth.items() if ttl in mins[impl]]
                below = [n for n in answering if mins[impl][n.ttl] < lab.rtt_tolerance(n)[0]]
                excess[impl] = (
                    tolerance.median([mins[impl][n.ttl] - n.rtt_ms for n in answering]) or 0.0
                )
                if below or excess[impl] <= limit or again is None or measured >= RTT_ATTEMPTS:
                    break
                extra = again(impl)
                measured += 1
                for ttl, value in (_hop_minima(extra) if extra else {}).items():
                    mins[impl][ttl] = min(mins[impl].get(ttl, value), value)
            runs = f" ({measured} runs)" if measured > 1 else ""
            cells[impl] = f"median excess {excess[impl]:+.3f} ms over {len(answering)} hops{runs}"
            details += [
                f"{impl}: ttl {n.ttl} {mins[impl][n.ttl]:.3f} ms < promised {n.rtt_ms} ms"
                for n in below
            ]
            if below or excess[impl] > limit or len(answering) < len(truth):
                ok = False
                n_hops = len(answering)
                details.append(f"{impl}: median excess {excess[impl]:.3f} ms ({n_hops} hops)")
        check = (
            f"RTT per hop vs lab truth (each >= promised - {EARLY_SLACK_MS}, "
            f"median excess <= {limit}; a late median traces again, {RTT_ATTEMPTS} runs at most)"
        )
        rows.append(Row.of_sides(sc.name, check, cells, ok, details))
    common = sorted(mins["handrolled"].keys() & mins["reference"].keys())
    diff = tolerance.median([mins["handrolled"][t] - mins["reference"][t] for t in common])
    ok = diff is None or abs(diff) <= limit
    detail = (
        "no hop answered on both sides"
        if diff is None
        else f"median per-hop diff (handrolled - reference) {diff:+.3f} ms over {len(common)} hops"
    )
    cells = {impl: f"{len(m)} hops answered" for impl, m in mins.items()}
    check = f"RTT sides agree (|median per-hop diff| <= {limit} ms)"
    rows.append(Row.of_sides(sc.name, check, cells, ok, [detail]))
    return rows


def _first_diff(left: list, right: list) -> str:
    for a, b in zip(left, right, strict=False):
        if a != b:
            return f"handrolled {a} vs reference {b}"
    return f"handrolled has {len(left)} probes, reference {len(right)}"
