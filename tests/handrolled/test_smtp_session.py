"""handrolled.smtp_session: many messages over one connection, against real aiosmtpd servers
and scripted ones.  Expectations from RFC 5321 §3.3 (transactions back to back, no RSET) and
RFC 2920 §3.1 (the content opens the next group), and from what the server recorded."""

from __future__ import annotations

import json
import socket
import time

import pytest
from smtpd_fixtures import RecordingHandler, ScriptPeer, serve_recording

from handrolled.requests import MailRequest, MailSessionRequest
from handrolled.results import Direction, SmtpStage
from handrolled.smtp_session import send_session

SENDER = "sender@wiretwin.test"
RCPT = "rcpt@wiretwin.test"
MESSAGE = b"From: sender@wiretwin.test\r\nTo: rcpt@wiretwin.test\r\nSubject: hi\r\n\r\nHello.\r\n"
# RFC 5321 §4.5.2 / §4.1.1.4: the content on the wire, and the commands with SIZE (RFC 1870)
WIRE_CONTENT = MESSAGE + b".\r\n"
WIRE_MAIL = f"MAIL FROM:<{SENDER}> SIZE={len(MESSAGE)}\r\n".encode()
WIRE_RCPT = f"RCPT TO:<{RCPT}>\r\n".encode()


def session(port: int, count: int, **kwargs):
    kwargs.setdefault("timeout", 5.0)
    recipients = kwargs.pop("recipients", (RCPT,))
    mail = MailRequest(
        "127.0.0.1", port, mail_from=SENDER, recipients=recipients, message=MESSAGE, **kwargs
    )
    return send_session(MailSessionRequest(mail, count))


def sent(result) -> list[bytes]:
    return [t.data for t in result.transcript if t.direction is Direction.SENT]


@pytest.mark.parametrize("pipelining", [True, False])
def test_n_messages_over_one_connection_all_received(pipelining):
    with serve_recording(RecordingHandler(pipelining=pipelining)) as server:
        result = session(server.port, 40)
    assert server.connections == 1 and result.connections == 1
    assert len(server.messages) == 40
    assert all(m.content == MESSAGE and m.rcpt_tos == [RCPT] for m in server.messages)
    assert result.delivered == 40 and result.error is None
    assert all(m.delivered and m.stage is SmtpStage.DONE for m in result.messages)
    assert all(m.final_reply.code == 250 for m in result.messages)
    assert result.stage is SmtpStage.DONE and result.pipelined is pipelining
    commands = [d.split(b" ")[0].split(b":")[0].rstrip(b"\r\n") for d in sent(result)]
    assert b"RSET" not in commands  # RFC 5321 §3.3: none needed between transactions
    assert commands.count(b"MAIL") == 40 and commands[-1] == b"QUIT"


def test_pipelined_groups_arrive_together_at_the_server():
    """RFC 2920 §3.1: content, MAIL, RCPT..., DATA in one write: each group reached the
    server in one recv(), the first without content, the last the content and QUIT."""
    handler = RecordingHandler()
    with serve_recording(handler) as server:
        result = session(server.port, 5, recipients=(RCPT, "second@wiretwin.test"))
    assert result.delivered == 5
    rcpts = WIRE_RCPT + b"RCPT TO:<second@wiretwin.test>\r\n"
    group = WIRE_MAIL + rcpts + b"DATA\r\n"
    assert handler.chunks == [group] + [WIRE_CONTENT + group] * 4 + [WIRE_CONTENT + b"QUIT\r\n"]


def test_transcript_times_follow_the_dialogue():
    """Every line is stamped: a command once handed to the kernel, a reply once its bytes
    arrived, so (each reply answering a command sent before it) the stamps never go back."""
    with serve_recording(RecordingHandler()) as server:
        before = time.time_ns()
        result = session(server.port, 20)
        after = time.time_ns()
    assert result.delivered == 20
    stamps = [line.time_ns for line in result.transcript]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    received = [t for t in result.transcript if t.direction is Direction.RECEIVED]
    assert len({t.time_ns for t in received}) > 20  # not one stale stamp for many reads


