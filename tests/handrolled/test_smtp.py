"""handrolled.smtp (and its command line, handrolled.cli.smtp) against real servers: aiosmtpd
in-process, scripted misbehaving servers, the lab.  The fixtures live in tests/smtpd_fixtures.py.
Bad inputs (MailRequest's rules) are in tests/test_request_mail.py."""

from __future__ import annotations

import base64
import errno
import inspect
import json
import logging
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtpd_fixtures import (
    AUTH_PASSWORD,
    AUTH_USER,
    RecordingHandler,
    ScriptPeer,
    happy_script,
    serve_recording,
    skip_or_fail,
)

from handrolled import smtp
from handrolled.cli import smtp as cli
from handrolled.errors import LocalProtocolError, UsageError
from handrolled.requests import MailRequest
from handrolled.results import Direction, Implementation, SmtpStage

# The fixtures (smtp_server, scripted_smtp_server, ...) come from tests/smtpd_fixtures.py via
# tests/conftest.py (``from smtpd_fixtures import *``).

SENDER = "sender@wiretwin.test"
RCPT = "rcpt@wiretwin.test"
MESSAGE = b"From: sender@wiretwin.test\r\nTo: rcpt@wiretwin.test\r\nSubject: hi\r\n\r\nHello.\r\n"


def request(port: int, message: bytes = MESSAGE, recipients=(RCPT,), **kwargs) -> MailRequest:
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("mail_from", SENDER)
    server = kwargs.pop("server", "127.0.0.1")
    return MailRequest(server, port, recipients=tuple(recipients), message=message, **kwargs)


def send(server, message: bytes = MESSAGE, recipients=(RCPT,), **kwargs):
    return smtp.send_mail(request(server.port, message, recipients, **kwargs))


def sent(result) -> list[bytes]:
    return [t.data for t in result.transcript if t.direction is Direction.SENT]


def verbs(result) -> list[bytes]:
    return [d.split(b" ")[0].split(b":")[0].rstrip(b"\r\n") for d in sent(result)]


# --- the seed -------------------------------------------------------------------------------


def _check_seed(result, server, capsys):
    assert result.delivered and result.error is None
    assert sent(result) == [
        b"HELO Alice\r\n",
        b"MAIL FROM:<alice@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
        b"\r\n My message\r\n.\r\n",
        b"QUIT\r\n",
    ]
    assert result.transcript[0].direction is Direction.RECEIVED  # the greeting comes first
    assert result.transcript[0].data.startswith(b"220")
    (msg,) = server.messages
    assert msg.content == b"\r\n My message\r\n"
    assert (msg.mail_from, msg.rcpt_tos) == ("alice@example.com", ["bob@example.com"])
    assert server.handler.helo_names == ["Alice"]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the seed prints nothing


def test_seed_signature_is_the_assignments():
    params = inspect.signature(smtp.smtp_client).parameters
    assert [(n, p.default) for n, p in params.items()] == [
        ("port", 1025),
        ("mailserver", "127.0.0.1"),
    ]


def test_a_failed_seed_is_silent_without_logging_configured():
    """No logging configured: the warning of a failed smtp_client() must not reach stderr
    through logging's last-resort handler (the libraries' loggers have a NullHandler)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    code = (
        "import logging, sys\n"
        "from handrolled.smtp import smtp_client\n"
        "import reference.smtp, compare.smtp\n"
        f"r = smtp_client({port})\n"
        "assert not r.delivered and 'connection failed' in r.error, r\n"
        "for name in ('handrolled.smtp', 'reference.smtp', 'compare.smtp'):\n"
        "    logging.getLogger(name).warning('a library warning')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_seed_smtp_client_on_a_free_port(smtp_server, capsys):
    result = smtp.smtp_client(smtp_server.port, "127.0.0.1")
    _check_seed(result, smtp_server, capsys)


def test_seed_smtp_client_on_1025(capsys):
    """The seed's own defaults, 127.0.0.1:1025; required in CI, skipped locally if busy."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 1025))
        sock.listen(8)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        skip_or_fail("127.0.0.1:1025 is busy on this machine")
    with serve_recording(sock=sock) as server:
        result = smtp.smtp_client()
        _check_seed(result, server, capsys)


# --- delivery: what arrives is what was sent ------------------------------------------------

MESSAGES = {
    "dots": b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nmiddle . dot\r\n. \r\n",
    "bare-lf": b"Subject: lf\n\nline one\nline two\n.dot\n",
    "no-final-newline": b"Subject: x\r\n\r\nlast line without CRLF",
    "8bit": "Subject: 8bit\r\n\r\ncaf\u00e9 \u00fcber na\u00efve\r\n".encode("latin-1"),
    "utf8": "Subject: \u2603\r\n\r\n\u65e5\u672c\u8a9e \U0001f600\r\n".encode(),
    "empty-body": b"Subject: empty\r\n\r\n",
}


