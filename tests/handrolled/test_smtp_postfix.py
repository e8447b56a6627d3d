"""handrolled.smtp against a real Postfix (installed by .ci/postfix-setup, run from .ci/run).

Postfix listens on 127.0.0.1:$WIRETWIN_POSTFIX_PORT (2525) and delivers mail for
alice/bob/carol@postfix.wiretwin.test to the Maildir under /var/lib/wiretwin-postfix; it relays
nothing.  Each test finds its own message there by a unique token in the Subject.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from smtpd_fixtures import skip_or_fail

from handrolled import smtp
from handrolled.cli import smtp as cli
from handrolled.requests import MailRequest

pytestmark = [pytest.mark.postfix, pytest.mark.root]

PORT = int(os.environ.get("WIRETWIN_POSTFIX_PORT", "2525"))
BASE = Path(os.environ.get("WIRETWIN_POSTFIX_BASE", "/var/lib/wiretwin-postfix"))
MAILDIR = BASE / "Maildir"
CAFILE = BASE / "ca.pem"
DOMAIN = "postfix.wiretwin.test"
SENDER = "sender@wiretwin.test"


@pytest.fixture(scope="module", autouse=True)
def postfix_running() -> None:
    """Skip (fail under CI=true) when .ci/postfix-setup has not been run."""
    problem = None
    if not (MAILDIR / "new").is_dir() or not CAFILE.is_file():
        problem = f"no Maildir/CA under {BASE}: run .ci/postfix-setup (as root)"
    else:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
        except OSError as exc:
            problem = f"Postfix is not listening on 127.0.0.1:{PORT} ({exc.strerror})"
    if problem:
        skip_or_fail(problem)


def message(token: str, body: bytes) -> bytes:
    """Complete headers, so Postfix adds none of its own in the middle (only on top)."""
    return (
        f"From: {SENDER}\r\nTo: alice@{DOMAIN}\r\nSubject: wiretwin {token}\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{token}@wiretwin.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + body


def delivered_file(token: str, wait: float = 30.0) -> bytes:
    """The Maildir file holding ``token`` (bounded wait for Postfix's queue manager)."""
    deadline = time.monotonic() + wait
    needle = token.encode()
    while time.monotonic() < deadline:
        for sub in ("new", "cur"):
            for path in (MAILDIR / sub).iterdir():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # moved new/ -> cur/ meanwhile
                    continue
                if needle in data:
                    return data
        time.sleep(0.1)
    raise AssertionError(f"no message with {token} in {MAILDIR} after {wait:g} s")


def send(token: str, body: bytes, recipients=None, **kwargs):
    request = MailRequest(
        "127.0.0.1",
        PORT,
        mail_from=kwargs.pop("mail_from", SENDER),
        recipients=tuple(recipients or [f"alice@{DOMAIN}"]),
        message=message(token, body),
        timeout=10.0,
        **kwargs,
    )
    return smtp.send_mail(request)


BODY = (
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "caf\u00e9 \u65e5\u672c\u8a9e \U0001f600\r\n"
    "bare LF next\nlast line\r\n"
).encode()


@pytest.mark.parametrize("pipelining", [True, False])
def test_postfix_delivers_to_the_maildir(pipelining):
    token = uuid.uuid4().hex
    result = send(token, BODY, pipelining=pipelining)
    assert result.delivered, result.error
    assert result.final_reply.code == 250 and "queued" in result.final_reply.text
    names = dict(result.extensions)
    assert "PIPELINING" in names and "8BITMIME" in names
    stored = delivered_file(token)
    # Maildir stores LF line ends; Postfix only adds trace headers above ours.
    assert stored.endswith(message(token, BODY).replace(b"\r\n", b"\n"))
    assert stored.startswith(b"Return-Path: <sender@wiretwin.test>\n")


def test_postfix_starttls_verified_against_its_ca():
    token = uuid.uuid4().hex
    result = send(token, b"over TLS\r\n", starttls=True, cafile=str(CAFILE))
    assert result.delivered, result.error
    assert result.tls == "starttls"
    assert b"over TLS\n" in delivered_file(token)
    assert b"(using TLS" in delivered_file(token)  # Postfix's Received header says so


def test_postfix_smtputf8_sender():
    token = uuid.uuid4().hex
    sender = "j\u00f6rg@b\u00fccher.test"
    result = send(token, b"utf8 envelope\r\n", mail_from=sender)
    assert result.delivered, result.error
    assert "SMTPUTF8" in smtp_sent(result)[1]
    assert f"Return-Path: <{sender}>".encode() in delivered_file(token)


def smtp_sent(result) -> list[str]:
    return [t.data.decode() for t in result.transcript if t.direction.value == "->"]


def test_postfix_refuses_unknown_users_and_relaying():
    token = uuid.uuid4().hex
    rcpts = [f"bob@{DOMAIN}", f"nobody@{DOMAIN}", "someone@example.com"]
    result = send(token, b"partly refused\r\n", recipients=rcpts)
    assert result.delivered, result.error
    outcome = {r.address: (r.accepted, r.reply.code) for r in result.recipients}
    assert outcome == {
        f"bob@{DOMAIN}": (True, 250),
        f"nobody@{DOMAIN}": (False, 550),
        "someone@example.com": (False, 554),  # relay access denied: nothing leaves
    }
    stored = delivered_file(token)
    assert f"Delivered-To: bob@{DOMAIN}".encode() in stored


def test_postfix_all_refused_is_exit_1():
    token = uuid.uuid4().hex
    result = send(token, b"nobody\r\n", recipients=["someone@example.com"])
    assert not result.delivered and "every recipient was refused" in result.error
    assert cli.exit_status(result) == 1


def test_postfix_cli(capsys):
    token = uuid.uuid4().hex
    status = cli.main(
        [
            "--server", "127.0.0.1", "--port", str(PORT), "--from", SENDER,
            "--to", f"carol@{DOMAIN}", "--subject", f"cli {token}", "--body", "from the CLI",
            "--starttls", "--cafile", str(CAFILE),
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "<-  220 2.0.0 Ready to start TLS" in out.out.splitlines()  # swaks' hint, in clear
    assert b"from the CLI" in delivered_file(token)
