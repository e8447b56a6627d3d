"""The report's views: terminal summary, failing-check details with hex diffs, JUnit (read back
by junitparser), the GitHub job summary and annotations, the baseline diff, and the HTML page in
a real headless Chromium.

Most tests are pure: scapy (an independent packet builder) makes the probes and the wire frames,
the real wire checks (compare/wire.py) turn them into rows, and the report renders those.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from smtpd_fixtures import skip_or_fail

from compare import baseline, junit, report, tolerance, wire
from compare.capture import Frame
from compare.report import ScenarioRun
from compare.scenario import Row, SideRun
from handrolled.results import (
    Hop,
    Implementation,
    Method,
    Outcome,
    PingResult,
    PingSummary,
    Probe,
    SmtpResult,
    TraceResult,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT, TARGET = "198.51.100.2", "203.0.113.10"
IDENT = 0x7774
PAYLOAD = b"wiretwin:report:" * 3
T0 = 1_700_000_000_000_000_000
TRUTH = {"answerer": "target", "address": TARGET, "promised_ms": 10.0, "window_ms": [9.9, 11.5]}


def _echo(seq: int, ttl: int, ip_id: int, reply: bool = False) -> bytes:
    if reply:
        return bytes(IP(src=TARGET, dst=CLIENT, ttl=57, id=ip_id) / ICMP(type=0, id=IDENT, seq=seq)
                     / PAYLOAD)  # fmt: skip
    return bytes(IP(src=CLIENT, dst=TARGET, ttl=ttl, id=ip_id, flags="DF")
                 / ICMP(type=8, id=IDENT, seq=seq) / PAYLOAD)  # fmt: skip


def _frame(t: int, outgoing: bool, datagram: bytes) -> Frame:
    return Frame(
        t,
        outgoing,
        bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01", type=0x0800)) + datagram,
    )


def ping_side(
    impl: str, rtts: list[float], ttl: int = 64, wire_lag_ms: float = 0.05, id_base: int = 100
) -> SideRun:
    """A side's ping run: its probes (what it reports) and the frames a capture saw."""
    probes, frames = [], []
    for i, rtt in enumerate(rtts):
        seq = i + 1
        sent_ns = T0 + i * 200_000_000
        request = _echo(seq, ttl, id_base + i)
        wire_rtt_ns = int((rtt - wire_lag_ms) * 1e6)
        frames.append(_frame(sent_ns, True, request))
        frames.append(_frame(sent_ns + wire_rtt_ns, False, _echo(seq, 57, 900 + i, reply=True)))
        probes.append(Probe(seq=seq, ident=IDENT, ttl=ttl, sent=request[20:], send_ns=sent_ns,
                            outcome=Outcome.REPLY, recv_ns=sent_ns + int(rtt * 1e6), rtt_ms=rtt,
                            reply_from=TARGET, icmp_type=0, icmp_code=0))  # fmt: skip
    result = PingResult(
        target="target", address=TARGET, family=4, ident=IDENT, payload=PAYLOAD,
        probes=tuple(probes),
        summary=PingSummary(len(rtts), len(rtts), loss_percent=0.0, min_ms=min(rtts)),
        implementation=Implementation(impl),
    )  # fmt: skip
    return SideRun(impl, result, frames, seconds=1.0)


def ping_scenario(name: str = "ping -4 target", ref_ttl: int = 64) -> ScenarioRun:
    """Two sides pinging; the reference's IP TTL is ``ref_ttl`` (64: identical packets)."""
    runs = {
        "handrolled": ping_side("handrolled", [10.21, 10.35, 10.30]),
        "reference": ping_side("reference", [10.25, 10.40, 10.28], ttl=ref_ttl, id_base=500),
    }
    rows = [Row(name, "ran", "ran in 1.0 s", "ran in 1.0 s", True)]
    rows += wire.wire_rows(
        name,
        {impl: r.result.probes for impl, r in runs.items()},
        {impl: r.frames for impl, r in runs.items()},
    )
    return ScenarioRun(name, "ping", rows, runs, TRUTH)


