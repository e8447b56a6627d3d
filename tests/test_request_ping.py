"""PingRequest: one verdict per bad input, whichever side would run it.

The limits come from iputils ping (20221126 here) and the RFCs, not from our code: -c counts
from 1; -W beyond INT_MAX ms ("bad linger time: 1e10") and -w beyond INT_MAX s are refused, and
so is a NaN interval; a TTL is 1-255 (RFC 791 §3.2: TTL 0 is discarded; iputils' own -t 0 fails
at setsockopt); identifier and sequence are 16-bit (RFC 792); the payload fits one datagram:
IPv4's total length counts 20 + 8 header octets (RFC 791 §3.1, iputils -s 65507 is the most),
IPv6's payload length 8 (RFC 8200 §3, iputils -6 -s 65527).  Where iputils accepts a value
that has no meaning (-w 0, which it reads as "no deadline") the request refuses it rather than
guess; -W 0 is iputils' "infinite timeout" (man ping) and is accepted (test_ping_linger_lab.py).
-W is the request's ``linger``, so a bad one gets the same verdict from either implementation.
"""

from __future__ import annotations

import pickle
import socket

import pytest

import reference.ping
from compare import cli as wiretwin
from handrolled import ping as handrolled_ping
from handrolled.cli.ping import _parser, request_from_args
from handrolled.errors import UsageError
from handrolled.record import FrozenRecordError
from handrolled.requests import MAX_SECONDS, PingRequest
from handrolled.results import Outcome, PingResult

# (keyword arguments, the field the one-line message must start with)
BAD_REQUESTS = [
    ({"count": 0}, "count"),
    ({"count": -1}, "count"),
    ({"count": 2.5}, "count"),
    ({"count": True}, "count"),
    ({"count": 0, "deadline": 5.0}, "count"),  # a time-bounded run is a count and a deadline
    ({"interval": -1.0}, "interval"),
    ({"interval": float("nan")}, "interval"),
    ({"interval": float("inf")}, "interval"),
    ({"interval": 1e10}, "interval"),
    ({"timeout": 0.0}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": 1e10}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": "1"}, "timeout"),
    # -W: iputils refuses a negative or NaN linger time and one beyond INT_MAX ms
    ({"linger": -1}, "linger"),
    ({"linger": -0.001}, "linger"),
    ({"linger": float("nan")}, "linger"),
    ({"linger": float("inf")}, "linger"),
    ({"linger": 1e10}, "linger"),
    ({"linger": MAX_SECONDS + 1}, "linger"),
    ({"linger": "2"}, "linger"),
    ({"linger": True}, "linger"),
    ({"deadline": 0}, "deadline"),
    ({"deadline": -3.0}, "deadline"),
    ({"deadline": 1e306}, "deadline"),
    ({"deadline": MAX_SECONDS + 1}, "deadline"),
    ({"size": -1}, "size"),
    ({"size": 65528}, "size"),  # too big for either family
    ({"size": 65508, "family": 4}, "size"),  # too big for IPv4, family known up front
    ({"size": 10, "payload": b"abc"}, "size"),  # two answers to one question
    ({"payload": "abc"}, "payload"),
    ({"ttl": 0}, "ttl"),
    ({"ttl": 256}, "ttl"),
    ({"ttl": -1}, "ttl"),
    ({"family": 5}, "family"),
    ({"family": socket.AF_INET6}, "family"),  # the IP version, never AF_*
    ({"ident": -1}, "ident"),
    ({"ident": 0x10000}, "ident"),
    ({"seq_start": 0x10000}, "seq_start"),
    ({"seq_start": -1}, "seq_start"),
    ({"socket_kind": "icmp"}, "socket kind"),
    ({"host": ""}, "host"),
    ({"host": "two words"}, "host"),
    ({"host": "evil\n"}, "host"),
    ({"pattern": b""}, "pattern"),  # iputils -p: 1 to 16 pad bytes
    ({"pattern": b"x" * 17}, "pattern"),
    ({"pattern": "ff"}, "pattern"),
    ({"pattern": b"\xff", "payload": b"abc"}, "pattern"),  # the pattern fills the default only
    ({"tos": -1}, "tos"),  # one octet (RFC 791 §3.1, RFC 8200 §7)
    ({"tos": 256}, "tos"),
    ({"tos": 1.5}, "tos"),
    ({"source": "target.example"}, "source"),  # an address literal, never a name
    ({"source": ""}, "source"),
    ({"source": "::1", "family": 4}, "source"),  # of the other family
    ({"interface": ""}, "interface"),
    ({"interface": "x" * 16}, "interface"),  # IFNAMSIZ 16 holds 15 octets and a NUL
    ({"interface": "a/b"}, "interface"),
    ({"interface": "eth 0"}, "interface"),
    ({"user_latency": 1}, "user_latency"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_REQUESTS, ids=[str(k) for k, _ in BAD_REQUESTS])