def expected_content(message: bytes) -> bytes:
    """What a server stores: CRLF line ends, dots unstuffed, one final CRLF."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "lockstep"])
def test_delivered_message_equals_what_was_sent(name, pipelined, smtp_server, smtp_plain_server):
    server = smtp_server if pipelined else smtp_plain_server
    message = MESSAGES[name]
    result = send(server, message)
    assert result.delivered, result.error
    assert result.final_reply.code == 250
    assert result.implementation is Implementation.HANDROLLED
    (msg,) = server.messages
    assert msg.content == expected_content(message)
    assert (msg.mail_from, msg.rcpt_tos) == (SENDER, [RCPT])
    mail = sent(result)[1]
    size = len(expected_content(message))  # RFC 1870 §4: unstuffed, no final dot
    assert mail.startswith(b"MAIL FROM:<sender@wiretwin.test> SIZE=%d" % size)
    assert (b"BODY=8BITMIME" in mail) == any(b > 127 for b in message)
    assert msg.mail_options == [p.decode() for p in mail.split()[2:]]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        max_size=12,
    )
)
def test_any_body_arrives_intact(smtp_server, lines):
    message = b"Subject: fuzz\r\n\r\n" + b"\r\n".join(lines)
    before = len(smtp_server.messages)
    result = send(smtp_server, message)
    assert result.delivered, result.error
    assert smtp_server.messages[before].content == expected_content(message)


def test_utf8_addresses_use_smtputf8(smtp_server):
    sender, rcpt = "j\u00f6rg@b\u00fccher.test", "\u7528\u6237@\u4f8b\u5b50.test"
    result = send(smtp_server, MESSAGES["utf8"], recipients=[rcpt], mail_from=sender)
    assert result.delivered, result.error
    (msg,) = smtp_server.messages
    assert msg.smtp_utf8 and (msg.mail_from, msg.rcpt_tos) == (sender, [rcpt])
    assert "SMTPUTF8" in msg.mail_options


def test_smtputf8_missing_is_a_clear_error():
    with serve_recording(enable_SMTPUTF8=False) as server:
        result = send(server, recipients=["\u7528@x.test"])
    assert not result.delivered and "SMTPUTF8" in result.error
    assert b"MAIL" not in b"".join(sent(result)) and server.messages == []
    assert cli.exit_status(result) == 2 and result.stage is SmtpStage.MAIL


def test_8bitmime_missing_is_a_clear_error(scripted_smtp_server):
    server = scripted_smtp_server(happy_script(ehlo_lines=(b"SIZE 100000",)))
    result = send(server, MESSAGES["8bit"])
    assert not result.delivered and "8BITMIME" in result.error
    assert verbs(result) == [b"EHLO", b"QUIT"]


def test_size_is_declared_and_refused_early():
    with serve_recording(data_size_limit=100) as server:
        result = send(server, b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n")
        assert not result.delivered and "at most 100" in result.error
        assert verbs(result) == [b"EHLO", b"QUIT"]
        ok = send(server, b"Subject: small\r\n\r\nx\r\n")
    assert ok.delivered
    size = len(b"Subject: small\r\n\r\nx\r\n")  # RFC 1870 §4: no final dot
    assert server.messages[0].mail_options == [f"SIZE={size}"]


# --- pipelining and recipients --------------------------------------------------------------


def test_pipelining_sends_one_group(smtp_server):
    result = send(smtp_server, recipients=["a@x.test", "b@x.test"])
    assert result.delivered
    lines = [(t.direction, t.data[:4]) for t in result.transcript]
    start = lines.index((Direction.SENT, b"MAIL"))
    assert [d for d, _ in lines[start : start + 4]] == [Direction.SENT] * 4  # before any reply
    assert [v for _, v in lines[start : start + 4]] == [b"MAIL", b"RCPT", b"RCPT", b"DATA"]
    # one write (RFC 2920 §3.1): the whole group reached the server in one recv()
    group = b"".join(t.data for t in result.transcript[start : start + 4])
    assert group in smtp_server.handler.chunks
    assert group.count(b"\r\n") == 4


@pytest.mark.parametrize("fixture", ["off", "not-offered"])
def test_lockstep_without_pipelining(fixture, smtp_server, smtp_plain_server):
    if fixture == "off":
        result = send(smtp_server, recipients=["a@x.test", "b@x.test"], pipelining=False)
    else:
        result = send(smtp_plain_server, recipients=["a@x.test", "b@x.test"])
    assert result.delivered
    directions = [t.direction for t in result.transcript]
    start = verbs(result).index(b"MAIL")
    first_mail = next(i for i, t in enumerate(result.transcript) if t.data.startswith(b"MAIL"))
    assert directions[first_mail + 1] is Direction.RECEIVED  # waited for the reply
    assert start == 1
    # MAIL, RCPT, RCPT, DATA: each sent alone and answered before the next
    dialogue = [(t.direction, t.data[:4]) for t in result.transcript[first_mail : first_mail + 8]]
    assert dialogue == [
        (Direction.SENT, b"MAIL"),
        (Direction.RECEIVED, b"250 "),
        (Direction.SENT, b"RCPT"),
        (Direction.RECEIVED, b"250 "),
        (Direction.SENT, b"RCPT"),
        (Direction.RECEIVED, b"250 "),
        (Direction.SENT, b"DATA"),
        (Direction.RECEIVED, b"354 "),
    ]


@pytest.mark.parametrize("pipelining", [True, False])
def test_some_recipients_refused(pipelining):
    handler = RecordingHandler(pipelining=pipelining, refuse={"nobody@x.test", "ghost@x.test"})
    rcpts = ["a@x.test", "nobody@x.test", "b@x.test", "ghost@x.test"]
    with serve_recording(handler) as server:
        result = send(server, recipients=rcpts)
    assert result.delivered
    assert [(r.address, r.accepted, r.reply.code) for r in result.recipients] == [
        ("a@x.test", True, 250),
        ("nobody@x.test", False, 550),
        ("b@x.test", True, 250),
        ("ghost@x.test", False, 550),
    ]
    assert server.messages[0].rcpt_tos == ["a@x.test", "b@x.test"]
    assert cli.exit_status(result) == 0


@pytest.mark.parametrize("pipelining", [True, False])
def test_all_recipients_refused_stops_before_data(pipelining):
    handler = RecordingHandler(pipelining=pipelining, refuse={"x@x.test", "y@x.test"})
    with serve_recording(handler) as server:
        result = send(server, recipients=["x@x.test", "y@x.test"])
    assert not result.delivered and "every recipient was refused" in result.error
    assert server.messages == []
    assert all(not r.accepted for r in result.recipients)
    assert [(r.address, r.accepted, r.reply.code) for r in result.recipients] == [
        ("x@x.test", False, 550),
        ("y@x.test", False, 550),
    ]
    assert b"\r\n.\r\n" not in b"".join(sent(result))  # no message went out
    if not pipelining:
        assert b"DATA" not in verbs(result)
    assert cli.exit_status(result) == 1


def test_rfc2920_data_accepted_without_recipients(scripted_smtp_server):
    """RFC 2920 §3.1: DATA got 354 though every RCPT failed: send only the final dot."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 odd ESMTP\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-odd\r\n250 PIPELINING\r\n")
        peer.expect(b"MAIL")
        peer.expect(b"RCPT")
        peer.expect(b"DATA")
        peer.send(b"250 ok\r\n550 no such user\r\n354 go ahead anyway\r\n")
        assert peer.read_data() == b".\r\n"
        peer.send(b"554 no valid recipients\r\n")
        peer.expect(b"QUIT")
        peer.send(b"221 bye\r\n")

    server = scripted_smtp_server(script)
    result = send(server)
    assert not result.delivered and cli.exit_status(result) == 1


