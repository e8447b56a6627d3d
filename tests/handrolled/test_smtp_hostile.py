"""Hostile SMTP servers and hostile command lines (issue 16): every one ends with the right
outcome within its timeout, nothing is reported as delivered that was not, nothing raw from
the server reaches the terminal, and a refused command line never connects.

The servers are real sockets on 127.0.0.1 (tests/smtpd_fixtures.py): scripted peers for the
misbehaviour, aiosmtpd where a well-behaved server is needed, a throwaway CA for TLS.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from smtpd_fixtures import ScriptPeer, happy_script, serve_recording

from handrolled import smtp
from handrolled.cli import smtp as cli
from handrolled.requests import MailRequest, MailSessionRequest
from handrolled.results import Direction, SmtpStage
from handrolled.smtp_session import send_session

SENDER = "sender@wiretwin.test"
RCPT = "rcpt@wiretwin.test"
MESSAGE = b"Subject: hostile\r\n\r\nHello.\r\n"
TIMEOUT = 1.0
SLACK = 2.5  # seconds beyond the stated timeout a loaded 2-core machine may need


def request(port: int, **kwargs) -> MailRequest:
    kwargs.setdefault("timeout", TIMEOUT)
    message = kwargs.pop("message", MESSAGE)
    return MailRequest(
        "127.0.0.1", port, mail_from=SENDER, recipients=(RCPT,), message=message, **kwargs
    )


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def sent(result) -> list[bytes]:
    return [t.data for t in result.transcript if t.direction is Direction.SENT]


def _ehlo(peer: ScriptPeer, *extensions: bytes) -> None:
    peer.send(b"220 hostile.test ESMTP\r\n")
    peer.expect(b"EHLO")
    lines = [b"hostile.test", *extensions]
    peer.send(b"".join(b"250-" + x + b"\r\n" for x in lines[:-1]) + b"250 " + lines[-1] + b"\r\n")


def _starttls(peer: ScriptPeer) -> None:
    _ehlo(peer, b"STARTTLS")
    peer.expect(b"STARTTLS")
    peer.send(b"220 2.0.0 go ahead\r\n")


# --- TLS failures other than certificates ----------------------------------------------------


def _plain_after_220(peer: ScriptPeer) -> None:
    _starttls(peer)
    peer.conn.recv(4096)  # the ClientHello
    peer.send(b"250 this is not TLS at all\r\n")
    peer.readline()


def _eof_mid_handshake(peer: ScriptPeer) -> None:
    _starttls(peer)
    peer.conn.recv(4096)  # the ClientHello, then hang up
    peer.close()


def _closes_after_handshake(context: ssl.SSLContext):
    def script(peer: ScriptPeer) -> None:
        _starttls(peer)
        tls = context.wrap_socket(peer.conn, server_side=True)
        tls.close()  # during TLS: the EHLO over TLS gets no answer

    return script


def _trickled_handshake(context: ssl.SSLContext):
    """A real TLS server whose handshake bytes leave one at a time, 20 ms apart: each read
    of the client's is quick, the whole far beyond its timeout."""

    def script(peer: ScriptPeer) -> None:
        _starttls(peer)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        for _ in range(20):
            try:
                tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                pass
            for byte in outgoing.read():
                peer.send(bytes([byte]))
                time.sleep(0.02)
            data = peer.conn.recv(4096)
            if not data:
                return
            incoming.write(data)

    return script


@pytest.mark.parametrize(
    ("name", "match", "stage"),
    [
        ("plain-after-220", "TLS failed", SmtpStage.STARTTLS),
        ("eof-mid-handshake", "", SmtpStage.STARTTLS),
        ("trickled-handshake", f"TLS handshake not done within {TIMEOUT:g} s", SmtpStage.STARTTLS),
        ("closed-after-handshake", "closed", SmtpStage.EHLO),
    ],
)
def test_tls_failures_other_than_certificates(
    name, match, stage, smtp_test_ca, scripted_smtp_server
):
    context = smtp_test_ca.server_context(["127.0.0.1"])
    script = {
        "plain-after-220": _plain_after_220,
        "eof-mid-handshake": _eof_mid_handshake,
        "trickled-handshake": _trickled_handshake(context),
        "closed-after-handshake": _closes_after_handshake(context),
    }[name]
    server = scripted_smtp_server(script)
    r = request(server.port, starttls=True, cafile=str(smtp_test_ca.cafile))
    result, elapsed = timed(smtp.send_mail, r)
    assert not result.delivered and result.final_reply is None and result.recipients == ()
    assert match in result.error and "\n" not in result.error
    assert result.stage is stage and result.refusal is None
    assert cli.exit_status(result) == 2
    assert elapsed < TIMEOUT * 2 + SLACK  # the STARTTLS reply and the handshake, each bounded
    assert not any(s.startswith(b"MAIL") for s in sent(result))


