"""The lab keeps its promises, checked with tools nobody here wrote (traceroute(8), ping(8))."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from compare import lab as lab_mod
from compare.capture import Capture, write_pcap
from compare.lab import build
from compare.lab.selftest import check_lab, parse_ping_min, parse_traceroute

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def wiretwin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compare.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- pure: the plan and the parsers ------------------------------------------------------------
def test_plan_uses_documentation_addresses_only():
    import ipaddress

    allowed = [
        ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    ]
    plan = lab_mod.Lab("test", None)
    addrs = [a for n in plan.nodes.values() for a in (n.addr4, n.addr6)]
    addrs += [lab_mod.BLACKHOLE4, lab_mod.BLACKHOLE6]
    for addr in addrs:
        ip = ipaddress.ip_address(addr)
        assert any(ip in net for net in allowed if net.version == ip.version), addr


def test_plan_promises_cumulative_rtts_and_one_silent_one_unnamed_hop():
    plan = lab_mod.Lab("test", {"r1": 1, "r2": 2, "r3": 3, "r4": 4, "r5": 5, "r6": 6, "target": 7})
    hops = plan.hops()
    assert [n.ttl for n in hops] == list(range(1, 8))
    assert [n.rtt_ms for n in hops] == [1, 3, 6, 10, 15, 21, 28]
    assert [n.role for n in hops if not n.answers] == ["r3"]
    assert [n.role for n in hops if n.hostname is None] == ["r5"]
    assert len(hops) - 1 >= 6  # at least six routers before the target
    assert plan.rtt_ok(28.2, hops[-1]) and not plan.rtt_ok(27.0, hops[-1])
    assert not plan.rtt_ok(28 + lab_mod.STAGE_SLACK_MS * 7 + lab_mod.BASE_SLACK_MS + 0.1, hops[-1])


def test_stages_count_only_links_with_a_delay():
    plan = lab_mod.Lab("test", {"r2": 1.0, "r5": 0.0, "target": 2.0})
    assert [n.stages for n in plan.hops()] == [0, 1, 1, 1, 1, 1, 2]
    assert plan.prohibited.stages == 1 and plan.client.stages == 0
    # `lab up --no-delay`: no stage anywhere, so the window is the base slack only
    plain = lab_mod.Lab("test", {})
    faulted = {"faulty": 2, "forged": 1}  # their fault stages run with no delay too
    assert {n.stages for n in plain.nodes.values() if n.role not in faulted} == {0}
    assert {role: plain.nodes[role].stages for role in faulted} == faulted
    assert plain.rtt_tolerance(plain.target) == (-lab_mod.EARLY_SLACK_MS, lab_mod.BASE_SLACK_MS)
    # the default lab delays every link
    assert [n.stages for n in lab_mod.Lab("test", None).hops()] == list(range(1, 8))


def test_the_report_states_the_window_the_lab_applies():
    from compare.runner import tolerances

    plan = lab_mod.Lab("test", None)
    node = plan.target
    low, high = plan.rtt_tolerance(node)
    assert low == node.rtt_ms - lab_mod.EARLY_SLACK_MS
    assert high == node.rtt_ms + lab_mod.STAGE_SLACK_MS * node.stages + lab_mod.BASE_SLACK_MS
    text = tolerances()["lab_window"]
    assert f"promised - {lab_mod.EARLY_SLACK_MS} ms" in text, text
    assert f"{lab_mod.STAGE_SLACK_MS} ms per delay stage + {lab_mod.BASE_SLACK_MS} ms]" in text


def test_settle_min_rtts_measures_again_only_when_noise_can_explain_it():
    plan = lab_mod.Lab("test", None)
    target, r2 = plan.target, plan.nodes["r2"]
    nodes = {"t": target, "r2": r2}
    late = {"t": [target.rtt_ms + 3.0] * 3, "r2": [r2.rtt_ms + 0.1]}
    good = {"t": [None, target.rtt_ms + 0.2], "r2": [r2.rtt_ms + 4.0]}
    calls = []

    def again(samples):
        def measure():
            calls.append(1)
            return samples

        return measure

    # one late measurement (a pause), then a good one: the minimum over both is in the window
    verdict = plan.settle_min_rtts(nodes, late, again(good))
    assert verdict.ok and verdict.measurements == 2 and len(calls) == 1, verdict
    assert verdict.minimum == {"t": target.rtt_ms + 0.2, "r2": r2.rtt_ms + 0.1}
    # a systematic excess stays late however often it is measured
    verdict = plan.settle_min_rtts(nodes, late, again(late))
    assert not verdict.ok and verdict.measurements == lab_mod.RTT_ATTEMPTS
    assert verdict.why.startswith("t: min") and "after 3 measurement(s)" in verdict.why
    # early is never noise: no second measurement
    calls.clear()
    early = {"t": [target.rtt_ms - 0.2], "r2": [r2.rtt_ms]}
    verdict = plan.settle_min_rtts(nodes, early, again(good))
    assert not verdict.ok and verdict.measurements == 1 and calls == []
    # no sample at all is a failure, and without `again` there is one measurement only
    verdict = plan.settle_min_rtts(nodes, {"t": [None], "r2": [r2.rtt_ms]})
    assert not verdict.ok and verdict.why.startswith("t: no sample")


def test_hosts_file_names_every_named_node_both_families():
    plan = lab_mod.Lab("test", None)
    hosts = plan.hosts_file()
    for node in plan.nodes.values():
        if node.hostname:
            assert f"{node.addr4}\t{node.hostname}" in hosts
            assert f"{node.addr6}\t{node.hostname}" in hosts
        else:
            assert node.addr4 not in hosts and node.addr6 not in hosts


def test_parse_traceroute_and_ping_output():
    out = (
        "traceroute to 203.0.113.10 (203.0.113.10), 30 hops max, 60 byte packets\n"
        " 1  r1.lab.test (198.51.100.2)  3.394 ms\n"
        " 2  *\n"
        " 3  198.51.100.14  21.048 ms\n"
    )
    assert parse_traceroute(out) == {
        1: ["198.51.100.2", "r1.lab.test", "(198.51.100.2)", "3.394", "ms"],
        2: ["*"],
        3: ["198.51.100.14", "198.51.100.14", "21.048", "ms"],
    }
    assert parse_ping_min("rtt min/avg/max/mdev = 32.311/32.819/33.587/0.552 ms") == 32.311
    assert parse_ping_min("100% packet loss") is None


def test_a_tool_that_is_missing_or_hangs_is_a_lab_error():
    with pytest.raises(lab_mod.LabError, match="cannot run 'wiretwin-no-such-tool'"):
        build._run(["wiretwin-no-such-tool", "x"])
    with pytest.raises(lab_mod.LabError, match=r"sleep 5: no answer after 0\.2 s"):
        build._run(["sleep", "5"], timeout=0.2)


def test_a_stale_delay_pid_of_another_process_is_neither_trusted_nor_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "STATE_DIR", tmp_path)
    plan = lab_mod.Lab("dead", None)
    state = tmp_path / "dead.json"
    other = subprocess.Popen(["sleep", "60"])
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", build.DELAY_MODULE]
    delay = subprocess.Popen(sleeper)
    try:
        # after a crash, the pid in the state file went to an unrelated process
        state.write_text(json.dumps({"lab_id": "dead", "delays": {}, "delay_pid": other.pid}))
        assert not plan.delay_alive()
        lab_mod.reap("dead")
        assert other.poll() is None, "reap killed a process that is not the delay stage"
        # a delay stage is counted and killed
        state.write_text(json.dumps({"lab_id": "dead", "delays": {}, "delay_pid": delay.pid}))
        assert plan.delay_alive()
        lab_mod.reap("dead")
        assert delay.wait(timeout=5) != 0
    finally:
        other.kill()
        delay.kill()
        other.wait()
        delay.wait()


def test_compare_on_a_lab_whose_delay_stage_died_is_an_error(tmp_path, monkeypatch, capsys):
    from compare import runner

    monkeypatch.setattr(build, "STATE_DIR", tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = {"lab_id": "dead", "delays": lab_mod.DEFAULT_DELAYS_MS, "delay_pid": gone.pid}
    (tmp_path / "dead.json").write_text(json.dumps(state))
    assert runner.main(["ping", "--lab-id", "dead", "--no-progress"]) == runner.EXIT_ERROR
    assert "delay stage is not running" in capsys.readouterr().err


class _Unpicklable(Exception):
    """An exception that cannot cross as a pickle: it holds a lock."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