def test_rset_and_a_second_transaction(smtp_plain_server):
    """Drive SmtpSession by hand: MAIL, RCPT, RSET, then a transaction that delivers."""
    from handrolled import smtp_protocol as sp

    sock = socket.create_connection(("127.0.0.1", smtp_plain_server.port), timeout=5)
    session = smtp.SmtpSession(sock, timeout=5)
    try:
        assert session.read().reply.code == 220
        assert session.command(sp.Ehlo("c.test")).verdict is sp.Verdict.OK
        session.command(sp.MailFrom("first@x.test"))
        session.command(sp.RcptTo("r1@x.test"))
        assert session.command(sp.Rset()).reply.code == 250
        assert session.conn.state is sp.State.READY
        session.command(sp.MailFrom("second@x.test"))
        session.command(sp.RcptTo("r2@x.test"))
        assert session.command(sp.Data()).reply.code == 354
        assert session.command(sp.Content(b"Subject: 2\r\n\r\nsecond\r\n")).reply.code == 250
        assert session.command(sp.Quit()).reply.code == 221
    finally:
        session.close()
    (msg,) = smtp_plain_server.messages
    assert (msg.mail_from, msg.rcpt_tos) == ("second@x.test", ["r2@x.test"])


def test_a_group_that_cannot_be_encoded_sends_nothing(smtp_server):
    """A recipient over the path limit (bypassing MailRequest): neither MAIL nor RCPT is
    sent or recorded, and the dialogue goes on in step (QUIT is answered as QUIT)."""
    from handrolled import smtp_protocol as sp

    sock = socket.create_connection(("127.0.0.1", smtp_server.port), timeout=5)
    session = smtp.SmtpSession(sock, timeout=5)
    try:
        assert session.read().reply.code == 220
        assert session.command(sp.Ehlo("c.test")).verdict is sp.Verdict.OK
        before = len(session.transcript)
        with pytest.raises(LocalProtocolError, match="256"):
            session.send(sp.MailFrom(SENDER), sp.RcptTo("r" * 600 + "@x.test"), sp.Data())
        assert len(session.transcript) == before
        answer = session.command(sp.Quit())
        assert (answer.command, answer.reply.code) == (sp.Command.QUIT, 221)
    finally:
        session.close()


# --- TLS ------------------------------------------------------------------------------------


