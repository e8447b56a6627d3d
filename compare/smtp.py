"""SMTP scenarios: hand-rolled client, scapy client, and smtplib as a second witness.

All three send the same envelope and message to a recording aiosmtpd server in the lab's target
namespace.  The client-to-server byte streams are rebuilt from the capture and compared command
by command: the hand-rolled and scapy clients must send identical commands; smtplib's lower-case
verbs are shown as an allowed difference (RFC 5321 §2.4: verbs are case-insensitive), never
hidden.  The message the server received must be identical for all three.

TLS scenarios (STARTTLS, RFC 3207; implicit TLS, RFC 8314; AUTH PLAIN / LOGIN over them,
RFC 4954) run each client with SSLKEYLOGFILE set (Python's ssl.create_default_context writes
the NSS key log there, for all three clients), keep the key log beside the side's frames, and
compare the commands from two independent views: the streams tshark decrypts from the capture
with that key log, and the lab server's own log of the bytes it received.  AUTH secrets must be
in no transcript and in no report line, while the server saw the right credentials.
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from compare.lab import Lab
from compare.packets import decrypted_streams, tcp_segments, tcp_stream
from compare.scenario import Context, Row, SideRun, Sides, both_ran, run_side
from compare.smtp_witness import WITNESS_ALLOWED, fix_bare_lf, witness
from compare.smtpserver import AUTH_PASSWORD, AUTH_USER, Connection, LabSmtpServer, lab_ca
from handrolled.requests import MailRequest
from handrolled.results import Direction, SmtpResult

PORT = 25
SUBMISSIONS_PORT = 465  # RFC 8314 §7.3: implicit TLS for message submission
KEYLOG_ENV = "SSLKEYLOGFILE"  # read by ssl.create_default_context (NSS key log format)
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


@dataclass(frozen=True)
class SmtpScenario:
    name: str
    recipients: tuple[str, ...]
    pipelining: bool
    delivered: bool | None  # what the lab promises (None: a server the user named)
    server: str | None = None  # the user's server (None: the lab's target)
    port: int = PORT
    mail_from: str = "alice@client.lab.test"
    tls: str | None = None  # None, "starttls" or "implicit"
    auth: tuple[str, ...] = ()  # the mechanisms the lab server offers; () means no AUTH

    @property
    def mechanism(self) -> str | None:
        """What every client must choose: PLAIN when offered, else LOGIN (all three prefer
        PLAIN: handrolled and scapy by design, smtplib by its preferred_auths order)."""
        if not self.auth:
            return None
        return "PLAIN" if "PLAIN" in self.auth else "LOGIN"


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
    bob = ("bob@target.lab.test",)
    out += [
        SmtpScenario("smtp STARTTLS", bob, True, True, tls="starttls"),
        SmtpScenario(
            "smtp implicit TLS",
            ("bob@target.lab.test", "carol@target.lab.test"),
            True,
            True,
            port=SUBMISSIONS_PORT,
            tls="implicit",
        ),
        SmtpScenario(
            "smtp STARTTLS AUTH PLAIN", bob, True, True, tls="starttls", auth=("PLAIN", "LOGIN")
        ),
        SmtpScenario(
            "smtp implicit TLS AUTH LOGIN",
            bob,
            True,
            True,
            port=SUBMISSIONS_PORT,
            tls="implicit",
            auth=("LOGIN",),
        ),
    ]
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
        starttls=sc.tls == "starttls",
        tls=sc.tls == "implicit",
        auth=(AUTH_USER, AUTH_PASSWORD) if sc.auth else None,
        cafile=str(lab_ca(lab).cafile) if sc.tls and lab is not None else None,
    )
    with tempfile.TemporaryDirectory(prefix="wiretwin-smtp-") as work:
        return _run(ctx, sc, sides, lab, request, Path(work))


def _run(
    ctx: Context, sc: SmtpScenario, sides: Sides, lab: Lab | None, request: MailRequest, work: Path
) -> tuple[list[Row], dict]:
    runs: dict[str, SideRun] = {}
    received, logs = {}, {}
    targets = {
        "handrolled": (sides.handrolled, sides.env),
        "reference": (sides.reference, None),
        "smtplib": (WITNESS, None),
    }
    for impl, (target, env) in targets.items():
        keylog = work / f"{impl}.keys"
        if sc.tls:  # each side's own key log (NSS format), kept beside its pcap
            env = {**(env or {}), KEYLOG_ENV: str(keylog)}
        if lab is None:
            runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
        else:
            with LabSmtpServer(lab, "target", sc.port, tls=sc.tls, auth=sc.auth) as server:
                runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
            received[impl], logs[impl] = server.messages, server.connections
        if sc.tls and keylog.exists():
            runs[impl].keylog = keylog.read_text()
    rows = [both_ran(sc.name, {k: runs[k] for k in ("handrolled", "reference")})]
    if runs["smtplib"].error:
        rows.append(Row(sc.name, "smtplib witness ran", "-", runs["smtplib"].error, False))
    if not rows[0].ok or runs["smtplib"].error:
        return rows, runs
    res: dict[str, SmtpResult] = {impl: r.result for impl, r in runs.items()}

    # Client-to-server streams (decrypted with each side's key log for TLS), command by command.
    streams, replies = {}, {}
    if sc.tls:  # one tshark per side, side by side (each takes a few tenths of a second)
        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {
                impl: pool.submit(
                    decrypted_streams,
                    r.frames,
                    sc.port,
                    work / f"{impl}.keys",
                    work / f"{impl}.pcap",
                )
                for impl, r in runs.items()
            }
        for impl, future in futures.items():
            try:
                streams[impl], replies[impl] = future.result()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                rows.append(Row(sc.name, "TLS streams decrypted (tshark)", impl, str(exc), False))
                return rows, runs
    else:
        for impl, r in runs.items():
            streams[impl] = tcp_stream(r.frames, sc.port, outgoing=True)
            replies[impl] = tcp_stream(r.frames, sc.port, outgoing=False)
    cmds = {impl: split_commands(s) for impl, s in streams.items()}
    if sc.tls:
        rows.append(_tls_row(sc, runs, res))
    wire = "decrypted wire" if sc.tls else "wire"
    same = cmds["handrolled"] == cmds["reference"]
    details = [] if same else _command_diff(cmds["handrolled"], cmds["reference"], "reference")
    rows.append(
        Row(
            sc.name,
            f"client commands identical ({wire})",
            f"{len(cmds['handrolled'])} commands",
            f"{len(cmds['reference'])} commands",
            same,
            [scrub(d) for d in details],
        )
    )
    # The smtplib witness: equal up to the case of verbs (and its own choice of pipelining).
    witness_ok, notes, allowed = witness(cmds["handrolled"], cmds["smtplib"], MESSAGE)
    rows.append(
        Row(
            sc.name,
            f"smtplib witness commands ({wire}; verbs case-insensitive)",
            f"{len(cmds['handrolled'])} commands",
            f"smtplib: {len(cmds['smtplib'])} commands",
            witness_ok,
            [scrub(n) for n in notes],
            allowed,
        )
    )
    if lab is not None:
        rows.append(_server_log_row(sc, streams, logs))

    rows.append(_grouping_row(sc, runs, res, logs))
    rows.append(_transcript_row(sc, res, streams, replies))
    if sc.auth and lab is not None:
        rows.append(_auth_row(sc, res, logs))

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
            [] if ok else [scrub(f"{impl}: {o}") for impl, o in outcome.items()],
        )
    )
    return rows, runs


# ---- AUTH secrets: the harness knows the lab's credentials, so it can look for them ---------
def secret_forms(user: str = AUTH_USER, password: str = AUTH_PASSWORD) -> list[bytes]:
    """Every form an AUTH secret takes on the wire: the PLAIN token (RFC 4616 §2), LOGIN's
    base64 user name and password (RFC 4954 §4), and the password itself."""

    def b64(text: str) -> bytes:
        return base64.b64encode(text.encode())

    return [b64(f"\0{user}\0{password}"), b64(user), b64(password), password.encode()]


def scrub(text: str) -> str:
    """A report line with every AUTH secret form replaced (reports never show secrets)."""
    for form in secret_forms():
        text = text.replace(form.decode(), "<redacted>")
    return text


def _has_secret(data: bytes) -> bool:
    return any(form in data for form in secret_forms())


def _three_sides_row(
    sc: SmtpScenario, check: str, cells: dict[str, str], ok: bool, details: list[str]
) -> Row:
    """A per-side row whose reference cell also shows the smtplib witness's."""
    witnessed = {**cells, "reference": f"{cells['reference']}; smtplib {cells['smtplib']}"}
    return Row.of_sides(sc.name, check, witnessed, ok, details)


