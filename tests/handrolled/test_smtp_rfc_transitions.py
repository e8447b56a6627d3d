"""The SMTP client state machine against RFC 5321 §4.3.2, §3.3, §4.1.4, RFC 3207 and RFC 2920.

Every expectation here is copied from the RFC text (quoted or cited beside it), never from
``smtp_protocol.TRANSITIONS`` or the reply-code sets in the module, so a wrong entry in the
table fails a test instead of being read back as the expectation.
"""

from __future__ import annotations

import pytest

from handrolled.errors import LocalProtocolError
from handrolled.smtp_protocol import (
    NEED_DATA,
    Answer,
    ClientConnection,
    Command,
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
    Verdict,
)

PIPELINED_EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
PLAIN_EHLO = b"250-mx.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n"  # no PIPELINING


def answers(conn: ClientConnection, wire: bytes) -> list[Answer]:
    conn.receive_data(wire)
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, Answer), event
        out.append(event)
    return out


def one(conn: ClientConnection, wire: bytes) -> Answer:
    (answer,) = answers(conn, wire)
    return answer


def greeted(pipelining: bool = False) -> ClientConnection:
    conn = ClientConnection(pipelining=pipelining)
    assert one(conn, b"220 mx.test ESMTP\r\n").verdict is Verdict.OK
    return conn


def ready(ehlo: bytes = PLAIN_EHLO, pipelining: bool = False) -> ClientConnection:
    conn = greeted(pipelining)
    conn.send(Ehlo("client.test"))
    assert one(conn, ehlo).verdict is Verdict.OK
    return conn


def refused(conn: ClientConnection, event) -> None:
    with pytest.raises(LocalProtocolError):
        conn.send(event)


# ---- RFC 5321 §4.3.2: command-reply sequences ----------------------------------------------
# "S" success and "I" intermediate replies are OK; "E" replies are failures.  "Since ... 500
# (syntax error) [and] 501 (argument error) ... may be returned by any command" they are added
# to every command's failures.
RFC5321_4_3_2 = {
    Command.GREETING: ({220}, {554}),  # CONNECTION ESTABLISHMENT
    Command.EHLO: ({250}, {504, 550, 502}),  # EHLO or HELO
    Command.HELO: ({250}, {504, 550, 502}),
    Command.MAIL: ({250}, {552, 451, 452, 550, 553, 503, 455, 555}),
    Command.RCPT: ({250, 251}, {550, 551, 552, 553, 450, 451, 452, 503, 455, 555}),
    Command.DATA: ({354}, {503, 554}),  # I: 354 -> data
    Command.CONTENT: ({250}, {552, 554, 451, 452, 450, 550}),  # ... -> data -> S / E
    Command.RSET: ({250}, set()),
    Command.NOOP: ({250}, set()),
    Command.QUIT: ({221}, set()),
}


def _sent(command: Command) -> ClientConnection:
    """A connection (no pipelining) that has just sent ``command`` and awaits its reply."""
    if command is Command.GREETING:
        return ClientConnection(pipelining=False)
    if command in (Command.EHLO, Command.HELO):
        conn = greeted()
        conn.send(Ehlo("client.test") if command is Command.EHLO else Helo("client.test"))
        return conn
    conn = ready()
    steps = {
        Command.MAIL: [MailFrom("a@x.test")],
        Command.RCPT: [MailFrom("a@x.test"), RcptTo("b@x.test")],
        Command.DATA: [MailFrom("a@x.test"), RcptTo("b@x.test"), Data()],
        Command.CONTENT: [MailFrom("a@x.test"), RcptTo("b@x.test"), Data(), Content(b"Hi\r\n")],
        Command.RSET: [Rset()],
        Command.NOOP: [Noop()],
        Command.QUIT: [Quit()],
    }[command]
    ok = {Command.MAIL: b"250 ok\r\n", Command.RCPT: b"250 ok\r\n", Command.DATA: b"354 go\r\n"}
    for event in steps[:-1]:
        conn.send(event)
        one(conn, ok[event.command])
    conn.send(steps[-1])
    return conn


