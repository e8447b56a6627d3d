"""The report: a summary-first terminal view, the full table (tabulate), JSON, pcaps, and the
GitHub Actions job summary and error annotations.

Every view reads the same rows (and the per-scenario runs they came from): nothing here
re-parses text.  HTML and JUnit live in compare/report_html.py and compare/junit.py.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compare import packets, wire
from compare.capture import write_pcap
from compare.scenario import Difference, Row, SideRun
from handrolled.results import Outcome, PingResult, SmtpResult, TraceResult

CELL_WIDTH = 44
HEX_WIDTH = 16  # bytes per hex-dump line
HEX_PAIRS_SHOWN = 2  # packet pairs hex-dumped per failing check in the terminal
SUMMARY_HEADERS = ("scenario", "checks", "handrolled | reference", "verdict")
ANSWERED = (Outcome.REPLY, Outcome.TIME_EXCEEDED, Outcome.UNREACHABLE)


@dataclass
class ScenarioRun:
    """One scenario's outcome as the report sees it: its rows, each side's run, the truth."""

    name: str
    kind: str  # "ping", "traceroute", "smtp"
    rows: list[Row]
    runs: dict[str, SideRun] = field(default_factory=dict)
    truth: dict[str, Any] | None = None  # what the lab promised (None: an explicit target)

    @functools.cached_property
    def figures(self) -> dict[str, dict[str, Any]]:
        """side_figures of each side, computed once (the runs do not change)."""
        return {impl: side_figures(run) for impl, run in self.runs.items()}

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.rows)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cell(text: str) -> str:
    return "\n".join(textwrap.wrap(text, CELL_WIDTH)) or text


def table(rows: Iterable[Row]) -> str:
    """The full table: every check of every scenario (``--verbose``)."""
    body = [
        (r.scenario, _cell(r.check), _cell(r.handrolled), _cell(r.reference), r.verdict)
        for r in rows
    ]
    return tabulate(
        body, headers=("scenario", "check", "handrolled", "reference", "verdict"), tablefmt="simple"
    )


# ---- figures: what each side found, as plain data (terminal, JSON, baseline, HTML) ----------
def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def side_figures(run: SideRun) -> dict[str, Any]:
    """The figures that matter of one side's result, JSON-ready (the baseline compares these)."""
    result = run.result
    if run.error or result is None:
        return {"error": run.error or "no result"}
    if isinstance(result, PingResult):
        wire_index = wire.index_wire(run.frames)
        probes = [p for p in result.probes if p.outcome is not Outcome.DUPLICATE]
        rtts = [p.rtt_ms if p.outcome in ANSWERED else None for p in probes]
        wire_rtts = []
        for p in probes:
            hit = wire_index.get(wire.probe_key_of(p))
            wire_rtts.append(_ms(hit.rtt_ms) if hit is not None else None)
        answered = [r for r in rtts if r is not None]
        return {
            "address": result.address,
            "seqs": [p.seq for p in probes],
            "outcomes": [p.outcome.value for p in probes],
            "reply_from": [p.reply_from for p in probes],
            "rtts_ms": [_ms(r) for r in rtts],
            "wire_rtts_ms": wire_rtts,
            "min_rtt_ms": _ms(min(answered)) if answered else None,
        }
    if isinstance(result, TraceResult):
        hops, minima, rtts = [], {}, []
        for hop in result.hops:
            answered = [p.reply_from for p in hop.probes if p.reply_from]
            hops.append([hop.ttl, answered[0] if answered else "*"])
            values = [p.rtt_ms for p in hop.probes if p.rtt_ms is not None]
            rtts += [[hop.ttl, _ms(v)] for v in values]
            if values:
                minima[str(hop.ttl)] = _ms(min(values))
        return {
            "address": result.address,
            "hops": hops,
            "reached": result.reached,
            "outcomes": [p.outcome.value for hop in result.hops for p in hop.probes],
            "hop_min_rtt_ms": minima,
            "rtts_ms": rtts,
        }
    if isinstance(result, SmtpResult):
        return {
            "delivered": result.delivered,
            "recipients": {r.address: r.reply.code for r in result.recipients},
            "final_reply": result.final_reply.code if result.final_reply else None,
            "error": result.error,
        }
    return {}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def key_figures(sr: ScenarioRun) -> str:
    """The one-line figures of a scenario: min RTT each side vs truth, hops, delivery."""
    hr, ref = sr.figures.get("handrolled", {}), sr.figures.get("reference", {})
    if sr.kind != "smtp" and ("error" in hr or "error" in ref):
        return "a side did not run"
    truth = sr.truth or {}
    if sr.kind == "ping":
        if hr.get("min_rtt_ms") is None and ref.get("min_rtt_ms") is None:
            outcomes = sorted(set(hr.get("outcomes", [])) | set(ref.get("outcomes", [])))
            return ", ".join(outcomes) or "no probes"
        text = f"min RTT {_fmt(hr.get('min_rtt_ms'))} | {_fmt(ref.get('min_rtt_ms'))} ms"
        if truth.get("promised_ms") is not None:
            low, high = truth["window_ms"]
            text += f" (truth {truth['promised_ms']:.3f}, {low:.2f}..{high:.2f})"
        return text
    if sr.kind == "traceroute":

        def answered(f: dict) -> int:
            return sum(addr != "*" for _, addr in f.get("hops", []))

        text = f"hops {answered(hr)} | {answered(ref)} answered"
        if truth.get("hops"):
            text += f" (truth {sum(bool(h['answers']) for h in truth['hops'])})"
        reached = [f.get("reached") for f in (hr, ref)]
        return text + (", reached" if all(reached) else ", not reached")
    if sr.kind == "smtp":
        parts = []
        for f in (hr, ref):
            if f.get("delivered"):
                parts.append("delivered")
            elif "recipients" in f:
                parts.append("not delivered")
            else:
                parts.append("error")
        accepted = [
            f"{sum(200 <= c < 300 for c in f.get('recipients', {}).values())}"
            f"/{len(f.get('recipients', {}))}"
            for f in (hr, ref)
        ]
        return f"{parts[0]} | {parts[1]}, recipients accepted {accepted[0]} | {accepted[1]}"
    return ""


