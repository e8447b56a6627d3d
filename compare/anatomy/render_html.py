"""The self-contained HTML page: RFC-style bit diagrams, the hex dump, highlighting both ways.

Every leaf gets an index ``i``; its diagram cells and its table row carry ``data-f="i"``, and
each byte of the hex dump lists the leaves that own any of its bits in ``data-fs``.  The page's
script (inline, like its CSS: nothing is loaded from the network) adds the class ``hl`` to a
hovered field's cells, row and bytes, or to a hovered byte's fields and their bytes; a click
(or Enter on a focused cell) makes that selection stick with the class ``sel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from compare.anatomy.model import Anatomy, Field
from compare.anatomy.render_text import bytes_text, offset_text, value_text, verdict_lines

TEMPLATES = Path(__file__).parent / "templates"
ROW_BITS = 32  # one row of the diagram is a 32-bit word, as in the RFCs


@dataclass
class Cell:
    index: int
    row: int  # 1-based grid row inside the layer's diagram
    col: int  # 1-based first bit column
    span: int
    label: str  # empty for a continuation piece
    value: str
    agree: bool | None
    title: str


def cells(anatomy: Anatomy, layer_name: str, layer_start: int) -> list[Cell]:
    """The diagram pieces of a layer's leaves, split at 32-bit row boundaries."""
    out = []
    for index, f in enumerate(anatomy.fields):
        if f.layer != layer_name:
            continue
        pos, left, first = f.bit_offset - layer_start * 8, f.bit_length, True
        title = f"{f.name} = {value_text(f.value, f.display)} ({f.rfc})"
        while left > 0:
            span = min(left, ROW_BITS - pos % ROW_BITS)
            out.append(
                Cell(
                    index,
                    pos // ROW_BITS + 1,
                    pos % ROW_BITS + 1,
                    span,
                    _label(f) if first else "",
                    _short(value_text(f.value, f.display), span) if first else "",
                    f.agree,
                    title,
                )
            )
            pos, left, first = pos + span, left - span, False
    return out


def _label(f: Field) -> str:
    """The name as a diagram cell shows it: a one-bit flag by its RFC abbreviation."""
    if f.name.startswith("flag_"):
        return f.name[5:].upper()[:3]
    return f.name


def _short(text: str, span: int) -> str:
    room = max(3, span * 2)  # about two characters fit per bit column
    return text if len(text) <= room else text[: room - 1] + "…"


def byte_owners(anatomy: Anatomy) -> list[list[int]]:
    """For each byte of the packet, the indexes of the leaves that own any of its bits."""
    owners: list[list[int]] = [[] for _ in anatomy.packet]
    for index, f in enumerate(anatomy.fields):
        for b in range(f.byte_start, f.byte_end):
            owners[b].append(index)
    return owners


def _row(index: int, f: Field, packet: bytes) -> dict:
    return {
        "index": index,
        "offset": offset_text(f),
        "bits": bytes_text(f, packet, per_line=8, max_bytes=24),
        "layer": f.layer,
        "name": f.name,
        "value": value_text(f.value, f.display),
        "scapy": value_text(f.scapy),
        "agree": f.agree,
        "meaning": f.meaning,
        "rfc": f.rfc,
    }


def render_html(anatomy: Anatomy) -> str:
    """The whole page as one string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    owners = byte_owners(anatomy)
    lines = [
        {
            "offset": i,
            "bytes": [
                (i + j, anatomy.packet[i + j], owners[i + j])
                for j in range(16)
                if i + j < len(anatomy.packet)
            ],
        }
        for i in range(0, len(anatomy.packet), 16)
    ]
    layers = [
        {"layer": layer, "cells": cells(anatomy, layer.name, layer.start)}
        for layer in anatomy.layers
    ]
    checksums = [{"work": w, "verdict": verdict_lines(w)} for w in anatomy.checksums]
    return env.get_template("anatomy.html.j2").render(
        anatomy=anatomy,
        layers=layers,
        lines=lines,
        rows=[_row(i, f, anatomy.packet) for i, f in enumerate(anatomy.fields)],
        checksums=checksums,
        disagreements=anatomy.disagreements,
        compared=sum(f.agree is not None for f in anatomy.fields),
        row_bits=ROW_BITS,
    )
