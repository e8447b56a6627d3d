"""The comparison harness: clean runs agree, and injected faults are caught and named.

Fault injection copies handrolled/ to a temporary directory, patches one thing in the copy (the
bugs people really write: the seed skeleton's native-order header, swapped checksum bytes, ...)
and runs the comparison with the copy as the hand-rolled side.  Each fault must turn the
verdict to FAIL and the report must name the field or command that differs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fault_injection import ROOT, Fault, clean_copy, patched_copy, patched_source

from compare import lab as lab_mod
from compare import packets, report, traceroute
from compare.lab import Lab
from compare.packets import tcp_stream
from compare.runner import run_all
from compare.scenario import Row
from compare.smtp import split_commands
from handrolled.results import Hop, Implementation, Method, Outcome, Probe, TraceResult

FAULTS = [
    Fault(
        "checksum bytes swapped",
        "icmp.py",
        "return _HEADER.pack(icmp_type, code, csum, ident, seq) + payload",
        "return _HEADER.pack(icmp_type, code, csum >> 8 | (csum & 0xFF) << 8, ident, seq)"
        " + payload",
        "ping",
        "ping -4 target",
        "icmp.checksum",
    ),
    Fault(
        "the seed skeleton's native-order bbHHh header",
        "icmp.py",
        '_HEADER = struct.Struct("!BBHHH")',
        '_HEADER = struct.Struct("bbHHh")',
        "ping",
        "ping -4 target",
        "icmp.identifier",
    ),
    Fault(
        "sequence off by one",
        "ping.py",
        "        seq &= 0xFFFF\n",
        "        seq = (seq + 1) & 0xFFFF\n",
        "ping",
        "ping -4 target",
        "icmp.sequence",
    ),
    Fault(
        "wrong TTL",
        "net.py",
        "socket.IP_TTL, ttl)",
        "socket.IP_TTL, ttl - 1)",
        "ping",
        "ping -4 -t 2",
        "ipv4.ttl",
    ),
    Fault(
        "population instead of sample stdev",
        "ping_stats.py",
        "stdev_ms=statistics.stdev(rtts) if len(rtts) > 1 else 0.0,",
        "stdev_ms=statistics.pstdev(rtts),",
        "ping",
        "ping -4 target",
        "stdev_ms",
    ),
    Fault(
        "a reply accepted from the wrong identifier",
        "ping.py",
        "if not msg.is_reply or msg.ident != self.ident or r.source != self.address:",
        "if not msg.is_reply or r.source != self.address:",
        "ping",
        "beside another pinger",
        "icmp.identifier",
    ),
    Fault(
        "RTT reported in the wrong unit (us, not ms)",
        "ping.py",
        "                rtt_ms=(r.recv_ns - entry.send_ns) / 1e6,",
        "                rtt_ms=(r.recv_ns - entry.send_ns) / 1e3,",
        "ping",
        "ping -4 target",
        "RTT vs wire",
    ),
    Fault(
        "no dot-stuffing",
        "smtp_protocol.py",
        'if line.startswith(b"."):\n            out += b"."',
        'if False:\n            out += b"."',
        "smtp",
        "smtp two recipients",
        "client commands identical",
    ),
    Fault(
        "a lower-case command",
        "smtp_protocol.py",
        'verb = "MAIL FROM" if',
        'verb = "mail FROM" if',
        "smtp",
        "smtp two recipients",
        "b'mail FROM",
    ),
    # ---- issue 11: the lab's faults, the forger, odd sizes, datagram sockets ----
    Fault(
        "duplicates counted as replies",
        "ping.py",
        "dup = self._probe(entry, Outcome.DUPLICATE, **fields)",
        "dup = self._probe(entry, Outcome.REPLY, **fields)",
        "ping",
        "ping -4 faulty",
        "summary.duplicates",
    ),
    Fault(
        "a corrupted reply accepted as good",
        "ping.py",
        "outcome = Outcome.CORRUPT if note else Outcome.REPLY",
        "outcome = Outcome.REPLY",
        "ping",
        "ping -4 faulty",
        "seq 4: outcome",
    ),
    Fault(
        "a reply from another source accepted",
        "ping.py",
        "if not msg.is_reply or msg.ident != self.ident or r.source != self.address:",
        "if not msg.is_reply or msg.ident != self.ident:",
        "ping",
        "ping -6 forged",
        "reply_from",
    ),
    Fault(
        "odd-length checksum padded on the wrong side",
        "checksum.py",
        "total <<= 8  # RFC 1071 §4.1: pad the odd byte on the right (N * 256, no copy)",
        "pass  # the odd byte taken as the low half of a word (padded on the left)",
        "ping",
        "ping -4 -s 57 target",
        "icmp.checksum",
    ),
    Fault(
        "the datagram identifier not re-encoded",
        "ping.py",
        'self.ident = sock.ident if sock.kind == "dgram" and sock.ident is not None else ident',
        "self.ident = ident",
        "ping",
        "ping -4 datagram socket",
        "icmp.identifier",
        more=(
            (
                'if self.sock.kind == "dgram" and self.sock.ident not in (None, self.ident):',
                "if False:",
            ),
        ),
    ),
    Fault(
        "host unreachable annotated as net unreachable",
        "cli/traceroute.py",
        '    1: "!H",\n',
        '    1: "!N",\n',
        "traceroute",
        "traceroute -4 -U hostunreach",
        "annotation",
    ),
    Fault(
        "TTL off by one",
        "tracepaths.py",
        "sent.send_ns = self.sockets.send(sent.data, sent.ttl)",
        "sent.send_ns = self.sockets.send(sent.data, sent.ttl + 1)",
        "traceroute",
        "traceroute -4 -I target",
        "ipv4.ttl",
    ),
    Fault(
        "UDP ports one off",
        "traceroute.py",
        "src_port, dst_port = self.ident, (self.port + k) & 0xFFFF",
        "src_port, dst_port = self.ident, (self.port + k + 1) & 0xFFFF",
        "traceroute",
        "traceroute -6 -U target",
        "udp.destination_port",
    ),
    Fault(
        "the end of the trace not detected",
        "traceroute.py",
        "final = match.final and match.outcome is not Outcome.CORRUPT",
        "final = False",
        "traceroute",
        "traceroute -4 -T target",
        "!= promised",
    ),
    Fault(
        "RTT offset by 2 ms",
        "traceroute.py",
        "rtt_ns = max(rec.recv_ns - sent.send_ns, 0)",
        "rtt_ns = max(rec.recv_ns - sent.send_ns, 0) + 2_000_000",
        "traceroute",
        "traceroute -6 -I target",
        "RTT vs wire",
    ),
    Fault(
        "an ICMP error matched to the next probe",
        "traceroute.py",
        'return self._keys.get(("udp", *quoted.ports))',
        'return self._keys.get(("udp", quoted.ports[0], quoted.ports[1] + 1))',
        "traceroute",
        "traceroute -4 -U target",
        "same hop list",
    ),
]


def failing_text(rows: list[Row]) -> str:
    """Each failing row: its check, its details and its structured differences."""
    return "\n".join(
        f"{r.check}: {' | '.join([*r.details, *(d.describe() for d in r.differences)])}"
        for r in rows
        if not r.ok
    )


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_anchors_are_in_the_code(fault):
    """Every fault still patches the code it means (no lab: the anchors alone)."""
    source = (ROOT / "handrolled" / fault.file).read_text()
    assert patched_source(source, fault) != source


# ---- pure parts ---------------------------------------------------------------------------------
def test_diff_names_field_offset_and_values():
    # Two echo requests differing in sequence and checksum (IPv4, 28 bytes each).
    a = bytes.fromhex("4500001c00014000400100000a0000010a0000020800f7fe00010000")
    b = bytes.fromhex("4500001c00024000400100000a0000010a0000020800f7fd00010001")
    diffs = {d.field: d for d in packets.diff_datagrams(a, b)}
    assert diffs["identification"].allowed is not None  # named, with its reason
    assert diffs["sequence"].offset == 26 and diffs["sequence"].allowed is None
    assert "icmp.sequence at offset 26: 0 (0x0000) vs 1 (0x0001)" in diffs["sequence"].describe()
    assert diffs["checksum"].allowed is None


def test_probe_and_reply_keys_match_through_the_quoted_datagram():
    request = bytes.fromhex("4500001c00014000020100000a0000010a0000020800f7fe12340007")
    assert packets.probe_key(request) == ("icmp", 0x1234, 7)
    # time exceeded quoting that request
    error = bytes.fromhex("4500003800004000400100000a0000630a0000010b00000000000000") + request
    assert packets.reply_key(error) == (("icmp", 0x1234, 7), "icmp-error")


def test_echo_of_reply_reads_replies_only_with_or_without_ip_header():
    request = bytes.fromhex("4500001c00014000020100000a0000010a0000020800f7fe12340007")
    reply = request[:20] + bytes.fromhex("0000fffe12340007")
    assert packets.echo_of_reply(reply) == (0x1234, 7)
    assert packets.echo_of_reply(reply[20:]) == (0x1234, 7)  # as an ICMP socket hands it
    icmpv6_reply = bytes.fromhex("8100000012340007")
    assert packets.echo_of_reply(icmpv6_reply) == (0x1234, 7)
    # a side that took its own request (or anything else) for the reply is caught
    assert packets.echo_of_reply(request) is None
    assert packets.echo_of_reply(request[20:]) is None
    assert packets.echo_of_reply(bytes.fromhex("8000000012340007")) is None
    assert packets.echo_of_reply(b"") is None


def test_smtp_stream_split_keeps_the_data_block_whole():
    stream = b"EHLO x\r\nMAIL FROM:<a@b>\r\nDATA\r\nline\r\n..dot\r\n.\r\nQUIT\r\n"
    assert split_commands(stream) == [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"DATA\r\n",
        b"line\r\n..dot\r\n.\r\n",
        b"QUIT\r\n",
    ]
    assert tcp_stream([], 25, True) == b""


def test_report_table_and_closing_line():
    rows = [Row("s", "c1", "a", "b", True), Row("s", "c2", "a", "b", False, ["why"])]
    assert "FAIL s: c2\n    why" in report.failures(rows)
    assert report.closing_line(rows) == "1 passed, 1 failed"
    assert "verdict" in report.table(rows)


def _trace(excess_ms: list[float]) -> TraceResult:
    """A one-probe-per-hop ICMP trace of the lab's path, each hop ``excess`` above its promise."""
    hops = [n for n in Lab("pure").hops("target") if n.answers]
    return TraceResult(
        target="target", address=hops[-1].addr4, family=4, method=Method.ICMP, reached=True,
        implementation=Implementation.HANDROLLED,
        hops=tuple(
            Hop(n.ttl, (Probe(n.ttl, 1, n.ttl, b"", 0, Outcome.REPLY, rtt_ms=n.rtt_ms + e,
                              reply_from=n.addr4),))
            for n, e in zip(hops, excess_ms, strict=True)
        ),
    )  # fmt: skip