def test_starttls_verified(smtp_tls_server):
    result = send(smtp_tls_server, starttls=True, cafile=smtp_tls_server.cafile)
    assert result.delivered, result.error
    assert result.tls == "starttls"
    assert verbs(result)[:3] == [b"EHLO", b"STARTTLS", b"EHLO"]  # RFC 3207 §4.2
    assert ("STARTTLS", "") not in result.extensions  # the post-TLS EHLO's view
    assert smtp_tls_server.messages[0].tls
    # RFC 3207 §4: after the 220 to STARTTLS everything goes inside TLS, nothing before it
    starttls = sent(result).index(b"STARTTLS\r\n")
    first_tls = next(i for i, t in enumerate(result.transcript) if t.tls)
    assert result.transcript[first_tls - 1].data.startswith(b"220")
    assert result.transcript[first_tls - 2].data == b"STARTTLS\r\n" and starttls == 1
    assert all(t.tls for t in result.transcript[first_tls:])
    assert result.tls_cipher.startswith("TLSv1.")  # version:cipher:bits, as swaks shows it


def test_starttls_unknown_ca_fails(smtp_tls_server):
    result = send(smtp_tls_server, starttls=True)
    assert not result.delivered
    assert "certificate verification failed" in result.error
    assert smtp_tls_server.messages == [] and cli.exit_status(result) == 2


def test_starttls_wrong_name_fails(smtp_tls_server):
    # the certificate is for 127.0.0.1 and localhost; reach it as 127.0.0.2
    result = smtp.send_mail(
        request(
            smtp_tls_server.port,
            server="127.0.0.2",
            starttls=True,
            cafile=smtp_tls_server.cafile,
        ),
        connect=lambda host, port, timeout: socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        ),
    )
    assert not result.delivered and "certificate verification failed" in result.error


def test_starttls_insecure_delivers_loudly(smtp_tls_server, caplog):
    with caplog.at_level(logging.WARNING, logger="handrolled.smtp"):
        result = send(smtp_tls_server, starttls=True, insecure=True)
    assert result.delivered and result.tls == "starttls"
    assert "verification is OFF" in caplog.text


def test_starttls_required_but_not_offered(smtp_server):
    result = send(smtp_server, starttls=True)
    assert not result.delivered and "does not offer STARTTLS" in result.error
    assert verbs(result) == [b"EHLO", b"QUIT"]  # no silent downgrade
    assert smtp_server.messages == []


def test_starttls_refused_by_server(scripted_smtp_server):
    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-x\r\n250 STARTTLS\r\n")
        peer.expect(b"STARTTLS")
        peer.send(b"454 4.7.0 TLS not available\r\n")
        peer.expect(b"QUIT")
        peer.send(b"221 bye\r\n")

    result = send(scripted_smtp_server(script), starttls=True)
    assert not result.delivered and "454" in result.error and cli.exit_status(result) == 1


def test_starttls_response_injection(scripted_smtp_server):
    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-x\r\n250 STARTTLS\r\n")
        peer.expect(b"STARTTLS")
        peer.send(b"220 go\r\n250 injected before TLS\r\n")
        peer.readline()

    result = send(scripted_smtp_server(script), starttls=True, insecure=True)
    assert not result.delivered and "RFC 3207" in result.error


def test_implicit_tls_with_auth(smtp_implicit_tls_server):
    result = send(
        smtp_implicit_tls_server,
        tls=True,
        cafile=smtp_implicit_tls_server.cafile,
        auth=(AUTH_USER, AUTH_PASSWORD),
    )
    assert result.delivered, result.error
    assert result.tls == "implicit" and verbs(result)[:2] == [b"EHLO", b"AUTH"]
    assert smtp_implicit_tls_server.messages[0].authenticated


# --- AUTH -----------------------------------------------------------------------------------


def secrets(password: str = AUTH_PASSWORD) -> list[bytes]:
    plain = base64.b64encode(f"\0{AUTH_USER}\0{password}".encode())
    return [password.encode(), base64.b64encode(password.encode()), plain]


def assert_no_secret(result, caplog_text: str, password: str = AUTH_PASSWORD) -> None:
    blob = b"".join(t.data for t in result.transcript) + (result.error or "").encode()
    blob += caplog_text.encode()
    blob += repr(result).encode()
    for secret in secrets(password):
        assert secret not in blob


def test_auth_plain_over_starttls(smtp_tls_server, caplog):
    with caplog.at_level(logging.DEBUG):
        result = send(
            smtp_tls_server,
            starttls=True,
            cafile=smtp_tls_server.cafile,
            auth=(AUTH_USER, AUTH_PASSWORD),
        )
    assert result.delivered, result.error
    assert smtp_tls_server.messages[0].authenticated
    assert smtp_tls_server.handler.auth_attempts == [("PLAIN", AUTH_USER.encode())]
    (auth_line,) = [t for t in result.transcript if t.data.startswith(b"AUTH")]
    assert auth_line.redacted and auth_line.data == b"AUTH PLAIN <redacted>\r\n"
    assert "-> b'AUTH PLAIN <redacted>" in caplog.text  # the dialogue was logged, redacted
    assert_no_secret(result, caplog.text)


