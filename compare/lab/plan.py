"""The lab's plan and the truth it promises: nodes, addresses, delays, names, RTT windows.

Pure: no subprocess, socket, os or time; compare/lab/build.py turns a Plan into namespaces.

Default topology (IPv4 and IPv6; every address from the documentation ranges)::

    client -- r1 -- r2 -- r3 -- r4 -- r5 -- r6 -+- target       (answers)
                          |           |         +- prohibited   (ICMP admin-prohibited)
                    silent hop    no reverse      blackhole      (routed nowhere by r6)
                  (no time-exceeded)  DNS name

Link k joins chain node k-1 to node k: 198.51.100.4(k-1)/30 and 2001:db8:0:k::/64, the client
side taking .1 / ::1 and the far side .2 / ::2.  The end hosts sit on 203.0.113.8/30
(target .10) and 203.0.113.16/30 (prohibited .18).

Delay: each node holds the packets that arrive on its upstream (client-side) link for the
link's round-trip delay (compare/lab/delay.py); the path back is not delayed, so a node's
promised RTT is the sum of the delays of the links up to it.  Each stage adds a little of its
own (about 0.05 ms measured here), and the VM's CPU pauses only ever add time, so the error is
one-sided: a measured *minimum* RTT must fall within [promised - EARLY_SLACK_MS, promised +
STAGE_SLACK_MS per stage + BASE_SLACK_MS].  A pause delays every probe in flight at once, so a
minimum over a few probes sent together is one sample: Plan.settle_min_rtts measures again (up
to RTT_ATTEMPTS in all) when a minimum comes out late, and fails at once when one is early.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass

from handrolled.errors import WiretwinError

NS_PREFIX = "wt-"  # every lab namespace starts with this; `lab down --all` reaps them all
DOMAIN = "lab.test"
EARLY_SLACK_MS = 0.05  # how far below the promise a minimum RTT may fall (clock granularity)
STAGE_SLACK_MS = 0.3
BASE_SLACK_MS = 0.5
RTT_ATTEMPTS = 3  # measurements Plan.settle_min_rtts allows before a late minimum fails
# Round-trip delay of the link that ends at each node, in ms (distinct, so a hop attributed to
# the wrong TTL shows).  Keys are roles.
DEFAULT_DELAYS_MS: dict[str, float] = {
    "r1": 3.0,
    "r2": 5.0,
    "r3": 4.0,
    "r4": 6.0,
    "r5": 3.0,
    "r6": 5.0,
    "target": 4.0,
    "prohibited": 4.0,
}
ROUTERS = ("r1", "r2", "r3", "r4", "r5", "r6")
CHAIN = ("client", *ROUTERS)
SILENT = "r3"
UNNAMED = "r5"
BLACKHOLE4 = "203.0.113.99"
BLACKHOLE6 = "2001:db8:0:1ff::99"
# End hosts behind r6: role -> (IPv4 /30 base, IPv6 /64 prefix)
END_LINKS = {
    "target": ("203.0.113.8", "2001:db8:0:100::"),
    "prohibited": ("203.0.113.16", "2001:db8:0:101::"),
}


class LabError(WiretwinError):
    """The lab could not be built, found or torn down."""


@dataclass(frozen=True)
class RttVerdict:
    """What Plan.settle_min_rtts found: the minimum per key and how many measurements it took."""

    ok: bool
    minimum: dict
    measurements: int
    why: str


@dataclass(frozen=True)
class Node:
    """One node of the lab and the truth it promises, as seen from the client."""

    role: str
    ns: str
    ttl: int | None  # hops from the client (None for the client itself)
    addr4: str  # the address that answers the client (the upstream interface)
    addr6: str
    hostname: str | None  # reverse DNS name; None for the unnamed router
    answers: bool  # sends ICMP time-exceeded / replies (False for the silent hop)
    rtt_ms: float  # promised RTT from the client
    stages: int  # delay stages a round trip to it crosses (links with a positive delay)

    def addr(self, family: int = 4) -> str:
        return self.addr6 if family == 6 else self.addr4


def v4_add(base: str, host: int) -> str:
    """``base`` (dotted quad) plus ``host`` in its last octet."""
    a, b, c, d = (int(x) for x in base.split("."))
    return f"{a}.{b}.{c}.{d + host}"


def link_addrs(k: int) -> tuple[str, str, str, str]:
    """(lower v4, upper v4, lower v6, upper v6) of chain link k (1-based)."""
    base = f"198.51.100.{4 * (k - 1)}"
    return v4_add(base, 1), v4_add(base, 2), f"2001:db8:0:{k:x}::1", f"2001:db8:0:{k:x}::2"


class Plan:
    """What a lab with namespaces named ``wt-<id>-<role>`` consists of and promises."""

    blackhole4 = BLACKHOLE4
    blackhole6 = BLACKHOLE6
    blackhole_name = f"blackhole.{DOMAIN}"

    def __init__(self, lab_id: str, delays: dict[str, float] | None = None) -> None:
        self.lab_id = lab_id
        self.prefix = f"{NS_PREFIX}{lab_id}-"
        self.delays = dict(DEFAULT_DELAYS_MS if delays is None else delays)
        self.nodes: dict[str, Node] = self._plan()

    def _plan(self) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        lo4, _, lo6, _ = link_addrs(1)
        nodes["client"] = Node(
            "client", self.ns("client"), None, lo4, lo6, f"client.{DOMAIN}", True, 0.0, 0
        )
        rtt, stages = 0.0, 0
        for k, role in enumerate(ROUTERS, start=1):
            _, up4, _, up6 = link_addrs(k)
            rtt += self.delays.get(role, 0.0)
            stages += self.has_stage(role)
            name = None if role == UNNAMED else f"{role}.{DOMAIN}"
            nodes[role] = Node(role, self.ns(role), k, up4, up6, name, role != SILENT, rtt, stages)
        for role, (base4, prefix6) in END_LINKS.items():
            nodes[role] = Node(
                role,
                self.ns(role),
                len(ROUTERS) + 1,
                v4_add(base4, 2),
                prefix6 + "2",
                f"{role}.{DOMAIN}",
                True,
                rtt + self.delays.get(role, 0.0),
                stages + self.has_stage(role),
            )
        return nodes

    def has_stage(self, role: str) -> bool:
        """Whether the link ending at ``role`` gets a delay stage (only a positive delay does)."""
        return role != "client" and self.delays.get(role, 0.0) > 0

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    @property
    def client(self) -> Node:
        return self.nodes["client"]

    @property
    def target(self) -> Node:
        return self.nodes["target"]

    @property
    def prohibited(self) -> Node:
        return self.nodes["prohibited"]

    def hops(self, to: str = "target") -> list[Node]:
        """The nodes a trace from the client meets, in TTL order: r1..r6 then ``to``."""
        return [self.nodes[r] for r in ROUTERS] + ([self.nodes[to]] if to in END_LINKS else [])

    def rtt_tolerance(self, node: Node) -> tuple[float, float]:
        """The interval a measured minimum RTT to ``node`` must fall in (see module docstring)."""
        high = node.rtt_ms + STAGE_SLACK_MS * node.stages + BASE_SLACK_MS
        return node.rtt_ms - EARLY_SLACK_MS, high

    def rtt_ok(self, measured_min_ms: float, node: Node) -> bool:
        low, high = self.rtt_tolerance(node)
        return low <= measured_min_ms <= high

    def settle_min_rtts(
        self,
        nodes: Mapping[Hashable, Node],
        first: Mapping[Hashable, Iterable[float | None]],
        again: Callable[[], Mapping[Hashable, Iterable[float | None]]] | None = None,
        attempts: int = RTT_ATTEMPTS,
    ) -> RttVerdict:
        """Judge measured RTTs against the promise, re-measuring what noise may have pushed out.

        ``first`` maps each key of ``nodes`` to the RTT samples (ms) of one measurement;
        ``again()`` measures once more in the same shape.  The promise is about the minimum,
        and this VM's noise only ever adds time, while a pause hits every probe in flight at
        once: so a minimum above the window earns another measurement (up to ``attempts`` in
        all, the minimum taken over every sample), but one below it fails at once, because no
        noise explains it.  A systematic excess (a wrong unit, a late send stamp) stays outside
        the window however often it is measured, and fails.
        """
        best: dict[Hashable, float] = {}
        used = 0

        def take(samples: Mapping[Hashable, Iterable[float | None]]) -> None:
            for key, values in samples.items():
                for value in values:
                    if value is not None and value < best.get(key, float("inf")):
                        best[key] = value

        for used in range(1, attempts + 1):
            take(first if used == 1 else again())  # type: ignore[misc]
            below = [k for k, v in best.items() if v < self.rtt_tolerance(nodes[k])[0]]
            outside = [k for k in nodes if k not in best or not self.rtt_ok(best[k], nodes[k])]
            if below or not outside or again is None:
                break
        why = "; ".join(
            (f"{k}: min {best[k]:.3f} ms" if k in best else f"{k}: no sample")
            + " outside {:.2f}..{:.2f}".format(*self.rtt_tolerance(nodes[k]))
            for k in outside
        )
        return RttVerdict(
            not outside, best, used, why + (f" after {used} measurement(s)" if outside else "")
        )

    def truth(self) -> list[dict]:
        """The table `wiretwin lab status` prints: per hop what the lab promises."""
        rows = []
        for node in [*self.hops("target"), self.prohibited]:
            low, high = self.rtt_tolerance(node)
            rows.append(
                {
                    "ttl": node.ttl,
                    "role": node.role,
                    "namespace": node.ns,
                    "ipv4": node.addr4,
                    "ipv6": node.addr6,
                    "name": node.hostname or "(no reverse DNS)",
                    "answers": "no (silent)"
                    if not node.answers
                    else ("admin-prohibited" if node.role == "prohibited" else "yes"),
                    "rtt_ms": round(node.rtt_ms, 3),
                    "min_rtt_window_ms": f"{low:.2f}..{high:.2f}",
                }
            )
        rows.append(
            {
                "ttl": None,
                "role": "blackhole",
                "namespace": "-",
                "ipv4": BLACKHOLE4,
                "ipv6": BLACKHOLE6,
                "name": self.blackhole_name,
                "answers": "never",
                "rtt_ms": None,
                "min_rtt_window_ms": "-",
            }
        )
        return rows

    def hosts_file(self) -> str:
        """/etc/hosts for every node: each named node under both its addresses."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for node in self.nodes.values():
            if node.hostname:
                lines.append(f"{node.addr4}\t{node.hostname}")
                lines.append(f"{node.addr6}\t{node.hostname}")
        lines.append(f"{BLACKHOLE4}\t{self.blackhole_name}")
        lines.append(f"{BLACKHOLE6}\t{self.blackhole_name}")
        return "\n".join(lines) + "\n"