def test_trace_sides_compared_by_the_median_of_per_hop_differences():
    lab = Lab("pure")  # the plan only: nothing is built
    sc = traceroute.TraceScenario("t", "target", 4, Method.ICMP, 1)

    def sides_row(left: list[float], right: list[float]) -> Row:
        rows = traceroute._rtt_rows(
            lab, sc, {"handrolled": _trace(left), "reference": _trace(right)}
        )
        (row,) = [r for r in rows if r.check.startswith("RTT sides agree")]
        return row

    # Both sides' median excess is 6 ms, but hop by hop the handrolled side is 6 ms faster on
    # four hops of six: the sides do not agree.
    row = sides_row([0, 6, 12, 0, 6, 12], [6, 12, 0, 6, 12, 0])
    assert not row.ok
    assert (row.handrolled, row.reference) == ("6 hops answered", "6 hops answered")
    assert "-6.000 ms over 6 hops" in row.details[0]
    row = sides_row([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0])
    assert row.ok and "+1.000 ms over 6 hops" in row.details[0]
    assert sides_row([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]).ok


def test_trace_late_median_traces_again_and_keeps_the_minimum_per_hop():
    lab = Lab("pure")
    sc = traceroute.TraceScenario("t", "target", 4, Method.ICMP, 1)
    late, good = [6.0] * 6, [0.2] * 6
    calls: list[str] = []

    def truth_row(first: list[float], next_runs: list[list[float]]) -> Row:
        runs = iter(next_runs)

        def again(impl: str) -> TraceResult | None:
            calls.append(impl)
            following = next(runs, None)
            return _trace(following) if following is not None else None

        res = {"handrolled": _trace(first), "reference": _trace(good)}
        rows = traceroute._rtt_rows(lab, sc, res, again)
        (row,) = [r for r in rows if r.check.startswith("RTT per hop vs lab truth")]
        return row

    # a pause moved the whole burst: the side traces again and the minima are in the window
    row = truth_row(late, [good])
    assert row.ok and calls == ["handrolled"] and "(2 runs)" in row.handrolled, row
    # a systematic excess stays late on every run: fails after RTT_ATTEMPTS runs
    calls.clear()
    row = truth_row(late, [late, late, good])
    assert not row.ok and len(calls) == lab_mod.RTT_ATTEMPTS - 1, row
    assert "median excess 6.000 ms" in " ".join(row.details)
    # a hop below its promise is never noise: no second run
    calls.clear()
    row = truth_row([-1.0, *late[1:]], [good])
    assert not row.ok and calls == [], row