def _tls_row(sc: SmtpScenario, runs: dict[str, SideRun], res: dict[str, SmtpResult]) -> Row:
    """Each client reports the TLS asked for and wrote a key log (NSS format: one
    ``LABEL client_random secret`` line per secret, TLS 1.3 labels per RFC 8446 §7.1)."""
    cells, details, ok = {}, [], True
    for impl, r in runs.items():
        labels = {line.split(" ", 1)[0] for line in r.keylog.splitlines() if line.strip()}
        good = res[impl].tls == sc.tls and bool(
            labels & {"CLIENT_TRAFFIC_SECRET_0", "CLIENT_RANDOM"}
        )
        cells[impl] = f"{res[impl].tls}, key log {len(r.keylog.splitlines())} lines"
        if not good:
            ok = False
            details.append(f"{impl}: tls {res[impl].tls!r} (want {sc.tls!r}), labels {labels}")
    return _three_sides_row(sc, f"TLS ({sc.tls}) up and key log written", cells, ok, details)


def _server_log_row(
    sc: SmtpScenario, streams: dict[str, bytes], logs: dict[str, list[Connection]]
) -> Row:
    """The server's own log (the bytes aiosmtpd received, after decryption) against each
    client's stream off the wire, and the two implementations' commands in it identical."""
    cells, details, ok = {}, [], True
    seen = {}
    for impl, connections in logs.items():
        got = b"".join(c.received for c in connections)
        seen[impl] = split_commands(got)
        cells[impl] = f"{len(connections)} connection, {len(seen[impl])} commands"
        if len(connections) != 1 or got != streams[impl]:
            ok = False
            details.append(
                f"{impl}: the server received {len(got)} bytes over {len(connections)} "
                f"connections, the {'decrypted ' if sc.tls else ''}wire carried "
                f"{len(streams[impl])}"
            )
    if seen["handrolled"] != seen["reference"]:
        ok = False
        details += _command_diff(seen["handrolled"], seen["reference"], "reference")
    return _three_sides_row(
        sc,
        "server's log: commands received = client's wire, identical",
        cells,
        ok,
        [scrub(d) for d in details],
    )