def test_auth_login(caplog):
    handler = RecordingHandler()
    with (
        serve_recording(
            handler,
            authenticator=handler.authenticator,
            auth_require_tls=False,
            auth_exclude_mechanism=["PLAIN"],
        ) as server,
        caplog.at_level(logging.DEBUG),
    ):
        result = send(server, auth=(AUTH_USER, AUTH_PASSWORD), allow_plain_auth=True)
    assert result.delivered, result.error
    assert handler.auth_attempts == [("LOGIN", AUTH_USER.encode())]
    redacted = [t for t in result.transcript if t.redacted]
    assert len(redacted) == 2 and all(t.data == b"<redacted>\r\n" for t in redacted)
    assert_no_secret(result, caplog.text)


def test_auth_wrong_password(smtp_auth_server, caplog):
    wrong = "not-the-password-42"
    with caplog.at_level(logging.DEBUG):
        result = send(smtp_auth_server, auth=(AUTH_USER, wrong), allow_plain_auth=True)
    assert not result.delivered and "535" in result.error and "AUTH" in result.error
    assert cli.exit_status(result) == 1 and smtp_auth_server.messages == []
    assert_no_secret(result, caplog.text, wrong)


def test_auth_over_plain_tcp_is_refused_before_connecting(smtp_auth_server):
    with pytest.raises(UsageError, match="unencrypted"):
        send(smtp_auth_server, auth=(AUTH_USER, AUTH_PASSWORD))
    assert smtp_auth_server.handler.helo_names == []


def test_auth_allowed_over_plain_tcp_when_asked(smtp_auth_server):
    result = send(smtp_auth_server, auth=(AUTH_USER, AUTH_PASSWORD), allow_plain_auth=True)
    assert result.delivered and smtp_auth_server.messages[0].authenticated


def test_auth_not_offered(smtp_server):
    result = send(smtp_server, auth=(AUTH_USER, AUTH_PASSWORD), allow_plain_auth=True)
    assert not result.delivered and "does not offer AUTH" in result.error


# --- refused before anything is sent --------------------------------------------------------


def test_unreadable_cafile_refused_before_connecting(smtp_server):
    with pytest.raises(UsageError, match="CA file"):
        send(smtp_server, starttls=True, cafile="/nonexistent/ca.pem")
    assert smtp_server.handler.helo_names == [] and smtp_server.messages == []


def test_send_mail_wants_a_request(smtp_server):
    with pytest.raises(UsageError, match="MailRequest"):
        smtp.send_mail("127.0.0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "value"), [("X-Test", "a\r\nBcc: evil@x"), ("X-Test", "a\nb"), ("X-Nul", "a\0")]
)
def test_compose_refuses_cr_lf_nul_in_headers(header, value):
    with pytest.raises(UsageError):
        cli.compose_message(SENDER, [RCPT], headers=[(header, value)])
    with pytest.raises(UsageError):
        cli.compose_message(SENDER, [RCPT], subject=value)


# --- misbehaving servers --------------------------------------------------------------------


def _gibberish(peer: ScriptPeer) -> None:
    peer.send(b"SSH-2.0-OpenSSH_9.2\r\n")
    peer.readline()


def _disconnect_at_ehlo(peer: ScriptPeer) -> None:
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.close()


def _eof_mid_reply(peer: ScriptPeer) -> None:
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250-x\r\n250-PIPEL")
    peer.shutdown_write()
    peer.readline()


def _silent(peer: ScriptPeer) -> None:
    peer.readline()  # say nothing until the client gives up and closes


def _long_line(peer: ScriptPeer) -> None:
    peer.send(b"220 " + b"x" * 5000)
    peer.readline()


def _code_changes(peer: ScriptPeer) -> None:
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250-x\r\n251 y\r\n")
    peer.readline()


def _unsolicited(peer: ScriptPeer) -> None:
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250 x\r\n250 nobody asked\r\n")
    peer.readline()


def _eof_after_data(peer: ScriptPeer) -> None:
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250 x\r\n")
    peer.expect(b"MAIL")
    peer.send(b"250 ok\r\n")
    peer.expect(b"RCPT")
    peer.send(b"250 ok\r\n")
    peer.expect(b"DATA")
    peer.send(b"354 go\r\n")
    peer.read_data()
    peer.close()  # no reply to the final dot


@pytest.mark.parametrize(
    ("script", "match"),
    [
        (_gibberish, "not an SMTP reply"),
        (_disconnect_at_ehlo, "closed"),
        (_eof_mid_reply, "middle of a reply"),
        (_silent, "no complete reply within"),
        (_long_line, "longer than 512"),
        (_code_changes, "changed"),
        (_unsolicited, "unexpected data"),
        (_eof_after_data, "closed"),
    ],
    ids=lambda v: getattr(v, "__name__", v)[:20].strip("_"),
)
def test_misbehaving_servers(script, match, scripted_smtp_server):
    server = scripted_smtp_server(script)
    result = send(server, timeout=1.0)
    assert not result.delivered
    assert match in result.error and "\n" not in result.error
    assert cli.exit_status(result) == 2


def test_connection_refused_is_a_result():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    result = smtp.send_mail(request(port, b"x"))
    assert not result.delivered and "connection failed" in result.error
    assert result.transcript == () and cli.exit_status(result) == 2
    assert result.stage is SmtpStage.CONNECT and result.refusal is None


