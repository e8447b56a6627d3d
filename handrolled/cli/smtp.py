"""``wiretwin smtp`` on the command line: swaks-like options, the transcript, exit codes.

``main(argv=None, runner=None) -> int`` parses argv into a ``MailRequest`` (composing the
message with ``compose_message`` unless ``--data`` gives it whole), hands it to ``runner``
(``handrolled.smtp.send_mail`` by default; ``wiretwin smtp --impl reference|smtplib`` passes
``reference.smtp.send_mail`` or ``send_mail_smtplib``) and prints the dialogue as swaks does
(``transcript_text``: ``===`` the client's doings, `` -> ``/``<-  `` in clear, `` ~> ``/``<~  ``
inside TLS, ``**>``/``<**`` unexpected; errors as ``*** ...`` on stderr).  ``--quit-after
PHASE`` stops as swaks' does; ``--count N`` sends N copies over one connection
(handrolled.smtp_session) and prints the rate.  ``exit_status(result)``: 0 delivered, 1
refused by the server, 2 anything else (bad input, network, TLS, protocol, local checks).

Run it as ``python -m handrolled.smtp ...`` (or ``python -m handrolled.cli.smtp``).
"""

from __future__ import annotations

import argparse
import email.errors
import email.policy
import email.utils
import json
import os
import sys
import unicodedata
from collections.abc import Callable, Sequence
from email.message import EmailMessage

from handrolled.cli.common import EXIT_ERROR, Parser, jsonable, run_module
from handrolled.errors import UsageError, WiretwinError
from handrolled.record import replace
from handrolled.requests import SMTP_DEFAULT_HELO, MailRequest, MailSessionRequest
from handrolled.results import Direction, SmtpResult, SmtpSessionResult, SmtpStage
from handrolled.smtp import send_mail
from handrolled.smtp_protocol import forbidden_char

__all__ = [
    "compose_message",
    "exit_status",
    "main",
    "rate_line",
    "request_from_args",
    "session_status",
    "transcript_text",
]

Runner = Callable[[MailRequest], SmtpResult]

# RFC 5322 §3.6: fields that may appear at most once in a message.
UNIQUE_FIELDS = frozenset(
    {
        "date",
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "message-id",
        "in-reply-to",
        "references",
        "subject",
    }
)


# swaks' --quit-after stop points -> where send_mail stops.  "data" drops the connection
# after 354: from there until the dot everything is message text (RFC 5321 §4.1.1.4).
QUIT_AFTER = {
    "connect": SmtpStage.GREETING,
    "banner": SmtpStage.GREETING,
    "ehlo": SmtpStage.EHLO,
    "tls": SmtpStage.STARTTLS,
    "auth": SmtpStage.AUTH,
    "mail": SmtpStage.MAIL,
    "rcpt": SmtpStage.RCPT,
    "data": SmtpStage.DATA,
}


# --- composing ------------------------------------------------------------------------------


def _check_field(name: str, value: str) -> None:
    # RFC 5322 §3.6.8: a field name is printable US-ASCII except colon.
    if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
        raise UsageError(f"bad header name {name!r}")
    bad = forbidden_char(value)
    if bad:
        raise UsageError(f"header {name} contains {bad}: refused before sending")
    # RFC 5322 §2.2 / RFC 6532 §3.2: a field body is printable characters and white space;
    # no other control (VT, FF, NEL U+0085, ...) nor a Unicode line or paragraph separator.
    for char in value:
        if char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise UsageError(
                f"header {name} contains the control character U+{ord(char):04X}: "
                "refused before sending"
            )


# What the email package raises on a value it cannot take.  IndexError too: its structured-header
# parser (email._header_value_parser) runs off the end of some malformed values, such as an
# address that is one unclosed quote ('"'), instead of raising HeaderParseError.
_EMAIL_ERRORS = (ValueError, TypeError, IndexError, email.errors.MessageError)


