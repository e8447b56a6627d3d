"""Building, using and tearing down a lab: namespaces, veth pairs, routes, filters, delay.

Lab (a Plan, compare/lab/plan.py, made real) creates one network namespace per node, joins them
with veth pairs (fixed MACs, permanent neighbour entries, checksum offload off), adds the routes,
the nftables filters of the silent and prohibited nodes, the sysctls, and the NFQUEUE rules whose
packets the delay stage (compare/lab/delay.py, one process per lab) holds.  Names resolve
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

from compare.lab import netns
from compare.lab.calls import call_python
from compare.lab.plan import (
    BLACKHOLE4,
    BLACKHOLE6,
    CHAIN,
    END_LINKS,
    NS_PREFIX,
    ROUTERS,
    SILENT,
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
        ) -> None:
            # Fixed MACs and permanent neighbour entries: no ARP or neighbour discovery ever
            # runs, so the first probe of a run costs what the hundredth does, and the pcaps
            # are the same from run to run.
            mac_lo, mac_up = f"02:77:74:00:{number:02x}:01", f"02:77:74:00:{number:02x}:02"
            root_cmds.append(
                f"link add {lo_if} netns {self.ns(lower)} address {mac_lo} type veth"
                f" peer name up0 netns {self.ns(upper)} address {mac_up}"
            )
            devices[lower].append(lo_if)
            devices[upper].append("up0")
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

        # Checksum offload off on every veth end: otherwise the kernel leaves TCP and UDP
        # checksums partial (the pseudo-header sum only) for a peer that never verifies them,
        # and every capture of kernel-sent segments shows a wrong checksum (issue 11).
        for role in roles:
            for dev in devices[role]:
                _ns_exec(self.ns(role), ["ethtool", "-K", dev, "tx", "off", "rx", "off"])

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