def test_lockstep_without_pipelining_sends_one_command_per_write():
    handler = RecordingHandler(pipelining=False)
    with serve_recording(handler) as server:
        result = session(server.port, 3)
    assert result.delivered == 3 and not result.pipelined
    one = [WIRE_MAIL, WIRE_RCPT, b"DATA\r\n", WIRE_CONTENT]
    assert handler.chunks == one * 3 + [b"QUIT\r\n"]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("where", ["rcpt", "content"])
def test_a_refusal_in_message_k_affects_only_message_k(where, pipelining):
    handler = RecordingHandler(pipelining=pipelining)
    if where == "rcpt":
        handler.refuse_rcpt_in = {3}
    else:
        handler.refuse_content_in = {3}
    with serve_recording(handler) as server:
        result = session(server.port, 5)
    assert server.connections == 1 and len(server.messages) == 4
    assert [m.delivered for m in result.messages] == [True, True, False, True, True]
    third = result.messages[2]
    if where == "rcpt":
        assert third.stage is SmtpStage.RCPT and third.refusal.code == 550
        assert [r.accepted for r in third.recipients] == [False]
        assert "every recipient was refused" in third.error
    else:
        assert third.stage is SmtpStage.CONTENT and third.refusal.code == 554
        assert third.final_reply.code == 554
    assert result.error is None and result.stage is SmtpStage.DONE
    assert sent(result).count(WIRE_CONTENT) == 4 + (where == "content")
    # RFC 5321 §4.1.1.5: message 3's MAIL was accepted and no dot ended its transaction
    # (aiosmtpd answers DATA without recipients with 503), so RSET aborts it; else none.
    assert sent(result).count(b"RSET\r\n") == (where == "rcpt")
    if where == "rcpt" and pipelining:  # RFC 2920 §3.1: RSET opens the next group
        group = b"RSET\r\n" + WIRE_MAIL + WIRE_RCPT + b"DATA\r\n"
        assert group in handler.chunks


# What the scripted server answers each message's DATA with, the 354 alone in a write of its
# own as aiosmtpd sends it: the same line again, another text, a line split in two, a
# refusal, then the same line again.
DATA_REPLIES = [b"354 go\r\n"] * 2 + [b"354 go on\r\n", (b"354 g", b"o\r\n"), b"451 4.3.0 no\r\n"]
DATA_REPLIES += [b"354 go\r\n"] * 3
MAIL_LINE = f"MAIL FROM:<{SENDER}>\r\n".encode()  # no SIZE: the script does not offer it


def _greet_pipelining(peer: ScriptPeer) -> None:
    """A scripted server's opening: its banner, then an EHLO reply offering PIPELINING."""
    peer.send(b"220 x\r\n")
    peer.expect(b"EHLO")
    peer.send(b"250-x\r\n250-PIPELINING\r\n250 HELP\r\n")


def _varied_354s(peer: ScriptPeer) -> None:
    """RFC 2920 §3.1: content only after DATA's 354; in the same write the next group (or
    QUIT).  The replies before DATA's come first, DATA's ``DATA_REPLIES[n]`` a moment
    later, as a server that works through each command sends them."""
    _greet_pipelining(peer)
    lead = b""  # the reply to what opened the group: the last dot, or RSET
    for reply in DATA_REPLIES:
        if lead == b"250 ok\r\n":
            peer.expect(b"RSET")
        for line in (MAIL_LINE, WIRE_RCPT, b"DATA\r\n"):
            assert peer.readline() == line
        peer.send(lead + b"250 ok\r\n250 ok\r\n")
        time.sleep(0.02)
        for part in reply if isinstance(reply, tuple) else (reply,):
            peer.send(part)
            time.sleep(0.02)
        if reply == b"451 4.3.0 no\r\n":
            lead = b"250 ok\r\n"  # MAIL's transaction is open: RSET opens the next group
            continue
        assert peer.read_data() == WIRE_CONTENT
        lead = b"250 queued\r\n"
    assert peer.readline() == b"QUIT\r\n"  # in the write of the last content
    peer.send(lead + b"221 bye\r\n")


