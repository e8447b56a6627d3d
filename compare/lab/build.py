"""Building, using and tearing down a lab: namespaces, veth pairs, routes, filters, delay.

Lab (a Plan, compare/lab/plan.py, made real) creates one network namespace per node, joins them
with veth pairs (fixed MACs, permanent neighbour entries, checksum offload off), adds the routes
(the fork's multipath one at r2), the nftables filters of the silent, lossy and rejecting nodes,
the sysctls (narrow's small MTU), and the NFQUEUE rules whose packets the delay stage
(compare/lab/delay.py, one process per lab) holds, or applies faults to.  Names resolve
through /etc/netns/<ns>/{hosts,nsswitch.conf,resolv.conf}, which `ip netns exec` bind-mounts over
/etc: `hosts: files` only, so an unknown name fails at once and no lookup leaves the lab.
Nothing in the root namespace changes except those files and the namespaces.  A state file under
/run/wiretwin records each lab, so `lab down` (reap) finds it again, after a crash too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from compare.lab import faults, netns
from compare.lab.calls import call_python
from compare.lab.delay import INJECT_MARK
from compare.lab.plan import (
    BLACKHOLE4,
    BLACKHOLE6,
    CHAIN,
    END_LINKS,
    FORK_LINKS,
    FORK_ROUTER,
    LOSSY,
    LOSSY_ICMP_IDENT,
    LOSSY_ICMP_SEQ,
    LOSSY_UDP_PORT,
    NARROW_MTU4,
    NARROW_MTU6,
    NS_PREFIX,
    ROUTERS,
    SILENT,
    UNREACHABLE,
    LabError,
    Plan,
    link_addrs,
    v4_add,
)

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/wiretwin")
NETNS_ETC = Path("/etc/netns")
DELAY_MODULE = "compare.lab.delay"
# Every program Lab.create runs (conftest's lab gate and .ci/setup's apt list follow it).
TOOLS = ("ip", "nft", "iptables-nft", "ip6tables-nft", "sysctl", "ethtool")
TOOL_PACKAGES = "iproute2 nftables iptables procps ethtool"

SILENT_RULES = """
table inet wiretwin {
  chain output {
    type filter hook output priority 0; policy accept;
    icmp type time-exceeded drop comment "the silent hop: forwards, never says so"
    icmpv6 type time-exceeded drop
  }
}
"""
REJECT_RULES = """
table inet wiretwin {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    meta nfproto ipv4 reject with icmp type %s comment "ICMP %d/%d"
    meta nfproto ipv6 reject with icmpv6 type %s comment "ICMPv6 %d/%d"
  }
}
"""
# nft's names for the answers in plan.UNREACHABLE (RFC 792, RFC 1812 5.2.7.1, RFC 4443 3.1)
REJECT_WITH = {
    "admin-prohibited": ("admin-prohibited", "admin-prohibited"),
    "host-unreachable": ("host-unreachable", "addr-unreachable"),
    "net-unreachable": ("net-unreachable", "no-route"),
}
# The lossy hop: only the probe that would expire here (TTL 1 on arrival) with the chosen
# port, or identifier and sequence, is dropped, before the delay stage (priority -300).
LOSSY_RULES = f"""
table inet wiretwin {{
  chain prerouting {{
    type filter hook prerouting priority -300; policy accept;
    ip ttl 1 udp dport {LOSSY_UDP_PORT} drop
    ip6 hoplimit 1 udp dport {LOSSY_UDP_PORT} drop
    ip ttl 1 icmp type echo-request icmp id {LOSSY_ICMP_IDENT} icmp sequence {LOSSY_ICMP_SEQ} drop
    ip6 hoplimit 1 icmpv6 type echo-request icmpv6 id {LOSSY_ICMP_IDENT} \
      icmpv6 sequence {LOSSY_ICMP_SEQ} drop
  }}
}}
"""
# Queue 0: what arrives on a node's upstream link(s); queue 1 (faulty): its own echo replies,
# except the copies our raw socket sends (INJECT_MARK).
_QUEUE_RULE = ("-t", "mangle", "-A", "PREROUTING", "-i", "up+", "-j", "NFQUEUE", "--queue-num", "0")
_REPLY_QUEUE = ("-t", "mangle", "-A", "OUTPUT", "-o", "up0", "-m", "mark", "!", "--mark")
_REPLY_QUEUE += (str(INJECT_MARK), "-j", "NFQUEUE", "--queue-num", "1")
FORWARDERS = (*ROUTERS, "fork-a", "fork-b", "join")
FORK_HASH_SEED = 7774


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


class Lab(Plan):
    """A lab instance: the plan's namespaces, ``wt-<id>-<role>``, built and usable."""

    def __init__(self, lab_id: str, delays: dict[str, float] | None = None) -> None:
        super().__init__(lab_id, delays)
        self._delay_proc: subprocess.Popen | None = None

    # ---- building and tearing down ----------------------------------------------------------
    @classmethod
    def create(cls, delays: dict[str, float] | None = None, lab_id: str | None = None) -> Lab:
        """Build a new lab; on any failure everything built so far is removed."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces): run as root or with sudo")
        missing = missing_tools()
        if missing:
            raise LabError(f"the lab needs {', '.join(missing)}: apt-get install {TOOL_PACKAGES}")
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
        devices: dict[str, list[str]] = {role: [] for role in roles}  # each node's veth ends
        root_cmds: list[str] = []

        def link(
            number: int,
            lower: str,
            upper: str,
            lo_if: str,
            a4: tuple[str, str],
            a6: tuple[str, str],
            up_if: str = "up0",
        ) -> None:
            # Fixed MACs and permanent neighbour entries: no ARP or neighbour discovery ever
            # runs, so the first probe of a run costs what the hundredth does, and the pcaps
            # are the same from run to run.
            mac_lo, mac_up = f"02:77:74:00:{number:02x}:01", f"02:77:74:00:{number:02x}:02"
            root_cmds.append(
                f"link add {lo_if} netns {self.ns(lower)} address {mac_lo} type veth"
                f" peer name {up_if} netns {self.ns(upper)} address {mac_up}"
            )
            devices[lower].append(lo_if)
            devices[upper].append(up_if)
            batches[lower] += [
                f"addr add {a4[0]}/30 dev {lo_if}",
                f"addr add {a6[0]}/64 dev {lo_if} nodad",
                f"link set {lo_if} up",
                f"neigh add {a4[1]} lladdr {mac_up} dev {lo_if} nud permanent",
                f"neigh add {a6[1]} lladdr {mac_up} dev {lo_if} nud permanent",
            ]
            batches[upper] += [
                f"addr add {a4[1]}/30 dev {up_if}",
                f"addr add {a6[1]}/64 dev {up_if} nodad",
                f"link set {up_if} up",
                f"neigh add {a4[0]} lladdr {mac_lo} dev {up_if} nud permanent",
                f"neigh add {a6[0]} lladdr {mac_lo} dev {up_if} nud permanent",
            ]

        for k in range(1, len(CHAIN)):
            lo4, up4, lo6, up6 = link_addrs(k)
            link(k, CHAIN[k - 1], CHAIN[k], "down0", (lo4, up4), (lo6, up6))
        for n, (role, (base4, prefix6)) in enumerate(END_LINKS.items(), start=0x10):
            link(
                n,
                "r6",
                role,
                f"to-{role[:5]}",
                (v4_add(base4, 1), v4_add(base4, 2)),
                (prefix6 + "1", prefix6 + "2"),
            )

        for n, (lower, upper, lo_if, up_if, base4, prefix6) in enumerate(FORK_LINKS, start=0x20):
            a4, a6 = (v4_add(base4, 1), v4_add(base4, 2)), (prefix6 + "1", prefix6 + "2")
            link(n, lower, upper, lo_if, a4, a6, up_if)

        # Routes: everything upstream via the upstream neighbour, downstream via the downstream one.
        lab4, lab6 = ("198.51.100.0/24", "203.0.113.0/24"), "2001:db8::/32"
        for k, role in enumerate(CHAIN):
            if k > 0:  # upstream: the client side links
                lo4, _, lo6, _ = link_addrs(k)
                for i in range(1, k):
                    base = f"198.51.100.{4 * (i - 1)}/30"
                    batches[role].append(f"route add {base} via {lo4}")
                    batches[role].append(f"route add 2001:db8:0:{i:x}::/64 via {lo6}")
            if k < len(CHAIN) - 1:  # downstream: further links and the end hosts
                _, up4, _, up6 = link_addrs(k + 1)
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
            gw4, gw6 = v4_add(base4, 1), prefix6 + "1"
            batches[role] += [
                f"route add {lab4[0]} via {gw4}",
                f"route add {lab4[1]} via {gw4}",
                f"route add {lab6} via {gw6}",
            ]
        self._fork_routes(batches, lab4, lab6)
        # The small link (RFC 1191 / RFC 8201: r6 answers what does not fit); IPv6's MTU is set
        # by sysctl below, once the device exists.
        batches["r6"].append(f"link set to-narro mtu {NARROW_MTU4}")
        batches["narrow"].append(f"link set up0 mtu {NARROW_MTU4}")

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
                if role in FORWARDERS
                else []
            )
            if role == FORK_ROUTER:  # hash the flow: addresses, protocol and ports (L4)
                extra += ["net.ipv4.fib_multipath_hash_policy=1"]
                extra += ["net.ipv6.fib_multipath_hash_policy=1"]
                # A fixed seed (both families): a flow takes the same branch in every lab, so
                # a selftest over the fork is repeatable; -e: kernels before 6.11 lack it.
                seed = f"net.ipv4.fib_multipath_hash_seed={FORK_HASH_SEED}"
                _ns_exec(self.ns(role), ["sysctl", "-q", "-e", "-w", seed])
            _ns_exec(self.ns(role), ["sysctl", "-q", "-w", *sysctls, *extra])
        _run(["ip", "-batch", "-"], input_text="\n".join(root_cmds) + "\n")
        for role in roles:
            _run(
                ["ip", "-n", self.ns(role), "-batch", "-"],
                input_text="\n".join(batches[role]) + "\n",
            )
        for role, dev in (("r6", "to-narro"), ("narrow", "up0")):
            _ns_exec(
                self.ns(role), ["sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.mtu={NARROW_MTU6}"]
            )

        # Checksum offload off on every veth end: otherwise the kernel leaves TCP and UDP
        # checksums partial (the pseudo-header sum only) for a peer that never verifies them,
        # and every capture of kernel-sent segments shows a wrong checksum (issue 11).
        for role in roles:
            for dev in devices[role]:
                _ns_exec(self.ns(role), ["ethtool", "-K", dev, "tx", "off", "rx", "off"])

        # Filtering, in nftables.
        _ns_exec(self.ns(SILENT), ["nft", "-f", "-"], input_text=SILENT_RULES)
        _ns_exec(self.ns(LOSSY), ["nft", "-f", "-"], input_text=LOSSY_RULES)
        for role, (name, v4, v6) in UNREACHABLE.items():
            rules = REJECT_RULES % (REJECT_WITH[name][0], *v4, REJECT_WITH[name][1], *v6)
            _ns_exec(self.ns(role), ["nft", "-f", "-"], input_text=rules)
        # Delay stages: NFQUEUE via iptables-nft (nft's own `queue` needs CONFIG_NFT_QUEUE,
        # which this kernel lacks; the xt NFQUEUE target through nft_compat works).
        queues = []
        for role in roles:
            for number, (delay, rules) in self.queues(role).items():
                queues += ["--queue", f"{self.ns(role)}:{number}:{delay}"]
                if rules:
                    queues += ["--faults", f"{self.ns(role)}:{number}:{faults.plan_text(rules)}"]
            if 0 in self.queues(role):
                # Neighbour discovery is never delayed (the entries are permanent anyway).
                for nd_type in ("neighbour-solicitation", "neighbour-advertisement"):
                    nd_rule = ["-t", "mangle", "-A", "PREROUTING", "-i", "up+", "-p", "icmpv6"]
                    nd_rule += ["--icmpv6-type", nd_type, "-j", "ACCEPT"]
                    _ns_exec(self.ns(role), ["ip6tables-nft", *nd_rule])
                _ns_exec(self.ns(role), ["iptables-nft", *_QUEUE_RULE])
                _ns_exec(self.ns(role), ["ip6tables-nft", *_QUEUE_RULE])
            if 1 in self.queues(role):
                _ns_exec(
                    self.ns(role),
                    [
                        "iptables-nft",
                        *_REPLY_QUEUE[:6],
                        "-p",
                        "icmp",
                        "--icmp-type",
                        "echo-reply",
                        *_REPLY_QUEUE[6:],
                    ],
                )
                _ns_exec(
                    self.ns(role),
                    [
                        "ip6tables-nft",
                        *_REPLY_QUEUE[:6],
                        "-p",
                        "icmpv6",
                        "--icmpv6-type",
                        "echo-reply",
                        *_REPLY_QUEUE[6:],
                    ],
                )
        if queues:
            self._start_delay(queues)
        self._save_state()

    def _fork_routes(self, batches: dict[str, list[str]], lab4: tuple[str, str], lab6: str) -> None:
        """The fork's routes: r2 reaches multi over two equal-cost next hops (RFC 2992 hashing
        per flow), each branch and the join route back through the way they were reached."""
        via = {(lo, up): (v4_add(b4, 1), v4_add(b4, 2), p6 + "1", p6 + "2")
               for lo, up, _, _, b4, p6 in FORK_LINKS}  # fmt: skip
        a4, _, a6, _ = via[("r2", "fork-a")]
        b4, _, b6, _ = via[("r2", "fork-b")]
        _, fa4, _, fa6 = via[("r2", "fork-a")]
        _, fb4, _, fb6 = via[("r2", "fork-b")]
        _, _, _, _, join4, join6 = FORK_LINKS[2]
        _, _, _, _, jb4, jb6 = FORK_LINKS[3]
        _, _, _, _, multi4, multi6 = FORK_LINKS[4]
        batches["r2"] += [
            f"route add {join4}/30 via {fa4}",
            f"route add {jb4}/30 via {fb4}",
            f"route add {join6}/64 via {fa6}",
            f"route add {jb6}/64 via {fb6}",
            f"route add {multi4}/30 nexthop via {fa4} dev fork0 nexthop via {fb4} dev fork1",
            f"route add {multi6}/64 nexthop via {fa6} dev fork0 nexthop via {fb6} dev fork1",
        ]
        for branch, gw4, gw6 in (("fork-a", a4, a6), ("fork-b", b4, b6)):
            _, jgw4, _, jgw6 = via[(branch, "join")]
            batches[branch] += [
                f"route add {multi4}/30 via {jgw4}",
                f"route add {multi6}/64 via {jgw6}",
                f"route add {lab4[0]} via {gw4}",
                f"route add {lab4[1]} via {gw4}",
                f"route add {lab6} via {gw6}",
            ]
        # join answers and replies via fork-a, from that link's address in both families (a
        # route's preferred source: ICMPv6 errors would otherwise leave from the inbound one)
        back4, src4, back6, src6 = via[("fork-a", "join")]
        batches["join"] += [f"route add {net} via {back4} src {src4}" for net in lab4]
        batches["join"].append(f"route add {lab6} via {back6} src {src6}")
        m4, _, m6, _ = via[("join", "multi")]
        batches["multi"] += [f"route add {net} via {m4}" for net in lab4]
        batches["multi"].append(f"route add {lab6} via {m6}")

    def _start_delay(self, queue_args: list[str]) -> None:
        log_path = STATE_DIR / f"{self.lab_id}.delay.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", DELAY_MODULE, *queue_args],
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

    def forget_pmtu(self, role: str = "client") -> None:
        """Drop the path MTUs ``role`` has learnt (RFC 1191 / RFC 8201 caches), so the next
        too-big datagram to narrow meets r6's ICMP error again, not a local EMSGSIZE."""
        for family in ("-4", "-6"):
            _ns_exec(self.ns(role), ["ip", family, "route", "flush", "cache"], check=False)

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


def missing_tools() -> list[str]:
    """The programs of TOOLS that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


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
    """True while ``pid`` runs and is a delay stage (``python -m compare.lab.delay``), so a pid
    from a state file that the system has since given to another process is left alone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return DELAY_MODULE.encode() in argv and pid_alive(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_alive(pid):
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
