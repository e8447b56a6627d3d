"""Ping scenarios: the hand-rolled and the scapy pinger, same target, same inputs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from compare import packets, tolerance, wire
from compare.lab import Lab
from compare.scenario import Context, Row, Sides, both_ran, run_side
from handrolled.errors import ResolveError
from handrolled.requests import PingRequest
from handrolled.results import Outcome, PingResult

IDENT = 0x7774  # "wt": fixed, so both sides' packets can be identical byte for byte
PAYLOAD = (b"wiretwin:same-inputs-same-bytes:" * 2)[:56]  # fixed and readable in a hex dump
SIDES = Sides("handrolled.ping:run_ping", "reference.ping:run_ping")


@dataclass(frozen=True)
class PingScenario:
    name: str
    host: str
    family: int
    expect: Outcome | None  # what the lab promises every probe meets (None: no promise)
    answerer: str | None  # role of the node that answers (None: nobody)
    icmp_code: int | None = None
    kwargs: dict = field(default_factory=dict)
    neighbour: bool = False  # another pinger (iputils) runs in the client meanwhile


def _base_kwargs(quick: bool) -> dict:
    """The PingRequest fields every scenario shares (a scenario may override some)."""
    return {"count": 4 if quick else 5, "interval": 0.2, "timeout": 1.0, "ttl": 64}


def scenarios(lab: Lab, quick: bool = False) -> list[PingScenario]:
    base = _base_kwargs(quick)
    return [
        PingScenario(
            "ping -4 target", lab.target.hostname, 4, Outcome.REPLY, "target", kwargs=base
        ),
        PingScenario(
            "ping -6 target", lab.target.hostname, 6, Outcome.REPLY, "target", kwargs=base
        ),
        PingScenario(
            "ping -4 -t 2 (time exceeded)",
            lab.target.addr4,
            4,
            Outcome.TIME_EXCEEDED,
            "r2",
            kwargs={**base, "ttl": 2},
        ),
        PingScenario(
            "ping -6 -t 4 (time exceeded)",
            lab.target.addr6,
            6,
            Outcome.TIME_EXCEEDED,
            "r4",
            kwargs={**base, "ttl": 4},
        ),
        PingScenario(
            "ping -4 prohibited",
            lab.prohibited.addr4,
            4,
            Outcome.UNREACHABLE,
            "prohibited",
            13,
            kwargs=base,
        ),
        PingScenario(
            "ping -6 prohibited",
            lab.prohibited.addr6,
            6,
            Outcome.UNREACHABLE,
            "prohibited",
            1,
            kwargs=base,
        ),
        PingScenario(
            "ping -4 target beside another pinger",
            lab.target.addr4,
            4,
            Outcome.REPLY,
            "target",
            kwargs=base,
            neighbour=True,
        ),
        PingScenario(
            "ping -4 blackhole",
            lab.blackhole4,
            4,
            Outcome.TIMEOUT,
            None,
            kwargs={**base, "count": 2, "timeout": 0.5},
        ),
    ]


def explicit_scenarios(host: str, quick: bool = False) -> list[PingScenario]:
    """A host the user names: no truth to hold the results against, only each other."""
    base = _base_kwargs(quick)
    return [
        PingScenario(f"ping -{f} {host}", host, f, None, None, kwargs=base)
        for f in families_of(host)
    ]


def families_of(host: str) -> list[int]:
    """The IP versions ``host`` resolves to here (a literal: its own)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ResolveError(host, str(exc)) from exc
    return sorted({6 if info[0] == socket.AF_INET6 else 4 for info in infos})


def _outcomes(result: PingResult) -> list[tuple]:
    return [(p.seq, p.outcome.value, p.reply_from, p.icmp_type, p.icmp_code) for p in result.probes]