def test_an_expired_certificate_is_refused(smtp_test_ca):
    context = smtp_test_ca.server_context(["127.0.0.1"], expired=True)
    with serve_recording(tls_context=context, require_starttls=True) as server:
        r = request(server.port, starttls=True, cafile=str(smtp_test_ca.cafile))
        result, elapsed = timed(smtp.send_mail, r)
        assert server.messages == []
    assert not result.delivered and "certificate has expired" in result.error
    assert result.stage is SmtpStage.STARTTLS and cli.exit_status(result) == 2
    assert elapsed < TIMEOUT + SLACK


def test_an_expired_certificate_on_implicit_tls(smtp_test_ca):
    context = smtp_test_ca.server_context(["127.0.0.1"], expired=True)
    with serve_recording(ssl_context=context) as server:
        result = smtp.send_mail(request(server.port, tls=True, cafile=str(smtp_test_ca.cafile)))
        assert server.messages == []
    assert not result.delivered and "certificate has expired" in result.error
    assert result.stage is SmtpStage.CONNECT and result.transcript == ()


# --- what the server says: invalid UTF-8, control characters, huge replies -------------------


def test_invalid_utf8_from_the_server(scripted_smtp_server, capsys):
    """Undecodable octets are shown as U+FFFD, kept exact in the result and the JSON, and
    change nothing about the verdict: the final dot's 250 still delivers."""
    greeting = b"220 caf\xc3\x28 \xff\xfe\xed\xa0\x80 ESMTP\r\n"
    server = scripted_smtp_server(happy_script("greeting", greeting))
    argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER, "--to", RCPT]
    assert cli.main([*argv, "--timeout", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["delivered"] is True
    assert bytes.fromhex(doc["transcript"][0]["data"]) == greeting
    assert "\ufffd" in doc["transcript"][0]["text"]
    server = scripted_smtp_server(happy_script("RCPT", b"550 5.1.1 \xff\xfe no\r\n"))
    argv[3] = str(server.port)
    assert cli.main([*argv, "--timeout", "2"]) == 1
    out = capsys.readouterr()
    assert "<** 550 5.1.1 \ufffd\ufffd no" in out.out.splitlines()
    assert "\ufffd" in out.err and len(out.err.strip().splitlines()) == 2  # refused: and ***


def test_control_characters_from_the_server_never_reach_the_terminal(scripted_smtp_server, capsys):
    def script(peer: ScriptPeer) -> None:
        # ESC sequences, NUL, BEL, a bare CR and (UTF-8) the C1 controls CSI and NEL
        _ehlo(peer, b"SIZE \x1b[31m1000", b"X-\x00\x07\xc2\x9b\x1b]0;title\x07", b"8BITMIME")
        peer.expect(b"MAIL")
        peer.send(b"553 5.1.8 \x1b[2J\x00sender\rrejected\xc2\x85\r\n")
        peer.expect(b"QUIT")
        peer.send(b"221 \x1bc bye\r\n")

    server = scripted_smtp_server(script)
    argv = ["--server", "127.0.0.1", "--port", str(server.port), "--from", SENDER, "--to", RCPT]
    assert cli.main([*argv, "--timeout", "2"]) == 1
    out = capsys.readouterr()
    for stream in (out.out, out.err):
        for raw in ("\x1b", "\x00", "\x07", "\r", "\x9b", "\x85"):
            assert raw not in stream, (raw, stream)
    assert "<** 553 5.1.8 \\x1b[2J\\x00sender\\x0drejected\\x85" in out.out.splitlines()
    assert "<-  250-X-\\x00\\x07\\x9b\\x1b]0;title\\x07" in out.out.splitlines()
    (error,) = out.err.splitlines()  # the whole reply, on one line
    assert error == "*** server replied 553 to MAIL FROM: 5.1.8 \\x1b[2J\\x00sender rejected"


def test_a_huge_multiline_reply_is_bounded(scripted_smtp_server):
    """10,000 continuation lines at once: refused at the bound (100 lines), not read forever,
    and the server's later replies are never taken for the dialogue's."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"".join(b"250-EXT%d\r\n" % i for i in range(10_000)) + b"250 end\r\n")
        peer.readline()

    result, elapsed = timed(smtp.send_mail, request(scripted_smtp_server(script).port))
    assert not result.delivered and "longer than 100 lines" in result.error
    assert result.stage is SmtpStage.EHLO and elapsed < TIMEOUT + SLACK
    assert sent(result) == [b"EHLO wiretwin.invalid\r\n"]  # no QUIT into a broken dialogue


def test_the_longest_multiline_reply_allowed_goes_through(scripted_smtp_server):
    ext = tuple(b"X-EXT%02d" % i for i in range(97))  # with the name and HELP: 99 lines
    server = scripted_smtp_server(happy_script(ehlo_lines=ext))
    result = smtp.send_mail(request(server.port))
    assert result.delivered and len(result.extensions) == 98


# --- disconnects during MAIL, RCPT, AUTH -----------------------------------------------------


def _disconnect_at(verb: bytes, pipelining: bool):
    def script(peer: ScriptPeer) -> None:
        _ehlo(peer, *((b"PIPELINING",) if pipelining else ()), b"AUTH PLAIN LOGIN")
        while True:
            line = peer.readline()
            if not line or line.upper().startswith(verb):
                peer.close()
                return
            peer.send(b"250 ok\r\n")

    return script


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize(
    ("verb", "stage"),
    [(b"MAIL", SmtpStage.MAIL), (b"RCPT", SmtpStage.RCPT), (b"AUTH", SmtpStage.AUTH)],
)
def test_disconnects_mid_dialogue(verb, stage, pipelining, scripted_smtp_server):
    server = scripted_smtp_server(_disconnect_at(verb, pipelining))
    auth = {"auth": ("alice", "s3cret"), "allow_plain_auth": True} if verb == b"AUTH" else {}
    result, elapsed = timed(smtp.send_mail, request(server.port, pipelining=pipelining, **auth))
    assert not result.delivered and result.final_reply is None
    assert "closed" in result.error and result.stage is stage
    assert not any(r.accepted for r in result.recipients)
    assert cli.exit_status(result) == 2 and elapsed < TIMEOUT + SLACK
    assert b"s3cret" not in b"".join(sent(result))


def test_disconnect_during_auth_login_keeps_the_password_unsent(scripted_smtp_server):
    def script(peer: ScriptPeer) -> None:
        _ehlo(peer, b"AUTH LOGIN")
        peer.expect(b"AUTH LOGIN")
        peer.send(b"334 VXNlcm5hbWU6\r\n")
        peer.readline()  # the user name
        peer.close()

    server = scripted_smtp_server(script)
    r = request(server.port, auth=("alice", "s3cret"), allow_plain_auth=True)
    result = smtp.send_mail(r)
    assert not result.delivered and result.stage is SmtpStage.AUTH and "closed" in result.error
    assert [t.redacted for t in result.transcript if t.direction is Direction.SENT] == [
        False,
        False,
        True,
    ]  # EHLO, AUTH LOGIN, the user name (redacted); the password never went


# --- a server that never reads ---------------------------------------------------------------


def _reads_until_data(peer: ScriptPeer) -> None:
    _ehlo(peer, b"PIPELINING")
    for verb in (b"MAIL", b"RCPT", b"DATA"):
        peer.expect(verb)
    peer.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
    time.sleep(TIMEOUT + SLACK)  # then reads nothing more


def test_a_server_that_never_reads(scripted_smtp_server):
    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 deaf.test ESMTP\r\n")
        time.sleep(TIMEOUT + SLACK)  # never reads, never answers

    result, elapsed = timed(smtp.send_mail, request(scripted_smtp_server(script).port))
    assert not result.delivered and f"no complete reply within {TIMEOUT:g} s" in result.error
    assert result.stage is SmtpStage.EHLO and elapsed < TIMEOUT + SLACK


def test_a_server_that_stops_reading_ends_a_session_in_time(scripted_smtp_server):
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 40_000  # 40 MB: beyond buffers
    mail = request(scripted_smtp_server(_reads_until_data).port, message=big)
    result, elapsed = timed(send_session, MailSessionRequest(mail, 3))
    assert result.delivered == 0 and elapsed < TIMEOUT + SLACK
    first = result.messages[0]
    assert not first.delivered and "sending" in first.error and first.stage is SmtpStage.CONTENT
    assert all(m.error.startswith("not sent") for m in result.messages[1:])
    assert sent(result)[-1] == b"DATA\r\n"  # the message never counted as sent


# --- the command line under hypothesis -------------------------------------------------------

EDGE_NUMBERS = ["0", "-0", "-1", "1", "2", "0.001", "1e-300", "nan", "NaN", "inf", "-inf"]
EDGE_NUMBERS += ["1e10", "1e308", "1e309", str(2**64), "99999999999999999999", "0x10", "1_0"]
EDGE_TEXT = ["", " ", "-", "--", "\x00", "\r\n", "a\x1bb", "é", "\u2028", "@", "<>", "x" * 600]
OPTIONS = [
    "--from", "--to", "--subject", "--body", "--body-file", "--header", "--helo", "--timeout",
    "--count", "--quit-after", "--cafile", "--user", "--password-file",
]  # fmt: skip
FLAGS = ["--json", "--quiet", "--no-pipelining", "--auth", "--starttls", "--tls", "--insecure"]
FLAGS += ["--allow-plain-auth", "--help", "-h", "--port"]

_value = st.sampled_from(EDGE_NUMBERS + EDGE_TEXT + ["a@b.test", "rcpt", "x: y"]) | st.text(
    max_size=12
)
_pair = st.tuples(st.sampled_from(OPTIONS), _value).map(list)
_arg = _pair | st.sampled_from(FLAGS).map(lambda f: [f]) | _value.map(lambda v: [v])


@pytest.fixture(scope="module")
def watched_server():
    with serve_recording() as server:
        yield server


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_arg, max_size=6).map(lambda parts: [a for p in parts for a in p]))
# an unclosed quote, which the email package's header parser ran off the end of (IndexError)
@example(["--from", '"'])
def test_cli_argument_lists_never_crash_hang_or_connect_after_refusing(
    watched_server, capsys, argv
):
    """Any argument list: an exit status (0, 1, 2), never a traceback (an exception would
    fail the test), never longer than its timeout allows, and when the line is refused
    (``wiretwin smtp: error:``) no connection to the server.  The server and port are ours,
    given last so nothing drawn can point elsewhere; the timeout is capped the same way."""
    base = ["--from", SENDER, "--to", RCPT]
    fixed = ["--server", "127.0.0.1", "--port", str(watched_server.port)]
    if "--timeout" not in argv:
        fixed += ["--timeout", "3"]
    counts = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--count"]
    if any(c.isascii() and c.isdigit() and 20 < int(c) <= 10**6 for c in counts):
        return  # a valid count that large is a benchmark, not an edge
    connections = watched_server.connections
    started = time.monotonic()
    status = cli.main([*base, *argv, *fixed])
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert status in (0, 1, 2)
    assert "Traceback" not in out.err
    if status == 2 and out.err.startswith("wiretwin smtp: error:"):
        assert len(out.err.strip().splitlines()) == 1, out.err
        assert watched_server.connections == connections  # refused before connecting
    assert elapsed < 3 * 6 + SLACK, (argv, elapsed)  # each step of a dialogue within 3 s


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e10", "1e309", "", "x"])
def test_cli_bad_timeout_is_refused_without_connecting(value, smtp_server, capsys):
    argv = ["--server", "127.0.0.1", "--port", str(smtp_server.port), "--from", SENDER]
    assert cli.main([*argv, "--to", RCPT, "--timeout", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wiretwin smtp: error:") and len(err.strip().splitlines()) == 1
    assert smtp_server.connections == 0


@pytest.mark.parametrize("port", ["0", "-1", "65536", "70000", "1e3", "", "25x"])
def test_cli_bad_port_is_refused_without_connecting(port, capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(0.2)
    argv = ["--server", "127.0.0.1", "--port", port, "--from", SENDER, "--to", RCPT]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("wiretwin smtp: error:")
    with pytest.raises(TimeoutError):
        sock.accept()
    sock.close()


@pytest.mark.parametrize("option", ["--body-file", "--data", "--password-file"])
@pytest.mark.parametrize("name", ["\x00", "a\x00b", "", "/nonexistent/x"])
def test_cli_unreadable_file_names_are_one_line(option, name, smtp_server, capsys):
    """Found by the hypothesis test above: a NUL in a file name made open() raise ValueError,
    a traceback; now a one-line refusal before connecting."""
    argv = ["--server", "127.0.0.1", "--port", str(smtp_server.port), "--from", SENDER]
    extra = ["--auth", "--user", "u", "--allow-plain-auth"] if option == "--password-file" else []
    assert cli.main([*argv, "--to", RCPT, *extra, option, name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wiretwin smtp: error: cannot read") and len(err.splitlines()) == 1
    assert "\x00" not in err and smtp_server.connections == 0
