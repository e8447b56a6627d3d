"""The lab's faults, forger, unreachable answers, lost probe, fork and small-MTU link.

Pure: the fault rule language and its matcher (hypothesis: a rule never selects a packet
outside it), the rewrites checked by scapy as an independent dissector, the promises of the
plan.  In the lab (marked ``lab``): each promise seen by ping(8), traceroute(8) and tshark
through compare/lab/selftest.py's checks.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop

from compare.lab import Lab, build, faults, plan, selftest
from compare.lab.faults import Action, FaultRuleError, Rule, parse_plan, parse_rule

CLIENT4, TARGET4 = "198.51.100.1", "203.0.113.30"
CLIENT6, TARGET6 = "2001:db8:0:1::1", "2001:db8:0:104::2"
PAYLOAD = bytes(range(56))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def scapy_echo(family: int, direction: str, ident: int, seq: int, data: bytes = PAYLOAD) -> bytes:
    """An echo packet built by scapy (checksums by scapy)."""
    if family == 4:
        icmp_type = 8 if direction == "request" else 0
        return bytes(IP(src=CLIENT4, dst=TARGET4) / ICMP(type=icmp_type, id=ident, seq=seq) / data)
    layer = ICMPv6EchoRequest if direction == "request" else ICMPv6EchoReply
    return bytes(IPv6(src=CLIENT6, dst=TARGET6) / layer(id=ident, seq=seq, data=data))


def scapy_checksum_ok(packet: bytes) -> bool:
    """Whether scapy, recomputing the ICMP(v6) checksum, gets the one the packet carries."""
    if packet[0] >> 4 == 4:
        parsed = IP(packet)
        stored = parsed[ICMP].chksum
        del parsed[ICMP].chksum
        return IP(bytes(parsed))[ICMP].chksum == stored
    parsed = IPv6(packet)
    layer = parsed.payload
    stored = layer.cksum
    del layer.cksum
    return IPv6(bytes(parsed)).payload.cksum == stored


# ---- the rule language --------------------------------------------------------------------------
def test_the_example_rules_parse_to_what_they_say():
    assert parse_rule("duplicate reply seq=3") == Rule(Action.DUPLICATE, "reply", seq=3)
    assert parse_rule("corrupt reply seq=4 byte=10") == Rule(
        Action.CORRUPT, "reply", seq=4, byte=10
    )
    assert parse_rule("corrupt-bad-checksum reply family=6 ident=0x1234 seq=5") == Rule(
        Action.CORRUPT_BAD_CHECKSUM, "reply", family=6, ident=0x1234, seq=5
    )
    assert parse_rule("drop request seq=4") == Rule(Action.DROP, "request", seq=4)
    assert parse_rule("hold reply seq=1 after=2") == Rule(Action.HOLD, "reply", seq=1, after=2)
    assert parse_rule("forge request") == Rule(Action.FORGE, "request")
    plan_rules = parse_plan("drop request seq=1 # lost\n\n;duplicate reply seq=2;")
    assert [r.action for r in plan_rules] == [Action.DROP, Action.DUPLICATE]


@pytest.mark.parametrize(
    "line, says",
    [
        ("", "expected ACTION DIRECTION"),
        ("explode reply seq=1", "unknown action 'explode'"),
        ("drop sideways seq=1", "direction must be request or reply"),
        ("forge reply", "forge answers requests"),
        ("hold reply seq=1", "after= goes with hold"),
        ("drop request seq=1 after=2", "after= goes with hold"),
        ("duplicate reply seq=1 byte=3", "byte= goes with corrupt"),
        ("drop request family=5", "family=5 out of range"),
        ("drop request seq=70000", "seq=70000 out of range"),
        ("drop request seq=1 seq=2", "bad or repeated field 'seq=2'"),
        ("drop request seq=one", "seq must be a number"),
        ("drop request colour=red", "bad or repeated field 'colour=red'"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_problem(line, says):
    with pytest.raises(FaultRuleError, match=says) as info:
        parse_rule(line)
    assert "\n" not in str(info.value)


rules = st.builds(
    Rule,
    action=st.sampled_from([a for a in Action if a not in (Action.HOLD, Action.FORGE)]),
    direction=st.sampled_from(["request", "reply"]),
    family=st.sampled_from([None, 4, 6]),
    ident=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    seq=st.one_of(st.none(), st.integers(0, 0xFFFF)),
)


@given(rules)
def test_a_rule_reads_back_from_its_text(rule):
    assert parse_rule(rule.text()) == rule


def _echo_packet(family: int, icmp_type: int, ident: int, seq: int, size: int) -> bytes:
    """An echo-shaped IP datagram built with struct (checksums zero: the matcher ignores them)."""
    icmp = struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + bytes(size)
    if family == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                           bytes(4), bytes(4)) + icmp  # fmt: skip
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, bytes(16), bytes(16)) + icmp


packets = st.tuples(
    st.sampled_from([4, 6]),
    st.sampled_from([0, 8, 128, 129, 3, 11, 1]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 40),
)


@given(rules, packets)
def test_the_matcher_selects_exactly_the_packets_of_its_rule(rule, fields):
    family, icmp_type, ident, seq, size = fields
    hit = faults.first_match((rule,), _echo_packet(family, icmp_type, ident, seq, size))
    inside = (
        rule.family in (None, family)
        and icmp_type == faults.ECHO_TYPES[family][rule.direction]
        and rule.ident in (None, ident)
        and rule.seq in (None, seq)
    )
    assert (hit is not None) == inside
    if hit is not None:
        echo = hit[1]
        assert (echo.family, echo.icmp_type, echo.ident, echo.seq) == (
            family,
            icmp_type,
            ident,
            seq,
        )


@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_crash_the_matcher_and_non_echo_never_match(data):
    open_rules = (Rule(Action.DROP, "request"), Rule(Action.DROP, "reply"))
    hit = faults.first_match(open_rules, data)
    if hit is not None:  # only a real echo header can match
        assert faults.decode_echo(data) == hit[1]
        assert data[hit[1].icmp_offset] in (0, 8, 128, 129)


def test_only_echo_packets_decode():
    assert faults.decode_echo(scapy_echo(4, "request", 7, 9)) == faults.Echo(4, 8, 7, 9, 20)
    assert faults.decode_echo(scapy_echo(6, "reply", 7, 9)) == faults.Echo(6, 129, 7, 9, 40)
    udp = bytes(IP(src=CLIENT4, dst=TARGET4) / UDP(dport=33434) / (b"x" * 12))
    exceeded = bytes(IP(src=CLIENT4, dst=TARGET4) / ICMP(type=11, code=0) / udp)
    with_options = bytes(IP(src=CLIENT4, dst=TARGET4, options=b"\x01" * 4) / ICMP(id=1, seq=2))
    hop_by_hop = bytes(IPv6(src=CLIENT6, dst=TARGET6) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest())
    assert faults.decode_echo(udp) is None
    assert faults.decode_echo(exceeded) is None
    assert faults.decode_echo(with_options) == faults.Echo(4, 8, 1, 2, 24)  # IHL honoured
    assert faults.decode_echo(hop_by_hop) is None  # an extension header: not touched
    assert faults.decode_echo(b"") is None


# ---- the rewrites, judged by scapy ---------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("fix", [True, False])
def test_corrupt_flips_one_payload_byte_and_fixes_or_leaves_the_checksum(family, fix):
    packet = scapy_echo(family, "reply", 0x1234, 4)
    assert scapy_checksum_ok(packet)
    echo = faults.decode_echo(packet)
    out = faults.corrupted(packet, echo, 20, fix_checksum=fix)
    differ = [i for i in range(len(packet)) if packet[i] != out[i]]
    header = 20 if family == 4 else 40
    data_at = header + 8 + 20
    checksum_at = {header + 2, header + 3}
    assert data_at in differ and set(differ) - {data_at} <= checksum_at
    assert out[data_at] == packet[data_at] ^ 0xFF
    assert scapy_checksum_ok(out) is fix
    assert faults.checksum_ok(out, echo) is fix
    assert faults.corrupted(packet, echo, len(PAYLOAD), fix_checksum=fix) is None  # too short


@pytest.mark.parametrize("family", [4, 6])
def test_the_forger_answers_with_two_replies_a_correct_client_refuses(family):
    request = scapy_echo(family, "request", 0x0BAD, 3)
    first, second = faults.forgeries(request, faults.decode_echo(request))
    client, target = (CLIENT6, TARGET6) if family == 6 else (CLIENT4, TARGET4)
    forger = faults.FORGER6 if family == 6 else faults.FORGER4
    for packet, src, ident in ((first, forger, 0x0BAD), (second, target, 0x0BAD ^ 0xFFFF)):
        assert scapy_checksum_ok(packet)
        parsed = IPv6(packet) if family == 6 else IP(packet)
        assert (parsed.src, parsed.dst) == (src, client)
        echo = parsed[ICMPv6EchoReply] if family == 6 else parsed[ICMP]
        assert (echo.id, echo.seq) == (ident, 3)
        assert bytes(echo.payload if family == 4 else echo.data) == PAYLOAD
        if family == 4:  # RFC 791 header checksum, as scapy computes it
            stored, rebuilt = parsed.chksum, IP(packet)
            del rebuilt.chksum
            assert IP(bytes(rebuilt)).chksum == stored and echo.type == 0


# ---- what the plan promises ---------------------------------------------------------------------
def test_one_ping_to_faulty_meets_each_fault_once():
    per_seq = Lab("pure").promises()["faults"]["per_seq"]
    want = {
        1: "reordered",
        2: "reply",
        3: "duplicate",
        4: "corrupt-valid-checksum",
        5: "corrupt-bad-checksum",
        6: "lost",
    }
    assert per_seq == {"4": want, "6": want}


def test_new_nodes_keep_the_chain_and_use_documentation_addresses():
    lab = Lab("pure")
    assert [n.role for n in lab.hops()] == [*plan.ROUTERS, "target"]
    assert [n.role for n in lab.hops("multi")] == ["r1", "r2", "fork-a", "join", "multi"]
    assert [n.role for n in lab.hops("multi", branch=1)][2] == "fork-b"
    assert [n.ttl for n in lab.hops("multi")] == [1, 2, 3, 4, 5]
    nets = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
    addrs = [a for n in lab.nodes.values() for a in (n.addr4, n.addr6)]
    addrs += [faults.FORGER4, faults.FORGER6]
    assert len(set(addrs)) == len(addrs)
    for addr in addrs:
        assert any(ipaddress.ip_address(addr) in net for net in nets if net.version == int(
            ipaddress.ip_address(addr).version)), addr  # fmt: skip
    promises = lab.promises()
    fork = promises["fork"]
    assert fork["forks_at_ttl"] == 2 and fork["branch_ttl"] == 3 and fork["joins_at_ttl"] == 4
    assert {b["ipv4"] for b in fork["branches"].values()} == {"203.0.113.130", "203.0.113.134"}
    assert promises["mtu"]["mtu4"] == 1400 and promises["mtu"]["mtu6"] == 1280
    assert promises["mtu"]["from"] == {"4": lab.nodes["r6"].addr4, "6": lab.nodes["r6"].addr6}
    hosts = lab.hosts_file()
    for role in ("faulty", "forged", "hostunreach", "netunreach", "narrow", "multi", "join"):
        assert f"{lab.nodes[role].addr4}\t{role}.lab.test" in hosts


def test_lab_status_json_carries_the_promises(tmp_path, monkeypatch, capsys):
    from compare.cli import print_truth

    monkeypatch.setattr(build, "STATE_DIR", tmp_path)
    print_truth(Lab("pure"), as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert set(data["promises"]) == {"faults", "forger", "unreachable", "lost_probe", "fork", "mtu"}
    assert any(row["role"] == "faulty" for row in data["hops"])


@pytest.mark.parametrize(
    "args, says",
    [
        (["--queue", "wt-x-a:0:1", "--faults", "wt-x-a:0:explode reply"], "unknown action"),
        (["--queue", "wt-x-a:0:1", "--faults", "wt-x-b:0:drop request"], "no such --queue"),
    ],
)
def test_the_delay_stage_refuses_bad_fault_arguments_in_one_line(args, says):
    proc = subprocess.run(
        [sys.executable, "-m", "compare.lab.delay", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


# ---- in the lab: independent tools see every promise --------------------------------------------
def _assert_ok(checks):
    failed = [c for c in checks if not c.ok]
    assert not failed, "\n".join(
        f"{c.name}: expected {c.expected}, saw {c.observed}" for c in failed
    )


@pytest.mark.lab
def test_faults_on_the_wire_per_tshark(lab):
    if shutil.which("tshark") is None:
        if IN_CI:
            pytest.fail("CI=true and tshark is missing (.ci/browser-setup installs it)")
        pytest.skip("needs tshark")
    _assert_ok(selftest.check_faults_wire(lab))


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_faults_per_ping8(lab, family):
    _assert_ok([selftest.check_faults_ping(lab, family), selftest.check_forger_ping(lab, family)])


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_unreachable_answers_and_the_lost_probe(lab, family):
    checks = selftest.check_unreachable(lab, "hostunreach", family)
    checks += selftest.check_unreachable(lab, "netunreach", family)
    _assert_ok(checks + selftest.check_lost_probe(lab, family))


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_fork_and_small_mtu(lab, family):
    _assert_ok([selftest.check_fork(lab, family), *selftest.check_mtu(lab, family)])


@pytest.mark.lab
def test_a_fault_rule_leaves_alone_what_it_cannot_apply_to(lab):
    # -s 8: payloads without a byte 20, so the corrupt rules have nothing to flip and seqs 4 and
    # 5 come back intact; the other faults still apply.
    argv = ["ping", "-4", "-s", "8", "-c", "6", "-i", "0.2", "-W", "1", "-n", "faulty.lab.test"]
    out = lab.exec("client", argv, timeout=30).stdout
    assert "wrong data" not in out
    seqs = [seq for _, seq, _ in selftest.parse_ping_replies(out)]
    assert seqs == [2, 1, 3, 3, 4, 5], out


def test_parsers_of_ping8_and_traceroute8_output():
    out = (
        "64 bytes from 203.0.113.30: icmp_seq=2 ttl=58 time=30.6 ms\n"
        "16 bytes from 203.0.113.30: icmp_seq=3 ttl=58 (DUP!)\n"
        "64 bytes from 203.0.113.77: icmp_seq=2 ttl=58 time=26.7 ms (DIFFERENT ADDRESS!)\n"
        "6 packets transmitted, 4 received, +1 duplicates, 33.3333% packet loss, time 1013ms\n"
    )
    assert selftest.parse_ping_replies(out) == [
        ("203.0.113.30", 2, "ttl=58 time=30.6 ms"),
        ("203.0.113.30", 3, "ttl=58 (DUP!)"),
        ("203.0.113.77", 2, "ttl=58 time=26.7 ms (DIFFERENT ADDRESS!)"),
    ]
    assert selftest.parse_ping_stats(out) == (6, 4, 1)
    assert selftest.parse_ping_stats("3 packets transmitted, 0 received, +3 errors") == (3, 0, 0)
    trace = (
        "traceroute to multi.lab.test (203.0.113.146), 30 hops max, 60 byte packets\n"
        " 3  203.0.113.134  10.049 ms  10.034 ms 203.0.113.130  10.028 ms\n"
        " 4  2001:db8:0:4::2  18.066 ms *  18.046 ms\n"
        " 7  203.0.113.22  30.164 ms !H  30.108 ms !H\n"
    )
    assert selftest.parse_hop_lines(trace) == {
        3: (["203.0.113.134", "203.0.113.130"], ["r", "r", "r"]),
        4: (["2001:db8:0:4::2"], ["r", "*", "r"]),
        7: (["203.0.113.22"], ["r!H", "r!H"]),
    }


@pytest.mark.lab
def test_a_held_reply_whose_release_never_comes_goes_after_the_hold_limit(lab):
    # ping -c 1: no seq 2 ever leaves, so the reply to seq 1 waits out HOLD_LIMIT_S.
    argv = ["ping", "-4", "-c", "1", "-W", str(int(faults.HOLD_LIMIT_S) + 3), "-n"]
    out = lab.exec("client", [*argv, lab.nodes["faulty"].addr4], timeout=30).stdout
    rtt = selftest.parse_ping_min(out)
    assert rtt is not None, out
    low = faults.HOLD_LIMIT_S * 1000
    assert low <= rtt <= low + 200, out
