"""The lab: real multi-hop targets on one machine, built from network namespaces.

Default topology (IPv4 and IPv6; every address from the documentation ranges)::

    client -- r1 -- r2 -- r3 -- r4 -- r5 -- r6 -+- target       (answers)
                          |           |         +- prohibited   (ICMP admin-prohibited)
                    silent hop    no reverse      blackhole      (routed nowhere by r6)
                  (no time-exceeded)  DNS name

Link k joins chain node k-1 to node k: 198.51.100.4(k-1)/30 and 2001:db8:0:k::/64, the client
side taking .1 / ::1 and the far side .2 / ::2.  The end hosts sit on 203.0.113.8/30
(target .10) and 203.0.113.16/30 (prohibited .18).

Delay: the kernel here has no sch_netem, so each node queues the packets that arrive on its
upstream (client-side) link to a netlink queue (the NFQUEUE target; see compare/delay.py) and a
delay process holds each for the link's round-trip delay.  The path back is not delayed, so a
node's promised RTT is the sum of the delays of the links up to it.  Each stage adds a little
of its own (the delay process runs SCHED_FIFO, holds each packet from the kernel's arrival
stamp and spins the last 250 us: about 0.05 ms a stage measured here).  The error is
one-sided: a measured *minimum* RTT must fall within [promised - EARLY_SLACK_MS, promised +
STAGE_SLACK_MS per stage + BASE_SLACK_MS]; the VM's CPU pauses only ever add time.  A pause
delays every probe in flight at once, so a minimum over a few probes sent together is one
sample, not several: Lab.settle_min_rtts measures again (up to RTT_ATTEMPTS in all) when a
minimum comes out late, and fails at once when one comes out early.

Names resolve through /etc/netns/<ns>/{hosts,nsswitch.conf,resolv.conf}, which `ip netns exec`
bind-mounts over /etc: `hosts: files` only, so an unknown name fails at once and no lookup
leaves the lab.  Nothing in the root namespace changes except those files and the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compare import netns
from handrolled.errors import WiretwinError

log = logging.getLogger(__name__)

NS_PREFIX = "wt-"  # every lab namespace starts with this; `lab down --all` reaps them all
STATE_DIR = Path("/run/wiretwin")
NETNS_ETC = Path("/etc/netns")
DOMAIN = "lab.test"
EARLY_SLACK_MS = 0.05  # how far below the promise a minimum RTT may fall (clock granularity)
STAGE_SLACK_MS = 0.3
BASE_SLACK_MS = 0.5
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


SILENT_RULES = """
table inet wiretwin {
  chain output {
    type filter hook output priority 0; policy accept;
    icmp type time-exceeded drop comment "the silent hop: forwards, never says so"
    icmpv6 type time-exceeded drop
  }
}
"""
PROHIBITED_RULES = """
table inet wiretwin {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    reject with icmpx type admin-prohibited comment "ICMP 3/13, ICMPv6 1/1 (RFC 1812 5.2.7.1)"
  }
}
"""
_QUEUE_RULE = ("-t", "mangle", "-A", "PREROUTING", "-i", "up0", "-j", "NFQUEUE", "--queue-num", "0")


RTT_ATTEMPTS = 3  # measurements Lab.settle_min_rtts allows before a late minimum fails


@dataclass(frozen=True)
class RttVerdict:
    """What Lab.settle_min_rtts found: the minimum per key and how many measurements it took."""

    ok: bool
    minimum: dict
    measurements: int
    why: str


class LabError(WiretwinError):
    """The lab could not be built, found or torn down."""


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


def _v4(base: str, host: int) -> str:
    a, b, c, d = (int(x) for x in base.split("."))
    return f"{a}.{b}.{c}.{d + host}"


def _link_addrs(k: int) -> tuple[str, str, str, str]:
    """(lower v4, upper v4, lower v6, upper v6) of chain link k (1-based)."""
    base = f"198.51.100.{4 * (k - 1)}"
    return _v4(base, 1), _v4(base, 2), f"2001:db8:0:{k:x}::1", f"2001:db8:0:{k:x}::2"


def _run(
    argv: Sequence[str], *, input_text: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run a tool; a failure to start, a timeout or (with ``check``) a failure is a LabError."""
    try:
        proc = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer after {timeout:g} s") from exc
    except OSError as exc:
        raise LabError(f"{' '.join(argv)}: cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _exec_prefix(ns: str) -> list[str]:
    """The argv prefix that runs a program inside namespace ``ns`` (hosts files apply)."""
    return ["ip", "netns", "exec", ns]


def _ns_exec(ns: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return _run([*_exec_prefix(ns), *argv], **kw)


class Lab:
    """A lab instance: namespaces named ``wt-<id>-<role>``."""

    def __init__(self, lab_id: str, delays: dict[str, float] | None = None) -> None:
        self.lab_id = lab_id
        self.prefix = f"{NS_PREFIX}{lab_id}-"
        self.delays = dict(DEFAULT_DELAYS_MS if delays is None else delays)
        self._delay_proc: subprocess.Popen | None = None
        self.nodes: dict[str, Node] = self._plan()

    # ---- the plan (pure) -------------------------------------------------------------------
    def _plan(self) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        lo4, _, lo6, _ = _link_addrs(1)
        nodes["client"] = Node(
            "client", self.ns("client"), None, lo4, lo6, f"client.{DOMAIN}", True, 0.0, 0
        )
        rtt, stages = 0.0, 0
        for k, role in enumerate(ROUTERS, start=1):
            _, up4, _, up6 = _link_addrs(k)
            rtt += self.delays.get(role, 0.0)
            stages += self.has_stage(role)
            name = None if role == UNNAMED else f"{role}.{DOMAIN}"
            nodes[role] = Node(role, self.ns(role), k, up4, up6, name, role != SILENT, rtt, stages)
        for role, (base4, prefix6) in END_LINKS.items():
            end_rtt = rtt + self.delays.get(role, 0.0)
            ttl = len(ROUTERS) + 1
            nodes[role] = Node(
                role,
                self.ns(role),
                ttl,
                _v4(base4, 2),
                prefix6 + "2",
                f"{role}.{DOMAIN}",
                True,
                end_rtt,
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

    blackhole4 = BLACKHOLE4
    blackhole6 = BLACKHOLE6
    blackhole_name = f"blackhole.{DOMAIN}"

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
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for node in self.nodes.values():
            if node.hostname:
                lines.append(f"{node.addr4}\t{node.hostname}")
                lines.append(f"{node.addr6}\t{node.hostname}")
        lines.append(f"{BLACKHOLE4}\t{self.blackhole_name}")
        lines.append(f"{BLACKHOLE6}\t{self.blackhole_name}")
        return "\n".join(lines) + "\n"

    # ---- building and tearing down ----------------------------------------------------------
    @classmethod
    def create(cls, delays: dict[str, float] | None = None, lab_id: str | None = None) -> Lab:
        """Build a new lab; on any failure everything built so far is removed."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces): run as root or with sudo")
        for tool in ("ip", "nft", "iptables-nft", "ip6tables-nft"):
            if shutil.which(tool) is None:
                raise LabError(
                    f"the lab needs {tool!r}: apt-get install iproute2 nftables iptables"
                )
        if lab_id is None:
            existing = set(list_namespaces())
            while True:
                lab_id = secrets.token_hex(2)
                if not any(n.startswith(f"{NS_PREFIX}{lab_id}-") for n in existing):
                    break
        lab = cls(lab_id, delays)
        try:
            lab._build()
        except BaseException:
            lab.down()
            raise
        return lab

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def _build(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._save_state()  # first, so a crash mid-build can still be reaped by id
        roles = list(self.nodes)
        for role in roles:
            _run(["ip", "netns", "add", self.ns(role)])
            etc = NETNS_ETC / self.ns(role)
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(self.hosts_file())
            (etc / "nsswitch.conf").write_text("hosts: files\n")
            # No resolver is reachable from the lab; nsswitch never asks one anyway.
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            (etc / "hostname").write_text(f"{role}\n")
        batches: dict[str, list[str]] = {role: ["link set lo up"] for role in roles}
        root_cmds: list[str] = []

        def link(
            number: int,
            lower: str,
            upper: str,
            lo_if: str,
            a4: tuple[str, str],
            a6: tuple[str, str],
        ) -> None:
            # Fixed MACs and permanent neighbour entries: no ARP or neighbour discovery ever
            # runs, so the first probe of a run costs what the hundredth does, and the pcaps
            # are the same from run to run.
            mac_lo, mac_up = f"02:77:74:00:{number:02x}:01", f"02:77:74:00:{number:02x}:02"
            root_cmds.append(
                f"link add {lo_if} netns {self.ns(lower)} address {mac_lo} type veth"
                f" peer name up0 netns {self.ns(upper)} address {mac_up}"
            )
            batches[lower] += [
                f"addr add {a4[0]}/30 dev {lo_if}",
                f"addr add {a6[0]}/64 dev {lo_if} nodad",
                f"link set {lo_if} up",
                f"neigh add {a4[1]} lladdr {mac_up} dev {lo_if} nud permanent",
                f"neigh add {a6[1]} lladdr {mac_up} dev {lo_if} nud permanent",
            ]
            batches[upper] += [
                f"addr add {a4[1]}/30 dev up0",
                f"addr add {a6[1]}/64 dev up0 nodad",
                "link set up0 up",
                f"neigh add {a4[0]} lladdr {mac_lo} dev up0 nud permanent",
                f"neigh add {a6[0]} lladdr {mac_lo} dev up0 nud permanent",
            ]

        for k in range(1, len(CHAIN)):
            lo4, up4, lo6, up6 = _link_addrs(k)
            link(k, CHAIN[k - 1], CHAIN[k], "down0", (lo4, up4), (lo6, up6))
        for n, (role, (base4, prefix6)) in enumerate(END_LINKS.items(), start=0x10):
            link(
                n,
                "r6",
                role,
                f"to-{role[:5]}",
                (_v4(base4, 1), _v4(base4, 2)),
                (prefix6 + "1", prefix6 + "2"),
            )

        # Routes: everything upstream via the upstream neighbour, downstream via the downstream one.
        lab4, lab6 = ("198.51.100.0/24", "203.0.113.0/24"), "2001:db8::/32"
        for k, role in enumerate(CHAIN):
            if k > 0:  # upstream: the client side links
                lo4, _, lo6, _ = _link_addrs(k)
                for i in range(1, k):
                    base = f"198.51.100.{4 * (i - 1)}/30"
                    batches[role].append(f"route add {base} via {lo4}")
                    batches[role].append(f"route add 2001:db8:0:{i:x}::/64 via {lo6}")
            if k < len(CHAIN) - 1:  # downstream: further links and the end hosts
                _, up4, _, up6 = _link_addrs(k + 1)
                for i in range(k + 2, len(CHAIN)):
                    batches[role].append(f"route add 198.51.100.{4 * (i - 1)}/30 via {up4}")
                    batches[role].append(f"route add 2001:db8:0:{i:x}::/64 via {up6}")
                batches[role].append(f"route add 203.0.113.0/24 via {up4}")
                batches[role].append(f"route add 2001:db8:0:100::/56 via {up6}")
        batches["r6"] += [
            f"route add blackhole {BLACKHOLE4}/32",
            f"route add blackhole {BLACKHOLE6}/128",
        ]
        for role, (base4, prefix6) in END_LINKS.items():
            gw4, gw6 = _v4(base4, 1), prefix6 + "1"
            batches[role] += [
                f"route add {lab4[0]} via {gw4}",
                f"route add {lab4[1]} via {gw4}",
                f"route add {lab6} via {gw6}",
            ]

        sysctls = [
            "net.ipv4.icmp_ratelimit=0",  # traces and repeated runs must never meet the limiter
            "net.ipv4.icmp_msgs_per_sec=100000",
            "net.ipv4.icmp_msgs_burst=100000",
            "net.ipv6.icmp.ratelimit=0",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.ping_group_range=0 2147483647",  # datagram ICMP sockets for any user
        ]
        for role in roles:
            extra = (
                ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
                if role in ROUTERS
                else []
            )
            _ns_exec(self.ns(role), ["sysctl", "-q", "-w", *sysctls, *extra])
        _run(["ip", "-batch", "-"], input_text="\n".join(root_cmds) + "\n")
        for role in roles:
            _run(
                ["ip", "-n", self.ns(role), "-batch", "-"],
                input_text="\n".join(batches[role]) + "\n",
            )

        # Filtering, in nftables.
        _ns_exec(self.ns(SILENT), ["nft", "-f", "-"], input_text=SILENT_RULES)
        _ns_exec(self.ns("prohibited"), ["nft", "-f", "-"], input_text=PROHIBITED_RULES)
        # Delay stages: NFQUEUE via iptables-nft (nft's own `queue` needs CONFIG_NFT_QUEUE,
        # which this kernel lacks; the xt NFQUEUE target through nft_compat works).
        queues = []
        for role in roles:
            if not self.has_stage(role):
                continue
            delay = self.delays[role]
            _ns_exec(self.ns(role), ["iptables-nft", *_QUEUE_RULE])
            # Neighbour discovery is never delayed (the entries are permanent anyway).
            for nd_type in ("neighbour-solicitation", "neighbour-advertisement"):
                nd_rule = ["-t", "mangle", "-A", "PREROUTING", "-i", "up0", "-p", "icmpv6"]
                nd_rule += ["--icmpv6-type", nd_type, "-j", "ACCEPT"]
                _ns_exec(self.ns(role), ["ip6tables-nft", *nd_rule])
            _ns_exec(self.ns(role), ["ip6tables-nft", *_QUEUE_RULE])
            queues += ["--queue", f"{self.ns(role)}:0:{delay}"]
        if queues:
            self._start_delay(queues)
        self._save_state()

    def _start_delay(self, queue_args: list[str]) -> None:
        log_path = STATE_DIR / f"{self.lab_id}.delay.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "compare.delay", *queue_args],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,  # survives Ctrl-C of our terminal; reaped by down()
            )
        self._delay_proc = proc
        ready = proc.stdout.readline().strip() if proc.stdout else ""
        if ready != "ready":
            proc.kill()
            raise LabError(f"delay stage failed to start: {log_path.read_text().strip()}")

    def _save_state(self) -> None:
        state = {
            "lab_id": self.lab_id,
            "delays": self.delays,
            "delay_pid": self._delay_proc.pid if self._delay_proc else None,
            "created": time.time(),
        }
        (STATE_DIR / f"{self.lab_id}.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, lab_id: str | None = None) -> Lab:
        """A handle on a lab that is already up (the only one, if lab_id is None)."""
        if lab_id is None:
            ids = running_labs()
            if len(ids) != 1:
                raise LabError(
                    "no lab is up (wiretwin lab up)"
                    if not ids
                    else f"several labs are up ({', '.join(ids)}): pass --lab-id"
                )
            lab_id = ids[0]
        path = STATE_DIR / f"{lab_id}.json"
        if not path.exists():
            raise LabError(f"no lab with id {lab_id!r}")
        state = json.loads(path.read_text())
        return cls(lab_id, state["delays"])

    def delay_alive(self) -> bool:
        path = STATE_DIR / f"{self.lab_id}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads(path.read_text())["delay_pid"]
            return pid is None or is_delay_process(pid)
        return False

    def down(self) -> None:
        """Remove everything this lab built; safe to call twice and after a half-built lab."""
        reap(self.lab_id)
        if self._delay_proc is not None:
            with contextlib.suppress(Exception):
                self._delay_proc.wait(timeout=5)
            self._delay_proc = None

    # ---- using the lab ----------------------------------------------------------------------
    def exec(
        self,
        role: str,
        argv: Sequence[str],
        timeout: float = 30,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run a program inside a node, as a user would with `ip netns exec` (hosts files apply)."""
        return subprocess.run(
            [*_exec_prefix(self.ns(role)), *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def popen(self, role: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen([*_exec_prefix(self.ns(role)), *argv], **kw)

    def call(
        self,
        role: str,
        target: str,
        *args,
        call_timeout: float = 120,
        call_env: dict[str, str] | None = None,
        **kwargs,
    ):
        """Call ``"pkg.module:function"`` in a fresh Python inside the node; return its result.

        The call crosses as a pickle on stdin and stdout; an exception raised there is raised
        here (the same type when it pickles).  Output the function writes goes to stderr.
        ``call_env`` adds environment variables (e.g. HANDROLLED_PATH_ENV: a patched copy).
        """
        prefix = _exec_prefix(self.ns(role))
        return call_python(prefix, target, args, kwargs, timeout=call_timeout, env=call_env)

    def socket(self, role: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket created inside the node's namespace, usable from this process."""
        return netns.netns_socket(self.ns(role), family, kind, proto)

    def entered(self, role: str):
        """Context manager: the current thread inside the node's namespace."""
        return netns.entered(self.ns(role))


def list_namespaces() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def running_labs() -> list[str]:
    ids = {
        n[len(NS_PREFIX) :].split("-", 1)[0] for n in list_namespaces() if n.startswith(NS_PREFIX)
    }
    return sorted(ids)


def reap(lab_id: str | None = None) -> list[str]:
    """Remove one lab (None: every lab): processes, namespaces, files; return what went."""
    removed: list[str] = []
    state_files = [STATE_DIR / f"{lab_id}.json"] if lab_id else list(STATE_DIR.glob("*.json"))
    for path in state_files:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = json.loads(path.read_text())["delay_pid"]
            if pid and is_delay_process(pid):  # after a crash the pid may be someone else's
                _kill(pid)
    prefix = f"{NS_PREFIX}{lab_id}-" if lab_id else NS_PREFIX
    for ns in list_namespaces():
        if not ns.startswith(prefix):
            continue
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            _kill(int(pid))
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    if NETNS_ETC.is_dir():
        for etc in NETNS_ETC.glob(f"{prefix}*"):
            shutil.rmtree(etc, ignore_errors=True)
    for path in state_files:
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.with_suffix(".delay.log").unlink()
    return removed


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, which no parent has reaped yet, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_delay_process(pid: int) -> bool:
    """True while ``pid`` runs and is a delay stage (``python -m compare.delay``), so a pid
    from a state file that the system has since given to another process is left alone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"compare.delay" in argv and pid_alive(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pid):
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)


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


HANDROLLED_PATH_ENV = "WIRETWIN_HANDROLLED_PATH"


def _import_handrolled_from(root: Path) -> None:
    """Make ``handrolled`` (and every submodule imported later) come from ``root/handrolled``.

    Used to run a patched copy of the hand-rolled code (the harness's fault injection).  An
    editable install's import hook outranks PYTHONPATH, so the package is loaded explicitly.
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


def _call_main() -> int:
    """Child side of Lab.call: unpickle (target, args, kwargs) from stdin, pickle the result."""
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
        result = (True, func(*args, **kwargs))
        data = pickle.dumps(result)
    except BaseException as exc:  # carried to the caller
        try:
            data = pickle.dumps((False, exc))
        except Exception:
            data = pickle.dumps((False, LabError(f"{type(exc).__name__}: {exc}")))
    out.write(data)
    out.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--call"]:
        # Run compare.lab's own copy, not this __main__ one: the LabError it may send back
        # must be compare.lab.LabError, which the parent can unpickle.
        from compare.lab import _call_main as call_main

        sys.exit(call_main())
    sys.exit("usage: python -m compare.lab --call (internal); see `wiretwin lab --help`")


__all__ = ["BLACKHOLE4", "BLACKHOLE6", "Lab", "LabError", "Node", "reap", "running_labs"]
