"""reference.smtp: the scapy SMTP layers, the StreamSocket client and the smtplib witness,
against real servers (aiosmtpd in-process, scripted misbehaving servers, the lab)."""

from __future__ import annotations

import socket

import pytest
import smtpd_fixtures as fx
from hypothesis import given
from hypothesis import strategies as st

from handrolled.errors import UsageError
from handrolled.requests import MailRequest
from handrolled.results import Direction, Implementation, SmtpStage
from reference.smtp import encode_body, message_size
from reference.smtp import send_mail as _send_mail
from reference.smtp import send_mail_smtplib as _send_mail_smtplib
from reference.smtp_layers import SMTPCommand, SMTPReply, SmtpStreamSocket

MESSAGE = (
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: twin\r\n\r\n"
    b".a line starting with a dot\r\n..two dots\nbare LF above\rbare CR\r\n.\r\nend"
)
DELIVERED = (
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: twin\r\n\r\n"
    b".a line starting with a dot\r\n..two dots\r\nbare LF above\r\nbare CR\r\n.\r\nend\r\n"
)


def send_mail(server: str, port: int, **kwargs):
    """reference.smtp.send_mail with the request made from keywords."""
    kwargs["recipients"] = tuple(kwargs["recipients"])
    return _send_mail(MailRequest(server, port, **kwargs))


def send_mail_smtplib(server: str, port: int, **kwargs):
    kwargs["recipients"] = tuple(kwargs["recipients"])
    return _send_mail_smtplib(MailRequest(server, port, **kwargs))


BOTH = [send_mail, send_mail_smtplib]
AUTH_USER, AUTH_PASSWORD, happy_script = fx.AUTH_USER, fx.AUTH_PASSWORD, fx.happy_script
# The fixtures (smtp_server, scripted_smtp_server, ...) come from tests/smtpd_fixtures.py via
# tests/conftest.py (``from smtpd_fixtures import *``).


# --- the scapy layers ---------------------------------------------------------------------------


def test_command_builds_and_dissects() -> None:
    assert bytes(SMTPCommand(verb=b"MAIL", argument=b"FROM:<a@b>")) == b"MAIL FROM:<a@b>\r\n"
    assert bytes(SMTPCommand(verb=b"DATA")) == b"DATA\r\n"
    pkt = SMTPCommand(b"RCPT TO:<x@y>\r\nDATA\r\n")
    assert (pkt.verb, pkt.argument, pkt.eol) == (b"RCPT", b"TO:<x@y>", b"\r\n")
    assert bytes(pkt.payload) == b"DATA\r\n"  # the next line is padding, not part of this one


def test_reply_lines_dissect_with_separator() -> None:
    first = SMTPReply(b"250-smtp.test\r\n250 HELP\r\n")
    assert (first.reply_code, first.separator, first.text, first.is_last) == (
        250, b"-", b"smtp.test", False
    )  # fmt: skip
    assert SMTPReply(b"250\r\n").is_last and SMTPReply(b"250\r\n").text == b""
    assert SMTPReply(b"2x0 oops\r\n").reply_code is None


def test_stream_hook_waits_for_a_whole_line() -> None:
    assert SMTPReply.tcp_reassemble(b"250 partial", {}, {}) is None
    assert SMTPReply.tcp_reassemble(b"250 ok\r\n", {}, {}).text == b"ok"


@given(st.binary(min_size=1, max_size=300))  # b"" means "no data" to scapy: all defaults
def test_reply_dissection_never_raises_and_keeps_every_byte(data: bytes) -> None:
    pkt = SMTPReply(data)
    assert bytes(pkt) == data  # line fields + padding rebuild the input exactly


@given(
    verb=st.sampled_from([b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]),
    arg=st.binary(max_size=80).filter(lambda b: b"\r\n" not in b and not b.startswith(b" ")),
)
def test_command_round_trip(verb: bytes, arg: bytes) -> None:
    wire = bytes(SMTPCommand(verb=verb, argument=arg))
    back = SMTPCommand(wire)
    assert (back.verb, back.argument) == (verb, arg)


def test_stream_socket_hands_out_one_line_per_recv() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(5)
        stream = SmtpStreamSocket(a)
        b.sendall(b"250-one\r\n250-two\r\n250 three\r\n")
        assert [bytes(stream.recv().text) for _ in range(3)] == [b"one", b"two", b"three"]
        b.sendall(b"354 go")
        b.sendall(b" ahead\r\n")
        assert bytes(stream.recv()) == b"354 go ahead\r\n"