@pytest.mark.parametrize(
    ("family", "icmp_type", "code", "mark"),
    [(4, 3, 1, "!H"), (4, 3, 0, "!N"), (4, 3, 2, "!P"), (4, 3, 13, "!X"), (4, 3, 99, "!<99>"),
     (6, 1, 3, "!H"), (6, 1, 0, "!N"), (6, 1, 1, "!X"), (6, 1, 7, "!<7>"), (4, 11, 0, "")],
)  # fmt: skip
def test_annotations_compared_as_traceroute8_prints_them(family, icmp_type, code, mark):
    """The marks the lab cannot produce (!P, !<n>) too: the hand-rolled side's hop line and the
    harness's reading of the reference's answer both print what traceroute(8)'s manual lists
    (!H !N !P host, network, protocol unreachable; !X prohibited; !<num> any other code)."""
    addr = "2001:db8::1" if family == 6 else "198.51.100.1"
    outcome = Outcome.TIME_EXCEEDED if icmp_type == 11 else Outcome.UNREACHABLE
    probe = Probe(7, 1, 7, b"", 0, outcome, rtt_ms=1.0, reply_from=addr, icmp_type=icmp_type,
                  icmp_code=code)  # fmt: skip
    result = TraceResult("t", addr, family, Method.ICMP, (Hop(7, (probe,)),), False,
                         Implementation.HANDROLLED)  # fmt: skip
    want = [[mark] if mark else []]
    assert traceroute.handrolled_hop_marks(result) == want
    assert traceroute._reference_marks(result) == want


