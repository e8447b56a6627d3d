"""Calling a Python function in a fresh child process, inside a lab namespace or not.

``call_python(prefix, "pkg.module:function", args, kwargs)`` runs ``prefix + [python, -m,
compare.lab, --call]`` (the prefix is e.g. ``ip netns exec NS``, or nothing for compare's
LocalSite); the call goes in as a pickle on stdin, and the result, or the exception raised,
comes back as one on stdout.  HANDROLLED_PATH_ENV makes the child import a patched copy of
``handrolled`` (the harness's fault injection).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from compare.lab.plan import LabError

HANDROLLED_PATH_ENV = "WIRETWIN_HANDROLLED_PATH"


def call_python(
    prefix: Sequence[str],
    target: str,
    args: tuple,
    kwargs: dict,
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
):
    """Call ``"pkg.module:function"`` in a fresh Python started behind ``prefix`` (e.g.
    ``ip netns exec NS``); the call and its result or exception cross as pickles."""
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "compare.lab", "--call"],
        input=pickle.dumps((target, args, kwargs)),
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0 or not proc.stdout:
        why = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise LabError(f"call of {target} failed: {why}")
    ok, value = pickle.loads(proc.stdout)
    if not ok:
        raise value
    return value


def _import_handrolled_from(root: Path) -> None:
    """Make ``handrolled`` (and every submodule imported later) come from ``root/handrolled``.

    Loaded explicitly, by path: whichever way the project is installed (a strict editable
    install's import hook, a path in a .pth, the working directory first on sys.path), no
    other copy can win.
    """
    import importlib.util

    for name in [m for m in sys.modules if m == "handrolled" or m.startswith("handrolled.")]:
        del sys.modules[name]
    package = root / "handrolled"
    spec = importlib.util.spec_from_file_location(
        "handrolled", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise LabError(f"no handrolled package under {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handrolled"] = module
    spec.loader.exec_module(module)


def call_main() -> int:
    """Child side of call_python: unpickle (target, args, kwargs) from stdin, pickle the result."""
    import importlib

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the function prints must not corrupt the pickle
    override = os.environ.get(HANDROLLED_PATH_ENV)
    if override:
        _import_handrolled_from(Path(override))
    target, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    module_name, _, func_name = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        data = pickle.dumps((True, func(*args, **kwargs)))
    except BaseException as exc:  # carried to the caller
        try:
            data = pickle.dumps((False, exc))
        except Exception:
            data = pickle.dumps((False, LabError(f"{type(exc).__name__}: {exc}")))
    out.write(data)
    out.flush()
    return 0