def summary(scenarios: Sequence[ScenarioRun]) -> str:
    """One line per scenario: name, checks passed/total, key figures, verdict."""
    body = [
        (
            sr.name,
            f"{sr.passed}/{len(sr.rows)}",
            key_figures(sr),
            "ok" if sr.ok else "FAIL",
        )
        for sr in scenarios
    ]
    return tabulate(body, headers=SUMMARY_HEADERS, tablefmt="simple")


# ---- failing checks: field, offset, both values, hex diff -------------------------------------
def _hex_cells(chunk: bytes, n: int) -> str:
    return " ".join(f"{chunk[i]:02x}" if i < len(chunk) else "--" for i in range(n))


def _field_width(layer: str, name: str) -> int:
    tables = {"ipv4": packets.IPV4_FIELDS, "ipv6": packets.IPV6_FIELDS, **packets.TRANSPORT_FIELDS}
    for field_name, _offset, width, _mask in tables.get(layer, ()):
        if field_name == name:
            return width
    return 1


def _is_datagram(data: bytes) -> bool:
    """Whether ``data`` is a whole IP datagram: its length field says so (RFC 791 §3.1 total
    length; RFC 8200 §3 payload length after the 40-byte header)."""
    if len(data) >= 20 and data[0] >> 4 == 4:
        return int.from_bytes(data[2:4], "big") == len(data)
    if len(data) >= 40 and data[0] >> 4 == 6:
        return int.from_bytes(data[4:6], "big") + 40 == len(data)
    return False


def allowed_offsets(left: bytes, right: bytes) -> set[int]:
    """Byte offsets of two IP datagrams covered by a field that a named rule allows to differ
    (compare/packets.py); empty for anything that is not a pair of IP datagrams."""
    if not (_is_datagram(left) and _is_datagram(right)):
        return set()
    try:
        diffs = packets.diff_datagrams(left, right)
    except (ValueError, IndexError):
        return set()
    out: set[int] = set()
    for d in diffs:
        if d.allowed:
            out.update(range(d.offset, d.offset + _field_width(d.layer, d.field)))
    return out