def _raise_unpicklable() -> None:
    raise _Unpicklable("held a lock")


def test_call_python_reports_an_exception_that_does_not_pickle():
    # The child (python -m compare.lab --call) must send an error the parent can unpickle and that
    # names the original exception, not one defined in the child's __main__.
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    with pytest.raises(lab_mod.LabError, match="_Unpicklable: held a lock"):
        lab_mod.call_python([], "test_lab:_raise_unpicklable", (), {}, timeout=60, env=env)


def test_ci_setup_installs_every_tool_the_lab_runs():
    # .ci/setup maps each command to its Debian package ("ip:iproute2 ..."); a tool Lab.create
    # runs that setup does not install would fail the first lab test on a fresh machine.
    setup = (ROOT / ".ci" / "setup").read_text()
    commands = set(re.findall(r"([\w.-]+):[\w.-]+", setup))
    assert set(lab_mod.TOOLS) <= commands, set(lab_mod.TOOLS) - commands


def test_every_tool_the_lab_runs_is_on_path():
    missing = lab_mod.missing_tools()
    if missing and not IN_CI:
        pytest.skip(f"not installed here: {', '.join(missing)}")
    assert not missing, f"CI=true and the lab's tools are missing: {missing}"


# ---- the real lab -------------------------------------------------------------------------
@pytest.mark.lab
def test_lab_keeps_its_promises_per_traceroute8_and_ping8(lab):
    checks = check_lab(lab)
    failed = [c for c in checks if not c.ok]
    assert not failed, "\n".join(
        f"{c.name}: expected {c.expected}, saw {c.observed}" for c in failed
    )
    # the checks really covered what the issue lists
    names = " ".join(c.name for c in checks)
    for needed in (
        "-4 -I hops",
        "-6 -I hops",
        "-4 -U hops",
        "-4 -T hops",
        "names",
        "target RTT",
        "prohibited",
        "blackhole",
        "unknown name",
    ):
        assert needed in names