CASES = [
    (command, code, verdict)
    for command, (good, bad) in RFC5321_4_3_2.items()
    for code, verdict in [(c, Verdict.OK) for c in sorted(good)]
    + [(c, Verdict.FAIL) for c in sorted(bad | {500, 501})]
    if not (command is Command.GREETING and code in (500, 501))
]


@pytest.mark.parametrize(
    ("command", "code", "verdict"), CASES, ids=[f"{c.value}-{n}" for c, n, _ in CASES]
)
def test_reply_codes_classified_as_rfc5321_4_3_2(command, code, verdict) -> None:
    conn = _sent(command)
    answer = one(conn, f"{code} text\r\n".encode())
    assert (answer.command, answer.reply.code, answer.verdict) == (command, code, verdict)


@pytest.mark.parametrize("code", [554])
def test_refused_greeting_leaves_only_quit(code: int) -> None:
    """§3.1: "If [the server] responds with 554 ... the client SHOULD send QUIT"; nothing
    else makes sense on a session that was never opened."""
    conn = ClientConnection(pipelining=False)
    one(conn, f"{code} no service\r\n".encode())
    for event in (Ehlo("c.test"), Helo("c.test"), MailFrom("a@x.test"), Noop()):
        refused(conn, event)
    assert conn.send(Quit()) == b"QUIT\r\n"


def test_nothing_is_sent_before_the_greeting() -> None:
    """§3.1: the client waits for the server's opening 220 before its first command."""
    conn = ClientConnection(pipelining=False)
    for event in (Ehlo("c.test"), Helo("c.test"), MailFrom("a@x.test"), Noop(), Quit()):
        refused(conn, event)


