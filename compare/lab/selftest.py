"""Check that a lab keeps its promises, with tools nobody here wrote: traceroute(8), ping(8).

Used by `wiretwin lab selftest` and by tests/test_lab.py.  Each check is a row: what the lab
promises, what the tool saw, a verdict.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from tabulate import tabulate

from compare.lab import Lab, Node

PING_COUNT = 6
PING_INTERVAL = "0.2"


@dataclass(frozen=True)
class Check:
    name: str
    expected: str
    observed: str
    ok: bool


_HOP_LINE = re.compile(r"^\s*(\d+)\s+(.*)$")
_ADDR_IN_PARENS = re.compile(r"\(([0-9a-fA-F:.]+)\)")
_RTT_SUMMARY = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def parse_traceroute(output: str) -> dict[int, list[str]]:
    """traceroute(8) output -> {ttl: [token, ...]}: the first address or '*' per hop line."""
    hops: dict[int, list[str]] = {}
    for line in output.splitlines()[1:]:
        match = _HOP_LINE.match(line)
        if not match:
            continue
        ttl, rest = int(match.group(1)), match.group(2).split()
        if rest and rest[0] == "*" and all(t == "*" for t in rest):
            hops[ttl] = ["*"]
            continue
        addr = _ADDR_IN_PARENS.search(match.group(2))
        hops[ttl] = [addr.group(1) if addr else rest[0], *rest]
    return hops


def parse_ping_min(output: str) -> float | None:
    match = _RTT_SUMMARY.search(output)
    return float(match.group(1)) if match else None


def traceroute(lab: Lab, family: int, mode: str, numeric: bool) -> subprocess.CompletedProcess:
    """traceroute(8) from the client to the target; mode is -I, -U or -T."""
    argv = ["traceroute", f"-{family}", mode, "-q", "1", "-w", "1", "-m", "10"]
    if numeric:
        argv.append("-n")
    argv.append(lab.target.addr(family) if numeric else lab.target.hostname)
    return lab.exec("client", argv, timeout=60)


def ping(
    lab: Lab, address: str, family: int, count: int = PING_COUNT
) -> subprocess.CompletedProcess:
    argv = ["ping", f"-{family}", "-c", str(count), "-i", PING_INTERVAL, "-W", "1", "-n", address]
    return lab.exec("client", argv, timeout=30)


def check_lab(lab: Lab) -> list[Check]:
    checks: list[Check] = []
    for family in (4, 6):
        for mode in ("-I", "-U", "-T"):
            out = traceroute(lab, family, mode, numeric=True).stdout
            hops = parse_traceroute(out)
            expected = [n.addr(family) if n.answers else "*" for n in lab.hops()]
            observed = [hops.get(n.ttl, ["?"])[0] for n in lab.hops()]
            checks.append(
                Check(
                    f"traceroute(8) -{family} {mode} hops",
                    " ".join(expected),
                    " ".join(observed),
                    expected == observed,
                )
            )
        out = traceroute(lab, family, "-I", numeric=False).stdout
        names = {
            ttl: tokens[1] for ttl, tokens in parse_traceroute(out).items() if tokens[0] != "*"
        }
        expected_names = [n.hostname or n.addr(family) for n in lab.hops() if n.answers]
        observed_names = [names.get(n.ttl, "?") for n in lab.hops() if n.answers]
        checks.append(
            Check(
                f"traceroute(8) -{family} -I names",
                " ".join(expected_names),
                " ".join(observed_names),
                expected_names == observed_names,
            )
        )

    def rtt_check(args: tuple[Node, int]) -> Check:
        node, family = args

        def measure() -> dict[str, list[float | None]]:
            return {node.role: [parse_ping_min(ping(lab, node.addr(family), family).stdout)]}

        # a late minimum is measured again, an early one fails (Lab.settle_min_rtts)
        verdict = lab.settle_min_rtts({node.role: node}, measure(), measure)
        minimum = verdict.minimum.get(node.role)
        low, high = lab.rtt_tolerance(node)
        observed = "no reply" if minimum is None else f"min {minimum:.3f} ms"
        if minimum is not None and verdict.measurements > 1:
            observed += f" ({verdict.measurements} runs)"
        ok = verdict.ok
        return Check(
            f"ping(8) -{family} {node.role} RTT",
            f"{node.rtt_ms:.1f} ms ({low:.2f}..{high:.2f})",
            observed,
            ok,
        )

    jobs = [(node, family) for family in (4, 6) for node in lab.hops()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        checks += list(pool.map(rtt_check, jobs))

    for family in (4, 6):
        out = ping(lab, lab.prohibited.addr(family), family, count=2).stdout
        said = "Administratively prohibited" in out or "Packet filtered" in out
        checks.append(
            Check(
                f"ping(8) -{family} prohibited",
                "admin-prohibited",
                "seen" if said else out.strip()[-80:],
                said,
            )
        )
        blackhole = lab.blackhole6 if family == 6 else lab.blackhole4
        proc = ping(lab, blackhole, family, count=2)
        silent = proc.returncode == 1 and " 0 received" in proc.stdout
        checks.append(
            Check(
                f"ping(8) -{family} blackhole",
                "no reply, exit 1",
                f"exit {proc.returncode}",
                silent,
            )
        )

    started = time.monotonic()
    proc = lab.exec("client", ["getent", "hosts", "no-such-host.lab.test"], timeout=10)
    took = time.monotonic() - started
    checks.append(
        Check(
            "unknown name fails fast",
            "exit 2 in < 1 s",
            f"exit {proc.returncode} in {took:.2f} s",
            proc.returncode == 2 and took < 1,
        )
    )
    return checks


def run_selftest(as_json: bool = False) -> int:
    from compare.cli import print_truth

    with Lab.create() as lab:
        if not as_json:
            print_truth(lab)
            print()
        checks = check_lab(lab)
    failed = sum(not c.ok for c in checks)
    if as_json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "failed": failed}, indent=2))
    else:
        rows = [(c.name, c.expected, c.observed, "ok" if c.ok else "FAIL") for c in checks]
        print(tabulate(rows, headers=("check", "lab promises", "tool saw", "verdict")))
        print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0
