"""Speed of the hand-rolled traceroute against traceroute(8) on the lab's 7-hop path.

Run as root: ``python benchmarks/bench_traceroute.py [--runs 5]``.  Builds a lab, then for each
option set runs, interleaved round by round inside the client namespace (``ip netns exec``):

- ``traceroute -4 -I ...`` and ``python -m handrolled.cli.traceroute -4 -I ...`` with the same
  options: wall time of the whole command, as a user sees it.  Their ratio is the CLI against
  CLI comparison issue 4's speed goal is about;
- ``python -m handrolled.cli.traceroute --json ...``: wall time, and the tracer's own ``elapsed_ms``
  from its output (the engine: trace and reverse DNS, after start-up and forward resolution).
  Wall minus engine is taken per run, from the same process;
- start-up anchors, no trace: ``ip netns exec NS true`` and ``ip netns exec NS python -c pass``.

Prints medians and minimums, and ratios of medians and of minimums, all measured in this run.
The engine-against-traceroute(8) ratio sets our trace alone against their whole command (start
included), so it flatters ours; it is labelled so.  The path has a silent hop (r3), so the -w
rules decide the time.
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


def _line(label: str, values: list[float], against: list[float] | None = None) -> str:
    """``label  median / min`` in seconds, and with ``against`` the two ratios to it."""
    text = f"    {label:<44} {statistics.median(values):7.3f} / {min(values):7.3f} s"
    if against is not None:
        by_median = statistics.median(values) / statistics.median(against)
        by_min = min(values) / min(against)
        text += f"   ratio {by_median:5.2f} / {by_min:5.2f}"
    return text


def bench(lab: Lab, runs: int) -> None:
    host = "target.lab.test"
    ns = lab.ns("client")
    ours = [sys.executable, "-m", "handrolled.cli.traceroute"]
    python_pass = [sys.executable, "-c", "pass"]
    _timed(lab, python_pass)  # warm the page cache before the first timed round
    print(f"{runs} runs each, interleaved round by round; lab path client -> r1..r6 -> target,")
    print("r3 silent.  Times: median / min; ratios: of the medians / of the minimums.\n")
    for label, opts in OPTION_SETS.items():
        system, mine, json_wall, engine, outside, netns_true, python_start = ([] for _ in range(7))
        for _ in range(runs):
            netns_true.append(_timed(lab, ["true"])[0])
            python_start.append(_timed(lab, python_pass)[0])
            system.append(_timed(lab, ["traceroute", "-4", "-I", *opts, host])[0])
            mine.append(_timed(lab, [*ours, "-4", "-I", *opts, host])[0])
            wall, out = _timed(lab, [*ours, "-4", "-I", "--json", *opts, host])
            trace = json.loads(out)["elapsed_ms"] / 1000.0
            json_wall.append(wall)
            engine.append(trace)
            outside.append(wall - trace)
        print(label)
        print("  CLI vs CLI, wall time of the whole command (issue 4's comparison):")
        print(_line("traceroute(8) -I", system))
        print(_line("python -m handrolled.cli.traceroute -I", mine, against=system))
        print("  handrolled --json, each line from the same runs:")
        print(_line("wall", json_wall))
        print(_line("engine (its elapsed_ms: trace + reverse DNS)", engine))
        print(_line("wall - engine, per run: start, resolve, exit", outside))
        print(
            "  engine vs the whole traceroute(8) command (theirs counts its start; flatters ours):"
        )
        print(_line("engine", engine, against=system))
        print("  start-up anchors, no trace, in the same rounds:")
        print(_line(f"ip netns exec {ns} true", netns_true))
        print(_line(f"ip netns exec {ns} python -c pass", python_start))
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with Lab.create() as lab:
        bench(lab, max(args.runs, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