def test_body_encoding_normalises_and_dot_stuffs() -> None:
    assert (
        encode_body(MESSAGE)
        == DELIVERED.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        .replace(b"\r\n.a line", b"\r\n..a line")
        .replace(b"\r\n..two", b"\r\n...two")
        + b".\r\n"
    )
    assert encode_body(b"") == b".\r\n"
    assert message_size(b"a\nb") == 6


# --- against aiosmtpd ---------------------------------------------------------------------------


@pytest.mark.parametrize("fn", BOTH)
def test_delivered_byte_exact_with_refused_recipient(fn, smtp_server) -> None:
    smtp_server.handler.refuse.add("nobody@example.test")
    message = MESSAGE if fn is send_mail else DELIVERED  # smtplib sends bytes as they are
    result = fn(smtp_server.host, smtp_server.port, mail_from="a@example.test",
                recipients=["b@example.test", "nobody@example.test"], message=message,
                timeout=10)  # fmt: skip
    assert result.delivered and result.error is None
    assert result.stage is SmtpStage.DONE and result.refusal is None
    assert [(r.address, r.accepted, r.reply.code) for r in result.recipients] == [
        ("b@example.test", True, 250),
        ("nobody@example.test", False, 550),
    ]
    assert result.final_reply is not None and result.final_reply.code == 250
    (received,) = smtp_server.messages
    assert received.content == DELIVERED
    assert received.rcpt_tos == ["b@example.test"]
    sent = [t.data for t in result.transcript if t.direction is Direction.SENT]
    if fn is send_mail:
        assert result.implementation is Implementation.REFERENCE
        # pipelined group: MAIL, RCPT, RCPT, DATA before any reply is read
        assert [s.split(b" ")[0].strip() for s in sent[1:5]] == [b"MAIL", b"RCPT", b"RCPT", b"DATA"]
        assert all(s[:4].isupper() for s in sent if not s.startswith(b"From"))
    else:
        assert result.implementation is Implementation.SMTPLIB
        assert sent[0].startswith(b"ehlo ") and any(s.startswith(b"mail FROM:") for s in sent)
    assert sent[-1].upper() == b"QUIT\r\n"
    received_lines = [t.data for t in result.transcript if t.direction is Direction.RECEIVED]
    assert received_lines[0].startswith(b"220 ")
    assert all(line.endswith(b"\r\n") for line in received_lines)


def test_without_pipelining_commands_wait_for_replies(smtp_plain_server) -> None:
    result = send_mail(smtp_plain_server.host, smtp_plain_server.port, mail_from="a@x.test",
                       recipients=["b@x.test"], message=b"hi\r\n", timeout=10)  # fmt: skip
    assert result.delivered
    directions = [t.direction for t in result.transcript]
    mail = next(i for i, t in enumerate(result.transcript) if t.data.startswith(b"MAIL"))
    assert directions[mail + 1] is Direction.RECEIVED


@pytest.mark.parametrize("fn", BOTH)
def test_every_recipient_refused_is_not_delivered(fn, smtp_server) -> None:
    smtp_server.handler.refuse.add("nobody@x.test")
    result = fn(smtp_server.host, smtp_server.port, mail_from="a@x.test",
                recipients=["nobody@x.test"], message=b"hi\r\n", timeout=10)  # fmt: skip
    assert not result.delivered and "refused" in (result.error or "")
    assert "550" in result.error and "every recipient was refused" in result.error
    assert smtp_server.messages == []


@pytest.mark.parametrize("fn", BOTH)
def test_starttls_then_auth_and_no_secret_in_transcript(fn, smtp_tls_server) -> None:
    result = fn(smtp_tls_server.host, smtp_tls_server.port, mail_from="a@x.test",
                recipients=["b@x.test"], message=b"secret mail\r\n", starttls=True,
                auth=(AUTH_USER, AUTH_PASSWORD), cafile=smtp_tls_server.cafile,
                timeout=10)  # fmt: skip
    assert result.delivered, result.error
    assert result.tls == "starttls"
    (received,) = smtp_tls_server.messages
    assert received.tls and received.authenticated
    everything = b"".join(t.data for t in result.transcript)
    assert AUTH_PASSWORD.encode() not in everything
    assert b"czNjcmV0" not in everything  # no base64 of the secret either
    assert any(t.redacted for t in result.transcript)
    # RFC 3207 §4: everything after the 220 to STARTTLS goes inside TLS, nothing before it
    starttls = next(i for i, t in enumerate(result.transcript) if t.data.upper() == b"STARTTLS\r\n")
    assert result.transcript[starttls + 1].data.startswith(b"220")
    assert [t.tls for t in result.transcript] == [False] * (starttls + 2) + [True] * (
        len(result.transcript) - starttls - 2
    )