def hex_diff(
    left: bytes,
    right: bytes,
    labels: tuple[str, str] = ("handrolled", "reference"),
    base: int = 0,
    allowed: set[int] | None = None,
) -> list[str]:
    """A hex dump of the lines of two packets that differ, one above the other, with ``^^``
    under each differing byte (``~~`` where a named rule allows it; ``--`` where one packet
    is shorter).  ``base``: the offset of the first byte shown (a window of a stream);
    ``allowed``: offsets allowed to differ (default: found when both are IP datagrams)."""
    out = []
    if allowed is None:
        allowed = allowed_offsets(left, right) if base == 0 else set()
    width = max(len(label) for label in labels)
    for start in range(0, max(len(left), len(right)), HEX_WIDTH):
        a, b = left[start : start + HEX_WIDTH], right[start : start + HEX_WIDTH]
        n = max(len(a), len(b))
        marks = [i >= len(a) or i >= len(b) or a[i] != b[i] for i in range(n)]  # a differing byte
        if not any(marks):
            continue
        out.append(f"{labels[0]:>{width}} {base + start:04x}  {_hex_cells(a, n)}")
        out.append(f"{labels[1]:>{width}} {base + start:04x}  {_hex_cells(b, n)}")
        marks_line = " ".join(
            ("~~" if start + i in allowed else "^^") if m else "  " for i, m in enumerate(marks)
        )
        out.append(" " * (width + 7) + marks_line.rstrip())
    return out


def differences_of(r: Row) -> list[Difference]:
    """A failing row's structured differences; a row without any is its own field."""
    if r.differences:
        return r.differences
    return [Difference(r.check, (r.handrolled, r.reference))]


def failure_details(rows: Iterable[Row]) -> str:
    """Per failing check: each differing field with its offset and both values, a hex diff of
    the packets where bytes differ, then the check's own detail lines."""
    lines = []
    for r in rows:
        if r.ok:
            continue
        lines.append(f"FAIL {r.scenario}: {r.check}")
        shown: list[tuple[bytes, bytes]] = []
        for d in differences_of(r):
            lines.append(f"    {d.describe()}")
            if d.packets and d.packets not in shown and len(shown) < HEX_PAIRS_SHOWN:
                shown.append(d.packets)
                lines += [f"      {line}" for line in hex_diff(*d.packets, d.labels)]
        if shown:
            lines.append("      (^^ differs; ~~ differs where a named rule allows it)")
        if r.differences:
            continue  # the detail lines say the same as the differences
        lines += [f"    {d}" for d in r.details]
    return "\n".join(lines)


def failures(rows: Iterable[Row]) -> str:
    """The failing rows with their detail lines (the verbose view's tail)."""
    lines = []
    for r in rows:
        if not r.ok:
            lines.append(f"FAIL {r.scenario}: {r.check}")
            lines += [f"    {d}" for d in r.details] or ["    (no detail)"]
    return "\n".join(lines)


def allowed_notes(rows: Iterable[Row]) -> list[str]:
    """The allowed differences met in this run, each once, with its reason."""
    seen: dict[str, None] = {}
    for r in rows:
        for a in r.allowed:
            seen.setdefault(f"{a.layer}.{a.field}: {a.reason}", None)
    return list(seen)


def closing_line(rows: list[Row]) -> str:
    failed = sum(not r.ok for r in rows)
    return f"{len(rows) - failed} passed, {failed} failed"


def client_streams(sr: ScenarioRun) -> tuple[bytes, bytes] | None:
    """An SMTP scenario's two client-to-server TCP streams as captured (None: not SMTP, or a
    side without a result)."""
    results = [sr.runs[i].result if i in sr.runs else None for i in ("handrolled", "reference")]
    if not all(isinstance(r, SmtpResult) for r in results):
        return None
    return (
        packets.tcp_stream(sr.runs["handrolled"].frames, results[0].port, True),
        packets.tcp_stream(sr.runs["reference"].frames, results[1].port, True),
    )


