"""`--baseline OLD.json`: what changed on a real path since a previous run.

An explicit target (``--host``/``--server``) has no lab truth to hold the results against, so
the harness watches it over time instead: each scenario's figures (see report.side_figures) are
compared with the same scenario's figures in an earlier run's JSON report.  A change is a hop
that answers from another address (or no longer answers), the destination reached or not, a
probe's outcome, an SMTP delivery or a recipient's reply code, or a minimum RTT (per probe set
for ping, per hop for traceroute) shifted by more than the stated tolerance.  Each scenario
gains one row, so changes fail the run, show in JUnit and in the GitHub annotations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare.report import ScenarioRun, scenario_json
from compare.scenario import Difference, Row
from handrolled.errors import WiretwinError

RTT_SHIFT_MS = 5.0  # default: a minimum RTT may move this much between runs of a real path
LABELS = ("baseline", "now")


class BaselineError(WiretwinError):
    """The baseline file is missing, not JSON, or not a wiretwin compare report."""


def load(path: str | Path) -> dict[str, dict]:
    """The scenarios of a previous ``--json`` report, by name."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BaselineError(f"--baseline {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise BaselineError(f"--baseline {path}: not JSON ({exc})") from exc
    scenarios = data.get("scenarios") if isinstance(data, dict) else None
    if not isinstance(scenarios, list) or not all(
        isinstance(s, dict) and "name" in s and "sides" in s for s in scenarios
    ):
        raise BaselineError(f"--baseline {path}: not a wiretwin compare --json report")
    return {s["name"]: s for s in scenarios}


def _shift(
    what: str, old: float | None, new: float | None, tolerance_ms: float
) -> Difference | None:
    if old is None and new is None:
        return None
    if old is None or new is None:
        return Difference(what, (_ms(old), _ms(new)), labels=LABELS)
    if abs(new - old) > tolerance_ms:
        return Difference(
            what, (_ms(old), _ms(new)), where=f"shift {new - old:+.3f} ms", labels=LABELS
        )
    return None


def _ms(value: float | None) -> str:
    return "no RTT" if value is None else f"{value:.3f} ms"


def side_changes(
    kind: str, old: dict[str, Any], new: dict[str, Any], tolerance_ms: float
) -> list[Difference]:
    """What differs between two figures of one side (report.side_figures) of one scenario."""
    out: list[Difference] = []

    def same(key: str, what: str | None = None) -> None:
        if old.get(key) != new.get(key):
            out.append(
                Difference(what or key, (str(old.get(key)), str(new.get(key))), labels=LABELS)
            )

    if "error" in old and "error" in new and kind != "smtp":
        return []
    if ("error" in old) != ("error" in new) and kind != "smtp":
        return [Difference("ran", (str(old.get("error", "ran")), str(new.get("error", "ran"))),
                           labels=LABELS)]  # fmt: skip
    if kind == "ping":
        same("outcomes")
        same("reply_from")
        change = _shift("min RTT", old.get("min_rtt_ms"), new.get("min_rtt_ms"), tolerance_ms)
        out += [change] if change else []
    elif kind == "traceroute":
        old_hops = {ttl: addr for ttl, addr in old.get("hops", [])}
        new_hops = {ttl: addr for ttl, addr in new.get("hops", [])}
        for ttl in sorted(old_hops.keys() | new_hops.keys()):
            a, b = old_hops.get(ttl, "(none)"), new_hops.get(ttl, "(none)")
            if a != b:
                out.append(Difference(f"hop {ttl}", (a, b), labels=LABELS))
        same("reached")
        old_min, new_min = old.get("hop_min_rtt_ms", {}), new.get("hop_min_rtt_ms", {})
        for ttl in sorted(old_min.keys() & new_min.keys(), key=int):
            change = _shift(f"hop {ttl} min RTT", old_min[ttl], new_min[ttl], tolerance_ms)
            out += [change] if change else []
    elif kind == "smtp":
        same("delivered")
        same("recipients", "recipient reply codes")
        same("final_reply", "reply to the final dot")
    return out


def scenario_rows(old: dict[str, dict], new: Sequence[dict], tolerance_ms: float) -> dict[str, Row]:
    """Per scenario of this run (scenario_json), its row against the baseline."""
    rows = {}
    check = f"unchanged since the baseline (min RTT shift <= {tolerance_ms} ms)"
    for scn in new:
        before = old.get(scn["name"])
        if before is None:
            rows[scn["name"]] = Row(scn["name"], check, "not in the baseline", "-", True)
            continue
        cells: dict[str, str] = {}
        differences: list[Difference] = []
        for impl in ("handrolled", "reference"):
            found = side_changes(
                scn["kind"],
                before["sides"].get(impl, {}),
                scn["sides"].get(impl, {}),
                tolerance_ms,
            )
            differences += [
                Difference(f"{impl} {d.field}", d.values, d.offset, d.where, labels=d.labels)
                for d in found
            ]
            cells[impl] = f"{len(found)} changed" if found else "unchanged"
        rows[scn["name"]] = Row.of_sides(
            scn["name"],
            check,
            cells,
            not differences,
            [d.describe() for d in differences],
            differences=differences,
        )
    return rows


def add_rows(old: dict[str, dict], scenarios: Sequence[ScenarioRun], tolerance_ms: float) -> None:
    """Append each scenario's baseline row to its rows."""
    rows = scenario_rows(old, [scenario_json(sr) for sr in scenarios], tolerance_ms)
    for sr in scenarios:
        sr.rows.append(rows[sr.name])
