"""handrolled.smtp_protocol: the pure SMTP client state machine, fed bytes like h11's tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handrolled import smtp_protocol as sp
from handrolled.errors import LocalProtocolError, RemoteProtocolError
from handrolled.results import Reply
from handrolled.smtp_protocol import (
    NEED_DATA,
    Answer,
    Auth,
    AuthResponse,
    ClientConnection,
    Command,
    ConnectionClosed,
    Content,
    Data,
    Ehlo,
    Helo,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    State,
    Verdict,
)

EHLO_REPLY = (
    b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n"
)


def events(conn: ClientConnection) -> list[object]:
    """Every event the buffered bytes make, up to NEED_DATA or ConnectionClosed."""
    out: list[object] = []
    for _ in range(1000):
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out
    raise AssertionError("next_event() never ran dry")


def feed(conn: ClientConnection, data: bytes, how: str = "whole") -> list[object]:
    """Feed ``data`` whole or byte by byte; collect the events."""
    if how == "whole":
        conn.receive_data(data)
        return events(conn)
    out: list[object] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        out.extend(events(conn))
    return out


def answer(conn: ClientConnection, data: bytes) -> Answer:
    (event,) = feed(conn, data)
    assert isinstance(event, Answer)
    return event


def ready(pipelining: bool = True, ehlo: bytes = EHLO_REPLY) -> ClientConnection:
    conn = ClientConnection(pipelining=pipelining)
    answer(conn, b"220 mx.test ESMTP\r\n")
    conn.send(Ehlo("client.test"))
    answer(conn, ehlo)
    assert conn.state is State.READY
    return conn


# --- purity ---------------------------------------------------------------------------------


# --- commands out: golden bytes (RFC 5321 §4.1.1, upper-case verbs §2.4) ---------------------


def test_command_bytes_golden():
    conn = ready(pipelining=False)
    assert conn.send(MailFrom("a@x.test", ("SIZE=12", "BODY=8BITMIME"))) == (
        b"MAIL FROM:<a@x.test> SIZE=12 BODY=8BITMIME\r\n"
    )
    answer(conn, b"250 ok\r\n")
    assert conn.send(RcptTo("b@y.test")) == b"RCPT TO:<b@y.test>\r\n"
    answer(conn, b"250 ok\r\n")
    assert conn.send(Noop()) == b"NOOP\r\n"
    answer(conn, b"250 ok\r\n")
    assert conn.send(Data()) == b"DATA\r\n"
    answer(conn, b"354 go\r\n")
    assert conn.send(Content(b"Subject: x\n\n.hi\nthere")) == (
        b"Subject: x\r\n\r\n..hi\r\nthere\r\n.\r\n"
    )
    answer(conn, b"250 queued\r\n")
    assert conn.send(Rset()) == b"RSET\r\n"
    answer(conn, b"250 ok\r\n")
    assert conn.send(MailFrom("")) == b"MAIL FROM:<>\r\n"  # the null reverse-path
    answer(conn, b"250 ok\r\n")
    assert conn.send(Quit()) == b"QUIT\r\n"
    answer(conn, b"221 bye\r\n")
    assert conn.state is State.CLOSED


def test_hello_starttls_auth_bytes():
    conn = ClientConnection()
    answer(conn, b"220 hi\r\n")
    assert conn.send(Helo("Alice")) == b"HELO Alice\r\n"
    answer(conn, b"250 hi Alice\r\n")
    assert conn.send(Ehlo("c.test")) == b"EHLO c.test\r\n"
    answer(conn, EHLO_REPLY)
    assert conn.send(StartTls()) == b"STARTTLS\r\n"
    answer(conn, b"220 go ahead\r\n")
    assert conn.state is State.TLS
    conn.tls_established()
    assert conn.state is State.HELLO and conn.extensions == {}  # RFC 3207 §4.2
    conn.send(Ehlo("c.test"))
    answer(conn, EHLO_REPLY)
    assert conn.send(Auth("plain", "AGEAYg==")) == b"AUTH PLAIN AGEAYg==\r\n"
    assert answer(conn, b"235 ok\r\n").verdict is Verdict.OK
    assert conn.state is State.READY


def test_auth_login_challenges():
    conn = ready()
    assert conn.send(Auth("LOGIN")) == b"AUTH LOGIN\r\n"
    assert answer(conn, b"334 VXNlcm5hbWU6\r\n").verdict is Verdict.CHALLENGE
    assert conn.state is State.AUTH_CHALLENGE
    with pytest.raises(LocalProtocolError):
        conn.send(MailFrom("a@x.test"))  # a challenge must be answered
    assert conn.send(AuthResponse("YWxpY2U=")) == b"YWxpY2U=\r\n"
    answer(conn, b"334 UGFzc3dvcmQ6\r\n")
    conn.send(AuthResponse("*"))
    assert answer(conn, b"501 cancelled\r\n").verdict is Verdict.FAIL
    assert conn.state is State.READY


# --- replies in: whole, byte by byte, with trailing data ------------------------------------


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_multiline_ehlo(how):
    conn = ClientConnection()
    feed(conn, b"220 mx.test\r\n", how)
    conn.send(Ehlo("c.test"))
    (event,) = feed(conn, EHLO_REPLY, how)
    assert event.command is Command.EHLO and event.verdict is Verdict.OK
    assert event.reply == Reply(
        250,
        (
            "mx.test greets you",
            "PIPELINING",
            "SIZE 1000",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
            "HELP",
        ),
    )
    assert b"".join(event.raw) == EHLO_REPLY
    assert conn.extensions["SIZE"] == "1000" and conn.extensions["AUTH"] == "PLAIN LOGIN"
    assert conn.pipelining


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_pipelined_replies_arrive_together(how):
    conn = ready()
    wire = b"".join(
        conn.send(e) for e in (MailFrom("a@x.test"), RcptTo("b@x"), RcptTo("c@x"), Data())
    )
    assert wire.count(b"\r\n") == 4
    got = feed(conn, b"250 ok\r\n550 no such user\r\n250 ok\r\n354 go\r\n", how)
    assert [(e.command, e.argument, e.reply.code) for e in got] == [
        (Command.MAIL, "a@x.test", 250),
        (Command.RCPT, "b@x", 550),
        (Command.RCPT, "c@x", 250),
        (Command.DATA, "", 354),
    ]
    assert conn.state is State.CONTENT


def test_trailing_partial_reply_waits():
    conn = ready(pipelining=True)
    conn.send(MailFrom("a@x.test"))
    conn.send(RcptTo("b@x"))
    got = feed(conn, b"250 ok\r\n250-part")
    assert [e.command for e in got] == [Command.MAIL]
    assert conn.next_event() is NEED_DATA
    assert [e.reply.lines for e in feed(conn, b"ial\r\n250 done\r\n")] == [("partial", "done")]


def test_reply_without_text_and_utf8_text():
    conn = ready(pipelining=False)
    conn.send(Noop())
    assert answer(conn, b"250\r\n").reply == Reply(250, ("",))
    conn.send(Noop())
    assert answer(conn, "250 ok \u2713\r\n".encode()).reply.lines == ("ok \u2713",)


# --- the server's errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"HELLO THERE\r\n", "not an SMTP reply"),
        (b"2x0 ok\r\n", "not an SMTP reply"),
        (b"620 ok\r\n", "not an SMTP reply"),
        (b"260 ok\r\n", "not an SMTP reply"),
        (b"220+ok\r\n", "separator"),
        (b"220-one\r\n221 two\r\n", "changed"),
        (b"220 ok\n", "bare LF"),
        (b"\n", "bare LF"),
        (b"220 " + b"x" * 600, "longer than 512"),
        (b"220 " + b"x" * 507 + b"\r\n", "longer than 512"),  # 513 octets with CRLF
        (b"".join(b"220-x\r\n" for _ in range(150)), "longer than 100 lines"),
        (b"220 ok\r\n250 surprise\r\n", "unexpected data"),
    ],
)
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_remote_protocol_errors(wire, match, how):
    conn = ClientConnection()
    with pytest.raises(RemoteProtocolError, match=match):
        feed(conn, wire, how)
    assert conn.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        conn.send(Quit())


def test_longest_legal_reply_line():
    longest = b"250-" + b"y" * 506 + b"\r\n"  # exactly 512 octets (RFC 5321 §4.5.3.1.5)
    assert len(longest) == 512
    conn = ClientConnection()
    answer(conn, b"220 hi\r\n")
    conn.send(Ehlo("c.test"))
    assert answer(conn, longest + b"250 ok\r\n").reply.code == 250


def test_reply_octet_bound():
    conn = ClientConnection()
    line = b"220-" + b"z" * 400 + b"\r\n"
    with pytest.raises(RemoteProtocolError, match="octets"):
        feed(conn, line * 50)


def test_data_when_nothing_is_pending():
    conn = ready()
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        feed(conn, b"250 hello?\r\n")


def test_data_after_starttls_220_is_an_injection():
    conn = ready()
    conn.send(StartTls())
    with pytest.raises(RemoteProtocolError, match="RFC 3207"):
        feed(conn, b"220 go ahead\r\n250 injected\r\n")


def test_tls_established_only_after_220():
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.tls_established()
    conn.send(StartTls())
    answer(conn, b"454 TLS not available\r\n")
    assert conn.state is State.READY


def test_eof_rules():
    conn = ClientConnection()
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed while waiting"):
        conn.next_event()
    conn = ready()
    conn.send(Quit())
    conn.receive_data(b"221 bye\r\n")
    conn.receive_data(b"")
    assert [type(e) for e in events(conn)] == [Answer, ConnectionClosed]
    conn = ready()
    conn.send(Quit())
    conn.receive_data(b"")  # no 221: tolerated after QUIT
    assert isinstance(conn.next_event(), ConnectionClosed)
    conn = ready()
    conn.send(Noop())
    conn.receive_data(b"250 o")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a reply"):
        conn.next_event()
    conn = ready()
    conn.receive_data(b"")  # idle: the server may hang up
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.state is State.CLOSED


def test_421_closes_the_session():
    conn = ready()
    conn.send(MailFrom("a@x.test"))
    conn.send(RcptTo("b@x"))
    event = answer(conn, b"421 4.3.2 shutting down\r\n")
    assert event.verdict is Verdict.FAIL
    assert conn.state is State.CLOSED and conn.pending == []
    with pytest.raises(LocalProtocolError):
        conn.send(Quit())


def test_a_reply_line_heard_again_is_judged_again():
    """The same one-line reply, again and again (a session's 250s and 354s, reused from a
    cache): each answers its own command (RFC 5321 §4.2: the code is judged against what it
    answers, so 354 is OK to DATA and a failure to MAIL), keeps its own argument, and makes
    its transition in the state it arrives in."""
    conn = ready()
    for _ in range(3):
        conn.send_all([MailFrom("a@x.test"), RcptTo("b@x.test"), RcptTo("c@x.test"), Data()])
        mail, rcpt_b, rcpt_c, data = feed(conn, b"250 ok\r\n" * 3 + b"354 go\r\n")
        assert mail.command is Command.MAIL and mail.argument == "a@x.test"
        assert (rcpt_b.argument, rcpt_c.argument) == ("b@x.test", "c@x.test")
        assert rcpt_b.reply == rcpt_c.reply == Reply(250, ("ok",)) and data.verdict is Verdict.OK
        assert conn.state is State.CONTENT and conn.in_transaction
        conn.send(Content(b"hi\r\n"))
        assert answer(conn, b"250 ok\r\n").command is Command.CONTENT
        assert conn.state is State.READY and not conn.in_transaction
    conn.send(MailFrom("a@x.test"))
    refused = answer(conn, b"354 go\r\n")  # the line DATA was answered with, now to MAIL
    assert refused.verdict is Verdict.FAIL and conn.state is State.READY
    conn.send(MailFrom("a@x.test"))
    conn.send(RcptTo("b@x.test"))
    closing = answer(conn, b"421 bye\r\n")  # RFC 5321 §3.8: closing, whatever came before
    assert closing.verdict is Verdict.FAIL and conn.state is State.CLOSED and conn.pending == []


def test_a_group_sent_again_is_judged_again():
    """The same group objects sent again and again (a session; send_all remembers what it
    made of them): the same bytes and moves while the state is the same, and the rules
    again whenever it is not: an open transaction needs RSET first (RFC 5321 §4.1.1.5), and
    without PIPELINING offered nothing goes out before its reply (RFC 2920 §3.1)."""
    conn = ready()
    C = Command
    group = (MailFrom("a@x.test"), RcptTo("b@x.test"), Data())
    body = Content(b"hi\r\n")
    commands = [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@x.test>\r\n", b"DATA\r\n"]
    assert conn.send_all(group) == commands
    for _ in range(3):
        awaited = [command for command, _ in conn.pending]
        assert conn.state is State.DATA_SENT and awaited[-3:] == [C.MAIL, C.RCPT, C.DATA]
        feed(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
        assert conn.send_all((body, *group)) == [b"hi\r\n.\r\n", *commands]  # §4.1.1.4
        assert conn.pending[0] == (Command.CONTENT, "") and conn.state is State.DATA_SENT
        feed(conn, b"250 ok\r\n")
    feed(conn, b"250 ok\r\n250 ok\r\n554 no\r\n")  # DATA refused: MAIL's transaction stays
    assert conn.state is State.READY and conn.in_transaction
    with pytest.raises(LocalProtocolError, match="RSET first"):
        conn.send_all(group)
    assert conn.state is State.READY and conn.pending == []
    conn.send(Rset())
    feed(conn, b"250 ok\r\n")
    conn.send(Ehlo("client.test"))  # the server no longer offers PIPELINING
    feed(conn, b"250-mx.test\r\n250 SIZE 1000\r\n")
    assert conn.state is State.READY and not conn.in_transaction and not conn.pipelining
    with pytest.raises(LocalProtocolError, match="outstanding"):
        conn.send_all(group)
    assert conn.state is State.READY and conn.pending == []


def test_foresee_says_what_may_follow_a_go_ahead_heard_before():
    """foresee(line, events): the bytes send_all(events) returns once exactly ``line``
    arrives, only when the machine has already judged that line a success for the one
    reply awaited and made ``events`` from the state it leads to; it changes nothing.  What
    it foresees after 354 is what RFC 2920 §3.1 lets follow: the content (RFC 5321
    §4.1.1.4), and the next group behind it."""
    conn = ready()
    group = (MailFrom("a@x.test"), RcptTo("b@x.test"), Data())
    follow = (Content(b"hi\r\n"), *group)
    wire = b"hi\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n"
    conn.send_all(group)
    feed(conn, b"250 ok\r\n250 ok\r\n")
    assert conn.foresee(b"354 go\r\n", follow) is None  # never heard: not known
    feed(conn, b"354 go\r\n")
    assert b"".join(conn.send_all(follow)) == wire
    feed(conn, b"250 queued\r\n250 ok\r\n")
    assert conn.foresee(b"354 go\r\n", follow) is None  # RCPT's reply is awaited too
    feed(conn, b"250 ok\r\n")
    before = (conn.state, list(conn.pending), conn.in_transaction, conn.buffered)
    assert conn.foresee(b"354 go\r\n", follow) == wire
    assert conn.foresee(b"354 other text\r\n", follow) is None  # another line
    assert conn.foresee(b"354 go\r\n", (Content(b"hi\r\n"), Quit())) is None  # not made yet
    assert (conn.state, list(conn.pending), conn.in_transaction, conn.buffered) == before
    conn.receive_data(b"354 g")
    assert conn.foresee(b"354 go\r\n", follow) is None  # half a line is buffered
    feed(conn, b"o\r\n")
    assert b"".join(conn.send_all(follow)) == wire  # what was foreseen
    # a refusal heard before is never a go-ahead: 554 to DATA, the content must not go
    feed(conn, b"250 queued\r\n250 ok\r\n250 ok\r\n554 no\r\n")
    reset = (Rset(), *group)
    conn.send_all(reset)  # made in READY, a transaction open
    feed(conn, b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert conn.foresee(b"554 no\r\n", follow) is None
    assert conn.foresee(b"354 go\r\n", follow) == wire  # from the same state as before
    # only DATA's go-ahead is foreseen: the dot's reply leads to READY and ends the
    # transaction (RFC 5321 §3.3), so the group made in READY with a transaction open says
    # nothing of what may follow it
    feed(conn, b"354 go\r\n")
    conn.send(Content(b"hi\r\n"))
    assert conn.in_transaction and conn.foresee(b"250 queued\r\n", reset) is None


def test_refused_greeting_allows_only_quit():
    conn = ClientConnection()
    assert answer(conn, b"554 no service\r\n").verdict is Verdict.FAIL
    assert conn.state is State.REFUSED
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo("c.test"))
    assert conn.send(Quit()) == b"QUIT\r\n"


def test_ehlo_refused_then_helo():
    conn = ClientConnection()
    answer(conn, b"220 old\r\n")
    conn.send(Ehlo("c.test"))
    answer(conn, b"502 what\r\n")
    assert conn.state is State.HELLO
    conn.send(Helo("c.test"))
    answer(conn, b"250 old\r\n")
    assert conn.state is State.READY and conn.extensions == {} and not conn.pipelining


# --- our errors: refused before a byte is produced ------------------------------------------


@pytest.mark.parametrize("bad", ["a\r@x.test", "a\n@x.test", "a\0@x.test", "a@x>", "<a@x", "a b@x"])
def test_bad_addresses_refused(bad):
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send(MailFrom(bad))
    with pytest.raises(LocalProtocolError):
        conn.send(RcptTo(bad))
    assert conn.state is State.READY and conn.pending == []


@pytest.mark.parametrize("bad", ["", "a b", "a\r\nMAIL FROM:<x>", "a\0", "h\u00e9llo"])
def test_bad_helo_names_refused(bad):
    conn = ClientConnection()
    answer(conn, b"220 hi\r\n")
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo(bad))
    assert conn.state is State.HELLO


def test_auth_data_must_be_one_line():
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.send(Auth("PLAIN", "AG\r\nRSET"))
    with pytest.raises(LocalProtocolError):
        conn.send(Auth("PL AIN"))


def test_extensions_must_be_offered():
    conn = ready(ehlo=b"250-mx\r\n250 HELP\r\n")
    for param in ("SIZE=10", "BODY=8BITMIME", "SMTPUTF8"):
        with pytest.raises(LocalProtocolError, match="offer"):
            conn.send(MailFrom("a@x.test", (param,)))


def test_utf8_addresses_need_smtputf8():
    conn = ready(pipelining=False)
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send(MailFrom("j\u00f6rg@x.test"))
    conn.send(MailFrom("a@x.test"))
    answer(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send(RcptTo("\u7528\u6237@\u4f8b\u5b50.test"))
    conn.send(Rset())
    answer(conn, b"250 ok\r\n")
    wire = conn.send(MailFrom("j\u00f6rg@x.test", ("SMTPUTF8",)))
    assert wire == "MAIL FROM:<j\u00f6rg@x.test> SMTPUTF8\r\n".encode()
    answer(conn, b"250 ok\r\n")
    assert conn.send(RcptTo("\u7528@x.test")) == "RCPT TO:<\u7528@x.test>\r\n".encode()


def test_8bit_content_needs_body_8bitmime():
    conn = ready(pipelining=False)
    conn.send(MailFrom("a@x.test"))
    answer(conn, b"250 ok\r\n")
    conn.send(RcptTo("b@x.test"))
    answer(conn, b"250 ok\r\n")
    conn.send(Data())
    answer(conn, b"354 go\r\n")
    with pytest.raises(LocalProtocolError, match="8BITMIME"):
        conn.send(Content("caf\u00e9".encode()))
    with pytest.raises(LocalProtocolError, match="998"):
        conn.send(Content(b"x" * 999))
    assert conn.state is State.CONTENT
    conn.send(Content(b"x" * 998))


def test_command_line_length_limit():
    conn = ready()
    with pytest.raises(LocalProtocolError, match="limit"):
        conn.send(MailFrom("a" * 500 + "@x.test"))


# --- the transition table -------------------------------------------------------------------

SENDABLE = [
    Ehlo("c.test"),
    Helo("c.test"),
    StartTls(),
    Auth("PLAIN"),
    AuthResponse("YQ=="),
    MailFrom("a@x.test"),
    RcptTo("b@x.test"),
    Data(),
    Content(b"hi"),
    Rset(),
    Noop(),
    Quit(),
]


# What the RFCs forbid a client to send in each state, written from the RFCs (not from
# smtp_protocol.TRANSITIONS, which is the code under test).  Everything else the state machine
# may allow or refuse; these must be refused, and a refusal changes nothing.
_ALL = {e.command for e in SENDABLE}
_IN_TRANSACTION = {
    Command.MAIL,  # RFC 5321 §4.1.1.2 / §4.1.4: no MAIL inside a transaction (503)
    Command.CONTENT,  # §4.1.1.4: message content only after DATA's 354
    Command.AUTH_RESPONSE,  # RFC 4954 §4: a response line answers a 334 only
    Command.AUTH,  # RFC 4954 §4: AUTH is not permitted during a mail transaction
}
RFC_FORBIDDEN: dict[State, set[Command]] = {
    # RFC 5321 §3.1: after a 554 greeting the client may only QUIT
    State.REFUSED: _ALL - {Command.QUIT},
    # §4.1.4: a session with mail is opened by EHLO/HELO; RFC 4954 §4 and RFC 3207 §4 need
    # EHLO's offer for AUTH and STARTTLS
    State.HELLO: {
        Command.MAIL, Command.RCPT, Command.DATA, Command.CONTENT, Command.AUTH,
        Command.AUTH_RESPONSE, Command.STARTTLS,
    },
    # §4.1.4: RCPT needs a MAIL, DATA a RCPT; content and AUTH responses need 354 / 334
    State.READY: {Command.RCPT, Command.DATA, Command.CONTENT, Command.AUTH_RESPONSE},
    # RFC 3207 §4.2: after the 220 the client starts the TLS handshake before anything else
    State.TLS: set(_ALL),
    # RFC 4954 §4: a 334 is answered by a response line (base64 or "*") and nothing else
    State.AUTH_CHALLENGE: _ALL - {Command.AUTH_RESPONSE},
    # §4.1.1.4: DATA with no recipient accepted is out of sequence (503 / 554)
    State.MAIL_SENT: _IN_TRANSACTION | {Command.DATA},
    State.RCPT_SENT: set(_IN_TRANSACTION),
    # §4.1.1.4 / §3.3: after the 354 the client sends the message and its end, nothing else
    State.CONTENT: _ALL - {Command.CONTENT},
}  # fmt: skip


def test_every_send_the_rfcs_forbid_is_refused():
    """Walk the states; each send the RFCs forbid there raises and changes nothing."""
    reached: dict[State, ClientConnection] = {}

    def snapshot(conn: ClientConnection) -> None:
        reached.setdefault(conn.state, conn)

    scripts: list[list[tuple[object, bytes]]] = [
        [],
        [(Ehlo("c"), b"502 no\r\n")],
        [(Ehlo("c"), b"502 no\r\n"), (Helo("c"), b"250 ok\r\n")],
        [(StartTls(), b"220 go\r\n")],
        [(Auth("LOGIN"), b"334 VXNlcm5hbWU6\r\n")],
        [(MailFrom("a@x"), b"250 ok\r\n")],
        [(MailFrom("a@x"), b"250 ok\r\n"), (RcptTo("b@x"), b"250 ok\r\n")],
        [(MailFrom("a@x"), b"250 ok\r\n"), (RcptTo("b@x"), b"250 ok\r\n"), (Data(), b"354\r\n")],
    ]
    for script in scripts:
        conn = ClientConnection(pipelining=False)
        answer(conn, b"220 hi\r\n")
        if script[:1] != [(Ehlo("c"), b"502 no\r\n")]:
            conn.send(Ehlo("c"))
            answer(conn, EHLO_REPLY)
        for event, reply in script:
            conn.send(event)
            answer(conn, reply)
        snapshot(conn)
    refused = ClientConnection()
    answer(refused, b"554 go away\r\n")
    snapshot(refused)
    assert set(RFC_FORBIDDEN) <= set(reached), set(RFC_FORBIDDEN) - set(reached)
    checked = 0
    for state, forbidden in RFC_FORBIDDEN.items():
        conn = reached[state]
        for event in SENDABLE:
            if event.command not in forbidden:
                continue
            before = (conn.state, list(conn.pending))
            with pytest.raises(LocalProtocolError):
                conn.send(event)
            assert (conn.state, conn.pending) == before, (state, event)
            checked += 1
    assert checked >= 40


def test_pipelining_rules():
    plain = ready(pipelining=False)
    plain.send(MailFrom("a@x.test"))
    with pytest.raises(LocalProtocolError, match="outstanding"):
        plain.send(RcptTo("b@x.test"))  # RFC 2920 not negotiated: wait for each reply

    piped = ready(pipelining=True)
    piped.send(MailFrom("a@x.test"))
    piped.send(RcptTo("b@x.test"))
    piped.send(Data())
    with pytest.raises(LocalProtocolError):
        piped.send(Content(b"x"))  # DATA ends the group (RFC 2920 §3.1)
    with pytest.raises(LocalProtocolError):
        piped.send(Noop())

    offered_but_off = ready(pipelining=False)
    assert "PIPELINING" in offered_but_off.extensions and not offered_but_off.pipelining


def test_pipelined_group_with_failed_mail():
    """MAIL refused inside a group: RCPT and DATA get 503s, the DATA reply decides."""
    conn = ready()
    for e in (MailFrom("a@x.test"), RcptTo("b@x.test"), Data()):
        conn.send(e)
    got = feed(conn, b"550 sender refused\r\n503 need MAIL\r\n503 need RCPT\r\n")
    assert [e.verdict for e in got] == [Verdict.FAIL] * 3
    assert conn.state is State.READY and conn.mail_params == ()


# --- codecs ---------------------------------------------------------------------------------


def test_seed_body_bytes():
    """The seed's "\\r\\n My message" then "\\r\\n.\\r\\n" is exactly encode_data's output."""
    assert sp.encode_data(b"\r\n My message") == b"\r\n My message" + b"\r\n.\r\n"


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\rb\r\nc\n", b"a\r\nb\r\nc\r\n.\r\n"),
        (b"..x\n\n", b"...x\r\n\r\n.\r\n"),
    ],
)
def test_encode_data_golden(message, wire):
    assert sp.encode_data(message) == wire


line_text = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(st.binary(max_size=300))
def test_data_size_counts_what_is_sent(message):
    """RFC 1870 §4: SIZE is the octets after 354, without dot-stuffing or the final dot."""
    assert sp.data_size(message) == len(sp.decode_data(sp.encode_data(message)))


@given(st.lists(line_text, max_size=20), st.sampled_from([b"\r\n", b"\n", b"\r"]))
def test_encode_decode_roundtrip(lines, ending):
    message = ending.join(lines)
    wire = sp.encode_data(message)
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    # no body line is a lone dot, so the server cannot end early (RFC 5321 §4.5.2)
    assert all(line != b"." for line in body.split(b"\r\n")[:-1])
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert b"\r" not in body.replace(b"\r\n", b"")
    expected = b"".join(line + b"\r\n" for line in lines)
    if lines and lines[-1] == b"":
        expected = expected[:-2]
    assert sp.decode_data(wire) == expected


reply_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40
)


@given(
    st.integers(200, 559).filter(lambda c: c % 100 < 60),
    st.lists(reply_text, min_size=1, max_size=8),
)
def test_reply_roundtrip(code, lines):
    wire = sp.encode_reply(Reply(code, tuple(lines)))
    assert sp.decode_reply(wire) == Reply(code, tuple(lines))


def test_decode_reply_rejects_trailing_and_partial():
    with pytest.raises(RemoteProtocolError, match="trailing"):
        sp.decode_reply(b"250 ok\r\n250 more\r\n")
    with pytest.raises(RemoteProtocolError, match="incomplete"):
        sp.decode_reply(b"250-ok\r\n")


# Whole reply lines a server might send, mixed with arbitrary bytes, so the fuzzing reaches past
# the greeting into EHLO, the transaction, AUTH challenges and 421.
REPLY_LINES = [
    b"220 mx.test ESMTP\r\n",
    b"250-mx.test\r\n",
    b"250-PIPELINING\r\n",
    b"250-SIZE 1000\r\n",
    b"250 ok\r\n",
    b"251 forwarding\r\n",
    b"334 VXNlcm5hbWU6\r\n",
    b"354 go ahead\r\n",
    b"421 4.3.2 closing\r\n",
    b"451 later\r\n",
    b"550 no\r\n",
    b"221 bye\r\n",
]
# What the driver sends next in each state, once the last reply is in.
NEXT = {
    State.HELLO: Ehlo("c.test"),
    State.READY: MailFrom("a@x.test"),
    State.MAIL_SENT: RcptTo("b@x.test"),
    State.RCPT_SENT: Data(),
    State.CONTENT: Content(b"hi\r\n"),
    State.REFUSED: Quit(),
}
# The reply that moves the dialogue on, for the command waiting for one.
GOOD = {
    Command.GREETING: b"220 mx.test ESMTP\r\n",
    Command.EHLO: b"250-mx.test\r\n250 SIZE 1000\r\n",
    Command.MAIL: b"250 ok\r\n",
    Command.RCPT: b"250 ok\r\n",
    Command.DATA: b"354 go ahead\r\n",
    Command.CONTENT: b"250 queued\r\n",
    Command.RSET: b"250 ok\r\n",
    Command.QUIT: b"221 bye\r\n",
}
_line = st.sampled_from(REPLY_LINES)
_noise = (
    _line
    | st.binary(max_size=40)
    | st.lists(_line | st.binary(max_size=40), min_size=2, max_size=3).map(b"".join)
)


@settings(max_examples=300)
@given(st.data(), st.integers(1, 64), st.booleans())
def test_arbitrary_bytes_never_hang_or_crash(data, chunk, eof):
    """Any byte stream gives answers, NEED_DATA, ConnectionClosed or RemoteProtocolError;
    buffers stay bounded; a driver answering every reply never gets stuck.  The server's
    turns are drawn as it goes: the reply that moves on, a reply line, or arbitrary bytes."""
    conn = ClientConnection(pipelining=False)
    try:
        for n in range(12):
            if eof and n == 11:
                pieces = [b""]  # the server closes
            else:
                good = GOOD.get(conn.pending[0][0], b"") if conn.pending else b""
                turn = data.draw(st.just(good) | _noise)
                pieces = [turn[i : i + chunk] for i in range(0, len(turn), chunk)]
            for piece in pieces:
                conn.receive_data(piece)
                for _ in range(1000):
                    event = conn.next_event()
                    if event is NEED_DATA or isinstance(event, ConnectionClosed):
                        break
                    assert isinstance(event, Answer)
                    if not conn.pending and conn.in_transaction and conn.state is State.READY:
                        conn.send(Rset())  # RFC 5321 §4.1.1.5: a refused DATA left it open
                    elif not conn.pending and conn.state in NEXT:
                        conn.send(NEXT[conn.state])
                else:
                    raise AssertionError("next_event() never ran dry")
                assert conn.buffered <= sp.MAX_REPLY_LINE + chunk
            if conn.state is State.CLOSED:
                break
    except RemoteProtocolError:
        assert conn.state is State.ERROR


def test_can_send_follows_the_transition_table():
    conn = ClientConnection()
    assert not conn.can_send(Command.QUIT)  # waiting for the greeting
    answer(conn, b"220 mx.test\r\n")
    assert conn.can_send(Command.QUIT) and conn.can_send(Command.EHLO)
    assert not conn.can_send(Command.MAIL)
    quit_allowed = set()
    for state in State:
        conn.state = state
        if conn.can_send(Command.QUIT):
            quit_allowed.add(state)
    assert quit_allowed == {
        State.REFUSED,
        State.HELLO,
        State.READY,
        State.MAIL_SENT,
        State.RCPT_SENT,
        State.CONTENT_SENT,  # RFC 2920 §3.1: QUIT may end the group the content opens
    }


def test_unexpected_reply_is_caught_before_the_next_command():
    """A stray line after a complete reply must not be taken as the next command's reply."""
    conn = ready(pipelining=False)
    conn.send(Noop())
    conn.receive_data(b"250 ok\r\n250 nobody asked\r\n")
    assert conn.next_event().reply.lines == ("ok",)
    with pytest.raises(RemoteProtocolError, match="unexpected data"):
        conn.send(MailFrom("a@x.test"))
    assert conn.state is State.ERROR


