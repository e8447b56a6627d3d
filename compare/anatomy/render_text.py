"""Text views of an Anatomy: the terminal (tabulate grids within 100 columns) and Markdown."""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from compare.anatomy.model import Anatomy, ChecksumWork, Field, Layer, Value

WIDTH = 100
# off, bytes/bits, field, hand-rolled, scapy, agreement, meaning (RFC): sum + 3 * 7 + 1 <= 100
_COLS = [5, 13, 15, 13, 12, 2, 15]
HEADERS = ["off", "bytes/bits", "field / RFC", "hand-rolled", "scapy", "=", "meaning"]


def offset_text(f: Field) -> str:
    """Byte offset, ``byte:bit`` for a field that starts inside a byte."""
    return f"{f.byte_start}" if f.bit_offset % 8 == 0 else f"{f.byte_start}:{f.bit_offset % 8}"


def bytes_text(f: Field, packet: bytes, per_line: int = 4, max_bytes: int | None = 16) -> str:
    """The field's bits (bit fields) or its bytes in hex, ``per_line`` bytes a line."""
    if f.is_bits:
        return f.bits(packet)
    raw = f.raw(packet)
    cut = max_bytes is not None and len(raw) > max_bytes
    shown = raw[:max_bytes] if cut else raw
    lines = [shown[i : i + per_line].hex(" ") for i in range(0, len(shown), per_line)]
    return "\n".join(lines) + (f"\n… {len(raw)} bytes" if cut else "")


def value_text(value: Value, display: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool) and display and display != str(value):
        return f"{value} ({display})"
    return display or str(value)


def mark(f: Field) -> str:
    return {True: "ok", False: "NO", None: ""}[f.agree]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hexdump(packet: bytes) -> list[str]:
    """Classic 16-bytes-a-line hex dump with offsets and printable text."""
    lines = []
    for i in range(0, len(packet), 16):
        chunk = packet[i : i + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:04x}  {chunk[:8].hex(' '):<23}  {chunk[8:].hex(' '):<23}  {text}")
    return lines


def layer_heading(layer: Layer) -> str:
    indent = "  " * layer.depth
    span = f"bytes {layer.start}-{layer.end - 1}"
    return f"{indent}{layer.name}: {layer.summary}  [{span}]"


def _terminal_rows(anatomy: Anatomy, layer: Layer) -> list[list[str]]:
    rows = []
    for f in anatomy.fields_of(layer.name):
        rows.append(
            [
                offset_text(f),
                bytes_text(f, anatomy.packet),
                f"{f.name}\n{f.rfc}",
                _cut(value_text(f.value, f.display), 52),
                _cut(value_text(f.scapy), 48),
                mark(f),
                f.meaning,
            ]
        )
    return rows


def _checksum_lines(work: ChecksumWork, fmt: str) -> list[str]:
    lines = [f"Checksum of {work.layer}: over {work.covers} ({work.rfc})"]
    if work.pseudo_header:
        parts = [[name, part.hex(" ")] for name, part in work.pseudo_header]
        lines.append("pseudo-header:")
        lines.append(tabulate(parts, headers=["part", "bytes"], tablefmt=fmt))
    rows = [
        [i + 1, w.label, f"0x{w.word:04x}", f"0x{w.total:04x}", "carry folded" if w.carried else ""]
        for i, w in enumerate(work.words)
    ]
    lines.append(
        tabulate(rows, headers=["#", "word from", "word", "sum", "end-around"], tablefmt=fmt)
    )
    for line in verdict_lines(work):
        lines.extend(textwrap.wrap(line, WIDTH, subsequent_indent="  "))
    return lines


def verdict_lines(work: ChecksumWork) -> list[str]:
    """The end of the sum: complement, stored value, verdict, scapy's opinion."""
    verdict = "verifies" if work.verifies else "does NOT verify"
    out = [
        f"one's complement sum 0x{work.total:04x}; its complement 0x{work.computed:04x}"
        f" is the checksum; the packet carries 0x{work.stored:04x}.",
        f"receiver's check: the sum including the stored checksum is"
        f" 0x{work.receiver_total:04x} (0xffff, all ones, means it verifies): it {verdict}.",
    ]
    if work.scapy is not None:
        out.append(f"scapy recomputes 0x{work.scapy:04x}.")
    if work.note:
        out.append(f"note: {work.note}")
    return out


