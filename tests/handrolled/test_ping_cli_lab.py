"""``python -m handrolled.ping`` against iputils ping 20221126 in the lab's client, flag by flag.

Each test runs our command line and iputils ``ping`` with the same arguments on the same path
and checks what a user compares: the lines with the numbers taken out, the counts, the exit
codes, and, from a capture of the client's interface (compare.capture), the TOS and payload
bytes each put on the wire.  Expectations come from iputils run the same way, never from our
own code.  (Loopback and private-namespace cases: test_ping_cli.py.)
"""

from __future__ import annotations

import json
import re
import struct
import time

import pytest
from ping_cli_shared import OURS, UNPRIVILEGED, counts, shape_of


def _lab_run(lab, argv: list[str], *, unprivileged: bool = False, timeout: float = 60):
    prefix = UNPRIVILEGED if unprivileged else []
    return lab.exec("client", [*prefix, *argv], timeout=timeout)


def _both(lab, args: list[str], *, unprivileged: bool = False):
    ours = _lab_run(lab, [*OURS, *args], unprivileged=unprivileged)
    theirs = _lab_run(lab, ["ping", *args], unprivileged=unprivileged)
    return ours, theirs


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(
    "flags",
    [[], ["-n"], ["-n", "-D"], ["-n", "-a"], ["-n", "-p", "a5b"], ["-n", "-q"], ["-n", "-U"],
     ["-n", "-I", "down0"], ["-n", "-s", "8"], ["-n", "-Q", "0x28"]],
    ids=lambda f: " ".join(f) or "plain",
)  # fmt: skip
def test_lines_match_iputils(lab, family: int, flags: list[str]) -> None:
    args = [f"-{family}", *flags, "-c", "3", "-i", "0.2", lab.target.hostname]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    assert ours.stderr == theirs.stderr == ""
    assert shape_of(ours.stdout) == shape_of(theirs.stdout), (ours.stdout, theirs.stdout)
    if "-a" in flags:
        assert ours.stdout.count(" ms\a\n") == theirs.stdout.count(" ms\a\n") == 3
    if "-U" in flags:  # user-space times are still the path's RTT, not something else
        low, _high = lab.rtt_tolerance(lab.target)
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", ours.stdout)]
        assert min(times) >= low, times


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_source_address_header_matches_iputils(lab, family: int) -> None:
    src = lab.nodes["client"].addr(family)
    args = [f"-{family}", "-n", "-I", src, "-c", "2", "-i", "0.2", lab.target.addr(family)]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 0
    assert shape_of(ours.stdout) == shape_of(theirs.stdout)
    assert f" from {src} : " in ours.stdout.splitlines()[0]


@pytest.mark.lab
@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["-I", "nosuch0"], "ping: SO_BINDTODEVICE nosuch0: No such device\n"),
        (["-I", "203.0.113.250"], "ping: bind: Cannot assign requested address\n"),
    ],
)
def test_bad_interface_or_source_refused_as_iputils(lab, flag, message) -> None:
    ours, theirs = _both(lab, ["-n", *flag, "-c", "1", lab.target.addr4])
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr == theirs.stderr == message
    assert ours.stdout == theirs.stdout == ""  # refused before the PING header


@pytest.mark.lab
def test_outstanding_reports_match_iputils(lab) -> None:
    args = ["-n", "-O", "-c", "3", "-i", "0.3", "-W", "1", lab.blackhole4]
    ours, theirs = _both(lab, args)
    assert ours.returncode == theirs.returncode == 1
    assert shape_of(ours.stdout) == shape_of(theirs.stdout)
    assert "no answer yet for icmp_seq=2" in ours.stdout


@pytest.mark.lab
@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["-c", "2", "-w", "5"], 0),
        (["-c", "20", "-w", "1", "-i", "0.2"], 1),
        (["-w", "1", "-i", "0.2"], 0),
        (["-w", "3", "-t", "2"], 1),  # the first time-exceeded ends a run with a deadline
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_exit_rule_on_the_lab_path(lab, args: list[str], status: int) -> None:
    ours, theirs = _both(lab, ["-n", *args, lab.target.addr4])
    assert ours.returncode == theirs.returncode == status, (ours.stdout, theirs.stdout)
    (sent_o, recv_o), (sent_t, recv_t) = counts(ours.stdout), counts(theirs.stdout)
    assert abs(sent_o - sent_t) <= 1 and recv_o - recv_t in (-1, 0, 1)


@pytest.mark.lab
def test_blackhole_until_deadline(lab) -> None:
    ours, theirs = _both(lab, ["-n", "-w", "1", "-i", "0.25", lab.blackhole4])
    assert ours.returncode == theirs.returncode == 1
    assert abs(counts(ours.stdout)[0] - counts(theirs.stdout)[0]) <= 1
    assert shape_of(ours.stdout)[-2:] == shape_of(theirs.stdout)[-2:]