# ---- against the lab --------------------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_injected_fault_is_caught_and_named(lab, tmp_path, fault):
    copy = patched_copy(tmp_path, fault)
    rows = run_all(
        lab, fault.kind, quick=True, handrolled_path=str(copy), progress=False, only=fault.scenario
    )
    assert rows, "no scenario matched"
    failed = failing_text(rows)
    assert failed, f"compare did not notice: {fault.name}"
    assert fault.names in failed, (
        f"{fault.name}: the report does not name {fault.names!r}:\n{failed}"
    )


@pytest.mark.lab
def test_unpatched_copy_agrees(lab, tmp_path):
    """The injection path itself is innocent: an unpatched copy agrees."""
    rows = run_all(
        lab,
        "ping",
        quick=True,
        handrolled_path=str(clean_copy(tmp_path)),
        progress=False,
        only="ping -4 target",
    )
    assert rows and all(r.ok for r in rows), failing_text(rows)


@pytest.mark.lab
def test_full_comparison_agrees_from_the_cli(tmp_path):
    """`wiretwin compare all` on its own lab, twice over (the lighter repetition CI keeps):
    exit 0, JSON and pcaps written, nothing failed."""
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", "all", "--quick", "--repeat", "2",
         "--json", str(out),
         "--pcap", str(tmp_path / "pcap"), "--no-progress"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    data = json.loads(out.read_text()) if out.exists() else {"rows": []}
    failed = [
        f"{r['scenario']}: {r['check']}: {r['details']}"
        for r in data["rows"]
        if r["verdict"] != "ok"
    ]
    assert proc.returncode == 0, "\n".join(failed) or proc.stderr[-2000:]
    assert data["failed"] == 0 and data["passed"] > 100
    assert proc.stdout.rstrip().endswith(f"{data['passed']} passed, 0 failed")
    kinds = {row["scenario"].split()[0] for row in data["rows"]}
    assert kinds == {"ping", "traceroute", "smtp"}
    pcaps = list((tmp_path / "pcap").glob("*.pcap"))
    scenarios = {row["scenario"] for row in data["rows"]}  # "name #1", "name #2"
    assert len(pcaps) >= 2 * len(scenarios) and len(scenarios) >= 2 * 15  # smtp: three sides
    # the pcaps are real: scapy, an independent dissector, reads them back
    from scapy.utils import rdpcap

    assert len(rdpcap(str(pcaps[0]))) > 0


# ---- explicit targets (loopback only: the tests never reach a real network) -----------------
@pytest.mark.root
def test_explicit_host_and_server_on_loopback(tmp_path, smtp_server):
    out = tmp_path / "explicit.json"
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", "all", "--quick", "--no-progress",
         "--host", "127.0.0.1", "--server", f"127.0.0.1:{smtp_server.port}",
         "--from", "alice@wiretwin.test", "--to", "bob@wiretwin.test", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    data = json.loads(out.read_text())
    failed = [
        f"{r['scenario']}: {r['check']}: {r['details']}"
        for r in data["rows"]
        if r["verdict"] != "ok"
    ]
    assert proc.returncode == 0, "\n".join(failed) or proc.stderr[-2000:]
    scenarios = {row["scenario"] for row in data["rows"]}
    assert "ping -4 127.0.0.1" in scenarios and "traceroute -4 -T 127.0.0.1" in scenarios
    assert f"smtp 127.0.0.1:{smtp_server.port}" in scenarios
    assert not any("lab truth" in row["check"] for row in data["rows"])  # no truth to claim
    assert data["lab"] is None
    assert len(smtp_server.messages) == 3  # hand-rolled, scapy and smtplib each delivered once


def test_explicit_targets_need_complete_arguments():
    proc = subprocess.run(
        [sys.executable, "-m", "compare.cli", "compare", "smtp", "--server", "127.0.0.1:x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
