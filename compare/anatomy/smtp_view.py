"""`anatomy smtp --pcap FILE`: an SMTP dialogue read off the wire, command by command.

TCP payloads are put back in order per direction (a segment seen twice, as on loopback where
each one is captured leaving and arriving, counts once), split into CRLF lines (RFC 5321
§2.3.8), and each reply is explained by its code: the first digit's class and the second
digit's category (RFC 5321 §4.2.1).  The message itself (between DATA's 354 and the lone
".") is summarised, and after STARTTLS's 220 the rest is TLS (RFC 3207 §4): not shown.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

from tabulate import tabulate

from compare.anatomy.sources import PcapError, read_pcap
from handrolled.errors import MalformedPacket
from handrolled.ip import IpProto, decode_ipv4, decode_ipv6
from handrolled.transport import TcpFlags, decode_tcp

REPLY_CLASS = {
    "2": "positive completion: the action is done",
    "3": "positive intermediate: go on, send the rest",
    "4": "transient negative completion: not now, try again later",
    "5": "permanent negative completion: no, do not repeat as is",
}
REPLY_CATEGORY = {
    "0": "syntax",
    "1": "information",
    "2": "connections",
    "5": "mail system",
}
COMMANDS = {
    "EHLO": ("extended hello: who the client is; the server lists extensions", "RFC 5321 §4.1.1.1"),
    "HELO": ("hello: who the client is", "RFC 5321 §4.1.1.1"),
    "MAIL": ("starts a transaction: the reverse path (sender)", "RFC 5321 §4.1.1.2"),
    "RCPT": ("one recipient (forward path)", "RFC 5321 §4.1.1.3"),
    "DATA": ("the message follows, ended by a lone '.'", "RFC 5321 §4.1.1.4"),
    "BDAT": ("a chunk of the message, by length", "RFC 3030 §2"),
    "RSET": ("abort the transaction", "RFC 5321 §4.1.1.5"),
    "VRFY": ("verify a user name", "RFC 5321 §4.1.1.6"),
    "EXPN": ("expand a mailing list", "RFC 5321 §4.1.1.7"),
    "HELP": ("help text", "RFC 5321 §4.1.1.8"),
    "NOOP": ("nothing: keeps the connection alive", "RFC 5321 §4.1.1.9"),
    "QUIT": ("close the connection", "RFC 5321 §4.1.1.10"),
    "STARTTLS": ("switch the connection to TLS", "RFC 3207 §4"),
    "AUTH": ("authenticate (SASL)", "RFC 4954 §4"),
}
_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


@dataclass
class Turn:
    """One step of the dialogue: a client command, a server reply (all its lines), or a note."""

    who: str  # "C", "S" or "" (a note)
    text: str
    code: str = ""
    meaning: str = ""
    rfc: str = ""


def reply_meaning(code: str) -> str:
    """What a reply code says by its digits (RFC 5321 §4.2.1)."""
    cls = REPLY_CLASS.get(code[0], "not a defined class")
    cat = REPLY_CATEGORY.get(code[1], "unspecified category")
    return f"{code[0]}yz {cls}; x{code[1]}z {cat}"


def _streams(path: str | Path) -> list[tuple[tuple, list[tuple[int, str, bytes]]]]:
    """Per TCP connection: its key and the in-order (time, direction, data) chunks."""
    conns: dict[frozenset, dict] = {}
    for pkt in read_pcap(path):
        if pkt.ip is None:
            continue
        try:
            if pkt.ip[0] >> 4 == 6:
                hdr, body = decode_ipv6(pkt.ip)
                proto = hdr.upper_protocol
            else:
                hdr, body = decode_ipv4(pkt.ip)
                proto = hdr.protocol
            if proto != IpProto.TCP:
                continue
            seg = decode_tcp(body)
        except MalformedPacket:
            continue
        a, b = (hdr.src, seg.src_port), (hdr.dst, seg.dst_port)
        conn = conns.setdefault(frozenset((a, b)), {"first": a, "next": {}, "chunks": []})
        direction = "a" if a == conn["first"] else "b"
        expected = conn["next"].get(direction)
        seq, data = seg.seq, seg.payload
        if TcpFlags.SYN in TcpFlags(seg.flags):
            conn["next"][direction] = (seq + 1) & 0xFFFFFFFF
            continue
        if not data:
            continue
        if expected is not None:
            behind = (expected - seq) & 0xFFFFFFFF
            if behind and behind < 1 << 31:  # already seen (the loopback double, a resend)
                data = data[behind:] if behind < len(data) else b""
                seq = expected
            if not data:
                continue
        conn["next"][direction] = (seq + len(data)) & 0xFFFFFFFF
        conn["chunks"].append((pkt.index, direction, data))
    return [(tuple(sorted(key)), c["chunks"]) for key, c in conns.items() if c["chunks"]]


def dialogue(path: str | Path) -> list[Turn]:
    """The first SMTP dialogue in a capture; ``PcapError`` if the capture holds none."""
    for _key, chunks in _streams(path):
        server = chunks[0][1]  # SMTP: the server speaks first (RFC 5321 §3.1)
        if _REPLY_LINE.match(chunks[0][2].split(b"\r\n", 1)[0]):
            return _turns(chunks, server)
    raise PcapError(f"{path}: no SMTP dialogue (a TCP stream opened by a reply code) found")


def _turns(chunks: list[tuple[int, str, bytes]], server: str) -> list[Turn]:
    buffers = {"C": b"", "S": b""}
    turns: list[Turn] = []
    state = {"data": False, "content": [], "reply": [], "last": "", "tls": False}
    for _index, direction, data in chunks:
        who = "S" if direction == server else "C"
        buffers[who] += data
        while b"\r\n" in buffers[who] and not state["tls"]:
            line, buffers[who] = buffers[who].split(b"\r\n", 1)
            _line(turns, state, who, line)
    if state["tls"]:
        turns.append(Turn("", "TLS from here on: the rest is encrypted", rfc="RFC 3207 §4"))
    return turns


def _line(turns: list[Turn], state: dict, who: str, line: bytes) -> None:
    text = line.decode("utf-8", "replace")
    if who == "C":
        if state["data"]:
            if line == b".":
                content = state["content"]
                size = sum(len(x) + 2 for x in content)
                turns.append(
                    Turn(
                        "C",
                        f"(message: {len(content)} lines, {size} bytes)",
                        meaning="the message content (RFC 5322)",
                        rfc="RFC 5321 §4.1.1.4",
                    )
                )
                turns.append(
                    Turn(
                        "C",
                        ".",
                        meaning="end of data: a line with a lone '.'",
                        rfc="RFC 5321 §4.1.1.4",
                    )
                )
                state["data"], state["content"] = False, []
            else:
                state["content"].append(line)
            return
        verb = text.split(" ", 1)[0].upper()
        meaning, rfc = COMMANDS.get(verb, ("not a command RFC 5321 defines", "RFC 5321 §4.1"))
        shown = text if verb != "AUTH" else " ".join([*text.split(" ")[:2], "…"])
        turns.append(Turn("C", shown, meaning=meaning, rfc=rfc))
        state["last"] = verb
        return
    match = _REPLY_LINE.match(line)
    if not match:
        turns.append(Turn("S", text, meaning="not a reply line (RFC 5321 §4.2)"))
        return
    code, more = match.group(1).decode(), match.group(2) == b"-"
    state["reply"].append(text)
    if more:
        return  # RFC 5321 §4.2.1: "ddd-" lines continue the reply, "ddd " ends it
    lines, state["reply"] = state["reply"], []
    rfc = "RFC 5321 §4.2.1"
    if not turns:
        rfc = "RFC 5321 §3.1, §4.2.1"  # the greeting
    turns.append(Turn("S", "\n".join(lines), code, reply_meaning(code), rfc))
    if code == "354":
        state["data"] = True
    if code == "220" and state["last"] == "STARTTLS":
        state["tls"] = True


def render_smtp(turns: list[Turn], fmt: str = "terminal") -> str:
    """The dialogue as a table: terminal (within 100 columns), Markdown or JSON."""
    if fmt == "json":
        import json

        return json.dumps({"dialogue": [asdict(t) for t in turns]}, indent=2) + "\n"
    markdown = fmt == "markdown"
    rows = []
    for i, t in enumerate(turns, start=1):
        text = t.text.replace("\n", "<br>") if markdown else t.text
        rows.append([i, t.who, text, t.code, t.meaning, t.rfc])
    headers = ["#", "who", "line", "code", "meaning", "RFC"]
    if markdown:
        rows = [[str(c).replace("|", "\\|") for c in r] for r in rows]
        table = tabulate(rows, headers=headers, tablefmt="github")
        return f"## SMTP dialogue\n\n{table}\n"
    table = tabulate(
        rows,
        headers=headers,
        tablefmt="grid",
        maxcolwidths=[3, 3, 28, 4, 26, 12],
        disable_numparse=True,
    )
    legend = textwrap.wrap(
        "C: client, S: server. Codes: 2yz done, 3yz go on, 4yz try later, 5yz refused"
        " (RFC 5321 §4.2.1).",
        100,
    )
    return "SMTP dialogue\n" + table + "\n" + "\n".join(legend) + "\n"
