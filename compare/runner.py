"""`wiretwin compare ping|traceroute|smtp|paths|all`: the product's main job and its CI gate.

Brings a lab up (unless one is named), runs every scenario of the chosen kinds with both
implementations, prints a summary (the full table with --verbose), writes JSON, HTML, JUnit and
pcaps when asked, and exits 0 when every check agrees, 1 on any mismatch, 2 on an error that
stopped the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compare import baseline, report, tolerance
from compare.lab import (
    BASE_SLACK_MS,
    EARLY_SLACK_MS,
    HANDROLLED_PATH_ENV,
    STAGE_SLACK_MS,
    Lab,
    LabError,
)
from compare.report import ScenarioRun
from compare.scenario import Context, LocalSite, Row
from compare.traceroute import TRACE_EXCESS_MS
from handrolled.errors import WiretwinError

KINDS = ("ping", "traceroute", "smtp", "paths")  # paths: the fork (compare/paths.py)
EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def _modules(kind: str) -> list:
    names = KINDS if kind == "all" else (kind,)
    return [importlib.import_module(f"compare.{name}") for name in names]


def _progress(text: str, enabled: bool) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Explicit:
    """Targets the user names instead of the lab (real networks; never used by the tests)."""

    host: str | None = None  # ping and traceroute
    server: str | None = None  # smtp
    port: int = 25
    mail_from: str | None = None
    recipients: tuple[str, ...] = ()
    iface: str | None = None  # capture interface; None: every interface

    def plan(self, kind: str, quick: bool) -> list:
        from compare import ping, smtp, traceroute

        out = []
        if self.host and kind in ("ping", "all"):
            out += [(ping, sc) for sc in ping.explicit_scenarios(self.host, quick)]
        if self.host and kind in ("traceroute", "all"):
            out += [(traceroute, sc) for sc in traceroute.explicit_scenarios(self.host, quick)]
        if self.server and kind in ("smtp", "all"):
            scs = smtp.explicit_scenarios(
                self.server, self.port, self.mail_from or "", list(self.recipients)
            )
            out += [(smtp, sc) for sc in scs]
        return out


def scenario_truth(lab: Lab | None, sc: object) -> dict | None:
    """What the lab promises for a scenario, for the report's figures and plots: a ping's
    answering node (its RTT and the window a minimum RTT must fall in), a trace's hops."""
    if lab is None:
        return None
    request = getattr(sc, "request", None)  # a scenario's family, or its request's
    family = getattr(sc, "family", None) or getattr(request, "family", None) or 4
    answerer = getattr(sc, "answerer", None)
    expect = getattr(sc, "expect", None)
    to = getattr(sc, "to", None)
    if answerer and expect is not None and expect.name in ("REPLY", "TIME_EXCEEDED"):
        node = lab.nodes[answerer]
        return {
            "answerer": answerer,
            "address": node.addr(family),
            "promised_ms": round(node.rtt_ms, 3),
            "window_ms": [round(v, 3) for v in lab.rtt_tolerance(node)],
        }
    if to and hasattr(sc, "method"):
        return {
            "hops": [
                {
                    "ttl": n.ttl,
                    "role": n.role,
                    "address": n.addr(family),
                    "answers": n.answers,
                    "rtt_ms": round(n.rtt_ms, 3),
                    "window_ms": [round(v, 3) for v in lab.rtt_tolerance(n)],
                }
                for n in lab.hops(to)
            ]
        }
    return None


def run_all(target: Lab | Context, kind: str, **kwargs: Any) -> list[Row]:
    """Every scenario of ``kind`` (run_scenarios' keywords); the report's rows."""
    return [r for sr in run_scenarios(target, kind, **kwargs) for r in sr.rows]


