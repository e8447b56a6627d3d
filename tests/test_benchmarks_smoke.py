"""The benchmarks still run: the local ones (codec, SMTP) in --quick mode, and run_all.py.

No timing is asserted (speed goals live in the benchmarks, never in tests); these only check
that each script exits 0, prints its ratio lines and writes what it promises, so they cannot rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.parametrize(
    ("script", "anchors"),
    [
        ("bench_codec.py", ["ours / dpkt", "ours / scapy", "ours / floor"]),
        ("bench_smtp.py", ["/ smtplib (per message)", "/ aiosmtplib (one connection)"]),
        ("bench_smtp_sessions.py", ["/ smtplib (one connection)", "/ aiosmtplib (one"]),
    ],
)
def test_benchmark_quick_mode_prints_ratios(tmp_path: Path, script: str, anchors: list[str]):
    out = tmp_path / "result.json"
    proc = _run(BENCH / script, "--quick", "--json", out)
    assert proc.returncode == 0, proc.stderr
    ratio_lines = [line for line in proc.stdout.splitlines() if line.startswith("ratio ")]
    for anchor in anchors:
        assert any(anchor in line for line in ratio_lines), f"no ratio against {anchor}"
    for line in ratio_lines:
        assert float(line.split(" = ")[1].split()[0]) > 0, line
    result = json.loads(out.read_text())
    assert result["rows"] and set(ratio_lines) <= set(result["ratios"])


def test_codec_benchmark_reports_both_goals():
    proc = _run(BENCH / "bench_codec.py", "--quick")
    goals = [line for line in proc.stdout.splitlines() if line.startswith("goal ")]
    assert len(goals) == 2 and all(g.endswith(("met", "NOT met")) for g in goals), proc.stdout


@pytest.mark.parametrize("script", ["bench_smtp.py", "bench_smtp_sessions.py"])
def test_smtp_benchmarks_state_the_session_goal_beside_the_measured_ratio(script: str):
    # issue 17: wiretwin's session >= 1.5x smtplib's rate, both over one connection to the
    # same aiosmtpd; the goal line is the one with the server in its own process, and the
    # in-process benchmark states the same comparison as a figure of its own setting
    proc = _run(BENCH / script, "--quick")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    goals = [line for line in lines if line.startswith("goal ")]
    if script == "bench_smtp.py":
        assert goals == [], proc.stdout
        goals = [line for line in lines if line.startswith("in this setting ")]
    assert len(goals) == 1 and goals[0].endswith(("met", "NOT met")), proc.stdout
    ratio = next(line for line in lines if "session (one connection) / smtplib (one" in line)
    measured = ratio.split(" = ")[1].split()[0]
    assert f">= 1.5x smtplib's rate: {measured}x " in goals[0]  # the same figure, this run
    assert goals[0].endswith("NOT met") == (float(measured) < 1.5)


def test_run_all_writes_the_markdown_report(tmp_path: Path):
    report = tmp_path / "bench.md"
    proc = _run(BENCH / "run_all.py", "--quick", "--skip-lab", "--output", report)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    assert "- machine: " in text and "CPUs" in text and "- Python: " in text
    assert "| wiretwin send_mail" in text and "| ours " in text
    assert "## SMTP sessions, server in its own process" in text  # local, never skipped
    assert text.count("- goal ") == 3  # codec's two, the SMTP session goal (own process)
    assert text.count("Skipped: --skip-lab") >= 2  # bench_ping, bench_traceroute and any newer


def test_bad_arguments_are_usage_errors():
    proc = _run(BENCH / "bench_codec.py", "--chunks", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