def test_bad_request_is_refused_naming_the_rule(kwargs: dict, field: str) -> None:
    kwargs = {"host": "127.0.0.1", **kwargs}
    with pytest.raises(UsageError) as err:
        PingRequest(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{field} ") or message.startswith(f"{field}:"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"interval": 0},  # iputils -i 0 (root): back to back
        {"size": 0},
        {"payload": b""},
        {"size": 3, "payload": b"abc"},
        {"ttl": 1},
        {"ttl": 255},
        {"ident": 0},
        {"ident": 0xFFFF},
        {"seq_start": 0},
        {"size": 65507, "family": 4},
        {"size": 65527, "family": 6},
        {"count": 1, "deadline": MAX_SECONDS, "timeout": MAX_SECONDS},
        {"socket_kind": "dgram"},
        {"count": None},  # no -c: until the deadline or Ctrl-C
        {"count": None, "deadline": 1.0},
        {"pattern": b"\xa5"},
        {"pattern": bytes(range(16)), "size": 0},
        {"tos": 0},
        {"tos": 255},
        {"source": "127.0.0.1"},
        {"source": "::1", "family": 6},
        {"interface": "lo"},
        {"interface": "x" * 15},
        {"user_latency": True},
        {"linger": 0},  # -W 0: man ping's "infinite timeout"
        {"linger": 0.001},
        {"linger": MAX_SECONDS},
        {"linger": 2, "count": 3, "deadline": 5.0},
    ],
)
def test_good_request_is_accepted(kwargs: dict) -> None:
    request = PingRequest("127.0.0.1", **kwargs)
    assert pickle.loads(pickle.dumps(request)) == request  # what compare sends to a child
    with pytest.raises(FrozenRecordError):
        request.count = 9  # type: ignore[misc]


def test_timestamped_only_for_the_default_payload_of_16_octets_or_more() -> None:
    # iputils: "if (rts->datalen >= sizeof(struct timeval)) rts->timing = 1"
    assert PingRequest("h").timestamped and PingRequest("h", size=16).timestamped
    assert not PingRequest("h", size=15).timestamped
    assert not PingRequest("h", payload=bytes(56)).timestamped  # the harness's fixed bytes


def test_source_of_the_other_family_refused_once_resolved() -> None:
    with pytest.raises(UsageError, match=r"^source ::1: not an IPv4 address$"):
        PingRequest("h", source="::1").check_fits(4)


def test_payload_size_defaults_to_iputils_56() -> None:
    assert PingRequest("h").payload_size == 56
    assert PingRequest("h", size=100).payload_size == 100
    assert PingRequest("h", payload=b"xyz").payload_size == 3