def test_what_follows_each_354_is_right_whatever_the_354_looks_like(scripted_smtp_server):
    """The content and the next group go out only after DATA's 354, whether that line is
    the one heard before, another text, or split over two reads; after a refused DATA no
    content goes and RSET opens the next group (RFC 5321 §4.1.1.5).  The transcript keeps
    the dialogue's order, line by line, and every outcome its message."""
    server = scripted_smtp_server(_varied_354s)
    result = session(server.port, len(DATA_REPLIES))
    assert server.error is None
    assert [m.delivered for m in result.messages] == [True] * 4 + [False] + [True] * 3
    fifth = result.messages[4]
    assert fifth.stage is SmtpStage.DATA and fifth.refusal.code == 451 and not fifth.final_reply
    assert result.error is None and result.stage is SmtpStage.DONE
    S, R = Direction.SENT, Direction.RECEIVED
    group = [(S, MAIL_LINE), (S, WIRE_RCPT), (S, b"DATA\r\n")]
    want, lead = list(group), []
    for reply in DATA_REPLIES:
        line = b"".join(reply) if isinstance(reply, tuple) else reply
        want += [*lead, (R, b"250 ok\r\n"), (R, b"250 ok\r\n"), (R, line)]
        if line.startswith(b"451"):
            want += [(S, b"RSET\r\n"), *group]
            lead = [(R, b"250 ok\r\n")]
        else:
            want += [(S, WIRE_CONTENT)]
            lead = [(R, b"250 queued\r\n")]
            want += group
    want[-3:] = [(S, b"QUIT\r\n")]  # the last content goes with QUIT
    want += [*lead, (R, b"221 bye\r\n")]
    lines = [(t.direction, t.data) for t in result.transcript]
    assert lines[lines.index((S, MAIL_LINE)) :] == want
    refused = [t for t in result.transcript if t.data == b"451 4.3.0 no\r\n"]
    assert [t.expected for t in refused] == [False]  # swaks' <**
    stamps = [t.time_ns for t in result.transcript]
    assert stamps == sorted(stamps)


def test_a_354_with_more_behind_it_sends_no_content(scripted_smtp_server):
    """A 354 that comes with a reply nobody asked for behind it (RFC 2920 §3.1 replies answer
    commands, one each): the server broke the protocol, so the content does not go, even
    though the 354 line is the one heard before."""

    def script(peer: ScriptPeer) -> None:
        _greet_pipelining(peer)
        for n in range(2):
            for verb in (b"MAIL", b"RCPT", b"DATA"):
                peer.expect(verb)
            peer.send((b"250 queued\r\n" if n else b"") + b"250 ok\r\n250 ok\r\n")
            time.sleep(0.02)
            peer.send(b"354 go\r\n" + (b"250 stray\r\n" if n else b""))
            if not n:
                assert peer.read_data() == WIRE_CONTENT
        assert peer.readline() == b""  # the client closed: no content, no QUIT

    server = scripted_smtp_server(script)
    result = session(server.port, 3)
    assert server.error is None
    assert [m.delivered for m in result.messages] == [True, False, False]
    assert "unexpected data" in result.error and result.messages[1].stage is SmtpStage.CONTENT
    assert sent(result).count(WIRE_CONTENT) == 1


def test_a_354_that_never_comes_times_out_and_keeps_what_was_decided(scripted_smtp_server):
    """The third DATA is never answered: the wait for that 354 is bounded by the timeout
    like any other (no content goes without it, RFC 2920 §3.1); the second message's dot
    was answered before it, so only the third and later are not delivered."""

    def script(peer: ScriptPeer) -> None:
        _greet_pipelining(peer)
        for n in range(3):
            for verb in (b"MAIL", b"RCPT", b"DATA"):
                peer.expect(verb)
            peer.send((b"250 queued\r\n" if n else b"") + b"250 ok\r\n250 ok\r\n")
            if n == 2:
                break
            time.sleep(0.02)
            peer.send(b"354 go\r\n")
            assert peer.read_data() == WIRE_CONTENT
        assert peer.readline() == b""  # nothing more came: no content, no QUIT

    server = scripted_smtp_server(script)
    result = session(server.port, 4, timeout=1.0)
    assert server.error is None
    assert [m.delivered for m in result.messages] == [True, True, False, False]
    third = result.messages[2]
    assert third.stage is SmtpStage.DATA and "no complete reply within 1 s" in third.error
    assert result.messages[3].error.startswith("not sent")
    assert sent(result).count(WIRE_CONTENT) == 2


