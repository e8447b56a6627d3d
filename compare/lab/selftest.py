"""Check that a lab keeps its promises, with tools nobody here wrote: traceroute(8), ping(8)
and, for the faults on the wire, tshark reading a capture.

Used by `wiretwin lab selftest` and by tests/test_lab.py and tests/test_lab_faults.py.  Each
check is a row: what the lab promises, what the tool saw, a verdict.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tabulate import tabulate

from compare.lab import Lab, Node, faults, plan

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


# ---- the promises beside the chain: faults, forger, unreachables, lost probe, fork, MTU ----------
_REPLY_LINE = re.compile(r"bytes from ([0-9a-fA-F:.]+): icmp_seq=(\d+)(.*)$")
_STATS = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?")
_IP_TOKEN = re.compile(r"^(?:\d+\.\d+\.\d+\.\d+|[0-9a-fA-F]*:[0-9a-fA-F:]+)$")


def parse_ping_replies(output: str) -> list[tuple[str, int, str]]:
    """ping(8) output -> (source, icmp_seq, marks such as "(DUP!)") per reply line, in order."""
    return [
        (m.group(1), int(m.group(2)), m.group(3).strip())
        for line in output.splitlines()
        if (m := _REPLY_LINE.search(line))
    ]


def parse_ping_stats(output: str) -> tuple[int, int, int] | None:
    """(transmitted, received, duplicates) from ping(8)'s statistics line."""
    m = _STATS.search(output)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def parse_hop_lines(output: str) -> dict[int, tuple[list[str], list[str]]]:
    """traceroute(8) -n output -> {ttl: (every address on the line, per probe "r", "*" or an
    annotation such as "!H" after its "r")}."""
    hops: dict[int, tuple[list[str], list[str]]] = {}
    for line in output.splitlines()[1:]:
        match = _HOP_LINE.match(line)
        if not match:
            continue
        addrs: list[str] = []
        probes: list[str] = []
        for token in match.group(2).split():
            if _IP_TOKEN.match(token):
                addrs.append(token)
            elif token == "*":
                probes.append("*")
            elif token == "ms":
                probes.append("r")
            elif token.startswith("!") and probes:
                probes[-1] += token
        hops[int(match.group(1))] = (addrs, probes)
    return hops


def _check(name: str, expected: str, observed: str, ok: bool) -> Check:
    return Check(name, expected, observed, ok)


def check_faults_ping(lab: Lab, family: int) -> Check:
    """ping(8) -c 6 to faulty meets the fault plan: 2 before 1, seq 3 twice, seq 4's data wrong,
    seq 5 (bad checksum, ignored by ping(8)) and seq 6 (lost) never received."""
    out = ping(lab, lab.nodes["faulty"].addr(family), family, count=6).stdout
    replies = parse_ping_replies(out)
    seqs = [seq for _, seq, _ in replies]
    dups = [seq for _, seq, marks in replies if "(DUP!)" in marks]
    wrong = re.findall(r"wrong data byte #(\d+)", out)
    observed = f"order {seqs}, DUP! {dups}, wrong byte {wrong}, stats {parse_ping_stats(out)}"
    ok = seqs == [2, 1, 3, 3, 4] and dups == [3] and wrong == [str(faults.DEFAULT_BYTE)]
    ok = ok and parse_ping_stats(out) == (6, 4, 1)
    expected = "order [2, 1, 3, 3, 4], DUP! [3], wrong byte ['20'], stats (6, 4, 1)"
    return _check(f"ping(8) -{family} faulty faults", expected, observed, ok)