def _auth_row(
    sc: SmtpScenario, res: dict[str, SmtpResult], logs: dict[str, list[Connection]]
) -> Row:
    """RFC 4954: the server saw the mechanism every client must choose and the right
    credentials; no transcript line (either way) nor error carries a secret."""
    want = [(sc.mechanism, AUTH_USER, AUTH_PASSWORD)]
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        auths = [a for c in logs[impl] for a in c.auths]
        leaked = [i for i, t in enumerate(result.transcript) if _has_secret(t.data)] + (
            [-1] if result.error and _has_secret(result.error.encode()) else []
        )
        redacted = sum(t.redacted for t in result.transcript)
        cells[impl] = (
            f"{'; '.join(f'{m} as {u}' for m, u, _ in auths) or 'no AUTH'}, "
            f"{redacted} lines redacted"
        )
        if auths != want:
            ok = False
            shown = [(m, u, "right password" if p == AUTH_PASSWORD else "wrong password")
                     for m, u, p in auths]  # fmt: skip
            details.append(
                f"{impl}: the server saw {shown}, expected {sc.mechanism} as {AUTH_USER}"
            )
        if leaked:
            ok = False
            details.append(f"{impl}: a secret in transcript lines {leaked} (-1: the error)")
        if not redacted:
            ok = False
            details.append(f"{impl}: no transcript line marked redacted")
    return _three_sides_row(
        sc,
        f"AUTH {sc.mechanism}: the server saw the right credentials; no secret in a transcript",
        cells,
        ok,
        details,
    )