def run_scenarios(
    target: Lab | Context,
    kind: str,
    *,
    explicit: Explicit | None = None,
    quick: bool = False,
    repeat: int = 1,
    handrolled_path: str | None = None,
    pcap_dir: str | None = None,
    progress: bool = True,
    only: str | None = None,
) -> list[ScenarioRun]:
    """Every scenario of ``kind`` (``repeat`` times): its rows, each side's run, its truth."""
    env = {HANDROLLED_PATH_ENV: str(Path(handrolled_path).resolve())} if handrolled_path else None
    done: list[ScenarioRun] = []
    ctx = target if isinstance(target, Context) else Context.of_lab(target)
    if explicit is not None:
        plan = explicit.plan(kind, quick)
    else:
        assert ctx.lab is not None
        plan = [(mod, sc) for mod in _modules(kind) for sc in mod.scenarios(ctx.lab, quick=quick)]
    if only:
        plan = [(mod, sc) for mod, sc in plan if only in sc.name]
    total = len(plan) * repeat
    step = 0
    for round_index in range(repeat):
        for mod, sc in plan:
            step += 1
            _progress(f"[{step}/{total}] {sc.name} ...", progress)
            started = time.monotonic()
            new_rows, runs = mod.run(ctx, sc, replace(mod.SIDES, env=env))
            name = sc.name
            if repeat > 1:
                name = f"{sc.name} #{round_index + 1}"
                for r in new_rows:
                    r.scenario = f"{r.scenario} #{round_index + 1}"
            kind_name = mod.__name__.rsplit(".", 1)[-1]
            done.append(ScenarioRun(name, kind_name, new_rows, runs, scenario_truth(ctx.lab, sc)))
            if pcap_dir:
                report.write_pcaps(pcap_dir, sc.name, runs, round_index)
            failed = sum(not r.ok for r in new_rows)
            verdict = "ok" if not failed else f"{failed} FAILED"
            _progress(
                f"[{step}/{total}] {sc.name}: {verdict} ({time.monotonic() - started:.1f} s)",
                progress,
            )
    return done


def tolerances() -> dict[str, str]:
    return {
        "summary_eps_ms": f"{tolerance.SUMMARY_EPS_MS} (side summary vs recomputed)",
        "wire_early_ms": f"{tolerance.WIRE_EARLY_MS} (reported RTT may undercut wire)",
        "wire_median_ms": f"{tolerance.WIRE_MEDIAN_MS} (median reported - wire RTT per side)",
        "sides_min_ms": f"{tolerance.SIDES_MIN_MS} (ping: |min RTT handrolled - reference|)",
        "trace_excess_ms": f"{TRACE_EXCESS_MS} (traceroute: median of min RTT - promised)",
        "lab_window": (
            f"[promised - {EARLY_SLACK_MS} ms, promised + {STAGE_SLACK_MS} ms per delay stage"
            f" + {BASE_SLACK_MS} ms] on minimum RTTs"
        ),
    }


