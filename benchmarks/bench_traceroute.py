"""Speed of the hand-rolled traceroute against traceroute(8) on the lab's 7-hop path.

Run as root: ``python benchmarks/bench_traceroute.py [--runs 5]``.  Builds a lab, then for each
option set runs, interleaved round by round, ``traceroute -4 -I ...`` and ``python -m
handrolled.traceroute -4 -I ...`` with the same options inside the client namespace (wall time
of the whole command, as a user sees it), and reads the tracer's own elapsed time from its
``--json`` output (the trace without interpreter start-up).  Prints medians and the ratios
measured in this run.  The path has a silent hop (r3), so the -w rules decide the time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from compare.lab import Lab

OPTION_SETS = {
    "defaults (-q 3 -N 16 -w 5,3,10)": [],
    "one at a time (-q 1 -N 1 -w 2)": ["-q", "1", "-N", "1", "-w", "2"],
}


def _timed(lab: Lab, argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = lab.exec("client", argv, timeout=120)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, proc.stdout


def bench(lab: Lab, runs: int) -> None:
    host = "target.lab.test"
    ours = [sys.executable, "-m", "handrolled.traceroute"]
    baseline = lab.exec("client", [sys.executable, "-c", "pass"]).returncode  # warm caches
    assert baseline == 0
    print(f"{runs} runs each, medians; lab path client -> r1..r6 -> target, r3 silent\n")
    for label, opts in OPTION_SETS.items():
        system, mine, mine_json, trace_only = [], [], [], []
        for _ in range(runs):
            system.append(_timed(lab, ["traceroute", "-4", "-I", *opts, host])[0])
            mine.append(_timed(lab, [*ours, "-4", "-I", *opts, host])[0])
            wall, out = _timed(lab, [*ours, "-4", "-I", "--json", *opts, host])
            mine_json.append(wall)
            trace_only.append(json.loads(out)["elapsed_ms"] / 1000.0)
        t_sys = statistics.median(system)
        t_mine = statistics.median(mine)
        t_trace = statistics.median(trace_only)
        print(label)
        print(f"  traceroute(8) -I                 {t_sys:7.3f} s")
        print(f"  handrolled CLI (python -m ...)   {t_mine:7.3f} s   ratio {t_mine / t_sys:5.2f}")
        print(f"  handrolled trace only (in-proc)  {t_trace:7.3f} s   ratio {t_trace / t_sys:5.2f}")
        print(f"  python start-up + imports        {t_mine - t_trace:7.3f} s\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with Lab.create() as lab:
        bench(lab, max(args.runs, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