STAGES = ["greeting", "HELO", "MAIL", "RCPT", "DATA", "dot"]
STAGE_OF = {
    "greeting": SmtpStage.GREETING,
    "HELO": SmtpStage.EHLO,  # EHLO and its HELO fallback are one stage
    "MAIL": SmtpStage.MAIL,
    "RCPT": SmtpStage.RCPT,
    "DATA": SmtpStage.DATA,
    "dot": SmtpStage.CONTENT,
}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("code", [b"421 4.3.2", b"451 4.3.0", b"554 5.7.1"])
def test_4xx_5xx_at_every_stage(stage, code, scripted_smtp_server):
    reply = code + b" refused at " + stage.encode() + b"\r\n"
    fail_at = "EHLO" if stage == "HELO" else stage
    if stage == "HELO":  # EHLO and the HELO fallback both refused

        def script(peer: ScriptPeer) -> None:
            peer.send(b"220 x\r\n")
            peer.expect(b"EHLO")
            peer.send(b"502 5.5.1 EHLO not implemented\r\n")
            peer.expect(b"HELO")
            peer.send(reply)
            if not code.startswith(b"421"):
                peer.expect(b"QUIT")
                peer.send(b"221 bye\r\n")

    else:
        script = happy_script(fail_at, reply)
    server = scripted_smtp_server(script)
    result = send(server)
    assert not result.delivered
    assert code[:3].decode() in result.error
    assert cli.exit_status(result) == 1
    assert result.refusal is not None and result.refusal.code == int(code[:3])
    assert result.stage is STAGE_OF[stage]
    if stage == "dot":
        assert result.final_reply.code == int(code[:3])
    if stage == "RCPT":
        assert [r.accepted for r in result.recipients] == [False]
    quit_sent = b"QUIT" in verbs(result)
    assert quit_sent == (not code.startswith(b"421"))  # 421: the server is closing (§3.8)


