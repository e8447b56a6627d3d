"""TraceRequest: the traceroute job's inputs, checked once for both engines.

(a) each rule refuses its bad value with a UsageError that names the field; (b) the same bad
command lines get the same verdict from ``wiretwin traceroute`` whichever engine is asked for
(exit 2, one line, before anything is resolved or sent), and the rules traceroute(8) itself
enforces are checked against traceroute(8); (c) one good request gives the same hops from both
engines on the lab's path, and the hops the lab promises.
"""

from __future__ import annotations

import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from handrolled.errors import UsageError
from handrolled.requests import MAX_SECONDS, TraceRequest
from handrolled.results import Method, Outcome, TraceResult

# -- (a) the rules -----------------------------------------------------------------------------

BAD = [
    ({"host": ""}, "host: must not be empty"),
    ({"host": "a b"}, "host 'a b': must not contain spaces"),
    ({"method": "sctp"}, "method 'sctp': must be icmp, udp or tcp"),
    # port 0 is reserved (RFC 768, RFC 793); "the default port" is None
    ({"method": Method.UDP, "port": 0}, "port 0: must be 1-65535"),
    ({"method": Method.TCP, "port": 65536}, "port 65536: must be 1-65535"),
    # traceroute(8): "no more than 10 probes per hop", and at least one
    ({"probes_per_hop": 0}, "probes_per_hop 0: must be 1-10"),
    ({"probes_per_hop": 11}, "probes_per_hop 11: must be 1-10"),
    ({"probes_per_hop": True}, "probes_per_hop True: must be a whole number"),
    # TTL is 8 bits (RFC 791 §3.1); traceroute(8): "max hops cannot be more than 255"
    ({"max_hops": 256}, "max_hops 256: must be 1-255"),
    ({"first_ttl": 0}, "first_ttl 0: must be 1-255"),
    ({"first_ttl": 5, "max_hops": 3}, "first_ttl 5: must not exceed max_hops 3"),
    ({"sim_queries": 0}, "sim_queries 0: must be 1-2550"),
    ({"wait": (0.0, 3.0, 10.0)}, "wait MAX 0.0: must be more than 0"),
    (
        {"wait": (1e10, 3.0, 10.0)},
        f"wait MAX 10000000000.0: must be more than 0 and at most {MAX_SECONDS:g}",
    ),
    ({"wait": (math.nan, 3.0, 10.0)}, "wait MAX nan: must be a number of seconds"),
    ({"wait": (math.inf, 3.0, 10.0)}, "wait MAX inf: must be more than 0"),
    ({"wait": (1.0, -1.0, 10.0)}, "wait HERE -1.0: must be a factor from 0"),
    ({"wait": (1.0, 3.0, math.nan)}, "wait NEAR nan: must be a factor from 0"),
    ({"wait": (1.0, 3.0)}, "wait (1.0, 3.0): must be MAX, HERE, NEAR"),
    ({"family": 5}, "family 5: must be 4 or 6"),
    ({"resolve": "yes"}, "resolve 'yes': must be True or False"),
    ({"ident": -1}, "ident -1: must be 0-65535"),
    ({"ident": 0x10000}, "ident 65536: must be 0-65535"),
    ({"payload": "text"}, "payload str: must be bytes"),
    ({"payload": bytes(65001)}, "payload of 65001 bytes: at most 65000"),
    # traceroute(8): "too big packetlen N specified" above its MAX_PACKET_LEN, 65000
    ({"packet_len": 65001}, "packet_len 65001: must be 0-65000"),
    ({"packet_len": 100, "payload": b"x"}, "packet_len and payload: give one or the other"),
    ({"dont_fragment": 1}, "dont_fragment 1: must be True or False"),
    ({"tos": 256}, "tos 256: must be 0-255"),  # one octet: RFC 791 §3.1, RFC 8200 §7
    ({"source": ""}, "source: must not be empty"),
    # linux/if.h IFNAMSIZ and dev_valid_name()
    ({"interface": "a/b"}, "interface 'a/b': not a device name"),
    ({"interface": "x" * 16}, f"interface {'x' * 16!r}: not a device name"),
    ({"send_wait": -1}, "send_wait -1: must be at least 0"),  # traceroute(8): "bad sendtime"
    ({"fixed_port": True}, "fixed_port: for UDP probes only, not icmp"),  # traceroute(8) -U
    ({"method": Method.UDP, "fixed_port": 1}, "fixed_port 1: must be True or False"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_each_rule_refuses_with_one_line_naming_it(kwargs: dict, message: str) -> None:
    kwargs = {"host": "198.51.100.1", **kwargs}
    with pytest.raises(UsageError) as info:
        TraceRequest(**kwargs)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text


def test_good_requests_are_kept_as_given_and_cross_processes() -> None:
    request = TraceRequest("203.0.113.10", method="udp", wait=[2, 0, 0], family=6)
    assert request.method is Method.UDP and request.wait == (2.0, 0.0, 0.0)
    assert pickle.loads(pickle.dumps(request)) == request  # how compare hands it to a side
    with pytest.raises(AttributeError):  # frozen: both sides see the same inputs
        request.max_hops = 3  # type: ignore[misc]
    # the edges are allowed: factors of 0 turn HERE/NEAR off (traceroute(8)'s -w)
    TraceRequest("x", first_ttl=255, max_hops=255, probes_per_hop=10, wait=(MAX_SECONDS, 0, 0))
    TraceRequest("x", method=Method.UDP, port=65535, ident=0)


def test_packet_len_sets_the_payload_size_as_traceroute8() -> None:
    # traceroute(8): packet_len is the whole IP datagram; default 60 (IPv4) / 80 (IPv6) bytes,
    # i.e. 32 payload bytes after an 8-byte UDP or ICMP header; below the headers, none; -T
    # sends a bare SYN whatever it says
    assert TraceRequest("x").data_len(4) == TraceRequest("x").data_len(6) == 32
    assert TraceRequest("x", packet_len=1400).data_len(4) == 1400 - 28
    assert TraceRequest("x", packet_len=1400).data_len(6) == 1400 - 48
    assert TraceRequest("x", packet_len=10).data_len(4) == 0
    assert TraceRequest("x", method=Method.TCP, packet_len=1400).data_len(4) == 0
    assert TraceRequest("x", payload=b"abc").data_len(6) == 3


def test_dst_port_is_the_methods_default_unless_given() -> None:
    # traceroute(8)'s defaults: UDP base port 33434, TCP port 80; ICMP has none
    assert TraceRequest("x").dst_port is None
    assert TraceRequest("x", method=Method.UDP).dst_port == 33434
    assert TraceRequest("x", method=Method.TCP).dst_port == 80
    assert TraceRequest("x", method=Method.TCP, port=443).dst_port == 443
    # traceroute(8) -U: "Default port is 53 (dns)"
    assert TraceRequest("x", method=Method.UDP, fixed_port=True).dst_port == 53
    assert TraceRequest("x", method=Method.UDP, fixed_port=True, port=5353).dst_port == 5353


def test_both_engines_take_only_a_request() -> None:
    from handrolled.traceroute import run_trace as handrolled_trace
    from reference.traceroute import run_trace as reference_trace

    for run in (handrolled_trace, reference_trace):
        with pytest.raises(TypeError):
            run("127.0.0.1", max_hops=3)  # type: ignore[call-arg]


# -- (b) the command line, both engines --------------------------------------------------------

# argv -> the start of the one line either engine's run must print (after "traceroute: ")
BAD_ARGV = [
    (["-w", "0"], "wait MAX 0.0: must be more than 0"),
    (["-U", "-p", "0"], "port 0: must be 1-65535"),
    (["-q", "0"], "probes_per_hop 0: must be 1-10"),
    (["-f", "5", "-m", "3"], "first_ttl 5: must not exceed max_hops 3"),
    (["-m", "256"], "max_hops 256: must be 1-255"),
    (["-w", "1e10"], "wait MAX 10000000000.0: must be more than 0 and at most"),
    (["-w", "nan"], "wait MAX nan: must be a number of seconds"),
    (["-w", "5,"], "wait '5,': expected MAX[,HERE,NEAR]"),
    (["-z", "-1"], "bad sendtime '-1' specified"),
    (["-t", "256"], "tos 256: must be 0-255"),
    (["-i", "a/b"], "interface 'a/b': not a device name"),
]
# Of those, the ones traceroute(8) refuses too (exit 2, before it sends anything).  It takes
# -w 0 (no probe waits at all), -w 1e10 and -w nan, and reads -p 0 as "the default port".
TRACEROUTE8_REFUSES = [
    ["-q", "0"],
    ["-f", "5", "-m", "3"],
    ["-m", "256"],
    ["-w", "5,"],
    ["-z", "-1"],
]


def _wiretwin() -> list[str]:
    script = Path(sys.executable).with_name("wiretwin")
    return [str(script)] if script.exists() else [sys.executable, "-m", "compare.cli"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("argv", "message"), BAD_ARGV, ids=[" ".join(a) for a, _ in BAD_ARGV])
def test_bad_command_lines_get_one_verdict_from_both_engines(argv: list[str], message: str) -> None:
    seen = {}
    for impl in ("handrolled", "reference"):
        proc = _run([*_wiretwin(), "traceroute", "--impl", impl, *argv, "127.0.0.1"])
        assert proc.returncode == 2, (impl, proc.stdout, proc.stderr)
        assert proc.stdout == ""  # refused before the header line
        assert proc.stderr.count("\n") == 1, (impl, proc.stderr)
        assert proc.stderr.startswith(f"traceroute: {message}"), (impl, proc.stderr)
        seen[impl] = proc.stderr
    assert seen["handrolled"] == seen["reference"]


@pytest.mark.skipif(shutil.which("traceroute") is None, reason="traceroute(8) not installed")
@pytest.mark.parametrize("argv", TRACEROUTE8_REFUSES, ids=" ".join)
def test_traceroute8_refuses_the_same_options(argv: list[str]) -> None:
    proc = _run(["traceroute", "-n", *argv, "127.0.0.1"])
    assert proc.returncode == 2 and proc.stdout == "", proc


# -- (c) one good request, both engines, the lab ----------------------------------------------


def _hops(result: TraceResult) -> list[tuple[int, frozenset[str]]]:
    return [(h.ttl, frozenset(p.reply_from for p in h.probes if p.reply_from)) for h in result.hops]


@pytest.mark.lab
@pytest.mark.parametrize(("method", "family"), [(Method.UDP, 4), (Method.TCP, 6)])
def test_one_request_gives_the_same_hops_from_both_engines(lab, method, family) -> None:
    request = TraceRequest(
        lab.target.hostname,
        method=method,
        family=family,
        probes_per_hop=2,
        wait=(2.0, 3.0, 10.0),
        resolve=False,
        ident=0x7A7A,
    )
    results = {
        impl: lab.call("client", f"{impl}.traceroute:run_trace", request)
        for impl in ("handrolled", "reference")
    }
    promised = [
        (n.ttl, frozenset({n.addr(family)} if n.answers else ())) for n in lab.hops("target")
    ]
    for impl, result in results.items():
        assert result.reached, impl
        assert _hops(result) == promised, impl
        assert result.hops[-1].probes[0].outcome is Outcome.REPLY, impl
        # the request's default port (traceroute(8)'s: UDP base 33434 + k, TCP 80)
        ports = [p.dst_port for h in result.hops for p in h.probes]
        if method is Method.UDP:
            assert ports == [33434 + k for k in range(len(ports))], impl
        else:
            assert set(ports) == {80}, impl
    assert _hops(results["handrolled"]) == _hops(results["reference"])