@pytest.mark.parametrize("fn", BOTH)
def test_implicit_tls(fn, smtp_implicit_tls_server) -> None:
    srv = smtp_implicit_tls_server
    result = fn("localhost", srv.port, mail_from="a@x.test", recipients=["b@x.test"],
                message=b"over tls\r\n", tls=True, cafile=srv.cafile, timeout=10)  # fmt: skip
    assert result.delivered, result.error
    assert result.tls == "implicit"
    assert srv.messages[0].content == b"over tls\r\n"


@pytest.mark.parametrize("fn", BOTH)
def test_starttls_refused_when_not_offered(fn, smtp_server) -> None:
    result = fn(smtp_server.host, smtp_server.port, mail_from="a@x.test",
                recipients=["b@x.test"], message=b"x\r\n", starttls=True,
                timeout=10)  # fmt: skip
    assert not result.delivered and "STARTTLS" in (result.error or "")
    assert smtp_server.messages == []


def test_plain_auth_refused_unless_allowed(smtp_auth_server) -> None:
    args = {"mail_from": "a@x.test", "recipients": ["b@x.test"], "message": b"x\r\n"}
    with pytest.raises(UsageError):  # the request refuses it, before any side runs
        send_mail(smtp_auth_server.host, smtp_auth_server.port, auth=("u", "p"), **args)
    result = send_mail(smtp_auth_server.host, smtp_auth_server.port, timeout=10,
                       auth=(AUTH_USER, AUTH_PASSWORD), allow_plain_auth=True, **args)  # fmt: skip
    assert result.delivered, result.error


@pytest.mark.parametrize("tls", [{"starttls": True}, {"tls": True}])
@pytest.mark.parametrize("fn", [_send_mail, _send_mail_smtplib])
def test_unreadable_cafile_raises_before_connecting(fn, tls: dict) -> None:
    request = MailRequest("127.0.0.1", 9, mail_from="a@x.test", recipients=("b@x.test",),
                          message=b"x\r\n", cafile="/nonexistent/ca.pem", **tls)  # fmt: skip
    with pytest.raises(UsageError, match="CA file"):
        fn(request)  # port 9: nothing is ever sent there


@pytest.mark.parametrize("fn", [_send_mail, _send_mail_smtplib])
def test_a_request_is_required(fn) -> None:
    with pytest.raises(UsageError, match="MailRequest"):
        fn("127.0.0.1")


STAGE_OF = {
    "greeting": SmtpStage.GREETING,
    "MAIL": SmtpStage.MAIL,
    "RCPT": SmtpStage.RCPT,
    "DATA": SmtpStage.DATA,
    "dot": SmtpStage.CONTENT,
}


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("greeting", b"554 go away\r\n"),
        ("MAIL", b"451 try later\r\n"),
        ("RCPT", b"550 no\r\n"),
        ("DATA", b"554 no data\r\n"),
        ("dot", b"552 too big\r\n"),
    ],
)
@pytest.mark.parametrize("fn", BOTH)
def test_refusal_at_each_stage_is_not_delivered(fn, scripted_smtp_server, stage, reply) -> None:
    server = scripted_smtp_server(happy_script(stage, reply))
    result = fn(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                message=b"x\r\n", timeout=5)  # fmt: skip
    assert not result.delivered
    assert result.error
    assert reply.strip()[:3].decode() in result.error  # the server's code, from both clients
    assert result.refusal is not None and result.refusal.code == int(reply[:3])
    assert result.stage is STAGE_OF[stage]


def test_gibberish_and_eof_are_errors_not_hangs(scripted_smtp_server) -> None:
    def gibberish(peer) -> None:
        peer.send(b"hello there, I am not SMTP\r\n")
        peer.readline()

    server = scripted_smtp_server(gibberish)
    result = send_mail(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                       message=b"x\r\n", timeout=5)  # fmt: skip
    assert not result.delivered and "not an SMTP reply" in (result.error or "")

    def eof(peer) -> None:
        peer.send(b"220 hi\r\n")
        peer.readline()
        peer.shutdown_write()

    server = scripted_smtp_server(eof)
    result = send_mail(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                       message=b"x\r\n", timeout=5)  # fmt: skip
    assert not result.delivered and "closed" in (result.error or "")


