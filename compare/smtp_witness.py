"""The smtplib witness rules: how smtplib's commands may differ from the hand-rolled client's.

smtplib is a second, independent client.  Its commands must equal ours except where a rule
below, each with its RFC or smtplib reason, allows the difference; every rule met is shown in
the report as an allowed difference, never hidden.
"""

from __future__ import annotations

from compare.packets import Allowed

RFC5321_CASE = "RFC 5321 §2.4: command verbs are case-insensitive; smtplib sends them in lower case"


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
    "login_initial_response": "RFC 4954 §4: AUTH may carry the initial response; smtplib sends "
    "LOGIN's user name with the command (AUTH LOGIN <user>), we wait for the 334 challenge",
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


def _login_initial_response(ours: list[bytes], theirs: list[bytes]) -> list[bytes] | None:
    """Ours with ``AUTH LOGIN`` and the user-name line joined into one, where smtplib sent
    them so (an initial response, RFC 4954 §4), else None."""
    for i, command in enumerate(ours[:-1]):
        if command.upper() != b"AUTH LOGIN\r\n" or i >= len(theirs):
            continue
        joined = command[:-2] + b" " + ours[i + 1]
        if theirs[i].upper() == joined.upper() and theirs[i][11:] == ours[i + 1]:
            return [*ours[:i], joined, *ours[i + 2 :]]
    return None


def fix_bare_lf(data: bytes) -> bytes:
    """Every line end CRLF (a bare LF made CRLF), as RFC 5321 §2.3.8 wants on the wire."""
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


def witness(
    ours: list[bytes], theirs: list[bytes], message: bytes
) -> tuple[bool, list[str], list[Allowed]]:
    """Compare smtplib's commands with ours, applying only the WITNESS_ALLOWED rules."""
    notes, used = [], set()
    merged = _login_initial_response(ours, theirs)
    if merged is not None:
        ours = merged
        used.add("login_initial_response")
    extra = _pipelined_data(ours, theirs) if len(ours) == len(theirs) + 1 else None
    if extra is not None:
        ours = ours[:extra] + ours[extra + 1 :]
        used.add("pipelined_data")
    ok = len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=False):
        if a == b:
            continue
        if a.endswith(b"\r\n.\r\n") and fix_bare_lf(b) == a:
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
