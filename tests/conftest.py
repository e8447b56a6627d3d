"""Shared fixtures: privilege gates, the session-scoped lab, and SMTP servers.

Tests that need root or network namespaces are marked ``lab`` or ``root``.  Unprivileged,
they skip with a reason; with CI=true such a skip is a failure, because CI must exercise them.
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import settings

from compare.lab import TOOL_PACKAGES
from compare.lab import TOOLS as LAB_TOOLS  # the programs Lab.create runs

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Hypothesis: many more examples in CI (each decoder test 2,000), a quick run while developing.
# A test's own @settings(max_examples=...) still wins; --hypothesis-profile picks one by hand.
# CI is derandomized so a gate's verdict is reproducible; the dev profile keeps exploring.
settings.register_profile("ci", max_examples=2000, deadline=None, print_blob=True, derandomize=True)
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if IN_CI else "dev")


def _privilege_problem(need_lab: bool) -> str | None:
    if os.geteuid() != 0:
        return "needs root (raw sockets and network namespaces)"
    if need_lab:
        for tool in LAB_TOOLS:
            if shutil.which(tool) is None:
                return f"needs {tool!r} for the lab (apt-get install {TOOL_PACKAGES})"
        if not os.path.isdir("/proc/self/ns") or not os.path.exists("/proc/self/ns/net"):
            return "needs network namespaces"
    return None


def require(need_lab: bool = True) -> None:
    """Skip (or, in CI, fail) the calling test when the privilege it needs is missing."""
    problem = _privilege_problem(need_lab)
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and the test {problem}: CI must run it", pytrace=False)
    pytest.skip(problem)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lab") is not None:
        require(need_lab=True)
    elif item.get_closest_marker("root") is not None:
        require(need_lab=False)


@pytest.fixture(scope="session")
def lab():
    """One lab for the whole session (see compare/lab/), torn down even on failure."""
    require(need_lab=True)
    from compare.lab import Lab

    with Lab.create() as the_lab:
        yield the_lab


from smtpd_fixtures import *  # noqa: E402, F403  (SMTP servers: aiosmtpd, scripted, in the lab)