def trace_side(impl: str, hops: list[tuple[str, float]]) -> SideRun:
    probes = []
    for ttl, (addr, rtt) in enumerate(hops, start=1):
        probes.append(Hop(ttl, (Probe(seq=ttl, ident=IDENT, ttl=ttl, sent=b"", send_ns=T0,
                                      outcome=Outcome.TIME_EXCEEDED, rtt_ms=rtt,
                                      reply_from=addr),)))  # fmt: skip
    result = TraceResult(target="target", address=hops[-1][0], family=4, method=Method.ICMP,
                         hops=tuple(probes), reached=True,
                         implementation=Implementation(impl))  # fmt: skip
    return SideRun(impl, result, [], seconds=0.5)


def trace_scenario(name: str, hops: list[tuple[str, float]]) -> ScenarioRun:
    runs = {impl: trace_side(impl, hops) for impl in ("handrolled", "reference")}
    return ScenarioRun(name, "traceroute", [Row(name, "same hop list", "a", "a", True)], runs)


# ---- terminal --------------------------------------------------------------------------------
def test_terminal_summary_one_line_per_scenario_and_closing_line():
    scenarios = [ping_scenario(), ping_scenario("ping -4 again")]
    text = report.terminal(scenarios)
    lines = text.splitlines()
    n_checks = sum(len(sr.rows) for sr in scenarios)
    assert lines[-1] == f"{n_checks} passed, 0 failed"
    body = [line for line in lines if line.startswith("ping -4")]
    assert len(body) == 2  # one line per scenario, not one per check
    first = body[0]
    assert f"{len(scenarios[0].rows)}/{len(scenarios[0].rows)}" in first
    assert "10.210 | 10.250 ms" in first and "truth 10.000" in first  # min RTT each side, truth
    assert first.rstrip().endswith("ok")
    assert "failures:" not in text
    # the IPv4 identification differs (scapy ids 100.. vs 500..): allowed, and said why
    assert "ipv4.identification: " in text and "RFC 6864" in text
    verbose = report.terminal(scenarios, verbose=True)
    assert "every probe seen on the wire" in verbose and verbose.count("\n") > text.count("\n")


def test_failing_check_shows_field_offset_values_and_hex_diff():
    sr = ping_scenario(ref_ttl=63)
    text = report.terminal([sr])
    failing = [r for r in sr.rows if not r.ok]
    assert [r.check for r in failing] == ["IP header field by field"]
    diff = failing[0].differences[0]
    assert (diff.field, diff.offset) == ("ipv4.ttl", 8)  # RFC 791: TTL is byte 8
    assert diff.values == ("64 (0x40)", "63 (0x3f)")
    assert "FAIL ping -4 target: IP header field by field" in text
    assert "ipv4.ttl at offset 8: handrolled 64 (0x40) vs reference 63 (0x3f)" in text
    lines = text.splitlines()
    hr = next(i for i, line in enumerate(lines) if line.strip().startswith("handrolled 0000"))
    assert lines[hr + 1].strip().startswith("reference 0000")
    # byte 8 is the ninth cell: 40 on one side, 3f on the other, ^^ under it (and under the
    # differing identification and checksum bytes)
    cells = lines[hr].split("0000", 1)[1].split()
    assert cells[8] == "40" and lines[hr + 1].split("0000", 1)[1].split()[8] == "3f"
    marks = lines[hr + 2]
    column = lines[hr].index("0000") + 6 + 3 * 8
    assert marks[column : column + 2] == "^^"
    ident = lines[hr].index("0000") + 6 + 3 * 4  # identification (offset 4): allowed
    assert marks[ident : ident + 5] == "~~ ~~"
    assert lines[-1] == f"{len(sr.rows) - 1} passed, 1 failed"
    # the JSON carries the same structured difference, packets included
    data = json.loads(json.dumps(report.to_json(sr.rows, {}, [sr])))
    (row,) = [r for r in data["rows"] if r["verdict"] == "FAIL"]
    first = row["differences"][0]
    assert (first["field"], first["offset"], first["values"]) == (
        "ipv4.ttl",
        8,
        ["64 (0x40)", "63 (0x3f)"],
    )
    assert bytes.fromhex(first["packets"][1])[8] == 63


