"""What the ping command-line tests share: how to run ours, and what to take out of the output
before comparing it with iputils' (times, RTTs, epoch stamps vary from run to run)."""

from __future__ import annotations

import os
import re
import sys

OURS = [sys.executable, "-m", "handrolled.ping"]
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
STATS = re.compile(r"^(\d+) packets transmitted, (\d+) received", re.M)
RTT = re.compile(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", re.M)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shape_of(text: str) -> list[str]:
    """Lines with what varies from run to run (times, RTTs, epoch stamps) taken out."""
    text = re.sub(r"time=[\d.]+ ms", "time=T ms", text)
    text = re.sub(r"\[\d+\.\d{6}\] ", "[EPOCH] ", text)
    text = re.sub(r"time \d+ms", "time Tms", text)
    text = re.sub(r"= [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", "= R ms", text)
    text = re.sub(r"ipg/ewma [\d.]+/[\d.]+ ms", "ipg/ewma R ms", text)
    text = re.sub(r"pipe \d+", "pipe N", text)  # how many were in flight: timing
    return text.splitlines()


def counts(text: str) -> tuple[int, int]:
    m = STATS.search(text)
    assert m, text
    return int(m.group(1)), int(m.group(2))