def stream_context(sr: ScenarioRun, lines: int = 3) -> list[str]:
    """For a failing SMTP scenario: where the two client streams first differ, hex-dumped
    (``lines`` lines of 16 bytes from there), or nothing when the streams are identical."""
    streams = client_streams(sr)
    if streams is None or streams[0] == streams[1]:
        return []
    left, right = streams
    first = next(
        (i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
        min(len(left), len(right)),
    )
    start = first - first % HEX_WIDTH
    window = slice(start, start + lines * HEX_WIDTH)
    return [
        f"    {sr.name}: the client command streams (TCP payload) first differ at byte {first}"
        f" (of {len(left)} and {len(right)})",
        *(f"      {line}" for line in hex_diff(left[window], right[window], base=start)),
    ]


def terminal(scenarios: Sequence[ScenarioRun], verbose: bool = False) -> str:
    """What `wiretwin compare` prints: the summary (or, verbose, the full table), the failing
    checks, the allowed differences, and the closing line alone on the last line."""
    rows = [r for sr in scenarios for r in sr.rows]
    parts = [table(rows) if verbose else summary(scenarios)]
    failing = []
    for sr in scenarios:
        if not sr.ok:
            failing.append(failure_details(sr.rows))
            failing += stream_context(sr)
    if failing:
        parts.append("failures:\n" + "\n".join(failing))
    notes = allowed_notes(rows)
    if notes:
        parts.append(
            "allowed differences (each field that may differ, and why):\n"
            + "\n".join(f"  - {n}" for n in notes)
        )
    parts.append(closing_line(rows))
    return "\n\n".join(parts)


# ---- JSON ------------------------------------------------------------------------------------
def _difference_json(d: Difference) -> dict:
    return {
        "field": d.field,
        "offset": d.offset,
        "where": d.where,
        "labels": list(d.labels),
        "values": list(d.values),
        "packets": [p.hex() for p in d.packets] if d.packets else None,
    }


def scenario_json(sr: ScenarioRun) -> dict:
    """A scenario's figures per side, as a later ``--baseline`` run reads them back."""
    return {
        "name": sr.name,
        "kind": sr.kind,
        "passed": sr.passed,
        "total": len(sr.rows),
        "truth": sr.truth,
        "sides": sr.figures,
    }


def to_json(rows: list[Row], meta: dict, scenarios: Sequence[ScenarioRun] = ()) -> dict:
    return {
        **meta,
        "passed": sum(r.ok for r in rows),
        "failed": sum(not r.ok for r in rows),
        "rows": [
            {
                "scenario": r.scenario,
                "check": r.check,
                "handrolled": r.handrolled,
                "reference": r.reference,
                "verdict": r.verdict,
                "details": r.details,
                "allowed": [
                    {"layer": a.layer, "field": a.field, "reason": a.reason} for a in r.allowed
                ],
                "differences": [_difference_json(d) for d in r.differences],
            }
            for r in rows
        ],
        "scenarios": [scenario_json(sr) for sr in scenarios],
    }


def write_json(
    path: str | Path, rows: list[Row], meta: dict, scenarios: Sequence[ScenarioRun] = ()
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(rows, meta, scenarios), indent=2, default=str) + "\n")


def write_pcaps(
    directory: str | Path, scenario: str, runs: dict[str, SideRun], run_index: int = 0
) -> list[Path]:
    """One pcap per side per scenario: ``<dir>/<scenario>.<impl>.pcap``, and for a TLS
    scenario the side's NSS key log beside it as ``<dir>/<scenario>.<impl>.keys``."""
    written = []
    suffix = f".run{run_index}" if run_index else ""
    for impl, run in runs.items():
        path = Path(directory) / f"{slug(scenario)}{suffix}.{impl}.pcap"
        write_pcap(path, run.frames)
        written.append(path)
        if run.keylog:  # TLS: the key log beside it, for tshark / Wireshark
            keys = path.with_suffix(".keys")
            keys.write_text(run.keylog)
            written.append(keys)
    return written


# ---- GitHub Actions --------------------------------------------------------------------------
def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def github_summary(scenarios: Sequence[ScenarioRun]) -> str:
    """The Markdown job summary (GITHUB_STEP_SUMMARY): one table row per scenario, then the
    failing checks."""
    rows = [r for sr in scenarios for r in sr.rows]
    body = [
        (
            _md(sr.name),
            f"{sr.passed}/{len(sr.rows)}",
            _md(key_figures(sr)),
            "✅ ok" if sr.ok else "❌ FAIL",
        )
        for sr in scenarios
    ]
    out = [
        "## wiretwin compare",
        "",
        tabulate(body, headers=[_md(h) for h in SUMMARY_HEADERS], tablefmt="github"),
        "",
        f"**{closing_line(rows)}**",
    ]
    failing = [(r, d) for r in rows if not r.ok for d in differences_of(r)]
    if failing:
        out += ["", "### Failing checks", ""]
        out += [f"- **{_md(r.scenario)}: {_md(r.check)}**: {_md(d.describe())}" for r, d in failing]
    return "\n".join(out) + "\n"


def _escape_data(text: str) -> str:
    # GitHub workflow commands: %, CR and LF are escaped in the message...
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    # ...and in property values also ':' and ','.
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_errors(rows: Iterable[Row]) -> list[str]:
    """One ``::error title=...::`` workflow command per failing check."""
    out = []
    for r in rows:
        if r.ok:
            continue
        message = "; ".join(d.describe() for d in differences_of(r))
        title = _escape_property(f"{r.scenario}: {r.check}")
        out.append(f"::error title={title}::{_escape_data(message)}")
    return out