def test_hex_diff_of_unequal_lengths():
    out = report.hex_diff(b"\x01\x02", b"\x01\x02\x03")
    assert out[0].endswith("01 02 --") and out[1].endswith("01 02 03")
    assert out[2].endswith("^^") and out[2].count("^^") == 1


def _smtp_side(impl: str, commands: bytes) -> SideRun:
    segment = IP(src=CLIENT, dst=TARGET) / TCP(sport=40000, dport=25, seq=1000, flags="PA")
    frames = [_frame(T0, True, bytes(segment / commands))]
    result = SmtpResult(server=TARGET, port=25, mail_from="a@b", recipients=(), transcript=(),
                        delivered=False, implementation=Implementation(impl))  # fmt: skip
    return SideRun(impl, result, frames)


def test_failing_smtp_scenario_shows_where_the_client_streams_differ():
    runs = {
        "handrolled": _smtp_side("handrolled", b"EHLO client\r\nMAIL FROM:<a@b>\r\n"),
        "reference": _smtp_side("reference", b"EHLO client\r\nmail FROM:<a@b>\r\n"),
    }
    row = Row("smtp x", "client commands identical (wire)", "2 commands", "2 commands", False)
    text = report.terminal([ScenarioRun("smtp x", "smtp", [row], runs)])
    assert "first differ at byte 13 (of 30 and 30)" in text  # len("EHLO client\r\n") == 13
    lines = text.splitlines()
    hr = next(i for i, line in enumerate(lines) if line.strip().startswith("handrolled 0000"))
    assert lines[hr].split()[2:] == [f"{b:02x}" for b in b"EHLO client\r\nMAI"]
    assert lines[hr + 1].split()[2:] == [f"{b:02x}" for b in b"EHLO client\r\nmai"]
    marks = lines[hr + 2]
    column = lines[hr].index("0000") + 6 + 3 * 13
    assert marks[column:] == "^^ ^^ ^^"  # M A I vs m a i: bytes 13..15
    assert lines[hr + 5].split() == ["^^"]  # and the L of the next line
    assert "~~" not in text  # no rule allows anything in a TCP stream


# ---- JUnit, read back by junitparser ---------------------------------------------------------
def test_junit_suites_cases_and_failure(tmp_path):
    scenarios = [ping_scenario(), ping_scenario("ping -4 ttl", ref_ttl=63)]
    path = tmp_path / "junit.xml"
    junit.write_junit(path, scenarios)
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert [s.name for s in suites] == ["ping -4 target", "ping -4 ttl"]
    assert [s.tests for s in suites] == [len(sr.rows) for sr in scenarios]
    assert [s.failures for s in suites] == [0, 1]
    cases = list(suites[1])
    assert [c.name for c in cases] == [r.check for r in scenarios[1].rows]
    failed = [c for c in cases if not c.is_passed]
    assert len(failed) == 1 and failed[0].name == "IP header field by field"
    (failure,) = failed[0].result
    assert isinstance(failure, Failure)
    assert "ipv4.ttl" in failure.message
    assert "64 (0x40)" in failure.message and "63 (0x3f)" in failure.message
    assert "handrolled 0000" in failure.text  # the hex diff rides along
    props = {p.name: p.value for p in suites[0].properties()}
    assert props["kind"] == "ping" and "min RTT 10.210 | 10.250 ms" in props["figures"]