@pytest.mark.lab
def test_lab_call_runs_python_inside_the_namespace_with_lab_names(lab):
    assert lab.call("client", "socket:gethostbyname", "target.lab.test") == lab.target.addr4
    name, _, _ = lab.call("client", "socket:gethostbyaddr", lab.nodes["r1"].addr4)
    assert name == "r1.lab.test"
    with pytest.raises(socket.herror):
        lab.call("client", "socket:gethostbyaddr", lab.nodes["r5"].addr4)
    with pytest.raises(socket.gaierror):
        lab.call("client", "socket:gethostbyname", "no-such-host.example")


@pytest.mark.lab
def test_lab_socket_lives_in_the_namespace(lab):
    # A UDP socket created in the target namespace receives what the client sends across the lab.
    server = lab.socket("target", socket.AF_INET, socket.SOCK_DGRAM)
    with server:
        server.bind((lab.target.addr4, 0))
        port = server.getsockname()[1]
        server.settimeout(5)
        code = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'hi', ('{lab.target.addr4}', {port}))"
        )
        assert lab.exec("client", [sys.executable, "-c", code]).returncode == 0
        data, (src, _) = server.recvfrom(100)
    assert data == b"hi" and src == lab.client.addr4
    # and the root namespace has no lab address at all
    assert (
        lab.target.addr4
        not in subprocess.run(["ip", "addr"], capture_output=True, text=True).stdout
    )