def render_terminal(anatomy: Anatomy) -> str:
    """The terminal view: one grid per layer, the hex dump, the checksums worked out."""
    out = [f"{anatomy.title}  ({len(anatomy.packet)} bytes)", ""]
    out.append("off: byte offset in the packet (byte:bit inside a byte); =: scapy agrees (ok/NO)")
    for layer in anatomy.layers:
        out.append("")
        out.append(layer_heading(layer))
        rows = _terminal_rows(anatomy, layer)
        out.append(
            tabulate(
                rows, headers=HEADERS, tablefmt="grid", maxcolwidths=_COLS, disable_numparse=True
            )
        )
    out.append("")
    out.extend(disagreement_lines(anatomy))
    out.append("hex dump:")
    out.extend(hexdump(anatomy.packet))
    for work in anatomy.checksums:
        out.append("")
        out.extend(_checksum_lines(work, "simple"))
    out.extend(["", *anatomy.notes] if anatomy.notes else [])
    return "\n".join(out) + "\n"


def disagreement_lines(anatomy: Anatomy) -> list[str]:
    bad = anatomy.disagreements
    if not bad:
        compared = sum(f.agree is not None for f in anatomy.fields)
        return [f"hand-rolled and scapy agree on all {compared} fields both decode.", ""]
    lines = [f"DISAGREEMENT on {len(bad)} field(s):"]
    lines += [f"  {f.layer}.{f.name}: hand-rolled {f.value!r}, scapy {f.scapy!r}" for f in bad]
    return [*lines, ""]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render_markdown(anatomy: Anatomy) -> str:
    """Markdown for course notes: a table per layer, the hex dump, the checksums."""
    out = [f"## {anatomy.title}", "", f"{len(anatomy.packet)} bytes.", ""]
    for layer in anatomy.layers:
        level = "####" if layer.depth else "###"
        out += [f"{level} {layer.name}: {layer.summary} (bytes {layer.start}-{layer.end - 1})", ""]
        rows = [
            [
                offset_text(f),
                f"`{bytes_text(f, anatomy.packet, per_line=64, max_bytes=None)}`",
                f"`{f.name}`",
                _md_escape(value_text(f.value, f.display)),
                _md_escape(value_text(f.scapy)),
                {True: "✓", False: "✗ **differs**", None: "—"}[f.agree],
                _md_escape(f.meaning),
                f.rfc,
            ]
            for f in anatomy.fields_of(layer.name)
        ]
        headers = ["offset", "bits/bytes", "field", "hand-rolled", "scapy", "agree", "meaning"]
        table = tabulate(rows, headers=[*headers, "RFC"], tablefmt="github", disable_numparse=True)
        out += [table, ""]
    out += [line for line in disagreement_lines(anatomy) if line]
    out += ["", "```", *hexdump(anatomy.packet), "```"]
    for work in anatomy.checksums:
        out += ["", f"### Checksum of {work.layer}", "", f"Over {work.covers} ({work.rfc}).", ""]
        if work.pseudo_header:
            parts = [[name, f"`{part.hex(' ')}`"] for name, part in work.pseudo_header]
            out += [tabulate(parts, headers=["pseudo-header", "bytes"], tablefmt="github"), ""]
        rows = [
            [
                i + 1,
                w.label,
                f"`{w.word:04x}`",
                f"`{w.total:04x}`",
                "carry folded" if w.carried else "",
            ]
            for i, w in enumerate(work.words)
        ]
        out += [
            tabulate(rows, headers=["#", "word from", "word", "sum", "carry"], tablefmt="github")
        ]
        out += ["", *verdict_lines(work)]
    if anatomy.notes:
        out += ["", *anatomy.notes]
    return "\n".join(out) + "\n"