def _tshark_echoes(pcap: Path) -> list[dict[str, str]]:
    """Every ICMP(v6) echo packet in ``pcap`` as tshark dissects it (checksums validated)."""
    fields = ["ip.src", "ipv6.src", "icmp.type", "icmpv6.type", "icmp.ident", "icmp.seq"]
    fields += ["ip.dst", "ipv6.dst"]
    fields += ["icmpv6.echo.identifier", "icmpv6.echo.sequence_number"]
    fields += ["icmp.checksum.status", "icmpv6.checksum.status", "data.data"]
    argv = [
        "tshark",
        "-n",
        "-r",
        str(pcap),
        "-Y",
        "icmp.type in {0, 8} || icmpv6.type in {128, 129}",
    ]
    argv += ["-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for name in fields:
        argv += ["-e", name]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    rows = []
    for line in proc.stdout.splitlines():
        v = line.split("|")
        rows.append(
            {
                "src": v[0] or v[1],
                "dst": v[6] or v[7],
                "type": {"8": "request", "128": "request"}.get(v[2] or v[3], "reply"),
                "ident": str(int(v[4] or v[8] or "-1", 0)),
                "seq": v[5] or v[9],
                "checksum": v[10] or v[11],
                "data": v[12],
            }
        )
    return rows


def check_faults_wire(lab: Lab) -> list[Check]:
    """tshark on a capture at the client: each fault of faulty and the forger's replies."""
    from compare.capture import Capture, write_pcap  # the lab's own capture; tshark reads it

    if shutil.which("tshark") is None:
        return [_check("tshark faults on the wire", "tshark", "not checked: no tshark", True)]
    with Capture(lab.ns("client"), "down0") as capture:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda f: ping(lab, lab.nodes["faulty"].addr(f), f, 6), (4, 6)))
        for family in (4, 6):
            ping(lab, lab.nodes["forged"].addr(family), family, count=3)
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "faults.pcap"
        write_pcap(pcap, capture.frames)
        rows = _tshark_echoes(pcap)
    checks = []
    for family in (4, 6):
        node, forger = lab.nodes["faulty"], faults.FORGER6 if family == 6 else faults.FORGER4
        # one ping(8) per identifier (other checks may ping faulty meanwhile)
        idents = sorted({r["ident"] for r in rows if r["dst"] == node.addr(family)})
        observed, ok = "no ping seen", bool(idents)
        for ident in idents:
            mine = [r for r in rows if r["ident"] == ident]
            request = {r["seq"]: r for r in mine if r["dst"] == node.addr(family)}
            replies = [r for r in mine if r["src"] == node.addr(family)]
            order = [int(r["seq"]) for r in replies]
            by_seq = {r["seq"]: r for r in replies}
            bad = [int(r["seq"]) for r in replies if r["checksum"] == "0"]
            changed = [int(s) for s, r in by_seq.items() if r["data"] != request.get(s, r)["data"]]
            seen = f"replies {order}, bad checksum {bad}, data changed {changed}"
            if ok:
                observed = seen + (f" ({len(idents)} pings)" if len(idents) > 1 else "")
            ok = ok and order == [2, 1, 3, 3, 4, 5] and bad == [5] and changed == [4, 5]
        expected = "replies [2, 1, 3, 3, 4, 5], bad checksum [5], data changed [4, 5]"
        checks.append(_check(f"tshark -{family} faulty on the wire", expected, observed, ok))
        target = lab.nodes["forged"].addr(family)
        probes = [r for r in rows if r["type"] == "request" and r["dst"] == target]
        seen = []
        for probe in probes:
            got = [r for r in rows if r["type"] == "reply" and r["seq"] == probe["seq"]]
            got = [r for r in got if r["dst"] == lab.client.addr(family)]
            from_forger = any(r["src"] == forger and r["ident"] == probe["ident"] for r in got)
            other_id = str(int(probe["ident"]) ^ faults.FORGED_IDENT_XOR)
            wrong_id = any(r["src"] == target and r["ident"] == other_id for r in got)
            seen.append(f"{probe['seq']}:{'F' if from_forger else '-'}{'I' if wrong_id else '-'}")
        every = all(mark.endswith(":FI") for mark in seen)
        checks.append(
            _check(
                f"tshark -{family} forger's replies",
                "every request: F (from the forger) and I (another identifier)",
                " ".join(seen),
                every and {"1:FI", "2:FI", "3:FI"} <= set(seen),
            )
        )
    return checks