# --- sessions: transactions back to back (RFC 5321 §3.3), pipelined across (RFC 2920 §3.1) ---
# Expectations from the RFC text, quoted where the test relies on it.


def _through_data(conn: ClientConnection, replies: bytes) -> None:
    for e in (MailFrom("a@x.test"), RcptTo("b@x.test"), Data()):
        conn.send(e)
        if not conn.pipelining:
            answer(conn, replies.split(b"\r\n")[0] + b"\r\n")
            replies = replies.split(b"\r\n", 1)[1]
    if conn.pipelining:
        feed(conn, replies)
    assert conn.state is State.CONTENT


@pytest.mark.parametrize("dot_reply", [b"250 2.0.0 queued\r\n", b"554 5.7.1 refused\r\n"])
def test_mail_again_after_the_final_dot_without_rset(dot_reply):
    """RFC 5321 §4.1.1.4: after the end of mail data the receiver "clears the buffers" and
    §3.3: a transaction "ends" with the reply to the dot, accepted or not; the next MAIL
    starts a new one, no RSET needed (§4.1.1.5 RSET is for aborting a transaction)."""
    conn = ready(pipelining=False)
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(Content(b"one\r\n"))
    assert answer(conn, dot_reply).command is Command.CONTENT
    assert conn.send(MailFrom("a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"
    answer(conn, b"250 ok\r\n")
    conn.send(RcptTo("b@x.test"))
    answer(conn, b"250 ok\r\n")
    conn.send(Data())
    answer(conn, b"354 go\r\n")
    assert conn.send(Content(b"two\r\n")) == b"two\r\n.\r\n"
    assert answer(conn, b"250 ok\r\n").verdict is Verdict.OK


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_the_content_opens_the_next_group(how):
    """RFC 2920 §3.1: "The actual transfer of message content is explicitly allowed to be the
    first 'command' in a group": content, MAIL, RCPT, DATA go out before any reply, and the
    replies come back in that order, the dot's first."""
    conn = ready()
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire = b"".join(
        conn.send(e) for e in (Content(b"one\r\n"), MailFrom("a@x.test"), RcptTo("b@x"), Data())
    )
    assert wire == b"one\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
    got = feed(conn, b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n", how)
    assert [(e.command, e.reply.code) for e in got] == [
        (Command.CONTENT, 250),
        (Command.MAIL, 250),
        (Command.RCPT, 250),
        (Command.DATA, 354),
    ]
    assert conn.state is State.CONTENT  # the second message's content may go now


def test_a_refused_dot_inside_a_group_leaves_the_next_transaction_alone():
    """RFC 5321 §4.1.1.4: a failed message still ends its transaction; the MAIL after it in
    the same group opens the next one."""
    conn = ready()
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    for e in (Content(b"one\r\n"), MailFrom("a@x.test"), RcptTo("b@x"), Data()):
        conn.send(e)
    got = feed(conn, b"554 no\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [e.verdict for e in got] == [Verdict.FAIL, Verdict.OK, Verdict.OK, Verdict.OK]
    assert conn.state is State.CONTENT


def test_without_pipelining_the_next_mail_waits_for_the_dots_reply():
    """RFC 2920 §3.1 applies only when the server offered PIPELINING (RFC 2920 §2); without
    it each command waits for its reply (RFC 5321 §4.1)."""
    conn = ready(pipelining=False)
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(Content(b"one\r\n"))
    with pytest.raises(LocalProtocolError, match="outstanding"):
        conn.send(MailFrom("a@x.test"))
    assert conn.pending == [(Command.CONTENT, "")]


def test_nothing_but_mail_or_quit_follows_the_content_in_a_group():
    """RFC 2920 §3.1: DATA "can only appear as the last command in a group" (its 354 must be
    seen before content); RCPT needs a MAIL first (RFC 5321 §4.1.1.3)."""
    conn = ready()
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(Content(b"one\r\n"))
    for event in (Data(), RcptTo("b@x"), Content(b"two\r\n"), Ehlo("c.test"), Noop()):
        with pytest.raises(LocalProtocolError):
            conn.send(event)
    conn.send(MailFrom("a@x.test"))
    conn.send(RcptTo("b@x"))
    conn.send(Data())
    with pytest.raises(LocalProtocolError):
        conn.send(MailFrom("a@x.test"))  # DATA ended the group


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_the_content_then_quit_in_one_group(how):
    """RFC 2920 §3.1: QUIT "can only appear as the last command in a group": the last
    message's content and QUIT go together; the dot is answered first, then 221."""
    conn = ready()
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire = conn.send(Content(b"last\r\n")) + conn.send(Quit())
    assert wire == b"last\r\n.\r\nQUIT\r\n"
    with pytest.raises(LocalProtocolError):
        conn.send(MailFrom("a@x.test"))  # nothing after QUIT (RFC 5321 §4.1.1.10)
    got = feed(conn, b"250 queued\r\n221 bye\r\n", how)
    assert [(e.command, e.reply.code) for e in got] == [(Command.CONTENT, 250), (Command.QUIT, 221)]
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_eof_before_the_dots_reply_after_content_and_quit_is_an_error():
    """RFC 5321 §3.8/§4.1.1.10: the server may close after QUIT, but the dot's reply comes
    before QUIT's; EOF without it leaves the message undecided: an error, not "closed"."""
    conn = ready()
    _through_data(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.send(Content(b"last\r\n"))
    conn.send(Quit())
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="content"):
        conn.next_event()


def test_send_all_is_all_or_nothing():
    conn = ready()
    before = (conn.state, list(conn.pending), conn.mail_params)
    with pytest.raises(LocalProtocolError):
        conn.send_all([MailFrom("a@x.test", ("SIZE=10",)), RcptTo("b@x"), RcptTo("x" * 600)])
    assert (conn.state, conn.pending, conn.mail_params) == before
    wires = conn.send_all([MailFrom("a@x.test"), RcptTo("b@x"), Data()])
    assert b"".join(wires) == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x>\r\nDATA\r\n"


def test_encoding_follows_the_extensions():
    """What may be sent depends on the latest EHLO (RFC 3207 §4.2: forgotten after TLS): an
    encoding allowed before must be refused once the extension is gone."""
    conn = ready()
    assert conn.send(MailFrom("a@x.test", ("SIZE=10",))).endswith(b"SIZE=10\r\n")
    conn.receive_data(b"250 ok\r\n")
    conn.next_event()
    conn.send(Rset())
    answer(conn, b"250 ok\r\n")
    conn.send(Ehlo("c.test"))
    answer(conn, b"250 mx.test\r\n")  # no SIZE now
    with pytest.raises(LocalProtocolError, match="SIZE"):
        conn.send(MailFrom("a@x.test", ("SIZE=10",)))


def test_a_refused_data_leaves_the_transaction_open_until_rset():
    """RFC 5321 §3.3: only the end of data (or RSET, §4.1.1.5; or EHLO, §4.1.4) ends a
    transaction MAIL opened; after DATA is refused a new MAIL would be nested."""
    for pipelining in (False, True):
        conn = ready(pipelining=pipelining)
        for e in (MailFrom("a@x.test"), RcptTo("b@x"), Data()):
            conn.send(e)
            if not pipelining:
                answer(conn, b"554 no\r\n" if isinstance(e, Data) else b"250 ok\r\n")
        if pipelining:
            feed(conn, b"250 ok\r\n250 ok\r\n554 no valid recipients\r\n")
        assert conn.in_transaction
        with pytest.raises(LocalProtocolError, match="RSET first"):
            conn.send(MailFrom("a@x.test"))
        if pipelining:  # RFC 2920 §3.1: RSET may open the group
            wire = b"".join(conn.send(e) for e in (Rset(), MailFrom("a@x.test"), RcptTo("b@x")))
            assert wire == b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x>\r\n"
            got = feed(conn, b"250 flushed\r\n250 ok\r\n250 ok\r\n")
            assert [e.command for e in got] == [Command.RSET, Command.MAIL, Command.RCPT]
        else:
            conn.send(Rset())
            answer(conn, b"250 flushed\r\n")
            assert not conn.in_transaction
            conn.send(MailFrom("a@x.test"))


def test_a_refused_mail_opens_no_transaction():
    """RFC 5321 §4.1.1.2: a refused MAIL starts nothing: the next MAIL needs no RSET."""
    conn = ready(pipelining=False)
    conn.send(MailFrom("a@x.test"))
    answer(conn, b"550 no\r\n")
    assert not conn.in_transaction
    assert conn.send(MailFrom("a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"


# --- the transition table against the RFCs' own words ----------------------------------------

C_ = Command
# What a client may send in each state, from the RFC text (not from TRANSITIONS).
RFC_PERMITTED: dict[State, set[Command]] = {
    State.GREETING: set(),  # RFC 5321 §3.1: wait for the greeting
    State.REFUSED: {C_.QUIT},  # §3.1: after a 554 greeting the client SHOULD send QUIT
    # §4.1.4: a session opens with EHLO/HELO; NOOP, RSET and QUIT may come at any time
    State.HELLO: {C_.EHLO, C_.HELO, C_.NOOP, C_.RSET, C_.QUIT},
    State.HELLO_SENT: set(),  # RFC 2920 §3.1: EHLO only ends a group; wait for its reply
    # §4.1.4 (a new EHLO resets), RFC 3207 §4, RFC 4954 §4, §3.3 (MAIL opens a transaction)
    State.READY: {C_.EHLO, C_.HELO, C_.STARTTLS, C_.AUTH, C_.MAIL, C_.RSET, C_.NOOP, C_.QUIT},
    State.STARTTLS_SENT: set(),  # RFC 3207 §4: wait for 220
    State.TLS: set(),  # RFC 3207 §4.2: the handshake comes first
    State.AUTH_SENT: set(),  # RFC 4954 §4: wait for 334 or the outcome
    State.AUTH_CHALLENGE: {C_.AUTH_RESPONSE},  # RFC 4954 §4: answer it, or "*" to cancel
    # §3.3: RCPT follows MAIL; RFC 2920 §3.1: MAIL and RCPT may be followed within a group
    State.MAIL_SENT: {C_.RCPT, C_.RSET, C_.NOOP, C_.QUIT},
    State.RCPT_SENT: {C_.RCPT, C_.DATA, C_.RSET, C_.NOOP, C_.QUIT},
    State.DATA_SENT: set(),  # RFC 2920 §3.1: DATA ends a group; the 354 must be seen
    State.CONTENT: {C_.CONTENT},  # §4.1.1.4: after 354 everything is mail data to the dot
    # RFC 2920 §3.1: the content may open a group; EHLO, NOOP and QUIT only end one
    State.CONTENT_SENT: {C_.MAIL, C_.RSET, C_.EHLO, C_.HELO, C_.NOOP, C_.QUIT},
    State.QUIT_SENT: set(),  # §4.1.1.10: nothing after QUIT
    State.CLOSED: set(),
    State.ERROR: set(),
}
# The moves a client that sends mail needs, from the same texts.
RFC_NEEDED: dict[State, set[Command]] = {
    State.REFUSED: {C_.QUIT},
    State.HELLO: {C_.EHLO, C_.HELO, C_.QUIT},  # §3.2: HELO when EHLO is refused
    State.READY: {C_.STARTTLS, C_.AUTH, C_.MAIL, C_.QUIT, C_.EHLO},  # RFC 3207 §4.2: EHLO again
    State.AUTH_CHALLENGE: {C_.AUTH_RESPONSE},
    State.MAIL_SENT: {C_.RCPT, C_.RSET, C_.QUIT},
    State.RCPT_SENT: {C_.RCPT, C_.DATA, C_.RSET, C_.QUIT},
    State.CONTENT: {C_.CONTENT},
    State.CONTENT_SENT: {C_.MAIL, C_.QUIT},  # §3.3: the next transaction needs no RSET
}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_the_table_allows_only_what_the_rfcs_permit_and_all_a_client_needs(state):
    conn = ClientConnection()
    conn.state = state
    allowed = {c for c in Command if conn.can_send(c)}
    assert allowed <= RFC_PERMITTED[state], allowed - RFC_PERMITTED[state]
    assert RFC_NEEDED.get(state, set()) <= allowed, RFC_NEEDED[state] - allowed
