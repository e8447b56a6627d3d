"""Start-up (issue 15): what a client run leaves unloaded, and the lazy names that make it so.

The contract's SMTP types live in handrolled/results_smtp.py and handrolled/requests_smtp.py and
load on first use through ``handrolled.results`` / ``handrolled.requests`` (PEP 562).  Which
modules a run loaded is read from CPython's own ``-X importtime`` report, not from our code.
"""

from __future__ import annotations

import pytest
from import_trace import imported, traced_run

from handrolled import requests, requests_smtp, results, results_smtp

# Modules a numeric traceroute or a ping has no use for: SMTP's types, typing (only type
# checkers read results.Family's Literal), queue (the reverse-DNS threads), the IDNA codec;
# dataclasses and the inspect it imports (the contract's types are handrolled.record's
# Records), shutil (argparse's terminal width; cli.common.Formatter finds it itself), json
# (only --json prints it).
NOT_ON_A_CLIENT_RUN = (
    "handrolled.results_smtp",
    "handrolled.requests_smtp",
    "typing",
    "queue",
    "encodings.idna",
    "unicodedata",
    "dataclasses",
    "inspect",
    "shutil",
    "json",
)


def _imported(argv: list[str]) -> set[str]:
    names = imported(argv)
    assert "handrolled.results" in names, sorted(names)
    return names


@pytest.mark.parametrize(
    ("module", "lazy"),
    [(results, results_smtp), (requests, requests_smtp)],
    ids=["results", "requests"],
)
def test_every_smtp_name_is_served_by_the_contract_module(module, lazy) -> None:
    for name in lazy.__all__:
        assert getattr(module, name) is getattr(lazy, name), name
        assert name in dir(module)
    # from-imports go through the same hook
    namespace: dict = {}
    exec(f"from {module.__name__} import {', '.join(lazy.__all__)}", namespace)
    assert all(namespace[name] is getattr(lazy, name) for name in lazy.__all__)


@pytest.mark.parametrize("module", [results, requests], ids=["results", "requests"])
def test_an_unknown_name_is_still_an_attribute_error(module) -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        module.no_such_thing  # noqa: B018
    with pytest.raises(ImportError):
        exec(f"from {module.__name__} import no_such_thing", {})


def test_the_smtp_types_behave_as_before() -> None:
    # frozen, slotted, compared by value: the contract's types did not change with their file
    reply = results.Reply(250, ("OK",))
    assert reply == results_smtp.Reply(250, ("OK",)) and reply.text == "OK"
    with pytest.raises(AttributeError):
        reply.code = 500  # type: ignore[misc]
    assert not hasattr(reply, "__dict__")
    mail = requests.MailRequest(
        "mx.example", mail_from="", recipients=["a@example.org"], message=b"x"
    )
    assert mail.recipients == ("a@example.org",) and mail.helo_name == requests.SMTP_DEFAULT_HELO


def test_family_is_plain_int_at_run_time() -> None:
    # annotations are text (PEP 563); only a type checker reads the Literal[4, 6]
    assert results.Family is int


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "handrolled.cli.traceroute", "--help"],
        ["-m", "handrolled.cli.ping", "--help"],
        [
            "-c",
            "import sys; from compare.cli import main; sys.exit(main(['traceroute', '--help']))",
        ],
    ],
    ids=["traceroute --help", "ping --help", "wiretwin traceroute --help"],
)
def test_a_client_front_end_loads_none_of_them(argv: list[str]) -> None:
    loaded = _imported(argv)
    assert sorted(loaded & set(NOT_ON_A_CLIENT_RUN)) == []


@pytest.mark.root
def test_a_numeric_trace_loads_none_of_them() -> None:
    # a real trace over loopback by name, so the resolver runs (getaddrinfo) too
    loaded, proc = traced_run(
        ["-m", "handrolled.traceroute", "-n", "-q", "1", "-w", "1", "localhost"]
    )
    # it did run the engine, to the end: localhost answers at hop 1
    assert proc.returncode == 0 and proc.stdout.splitlines()[1].startswith(" 1  127.0.0.1 ")
    assert sorted(loaded & set(NOT_ON_A_CLIENT_RUN)) == []


@pytest.mark.root
def test_a_numeric_ping_loads_none_of_them() -> None:
    # one echo over loopback by name through the wiretwin front end, statistics printed
    loaded, proc = traced_run(
        ["-m", "compare.cli", "ping", "-n", "-c", "1", "-W", "1", "localhost"]
    )
    # the echo went out and came back, and iputils' statistics were printed
    assert proc.returncode == 0 and "1 packets transmitted, 1 received" in proc.stdout
    assert sorted(loaded & set(NOT_ON_A_CLIENT_RUN)) == []


def test_the_smtp_client_does_load_them() -> None:
    # the other side of the split: the SMTP front end gets its types from the same contract
    loaded = _imported(["-m", "handrolled.cli.smtp", "--help"])
    assert {"handrolled.results_smtp", "handrolled.requests_smtp"} <= loaded