def _transcript_row(
    sc: SmtpScenario,
    res: dict[str, SmtpResult],
    streams: dict[str, bytes],
    replies: dict[str, bytes],
) -> Row:
    """Each side's transcript is what the wire carried, both ways (decrypted for TLS); the
    lines carrying AUTH secrets are redacted in it, so they are left out on both sides."""
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        sent_lines = [t for t in result.transcript if t.direction is Direction.SENT]
        sent = b"".join(t.data for t in sent_lines if not t.redacted)
        wire_cmds = split_commands(streams[impl])
        secret = [c for c in wire_cmds if _has_secret(c)]
        wire_out = b"".join(c for c in wire_cmds if not _has_secret(c))
        redacted = sum(t.redacted for t in sent_lines)
        got = b"".join(t.data for t in result.transcript if t.direction is Direction.RECEIVED)
        problems = []
        if sent != wire_out:
            problems.append(
                f"{impl}: transcript sent {len(sent)} bytes, wire carried {len(wire_out)}"
            )
        if len(secret) != redacted:
            problems.append(
                f"{impl}: {len(secret)} secret lines on the wire, "
                f"{redacted} redacted in the transcript"
            )
        if got != replies[impl]:
            problems.append(
                f"{impl}: transcript received {len(got)} bytes, wire carried {len(replies[impl])}"
            )
        cells[impl] = "matches the wire" if not problems else "differs"
        ok = ok and not problems
        details += problems
    return _three_sides_row(
        sc,
        "transcript = " + ("decrypted " if sc.tls else "") + "wire (both directions)",
        cells,
        ok,
        details,
    )


def _grouping_row(
    sc: SmtpScenario,
    runs: dict[str, SideRun],
    res: dict[str, SmtpResult],
    logs: dict[str, list[Connection]],
) -> Row:
    """With PIPELINING asked for and offered, MAIL, every RCPT and DATA leave in one write
    (one segment here: a few short lines; over TLS one record, which the server reads in one
    piece); without it, MAIL goes alone."""
    cells, details, ok = {}, [], True
    for impl in ("handrolled", "reference"):
        offered = "PIPELINING" in dict(res[impl].extensions)
        want = 2 + len(sc.recipients) if sc.pipelining and offered else 1
        if sc.tls and impl in logs:
            group = mail_group([chunk for c in logs[impl] for chunk in c.chunks])
        else:
            group = mail_group(tcp_segments(runs[impl].frames, sc.port, outgoing=True))
        cells[impl] = f"{len(group)} in the MAIL write"
        if len(group) != want:
            ok = False
            details.append(f"{impl}: expected {want} commands in the MAIL write, got {group!r}")
    return Row.of_sides(
        sc.name,
        "pipelined group: MAIL, RCPT..., DATA in one write"
        if sc.pipelining
        else "no pipelining: MAIL written alone",
        cells,
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
    witness_view = [(f, r, fix_bare_lf(c)) for f, r, c in views["smtplib"]]
    expected_count = 1 if sc.delivered else 0
    ok = views["handrolled"] == views["reference"] and len(views["handrolled"]) == expected_count
    details = (
        [] if ok else [f"{impl}: {views[impl]!r}"[:300] for impl in ("handrolled", "reference")]
    )
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
