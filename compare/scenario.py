"""What every comparison scenario shares: check rows, running one side under capture.

A scenario runs the hand-rolled and the reference implementation one after the other against
the same target with the same inputs, each inside the lab's client namespace (through
``Lab.call``, i.e. ``ip netns exec``, exactly as a user would run them) while a capture on the
client's link records what each put on the wire.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compare.capture import Capture, Frame
from compare.lab import Lab, call_python
from compare.packets import Allowed

OK, FAIL = "ok", "FAIL"
CLIENT_IFACE = "down0"
LATE_PACKET_WAIT = 0.1  # seconds the capture stays open after a side returns


@dataclass(frozen=True)
class Difference:
    """One failing field of a check, structured: what differs, where, and both values.

    ``packets`` holds the two whole packets the field was read from (for a hex diff), and
    ``labels`` names the two sides (the two implementations by default; a side and its wire,
    or a baseline and this run, for other checks).
    """

    field: str  # "ipv4.ttl", "icmp.payload[3]", "hop 3"
    values: tuple[str, str]
    offset: int | None = None  # byte offset within the packets
    where: str = ""  # which probe or packet, e.g. "probe seq 1 ttl 64"
    packets: tuple[bytes, bytes] | None = None
    labels: tuple[str, str] = ("handrolled", "reference")

    def describe(self) -> str:
        at = f" at offset {self.offset}" if self.offset is not None else ""
        where = f"{self.where}: " if self.where else ""
        (a, b), (la, lb) = self.values, self.labels
        return f"{where}{self.field}{at}: {la} {a} vs {lb} {b}"


@dataclass
class Row:
    """One line of the report."""

    scenario: str
    check: str
    handrolled: str
    reference: str
    ok: bool
    details: list[str] = field(default_factory=list)  # why it failed, one line per finding
    allowed: list[Allowed] = field(default_factory=list)  # allowed differences met, with reasons
    differences: list[Difference] = field(default_factory=list)  # failing fields, structured

    @property
    def verdict(self) -> str:
        return OK if self.ok else FAIL

    @classmethod
    def of_sides(
        cls,
        scenario: str,
        check: str,
        cells: Mapping[str, str],
        ok: bool,
        details: Sequence[str] = (),
        **kw: Any,
    ) -> Row:
        """A row of a check made per side: ``cells`` holds each implementation's cell."""
        return cls(
            scenario, check, cells["handrolled"], cells["reference"], ok, list(details), **kw
        )


@dataclass
class SideRun:
    """One implementation's run: its result object and the frames captured meanwhile."""

    impl: str
    result: Any = None
    frames: list[Frame] = field(default_factory=list)
    error: str | None = None  # the side raised instead of returning a result
    seconds: float = 0.0
    keylog: str = ""  # the side's TLS key log (NSS format), "" without TLS


@dataclass(frozen=True)
class Sides:
    """Where each implementation's runner lives (module:function), and how to import it."""

    handrolled: str
    reference: str
    env: dict[str, str] | None = None  # e.g. PYTHONPATH for a patched copy (fault injection)


class Site:
    """Where the two sides run and where their packets are captured."""

    def call(self, target: str, args: tuple, kwargs: dict, env: dict[str, str] | None) -> Any:
        raise NotImplementedError

    def capture(self) -> Capture:
        raise NotImplementedError

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        raise NotImplementedError


@dataclass
class LabSite(Site):
    """The lab's client namespace; capture on its only link."""

    lab: Lab

    def call(self, target: str, args: tuple, kwargs: dict, env: dict[str, str] | None) -> Any:
        return self.lab.call("client", target, *args, call_env=env, **kwargs)

    def capture(self) -> Capture:
        return Capture(self.lab.ns("client"), CLIENT_IFACE)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        return self.lab.popen("client", argv, **kw)


@dataclass
class LocalSite(Site):
    """This machine's own namespace, for targets the user names (``--host``, ``--server``)."""

    iface: str | None = None  # None: capture on every interface

    def call(self, target: str, args: tuple, kwargs: dict, env: dict[str, str] | None) -> Any:
        return call_python([], target, args, kwargs, timeout=300, env=env)

    def capture(self) -> Capture:
        return Capture(None, self.iface)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(argv, **kw)


@dataclass
class Context:
    """What a scenario runs against: a site, and the lab's truth when the site is a lab."""

    site: Site

    @property
    def lab(self) -> Lab | None:
        return self.site.lab if isinstance(self.site, LabSite) else None

    @classmethod
    def of_lab(cls, lab: Lab) -> Context:
        return cls(LabSite(lab))


def run_side(
    site: Site, impl: str, target: str, args: tuple, kwargs: dict, env: dict[str, str] | None = None
) -> SideRun:
    """Run ``target`` (module:function) at the site while capturing what it sends."""
    run = SideRun(impl)
    started = time.monotonic()
    with site.capture() as capture:
        try:
            run.result = site.call(target, args, kwargs, env)
        except Exception as exc:  # a side failing is a finding, reported as a row
            run.error = f"{type(exc).__name__}: {exc}"
        time.sleep(LATE_PACKET_WAIT)
    run.seconds = time.monotonic() - started
    run.frames = list(capture.frames)
    return run


def both_ran(scenario: str, runs: dict[str, SideRun]) -> Row:
    """The first row of every scenario: did each side return a result?"""
    cells = {
        impl: (f"error: {r.error}" if r.error else f"ran in {r.seconds:.1f} s")
        for impl, r in runs.items()
    }
    ok = all(r.error is None for r in runs.values())
    details = [f"{impl}: {r.error}" for impl, r in runs.items() if r.error]
    return Row.of_sides(scenario, "ran", cells, ok, details)