def run(ctx: Context, sc: PingScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    # One request, validated once; both sides receive the same object (pickled to the child).
    request = PingRequest(
        sc.host, **sc.kwargs, family=sc.family, ident=IDENT, payload=PAYLOAD, socket_kind="raw"
    )
    runs = {}
    for impl, target, env in (
        ("handrolled", sides.handrolled, sides.env),
        ("reference", sides.reference, None),
    ):
        with _neighbour(ctx, sc):
            runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
    rows = [both_ran(sc.name, runs)]
    if not rows[0].ok:
        return rows, runs
    res = {impl: r.result for impl, r in runs.items()}

    # Outcomes: against each other, then against the lab's truth.
    left, right = _outcomes(res["handrolled"]), _outcomes(res["reference"])
    rows.append(
        Row(
            sc.name,
            "same outcome per probe",
            _brief(res["handrolled"]),
            _brief(res["reference"]),
            left == right,
            [] if left == right else [f"handrolled {left}", f"reference {right}"],
        )
    )
    lab = ctx.lab
    if lab is not None and sc.expect is not None:
        rows.append(_truth_row(lab, sc, res))

    # Every reply a side accepted must echo that probe's identifier and sequence (a raw socket
    # sees every ICMP message of the host, the neighbour's replies included).
    cells, details = {}, []
    for impl, result in res.items():
        wrong = []
        for p in result.probes:
            if p.outcome in (Outcome.REPLY, Outcome.CORRUPT, Outcome.DUPLICATE) and p.received:
                key = packets.echo_of_reply(p.received)
                if key is None:
                    wrong.append(f"seq {p.seq}: reply is not an echo reply")
                elif key != (p.ident, p.seq):
                    wrong.append(
                        f"seq {p.seq}: icmp.identifier/sequence of the reply {key[0]}/{key[1]} "
                        f"!= probe's {p.ident}/{p.seq}"
                    )
        cells[impl] = "all match" if not wrong else f"{len(wrong)} wrong"
        details += [f"{impl} {w}" for w in wrong]
    rows.append(
        Row(
            sc.name,
            "replies carry the probe's identifier and sequence",
            cells["handrolled"],
            cells["reference"],
            not details,
            details,
        )
    )

    # Each side's own summary against a recomputation from its raw probes.
    cells, details = {}, []
    for impl, result in res.items():
        problems = tolerance.summary_mismatches(result.summary, result.probes)
        cells[impl] = "agrees" if not problems else f"{len(problems)} differ"
        details += [f"{impl}: {p}" for p in problems]
    check = f"summary = recomputed from probes (eps {tolerance.SUMMARY_EPS_MS} ms)"
    rows.append(Row(sc.name, check, cells["handrolled"], cells["reference"], not details, details))

    rows += wire.wire_rows(
        sc.name, {i: r.probes for i, r in res.items()}, {i: r.frames for i, r in runs.items()}
    )

    mins = {impl: _min_rtt(r) for impl, r in res.items()}
    if all(v is not None for v in mins.values()):
        gap = abs(mins["handrolled"] - mins["reference"])
        ok = gap <= tolerance.SIDES_MIN_MS
        rows.append(
            Row(sc.name, f"min RTT sides agree (|diff| <= {tolerance.SIDES_MIN_MS} ms)",
                tolerance.fmt_ms(mins["handrolled"]), tolerance.fmt_ms(mins["reference"]), ok,
                [] if ok else [f"gap {gap:.3f} ms"])
        )  # fmt: skip
    if lab is not None and sc.answerer and sc.expect in (Outcome.REPLY, Outcome.TIME_EXCEEDED):
        node = lab.nodes[sc.answerer]
        low, high = lab.rtt_tolerance(node)
        ok = all(v is not None and lab.rtt_ok(v, node) for v in mins.values())
        window = f"{low:.2f}..{high:.2f}"
        outside = [
            f"{impl}: {tolerance.fmt_ms(v)} outside {window}"
            for impl, v in mins.items()
            if v is None or not lab.rtt_ok(v, node)
        ]
        rows.append(
            Row(sc.name, f"min RTT vs lab truth ({node.rtt_ms:.1f} ms, window {window})",
                tolerance.fmt_ms(mins["handrolled"]), tolerance.fmt_ms(mins["reference"]), ok,
                [] if ok else outside)
        )  # fmt: skip
    return rows, runs


@contextlib.contextmanager
def _neighbour(ctx: Context, sc: PingScenario):
    """compare/lab/neighbour.py pinging the same target with another identifier meanwhile."""
    if not sc.neighbour:
        yield
        return
    argv = [sys.executable, "-m", "compare.lab.neighbour", sc.host, "--payload-hex", PAYLOAD.hex()]
    proc = ctx.site.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # it is already pinging when our side starts
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _truth_row(lab: Lab, sc: PingScenario, res: dict[str, PingResult]) -> Row:
    """Every probe met what the lab promises for this scenario."""
    want_from = lab.nodes[sc.answerer].addr(sc.family) if sc.answerer else None
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        probes = [p for p in result.probes if p.outcome is not Outcome.DUPLICATE]
        bad = [
            p
            for p in probes
            if p.outcome is not sc.expect
            or p.reply_from != want_from
            or (sc.icmp_code is not None and p.icmp_code != sc.icmp_code)
        ]
        short = len(probes) < sc.kwargs["count"]
        cells[impl] = f"{len(bad)} differ" if bad else "too few probes" if short else "as promised"
        ok = ok and not bad and not short
        details += [
            f"{impl} seq {p.seq}: {p.outcome.value} from {p.reply_from} code {p.icmp_code}"
            for p in bad[:3]
        ]
        if short:
            details.append(f"{impl}: {len(probes)} probes, {sc.kwargs['count']} asked for")
    code = f" code {sc.icmp_code}" if sc.icmp_code is not None else ""
    promise = f"{sc.expect.value} from {want_from or 'nobody'}{code}"
    check = f"outcomes vs lab truth ({promise})"
    return Row(sc.name, check, cells["handrolled"], cells["reference"], ok, details)


def _min_rtt(result: PingResult) -> float | None:
    """Fastest answer (echo reply or ICMP error) to any probe."""
    rtts = [
        p.rtt_ms
        for p in result.probes
        if p.rtt_ms is not None and p.outcome in (Outcome.REPLY, Outcome.TIME_EXCEEDED)
    ]
    return min(rtts) if rtts else None


def _brief(result: PingResult) -> str:
    counts: dict[str, int] = {}
    for p in result.probes:
        counts[p.outcome.value] = counts.get(p.outcome.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no probes"
