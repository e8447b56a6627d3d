"""The SMTP comparison over TLS (issue 11): STARTTLS, implicit TLS, AUTH PLAIN and LOGIN.

Clean runs agree for all three clients; the key log written beside each side's pcap lets
tshark (an independent dissector) show the SMTP commands inside the TLS; and faults injected
in a copy of handrolled/ (the mechanism of tests/test_compare.py) turn the verdict to FAIL with
the differing command or check named.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from compare import smtp, smtp_witness
from compare.packets import plaintext_prefix
from compare.report import slug
from compare.runner import run_scenarios
from compare.scenario import Row
from compare.smtpserver import AUTH_PASSWORD, AUTH_USER, LabSmtpServer

ROOT = Path(__file__).resolve().parents[1]
TSHARK = "/usr/bin/tshark"


# ---- pure helpers -----------------------------------------------------------------------------
def test_plaintext_prefix_stops_where_the_tls_records_start():
    # RFC 3207 §4: the handshake follows the CRLF of STARTTLS; a record opens 0x16 0x03 0x01
    hello = b"\x16\x03\x01\x00\x05hello"
    assert plaintext_prefix(b"EHLO a\r\nSTARTTLS\r\n" + hello) == b"EHLO a\r\nSTARTTLS\r\n"
    assert plaintext_prefix(hello) == b""  # RFC 8314: TLS from the first byte
    assert plaintext_prefix(b"EHLO a\r\nQUIT\r\n") == b"EHLO a\r\nQUIT\r\n"


def test_secret_forms_are_the_wire_encodings_and_scrub_hides_them():
    plain = base64.b64encode(f"\0{AUTH_USER}\0{AUTH_PASSWORD}".encode())  # RFC 4616 §2
    forms = smtp.secret_forms()
    assert plain in forms and base64.b64encode(AUTH_PASSWORD.encode()) in forms
    line = f"command 5: handrolled b'AUTH PLAIN {plain.decode()}\\r\\n'"
    assert AUTH_PASSWORD not in smtp.scrub(line) and plain.decode() not in smtp.scrub(line)
    assert "<redacted>" in smtp.scrub(line)


def test_witness_login_initial_response_is_a_named_allowed_difference():
    user = base64.b64encode(AUTH_USER.encode()) + b"\r\n"
    password = base64.b64encode(AUTH_PASSWORD.encode()) + b"\r\n"
    ours = [b"EHLO h\r\n", b"AUTH LOGIN\r\n", user, password, b"QUIT\r\n"]
    theirs = [b"ehlo h\r\n", b"AUTH LOGIN " + user, password, b"quit\r\n"]
    ok, notes, allowed = smtp_witness.witness(ours, theirs, b"")
    assert ok, notes
    assert {a.field for a in allowed} == {"verb_case", "login_initial_response"}
    # Another user name in the initial response is no allowed difference.
    other = base64.b64encode(b"mallory") + b"\r\n"
    ok, _, _ = smtp_witness.witness(ours, [b"ehlo h\r\n", b"AUTH LOGIN " + other, password], b"")
    assert not ok


# ---- against the lab --------------------------------------------------------------------------
def _failing(rows: list[Row]) -> str:
    return "\n".join(f"{r.check}: {' | '.join(r.details)}" for r in rows if not r.ok)


def _commands_seen_by_tshark(pcap: Path, keys: Path | None) -> list[str]:
    """The SMTP request verbs Wireshark's dissector finds (inside TLS only with the keys)."""
    argv = [TSHARK, "-n", "-r", str(pcap), "-Y", "smtp.req", "-T", "fields"]
    argv += ["-e", "smtp.req.command"]
    if keys is not None:
        argv[1:1] = ["-o", f"tls.keylog_file:{keys}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [verb.upper() for line in out.splitlines() for verb in line.split(",") if verb]


@pytest.mark.lab
def test_tls_scenarios_agree_and_their_key_logs_decrypt_the_pcaps(lab, tmp_path):
    done = run_scenarios(lab, "smtp", progress=False, only="TLS", pcap_dir=str(tmp_path))
    assert {sr.name for sr in done} == {
        "smtp STARTTLS",
        "smtp implicit TLS",
        "smtp STARTTLS AUTH PLAIN",
        "smtp implicit TLS AUTH LOGIN",
    }
    rows = [r for sr in done for r in sr.rows]
    assert all(r.ok for r in rows), _failing(rows)
    for sr in done:
        checks = " / ".join(r.check for r in sr.rows)
        assert "decrypted wire" in checks and "server's log" in checks
        if "AUTH" in sr.name:
            assert "the server saw the right credentials" in checks
        for r in sr.rows:  # no report line shows a secret
            for text in (r.handrolled, r.reference, *r.details):
                assert AUTH_PASSWORD not in text
                assert all(form.decode() not in text for form in smtp.secret_forms())
        for impl in ("handrolled", "reference", "smtplib"):
            pcap = tmp_path / f"{slug(sr.name)}.{impl}.pcap"
            keys = pcap.with_suffix(".keys")
            assert pcap.is_file() and keys.is_file(), f"{sr.name} {impl}: no pcap or key log"
            seen = _commands_seen_by_tshark(pcap, keys)
            assert "MAIL" in seen and "RCPT" in seen, f"{sr.name} {impl}: tshark saw {seen}"
            hidden = _commands_seen_by_tshark(pcap, None)
            assert "MAIL" not in hidden, f"{sr.name} {impl}: MAIL readable without the keys"
            if "STARTTLS" in sr.name:
                # RFC 3207 §4.2: EHLO again inside the TLS, which only the key log shows
                # (Wireshark 4.0 shows STARTTLS's verb cut to its first four letters)
                start = next(i for i, verb in enumerate(seen) if verb.startswith("STAR"))
                after = seen[start + 1 :]
                assert after[:1] == ["EHLO"], f"{sr.name} {impl}: after STARTTLS {after}"
                assert hidden.count("EHLO") == 1
            if "AUTH" in sr.name:
                assert "AUTH" in seen and "AUTH" not in hidden


@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_lab_server_sockets_have_nagle_off(lab, family):
    """asyncio turns Nagle off (TCP_NODELAY) only on sockets made with IPPROTO_TCP; without
    it each pipelined reply after the first waits ~40 ms for the client's delayed ACK."""
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    with (
        LabSmtpServer(lab, "target", 2525, family) as server,
        lab.socket("client", af, socket.SOCK_STREAM) as client,
    ):
        client.settimeout(10)
        client.connect((lab.target.addr(family), 2525))
        assert client.recv(512).startswith(b"220")  # RFC 5321 §4.2: the greeting
        client.sendall(b"QUIT\r\n")
        assert client.recv(512).startswith(b"221")
    assert [c.nodelay for c in server.connections] == [True]


@dataclass(frozen=True)
class TlsFault:
    name: str
    old: str
    new: str
    scenario: str
    names: str  # what the failing rows must mention


TLS_FAULTS = [
    TlsFault(
        "EHLO not re-sent after STARTTLS",
        "        _check(stop, SmtpStage.STARTTLS)\n"
        "        out.stage = SmtpStage.EHLO\n"
        "        _hello(session, r.helo_name)\n",
        "        _check(stop, SmtpStage.STARTTLS)\n        out.stage = SmtpStage.EHLO\n",
        "smtp STARTTLS AUTH PLAIN",
        "EHLO client.lab.test",
    ),
    TlsFault(
        "AUTH LOGIN user name sent without base64",
        '            token = base64.b64encode(secret.encode()).decode("ascii")\n',
        '            token = base64.b64encode(secret.encode()).decode("ascii")\n'
        "            token = secret if secret == user else token\n",
        "smtp implicit TLS AUTH LOGIN",
        "the server saw",
    ),
]


@pytest.mark.lab
@pytest.mark.parametrize("fault", TLS_FAULTS, ids=[f.name for f in TLS_FAULTS])
def test_tls_dialogue_fault_is_caught_and_named(lab, tmp_path, fault):
    root = tmp_path / "patched"
    shutil.copytree(
        ROOT / "handrolled", root / "handrolled", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = root / "handrolled" / "smtp.py"
    source = target.read_text()
    assert source.count(fault.old) == 1, f"the fault's anchor moved: {fault.old!r}"
    target.write_text(source.replace(fault.old, fault.new))
    done = run_scenarios(
        lab, "smtp", handrolled_path=str(root), progress=False, only=fault.scenario
    )
    rows = [r for sr in done if sr.name == fault.scenario for r in sr.rows]
    assert rows, "no scenario matched"
    failed = _failing(rows)
    assert failed, f"compare did not notice: {fault.name}"
    assert fault.names in failed, (
        f"{fault.name}: the report does not name {fault.names!r}:\n{failed}"
    )
    assert AUTH_PASSWORD not in failed
