"""Import boundaries, checked on the source with ``ast`` (nothing is imported to check it).

- Pure handrolled modules import no socket, select, time, random, scapy (ARCHITECTURE.md), nor os,
  subprocess, ssl or selectors; from handrolled they import only other pure modules, so
  ``from handrolled.net import x`` cannot bring the I/O in one step removed.
- reference/ imports nothing from handrolled except the shared contract (results, requests, errors,
  and record, their types' base):
  independence is the point of a reference implementation; and nothing from compare.
- Every module of handrolled/ (cli/ included) is listed as PURE or IO, and an IO one does import
  I/O (else it belongs in PURE); the packages' __init__ modules, run by every import, are pure.
- handrolled/ imports only the standard library and itself: no scapy, compare or reference.
- Only handrolled/cli/ imports argparse or handrolled.cli; an engine may reach its front only in
  its ``if __name__ == "__main__":`` block (``python -m handrolled.ping``).
- compare/packets.py, the harness's own reading of the RFC layouts, imports neither codec
  (nothing from handrolled, reference or scapy).
- The seed functions keep the seed's signatures where the graders import them.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# results, requests and errors are the data-only contract (record the base of its types); they are
# held to the same rule.
PURE = [
    "checksum",
    "ip",
    "icmp",
    "transport",
    "tracer_core",
    "paths",
    "ping_stats",
    "ping_rules",
    "cli.ping_statistics",
    "smtp_protocol",
    "record",
    "results",
    "results_smtp",
    "requests",
    "requests_smtp",
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
ALLOWED_FROM_HANDROLLED = {
    "handrolled.results",
    "handrolled.requests",
    "handrolled.errors",
    "handrolled.record",  # the contract types' base, and its replace()
}


def imported_modules(path: Path, package: str = "") -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``path`` names, made absolute.

    Relative imports (``from .net import x``) are resolved against ``package``, the package
    ``path`` belongs to; without one they are recorded with their leading dots.
    """
    return tree_imports(ast.parse(path.read_text(), filename=str(path)), package)


def tree_imports(tree: ast.AST, package: str = "") -> set[str]:
    """``imported_modules`` of a parsed module (or of any subtree of one)."""
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
    # cli.x lives in handrolled.cli: its "from ..net import x" is handrolled.net
    for module in imported_modules(path, package_of(path)):
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
    path = ROOT / "handrolled" / f"{name.replace('.', '/')}.py"  # cli.x -> cli/x.py
    assert path.exists(), f"{path}, listed as pure, is missing"
    bad = purity_violations(path)
    assert not bad, f"{path} is pure but imports {sorted(bad)}"


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
        module_of(path)  # cli/ included: cli.ping_statistics says it is Pure
        for path in (ROOT / "handrolled").rglob("*.py")
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


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_reference_imports_nothing_from_compare(path: Path) -> None:
    bad = {m for m in imported_modules(path, package="reference") if m.split(".")[0] == "compare"}
    assert not bad, f"reference/{path.name} imports {sorted(bad)} from the harness"


# ---- every hand-rolled module, cli/ included, on one side of the boundary -------------------
# Modules that touch sockets, clocks, threads, the process or argv (or import one that does).
IO = [
    "net",
    "names",
    "sockopts",
    "tracenet",
    "tracepaths",
    "ping",
    "traceroute",
    "smtp",
    "smtp_io",
    "smtp_session",
    "cli.common",
    "cli.ping",
    "cli.traceroute",
    "cli.smtp",
]
HANDROLLED = ROOT / "handrolled"
HANDROLLED_FILES = sorted(HANDROLLED.rglob("*.py"))