def check_forger_ping(lab: Lab, family: int) -> Check:
    """ping(8) takes the forger's reply (same identifier and sequence) for one from another
    address: it prints "(DIFFERENT ADDRESS!)" for each, so the forgery is on the wire."""
    forger = faults.FORGER6 if family == 6 else faults.FORGER4
    out = ping(lab, lab.nodes["forged"].addr(family), family, count=3).stdout
    forged = sorted(
        seq for src, seq, marks in parse_ping_replies(out) if src == forger and "DIFFERENT" in marks
    )
    return _check(
        f"ping(8) -{family} forger", f"(DIFFERENT ADDRESS!) from {forger} for seq [1, 2, 3]",
        f"for seq {forged}", forged == [1, 2, 3],
    )  # fmt: skip


PING_SAYS = {  # iputils' words for each unreachable answer
    ("hostunreach", 4): "Destination Host Unreachable",
    ("hostunreach", 6): "Address unreachable",
    ("netunreach", 4): "Destination Net Unreachable",
    ("netunreach", 6): "No route",
}


def check_unreachable(lab: Lab, role: str, family: int) -> list[Check]:
    node = lab.nodes[role]
    out = ping(lab, node.addr(family), family, count=1).stdout
    said = PING_SAYS[(role, family)]
    mark = lab.promises()["unreachable"][role]["traceroute"]
    argv = ["traceroute", f"-{family}", "-q", "2", "-w", "1", "-n", node.addr(family)]
    hops = parse_hop_lines(lab.exec("client", argv, timeout=60).stdout)
    addrs, probes = hops.get(node.ttl, ([], []))  # type: ignore[arg-type]
    return [
        _check(
            f"ping(8) -{family} {role}", said, "seen" if said in out else out[-80:], said in out
        ),
        _check(
            f"traceroute(8) -{family} {role}",
            f"ttl {node.ttl} {node.addr(family)} {mark} {mark}",
            f"ttl {node.ttl} {' '.join(addrs)} {' '.join(probes)}",
            addrs == [node.addr(family)] and probes == [f"r{mark}"] * 2,
        ),
    ]


def check_lost_probe(lab: Lab, family: int) -> list[Check]:
    """traceroute(8) -q 3 -p 44444: hop 4's second probe (port 44454) lost, nothing else; ping(8)
    with the lossy identifier and TTL 4: no time-exceeded for seq 11 only."""
    r4 = lab.nodes[plan.LOSSY]
    first = plan.LOSSY_UDP_PORT - 3 * (r4.ttl - 1) - 1  # type: ignore[operator]
    argv = ["traceroute", f"-{family}", "-q", "3", "-p", str(first), "-w", "1", "-n"]
    hops = parse_hop_lines(lab.exec("client", [*argv, lab.target.addr(family)], timeout=60).stdout)
    want = {n.ttl: (["r", "*", "r"] if n.role == plan.LOSSY else ["r"] * 3) for n in lab.hops()}
    want[lab.nodes[plan.SILENT].ttl] = ["*"] * 3
    seen = {ttl: hops.get(ttl, ([], []))[1] for ttl in want}
    argv = ["ping", f"-{family}", "-e", str(plan.LOSSY_ICMP_IDENT), "-t", str(r4.ttl), "-c", "12"]
    out = lab.exec("client", [*argv, "-i", "0.05", "-W", "1", "-n", lab.target.addr(family)]).stdout
    expired = sorted(int(s) for s in re.findall(r"icmp_seq=(\d+) Time to live exceeded", out))
    expired += sorted(int(s) for s in re.findall(r"icmp_seq=(\d+) Time exceeded", out))
    lossless = [s for s in range(1, 13) if s != plan.LOSSY_ICMP_SEQ]
    return [
        _check(
            f"traceroute(8) -{family} -p {first} lost probe",
            " ".join(f"{t}:{''.join(p)}" for t, p in want.items()),
            " ".join(f"{t}:{''.join(p)}" for t, p in seen.items()), seen == want,
        ),
        _check(
            f"ping(8) -{family} -e {plan.LOSSY_ICMP_IDENT:#x} -t {r4.ttl} lost probe",
            f"time exceeded from {r4.role} for all but seq {plan.LOSSY_ICMP_SEQ}",
            f"for {len(expired)} seqs, missing {sorted(set(range(1, 13)) - set(expired))}",
            expired == lossless,
        ),
    ]  # fmt: skip