def _closing_at_third_rcpt(pipelined: bool):
    """A server that accepts two messages, then answers the third RCPT with 421 and closes."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250-x\r\n" + (b"250-PIPELINING\r\n" if pipelined else b"") + b"250 HELP\r\n")
        for n in range(1, 4):
            peer.expect(b"MAIL")
            if not pipelined:
                peer.send(b"250 ok\r\n")
            peer.expect(b"RCPT")
            if n == 3:
                peer.send(
                    b"250 ok\r\n421 4.3.2 going down\r\n" if pipelined else b"421 4.3.2 bye\r\n"
                )
                assert peer.readline() in (b"DATA\r\n", b"")  # pipelined: DATA was in the group
                return
            if pipelined:
                peer.expect(b"DATA")
                peer.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
            else:
                peer.send(b"250 ok\r\n")
                peer.expect(b"DATA")
                peer.send(b"354 go\r\n")
            peer.read_data()
            peer.send(b"250 queued\r\n")  # pipelined: the next group is already on its way

    return script


@pytest.mark.parametrize("pipelined", [True, False])
def test_421_ends_the_session_and_keeps_what_was_decided(pipelined, scripted_smtp_server):
    """RFC 5321 §3.8: after 421 nothing more is sent; messages 1 and 2 stay delivered, the
    third keeps the 421, the rest were never sent."""
    server = scripted_smtp_server(_closing_at_third_rcpt(pipelined))
    result = session(server.port, 5)
    assert [m.delivered for m in result.messages] == [True, True, False, False, False]
    third = result.messages[2]
    assert third.refusal.code == 421 and third.stage is SmtpStage.RCPT
    assert [r.reply.code for r in third.recipients] == [421]
    assert all(m.error.startswith("not sent") for m in result.messages[3:])
    assert result.refusal.code == 421 and "421" in result.error
    assert b"QUIT\r\n" not in sent(result)


def test_a_missing_reply_to_the_last_dot_is_not_delivered(scripted_smtp_server):
    """The last message's content went out but its dot was never answered: not delivered
    (RFC 5321 §4.1.1.4: only the reply to the dot accepts it); the others were."""

    def script(peer: ScriptPeer) -> None:
        peer.send(b"220 x\r\n")
        peer.expect(b"EHLO")
        peer.send(b"250 x\r\n")
        for n in range(2):
            for verb, reply in ((b"MAIL", b"250 ok"), (b"RCPT", b"250 ok"), (b"DATA", b"354 go")):
                peer.expect(verb)
                peer.send(reply + b"\r\n")
            peer.read_data()
            if n == 0:
                peer.send(b"250 queued\r\n")
        peer.readline()  # says nothing more

    result = session(scripted_smtp_server(script).port, 2, timeout=1.0)
    assert [m.delivered for m in result.messages] == [True, False]
    assert "no complete reply within 1 s" in result.messages[1].error
    assert result.messages[1].stage is SmtpStage.CONTENT and result.messages[1].refusal is None
    assert result.delivered == 1


def test_a_session_refused_at_the_greeting_sends_no_message(scripted_smtp_server):
    def script(peer: ScriptPeer) -> None:
        peer.send(b"554 5.3.2 not now\r\n")
        peer.expect(b"QUIT")
        peer.send(b"221 bye\r\n")

    result = session(scripted_smtp_server(script).port, 3)
    assert result.delivered == 0 and result.refusal.code == 554
    assert result.stage is SmtpStage.GREETING
    assert all(m.error.startswith("not sent") and not m.recipients for m in result.messages)


def test_session_over_starttls(smtp_tls_server):
    result = session(smtp_tls_server.port, 3, starttls=True, cafile=smtp_tls_server.cafile)
    assert result.delivered == 3 and result.tls == "starttls"
    assert all(m.tls for m in smtp_tls_server.messages)
    assert smtp_tls_server.connections == 1


# --- the command line: wiretwin smtp --count N ----------------------------------------------


def _argv(port: int, *extra: str) -> list[str]:
    return ["--server", "127.0.0.1", "--port", str(port), "--from", SENDER, "--to", RCPT, *extra]


def test_cli_count_sends_n_copies_and_prints_the_rate(smtp_server, capsys):
    from handrolled.cli import smtp as cli

    assert cli.main(_argv(smtp_server.port, "--count", "4", "--body", "hello")) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(smtp_server.messages) == 4 and smtp_server.connections == 1
    assert len({m.content for m in smtp_server.messages}) == 1  # copies of one message
    assert sum(" MAIL FROM:<sender@wiretwin.test> SIZE=" in line for line in out) == 4
    assert out[-1].startswith("4/4 messages delivered over 1 connection in ")
    assert out[-1].endswith(" messages/s")


def test_cli_count_json_keeps_every_outcome(capsys):
    from handrolled.cli import smtp as cli

    handler = RecordingHandler(refuse_rcpt_in={2})
    with serve_recording(handler) as server:
        status = cli.main(_argv(server.port, "--count", "3", "--json"))
    doc = json.loads(capsys.readouterr().out)
    assert status == 1 == doc["exit_status"]  # a message refused by the server
    assert [m["delivered"] for m in doc["messages"]] == [True, False, True]
    assert doc["messages"][1]["refusal"]["code"] == 550 and doc["delivered_count"] == 2
    assert doc["messages_per_second"] > 0 and doc["connections"] == 1


@pytest.mark.parametrize("count", ["0", "-1", "", "x", "1.5", "nan", "inf", "1e3", "10000001"])
def test_cli_bad_count_is_one_line_and_no_connection(count, smtp_server, capsys):
    from handrolled.cli import smtp as cli

    assert cli.main(_argv(smtp_server.port, "--count", count)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "count" in err[0]
    assert smtp_server.connections == 0


def test_cli_count_only_for_the_handrolled_client(smtp_server, capsys):
    from compare.cli import run_client

    assert run_client("smtp", [*_argv(smtp_server.port, "--count", "2"), "--impl", "smtplib"]) == 2
    assert "--count" in capsys.readouterr().err and smtp_server.connections == 0


def test_421_to_the_last_dot_is_kept_with_the_last_message(scripted_smtp_server):
    """The last content went with QUIT (RFC 2920 §3.1); its dot answered 421 (RFC 5321
    §3.8): that message is not delivered and keeps the reply, the first one is delivered."""

    def script(peer: ScriptPeer) -> None:
        _greet_pipelining(peer)
        for n in range(2):
            for verb in (b"MAIL", b"RCPT", b"DATA"):
                peer.expect(verb)
            peer.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
            peer.read_data()
            peer.send(b"250 queued\r\n" if n == 0 else b"421 4.3.2 shutting down\r\n")
        assert peer.readline() == b"QUIT\r\n"  # in the same write as the content

    result = session(scripted_smtp_server(script).port, 2)
    first, last = result.messages
    assert first.delivered and not last.delivered
    assert last.final_reply.code == 421 and last.refusal.code == 421
    assert last.stage is SmtpStage.CONTENT and result.refusal.code == 421


class _SendFails:
    """A connected socket whose ``send`` raises ConnectionResetError from its n-th call on
    (the peer gone as a group was written); everything else is the real socket's."""

    def __init__(self, sock, fail_at: int) -> None:
        self._sock, self._fail_at, self._calls = sock, fail_at, 0

    def send(self, data) -> int:
        self._calls += 1
        if self._calls >= self._fail_at:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self._sock.send(data)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def test_a_write_that_fails_right_after_a_foreseen_354_ends_the_session_with_that_error():
    """Writes: EHLO, the first group, the first content with the second group, then (after
    the second 354, the one foreseen) the second content with the third group, which fails:
    the error is the reset itself, not a wait for replies to content that never went, and
    the second message is not delivered."""

    def connect(host: str, port: int, timeout: float):
        return _SendFails(socket.create_connection((host, port), timeout=timeout), fail_at=4)

    with serve_recording(RecordingHandler()) as server:
        mail = MailRequest(
            "127.0.0.1", server.port, mail_from=SENDER, recipients=(RCPT,), message=MESSAGE,
            timeout=5.0,
        )  # fmt: skip
        started = time.monotonic()
        result = send_session(MailSessionRequest(mail, 3), connect=connect)
    assert time.monotonic() - started < 4.0  # no wait for a reply that cannot come
    assert "reset" in (result.error or "").lower(), result.error
    assert [m.delivered for m in result.messages] == [True, False, False]
    assert sent(result).count(WIRE_CONTENT) == 1  # only the first content went
    assert len(server.messages) == 1