def test_reports_written_and_github_summary_appended(tmp_path, monkeypatch):
    """runner.write_reports: the files asked for, and GITHUB_STEP_SUMMARY appended (not
    overwritten) when the variable is set."""
    from argparse import Namespace

    from compare import runner

    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    scenarios = [ping_scenario("ping -4 ttl", ref_ttl=63)]
    args = Namespace(json=str(tmp_path / "r.json"), html=None, junit=str(tmp_path / "j.xml"))
    runner.write_reports(args, scenarios, {"kind": "ping"})
    text = summary.read_text()
    assert text.startswith("earlier step\n## wiretwin compare")
    assert "| ping -4 ttl" in text and "ipv4.ttl at offset 8" in text
    assert json.loads((tmp_path / "r.json").read_text())["failed"] == 1
    (suite,) = JUnitXml.fromfile(str(tmp_path / "j.xml"))
    assert suite.failures == 1
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    runner.write_reports(args, scenarios, {"kind": "ping"})
    assert summary.read_text() == text


# ---- GitHub Actions --------------------------------------------------------------------------
def test_github_summary_and_error_lines():
    scenarios = [ping_scenario(), ping_scenario("ping -4 ttl", ref_ttl=63)]
    md = report.github_summary(scenarios)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| scenario"))
    assert lines[header + 1].startswith("|--") or lines[header + 1].startswith("|:")
    table = lines[header + 2 : header + 4]
    assert table[0].startswith("| ping -4 target") and "ok" in table[0]
    assert table[1].startswith("| ping -4 ttl") and "FAIL" in table[1]
    errors = report.github_errors(r for sr in scenarios for r in sr.rows)
    assert len(errors) == 1
    # title property: ':' and ',' escaped (workflow commands); message carries field and values
    assert errors[0].startswith("::error title=ping -4 ttl%3A IP header field by field::")
    assert "ipv4.ttl at offset 8: handrolled 64 (0x40) vs reference 63 (0x3f)" in errors[0]


