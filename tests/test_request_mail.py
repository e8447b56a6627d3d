"""MailRequest: one verdict per bad input, whichever client would send it.

The rules come from the RFCs, not from our code: a TCP port is 1-65535 (RFC 9293 §3.1); RCPT
names a forward-path, which is never empty (RFC 5321 §4.1.1.3, only MAIL's reverse-path may be
``<>``); a path is at most 256 octets with its brackets (§4.5.3.1.3), a domain at most 255
(§4.5.3.1.2), a text line at most 1000 octets with its CRLF (§4.5.3.1.6); the EHLO/HELO
argument is a Domain of LDH labels or an address literal (§4.1.1.1, §4.1.2, §4.1.3), so a tab,
a space or a non-ASCII name is refused (an IDN goes as its A-label); AUTH PLAIN's authcid and
password are non-empty and hold no NUL (RFC 4616 §2), and an AUTH line is at most 12288 octets
(RFC 4954 §4); a mailbox holds no control characters (RFC 5321 §4.1.2 / RFC 6531).  Header
fields: RFC 5322 §3.6 allows one Date, From, To, Subject, Message-ID...; §2.2 a field body of
printable characters and white space (no VT, FF, NEL, U+2028).
"""

from __future__ import annotations

import pickle

import pytest
from smtpd_fixtures import serve_recording

import reference.smtp
from compare import cli as wiretwin
from handrolled import smtp as handrolled_smtp
from handrolled.errors import UsageError
from handrolled.record import FrozenRecordError
from handrolled.requests import MAX_SECONDS, MailRequest

SENDER, RCPT = "a@x.test", "b@x.test"
LONG_LOCAL = "l" * 300  # makes a path over 256 octets
AT_LIMIT = "r" * (254 - len("@x.test")) + "@x.test"  # 254 octets: a 256-octet path

# (keyword arguments, the field the one-line message must start with)
BAD_REQUESTS = [
    ({"server": ""}, "server"),
    ({"server": "two words"}, "server"),
    ({"server": "evil\n"}, "server"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),  # getaddrinfo would wrap it to 4464
    ({"port": -1}, "port"),
    ({"port": True}, "port"),
    ({"port": "25"}, "port"),
    ({"recipients": ()}, "recipients"),
    ({"recipients": "b@x.test"}, "recipients"),  # one string, not a list of them
    ({"recipients": ("",)}, "recipient"),  # would be RCPT TO:<>
    ({"recipients": (RCPT, "")}, "recipient"),
    ({"recipients": (f"{LONG_LOCAL}@x.test",)}, "recipient"),
    ({"recipients": ("b\r\nRCPT TO:<evil@x.test>",)}, "recipient"),
    ({"recipients": ("nul\0@x.test",)}, "recipient"),
    ({"recipients": ("vt\x0b@x.test",)}, "recipient"),
    ({"recipients": ("ls\u2028@x.test",)}, "recipient"),
    ({"recipients": ("a b@x.test",)}, "recipient"),
    ({"recipients": ("<b@x.test>",)}, "recipient"),
    ({"recipients": (7,)}, "recipient"),
    ({"mail_from": "a\r\n@x.test"}, "sender"),
    ({"mail_from": f"{LONG_LOCAL}@x.test"}, "sender"),
    ({"mail_from": "a\tb@x.test"}, "sender"),
    ({"helo_name": ""}, "HELO name"),
    ({"helo_name": "has space"}, "HELO name"),
    ({"helo_name": "tab\there"}, "HELO name"),
    ({"helo_name": "h\u00e9llo.test"}, "HELO name"),  # the A-label is xn--hllo-bpa.test
    ({"helo_name": "c.test\r\nMAIL FROM:<x>"}, "HELO name"),
    ({"helo_name": "-dash.test"}, "HELO name"),
    ({"helo_name": "dash-.test"}, "HELO name"),
    ({"helo_name": "a..b"}, "HELO name"),
    ({"helo_name": "trailing.dot."}, "HELO name"),
    ({"helo_name": "under_score.test"}, "HELO name"),
    ({"helo_name": "l" * 64 + ".test"}, "HELO name"),  # a label over 63 octets
    ({"helo_name": ".".join(["a" * 63] * 4) + "a"}, "HELO name"),  # 256 octets
    ({"helo_name": "[300.1.1.1]"}, "HELO name"),
    ({"helo_name": "[IPv6:1.2.3.4]"}, "HELO name"),
    ({"helo_name": "[192.0.2.1"}, "HELO name"),
    ({"message": "text"}, "message"),
    ({"message": b"x" * 999 + b"\r\n"}, "message"),  # 999 octets before the CRLF
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1.0}, "timeout"),
    ({"timeout": float("inf")}, "timeout"),  # settimeout() would overflow
    ({"timeout": 1e10}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"timeout": MAX_SECONDS + 1}, "timeout"),
    ({"timeout": "1"}, "timeout"),
    ({"starttls": True, "tls": True}, "starttls and tls"),
    ({"auth": ("alice", "pw")}, "auth"),  # over plain TCP, not allowed
    ({"auth": ("alice", "pw\r\nRSET"), "starttls": True}, "auth"),
    ({"auth": ("al\0ice", "pw"), "starttls": True}, "auth"),
    ({"auth": ("", "pw"), "starttls": True}, "auth"),
    ({"auth": ("alice", ""), "starttls": True}, "auth"),
    ({"auth": ("alice",), "starttls": True}, "auth"),
    ({"auth": ("alice", "p" * 9300), "starttls": True}, "auth"),  # AUTH PLAIN over 12288
    ({"cafile": ""}, "cafile"),
    ({"cafile": "ca\0.pem"}, "cafile"),
]