def _echo_requests(lab, argv: list[str], family: int):
    """Run ``argv`` in the client while capturing its interface: the echo requests sent."""
    from compare.capture import Capture

    with Capture(lab.ns("client"), "down0") as cap:
        proc = _lab_run(lab, argv)
        time.sleep(0.2)
    found = []
    for frame in cap.frames:
        ip = frame.ip
        if not frame.outgoing or not ip or ip[0] >> 4 != family:
            continue
        header = 20 if family == 4 else 40
        proto = ip[9] if family == 4 else ip[6]
        if proto in (1, 58) and ip[header] in (8, 128):
            found.append((frame.time_ns, ip, ip[header + 8 :]))
    return proc, found


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_tos_and_pattern_on_the_wire_as_iputils(lab, family: int) -> None:
    args = [f"-{family}", "-n", "-Q", "0x28", "-p", "a5b6c", "-c", "2", "-i", "0.2"]
    target = lab.target.addr(family)
    wire = {}
    for tool, prog in (("ours", OURS), ("iputils", ["ping"])):
        proc, found = _echo_requests(lab, [*prog, *args, target], family)
        assert proc.returncode == 0, proc.stderr
        assert len(found) == 2, found
        wire[tool] = found
    for tool, found in wire.items():
        for frame_ns, ip, data in found:
            tos = ip[1] if family == 4 else ((ip[0] & 0x0F) << 4) | (ip[1] >> 4)
            assert tos == 0x28, tool
            # iputils fill(): the pattern from the first data octet (a5 b6 0c), then the
            # timestamp over octets 0-15: a struct timeval of the send time
            assert len(data) == 56
            assert data[16:] == (b"\xa5\xb6\x0c" * 20)[16:56], (tool, data.hex())
            sec, usec = struct.unpack("@ll", data[:16])
            assert abs(frame_ns - (sec * 10**9 + usec * 1000)) < 50_000_000, tool
    assert [d[16:] for _, _, d in wire["ours"]] == [d[16:] for _, _, d in wire["iputils"]]


@pytest.mark.lab
def test_default_payload_on_the_wire_as_iputils(lab) -> None:
    wire = {}
    for tool, prog in (("ours", OURS), ("iputils", ["ping"])):
        proc, found = _echo_requests(lab, [*prog, "-n", "-c", "1", lab.target.addr4], 4)
        assert proc.returncode == 0 and len(found) == 1
        wire[tool] = found[0]
    for _tool, (frame_ns, ip, data) in wire.items():
        assert data[16:] == bytes(range(16, 56)) and ip[1] == 0
        sec, usec = struct.unpack("@ll", data[:16])
        assert abs(frame_ns - (sec * 10**9 + usec * 1000)) < 50_000_000


@pytest.mark.lab
def test_flood_dots_and_rate_bound_as_iputils(lab) -> None:
    ours, theirs = _both(lab, ["-f", "-c", "20", lab.target.addr4])
    assert ours.returncode == theirs.returncode == 0
    for proc in (ours, theirs):
        line = proc.stdout.split("\n")[1]  # one dot sent, one backspace back, in any order
        assert line.count(".") == line.count("\b \b") == 20 and len(line) == 80, repr(line)
        assert "ipg/ewma" in proc.stdout
    shapes = shape_of(ours.stdout), shape_of(theirs.stdout)
    assert shapes[0][:1] + shapes[0][2:] == shapes[1][:1] + shapes[1][2:]
    # nothing comes back from the blackhole: iputils' bound is one probe per 10 ms
    ours, theirs = _both(lab, ["-f", "-w", "1", lab.blackhole4])
    assert ours.returncode == theirs.returncode == 1
    sent_o, sent_t = counts(ours.stdout)[0], counts(theirs.stdout)[0]
    assert 40 <= sent_t <= 105 and 40 <= sent_o <= 105, (sent_o, sent_t)
    assert ours.stdout.split("\n")[1] == "." * sent_o


@pytest.mark.lab
def test_flood_refused_without_root_as_iputils(lab) -> None:
    for args in (["-f", "-c", "2"], ["-i", "0.001", "-c", "2"]):
        ours, theirs = _both(lab, ["-n", *args, lab.target.addr4], unprivileged=True)
        assert ours.returncode == theirs.returncode == 2
        assert (
            ours.stderr
            == theirs.stderr
            == ("ping: cannot flood; minimal interval allowed for user is 2ms\n")
        )
        assert ours.stdout == theirs.stdout  # the header, printed before setup() refuses


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_json_is_the_result_with_bytes_as_hex(lab, family: int) -> None:
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest

    proc = _lab_run(lab, [*OURS, "--json", f"-{family}", "-c", "2", "-i", "0.2", "target.lab.test"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["target"] == "target.lab.test" and doc["address"] == lab.target.addr(family)
    assert doc["family"] == family and doc["implementation"] == "handrolled"
    assert doc["summary"]["transmitted"] == doc["summary"]["received"] == 2
    assert [p["outcome"] for p in doc["probes"]] == ["reply", "reply"]
    for p in doc["probes"]:
        sent = bytes.fromhex(p["sent"])  # scapy reads what we say we sent
        echo = ICMP(sent) if family == 4 else ICMPv6EchoRequest(sent)
        assert (echo.id, echo.seq) == (doc["ident"], p["seq"])
        assert bytes.fromhex(p["received"]) and p["reply_from"] == lab.target.addr(family)
    assert bytes.fromhex(doc["payload"])[16:] == bytes(range(16, 56))
