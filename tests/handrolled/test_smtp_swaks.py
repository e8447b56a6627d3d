"""wiretwin smtp's transcript beside swaks(1)'s, both against the same aiosmtpd: the same
transaction hints line for line (" -> ", "<-  ", " ~> ", "<~  ", "<** ", "==="), and
--quit-after stopping where swaks stops.  swaks is the independent tool here: every
expectation is what swaks printed in the same run.  Skipped where swaks is not installed
(apt-get install swaks)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from smtpd_fixtures import (
    AUTH_PASSWORD,
    AUTH_USER,
    RecordingHandler,
    serve_recording,
    skip_or_fail,
)

from handrolled.cli import smtp as cli


@pytest.fixture(autouse=True)
def _swaks_installed() -> None:
    # .ci/browser-setup installs it; under CI=true a missing swaks fails instead of skipping
    if shutil.which("swaks") is None:
        skip_or_fail("swaks is not installed (apt-get install swaks)")


SENDER, RCPT, HELO = "sender@wiretwin.test", "rcpt@wiretwin.test", "client.wiretwin.test"
DATA = b"Subject: the same for both\r\n\r\nline one\r\n.a dot line\r\n"


def swaks(port: int, *extra: str) -> tuple[int, list[str]]:
    argv = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", SENDER]
    argv += ["--helo", HELO, *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout.splitlines()


def ours(port: int, capsys, *extra: str) -> tuple[int, list[str]]:
    argv = ["--server", "127.0.0.1", "--port", str(port), "--from", SENDER, "--helo", HELO]
    status = cli.main([*argv, "--no-pipelining", *extra])  # swaks waits for every reply
    return status, capsys.readouterr().out.splitlines()


def hints(lines: list[str]) -> list[str]:
    """Each wire line's hint; swaks' extra TLS detail lines (=== TLS ...) left out."""
    return [line[:4] if not line.startswith("===") else line for line in lines
            if not line.startswith(("=== TLS", " *** "))]  # fmt: skip


def data_file(tmp_path) -> str:
    """DATA without its last CRLF: swaks sends CRLF.CRLF after the data as given, and we end
    an unterminated last line with CRLF before the dot (RFC 5321 §4.1.1.4): the same bytes."""
    path = tmp_path / "message.eml"
    path.write_bytes(DATA.removesuffix(b"\r\n"))
    return str(path)


@pytest.mark.parametrize("refused", [False, True], ids=["delivered", "rcpt-refused"])
def test_the_same_hints_as_swaks_in_clear(refused, tmp_path, capsys):
    to = "nobody@wiretwin.test" if refused else RCPT
    handler = RecordingHandler(refuse={"nobody@wiretwin.test"})
    with serve_recording(handler) as server:
        theirs = swaks(server.port, "--to", to, "--data", "@" + data_file(tmp_path))
        mine = ours(server.port, capsys, "--to", to, "--data", data_file(tmp_path))
    assert hints(mine[1]) == hints(theirs[1])
    assert ("<** 550 5.1.1 no such user here" in mine[1]) is refused
    assert mine[1][:2] == theirs[1][:2]  # === Trying ..., === Connected to ...
    assert mine[1][-1] == theirs[1][-1] == "=== Connection closed with remote host."
    assert (mine[0] == 0) is (theirs[0] == 0)
    if not refused:
        assert handler.messages[0].content == handler.messages[1].content == DATA


def test_the_same_hints_as_swaks_inside_starttls(smtp_test_ca, tmp_path, capsys):
    context = smtp_test_ca.server_context(["localhost", "127.0.0.1"])
    cafile = str(smtp_test_ca.cafile)
    with serve_recording(tls_context=context, require_starttls=True) as server:
        theirs = swaks(server.port, "--to", RCPT, "--data", "@" + data_file(tmp_path),
                       "--tls", "--tls-verify", "--tls-ca-path", cafile)  # fmt: skip
        mine = ours(server.port, capsys, "--to", RCPT, "--data", data_file(tmp_path),
                    "--starttls", "--cafile", cafile)  # fmt: skip
    assert theirs[0] == 0 and mine[0] == 0
    assert hints(mine[1]) == hints(theirs[1])
    assert " ~> EHLO client.wiretwin.test" in mine[1] and "<~  250 HELP" in mine[1]
    # swaks: "=== TLS started with cipher TLSv1.3:TLS_AES_256_GCM_SHA384:256"
    (started,) = [line for line in theirs[1] if line.startswith("=== TLS started")]
    assert started in mine[1]
    assert mine[1].index(started) == mine[1].index("<-  220 Ready to start TLS") + 1


@pytest.mark.parametrize("phase", ["connect", "banner", "ehlo", "tls", "auth", "mail", "rcpt"])
def test_quit_after_stops_where_swaks_stops(phase, capsys):
    with serve_recording() as server:
        theirs = swaks(server.port, "--to", RCPT, "--quit-after", phase)
        mine = ours(server.port, capsys, "--to", RCPT, "--quit-after", phase)
        assert server.messages == []  # nothing delivered by either
    sent = [line for line in mine[1] if line.startswith(" -> ")]
    assert [s.split(":")[0].split(" ")[1] for s in sent] == [
        s.split(":")[0].split(" ")[1] for s in theirs[1] if s.startswith(" -> ")
    ]
    assert hints(mine[1]) == hints(theirs[1]) and mine[0] == theirs[0] == 0


def test_quit_after_data_drops_as_swaks_drop_after_data(capsys):
    """After 354 a QUIT would be message text (RFC 5321 §4.1.1.4): both drop the line."""
    with serve_recording() as server:
        theirs = swaks(server.port, "--to", RCPT, "--drop-after", "data")
        mine = ours(server.port, capsys, "--to", RCPT, "--quit-after", "data")
        assert server.messages == []
    assert hints(mine[1]) == hints(theirs[1]) and mine[1][-1] == "=== Dropping connection"


def test_quit_after_tls_and_ehlo_with_starttls(smtp_test_ca, capsys):
    """swaks(1): TLS quits right after the handshake, EHLO after the second EHLO."""
    context = smtp_test_ca.server_context(["localhost", "127.0.0.1"])
    cafile = str(smtp_test_ca.cafile)
    for phase in ("tls", "ehlo"):
        with serve_recording(tls_context=context, require_starttls=True) as server:
            theirs = swaks(server.port, "--to", RCPT, "--quit-after", phase, "--tls",
                           "--tls-verify", "--tls-ca-path", cafile)  # fmt: skip
            mine = ours(server.port, capsys, "--to", RCPT, "--quit-after", phase,
                        "--starttls", "--cafile", cafile)  # fmt: skip
        assert hints(mine[1]) == hints(theirs[1]), phase
        assert mine[1][-3:] == [
            " ~> QUIT",
            "<~  221 Bye",
            "=== Connection closed with remote host.",
        ]


def test_quit_after_auth(capsys, tmp_path, monkeypatch):
    handler = RecordingHandler()
    monkeypatch.setenv("WIRETWIN_SMTP_PASSWORD", AUTH_PASSWORD)
    with serve_recording(handler, authenticator=handler.authenticator, auth_require_tls=False) as s:
        theirs = swaks(s.port, "--to", RCPT, "--quit-after", "auth", "--auth", "PLAIN",
                       "--auth-user", AUTH_USER, "--auth-password", AUTH_PASSWORD)  # fmt: skip
        mine = ours(s.port, capsys, "--to", RCPT, "--quit-after", "auth", "--auth",
                    "--user", AUTH_USER, "--allow-plain-auth")  # fmt: skip
        assert s.messages == []
    assert hints(mine[1]) == hints(theirs[1])
    assert (
        " -> AUTH PLAIN <redacted>" in mine[1]
        and "<-  235 2.7.0 Authentication successful" in mine[1]
    )


def test_quit_after_needs_the_handrolled_client(smtp_server, capsys):
    from compare.cli import run_client

    argv = ["--server", "127.0.0.1", "--port", str(smtp_server.port), "--from", SENDER]
    status = run_client("smtp", [*argv, "--to", RCPT, "--quit-after", "rcpt", "--impl", "smtplib"])
    assert status == 2 and "--quit-after" in capsys.readouterr().err
    assert smtp_server.connections == 0
