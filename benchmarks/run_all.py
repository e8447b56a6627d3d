"""Run every benchmark and write one Markdown report (``make bench``).

Run: ``python benchmarks/run_all.py [--output reports/bench.md] [--quick] [--skip-lab]``.

- ``bench_codec.py``, ``bench_smtp.py`` and ``bench_smtp_sessions.py`` need neither root nor
  the lab; their JSON output becomes tables (tabulate) with the ratio and goal lines each
  printed;
- ``bench_ping.py``, ``bench_traceroute.py`` and any other ``benchmarks/bench_*.py`` (titled
  by its docstring's first line) build a lab, so they need root and run under
  ``flock /tmp/wiretwin-lab.lock`` (one lab at a time on a shared machine); their output is
  copied into the report as printed.  Without root (or with ``--skip-lab``) they are listed
  as skipped, with the reason.

The report opens with the machine (CPU count and model, Python), the date (UTC) and the load
average at the start, since every figure depends on them.  Exit status: 0 if every benchmark
that ran succeeded, 1 otherwise (the report is written either way).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAB_LOCK = "/tmp/wiretwin-lab.lock"
LAB_TIMEOUT = 1800  # seconds for one lab benchmark
LOCAL_TIMEOUT = 600
LAB_BENCHMARKS = {
    "bench_ping.py": "Ping RTT error against the capture (lab)",
    "bench_traceroute.py": "Traceroute and CLI wall time (lab)",
}
JSON_BENCHMARKS = {"bench_codec.py", "bench_smtp.py", "bench_smtp_sessions.py"}  # no lab


def lab_benchmarks() -> dict[str, str]:
    """Script name -> section title: the known lab benchmarks, then any other bench_*.py."""
    found = dict(LAB_BENCHMARKS)
    for path in sorted(HERE.glob("bench_*.py")):
        if path.name not in found and path.name not in JSON_BENCHMARKS:
            doc = ast.get_docstring(ast.parse(path.read_text())) or path.name
            found[path.name] = f"{doc.splitlines()[0].rstrip('.')} (lab)"
    return found


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "load": load,
    }


def _run(argv: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    print(f"$ {' '.join(argv)}", flush=True)
    try:
        proc = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout} s")
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        print(proc.stderr, end="", file=sys.stderr, flush=True)
    return proc


def _failure(name: str, proc: subprocess.CompletedProcess[str]) -> str:
    tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
    return f"**{name} failed** (exit {proc.returncode}):\n\n```\n{tail}\n```\n"


def codec_section(result: dict) -> str:
    ours = {
        r["operation"]: r["us_per_packet"] for r in result["rows"] if r["implementation"] == "ours"
    }
    table = [
        [
            r["operation"],
            r["implementation"],
            f"{r['us_per_packet']:.2f}",
            ""
            if r["implementation"] == "ours"
            else f"{ours[r['operation']] / r['us_per_packet']:.3g}",
            r["note"],
        ]
        for r in result["rows"]
    ]
    lines = [
        f"Per packet: 10th percentile of {result['chunks']} chunks of ~{result['chunk_ms']} ms, "
        "implementations interleaved chunk by chunk; every figure includes "
        f"{result['loop_call_us'] * 1e3:.0f} ns of loop and call.",
        "",
        tabulate(
            table,
            headers=[
                "operation",
                "implementation",
                "µs/packet",
                "ours / this (<1: ours faster)",
                "note",
            ],
            tablefmt="github",
        ),
        "",
    ]
    lines += [f"- {line}" for line in result["goals"]]
    return "\n".join(lines) + "\n"


def smtp_section(result: dict) -> str:
    table = [
        [
            r["client"],
            r["connections"],
            f"{r['messages_per_s']:.0f}",
            f"{r['median_messages_per_s']:.0f}",
        ]
        for r in result["rows"]
    ]
    lines = [
        f"{result['rounds']} rounds x {result['per_chunk']} messages per client, interleaved; "
        f"{result['message_octets']}-octet message, one recipient, {result['server']} "
        f"(all {result['messages_sent']} accepted).  Rate: 1 / 10th-percentile "
        "chunk time per message.",
        "",
        tabulate(
            table,
            headers=["client", "connection", "msgs/s", "median msgs/s"],
            tablefmt="github",
        ),
        "",
    ]
    lines += [f"- {line}" for line in result["ratios"] + result["goals"]]
    return "\n".join(lines) + "\n"


def json_benchmark(name: str, extra: list[str], render) -> tuple[str, bool]:
    """Run ``benchmarks/name`` with ``--json``; its Markdown section and whether it passed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, str(HERE / name), "--json", str(out), *extra]
        proc = _run(argv, LOCAL_TIMEOUT)
        if proc.returncode or not out.exists():
            return _failure(name, proc), False
        return render(json.loads(out.read_text())), True


def lab_benchmark(name: str, skip: str | None) -> tuple[str, bool]:
    """Run a lab benchmark under the lab lock; its output verbatim, or why it was skipped."""
    if skip:
        return f"Skipped: {skip}.\n", True
    argv = ["flock", LAB_LOCK, sys.executable, str(HERE / name)]
    proc = _run(argv, LAB_TIMEOUT)
    if proc.returncode:
        return _failure(name, proc), False
    return f"```\n{proc.stdout.rstrip()}\n```\n", True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "bench.md")
    parser.add_argument("--quick", action="store_true", help="the local benchmarks in --quick mode")
    parser.add_argument("--skip-lab", action="store_true", help="skip the lab benchmarks")
    args = parser.parse_args(argv)

    info = machine()
    quick = ["--quick"] if args.quick else []
    lab_skip = None
    if args.skip_lab:
        lab_skip = "--skip-lab"
    elif os.geteuid() != 0:
        lab_skip = "needs root (a lab of network namespaces)"
    elif shutil.which("flock") is None:
        lab_skip = "flock(1) not found (the lab lock)"

    sections = [
        (
            "Codec: ICMP echo, IPv4, UDP/TCP probes",
            *json_benchmark("bench_codec.py", quick, codec_section),
        ),
        ("SMTP delivery rate", *json_benchmark("bench_smtp.py", quick, smtp_section)),
        (
            "SMTP sessions, server in its own process",
            *json_benchmark("bench_smtp_sessions.py", quick, smtp_section),
        ),
    ]
    sections += [
        (title, *lab_benchmark(name, lab_skip)) for name, title in lab_benchmarks().items()
    ]
    header = [
        "# wiretwin benchmarks",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cpus']} CPUs, {info['cpu']}; {info['system']}",
        f"- Python: {info['python']}",
        f"- load average at the start (1, 5, 15 min): {info['load']}",
        "- ratios compare implementations measured side by side in the same run",
        "",
    ]
    body = [f"## {title}\n\n{text}" for title, text, _ok in sections]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(header) + "\n" + "\n".join(body))
    print(f"wrote {args.output}")
    return 0 if all(ok for _title, _text, ok in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