def compose_message(
    mail_from: str,
    recipients: Sequence[str],
    *,
    subject: str = "",
    body: str = "",
    headers: Sequence[tuple[str, str]] = (),
    date: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """An RFC 5322 message (CRLF line ends).  Refuses header values with line breaks or other
    controls, and a second copy of a field RFC 5322 §3.6 allows only once."""
    fields = [("From", mail_from), ("To", ", ".join(recipients)), ("Subject", subject)]
    if date is not None:
        fields.append(("Date", date))
    if message_id is not None:
        fields.append(("Message-ID", message_id))
    fields.extend(headers)
    seen: set[str] = set()
    for name, value in fields:
        _check_field(name, value)
        key = name.lower()
        if key in UNIQUE_FIELDS and key in seen:
            raise UsageError(
                f"header {name}: a message has at most one (RFC 5322 §3.6), and this one "
                "already has it (give a whole message with --data to write your own)"
            )
        seen.add(key)
    utf8 = not all(a.isascii() for a in (mail_from, *recipients))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    for name, value in fields:
        try:
            msg[name] = value
        except _EMAIL_ERRORS as exc:
            # the email package's own parse of a structured field (an address, a date)
            why = "cannot be parsed" if isinstance(exc, IndexError) else str(exc).splitlines()[0]
            raise UsageError(f"header {name}: {why}") from exc
    msg.set_content(body)
    try:
        return msg.as_bytes(policy=policy)
    except _EMAIL_ERRORS as exc:
        raise UsageError(f"cannot compose the message: {str(exc).splitlines()[0]}") from exc


# --- results for people ---------------------------------------------------------------------


def exit_status(result: SmtpResult) -> int:
    """0 delivered (or stopped where --quit-after asked, with no error); 1 the server refused
    (a 4xx/5xx ended the dialogue, or every recipient was refused: ``result.refusal``); 2
    anything else (network, TLS, protocol, local checks)."""
    if result.delivered:
        return 0
    if result.refusal is not None:
        return 1
    return 0 if result.error is None else 2


def _escaped(char: str) -> str:
    if char == "\t" or unicodedata.category(char) not in ("Cc", "Zl", "Zp"):
        return char
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def _printable(text: str) -> str:
    """Server text for a terminal: control characters (ESC, a bare CR, ...) shown escaped."""
    return "".join(_escaped(c) for c in text)


# swaks' transaction hints (swaks(1), "Transcript"): (sent?, inside TLS?, expected?) -> prefix
_HINTS = {
    (True, False, True): " -> ",
    (True, True, True): " ~> ",
    (True, False, False): "**> ",
    (True, True, False): "*~> ",
    (False, False, True): "<-  ",
    (False, True, True): "<~  ",
    (False, False, False): "<** ",
    (False, True, False): "<~* ",
}


def transcript_text(result: SmtpResult | SmtpSessionResult) -> list[str]:
    """The dialogue as swaks shows it: ``===`` for what the client does, then one line per
    line on the wire with swaks' hint: `` -> ``/``<-  `` in clear, `` ~> ``/``<~  `` inside
    TLS, ``**>``/``<**`` (``*~>``/``<~*``) unexpected (a refusing reply, a command never
    answered).  Control characters from the server are shown escaped."""
    lines = [f"=== Trying {result.server}:{result.port}..."]
    if result.transcript or result.stage is not SmtpStage.CONNECT:
        lines.append(f"=== Connected to {result.server}.")
    in_tls = False
    for entry in result.transcript:
        if entry.tls and not in_tls:
            cipher = f" with cipher {result.tls_cipher}" if result.tls_cipher else ""
            lines.append(f"=== TLS started{cipher}")
            in_tls = True
        hint = _HINTS[entry.direction is Direction.SENT, entry.tls, entry.expected]
        text = entry.data.decode("utf-8", errors="replace")
        for part in text.removesuffix("\r\n").split("\r\n"):
            lines.append(hint + _printable(part))
    stopped = result.error is None and not getattr(result, "delivered", 0)
    if result.transcript and stopped and result.stage is SmtpStage.DATA:
        lines.append("=== Dropping connection")  # --quit-after data, as swaks --drop-after
    elif result.transcript and (result.error is None or result.refusal is not None):
        lines.append("=== Connection closed with remote host.")
    return lines


def _json(
    result: SmtpResult | SmtpSessionResult, status: int, extra: dict[str, object] | None = None
) -> str:
    """The one JSON encoding (bytes as hex); each transcript entry also gets its ``text``."""
    doc = jsonable(result)
    assert isinstance(doc, dict)
    for entry, line in zip(doc["transcript"], result.transcript, strict=True):
        entry["text"] = line.data.decode("utf-8", errors="replace")
    return json.dumps({"exit_status": status, **(extra or {}), **doc}, indent=2)


# --- the command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="wiretwin smtp", description="Send one message over SMTP.")
    p.add_argument("--server", required=True, help="SMTP server name or address")
    p.add_argument("--port", type=int, help="default 25, or 465 with --tls")
    p.add_argument("--from", dest="mail_from", required=True, help="envelope sender")
    p.add_argument("--to", dest="recipients", action="append", required=True, help="recipient")
    p.add_argument("--subject", default="wiretwin test")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="the body text")
    body.add_argument("--body-file", help="read the body text from a file")
    body.add_argument("--data", help="the whole raw message from a file, '-' for stdin")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    secure = p.add_mutually_exclusive_group()
    secure.add_argument("--starttls", action="store_true", help="require STARTTLS (RFC 3207)")
    secure.add_argument("--tls", action="store_true", help="implicit TLS (RFC 8314)")
    p.add_argument("--insecure", action="store_true", help="do NOT verify the certificate")
    p.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    p.add_argument("--auth", action="store_true", help="authenticate (AUTH PLAIN or LOGIN)")
    p.add_argument("--user", help="user name for --auth")
    p.add_argument(
        "--password-file", help="file holding the password (else $WIRETWIN_SMTP_PASSWORD)"
    )
    p.add_argument("--allow-plain-auth", action="store_true", help="allow AUTH without TLS")
    p.add_argument("--helo", default=SMTP_DEFAULT_HELO, help="name for EHLO/HELO")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    p.add_argument("--no-pipelining", action="store_true", help="one command at a time")
    p.add_argument(
        "--quit-after",
        choices=list(QUIT_AFTER),
        type=str.lower,
        metavar="PHASE",
        help="QUIT once PHASE succeeded, as swaks: " + ", ".join(QUIT_AFTER),
    )
    p.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="send N copies over one connection and print the rate (like smtp-source)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name, or not UTF-8
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def _message(args: argparse.Namespace) -> bytes:
    if args.data is not None:
        if args.data == "-":
            return sys.stdin.buffer.read()
        try:
            with open(args.data, "rb") as f:
                return f.read()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            raise UsageError(
                f"cannot read {args.data}: {getattr(exc, 'strerror', None) or exc}"
            ) from exc
    text = _read_text(args.body_file) if args.body_file is not None else (args.body or "")
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            raise UsageError(f"--header wants 'Name: value', got {header!r}")
        headers.append((name.strip(), value.strip()))
    domain = args.mail_from.rpartition("@")[2] or "wiretwin.invalid"
    return compose_message(
        args.mail_from,
        args.recipients,
        subject=args.subject,
        body=text,
        headers=headers,
        date=email.utils.formatdate(localtime=True),
        message_id=email.utils.make_msgid(domain=domain),  # domain given: no DNS lookup
    )