def module_of(path: Path) -> str:
    """``handrolled/cli/ping.py`` -> ``cli.ping`` (``__init__`` -> its package, "" for the top)."""
    parts = path.relative_to(HANDROLLED).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a relative import in ``path`` is resolved against (outside: handrolled)."""
    if not path.is_relative_to(HANDROLLED):
        return "handrolled"
    return ".".join(("handrolled", *path.relative_to(HANDROLLED).parent.parts))


def test_every_handrolled_module_is_pure_or_io() -> None:
    found = {module_of(p) for p in HANDROLLED_FILES if p.stem != "__init__"}
    assert not set(PURE) & set(IO), f"both PURE and IO: {set(PURE) & set(IO)}"
    assert found == set(PURE) | set(IO), (
        f"unclassified: {sorted(found - set(PURE) - set(IO))}, "
        f"listed but missing: {sorted(set(PURE) | set(IO) - found)}"
    )


def io_imports(path: Path) -> set[str]:
    """What ``path`` imports that a pure module must not (relative imports resolved)."""
    return {
        m
        for m in imported_modules(path, package_of(path))
        if m.split(".")[0] in FORBIDDEN_IN_PURE
        or (m.startswith("handrolled.") and m.removeprefix("handrolled.") in IO)
    }


@pytest.mark.parametrize("name", IO)
def test_an_io_module_does_touch_io(name: str) -> None:
    path = HANDROLLED.joinpath(*name.split(".")).with_suffix(".py")
    assert io_imports(path), f"handrolled/{name} imports no I/O: list it in PURE, and keep it so"


@pytest.mark.parametrize("path", sorted(HANDROLLED.rglob("__init__.py")), ids=str)
def test_package_inits_touch_no_io(path: Path) -> None:
    # "import handrolled.checksum" runs handrolled/__init__.py first
    assert not io_imports(path), f"{path.relative_to(ROOT)} imports {sorted(io_imports(path))}"


def foreign_imports(path: Path) -> set[str]:
    """What ``path`` imports from outside the standard library and handrolled itself."""
    allowed = sys.stdlib_module_names | {"handrolled"}
    return {m for m in imported_modules(path, package_of(path)) if m.split(".")[0] not in allowed}


@pytest.mark.parametrize("path", HANDROLLED_FILES, ids=lambda p: module_of(p) or "__init__")
def test_handrolled_uses_the_standard_library_only(path: Path) -> None:
    bad = foreign_imports(path)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "line",
    [
        "import scapy.all",
        "from compare.packets import Allowed",
        "from reference import ping",
        "import dpkt",
    ],
)
def test_the_stdlib_check_catches_packages(tmp_path: Path, line: str) -> None:
    src = tmp_path / "client.py"
    src.write_text(f"import struct\nfrom handrolled.results import Probe\n{line}\n")
    assert foreign_imports(src), f"{line!r} passed the standard-library check"


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``"""
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def command_line_imports(path: Path) -> set[str]:
    """What ``path`` imports of argparse or handrolled.cli outside its ``__main__`` block."""
    tree = ast.parse(path.read_text(), filename=str(path))
    tree.body = [node for node in tree.body if not is_main_guard(node)]
    return {
        m
        for m in tree_imports(tree, package_of(path))
        if m.split(".")[0] == "argparse" or m == "handrolled.cli" or m.startswith("handrolled.cli.")
    }


ENGINE_FILES = [p for p in HANDROLLED_FILES if not p.is_relative_to(HANDROLLED / "cli")]


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: module_of(p) or "__init__")
def test_engines_stay_apart_from_their_command_lines(path: Path) -> None:
    bad = command_line_imports(path)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} outside its __main__ block"


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("import argparse\n", True),
        ("from handrolled.cli.common import jsonable\n", True),
        ("from handrolled import cli\n", True),
        ("def f():\n    from handrolled.cli import ping\n", True),
        ('if __name__ == "__main__":\n    from handrolled.cli import ping\n', False),
    ],
)
def test_the_command_line_check_allows_only_the_main_block(
    tmp_path: Path, source: str, caught: bool
) -> None:
    src = tmp_path / "engine.py"
    src.write_text(f"import struct\n{source}")
    assert bool(command_line_imports(src)) is caught


# compare/packets.py reads the layouts from the RFCs itself, so a codec bug cannot hide in both.
PACKETS = ROOT / "compare" / "packets.py"


def test_the_harness_packet_layouts_import_neither_codec() -> None:
    bad = {
        m
        for m in imported_modules(PACKETS, package="compare")
        if m.split(".")[0] in {"handrolled", "reference", "scapy"}
    }
    assert not bad, f"compare/packets.py imports {sorted(bad)}"


# The seed's functions, where the seed's graders import them, with the seed's signatures.
SEEDS = [
    ("ping.py", "ping", ["host", "timeout"], [1]),
    ("traceroute.py", "get_route", ["hostname"], []),
    ("smtp.py", "smtp_client", ["port", "mailserver"], [1025, "127.0.0.1"]),
]


@pytest.mark.parametrize(("module", "name", "params", "defaults"), SEEDS, ids=[s[1] for s in SEEDS])
def test_seed_functions_keep_their_signatures(
    module: str, name: str, params: list[str], defaults: list[object]
) -> None:
    tree = ast.parse((HANDROLLED / module).read_text())
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"handrolled/{module} no longer defines {name}() at module level"
    args = found[0].args
    assert [a.arg for a in args.posonlyargs + args.args] == params
    assert not (args.vararg or args.kwonlyargs or args.kwarg), f"{name}() grew parameters"
    assert [ast.literal_eval(d) for d in args.defaults] == defaults
