"""SMTP scenarios: hand-rolled client, scapy client, and smtplib as a second witness.

All three send the same envelope and message to a recording aiosmtpd server in the lab's target
namespace.  The client-to-server byte streams are rebuilt from the capture and compared command
by command: the hand-rolled and scapy clients must send identical commands; smtplib's lower-case
verbs are shown as an allowed difference (RFC 5321 §2.4: verbs are case-insensitive), never
hidden.  The message the server received must be identical for all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from compare.lab import Lab
from compare.packets import Allowed, tcp_segments, tcp_stream
from compare.scenario import Context, Row, SideRun, Sides, both_ran, run_side
from compare.smtpserver import LabSmtpServer
from handrolled.requests import MailRequest
from handrolled.results import Direction, SmtpResult

PORT = 25
SIDES = Sides("handrolled.smtp:send_mail", "reference.smtp:send_mail")
WITNESS = "reference.smtp:send_mail_smtplib"
HELO = "client.lab.test"
# Dots at line starts (dot-stuffing), a bare LF (normalisation to CRLF), a long-ish body.
MESSAGE = (
    b"From: alice@client.lab.test\r\n"
    b"To: bob@target.lab.test\r\n"
    b"Subject: wiretwin compare\r\n"
    b"Message-ID: <compare@wiretwin.test>\r\n"
    b"\r\n"
    b"Same inputs, same bytes.\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"a bare LF follows\n"
    b"last line\r\n"
)
RFC5321_CASE = "RFC 5321 §2.4: command verbs are case-insensitive; smtplib sends them in lower case"


@dataclass(frozen=True)
class SmtpScenario:
    name: str
    recipients: tuple[str, ...]
    pipelining: bool
    delivered: bool | None  # what the lab promises (None: a server the user named)
    server: str | None = None  # the user's server (None: the lab's target)
    port: int = PORT
    mail_from: str = "alice@client.lab.test"


def scenarios(lab: Lab, quick: bool = False) -> list[SmtpScenario]:
    out = [
        SmtpScenario(
            "smtp two recipients", ("bob@target.lab.test", "carol@target.lab.test"), True, True
        ),
        SmtpScenario(
            "smtp one refused recipient",
            ("bob@target.lab.test", "refused@target.lab.test"),
            True,
            True,
        ),
        SmtpScenario("smtp all refused", ("refuse-me@target.lab.test",), True, False),
    ]
    if not quick:
        out.append(SmtpScenario("smtp --no-pipelining", ("bob@target.lab.test",), False, True))
    return out


def explicit_scenarios(
    server: str, port: int, mail_from: str, recipients: list[str]
) -> list[SmtpScenario]:
    """A server the user names: each of the three clients delivers the message once."""
    name = f"smtp {server}:{port}"
    return [SmtpScenario(name, tuple(recipients), True, None, server, port, mail_from)]


def mail_group(segments: list[bytes]) -> list[bytes]:
    """The commands in the segment that carries MAIL FROM (the pipelined group, RFC 2920)."""
    for segment in segments:
        if segment.upper().startswith(b"MAIL FROM:"):
            return split_commands(segment)
    return []


def split_commands(stream: bytes) -> list[bytes]:
    """Client stream -> commands, with the DATA content (up to and including CRLF.CRLF) as one."""
    out, rest, in_data = [], stream, False
    while rest:
        if in_data:
            end = rest.find(b"\r\n.\r\n")
            cut = len(rest) if end < 0 else end + 5
            if rest.startswith(b".\r\n"):
                cut = 3
            out.append(rest[:cut])
            rest, in_data = rest[cut:], False
            continue
        end = rest.find(b"\r\n")
        line = rest if end < 0 else rest[: end + 2]
        out.append(line)
        rest = rest[len(line) :]
        in_data = line.upper() == b"DATA\r\n"
    return out


def run(ctx: Context, sc: SmtpScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    lab = ctx.lab if sc.server is None else None
    host = lab.target.hostname if lab is not None else sc.server
    # One request, the same object for all three clients (validated once, here).
    request = MailRequest(
        host,
        sc.port,
        mail_from=sc.mail_from,
        recipients=sc.recipients,
        message=MESSAGE,
        helo_name=HELO,
        pipelining=sc.pipelining,
        timeout=20.0,
    )
    runs: dict[str, SideRun] = {}
    received = {}
    targets = {
        "handrolled": (sides.handrolled, sides.env),
        "reference": (sides.reference, None),
        "smtplib": (WITNESS, None),
    }
    for impl, (target, env) in targets.items():
        if lab is None:
            runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
            continue
        with LabSmtpServer(lab, "target", sc.port) as server:
            runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
        received[impl] = server.messages
    rows = [both_ran(sc.name, {k: runs[k] for k in ("handrolled", "reference")})]
    if runs["smtplib"].error:
        rows.append(Row(sc.name, "smtplib witness ran", "-", runs["smtplib"].error, False))
    if not rows[0].ok or runs["smtplib"].error:
        return rows, runs
    res: dict[str, SmtpResult] = {impl: r.result for impl, r in runs.items()}

    # Client-to-server streams, command by command.
    streams = {impl: tcp_stream(r.frames, sc.port, outgoing=True) for impl, r in runs.items()}
    cmds = {impl: split_commands(s) for impl, s in streams.items()}
    same = cmds["handrolled"] == cmds["reference"]
    details = [] if same else _command_diff(cmds["handrolled"], cmds["reference"], "reference")
    rows.append(
        Row(
            sc.name,
            "client commands identical (wire)",
            f"{len(cmds['handrolled'])} commands",
            f"{len(cmds['reference'])} commands",
            same,
            details,
        )
    )
    # The smtplib witness: equal up to the case of verbs (and its own choice of pipelining).
    witness_ok, notes, allowed = _witness(cmds["handrolled"], cmds["smtplib"], MESSAGE)
    rows.append(
        Row(
            sc.name,
            "smtplib witness commands (verbs case-insensitive)",
            f"{len(cmds['handrolled'])} commands",
            f"smtplib: {len(cmds['smtplib'])} commands",
            witness_ok,
            notes,
            allowed,
        )
    )

    rows.append(_grouping_row(sc, runs, res))

    # Each side's transcript is what the wire carried, both ways.
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        sent = b"".join(
            t.data for t in result.transcript if t.direction is Direction.SENT and not t.redacted
        )
        got = b"".join(t.data for t in result.transcript if t.direction is Direction.RECEIVED)
        wire_in = tcp_stream(runs[impl].frames, sc.port, outgoing=False)
        problems = []
        if sent != streams[impl]:
            problems.append(
                f"{impl}: transcript sent {len(sent)} bytes, wire carried {len(streams[impl])}"
            )
        if got != wire_in:
            problems.append(
                f"{impl}: transcript received {len(got)} bytes, wire carried {len(wire_in)}"
            )
        cells[impl] = "matches the wire" if not problems else "differs"
        ok = ok and not problems
        details += problems
    rows.append(
        Row(
            sc.name,
            "transcript = wire (both directions)",
            cells["handrolled"],
            f"{cells['reference']}; smtplib {cells['smtplib']}",
            ok,
            details,
        )
    )

    if lab is not None:
        rows.append(_server_view_row(sc, received))

    outcome = {
        impl: (
            r.delivered,
            tuple((o.address, o.accepted, o.reply.code) for o in r.recipients),
            r.final_reply.code if r.final_reply else None,
            r.stage.value,
            r.refusal.code if r.refusal else None,
        )
        for impl, r in res.items()
    }
    ok = outcome["handrolled"] == outcome["reference"] == outcome["smtplib"] and (
        sc.delivered is None or outcome["handrolled"][0] == sc.delivered
    )
    rows.append(
        Row(
            sc.name,
            "delivered, per-recipient outcomes, stage and refusal agree"
            + (f" (lab promises {sc.delivered})" if sc.delivered is not None else ""),
            str(outcome["handrolled"][0]),
            f"{outcome['reference'][0]} (smtplib {outcome['smtplib'][0]})",
            ok,
            [] if ok else [f"{impl}: {o}" for impl, o in outcome.items()],
        )
    )
    return rows, runs


def _grouping_row(sc: SmtpScenario, runs: dict[str, SideRun], res: dict[str, SmtpResult]) -> Row:
    """With PIPELINING asked for and offered, MAIL, every RCPT and DATA leave in one write
    (one segment here: a few short lines); without it, MAIL goes alone."""
    cells, details, ok = {}, [], True
    for impl in ("handrolled", "reference"):
        offered = "PIPELINING" in dict(res[impl].extensions)
        want = 2 + len(sc.recipients) if sc.pipelining and offered else 1
        group = mail_group(tcp_segments(runs[impl].frames, sc.port, outgoing=True))
        cells[impl] = f"{len(group)} in the MAIL write"
        if len(group) != want:
            ok = False
            details.append(f"{impl}: expected {want} commands in the MAIL write, got {group!r}")
    return Row(
        sc.name,
        "pipelined group: MAIL, RCPT..., DATA in one write"
        if sc.pipelining
        else "no pipelining: MAIL written alone",
        cells["handrolled"],
        cells["reference"],
        ok,
        details,
    )


def _server_view_row(sc: SmtpScenario, received: dict) -> Row:
    # The server's view: hand-rolled and scapy identical; the witness identical up to its
    # bare LF (explained above).
    views = {
        impl: [(m.mail_from, tuple(m.rcpt_tos), m.content) for m in msgs]
        for impl, msgs in received.items()
    }
    witness_view = [(f, r, _fix_bare_lf(c)) for f, r, c in views["smtplib"]]
    expected_count = 1 if sc.delivered else 0
    ok = views["handrolled"] == views["reference"] and len(views["handrolled"]) == expected_count
    details = [] if ok else [f"{impl}: {v!r}"[:300] for impl, v in views.items()]
    allowed = []
    if witness_view != views["handrolled"]:
        ok = False
        details.append(f"smtplib: {views['smtplib']!r}"[:300])
    elif views["smtplib"] != views["handrolled"]:
        allowed = [WITNESS_ALLOWED["bare_lf"]]
    return Row(
        sc.name,
        "message the server received identical",
        f"{len(views['handrolled'])} messages",
        f"{len(views['reference'])} (smtplib {len(views['smtplib'])})",
        ok,
        details,
        allowed,
    )


def _command_diff(left: list[bytes], right: list[bytes], other: str) -> list[str]:
    for i, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return [f"command {i + 1}: handrolled {a[:120]!r} vs {other} {b[:120]!r}"]
    return [f"handrolled sent {len(left)} commands, {other} {len(right)}"]


# What the smtplib witness may do differently, each with its reason.  Anything else differing
# between it and the hand-rolled client is a mismatch.
_WITNESS_REASONS = {
    "verb_case": RFC5321_CASE,
    "param_case": "RFC 5321 §2.4 / RFC 1870: ESMTP parameter keywords are case-insensitive "
    "(smtplib writes size=)",
    "size_value": "smtplib declares SIZE from the message as given, before line ends are fixed; "
    "we declare the octets actually sent (RFC 1870 §4)",
    "bare_lf": "smtplib.SMTP.data() fixes line ends only in str messages; a bytes message keeps a "
    "bare LF, which RFC 5321 §2.3.8 forbids on the wire (we send CRLF)",
    "pipelined_data": "RFC 2920 §3.1 lets a client end its pipelined group with DATA before the "
    "RCPT replies arrive; smtplib does not pipeline, so it sends no DATA once every recipient "
    "was refused",
}
WITNESS_ALLOWED = {key: Allowed("smtplib", key, why) for key, why in _WITNESS_REASONS.items()}


def _pipelined_data(ours: list[bytes], theirs: list[bytes]) -> int | None:
    """Where ours has a DATA right after its RCPTs that smtplib never sent, else None."""
    for i, command in enumerate(ours):
        if command.upper() != b"DATA\r\n":
            continue
        if (
            i
            and ours[i - 1].upper().startswith(b"RCPT ")
            and (i >= len(theirs) or theirs[i].upper() != b"DATA\r\n")
        ):
            return i
        return None
    return None


def _fix_bare_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _octets_sent(commands: list[bytes], message: bytes) -> int:
    """RFC 1870 §4: the content's octets after 354, without dot-stuffing or the final dot —
    from the wire when the content went out, else from the message with CRLF line ends."""
    block = next((c for c in commands if c.endswith(b"\r\n.\r\n")), None)
    if block is None:
        lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the message ended with a line break
        return sum(len(line) + 2 for line in lines)
    return sum(len(line) + 2 - line.startswith(b".") for line in block[:-3].split(b"\r\n")[:-1])


def _size_values_ok(ours: bytes, theirs: bytes, sent: int, message: bytes) -> bool:
    """smtplib declares len(message) as given; we declare the octets we send (RFC 1870 §4)."""
    try:
        return int(ours[5:]) == sent and int(theirs[5:]) == len(message)
    except ValueError:
        return False


def _witness(
    ours: list[bytes], theirs: list[bytes], message: bytes
) -> tuple[bool, list[str], list[Allowed]]:
    """Compare smtplib's commands with ours, applying only the WITNESS_ALLOWED rules."""
    notes, used = [], set()
    extra = _pipelined_data(ours, theirs) if len(ours) == len(theirs) + 1 else None
    if extra is not None:
        ours = ours[:extra] + ours[extra + 1 :]
        used.add("pipelined_data")
    ok = len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=False):
        if a == b:
            continue
        if a.endswith(b"\r\n.\r\n") and _fix_bare_lf(b) == a:
            used.add("bare_lf")
            continue
        a_words, b_words = a.rstrip(b"\r\n").split(b" "), b.rstrip(b"\r\n").split(b" ")
        same = len(a_words) == len(b_words)
        for i, (x, y) in enumerate(zip(a_words, b_words, strict=False)):
            if x == y:
                continue
            if x.upper() == y.upper():
                used.add("verb_case" if i == 0 else "param_case")
            elif (
                x.upper().startswith(b"SIZE=")
                and y.upper().startswith(b"SIZE=")
                and _size_values_ok(x, y, _octets_sent(ours, message), message)
            ):
                used.update({"param_case", "size_value"} if x[:5] != y[:5] else {"size_value"})
            else:
                same = False
        if not same:
            ok = False
            notes.append(f"handrolled {a[:100]!r} vs smtplib {b[:100]!r}")
    if len(ours) != len(theirs):
        notes.append(f"handrolled sent {len(ours)} commands, smtplib {len(theirs)}")
    return ok, notes, [WITNESS_ALLOWED[k] for k in sorted(used)]