def _auth(args: argparse.Namespace) -> tuple[str, str] | None:
    if not args.auth:
        return None
    if not args.user:
        raise UsageError("--auth needs --user")
    if args.password_file is not None:
        password = _read_text(args.password_file).removesuffix("\n").removesuffix("\r")
    elif "WIRETWIN_SMTP_PASSWORD" in os.environ:
        password = os.environ["WIRETWIN_SMTP_PASSWORD"]
    else:
        raise UsageError("--auth needs --password-file or $WIRETWIN_SMTP_PASSWORD")
    return (args.user, password)


def request_from_args(args: argparse.Namespace) -> MailRequest:
    """The MailRequest the parsed options describe (it validates itself)."""
    envelope = MailRequest(  # the envelope first: a bad address is named before the message
        args.server,
        args.port if args.port is not None else (465 if args.tls else 25),
        mail_from=args.mail_from,
        recipients=tuple(args.recipients),
        message=b"",
        helo_name=args.helo,
        starttls=args.starttls,
        tls=args.tls,
        allow_plain_auth=args.allow_plain_auth,
        insecure=args.insecure,
        cafile=args.cafile,
        timeout=args.timeout,
        pipelining=not args.no_pipelining,
    )
    return replace(envelope, message=_message(args), auth=_auth(args))