@pytest.mark.lab
def test_two_labs_coexist_and_teardown_leaves_nothing(lab):
    with lab_mod.Lab.create({}) as second:  # no delay stages: quick
        assert second.prefix != lab.prefix
        proc = second.exec("client", ["ping", "-4", "-c", "1", "-W", "2", second.target.addr4])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ns_second = [n for n in lab_mod.list_namespaces() if n.startswith(second.prefix)]
        assert len(ns_second) == len(second.nodes)
    assert not [n for n in lab_mod.list_namespaces() if n.startswith(second.prefix)]
    assert not (lab_mod.NETNS_ETC / second.ns("client")).exists()
    # the session lab is untouched
    assert (
        lab.exec("client", ["ping", "-4", "-c", "1", "-W", "2", lab.target.addr4]).returncode == 0
    )


@pytest.mark.lab
def test_cli_down_by_id_reaps_a_lab_whose_state_file_is_gone():
    second = lab_mod.Lab.create({})  # no delay stages: quick
    try:
        (lab_mod.STATE_DIR / f"{second.lab_id}.json").unlink()
        down = wiretwin("lab", "down", "--lab-id", second.lab_id)
        assert down.returncode == 0, down.stderr
        assert f"removed {len(second.nodes)} namespaces" in down.stdout
        assert not [n for n in lab_mod.list_namespaces() if n.startswith(second.prefix)]
    finally:
        second.down()


@pytest.mark.lab
def test_build_failure_tears_down_what_was_built(lab, monkeypatch):
    def broken(self, queue_args):
        raise lab_mod.LabError("injected")

    monkeypatch.setattr(lab_mod.Lab, "_start_delay", broken)
    with pytest.raises(lab_mod.LabError, match="injected"):
        lab_mod.Lab.create(lab_id="fa11")
    assert not [n for n in lab_mod.list_namespaces() if n.startswith("wt-fa11-")]


@pytest.mark.lab
def test_cli_up_status_exec_down_and_reap_after_a_crash(lab):
    up = wiretwin("lab", "up", "--json", "--delays", "r1=1")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    lab_id = info["lab_id"]
    assert info["delay_stage_alive"] and info["hops"][0]["rtt_ms"] == 1.0
    try:
        status = wiretwin("lab", "status", "--lab-id", lab_id)
        assert (
            status.returncode == 0
            and "r1.lab.test" in status.stdout
            and "(no reverse DNS)" in status.stdout
        )
        ex = wiretwin("lab", "exec", "--lab-id", lab_id, "--", "ip", "-br", "addr")
        assert ex.returncode == 0 and "198.51.100.1/30" in ex.stdout
        # simulate a crash: a stray process left inside a lab namespace, then reap everything of it
        stray = subprocess.Popen(["ip", "netns", "exec", f"wt-{lab_id}-target", "sleep", "60"])
        state = json.loads((lab_mod.STATE_DIR / f"{lab_id}.json").read_text())
        removed = lab_mod.reap(lab_id)
        assert len(removed) == len(lab.nodes)
        assert stray.wait(timeout=5) != 0
        assert not lab_mod.pid_alive(state["delay_pid"])
    finally:
        lab_mod.reap(lab_id)
    bad = wiretwin("lab", "status", "--lab-id", lab_id)
    assert bad.returncode == 2 and "no lab with id" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.lab