def _request(**kwargs) -> MailRequest:
    fields = {"server": "127.0.0.1", "port": 25, "mail_from": SENDER, "recipients": (RCPT,)}
    fields.update({"message": b"Subject: x\r\n\r\nhi\r\n", **kwargs})
    return MailRequest(fields.pop("server"), fields.pop("port"), **fields)


@pytest.mark.parametrize(
    ("kwargs", "field"), BAD_REQUESTS, ids=[repr(k)[:60] for k, _ in BAD_REQUESTS]
)
def test_bad_request_is_refused_naming_the_rule(kwargs: dict, field: str) -> None:
    with pytest.raises(UsageError) as err:
        _request(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{field} ") or message.startswith(f"{field}:"), message
    assert "\n" not in message and "\r" not in message and len(message) < 300, message
    for secret in ("pw\r\nRSET", "p" * 50):
        assert secret not in message  # AUTH secrets stay out of errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mail_from": ""},  # the null reverse-path, MAIL FROM:<> (RFC 5321 §4.5.5)
        {"recipients": (AT_LIMIT,)},  # a path of exactly 256 octets
        {"recipients": ["b@x.test", "c@x.test"]},  # a list becomes a tuple
        {"recipients": ("\u7528\u6237@\u4f8b\u5b50.test",), "mail_from": "j\u00f6rg@x.test"},
        {"helo_name": "Alice"},  # the seed's single-label name
        {"helo_name": "xn--hllo-bpa.test"},
        {"helo_name": ".".join(["a" * 63] * 4)},  # 255 octets
        {"helo_name": "[192.0.2.1]"},
        {"helo_name": "[IPv6:2001:db8::1]"},
        {"helo_name": "[x-tag:content]"},  # a general address literal (§4.1.3)
        {"message": b""},
        {"message": b"x" * 998 + b"\r\n"},
        {"timeout": MAX_SECONDS},
        {"timeout": 0.001},
        {"port": 1},
        {"port": 65535},
        {"auth": ("alice", "pw"), "starttls": True},
        {"auth": ("alice", "pw"), "tls": True},
        {"auth": ("alice", "pw"), "allow_plain_auth": True},
        {"ehlo": False, "pipelining": False},
    ],
)
def test_good_request_is_accepted(kwargs: dict) -> None:
    request = _request(**kwargs)
    assert isinstance(request.recipients, tuple)
    assert pickle.loads(pickle.dumps(request)) == request  # what compare sends to a child
    with pytest.raises(FrozenRecordError):
        request.port = 26  # type: ignore[misc]
    assert "pw" not in repr(request)  # the password stays out of logs and reprs


# ---- the entry points take nothing but a request ---------------------------------------------
ENGINES = {
    "handrolled": handrolled_smtp.send_mail,
    "reference": reference.smtp.send_mail,
    "smtplib": reference.smtp.send_mail_smtplib,
}


def test_every_engine_wants_a_request() -> None:
    for name, engine in ENGINES.items():
        with pytest.raises(UsageError, match="MailRequest"):
            engine("127.0.0.1")  # type: ignore[arg-type]
        assert name


def test_unreadable_cafile_same_verdict_from_every_engine() -> None:
    request = _request(starttls=True, cafile="/nonexistent/ca.pem", port=9)  # port 9: unused
    verdicts = {}
    for name, engine in ENGINES.items():
        with pytest.raises(UsageError) as err:
            engine(request)
        verdicts[name] = str(err.value)
    assert len(set(verdicts.values())) == 1, verdicts
    assert verdicts["handrolled"].startswith("cannot load CA file /nonexistent/ca.pem")


