"""`--worksheet`: a short exercise sheet from a capture, with its answer key.

The questions are about the capture's own packets (numbered from 1 as the pcap numbers them):
which bytes hold a field, what a checksum covers, why a hop answers with time exceeded (the
error is matched to the probe it quotes, so the probe's TTL is known), why a TTL gets no
answer at all, why the last probe gets a different reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from compare.anatomy import explain
from compare.anatomy.model import Anatomy
from handrolled.errors import MalformedPacket


@dataclass
class Item:
    question: str
    answer: str


def _top(a: Anatomy, depth: int = 0) -> list:
    return [layer for layer in a.layers if layer.depth == depth]


def kind_of(a: Anatomy) -> str:
    """The packet's kind in the CLI's words (echo-request, time-exceeded, udp-probe...)."""
    top = _top(a)
    if len(top) < 2:
        return "ip"
    upper = top[1]
    if upper.kind in ("icmp", "icmp6"):
        t = a.find(upper.name, "type").value
        v6 = upper.kind == "icmp6"
        names = {8: "echo-request", 0: "echo-reply", 11: "time-exceeded", 3: "dest-unreachable"}
        if v6:
            names = {128: "echo-request", 129: "echo-reply", 3: "time-exceeded"}
            names.update({1: "dest-unreachable", 2: "packet-too-big"})
        return names.get(int(t), f"icmp-type-{t}")
    if upper.kind == "udp":
        return "udp-probe"
    if upper.kind == "tcp":
        syn = a.find(upper.name, "flag_syn").value and not a.find(upper.name, "flag_ack").value
        return "tcp-syn" if syn else "tcp"
    return upper.kind


def probe_key(a: Anatomy, depth: int = 0) -> tuple | None:
    """What identifies a probe: ICMP (ident, seq), UDP (ports), TCP (ports, seq)."""
    layers = _top(a, depth)
    if len(layers) < 2:
        return None
    upper = layers[1]
    values = {f.name: f.value for f in a.fields_of(upper.name)}
    if upper.kind in ("icmp", "icmp6") and "identifier" in values:
        return ("icmp", values["identifier"], values["sequence"])
    if upper.kind == "udp":
        return ("udp", values["src_port"], values["dst_port"])
    if upper.kind == "tcp":
        return ("tcp", values["src_port"], values["dst_port"], values["seq"])
    return None


def _ttl(a: Anatomy, depth: int = 0) -> int:
    ip = _top(a, depth)[0]
    name = "ttl" if ip.kind == "ipv4" else "hop_limit"
    return int(a.find(ip.name, name).value)


def _span(a: Anatomy, layer: str, name: str) -> str:
    f = a.find(layer, name)
    first, last = f.byte_start, f.byte_end - 1
    return f"byte{'s' if last > first else ''} {first}{f'-{last}' if last > first else ''}"


def build_items(packets: list[tuple[int, bytes]]) -> list[Item]:
    """The questions for a capture: ``packets`` are (1-based index, IP datagram) pairs."""
    dissected: list[tuple[int, Anatomy]] = []
    for index, ip in packets:
        try:
            dissected.append((index, explain(ip)))
        except MalformedPacket:
            continue
    items: list[Item] = []
    probes = {}
    for index, a in dissected:
        if kind_of(a) in ("echo-request", "udp-probe", "tcp-syn"):
            probes.setdefault(probe_key(a), (index, a))
    request = next(((i, a) for i, a in dissected if kind_of(a) == "echo-request"), None)
    if request:
        i, a = request
        ip, icmp = _top(a)[0], _top(a)[1]
        f = a.find(icmp.name, "identifier")
        items.append(
            Item(
                f"Packet {i} is an echo request. Which bytes hold its identifier, counting from"
                " the first byte of the IP header (byte 0)? What is its value?",
                f"{_span(a, icmp.name, 'identifier')} ({f.raw(a.packet).hex(' ')}): identifier"
                f" {f.value}. The {ip.name} header is {ip.end - ip.start} bytes, and the identifier"
                f" follows type, code and checksum, 4 bytes into the {icmp.name} message"
                f" ({f.rfc}).",
            )
        )
        if ip.kind == "ipv4":
            hl = a.find(ip.name, "ihl")
            items.append(
                Item(
                    f"How long is packet {i}'s IPv4 header, and which bits say so?",
                    f"IHL, the low 4 bits of byte 0 ({hl.bits(a.packet)}), is {hl.value} 32-bit"
                    f" words: {hl.value * 4} bytes ({hl.rfc}).",
                )
            )
    with_sum = [(i, a) for i, a in dissected if a.checksums]
    for i, a in (
        with_sum[:1] + [x for x in with_sum if any(c.pseudo_header for c in x[1].checksums)][:1]
    ):
        work = next((c for c in a.checksums if c.pseudo_header), a.checksums[-1])
        verdict = "verifies" if work.verifies else "does not verify"
        extra = (
            " The pseudo-header repeats the addresses, protocol and length from the IP header,"
            " so a packet delivered to the wrong address fails the check."
            if work.pseudo_header
            else ""
        )
        items.append(
            Item(
                f"What does the {work.layer} checksum of packet {i} (0x{work.stored:04x}) verify?",
                f"It covers {work.covers} ({work.rfc}). Summing the 16-bit words with the"
                f" checksum as zero gives 0x{work.total:04x}; its complement is"
                f" 0x{work.computed:04x}; the stored value {verdict}.{extra}",
            )
        )
    answered = set()
    expired: list[Item] = []  # one per hop: the sheet keeps the first and the last
    insert_at = len(items)
    for i, a in dissected:
        kind = kind_of(a)
        if kind not in ("time-exceeded", "dest-unreachable", "echo-reply"):
            continue
        sender = a.find(_top(a)[0].name, "src").value
        key = probe_key(a, 1) if kind != "echo-reply" else ("icmp", *probe_key(a)[1:])
        sent = probes.get(key)
        if sent is not None:
            answered.add(key)
        if kind == "time-exceeded" and sent is not None:
            j, probe = sent
            hop = _ttl(probe)
            expired.append(
                Item(
                    f"Why does hop {hop} ({sender}) answer with type {_type(a)} in packet {i}?",
                    f"Packet {i} quotes probe {j} ({_key_text(key)}), sent with TTL {hop}. Every"
                    " router decrements the TTL by one (RFC 791 §3.2, RFC 1812 §5.3.1); router"
                    f" {hop} took it to 0, discarded the probe and sent time exceeded, code 0"
                    f" ({_top(a)[1].name}: {a.find(_top(a)[1].name, 'type').rfc}). The quoted"
                    f" header shows TTL {_ttl(a, 1)}: the probe as that router received it.",
                )
            )
        elif kind in ("echo-reply", "dest-unreachable") and sent is not None:
            j, probe = sent
            items.append(
                Item(
                    f"Probe {j} (TTL {_ttl(probe)}) gets packet {i},"
                    f" {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a time"
                    " exceeded. Why?",
                    f"It reached its destination {sender}: its TTL lasted the whole path, so no"
                    f" router discarded it, and the destination itself answered ({kind}).",
                )
            )
    items[insert_at:insert_at] = expired[:1] + expired[-1:] if len(expired) > 1 else expired
    silent = [p for key, p in probes.items() if key not in answered]
    if silent and answered:
        j, probe = silent[0]
        items.append(
            Item(
                f"Nothing answers probe {j} (TTL {_ttl(probe)}). Give a reason.",
                "The router that expired it sent no time exceeded: routers may rate-limit or"
                " filter ICMP (RFC 1812 §4.3.2.8), and in the lab that router is configured to"
                " stay silent; a traceroute prints '*' for it.",
            )
        )
    return items


def _type(a: Anatomy) -> int:
    return int(a.find(_top(a)[1].name, "type").value)


def _key_text(key: tuple) -> str:
    if key[0] == "icmp":
        return f"identifier {key[1]}, sequence {key[2]}"
    return f"ports {key[1]} -> {key[2]}" + (f", sequence {key[3]}" if len(key) > 3 else "")


def render_worksheet(items: list[Item], source: str) -> str:
    """Markdown: the questions, then the answer key on its own."""
    out = ["# Packet anatomy worksheet", "", f"Capture: {source}", "", "## Questions", ""]
    out += [f"{n}. {item.question}" for n, item in enumerate(items, start=1)]
    out += ["", "## Answer key", ""]
    out += [f"{n}. {item.answer}" for n, item in enumerate(items, start=1)]
    return "\n".join(out) + "\n"
