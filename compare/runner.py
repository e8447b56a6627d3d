"""`wiretwin compare ping|traceroute|smtp|all`: the product's main job and its CI gate.

Brings a lab up (unless one is named), runs every scenario of the chosen kinds with both
implementations, prints the table, writes JSON and pcaps when asked, and exits 0 when every
check agrees, 1 on any mismatch, 2 on an error that stopped the comparison.
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

from compare import report, tolerance
from compare.lab import (
    BASE_SLACK_MS,
    EARLY_SLACK_MS,
    HANDROLLED_PATH_ENV,
    STAGE_SLACK_MS,
    Lab,
    LabError,
)
from compare.scenario import Context, LocalSite, Row
from compare.traceroute import TRACE_EXCESS_MS
from handrolled.errors import WiretwinError

KINDS = ("ping", "traceroute", "smtp")
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


def run_all(
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
) -> list[Row]:
    """Every scenario of ``kind`` (``repeat`` times); the report's rows."""
    env = {HANDROLLED_PATH_ENV: str(Path(handrolled_path).resolve())} if handrolled_path else None
    rows: list[Row] = []
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
            if repeat > 1:
                for r in new_rows:
                    r.scenario = f"{r.scenario} #{round_index + 1}"
            rows += new_rows
            if pcap_dir:
                report.write_pcaps(pcap_dir, sc.name, runs, round_index)
            failed = sum(not r.ok for r in new_rows)
            verdict = "ok" if not failed else f"{failed} FAILED"
            _progress(
                f"[{step}/{total}] {sc.name}: {verdict} ({time.monotonic() - started:.1f} s)",
                progress,
            )
    return rows


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
    parser.add_argument("--no-progress", action="store_true")
    real = parser.add_argument_group(
        "explicit targets (real networks: both sides run in this namespace; never used in tests)"
    )
    real.add_argument("--host", help="ping / traceroute this host instead of the lab")
    real.add_argument("--server", metavar="HOST[:PORT]", help="send mail through this server")
    real.add_argument("--from", dest="mail_from", help="envelope sender for --server")
    real.add_argument("--to", dest="recipients", action="append", default=[], help="recipient")
    real.add_argument("--iface", help="capture on this interface only (default: all)")
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
                _progress("building the lab ...", not args.no_progress)
                target = stack.enter_context(Lab.create())
            rows = run_all(
                target,
                args.kind,
                explicit=explicit,
                quick=args.quick,
                repeat=args.repeat,
                handrolled_path=args.handrolled_path,
                pcap_dir=args.pcap,
                progress=not args.no_progress,
                only=args.only,
            )
            truth = target.truth() if isinstance(target, Lab) else None
    except WiretwinError as exc:
        print(f"wiretwin compare: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not rows:
        print("wiretwin compare: no scenario matched", file=sys.stderr)
        return EXIT_ERROR
    print(report.table(rows))
    notes = report.allowed_notes(rows)
    if notes:
        print("\nallowed differences (each field that may differ, and why):")
        print("\n".join(f"  - {n}" for n in notes))
    fails = report.failures(rows)
    if fails:
        print("\nfailures:\n" + fails)
    if args.json:
        meta = {
            "kind": args.kind,
            "started": started,
            "seconds": round(time.time() - started, 1),
            "repeat": args.repeat,
            "tolerances": tolerances(),
            "lab": truth,
            "handrolled_path": args.handrolled_path,
            "pid": os.getpid(),
        }
        report.write_json(args.json, rows, meta)
    print("\n" + report.closing_line(rows))
    return EXIT_OK if all(r.ok for r in rows) else EXIT_MISMATCH