# ---- the same bad command lines through `wiretwin smtp`, every implementation ----------------
BAD_COMMAND_LINES = [
    ["--to", ""],
    ["--to", f"{LONG_LOCAL}@x.test"],  # the transcript once claimed MAIL and RCPT as sent
    ["--to", RCPT, "--to", "b\r\n@x.test"],
    ["--from", "a\r\nRCPT TO:<evil@x.test>"],
    ["--timeout", "inf"],
    ["--timeout", "1e10"],
    ["--timeout", "nan"],
    ["--timeout", "0"],
    ["--timeout", "soon"],
    ["--helo", "tab\there"],
    ["--helo", "h\u00e9llo.test"],
    ["--helo", "two words"],
    ["--header", "Date: x"],
    ["--header", "Subject: a second one"],
    ["--header", "From: other@x.test"],
    ["--header", "To: other@x.test"],
    ["--header", "Message-ID: <x@x.test>"],
    ["--header", "subject: case does not matter"],
    ["--header", "X-Vt: a\x0bb"],
    ["--header", "X-Ff: a\x0cb"],
    ["--header", "X-Nel: a\u0085b"],
    ["--header", "X-Ls: a\u2028b"],
    ["--header", "X-Esc: a\x1b[31mb"],
    ["--header", "no colon"],
    ["--header", "Bad Name: x"],
    ["--subject", "a\u2028b"],
    ["--auth", "--user", "alice"],  # AUTH over plain TCP
    ["--tls", "--starttls"],
    ["--starttls", "--cafile", "/nonexistent/ca.pem"],
]
PORT_LINES = [["--port", "70000"], ["--port", "0"], ["--port", "-1"], ["--port", "many"]]


@pytest.fixture(scope="module")
def watched_server():
    """An aiosmtpd server the bad command lines point at: it must see no connection."""
    with serve_recording() as server:
        yield server
    assert server.connections == 0


@pytest.mark.parametrize(
    "argv", BAD_COMMAND_LINES + PORT_LINES, ids=lambda a: " ".join(a)[:50].replace("\n", " ")
)
def test_bad_command_line_same_verdict_from_every_implementation(
    argv, watched_server, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WIRETWIN_SMTP_PASSWORD", "pw")
    base = ["--server", "127.0.0.1", "--from", SENDER]
    if not any(a == "--port" for a in argv):
        base += ["--port", str(watched_server.port)]
    if "--to" not in argv:
        base += ["--to", RCPT]
    verdicts = {}
    for impl in ("handrolled", "reference", "smtplib"):
        status = wiretwin.main(["smtp", "--impl", impl, *base, *argv])
        out, err = capsys.readouterr()
        assert out == "", (impl, out)
        assert err.startswith("wiretwin smtp: ") and err.count("\n") == 1, (impl, err)
        assert "Traceback" not in err
        verdicts[impl] = (status, err)
    assert verdicts["handrolled"] == verdicts["reference"] == verdicts["smtplib"]
    assert verdicts["handrolled"][0] == 2
    assert watched_server.connections == 0  # nothing was sent after the refusal


def test_auth_without_tls_refused_on_the_command_line(watched_server, capsys, monkeypatch):
    monkeypatch.setenv("WIRETWIN_SMTP_PASSWORD", "pw")
    argv = ["smtp", "--server", "127.0.0.1", "--port", str(watched_server.port),
            "--from", SENDER, "--to", RCPT, "--auth", "--user", "alice"]  # fmt: skip
    assert wiretwin.main(argv) == 2
    assert "unencrypted" in capsys.readouterr().err
    assert watched_server.connections == 0


@pytest.mark.parametrize("argv", [[], ["--body", "x" * 1000]], ids=["plain", "long body line"])
def test_a_good_command_line_reaches_the_server(argv, capsys) -> None:
    """The watcher is real: the same front with good input connects and delivers.  (A body
    line over 998 octets is fine here: the email package gives it a transfer encoding.)"""
    with serve_recording() as server:
        base = ["smtp", "--server", "127.0.0.1", "--port", str(server.port),
                "--from", SENDER, "--to", RCPT, "--quiet", *argv]  # fmt: skip
        for impl in ("handrolled", "reference", "smtplib"):
            assert wiretwin.main([*base, "--impl", impl]) == 0, capsys.readouterr().err
        assert server.connections == 3 and len(server.messages) == 3
        assert all(len(line) <= 1000 for m in server.messages for line in m.content.split(b"\n"))
