"""`--junit FILE`: the report as JUnit XML, written with junitparser.

One testsuite per scenario, one testcase per check; a failing check carries a ``<failure>``
whose message names the first differing field and both values, and whose text lists every
difference (with a hex diff of the packets) and the check's detail lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from junitparser import Failure, JUnitXml, TestCase, TestSuite

from compare import report
from compare.report import ScenarioRun


def failure_of(row: report.Row) -> Failure:
    """The ``<failure>`` of a failing row: field and both values, then the details."""
    differences = report.differences_of(row)
    failure = Failure(differences[0].describe(), "mismatch")
    failure.text = report.failure_details([row])
    return failure


def to_junit(scenarios: Sequence[ScenarioRun]) -> JUnitXml:
    """The JUnit document: a suite per scenario, a case per check."""
    xml = JUnitXml("wiretwin compare")
    for sr in scenarios:
        suite = TestSuite(sr.name)
        suite.add_property("kind", sr.kind)
        suite.add_property("figures", report.key_figures(sr))  # handrolled | reference
        seconds = sum(run.seconds for run in sr.runs.values())
        for i, row in enumerate(sr.rows):
            # the sides' running time goes to the first check (did each side run?)
            case = TestCase(row.check, f"wiretwin.{sr.kind}.{report.slug(sr.name)}",
                            round(seconds, 3) if i == 0 else 0.0)  # fmt: skip
            case.system_out = f"handrolled: {row.handrolled}\nreference: {row.reference}"
            if not row.ok:
                case.result = [failure_of(row)]
            suite.add_testcase(case)
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    return xml


def write_junit(path: str | Path, scenarios: Sequence[ScenarioRun]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_junit(scenarios).write(str(path), pretty=True)
