"""`--html FILE`: one self-contained page (inline CSS, inline SVG plots, nothing fetched).

A summary table, then per scenario its checks with their tolerances, the two sides' packets side
by side with the differing bytes highlighted (amber where a named rule allows the difference,
red where nothing does), and matplotlib plots: per probe the RTT each side reported, the wire's
RTT for that probe and the lab's promised window; per hop the traceroute RTTs against the truth.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compare import report, wire
from compare.packets import tcp_stream
from compare.report import ScenarioRun
from handrolled.results import PingResult, SmtpResult, TraceResult

TEMPLATES = Path(__file__).parent / "templates"
MAX_PAIRS = 4  # packet pairs shown per scenario (those with forbidden differences first)
STREAM_BYTES = 1024  # SMTP client stream shown per side
SIDE_STYLE = {"handrolled": ("tab:blue", "o"), "reference": ("tab:orange", "s")}
SVG_PARAMS = {"svg.fonttype": "none", "svg.hashsalt": "wiretwin"}  # text as text; stable ids


# ---- packets side by side ----------------------------------------------------------------------
def _printable(chunk: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)


def hex_rows(left: bytes, right: bytes, allowed: set[int] = frozenset()) -> list[dict]:
    """Rows of 16 bytes per side, each byte with its class: "" (same), "allowed", "diff"."""
    rows = []
    for start in range(0, max(len(left), len(right)), report.HEX_WIDTH):
        sides = []
        for data, other in ((left, right), (right, left)):
            cells = []
            for i in range(start, min(start + report.HEX_WIDTH, max(len(left), len(right)))):
                if i >= len(data):
                    cells.append({"hex": "--", "cls": "diff"})
                    continue
                same = i < len(other) and data[i] == other[i]
                cls = "" if same else ("allowed" if i in allowed else "diff")
                cells.append({"hex": f"{data[i]:02x}", "cls": cls})
            sides.append(cells)
        rows.append(
            {
                "offset": f"{start:04x}",
                "left": sides[0],
                "right": sides[1],
                "left_text": _printable(left[start : start + report.HEX_WIDTH]),
                "right_text": _printable(right[start : start + report.HEX_WIDTH]),
            }
        )
    return rows


def _probes(result: Any) -> list:
    if isinstance(result, PingResult):
        return list(result.probes)
    if isinstance(result, TraceResult):
        return [p for hop in result.hops for p in hop.probes]
    return []


def packet_views(sr: ScenarioRun) -> list[dict]:
    """The packets to show side by side: probe pairs, or the SMTP client streams."""
    runs = sr.runs
    if not {"handrolled", "reference"} <= runs.keys():
        return []
    hr, ref = runs["handrolled"].result, runs["reference"].result
    if isinstance(hr, SmtpResult) and isinstance(ref, SmtpResult):
        left = tcp_stream(runs["handrolled"].frames, hr.port, True)[:STREAM_BYTES]
        right = tcp_stream(runs["reference"].frames, ref.port, True)[:STREAM_BYTES]
        return [
            {
                "label": "client command stream (TCP payload, client to server)",
                "rows": hex_rows(left, right),
                "differs": left != right,
            }
        ]
    sides = {"handrolled": _probes(hr), "reference": _probes(ref)}
    if not sides["handrolled"] or not sides["reference"]:
        return []
    frames = {impl: runs[impl].frames for impl in sides}
    views = []
    for probe, wire_l, wire_r in wire.packet_pairs(sides, frames):
        left, right = wire_l.request, wire_r.request
        allowed = report.allowed_offsets(left, right)
        forbidden = any(
            i not in allowed
            for i in range(max(len(left), len(right)))
            if i >= len(left) or i >= len(right) or left[i] != right[i]
        )
        views.append(
            {
                "label": f"probe seq {probe.seq} ttl {probe.ttl} (IP datagram as captured)",
                "rows": hex_rows(left, right, allowed),
                "differs": forbidden,
            }
        )
    views.sort(key=lambda v: not v["differs"])  # stable: forbidden differences first
    return views[:MAX_PAIRS]


# ---- plots -------------------------------------------------------------------------------------
def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with rc_context(SVG_PARAMS):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def ping_plot(sr: ScenarioRun) -> str | None:
    """Per probe: each side's reported RTT and the wire's, and the lab's promised window."""
    figs = sr.figures
    if not any(v is not None for f in figs.values() for v in f.get("rtts_ms", [])):
        return None
    with rc_context(SVG_PARAMS):
        fig = Figure(figsize=(7, 3))
        ax = fig.add_subplot()
        truth = sr.truth or {}
        if truth.get("window_ms"):
            low, high = truth["window_ms"]
            ax.axhspan(low, high, color="tab:green", alpha=0.15, label="lab window (min RTT)")
            ax.axhline(truth["promised_ms"], color="tab:green", ls="--", label="lab promise")
        for impl, (colour, marker) in SIDE_STYLE.items():
            f = figs.get(impl, {})
            seqs = f.get("seqs", [])
            ax.plot(seqs, f.get("rtts_ms", []), marker=marker, color=colour, label=f"{impl}")
            ax.plot(seqs, f.get("wire_rtts_ms", []), marker="x", ls=":", color=colour,
                    label=f"{impl} on the wire")  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("probe (ICMP sequence)")
        ax.set_ylabel("RTT (ms)")
        ax.set_title(sr.name)
        ax.legend(fontsize="small", loc="best")
        return _svg(fig)