def check_fork(lab: Lab, family: int) -> Check:
    """traceroute(8) over the fork, one fixed source port and varying destination ports (so
    varying flows): the fork hop shows both branches, the join and multi one address each."""
    argv = ["traceroute", f"-{family}", "--sport=40000", "-q", "8", "-w", "1", "-n"]
    hops = parse_hop_lines(lab.exec("client", [*argv, lab.nodes["multi"].addr(family)]).stdout)
    path = lab.hops("multi")
    want = {n.ttl: {n.addr(family)} for n in path}
    want[path[2].ttl] = {lab.nodes[b].addr(family) for b in plan.FORK}
    seen = {ttl: set(hops.get(ttl, ([], []))[0]) for ttl in want}
    show = lambda d: " ".join(f"{t}:{','.join(sorted(a))}" for t, a in d.items())  # noqa: E731
    return _check(f"traceroute(8) -{family} fork to multi", show(want), show(seen), seen == want)


def check_mtu(lab: Lab, family: int) -> list[Check]:
    """ping(8) -M do: one byte over narrow's MTU meets r6's frag-needed / Packet Too Big with
    that MTU, a datagram of exactly the MTU gets through."""
    mtu = plan.NARROW_MTU6 if family == 6 else plan.NARROW_MTU4
    header = 48 if family == 6 else 28  # IP + ICMP echo headers
    r6, narrow = lab.nodes["r6"], lab.nodes["narrow"]
    lab.forget_pmtu()
    argv = ["ping", f"-{family}", "-M", "do", "-c", "1", "-W", "1", "-n"]
    big = lab.exec("client", [*argv, "-s", str(mtu - header + 1), narrow.addr(family)]).stdout
    fits = lab.exec("client", [*argv, "-s", str(mtu - header), narrow.addr(family)]).stdout
    lab.forget_pmtu()
    said = f"Packet too big: mtu={mtu}" if family == 6 else f"Frag needed and DF set (mtu = {mtu})"
    ok = f"From {r6.addr(family)} " in big and said in big
    return [
        _check(f"ping(8) -{family} -M do over MTU", f"{r6.addr(family)}: {said}",
               "seen" if ok else big.strip()[-90:], ok),
        _check(f"ping(8) -{family} -M do at MTU", "1 received", str(parse_ping_stats(fits)),
               (parse_ping_stats(fits) or (0, 0))[1] == 1),
    ]  # fmt: skip


def check_promises(lab: Lab) -> list[Check]:
    """Every promise beside the chain's hop table, each with an independent tool."""
    checks = check_faults_wire(lab)  # alone: the capture holds only its own pings
    jobs = []
    for family in (4, 6):
        jobs += [
            lambda f=family: [check_faults_ping(lab, f)],
            lambda f=family: [check_forger_ping(lab, f)],
            lambda f=family: check_unreachable(lab, "hostunreach", f),
            lambda f=family: check_unreachable(lab, "netunreach", f),
            lambda f=family: check_lost_probe(lab, f),
            lambda f=family: [check_fork(lab, f)],
        ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        checks += [c for result in pool.map(lambda job: job(), jobs) for c in result]
    # MTU last and alone: it clears the client's path MTU cache
    return checks + [c for family in (4, 6) for c in check_mtu(lab, family)]


def run_selftest(as_json: bool = False) -> int:
    from compare.cli import print_truth

    with Lab.create() as lab:
        if not as_json:
            print_truth(lab)
            print()
        checks = check_lab(lab) + check_promises(lab)
    failed = sum(not c.ok for c in checks)
    if as_json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "failed": failed}, indent=2))
    else:
        rows = [(c.name, c.expected, c.observed, "ok" if c.ok else "FAIL") for c in checks]
        print(tabulate(rows, headers=("check", "lab promises", "tool saw", "verdict")))
        print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0