def test_lab_create_runs_exactly_the_tools_it_declares(monkeypatch):
    # Every program the build runs goes through build._run; record which ones.
    used: set[str] = set()
    real_run = build._run

    def recording(argv, **kw):
        argv = list(argv)
        prefix = ["ip", "netns", "exec"]
        used.add(argv[4] if argv[:3] == prefix else argv[0])
        return real_run(argv, **kw)

    monkeypatch.setattr(build, "_run", recording)
    with lab_mod.Lab.create({"r1": 1.0}):  # one delay stage: the NFQUEUE rules run too
        pass
    assert used == set(lab_mod.TOOLS)


def _talk(lab, family: int) -> None:
    """A TCP dialogue client -> target, a refused connection (the target's RST) and a UDP
    exchange, all through the kernel's own TCP and UDP, whose checksums offload would leave
    partial."""
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    dst = lab.target.addr(family)
    with lab.socket("target", af, socket.SOCK_STREAM) as server:
        server.bind((dst, 0))
        server.listen(1)
        server.settimeout(5)
        port = server.getsockname()[1]
        with lab.socket("client", af, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect((dst, port))
            conn, _ = server.accept()
            with conn:
                client.sendall(b"EHLO checksum.lab.test\r\n")
                assert conn.recv(100).startswith(b"EHLO")
                conn.sendall(b"250 odd-length reply\r\n")
                assert client.recv(100).startswith(b"250")
    with lab.socket("client", af, socket.SOCK_STREAM) as refused:
        refused.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            refused.connect((dst, port))  # the listener is gone: RST
    with (
        lab.socket("target", af, socket.SOCK_DGRAM) as server,
        lab.socket("client", af, socket.SOCK_DGRAM) as client,
    ):
        server.bind((dst, 0))
        server.settimeout(5)
        client.settimeout(5)
        client.sendto(b"ping over udp", server.getsockname()[:2])
        data, peer = server.recvfrom(100)
        server.sendto(data[::-1], peer)
        assert client.recv(100) == b"pdu revo gnip"


def checksum_verdicts(pcap: Path) -> list[tuple[str, str]]:
    """(protocol, checksum status) per TCP/UDP segment in ``pcap``, as tshark validates them
    (1 good, 0 bad, 2 unverified)."""
    argv = ["tshark", "-n", "-r", str(pcap)]
    for proto in ("ip", "tcp", "udp"):
        argv += ["-o", f"{proto}.check_checksum:TRUE"]
    argv += ["-Y", "tcp || udp", "-T", "fields", "-E", "separator=,"]
    argv += ["-e", "ip.checksum.status", "-e", "tcp.checksum.status", "-e", "udp.checksum.status"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    verdicts = []
    for line in proc.stdout.splitlines():
        ip_status, tcp_status, udp_status = line.split(",")
        if ip_status:
            verdicts.append(("ip", ip_status))
        verdicts.append(("tcp", tcp_status) if tcp_status else ("udp", udp_status))
    return verdicts


@pytest.mark.lab
def test_pcaps_of_kernel_tcp_and_udp_verify_in_tshark(lab, tmp_path):
    # Issue 11: with checksum offload on, veth leaves the kernel's TCP/UDP checksums partial
    # and Wireshark flags every such segment "TCP CHECKSUM INCORRECT".
    if shutil.which("tshark") is None:
        if IN_CI:
            pytest.fail("CI=true and tshark is missing (.ci/browser-setup installs it)")
        pytest.skip("needs tshark")
    with Capture(lab.ns("client"), "down0") as capture:
        _talk(lab, 4)
        _talk(lab, 6)
    pcap = tmp_path / "checksums.pcap"
    write_pcap(pcap, capture.frames)
    verdicts = checksum_verdicts(pcap)
    kinds = {kind for kind, _ in verdicts}
    assert {"tcp", "udp"} <= kinds and len(verdicts) >= 20, verdicts  # the dialogue was seen
    bad = [(kind, status) for kind, status in verdicts if status != "1"]
    assert not bad, f"{len(bad)} of {len(verdicts)} checksums not good in tshark: {bad[:5]}"