def session_status(result: SmtpSessionResult) -> int:
    """0 every message delivered; 1 the server refused some (each undelivered message, or
    the session, ended by a 4xx/5xx); 2 anything else."""
    if result.error is not None and result.refusal is None:
        return EXIT_ERROR
    undelivered = [m for m in result.messages if not m.delivered]
    if not undelivered:
        return 0
    if result.refusal is not None or all(m.refusal is not None for m in undelivered):
        return 1
    return EXIT_ERROR


def rate_line(result: SmtpSessionResult) -> str:
    """The session's figure, as smtp-source users compute it: messages per second."""
    plural = "" if result.connections == 1 else "s"
    return (
        f"{result.delivered}/{len(result.messages)} messages delivered over "
        f"{result.connections} connection{plural} in {result.elapsed_ms / 1000.0:.3f} s: "
        f"{_rate(result):.1f} messages/s"
    )


def _rate(result: SmtpSessionResult) -> float:
    seconds = result.elapsed_ms / 1000.0
    return result.delivered / seconds if seconds > 0 else 0.0


def _session(args: argparse.Namespace, request: MailSessionRequest) -> int:
    from handrolled.smtp_session import send_session  # loaded only for a session

    result = send_session(request)
    status = session_status(result)
    if args.json:
        extra = {"delivered_count": result.delivered, "messages_per_second": _rate(result)}
        print(_json(result, status, extra))
    elif not args.quiet:
        for line in transcript_text(result):
            print(line)
        print(rate_line(result))
        for n, m in enumerate(result.messages, start=1):
            if m.refusal is not None:
                text = _printable(m.refusal.text.replace("\n", " "))
                print(f"refused: message {n}: {m.refusal.code} {text}", file=sys.stderr)
    if result.error:
        print(f"*** {_printable(result.error)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None, runner: Runner | None = None) -> int:
    """``wiretwin smtp``: exit 0 delivered, 1 refused by the server, 2 any other error."""
    try:
        args = _parser().parse_args(argv)
        request = request_from_args(args)
        if args.count is not None:
            if runner is not None:
                raise UsageError("--count: only the hand-rolled client sends a session")
            # a bad count is refused here, before connecting
            return _session(args, MailSessionRequest(request, args.count))
        if args.quit_after is not None:
            if runner is not None or args.count is not None:
                raise UsageError("--quit-after: only for one message with the hand-rolled client")
            result = send_mail(request, stop_after=QUIT_AFTER[args.quit_after])
        else:
            result = (runner or send_mail)(request)
    except WiretwinError as exc:
        # escaped: the message may quote an argument with control characters in it
        print(f"wiretwin smtp: error: {_printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    status = exit_status(result)
    if args.json:
        print(_json(result, status))
    elif not args.quiet:
        for line in transcript_text(result):
            print(line)
        for r in result.recipients:
            if not r.accepted:
                text = _printable(r.reply.text.replace("\n", " "))
                print(f"refused: {r.address}: {r.reply.code} {text}", file=sys.stderr)
    if result.error:
        print(f"*** {_printable(result.error)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(run_module(main))
