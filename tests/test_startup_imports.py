"""The client command lines start without the harness: no scapy, no lab, no report libraries.

Each command runs in a fresh interpreter with ``-X importtime``, whose report on stderr names
every module the run imported (CPython's own import tracing, not our code's account of itself).
"""

from __future__ import annotations

import pytest
from import_trace import imported as _imported

# Never on a client's path: the scapy twin, the harness and the lab, the report's libraries.
FORBIDDEN = ("scapy", "reference", "tabulate", "jinja2", "matplotlib", "junitparser", "compare")
# Standard modules a traceroute run has no use for (argparse's shutil brings bz2 and lzma).
HEAVY_STDLIB = ("shutil", "bz2", "lzma", "json", "asyncio", "ssl", "email", "http", "subprocess")


def _bad(modules: set[str], roots: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in roots and m not in allowed)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "handrolled.cli.traceroute", "--help"],
        ["-m", "handrolled.traceroute", "--help"],
        ["-m", "handrolled.cli.ping", "--help"],
    ],
)
def test_client_help_imports_no_harness(argv: list[str]) -> None:
    modules = _imported(argv)
    assert _bad(modules, FORBIDDEN) == []
    # SMTP's grammar (handrolled.smtp_protocol) is for smtp alone: ping and traceroute
    # never load it, though they share handrolled.requests with MailRequest
    assert "handrolled.requests" in modules  # the front end did load the request contract
    assert "handrolled.smtp_protocol" not in modules


@pytest.mark.parametrize("command", ["traceroute", "ping"])
def test_wiretwin_client_commands_import_only_the_front_end(command: str) -> None:
    # `wiretwin` is compare/cli.py; nothing else of compare (lab, runner, report) may load
    code = f"import sys; from compare.cli import main; sys.exit(main([{command!r}, '--help']))"
    modules = _imported(["-c", code])
    assert _bad(modules, FORBIDDEN, allowed=("compare", "compare.cli")) == []
    assert "handrolled.smtp_protocol" not in modules


@pytest.mark.root
def test_a_real_traceroute_run_imports_no_harness_and_no_heavy_stdlib() -> None:
    # a real trace over loopback (raw sockets as root, datagram ones otherwise)
    modules = _imported(["-m", "handrolled.traceroute", "-n", "-q", "1", "-w", "1", "127.0.0.1"])
    assert "handrolled.tracenet" in modules  # it did run the engine
    assert _bad(modules, FORBIDDEN) == []
    assert _bad(modules, HEAVY_STDLIB) == []
    assert "handrolled.smtp_protocol" not in modules
    # nor does a bad option load the engine at all
    assert "handrolled.tracenet" not in _imported(
        ["-m", "handrolled.cli.traceroute", "-q", "0", "x"]
    )