@pytest.mark.root
def test_cli_on_loopback_with_github_env_and_a_baseline(tmp_path):
    """The real command against 127.0.0.1 (an explicit target), twice: the first run's JSON is
    the second run's baseline, doctored so that every probe used to time out.  With GITHUB_*
    set, the job summary is appended and each failing check is one ::error line."""
    first, summary = tmp_path / "first.json", tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_ACTIONS": "true"}
    argv = [sys.executable, "-m", "compare.cli", "compare", "ping", "--quick",
            "--host", "127.0.0.1"]  # fmt: skip
    proc = subprocess.run([*argv, "-v", "--json", str(first)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "::error" not in proc.stdout
    assert "every probe seen on the wire" in proc.stdout  # -v: the full table
    assert "[1/1]" not in proc.stderr  # stderr is no terminal here: no progress
    md = summary.read_text()
    assert "| ping -4 127.0.0.1" in md and "0 failed" in md

    data = json.loads(first.read_text())
    (scn,) = data["scenarios"]
    n_probes = len(scn["sides"]["handrolled"]["outcomes"])
    scn["sides"]["handrolled"]["outcomes"] = ["timeout"] * n_probes
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    proc = subprocess.run([*argv, "--baseline", str(old)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    lines = proc.stdout.rstrip().splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 1
    assert errors[0].startswith("::error title=ping -4 127.0.0.1%3A unchanged since the baseline")
    assert "handrolled outcomes" in errors[0] and "'timeout'" in errors[0]
    assert lines[-1].endswith(" passed, 1 failed") and not lines[-1].startswith("::")
    md = summary.read_text()
    assert md.count("## wiretwin compare") == 2 and "handrolled outcomes" in md


# ---- baseline --------------------------------------------------------------------------------
HOPS = [("198.51.100.1", 1.0), ("198.51.100.5", 3.0), ("203.0.113.10", 6.0)]


def _baseline_of(scenarios: list[ScenarioRun]) -> dict[str, dict]:
    data = report.to_json([r for sr in scenarios for r in sr.rows], {}, scenarios)
    return {s["name"]: s for s in json.loads(json.dumps(data, default=str))["scenarios"]}


def test_baseline_detects_a_changed_hop_and_an_rtt_shift_but_not_jitter(tmp_path):
    name = "traceroute -4 -I example"
    old = [trace_scenario(name, HOPS), ping_scenario()]
    path = tmp_path / "old.json"
    report.write_json(path, [r for sr in old for r in sr.rows], {}, old)
    loaded = baseline.load(path)
    assert loaded == _baseline_of(old)

    # within tolerance: every hop 2 ms later, the ping identical -> unchanged
    jitter = trace_scenario(name, [(a, rtt + 2.0) for a, rtt in HOPS])
    rows = baseline.scenario_rows(loaded, [report.scenario_json(jitter)], 5.0)
    assert rows[name].ok, rows[name].details

    # hop 2 answers from another router, hop 3 is 20 ms later
    changed = trace_scenario(name, [HOPS[0], ("198.51.100.9", 3.0), ("203.0.113.10", 26.0)])
    ping_now = ping_scenario()
    baseline.add_rows(loaded, [changed, ping_now], 5.0)
    row = changed.rows[-1]
    assert not row.ok and "5.0 ms" in row.check
    fields = {d.field: d for d in row.differences}
    assert fields["handrolled hop 2"].values == ("198.51.100.5", "198.51.100.9")
    assert fields["reference hop 2"].values == ("198.51.100.5", "198.51.100.9")
    assert fields["handrolled hop 3 min RTT"].values == ("6.000 ms", "26.000 ms")
    assert "hop 1 min RTT" not in " ".join(fields)
    assert ping_now.rows[-1].ok  # the same ping figures: nothing changed
    text = report.terminal([changed, ping_now])
    assert "handrolled hop 2: baseline 198.51.100.5 vs now 198.51.100.9" in text
    assert text.splitlines()[-1].endswith("passed, 1 failed")


def test_baseline_ping_outcome_change_and_bad_files(tmp_path):
    old = {"ping x": {"name": "ping x", "kind": "ping", "sides": {
        "handrolled": {"outcomes": ["reply", "reply"], "reply_from": ["a", "a"],
                       "min_rtt_ms": 10.0},
        "reference": {"outcomes": ["reply", "reply"], "reply_from": ["a", "a"],
                      "min_rtt_ms": 10.0}}}}  # fmt: skip
    new = json.loads(json.dumps(old["ping x"]))
    new["sides"]["reference"]["outcomes"] = ["reply", "timeout"]
    new["sides"]["handrolled"]["min_rtt_ms"] = 14.9  # within 5 ms
    row = baseline.scenario_rows(old, [new], 5.0)["ping x"]
    assert not row.ok and [d.field for d in row.differences] == ["reference outcomes"]
    assert (row.handrolled, row.reference) == ("unchanged", "1 changed")
    for content, why in (("{", "not JSON"), ('{"rows": []}', "not a wiretwin compare")):
        path = tmp_path / "bad.json"
        path.write_text(content)
        with pytest.raises(baseline.BaselineError, match=why):
            baseline.load(path)
    with pytest.raises(baseline.BaselineError):
        baseline.load(tmp_path / "missing.json")


def test_cli_baseline_errors_are_one_line():
    for argv, why in (
        (["--baseline", "/nonexistent/old.json", "--host", "127.0.0.1"], "No such file"),
        (["--baseline", "/nonexistent/old.json"], "needs --host or --server"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "compare.cli", "compare", "ping", *argv],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


# ---- HTML in a real headless Chromium --------------------------------------------------------
class _Dom(HTMLParser):
    """The parts of the dumped DOM the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.summary_rows = 0
        self.diff_bytes: list[str] = []
        self.allowed_bytes = 0
        self.svgs = 0
        self.urls: list[str] = []
        self._in_diff = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "srcset", "data", "action"):
            if a.get(key) and not a[key].startswith("#"):
                self.urls.append(a[key])
        if "url(" in (a.get("style") or ""):
            self.urls.append(a["style"])
        if tag == "table" and a.get("id") == "summary":
            self.stack.append("summary")
        if tag == "tr" and "summary" in self.stack and "tbody" in self.stack:
            self.summary_rows += 1
        if tag == "tbody":
            self.stack.append("tbody")
        if tag == "svg":
            self.svgs += 1
        classes = (a.get("class") or "").split()
        if tag == "span" and "byte" in classes:
            self._in_diff = "diff" in classes
            self.allowed_bytes += "allowed" in classes

    def handle_endtag(self, tag):
        if tag == "tbody" and "tbody" in self.stack:
            self.stack.remove("tbody")
        if tag == "table" and "summary" in self.stack and "tbody" not in self.stack:
            self.stack.remove("summary")
        if tag == "span":
            self._in_diff = False

    def handle_data(self, data):
        if self._in_diff:
            self.diff_bytes.append(data)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        skip_or_fail("needs chromium for the HTML report test (bash .ci/browser-setup)")
    return path


def _browse(html: Path, *args: str) -> subprocess.CompletedProcess:
    # No network at all: every host name resolves to nothing, so a page that fetched anything
    # would render without it (and the DOM check below finds the URL).
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND", *args, html.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _html_report(tmp_path: Path) -> tuple[Path, list[ScenarioRun]]:
    from compare import report_html

    scenarios = [
        ping_scenario("ping -4 ttl", ref_ttl=63),
        ping_scenario(),
        trace_scenario("traceroute -4 -I target", HOPS),
    ]
    scenarios[2].truth = {"hops": [
        {"ttl": i + 1, "role": f"r{i + 1}", "address": a, "answers": True, "rtt_ms": rtt,
         "window_ms": [rtt - 0.1, rtt + 1.5]} for i, (a, rtt) in enumerate(HOPS)]}  # fmt: skip
    # text from the network (a reverse-DNS name, a server's reply) is shown, never run
    scenarios[2].rows.append(
        Row(scenarios[2].name, "same reverse-DNS names", "<script>alert(1)</script>", "b", False,
            ["<img src=http://203.0.113.99/x.png>"])
    )  # fmt: skip
    path = tmp_path / "report.html"
    meta = {"kind": "all", "seconds": 1.0, "tolerances": {"sides_min_ms": "1.0"}, "lab": []}
    report_html.write_html(path, scenarios, meta)
    return path, scenarios


def test_html_report_in_headless_chromium(tmp_path):
    path, scenarios = _html_report(tmp_path)
    proc = _browse(path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    assert dom.summary_rows == len(scenarios)
    # the TTL byte (offset 8) of the failing pair is highlighted on both sides: 40 and 3f
    assert "40" in dom.diff_bytes and "3f" in dom.diff_bytes
    assert dom.allowed_bytes >= 4  # identification (2 bytes) on both sides, allowed
    assert dom.svgs >= 2  # the ping plot and the trace plot, inline
    assert dom.urls == [], dom.urls  # nothing to fetch: self-contained
    assert "<script" not in proc.stdout and "&lt;script&gt;alert(1)" in proc.stdout
    early = tolerance.WIRE_EARLY_MS
    assert f"RTT vs wire (each &gt;= -{early} ms" in proc.stdout  # checks with tolerances

    shot = tmp_path / "shot.png"
    proc = _browse(path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[0] == 2400 and pixels.std() > 0.05  # not a blank page
    # the highlight colour of a differing byte (#ff8a8a) is actually painted
    red = (abs(pixels[..., 0] - 1.0) < 0.02) & (abs(pixels[..., 1] - 0x8A / 255) < 0.02)
    assert red.sum() > 50


# ---- the command on the lab ------------------------------------------------------------------
@pytest.mark.lab
def test_cli_html_and_junit_on_the_lab(tmp_path):
    html, xml = tmp_path / "r.html", tmp_path / "j.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", "ping", "--quick", "--no-progress",
         "--only", "ping -4 target", "--html", str(html), "--junit", str(xml)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    lines = proc.stdout.rstrip().splitlines()
    suites = list(JUnitXml.fromfile(str(xml)))
    n = sum(s.tests for s in suites)
    assert lines[-1] == f"{n} passed, 0 failed"
    assert {s.name for s in suites} == {"ping -4 target", "ping -4 target beside another pinger"}
    assert all(s.failures == 0 and s.errors == 0 and s.tests >= 8 for s in suites)
    page = html.read_text()
    assert page.count('<tr class="ok"><td><a href="#') == len(suites)
    assert "<svg" in page and "lab window" in page