def trace_plot(sr: ScenarioRun) -> str | None:
    """Per hop: every probe's RTT on each side, against the lab's promise and window."""
    figs = sr.figures
    if not any(f.get("rtts_ms") for f in figs.values()):
        return None
    with rc_context(SVG_PARAMS):
        fig = Figure(figsize=(7, 3))
        ax = fig.add_subplot()
        hops = [h for h in (sr.truth or {}).get("hops", []) if h["answers"] and h["ttl"]]
        if hops:
            ttls = [h["ttl"] for h in hops]
            ax.fill_between(ttls, [h["window_ms"][0] for h in hops],
                            [h["window_ms"][1] for h in hops], color="tab:green", alpha=0.15,
                            label="lab window (min RTT)")  # fmt: skip
            ax.plot(ttls, [h["rtt_ms"] for h in hops], "--", color="tab:green", label="lab promise")
        for shift, (impl, (colour, marker)) in zip((-0.1, 0.1), SIDE_STYLE.items(), strict=True):
            points = figs.get(impl, {}).get("rtts_ms", [])
            ax.scatter([t + shift for t, _ in points], [v for _, v in points], marker=marker,
                       color=colour, label=impl)  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("hop (TTL)")
        ax.set_ylabel("RTT (ms)")
        ax.set_title(sr.name)
        ax.legend(fontsize="small", loc="best")
        return _svg(fig)


# ---- the page ----------------------------------------------------------------------------------
def scenario_view(sr: ScenarioRun) -> dict:
    plot = {"ping": ping_plot, "traceroute": trace_plot}.get(sr.kind)
    return {
        "name": sr.name,
        "id": report.slug(sr.name),
        "ok": sr.ok,
        "passed": sr.passed,
        "total": len(sr.rows),
        "figures": report.key_figures(sr),
        "checks": [
            {"row": r, "lines": [d.describe() for d in r.differences] or r.details} for r in sr.rows
        ],
        "plot": plot(sr) if plot else None,
        "packets": packet_views(sr),
    }


def render(scenarios: Sequence[ScenarioRun], meta: dict) -> str:
    """The page as a string."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    rows = [r for sr in scenarios for r in sr.rows]
    return env.get_template("report.html.j2").render(
        meta=meta,
        scenarios=[scenario_view(sr) for sr in scenarios],
        closing=report.closing_line(rows),
        failed=sum(not r.ok for r in rows),
        notes=report.allowed_notes(rows),
    )


def write_html(path: str | Path, scenarios: Sequence[ScenarioRun], meta: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(scenarios, meta), encoding="utf-8")
