"""Import boundaries, checked on the source with ``ast`` (nothing is imported to check it).

- Pure handrolled modules import no socket, select, time, random, scapy (ARCHITECTURE.md), nor os,
  subprocess, ssl or selectors; from handrolled they import only other pure modules, so
  ``from handrolled.net import x`` cannot bring the I/O in one step removed.
- reference/ imports nothing from handrolled except the shared contract (results, requests, errors):
  independence is the point of a reference implementation.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# results, requests and errors are the data-only contract; they are held to the same rule.
PURE = [
    "checksum",
    "ip",
    "icmp",
    "transport",
    "tracer_core",
    "paths",
    "ping_stats",
    "smtp_protocol",
    "results",
    "requests",
    "errors",
]
# The union of the hand-written copies of this check in tests/handrolled/ (test_icmp,
# test_transport, test_smtp_protocol), which this one supersedes.
FORBIDDEN_IN_PURE = {
    "socket",
    "select",
    "selectors",
    "ssl",
    "time",
    "random",
    "scapy",
    "os",
    "subprocess",
}
ALLOWED_FROM_HANDROLLED = {"handrolled.results", "handrolled.requests", "handrolled.errors"}


def imported_modules(path: Path, package: str = "") -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``path`` names, made absolute.

    Relative imports (``from .net import x``) are resolved against ``package``, the package
    ``path`` belongs to; without one they are recorded with their leading dots.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            elif package:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - (node.level - 1)])
                base = ".".join(p for p in (parent, node.module) if p)
            else:
                base = "." * node.level + (node.module or "")
            if base:
                names.add(base)
            # "from handrolled import checksum" imports handrolled.checksum
            prefix = base if not base or base.endswith(".") else f"{base}."
            names.update(f"{prefix}{alias.name}" for alias in node.names)
    return names


def purity_violations(path: Path) -> set[str]:
    """What ``path``, a module of handrolled/, imports that a pure module must not."""
    bad = set()
    for module in imported_modules(path, package="handrolled"):
        parts = module.split(".")
        # "handrolled.net.Thing" and "handrolled.net" both name the module handrolled.net
        sibling = parts[1] if parts[0] == "handrolled" and len(parts) > 1 else None
        if parts[0] in FORBIDDEN_IN_PURE or (sibling is not None and sibling not in PURE):
            bad.add(module)
    return bad


def test_imported_modules_sees_every_import_form(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import socket\nimport os.path as p\nfrom time import monotonic\n"
        "def f():\n    import scapy.all\n    from handrolled import icmp\n"
    )
    found = imported_modules(src)
    assert {"socket", "os.path", "time", "scapy.all", "handrolled.icmp"} <= found


def test_imported_modules_resolves_relative_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from .net import open_icmp\nfrom . import tracenet\n")
    found = imported_modules(src, package="handrolled")
    assert {"handrolled.net", "handrolled.tracenet"} <= found


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_touch_no_io(name: str) -> None:
    path = ROOT / "handrolled" / f"{name}.py"
    assert path.exists(), f"handrolled/{name}.py, listed as pure, is missing"
    bad = purity_violations(path)
    assert not bad, f"handrolled/{name}.py is pure but imports {sorted(bad)}"


@pytest.mark.parametrize(
    "line",
    [
        "from handrolled.net import resolve",
        "from handrolled import net",
        "import handrolled.tracenet",
        "from .net import resolve",
        "from . import ping",
        "import os",
        "from subprocess import run",
        "import ssl",
        "import selectors",
    ],
)
def test_the_purity_check_catches_io_one_step_removed(tmp_path: Path, line: str) -> None:
    src = tmp_path / "pure.py"
    src.write_text(f"from handrolled.errors import UsageError\n{line}\n")
    assert purity_violations(src), f"{line!r} passed the purity check"


def test_the_purity_check_allows_pure_siblings(tmp_path: Path) -> None:
    src = tmp_path / "pure.py"
    src.write_text(
        "import struct\nfrom handrolled.checksum import internet_checksum\n"
        "from handrolled import results\nfrom .errors import UsageError\n"
    )
    assert purity_violations(src) == set()


def test_every_module_documented_as_pure_is_checked() -> None:
    documented = {
        path.stem
        for path in (ROOT / "handrolled").glob("*.py")
        if re.search(r"\bPure\b", ast.get_docstring(ast.parse(path.read_text())) or "")
    }
    assert documented, "no handrolled module says it is Pure: has the docstring wording changed?"
    assert documented <= set(PURE), f"documented Pure but not in PURE: {documented - set(PURE)}"


REFERENCE_FILES = sorted((ROOT / "reference").glob("*.py"))


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_reference_is_independent_of_handrolled(path: Path) -> None:
    bad = set()
    for module in imported_modules(path):
        # The bare package name comes with every "from handrolled import x"; x is what counts.
        if module.startswith("handrolled."):
            top = ".".join(module.split(".")[:2])
            if top not in ALLOWED_FROM_HANDROLLED:
                bad.add(module)
    assert not bad, f"reference/{path.name} imports {sorted(bad)} from handrolled"


def test_the_independence_check_catches_a_codec_import(tmp_path: Path) -> None:
    src = tmp_path / "r.py"
    src.write_text("from handrolled import checksum\nfrom handrolled.results import Probe\n")
    found = {m for m in imported_modules(src) if m.startswith("handrolled.")}
    assert {m for m in found if ".".join(m.split(".")[:2]) not in ALLOWED_FROM_HANDROLLED} == {
        "handrolled.checksum"
    }


def test_reference_package_has_the_three_runners() -> None:
    names = {p.name for p in REFERENCE_FILES}
    assert {"ping.py", "traceroute.py", "smtp.py"} <= names


# compare/lab/plan.py (the lab's plan and truth) is held to the pure rule too; from compare it
# imports nothing (the builder, calls and delay stage are its I/O), from handrolled the errors.
# compare/lab/faults.py (the fault rules and their matcher) is held to the same rule.
LAB_PLAN = ROOT / "compare" / "lab" / "plan.py"
LAB_PURE = (LAB_PLAN, ROOT / "compare" / "lab" / "faults.py")


def lab_plan_violations(path: Path) -> set[str]:
    """What ``path``, the lab's plan, imports that a pure module must not."""
    return {
        module
        for module in imported_modules(path, package="compare.lab")
        if module.split(".")[0] in FORBIDDEN_IN_PURE | {"shutil", "signal", "ctypes", "compare"}
        or (module.startswith("handrolled.") and module.split(".")[1] != "errors")
    } - {"compare.lab", "compare.lab.faults"}  # "from compare.lab import faults"


@pytest.mark.parametrize("path", LAB_PURE, ids=lambda p: p.name)
def test_the_lab_plan_touches_no_io(path: Path) -> None:
    assert path.exists(), f"{path}, listed as pure, is missing"
    bad = lab_plan_violations(path)
    assert not bad, f"{path.name} is pure but imports {sorted(bad)}"


@pytest.mark.parametrize(
    "line",
    [
        "import subprocess",
        "from compare.lab import netns",
        "from .build import Lab",
        "from handrolled.net import resolve",
        "import os.path",
    ],
)
def test_the_lab_plan_check_catches_io(tmp_path: Path, line: str) -> None:
    src = tmp_path / "plan.py"
    src.write_text(f"from handrolled.errors import WiretwinError\n{line}\n")
    assert lab_plan_violations(src), f"{line!r} passed the lab plan check"