def test_code_change_mid_reply_is_a_protocol_error(scripted_smtp_server) -> None:
    def script(peer) -> None:
        peer.send(b"220-hi\r\n221 bye\r\n")
        peer.readline()

    server = scripted_smtp_server(script)
    result = send_mail(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                       message=b"x\r\n", timeout=5)  # fmt: skip
    assert not result.delivered and "changed" in (result.error or "")


def test_silent_server_times_out(scripted_smtp_server) -> None:
    def silent(peer) -> None:
        peer.readline()  # waits (bounded) for a client that is waiting for a greeting

    server = scripted_smtp_server(silent)
    result = send_mail(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                       message=b"x\r\n", timeout=0.5)  # fmt: skip
    assert not result.delivered and "within" in (result.error or "")


def _silent_after_ehlo(peer) -> None:
    peer.send(b"220 hi\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250 hi\r\n")
    while peer.readline():  # silent from MAIL on; reads whatever comes until the client closes
        pass


def _gibberish_after_ehlo(peer) -> None:
    peer.send(b"220 hi\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250 hi\r\nnot SMTP at all\r\n")
    while peer.readline():
        pass


@pytest.mark.parametrize("fn", BOTH)
@pytest.mark.parametrize("script", [_silent_after_ehlo, _gibberish_after_ehlo])
def test_no_quit_into_a_broken_dialogue(fn, script, scripted_smtp_server) -> None:
    """After a timeout or a protocol error there is no QUIT (and no second wait for its
    reply): the result comes after about one timeout, not two."""
    server = scripted_smtp_server(script)
    result = fn(server.host, server.port, mail_from="a@x.test", recipients=["b@x.test"],
                message=b"x\r\n", timeout=1.0)  # fmt: skip
    assert not result.delivered and result.error
    sent = [t.data[:4].upper() for t in result.transcript if t.direction is Direction.SENT]
    assert b"QUIT" not in sent
    assert result.elapsed_ms < 1600  # one 1 s timeout at most, with room for a loaded machine


# --- in the lab ---------------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.parametrize("fn", ["send_mail", "send_mail_smtplib"])
def test_lab_mail_delivered_byte_exact(lab, lab_smtp_server, fn: str) -> None:
    message = MESSAGE if fn == "send_mail" else DELIVERED
    request = MailRequest(lab.target.hostname, 25, mail_from="a@lab.test",
                          recipients=("b@lab.test",), message=message)  # fmt: skip
    result = lab.call("client", f"reference.smtp:{fn}", request)
    assert result.delivered, result.error
    assert lab_smtp_server.messages[-1].content == DELIVERED


# NSS key log format: "LABEL <32-octet client random in hex> <secret in hex>" (TLS 1.3 labels:
# RFC 8446 §7.1 via the NSS key log spec), as tshark's tls.keylog_file reads it.
_NSS_LINE = r"(CLIENT_RANDOM|[A-Z_]+_SECRET(_0)?) [0-9a-f]{64} [0-9a-f]+"


@pytest.mark.parametrize("fn", BOTH)
@pytest.mark.parametrize("how", ["starttls", "tls"])
def test_sslkeylogfile_gets_the_sessions_keys(fn, how, smtp_tls_server, smtp_implicit_tls_server,
                                               tmp_path, monkeypatch) -> None:  # fmt: skip
    """compare's key logs rest on this: both reference clients' TLS contexts honour
    SSLKEYLOGFILE (ssl.create_default_context reads it), for STARTTLS and implicit TLS."""
    import re

    srv = smtp_tls_server if how == "starttls" else smtp_implicit_tls_server
    keys = tmp_path / "keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keys))
    result = fn("localhost", srv.port, mail_from="a@x.test", recipients=["b@x.test"],
                message=b"keys\r\n", cafile=srv.cafile, timeout=10, **{how: True})  # fmt: skip
    assert result.delivered, result.error
    lines = [line for line in keys.read_text().splitlines() if line and not line.startswith("#")]
    assert lines and all(re.fullmatch(_NSS_LINE, line) for line in lines), lines
    assert any(line.startswith(("CLIENT_TRAFFIC_SECRET_0 ", "CLIENT_RANDOM ")) for line in lines)