# ---- the same bad command lines through `wiretwin ping`, either implementation --------------
BAD_COMMAND_LINES = [
    ["-w", "0", "127.0.0.1"],
    ["-c", "0", "127.0.0.1"],
    ["-W", "1e10", "127.0.0.1"],
    ["-W=-1", "127.0.0.1"],  # iputils: "bad linger time: -1"
    ["-W", "nan", "127.0.0.1"],
    ["-W", "inf", "127.0.0.1"],
    ["-W", "86400.5", "127.0.0.1"],
    ["-w", "1e306", "127.0.0.1"],
    ["-i", "nan", "127.0.0.1"],
    ["-i=-1", "127.0.0.1"],
    ["-t", "0", "127.0.0.1"],
    ["-t", "256", "127.0.0.1"],
    ["-s", "-1", "127.0.0.1"],
    ["-s=-1", "127.0.0.1"],
    ["-s", "65508", "127.0.0.1"],  # too big once 127.0.0.1 is known to be IPv4
    ["-6", "-s", "65528", "::1"],
    ["--ident", "65536", "127.0.0.1"],
    ["-c", "zero", "127.0.0.1"],
    ["-c", "1", "two words"],
    ["-6", "-c", "1", "127.0.0.1"],  # no IPv6 address: a resolve error, exit 2 as iputils
    [],
]


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES, ids=" ".join)
def test_bad_command_line_same_verdict_from_both_implementations(argv, capsys) -> None:
    verdicts = {}
    for impl in ("handrolled", "reference"):
        status = wiretwin.main(["ping", "--impl", impl, *argv])
        out, err = capsys.readouterr()
        assert out == "", (impl, out)
        assert err.startswith("ping: ") and err.count("\n") == 1, (impl, err)
        verdicts[impl] = (status, err)
    assert verdicts["handrolled"] == verdicts["reference"]
    assert verdicts["handrolled"][0] == 2


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e10", "86400.5"])
def test_bad_w_names_the_linger_time_on_both_sides(value: str, capsys) -> None:
    # -W is the request's linger time on either side, not a per-probe timeout
    for impl in ("handrolled", "reference"):
        assert wiretwin.main(["ping", "--impl", impl, f"-W={value}", "127.0.0.1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ping: linger {float(value)}: must be"), (impl, err)


@pytest.mark.parametrize(
    ("argv", "linger"),
    [
        (["h"], 10.0),  # iputils' MAXWAIT
        (["-W", "2", "h"], 2.0),
        (["-W", "0", "h"], 0.0),  # no limit, kept as 0 for the engines to read
        (["-c", "3", "-w", "9", "-W", "0.5", "h"], 0.5),
    ],
)
def test_cli_puts_w_into_the_request(argv: list[str], linger: float) -> None:
    request = request_from_args(_parser().parse_args(argv))
    assert request.linger == linger
    assert request.timeout == PingRequest("h").timeout  # -W no longer sets a per-probe wait


def test_linger_is_unset_unless_asked_for() -> None:
    # the seed and compare build requests without it: the per-probe timeout, as before
    assert PingRequest("h").linger is None
    assert PingRequest("h", timeout=3).linger is None


@pytest.mark.parametrize(
    ("argv", "count", "deadline"),
    [
        (["h"], None, None),  # no -c: until interrupted, as iputils
        (["-w", "2", "-i", "0.5", "h"], None, 2.0),  # until the deadline
        (["-w", "86400", "-i", "0", "h"], None, 86400.0),
        (["-c", "3", "-w", "9", "h"], 3, 9.0),  # with -w, -c is the answers that end it early
    ],
)
def test_cli_without_count_builds_an_unbounded_request(argv, count, deadline) -> None:
    request = request_from_args(_parser().parse_args(argv))
    assert isinstance(request, PingRequest)
    assert (request.count, request.deadline) == (count, deadline)


# ---- checks that need the resolved family, in both engines' run_ping ------------------------
ENGINES = {"handrolled": handrolled_ping.run_ping, "reference": reference.ping.run_ping}


def _verdict(engine, host: str, **fields) -> str:
    try:
        result = engine(PingRequest(host, count=1, timeout=0.5, **fields))
    except UsageError as exc:
        return f"refused: {exc}"
    assert isinstance(result, PingResult) and len(result.probes) == 1
    return "ran"


@pytest.mark.parametrize("fields", [{"size": 65508}, {"payload": b"x" * 65508}])
def test_payload_too_big_for_ipv4_refused_by_both(fields: dict) -> None:
    # 127.0.0.1 is IPv4 only once resolved (no family given): refused after resolving and
    # before any socket opens, so no privilege is needed.  (Over 65527 octets is refused for
    # either family when the request is built; see BAD_REQUESTS.)
    verdicts = {name: _verdict(engine, "127.0.0.1", **fields) for name, engine in ENGINES.items()}
    assert verdicts["handrolled"] == verdicts["reference"]
    assert verdicts["handrolled"].startswith("refused: size 65508: does not fit an IPv4 packet")


@pytest.mark.root
@pytest.mark.parametrize(
    ("host", "size"),
    [("::1", 65508), ("127.0.0.1", 65507), ("::1", 65527)],  # too big for IPv4 only / limits
)
def test_payload_that_fits_the_family_runs_on_both(host: str, size: int) -> None:
    verdicts = {name: _verdict(engine, host, size=size) for name, engine in ENGINES.items()}
    assert verdicts == {"handrolled": "ran", "reference": "ran"}
    # The hand-rolled side gets its echo back (the kernel fragments what exceeds lo's MTU).
    (probe,) = handrolled_ping.run_ping(PingRequest(host, count=1, timeout=1, size=size)).probes
    assert probe.outcome is Outcome.REPLY and len(probe.sent) == 8 + size