def write_reports(args: argparse.Namespace, scenarios: list[ScenarioRun], meta: dict) -> None:
    """The files asked for (JSON, HTML, JUnit) and the GitHub job summary when it is set."""
    rows = [r for sr in scenarios for r in sr.rows]
    if args.json:
        report.write_json(args.json, rows, meta, scenarios)
    if args.html:
        from compare import report_html  # matplotlib: imported only when asked for

        report_html.write_html(args.html, scenarios, meta)
    if args.junit:
        from compare import junit

        junit.write_junit(args.junit, scenarios)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as out:
            out.write(report.github_summary(scenarios))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wiretwin compare", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=(*KINDS, "all"))
    parser.add_argument(
        "--lab",
        action="store_true",
        help="run on a new lab: the default without --lab-id or --host/--server (accepted, no-op)",
    )
    parser.add_argument("--lab-id", help="use a lab that is already up (wiretwin lab up)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--pcap", metavar="DIR", help="write one pcap per scenario and side")
    parser.add_argument("--quick", action="store_true", help="fewer probes per scenario")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every scenario N times (flakiness)"
    )
    parser.add_argument("--only", metavar="TEXT", help="only scenarios whose name contains TEXT")
    parser.add_argument(
        "--handrolled-path", metavar="DIR", help="import handrolled from DIR (fault injection)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress on stderr (off when not a tty)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the full table of every check"
    )
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML (a suite per scenario)")
    real = parser.add_argument_group(
        "explicit targets (real networks: both sides run in this namespace; never used in tests)"
    )
    real.add_argument("--host", help="ping / traceroute this host instead of the lab")
    real.add_argument("--server", metavar="HOST[:PORT]", help="send mail through this server")
    real.add_argument("--from", dest="mail_from", help="envelope sender for --server")
    real.add_argument("--to", dest="recipients", action="append", default=[], help="recipient")
    real.add_argument("--iface", help="capture on this interface only (default: all)")
    real.add_argument(
        "--baseline",
        metavar="OLD.json",
        help="report what changed since a previous run's --json (hops, outcomes, RTT shifts)",
    )
    real.add_argument(
        "--baseline-rtt-ms",
        type=float,
        default=baseline.RTT_SHIFT_MS,
        metavar="MS",
        help=f"min RTT shift allowed since the baseline (default {baseline.RTT_SHIFT_MS})",
    )
    args = parser.parse_args(argv)
    explicit = None
    if args.host or args.server:
        if args.lab_id:
            parser.error("--host/--server and --lab-id exclude each other")
        if args.server and not (args.mail_from and args.recipients):
            parser.error("--server needs --from and at least one --to")
        server, _, port = (args.server or "").partition(":")
        if port and not port.isdigit():
            parser.error(f"--server {args.server}: the port must be a number")
        explicit = Explicit(args.host, server or None, int(port or 25), args.mail_from,
                            tuple(args.recipients), args.iface)  # fmt: skip
    if args.repeat < 1 or args.repeat > 1000:
        parser.error("--repeat must be 1..1000")
    if args.handrolled_path and not (Path(args.handrolled_path) / "handrolled").is_dir():
        parser.error(f"--handrolled-path {args.handrolled_path}: no handrolled/ package there")
    old = None
    if args.baseline:
        if explicit is None:
            parser.error("--baseline needs --host or --server (the lab has its own truth)")
        if args.baseline_rtt_ms < 0:
            parser.error("--baseline-rtt-ms cannot be negative")
        try:
            old = baseline.load(args.baseline)
        except baseline.BaselineError as exc:
            parser.error(str(exc))
    progress = not args.no_progress and sys.stderr.isatty()

    started = time.time()
    try:
        with contextlib.ExitStack() as stack:
            if explicit is not None:
                target: Lab | Context = Context(LocalSite(explicit.iface))
            elif args.lab_id:
                target = Lab.load(args.lab_id)
                if not target.delay_alive():
                    raise LabError(
                        f"lab {args.lab_id}: its delay stage is not running, so the delayed links"
                        " drop every packet; rebuild it (wiretwin lab down --lab-id"
                        f" {args.lab_id}; wiretwin lab up)"
                    )
            else:
                _progress("building the lab ...", progress)
                target = stack.enter_context(Lab.create())
            scenarios = run_scenarios(
                target,
                args.kind,
                explicit=explicit,
                quick=args.quick,
                repeat=args.repeat,
                handrolled_path=args.handrolled_path,
                pcap_dir=args.pcap,
                progress=progress,
                only=args.only,
            )
            truth = target.truth() if isinstance(target, Lab) else None
    except WiretwinError as exc:
        print(f"wiretwin compare: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not scenarios:
        print("wiretwin compare: no scenario matched", file=sys.stderr)
        return EXIT_ERROR
    if old is not None:
        baseline.add_rows(old, scenarios, args.baseline_rtt_ms)
    rows = [r for sr in scenarios for r in sr.rows]
    meta = {
        "kind": args.kind,
        "started": started,
        "seconds": round(time.time() - started, 1),
        "repeat": args.repeat,
        "tolerances": tolerances(),
        "lab": truth,
        "handrolled_path": args.handrolled_path,
        "pid": os.getpid(),
        "targets": None if explicit is None else {"host": explicit.host, "server": explicit.server},
        "baseline": args.baseline,
    }
    try:
        write_reports(args, scenarios, meta)
    except OSError as exc:
        print(f"wiretwin compare: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    text = report.terminal(scenarios, verbose=args.verbose)
    body, _, last = text.rpartition("\n")
    print(body)
    errors = report.github_errors(rows) if os.environ.get("GITHUB_ACTIONS") == "true" else []
    if errors:
        print("\n".join(errors))
    print(last)  # the closing line, alone on the last line
    return EXIT_OK if all(r.ok for r in rows) else EXIT_MISMATCH
