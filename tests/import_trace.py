"""Which modules a fresh interpreter imported, read from CPython's own ``-X importtime`` report
on stderr (not from our code's account of itself); shared by the start-up tests."""

from __future__ import annotations

import os
import subprocess
import sys


def imported(argv: list[str]) -> set[str]:
    """Every module ``python -X importtime ARGV`` imported."""
    return traced_run(argv)[0]


def traced_run(argv: list[str]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """``python -X importtime ARGV``: the modules it imported, and the process (its exit
    status and output, for a test to check that the run did what it names)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the report's own header line
                modules.add(name)
    assert modules, proc.stderr
    return modules, proc