@pytest.mark.parametrize("pipelining", [False, True])
def test_421_mid_transaction_stops_there(pipelining, scripted_smtp_server):
    """RFC 5321 §3.8: after 421 to the second RCPT nothing more is sent, and the result keeps
    both recipients' replies and the server's own words."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-x\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"") + b"250 HELP\r\n")
        peer.expect(b"MAIL")
        if pipelining:
            for verb in (b"RCPT", b"RCPT", b"DATA"):
                peer.expect(verb)
            peer.send(b"250 ok\r\n250 ok\r\n421 4.3.2 going down\r\n")
        else:
            peer.send(b"250 ok\r\n")
            peer.expect(b"RCPT")
            peer.send(b"250 ok\r\n")
            peer.expect(b"RCPT")
            peer.send(b"421 4.3.2 going down\r\n")
        assert peer.readline() == b""  # the client sends nothing more and closes

    server = scripted_smtp_server(script)
    result = send(server, recipients=(RCPT, "second@wiretwin.test"), timeout=5.0)
    assert not result.delivered
    assert result.error == "server replied 421 to RCPT TO: 4.3.2 going down"
    outcomes = [(r.address, r.accepted, r.reply.code) for r in result.recipients]
    assert outcomes == [(RCPT, True, 250), ("second@wiretwin.test", False, 421)]
    assert verbs(result)[-1] == (b"DATA" if pipelining else b"RCPT")
    assert cli.exit_status(result) == 1


@pytest.mark.parametrize("reply", [b"251 2.1.5 will forward\r\n", b"354 more?\r\n"])
def test_only_250_to_the_final_dot_is_delivery(reply, scripted_smtp_server):
    server = scripted_smtp_server(happy_script("dot", reply))
    result = send(server)
    assert not result.delivered and result.final_reply.code == int(reply[:3])


def test_ehlo_refused_falls_back_to_helo(scripted_smtp_server):
    server = scripted_smtp_server(happy_script("EHLO", b"502 5.5.1 what is EHLO\r\n"))
    result = send(server)
    assert result.delivered and verbs(result)[:3] == [b"EHLO", b"HELO", b"MAIL"]
    assert sent(result)[2] == b"MAIL FROM:<sender@wiretwin.test>\r\n"  # no ESMTP params


def test_quit_failure_after_delivery_is_still_delivered(scripted_smtp_server):
    server = scripted_smtp_server(happy_script("QUIT", b"500 what\r\n"))
    result = send(server)
    assert result.delivered and result.error is None and cli.exit_status(result) == 0
    assert result.stage is SmtpStage.QUIT and result.refusal is None


def test_delivered_dialogue_is_done(smtp_server):
    result = send(smtp_server)
    assert result.delivered and result.stage is SmtpStage.DONE and result.refusal is None


@pytest.mark.parametrize("reply", [b"554 5.7.1 refused at the dot\r\n", b"250 2.0.0 queued\r\n"])
def test_a_message_that_starts_with_quit(reply, scripted_smtp_server):
    """The content's first bytes are "QUIT": the verdict comes from the reply to the final dot
    (RFC 5321 §4.1.1.4), not from reading the transcript for a QUIT."""
    server = scripted_smtp_server(happy_script("dot", reply))
    result = send(server, b"QUIT now, and RSET too\r\n\r\nbody\r\n")
    assert sent(result)[-2].startswith(b"QUIT now")  # the content, then the real QUIT
    if reply.startswith(b"554"):
        assert not result.delivered and cli.exit_status(result) == 1
        assert result.stage is SmtpStage.CONTENT and result.refusal.code == 554
    else:
        assert result.delivered and cli.exit_status(result) == 0


def test_a_line_is_in_the_transcript_only_once_it_is_written(scripted_smtp_server):
    """A server that stops reading after 354: the message cannot all be written, and the
    transcript does not claim it was."""
    import time

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250 x\r\n")
        for verb, answer in ((b"MAIL", b"250 ok"), (b"RCPT", b"250 ok"), (b"DATA", b"354 go")):
            peer.expect(verb)
            peer.send(answer + b"\r\n")
        time.sleep(3)  # reads nothing more

    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 40_000  # 40 MB: beyond buffers
    result = send(scripted_smtp_server(script), big, timeout=1.0)
    assert not result.delivered and "sending" in result.error
    assert result.stage is SmtpStage.CONTENT and cli.exit_status(result) == 2
    assert sent(result)[-1] == b"DATA\r\n"  # the message never counted as sent


def test_dripping_server_is_bounded(scripted_smtp_server):
    """One byte at a time, slower than the timeout allows for the whole reply."""
    import time

    def script(peer: ScriptPeer) -> None:
        for byte in b"220 " + b"x" * 100 + b"\r\n":
            peer.send(bytes([byte]))
            time.sleep(0.05)

    result = send(scripted_smtp_server(script), timeout=1.0)
    assert not result.delivered and "no complete reply within 1 s" in result.error


# --- the CLI --------------------------------------------------------------------------------


def test_cli_delivers_composed_message(smtp_server, capsys):
    status = cli.main(
        [
            "--server", "127.0.0.1", "--port", str(smtp_server.port),
            "--from", SENDER, "--to", "a@x.test", "--to", "b@x.test",
            "--subject", "CLI test", "--body", "line one\n.dot line\n",
            "--header", "X-Wiretwin: yes",
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err
    (msg,) = smtp_server.messages
    assert msg.rcpt_tos == ["a@x.test", "b@x.test"]
    assert b"\r\nX-Wiretwin: yes\r\n" in msg.content
    assert b"Subject: CLI test\r\n" in msg.content
    assert b"\r\n.dot line\r\n" in msg.content
    assert b"Message-ID: <" in msg.content and b"Date: " in msg.content
    lines = out.out.splitlines()  # swaks(1)'s hints: " -> " sent, "<-  " received, in clear
    assert " -> EHLO wiretwin.invalid" in lines and "<-  250 HELP" in lines
    assert " -> ..dot line" in lines  # the transcript shows the wire, stuffed


def test_cli_help_returns_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "--starttls" in capsys.readouterr().out


def test_cli_json_and_quiet(smtp_server, capsys):
    base = ["--server", "127.0.0.1", "--port", str(smtp_server.port), "--from", SENDER]
    assert cli.main([*base, "--to", RCPT, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["delivered"] is True and doc["exit_status"] == 0
    assert doc["final_reply"]["code"] == 250 and doc["implementation"] == "handrolled"
    assert doc["transcript"][0]["direction"] == "<-"
    assert cli.main([*base, "--to", RCPT, "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_data_from_stdin(smtp_server):
    raw = b"Subject: raw\r\n\r\n.starts with a dot\r\ncaf\xc3\xa9\r\n"
    proc = subprocess.run(
        [sys.executable, "-m", "handrolled.smtp", "--server", "127.0.0.1",
         "--port", str(smtp_server.port), "--from", SENDER, "--to", RCPT, "--data", "-",
         "--quiet"],
        input=raw, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and smtp_server.messages[0].content == raw


def test_cli_insecure_warns_once(smtp_tls_server):
    proc = subprocess.run(
        [sys.executable, "-m", "handrolled.smtp", "--server", "127.0.0.1",
         "--port", str(smtp_tls_server.port), "--from", SENDER, "--to", RCPT, "--starttls",
         "--insecure", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("verification is OFF") == 1, proc.stderr


def test_cli_body_file_and_auth(smtp_tls_server, tmp_path, capsys):
    body = tmp_path / "body.txt"
    body.write_text("from a file\n")
    password = tmp_path / "password"
    password.write_text(AUTH_PASSWORD + "\n")
    status = cli.main(
        [
            "--server", "127.0.0.1", "--port", str(smtp_tls_server.port), "--from", SENDER,
            "--to", RCPT, "--body-file", str(body), "--starttls",
            "--cafile", smtp_tls_server.cafile, "--auth", "--user", AUTH_USER,
            "--password-file", str(password),
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err
    assert b"from a file\r\n" in smtp_tls_server.messages[0].content
    assert " ~> AUTH PLAIN <redacted>" in out.out.splitlines()  # inside TLS: swaks' " ~> "
    assert AUTH_PASSWORD not in out.out + out.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--to", RCPT],  # no --server
        ["--server", "127.0.0.1", "--from", SENDER],  # no --to
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--header", "no colon"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--header", "X: a\r\nB: c"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", "b\r\n@x", "--port", "1"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--auth", "--user", "u"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--tls", "--starttls"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--body-file", "/nonexistent"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--port", "many"],
        ["--server", "127.0.0.1", "--from", SENDER, "--to", RCPT, "--starttls", "--cafile", "/x"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and "Traceback" not in out.err


def test_cli_shows_server_control_characters_escaped(scripted_smtp_server, capsys):
    """A reply with ESC sequences and a bare CR never reaches the terminal raw; the JSON keeps
    the exact bytes (hex) beside a text view."""
    evil = b"550 5.7.1 \x1b[2J\x1b]0;pwned\x07 gone\rX\r\n"
    server = scripted_smtp_server(happy_script("RCPT", evil))
    argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER, "--to", RCPT]
    assert cli.main(argv) == 1
    out = capsys.readouterr()
    for stream in (out.out, out.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\r" not in stream
    assert "\\x1b[2J" in out.out and "refused: rcpt@wiretwin.test: 550" in out.err
    server = scripted_smtp_server(happy_script("RCPT", evil))
    argv[3] = str(server.port)
    assert cli.main([*argv, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    (line,) = [t for t in doc["transcript"] if t["data"].startswith(b"550".hex())]
    assert bytes.fromhex(line["data"]) == evil and line["text"] == evil.decode()
    assert doc["refusal"]["code"] == 550 and doc["stage"] == "rcpt"


def test_cli_refused_is_exit_1(scripted_smtp_server, capsys):
    server = scripted_smtp_server(happy_script("MAIL", b"550 5.7.1 go away\r\n"))
    argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER, "--to", RCPT]
    assert cli.main(argv) == 1
    assert "550" in capsys.readouterr().err


def test_cli_connection_failure_is_exit_2(capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    argv = ["--server", "127.0.0.1", "--port", str(port), "--from", SENDER, "--to", RCPT]
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    assert out.err.startswith("*** connection failed") and len(out.err.strip().splitlines()) == 1
    assert out.out == f"=== Trying 127.0.0.1:{port}...\n"  # as swaks: nothing was connected


# --- in the lab -----------------------------------------------------------------------------


@pytest.mark.lab
def test_send_mail_across_the_lab(lab, lab_smtp_server):
    """The client in its namespace, by name, through six routers, to aiosmtpd on the target."""
    message = b"Subject: lab\r\n\r\n.across the lab\r\n"
    request = MailRequest(
        lab.target.hostname, 25, mail_from=SENDER, recipients=(RCPT,), message=message, timeout=10.0
    )
    result = lab.call("client", "handrolled.smtp:send_mail", request)
    assert result.delivered, result.error
    (msg,) = lab_smtp_server.messages
    assert msg.content == message


@pytest.mark.lab
def test_seed_across_the_lab(lab, lab_smtp_server):
    result = lab.call("client", "handrolled.smtp:smtp_client", 25, lab.target.addr4)
    assert result.delivered, result.error
    assert lab_smtp_server.messages[0].content == b"\r\n My message\r\n"


@pytest.mark.lab
def test_unknown_name_in_the_lab_fails_fast(lab):
    request = MailRequest(
        "nosuchhost.lab.test",
        25,
        mail_from=SENDER,
        recipients=(RCPT,),
        message=MESSAGE,
        timeout=5.0,
    )
    result = lab.call("client", "handrolled.smtp:send_mail", request)
    assert not result.delivered and "resolve" in result.error


def test_cli_marks_unexpected_traffic_as_swaks(scripted_smtp_server, capsys):
    """swaks(1): "<** " a line from the server that was not what the command wanted, "**> " a
    line we sent that was never answered (here DATA, pipelined before the 421, RFC 2920)."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-x\r\n250-PIPELINING\r\n250 HELP\r\n")
        for verb in (b"MAIL", b"RCPT", b"DATA"):
            peer.expect(verb)
        peer.send(b"250 ok\r\n421 4.3.2 going down\r\n")

    server = scripted_smtp_server(script)
    argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER, "--to", RCPT]
    assert cli.main(argv) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4:] == [
        "**> DATA",
        "<-  250 ok",
        "<** 421 4.3.2 going down",
        "=== Connection closed with remote host.",
    ]
    assert lines[-6:-4] == [
        " -> MAIL FROM:<sender@wiretwin.test>",
        " -> RCPT TO:<rcpt@wiretwin.test>",
    ]


def test_cli_refusal_inside_tls_is_marked(smtp_test_ca, capsys):
    handler = RecordingHandler(refuse={RCPT})
    context = smtp_test_ca.server_context(["localhost", "127.0.0.1"])
    with serve_recording(handler, tls_context=context, require_starttls=True) as server:
        argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER]
        argv += ["--to", RCPT, "--starttls", "--cafile", str(smtp_test_ca.cafile)]
        assert cli.main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert "<~* 550 5.1.1 no such user here" in out and " ~> QUIT" in out