@pytest.mark.parametrize("code", [502, 504, 550, 500])
def test_refused_ehlo_falls_back_to_helo(code: int) -> None:
    """§3.2: a server that refuses EHLO ("command not recognized") gets HELO; until a hello
    succeeds no mail transaction may start (§4.1.4: "a client MUST issue HELO or EHLO before
    starting a mail transaction")."""
    conn = greeted()
    conn.send(Ehlo("client.test"))
    assert one(conn, f"{code} no\r\n".encode()).verdict is Verdict.FAIL
    refused(conn, MailFrom("a@x.test"))
    assert conn.send(Helo("client.test")) == b"HELO client.test\r\n"
    assert one(conn, b"250 mx.test\r\n").verdict is Verdict.OK
    assert conn.send(MailFrom("a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"


# ---- RFC 5321 §3.3 / §4.1.4: the mail transaction's order ----------------------------------
def test_mail_needs_a_hello_first() -> None:
    """§4.1.4: "a client MUST issue HELO or EHLO before starting a mail transaction"."""
    refused(greeted(), MailFrom("a@x.test"))


def test_transaction_order_mail_rcpt_data() -> None:
    """§3.3 / §4.1.4: "a mail transaction consists of a transaction beginning command, one or
    more RCPT commands, and a DATA command, in that order"."""
    conn = ready()
    refused(conn, RcptTo("b@x.test"))  # no MAIL yet
    refused(conn, Data())
    conn.send(MailFrom("a@x.test"))
    one(conn, b"250 ok\r\n")
    refused(conn, Data())  # no RCPT yet
    conn.send(RcptTo("b@x.test"))
    one(conn, b"250 ok\r\n")
    conn.send(RcptTo("c@x.test"))  # "one or more"
    one(conn, b"251 will forward\r\n")
    refused(conn, Content(b"too early\r\n"))  # the content only after 354 to DATA
    conn.send(Data())
    one(conn, b"354 go\r\n")
    assert conn.send(Content(b"Hi\r\n")) == b"Hi\r\n.\r\n"


def test_no_mail_inside_an_open_transaction() -> None:
    """§4.1.4: "MAIL ... MUST NOT be sent if a mail transaction is already open"; it may be
    sent after the previous one "was aborted, e.g., with a RSET" (§4.1.1.5)."""
    conn = ready()
    conn.send(MailFrom("a@x.test"))
    one(conn, b"250 ok\r\n")
    conn.send(RcptTo("b@x.test"))
    one(conn, b"250 ok\r\n")
    refused(conn, MailFrom("c@x.test"))
    conn.send(Rset())
    one(conn, b"250 flushed\r\n")
    assert conn.send(MailFrom("c@x.test")) == b"MAIL FROM:<c@x.test>\r\n"


def test_a_refused_mail_opens_no_transaction() -> None:
    """§4.1.1.2 / §4.3.2: after an E reply to MAIL no transaction is open: RCPT would be out
    of order (503), a new MAIL is the way on."""
    conn = ready()
    conn.send(MailFrom("a@x.test"))
    one(conn, b"553 bad sender\r\n")
    refused(conn, RcptTo("b@x.test"))
    assert conn.send(MailFrom("b@x.test")) == b"MAIL FROM:<b@x.test>\r\n"


@pytest.mark.parametrize("code", [503, 554])
def test_a_refused_data_sends_no_content(code: int) -> None:
    """§4.3.2: DATA's E replies (503, 554) are not the 354 that invites the data."""
    conn = ready()
    for event, reply in (
        (MailFrom("a@x.test"), b"250 ok\r\n"),
        (RcptTo("b@x.test"), b"250 ok\r\n"),
    ):
        conn.send(event)
        one(conn, reply)
    conn.send(Data())
    assert one(conn, f"{code} no\r\n".encode()).verdict is Verdict.FAIL
    refused(conn, Content(b"Hi\r\n"))


def test_quit_is_answered_by_221_and_ends_the_session() -> None:
    """§4.1.1.10: "The receiver MUST send a 221 OK reply, and then close the transmission
    channel"; there is no command after QUIT."""
    conn = ready()
    conn.send(Quit())
    assert one(conn, b"221 bye\r\n").verdict is Verdict.OK
    for event in (Noop(), MailFrom("a@x.test"), Quit()):
        refused(conn, event)


# ---- RFC 3207: STARTTLS ----------------------------------------------------------------------
def test_starttls_454_continues_in_plain_text() -> None:
    """RFC 3207 §4: "454 TLS not available due to temporary reason"; the session goes on
    (the client decides whether to deliver without TLS)."""
    conn = ready()
    conn.send(StartTls())
    assert one(conn, b"454 not now\r\n").verdict is Verdict.FAIL
    assert conn.send(MailFrom("a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"


def test_after_tls_the_client_forgets_and_says_ehlo_again() -> None:
    """RFC 3207 §4.2: "The client MUST discard any knowledge obtained from the server, such
    as the list of SMTP service extensions ... The client SHOULD send an EHLO command as the
    first command after a successful TLS negotiation"."""
    conn = ready(PIPELINED_EHLO, pipelining=True)
    conn.send(StartTls())
    assert one(conn, b"220 go ahead\r\n").verdict is Verdict.OK
    refused(conn, MailFrom("a@x.test"))  # not before the handshake
    conn.tls_established()
    assert conn.extensions == {} and not conn.pipelining
    refused(conn, MailFrom("a@x.test"))  # EHLO first
    conn.send(Ehlo("client.test"))
    one(conn, PIPELINED_EHLO)
    assert conn.pipelining and conn.send(MailFrom("a@x.test")) == b"MAIL FROM:<a@x.test>\r\n"


# ---- RFC 2920: pipelining --------------------------------------------------------------------
def test_no_pipelining_unless_offered() -> None:
    """RFC 2920 §3: pipelining only with a server whose EHLO lists PIPELINING; otherwise each
    reply is awaited before the next command."""
    conn = ready(PLAIN_EHLO, pipelining=True)
    conn.send(MailFrom("a@x.test"))
    refused(conn, RcptTo("b@x.test"))
    one(conn, b"250 ok\r\n")
    conn.send(RcptTo("b@x.test"))


def test_mail_rcpt_and_data_in_one_group_with_every_status_checked() -> None:
    """RFC 2920 §3.1: "RSET, MAIL FROM ... and RCPT TO can all appear anywhere in a pipelined
    command group"; DATA ends it; "Client SMTP implementations that employ pipelining MUST
    check ALL statuses associated with each command in a group", replies in command order."""
    conn = ready(PIPELINED_EHLO, pipelining=True)
    group = [Rset(), MailFrom("a@x.test"), RcptTo("b@x.test"), RcptTo("c@x.test"), Data()]
    wire = b"".join(conn.send_all(group))
    assert wire == (
        b"RSET\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n"
    )
    got = answers(conn, b"250 flushed\r\n250 ok\r\n550 no such user\r\n250 ok\r\n354 go\r\n")
    assert [(a.command, a.argument, a.verdict) for a in got] == [
        (Command.RSET, "", Verdict.OK),
        (Command.MAIL, "a@x.test", Verdict.OK),
        (Command.RCPT, "b@x.test", Verdict.FAIL),
        (Command.RCPT, "c@x.test", Verdict.OK),
        (Command.DATA, "", Verdict.OK),
    ]
    assert conn.send(Content(b"Hi\r\n")) == b"Hi\r\n.\r\n"


@pytest.mark.parametrize(
    "last",
    [Data(), Noop(), Quit(), Ehlo("client.test")],
    ids=["DATA", "NOOP", "QUIT", "EHLO"],
)
def test_commands_that_end_a_group(last) -> None:
    """RFC 2920 §3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands can only
    appear as the last command in a group": nothing follows them before their reply."""
    conn = ready(PIPELINED_EHLO, pipelining=True)
    if isinstance(last, Data):
        conn.send_all([MailFrom("a@x.test"), RcptTo("b@x.test")])
    conn.send(last)
    for event in (MailFrom("z@x.test"), RcptTo("y@x.test"), Rset(), Noop(), Quit()):
        refused(conn, event)


def test_the_content_may_open_the_next_group() -> None:
    """RFC 2920 §3.1: "The actual transfer of message content is explicitly allowed to be the
    first 'command' in a group": content, MAIL, RCPT and DATA before the dot's reply."""
    conn = ready(PIPELINED_EHLO, pipelining=True)
    conn.send_all([MailFrom("a@x.test"), RcptTo("b@x.test"), Data()])
    answers(conn, b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire = conn.send_all([Content(b"Hi\r\n"), MailFrom("c@x.test"), RcptTo("d@x.test"), Data()])
    assert b"".join(wire) == b"Hi\r\n.\r\nMAIL FROM:<c@x.test>\r\nRCPT TO:<d@x.test>\r\nDATA\r\n"
    got = answers(conn, b"250 queued\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert [a.command for a in got] == [Command.CONTENT, Command.MAIL, Command.RCPT, Command.DATA]
    assert got[0].verdict is Verdict.OK


def test_every_recipient_refused_in_a_group_sends_no_content() -> None:
    """RFC 2920 §3.1: when every RCPT failed, the server answers DATA with 503 or 554 (§4.3.2's
    E replies) and the client must not send the message."""
    conn = ready(PIPELINED_EHLO, pipelining=True)
    conn.send_all([MailFrom("a@x.test"), RcptTo("b@x.test"), Data()])
    got = answers(conn, b"250 ok\r\n550 no\r\n554 no valid recipients\r\n")
    assert [a.verdict for a in got] == [Verdict.OK, Verdict.FAIL, Verdict.FAIL]
    refused(conn, Content(b"Hi\r\n"))
