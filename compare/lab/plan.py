"""The lab's plan and the truth it promises: nodes, addresses, delays, names, RTT windows.

Pure: no subprocess, socket, os or time; compare/lab/build.py turns a Plan into namespaces.

Default topology (IPv4 and IPv6; every address from the documentation ranges)::

    client -- r1 -- r2 -- r3 -- r4 -- r5 -- r6 -+- target       (answers)
                    |     |     |     |         +- prohibited   (ICMP admin-prohibited)
                    |   silent lossy no rDNS    +- hostunreach  (ICMP host-unreachable)
                    |    hop   probe            +- netunreach   (ICMP net-unreachable)
                    |                           +- faulty       (deterministic faults)
                    |                           +- forged       (a forger beside it)
                    |                           +- narrow       (link MTU 1400 / IPv6 1280)
                    |                              blackhole    (routed nowhere by r6)
                    +- fork-a -+
                    +- fork-b -+- join -- multi  (r2: equal-cost multipath, L4 hash)

Link k joins chain node k-1 to node k: 198.51.100.4(k-1)/30 and 2001:db8:0:k::/64, the client
side taking .1 / ::1 and the far side .2 / ::2.  The end hosts sit on 203.0.113.4n/30 behind
r6 (target .10, prohibited .18, ...; END_LINKS); the fork on 203.0.113.128/27 and
2001:db8:0:120::/61 (FORK_LINKS).  Faults (compare/lab/faults.py) are keyed by sequence number,
so one ``ping -c 6`` to faulty meets each once; everything else is untouched by them.

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

from compare.lab import faults
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
    "hostunreach": 4.0,
    "netunreach": 4.0,
    "faulty": 4.0,
    "forged": 4.0,
    "narrow": 4.0,
    "fork-a": 2.0,  # equal on both branches, so multi's RTT is the same on either
    "fork-b": 2.0,
    "join": 1.0,
    "multi": 2.0,
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
    "hostunreach": ("203.0.113.20", "2001:db8:0:102::"),
    "netunreach": ("203.0.113.24", "2001:db8:0:103::"),
    "faulty": ("203.0.113.28", "2001:db8:0:104::"),
    "forged": ("203.0.113.32", "2001:db8:0:105::"),
    "narrow": ("203.0.113.36", "2001:db8:0:106::"),
}
# What an end host answers instead of an echo reply (v4 type/code, v6 type/code).
UNREACHABLE = {
    "prohibited": ("admin-prohibited", (3, 13), (1, 1)),  # RFC 1812 5.2.7.1, RFC 4443 3.1
    "hostunreach": ("host-unreachable", (3, 1), (1, 3)),  # RFC 792; ICMPv6 address unreachable
    "netunreach": ("net-unreachable", (3, 0), (1, 0)),  # RFC 792; ICMPv6 no route
}
# The fork: r2 -> fork-a | fork-b -> join -> multi.  link: (lower, upper, lower's interface,
# upper's interface, v4 /30 base, v6 /64 prefix); the lower end takes .1/::1.
FORK = ("fork-a", "fork-b")
FORK_ROUTER = "r2"
FORK_LINKS = (
    ("r2", "fork-a", "fork0", "up0", "203.0.113.128", "2001:db8:0:120::"),
    ("r2", "fork-b", "fork1", "up0", "203.0.113.132", "2001:db8:0:121::"),
    ("fork-a", "join", "down0", "up0", "203.0.113.136", "2001:db8:0:122::"),
    ("fork-b", "join", "down0", "up1", "203.0.113.140", "2001:db8:0:123::"),
    ("join", "multi", "down0", "up0", "203.0.113.144", "2001:db8:0:124::"),
)
FORK_ROLES = ("fork-a", "fork-b", "join", "multi")
# The small-MTU link: r6 -- narrow; r6 answers what does not fit (RFC 1191 4, RFC 8201 4).
NARROW_MTU4 = 1400
NARROW_MTU6 = 1280
# The lossy hop: r4 drops the one probe that would expire there (TTL 1 on arrival) with this
# UDP destination port or this ICMP echo identifier and sequence: traceroute(8) -q 3 -p 44444
# puts it second at TTL 4 (ports base + (ttl - 1) * 3 + i).  Normal traces never use them.
LOSSY = "r4"
LOSSY_UDP_PORT = 44454
LOSSY_ICMP_IDENT = 0x4C53
LOSSY_ICMP_SEQ = 11
# The fault plan of faulty (both families; any identifier): seq 1..6 meet one outcome each.
FAULTY_RULES = faults.parse_plan(
    "hold reply seq=1 after=2; duplicate reply seq=3; corrupt reply seq=4 byte=20;"
    "corrupt-bad-checksum reply seq=5 byte=20; drop request seq=6"
)
FORGED_RULES = faults.parse_plan("forge request")
FAULT_PLANS = {"faulty": FAULTY_RULES, "forged": FORGED_RULES}


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
                stages + self.stages_at(role),
            )
        # The fork: each node answers from the address of the first link that reaches it
        # (join: from fork-a's, its route back); the RTTs run through fork-a.
        fork_up: dict[str, tuple[str, str, str]] = {}
        for lower, upper, _, _, base4, prefix6 in FORK_LINKS:
            fork_up.setdefault(upper, (lower, base4, prefix6))
        for role in FORK_ROLES:
            lower, base4, prefix6 = fork_up[role]
            up = nodes[lower]
            nodes[role] = Node(
                role,
                self.ns(role),
                up.ttl + 1,  # type: ignore[operator]
                v4_add(base4, 2),
                prefix6 + "2",
                f"{role}.{DOMAIN}",
                True,
                up.rtt_ms + self.delays.get(role, 0.0),
                up.stages + self.stages_at(role),
            )
        return nodes

    def stages_at(self, role: str) -> int:
        """Stages a round trip to ``role`` crosses at its own link: one per queue there (the
        delay stage; for faulty also the one its replies cross)."""
        return len(self.queues(role))

    def queues(self, role: str) -> dict[int, tuple[float, tuple[faults.Rule, ...]]]:
        """The NFQUEUE queues at ``role``: number -> (delay ms, fault rules).  Queue 0 holds
        what arrives on its upstream link(s), queue 1 (faulty only) its outgoing echo replies."""
        rules = FAULT_PLANS.get(role, ())
        out: dict[int, tuple[float, tuple[faults.Rule, ...]]] = {}
        if self.has_stage(role) or rules:
            out[0] = (self.delays.get(role, 0.0), rules)
        if role == "faulty":
            out[1] = (0.0, rules)
        return out

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

    def hops(self, to: str = "target", branch: int = 0) -> list[Node]:
        """The nodes a trace from the client meets, in TTL order: r1..r6 then ``to``; for the
        fork's nodes r1, r2, fork-a (``branch`` 1: fork-b), join, multi."""
        if to in FORK_ROLES:
            path = ["r1", "r2", to if to in FORK else FORK[branch], "join", "multi"]
            return [self.nodes[r] for r in path[: path.index(to) + 1]]
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

    def answers(self, node: Node) -> str:
        """What ``node`` answers a probe addressed to it (or, for a router, one expiring there)."""
        if not node.answers:
            return "no (silent)"
        if node.role in UNREACHABLE:
            return UNREACHABLE[node.role][0]
        return {
            "faulty": "yes, with faults (see faults)",
            "forged": "yes, and a forger beside it",
            "narrow": f"yes, behind MTU {NARROW_MTU4} / IPv6 {NARROW_MTU6}",
            LOSSY: "yes, but loses one probe (see lost_probe)",
        }.get(node.role, "yes")

    def truth(self) -> list[dict]:
        """The table `wiretwin lab status` prints: per hop what the lab promises."""
        rows = []
        ends = [self.nodes[role] for role in END_LINKS if role != "target"]
        forks = [self.nodes[role] for role in FORK_ROLES]
        for node in [*self.hops("target"), *ends, *forks]:
            low, high = self.rtt_tolerance(node)
            rows.append(
                {
                    "ttl": node.ttl,
                    "role": node.role,
                    "namespace": node.ns,
                    "ipv4": node.addr4,
                    "ipv6": node.addr6,
                    "name": node.hostname or "(no reverse DNS)",
                    "answers": self.answers(node),
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

    def promises(self) -> dict:
        """The lab's other promises, beside the hop table: which probe meets which fault, the
        forger, the unreachable answers, the lost probe, the fork and the small-MTU link."""
        r4, r6 = self.nodes[LOSSY], self.nodes["r6"]
        fork = {role: self.nodes[role] for role in (FORK_ROUTER, *FORK_ROLES)}
        return {
            "faults": {
                "node": "faulty",
                "rules": [rule.text() for rule in FAULTY_RULES],
                "per_seq": {
                    str(family): faults.outcomes(FAULTY_RULES, family, range(1, 7))
                    for family in (4, 6)
                },
                "hold_limit_s": faults.HOLD_LIMIT_S,
                "note": "any identifier; corrupt flips payload byte 20 (payloads of 21 bytes "
                "or more); a bad ICMPv6 checksum is dropped by the client's kernel before any "
                "socket (RFC 4443 2.3), so an IPv6 client reports that probe lost",
            },
            "forger": {
                "node": "forged",
                "forged_from": {"4": faults.FORGER4, "6": faults.FORGER6},
                "rules": [rule.text() for rule in FORGED_RULES],
                "per_request": [
                    "an echo reply with the probe's identifier and sequence from forged_from",
                    "an echo reply from forged with identifier XOR 0xffff",
                    "then the real reply",
                ],
                "correct_client": "ignores both forgeries: every probe gets one reply",
            },
            "unreachable": {
                role: {
                    "answers": name,
                    "ipv4_type_code": list(v4),
                    "ipv6_type_code": list(v6),
                    "traceroute": {"admin-prohibited": "!X", "host-unreachable": "!H"}.get(
                        name, "!N"
                    ),
                }
                for role, (name, v4, v6) in UNREACHABLE.items()
            },
            "lost_probe": {
                "ttl": r4.ttl,
                "router": r4.role,
                "udp_dst_port": LOSSY_UDP_PORT,
                "icmp_ident": LOSSY_ICMP_IDENT,
                "icmp_seq": LOSSY_ICMP_SEQ,
                "rule": "dropped at r4 when it would expire there (TTL / hop limit 1 on arrival)",
                "example": "traceroute -q 3 -p 44444 target.lab.test: hop 4's second probe *",
            },
            "fork": {
                "to": "multi",
                "forks_at_ttl": fork[FORK_ROUTER].ttl,
                "router": FORK_ROUTER,
                "branch_ttl": fork["fork-a"].ttl,
                "branches": {
                    role: {"ipv4": fork[role].addr4, "ipv6": fork[role].addr6} for role in FORK
                },
                "joins_at_ttl": fork["join"].ttl,
                "join": {"ipv4": fork["join"].addr4, "ipv6": fork["join"].addr6},
                "hash": "fib_multipath_hash_policy=1 (addresses, protocol, ports), both families",
            },
            "mtu": {
                "to": "narrow",
                "router": "r6",
                "ttl": r6.ttl,
                "from": {"4": r6.addr4, "6": r6.addr6},
                "mtu4": NARROW_MTU4,
                "mtu6": NARROW_MTU6,
                "answers": "frag-needed with the next-hop MTU (RFC 1191 4) / Packet Too Big "
                "(RFC 8201 4), for datagrams that do not fit and may not be fragmented",
            },
        }

    def promise_lines(self) -> list[str]:
        """promises() for a terminal: one line each."""
        p = self.promises()
        f, fork, mtu, lost = p["faults"], p["fork"], p["mtu"], p["lost_probe"]
        per_seq = ", ".join(f"{seq} {what}" for seq, what in f["per_seq"]["4"].items())
        unreach = ", ".join(
            f"{role} {u['answers']} (v4 {u['ipv4_type_code'][0]}/{u['ipv4_type_code'][1]},"
            f" v6 {u['ipv6_type_code'][0]}/{u['ipv6_type_code'][1]}, {u['traceroute']})"
            for role, u in p["unreachable"].items()
        )
        branches = " | ".join(f"{b['ipv4']} {b['ipv6']}" for b in fork["branches"].values())
        return [
            f"faults at faulty, any identifier, both families: seq {per_seq}"
            " (IPv6: the bad checksum is dropped by the client's kernel)",
            f"forger at forged: per request a reply with its identifier/sequence from"
            f" {p['forger']['forged_from']['4']} / {p['forger']['forged_from']['6']}, one from"
            " forged with identifier XOR 0xffff, then the real one",
            f"unreachable: {unreach}",
            f"lost probe: {lost['router']} (ttl {lost['ttl']}) drops the probe expiring there with"
            f" UDP port {lost['udp_dst_port']} or ICMP id {lost['icmp_ident']:#x} seq"
            f" {lost['icmp_seq']} ({lost['example']})",
            f"fork to multi: {fork['router']} (ttl {fork['forks_at_ttl']}) hashes flows over ttl"
            f" {fork['branch_ttl']} {branches}; join at ttl {fork['joins_at_ttl']}"
            f" {fork['join']['ipv4']} {fork['join']['ipv6']}",
            f"mtu to narrow: {mtu['router']} (ttl {mtu['ttl']}) answers frag-needed mtu"
            f" {mtu['mtu4']} / Packet Too Big mtu {mtu['mtu6']}",
        ]

    def hosts_file(self) -> str:
        """/etc/hosts for every node: each named node under both its addresses."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for node in self.nodes.values():
            if node.hostname:
                lines.append(f"{node.addr4}\t{node.hostname}")
                lines.append(f"{node.addr6}\t{node.hostname}")
        lines.append(f"{faults.FORGER4}\tforger.{DOMAIN}")
        lines.append(f"{faults.FORGER6}\tforger.{DOMAIN}")
        lines.append(f"{BLACKHOLE4}\t{self.blackhole_name}")
        lines.append(f"{BLACKHOLE6}\t{self.blackhole_name}")
        return "\n".join(lines) + "\n"
