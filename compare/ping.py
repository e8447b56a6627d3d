"""Ping scenarios: the hand-rolled and the scapy pinger, same target, same inputs."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from compare import packets, tolerance, wire
from compare.lab import Lab
from compare.lab import faults as lab_faults
from compare.scenario import Context, Difference, Row, SideRun, Sides, both_ran, run_side
from handrolled.errors import ResolveError
from handrolled.record import replace
from handrolled.requests import PingRequest
from handrolled.results import Outcome, PingResult

IDENT = 0x7774  # "wt": fixed, so both sides' packets can be identical byte for byte
PAYLOAD = (b"wiretwin:same-inputs-same-bytes:" * 2)[:56]  # fixed and readable in a hex dump
# An odd echo message (8 + 57 octets): the checksum pads its last byte with a zero on the
# right (RFC 1071 4.1), the case a codec gets wrong most easily.
ODD_PAYLOAD = (b"wiretwin:odd-sized-payload:" * 3)[:57]
SIDES = Sides("handrolled.ping:run_ping", "reference.ping:run_ping")


@dataclass(frozen=True)
class PingScenario:
    name: str
    host: str
    family: int
    expect: Outcome | None  # what the lab promises every probe meets (None: no promise)
    answerer: str | None  # role of the node that answers (None: nobody)
    icmp_code: int | None = None
    kwargs: dict = field(default_factory=dict)
    neighbour: bool = False  # another pinger (iputils) runs in the client meanwhile
    payload: bytes = PAYLOAD
    # "faults": the per-seq truth of the fault plan at ``answerer`` (lab promises "faults");
    # "forger": the forger beside ``answerer`` (promises "forger"); None: ``expect`` for all
    truth: str | None = None
    # the hand-rolled side's socket; "dgram": it runs first, and the reference (raw only)
    # then sends with the identifier the kernel wrote for it
    socket_kind: str = "raw"
    # -M do past the lab's narrow link: each side meets r6's error itself (the client's learnt
    # path MTU is dropped before it), and the MTU the error names is held against the promise
    mtu: bool = False


def _base_kwargs(quick: bool) -> dict:
    """The PingRequest fields every scenario shares (a scenario may override some)."""
    return {"count": 4 if quick else 5, "interval": 0.2, "timeout": 1.0, "ttl": 64}


def scenarios(lab: Lab, quick: bool = False) -> list[PingScenario]:
    base = _base_kwargs(quick)
    return [
        PingScenario(
            "ping -4 target", lab.target.hostname, 4, Outcome.REPLY, "target", kwargs=base
        ),
        PingScenario(
            "ping -6 target", lab.target.hostname, 6, Outcome.REPLY, "target", kwargs=base
        ),
        PingScenario(
            "ping -4 -t 2 (time exceeded)",
            lab.target.addr4,
            4,
            Outcome.TIME_EXCEEDED,
            "r2",
            kwargs={**base, "ttl": 2},
        ),
        PingScenario(
            "ping -6 -t 4 (time exceeded)",
            lab.target.addr6,
            6,
            Outcome.TIME_EXCEEDED,
            "r4",
            kwargs={**base, "ttl": 4},
        ),
        PingScenario(
            "ping -4 prohibited",
            lab.prohibited.addr4,
            4,
            Outcome.UNREACHABLE,
            "prohibited",
            13,
            kwargs=base,
        ),
        PingScenario(
            "ping -6 prohibited",
            lab.prohibited.addr6,
            6,
            Outcome.UNREACHABLE,
            "prohibited",
            1,
            kwargs=base,
        ),
        PingScenario(
            "ping -4 target beside another pinger",
            lab.target.addr4,
            4,
            Outcome.REPLY,
            "target",
            kwargs=base,
            neighbour=True,
        ),
        PingScenario(
            "ping -4 blackhole",
            lab.blackhole4,
            4,
            Outcome.TIMEOUT,
            None,
            kwargs={**base, "count": 2, "timeout": 0.5},
        ),
        PingScenario(
            "ping -6 blackhole",
            lab.blackhole6,
            6,
            Outcome.TIMEOUT,
            None,
            kwargs={**base, "count": 2, "timeout": 0.5},
        ),
        *fault_scenarios(lab, quick),
        *pmtu_scenarios(lab),
    ]


def pmtu_scenarios(lab: Lab) -> list[PingScenario]:
    """ping -M do with a datagram larger than narrow's link MTU (-s 1400 + 28 > 1400 for IPv4,
    -s 1280 + 48 > 1280 for IPv6): one probe, which r6 answers with frag-needed / Packet Too
    Big (issue 12)."""
    promise = lab.promises()["mtu"]
    out = []
    for f, size, code in ((4, 1400, 4), (6, 1280, 0)):
        out.append(
            PingScenario(
                f"ping -{f} -M do -s {size} narrow (path MTU)",
                lab.nodes[promise["to"]].addr(f),
                f,
                Outcome.UNREACHABLE,
                promise["router"],
                code,
                kwargs={
                    "count": 1,
                    "interval": 0.2,
                    "timeout": 1.0,
                    "ttl": 64,
                    "pmtu_discovery": "do",
                },
                payload=(PAYLOAD * (size // len(PAYLOAD) + 1))[:size],
                mtu=True,
            )
        )
    return out


def fault_scenarios(lab: Lab, quick: bool = False) -> list[PingScenario]:
    """The lab's faults, the forger, an odd payload and the datagram socket, both families."""
    # Short runs (the report's two-minute budget): three probes, except one per planned seq;
    # the timeout stays 1 s, as elsewhere (a late reply after a VM pause is not a loss).
    base = {**_base_kwargs(quick), "count": 3, "interval": 0.1}
    per_seq = lab.promises()["faults"]["per_seq"]
    faulty, forged, target = lab.nodes["faulty"], lab.nodes["forged"], lab.target
    out = []
    for f in (4, 6):
        count = len(per_seq[str(f)])  # one probe per planned seq (1..count)
        out += [
            PingScenario(
                f"ping -{f} faulty (duplicate, corrupt, lost, reordered)",
                faulty.addr(f), f, Outcome.REPLY, "faulty",
                kwargs={**base, "count": count}, truth="faults",
            ),
            PingScenario(
                f"ping -{f} forged (forger running)",
                forged.addr(f), f, Outcome.REPLY, "forged", kwargs=base, truth="forger",
            ),
            PingScenario(
                f"ping -{f} -s {len(ODD_PAYLOAD)} target (odd payload)",
                target.addr(f), f, Outcome.REPLY, "target", kwargs=base, payload=ODD_PAYLOAD,
            ),
            PingScenario(
                f"ping -{f} datagram socket (hand-rolled): target",
                target.addr(f), f, Outcome.REPLY, "target", kwargs=base, socket_kind="dgram",
            ),
        ]  # fmt: skip
    return out


def explicit_scenarios(host: str, quick: bool = False) -> list[PingScenario]:
    """A host the user names: no truth to hold the results against, only each other."""
    base = _base_kwargs(quick)
    return [
        PingScenario(f"ping -{f} {host}", host, f, None, None, kwargs=base)
        for f in families_of(host)
    ]


def families_of(host: str) -> list[int]:
    """The IP versions ``host`` resolves to here (a literal: its own)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise ResolveError(host, str(exc)) from exc
    return sorted({6 if info[0] == socket.AF_INET6 else 4 for info in infos})


def _outcomes(result: PingResult) -> list[tuple]:
    return [(p.seq, p.outcome.value, p.reply_from, p.icmp_type, p.icmp_code) for p in result.probes]


def run(ctx: Context, sc: PingScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    # One request, validated once; both sides receive the same object (pickled to the child).
    request = PingRequest(
        sc.host, **sc.kwargs, family=sc.family, ident=IDENT, payload=sc.payload,
        socket_kind=sc.socket_kind,
    )  # fmt: skip
    runs = {}
    if sc.mtu and ctx.lab is not None:
        ctx.lab.forget_pmtu()  # r6's error, not a local EMSGSIZE, for each side
    with _ident_taken(ctx, sc), _neighbour(ctx, sc):
        runs["handrolled"] = run_side(
            ctx.site, "handrolled", sides.handrolled, (request,), {}, sides.env
        )
    if sc.socket_kind == "dgram":
        # The kernel wrote its own identifier (the socket's port): the reference, raw only,
        # sends with the one the hand-rolled side reports having used.
        request = replace(request, socket_kind="raw", ident=_used_ident(runs["handrolled"]))
    if sc.mtu and ctx.lab is not None:
        ctx.lab.forget_pmtu()
    with _neighbour(ctx, sc):
        runs["reference"] = run_side(ctx.site, "reference", sides.reference, (request,), {})
    rows = [both_ran(sc.name, runs)]
    if not rows[0].ok:
        return rows, runs
    res = {impl: r.result for impl, r in runs.items()}

    # Outcomes: against each other, then against the lab's truth.
    left, right = _outcomes(res["handrolled"]), _outcomes(res["reference"])
    briefs = {impl: _brief(r) for impl, r in res.items()}
    details = [] if left == right else [f"handrolled {left}", f"reference {right}"]
    rows.append(Row.of_sides(sc.name, "same outcome per probe", briefs, left == right, details))
    lab = ctx.lab
    if lab is not None and sc.truth == "faults":
        rows += _fault_rows(lab, sc, res)
    elif lab is not None and sc.expect is not None:
        rows.append(_truth_row(lab, sc, res))
    if lab is not None and sc.truth == "forger":
        rows.append(_forger_row(lab, sc, res))
    if sc.socket_kind == "dgram":
        rows.append(_dgram_row(sc, request, runs))
    if sc.mtu:
        rows.append(_mtu_row(lab, sc, res))

    # Every reply a side accepted must echo that probe's identifier and sequence (a raw socket
    # sees every ICMP message of the host, the neighbour's replies included).
    cells, details = {}, []
    for impl, result in res.items():
        wrong = []
        for p in result.probes:
            if p.outcome in (Outcome.REPLY, Outcome.CORRUPT, Outcome.DUPLICATE) and p.received:
                key = packets.echo_of_reply(p.received)
                if key is None:
                    wrong.append(f"seq {p.seq}: reply is not an echo reply")
                elif key != (p.ident, p.seq):
                    wrong.append(
                        f"seq {p.seq}: icmp.identifier/sequence of the reply {key[0]}/{key[1]} "
                        f"!= probe's {p.ident}/{p.seq}"
                    )
        cells[impl] = "all match" if not wrong else f"{len(wrong)} wrong"
        details += [f"{impl} {w}" for w in wrong]
    check = "replies carry the probe's identifier and sequence"
    rows.append(Row.of_sides(sc.name, check, cells, not details, details))

    # Each side's own summary against a recomputation from its raw probes.
    cells, details = {}, []
    for impl, result in res.items():
        problems = tolerance.summary_mismatches(result.summary, result.probes)
        cells[impl] = "agrees" if not problems else f"{len(problems)} differ"
        details += [f"{impl}: {p}" for p in problems]
    check = f"summary = recomputed from probes (eps {tolerance.SUMMARY_EPS_MS} ms)"
    rows.append(Row.of_sides(sc.name, check, cells, not details, details))

    rows += wire.wire_rows(
        sc.name, {i: r.probes for i, r in res.items()}, {i: r.frames for i, r in runs.items()}
    )

    mins = {impl: _min_rtt(r) for impl, r in res.items()}
    shown = {impl: tolerance.fmt_ms(v) for impl, v in mins.items()}
    if all(v is not None for v in mins.values()):
        gap = abs(mins["handrolled"] - mins["reference"])
        ok = gap <= tolerance.SIDES_MIN_MS
        check = f"min RTT sides agree (|diff| <= {tolerance.SIDES_MIN_MS} ms)"
        rows.append(Row.of_sides(sc.name, check, shown, ok, [] if ok else [f"gap {gap:.3f} ms"]))
    if lab is not None and sc.answerer and sc.expect in (Outcome.REPLY, Outcome.TIME_EXCEEDED):
        node = lab.nodes[sc.answerer]
        low, high = lab.rtt_tolerance(node)
        ok = all(v is not None and lab.rtt_ok(v, node) for v in mins.values())
        window = f"{low:.2f}..{high:.2f}"
        outside = [
            f"{impl}: {tolerance.fmt_ms(v)} outside {window}"
            for impl, v in mins.items()
            if v is None or not lab.rtt_ok(v, node)
        ]
        check = f"min RTT vs lab truth ({node.rtt_ms:.1f} ms, window {window})"
        rows.append(Row.of_sides(sc.name, check, shown, ok, [] if ok else outside))
    return rows, runs


@contextlib.contextmanager
def _neighbour(ctx: Context, sc: PingScenario):
    """compare/lab/neighbour.py pinging the same target with another identifier meanwhile."""
    if not sc.neighbour:
        yield
        return
    argv = [sys.executable, "-m", "compare.lab.neighbour", sc.host, "--payload-hex", PAYLOAD.hex()]
    proc = ctx.site.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # it is already pinging when our side starts
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def _truth_row(lab: Lab, sc: PingScenario, res: dict[str, PingResult]) -> Row:
    """Every probe met what the lab promises for this scenario."""
    want_from = lab.nodes[sc.answerer].addr(sc.family) if sc.answerer else None
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        probes = [p for p in result.probes if p.outcome is not Outcome.DUPLICATE]
        bad = [
            p
            for p in probes
            if p.outcome is not sc.expect
            or p.reply_from != want_from
            or (sc.icmp_code is not None and p.icmp_code != sc.icmp_code)
        ]
        short = len(probes) < sc.kwargs["count"]
        cells[impl] = f"{len(bad)} differ" if bad else "too few probes" if short else "as promised"
        ok = ok and not bad and not short
        details += [
            f"{impl} seq {p.seq}: {p.outcome.value} from {p.reply_from} code {p.icmp_code}"
            for p in bad[:3]
        ]
        if short:
            details.append(f"{impl}: {len(probes)} probes, {sc.kwargs['count']} asked for")
    code = f" code {sc.icmp_code}" if sc.icmp_code is not None else ""
    promise = f"{sc.expect.value} from {want_from or 'nobody'}{code}"
    check = f"outcomes vs lab truth ({promise})"
    return Row.of_sides(sc.name, check, cells, ok, details)


def _mtu_row(lab: Lab | None, sc: PingScenario, res: dict[str, PingResult]) -> Row:
    """The MTU each side read from the error (frag-needed's next-hop MTU, RFC 1191 §4; Packet
    Too Big's, RFC 4443 §3.2): the two agree, and equal the lab's promise when there is one."""
    want = lab.promises()["mtu"][f"mtu{sc.family}"] if lab is not None else None
    seen = {impl: [p.mtu for p in r.probes if p.outcome is not Outcome.DUPLICATE]
            for impl, r in res.items()}  # fmt: skip
    details = []
    for impl, mtus in seen.items():
        if not mtus:
            details.append(f"{impl}: no probe")
        for seq, mtu in enumerate(mtus, 1):
            if want is not None and mtu != want:
                details.append(f"{impl} probe {seq}: mtu {mtu} != promised {want}")
    if seen["handrolled"] != seen["reference"]:
        details.append(
            f"mtu differs: handrolled {seen['handrolled']}, reference {seen['reference']}"
        )
    check = f"mtu in the ICMP error vs lab truth ({want})" if want else "mtu in the ICMP error"
    cells = {impl: ", ".join(str(m) for m in mtus) or "-" for impl, mtus in seen.items()}
    return Row.of_sides(sc.name, check, cells, not details, details)


def _min_rtt(result: PingResult) -> float | None:
    """Fastest answer (echo reply or ICMP error) to any probe."""
    rtts = [
        p.rtt_ms
        for p in result.probes
        if p.rtt_ms is not None and p.outcome in (Outcome.REPLY, Outcome.TIME_EXCEEDED)
    ]
    return min(rtts) if rtts else None


def _brief(result: PingResult) -> str:
    counts: dict[str, int] = {}
    for p in result.probes:
        counts[p.outcome.value] = counts.get(p.outcome.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no probes"


# ---- faults, forger, datagram socket: the rows only these scenarios have -------------------------
@contextlib.contextmanager
def _ident_taken(ctx: Context, sc: PingScenario):
    """For the datagram scenario: a ping socket of ours holds port IDENT in the client, so the
    hand-rolled side cannot bind it and the kernel chooses the identifier (the socket's port,
    which it writes into every echo request)."""
    lab = ctx.lab
    if sc.socket_kind != "dgram" or lab is None:
        yield
        return
    af, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if sc.family == 6 else (
        socket.AF_INET, socket.IPPROTO_ICMP)  # fmt: skip
    holder = lab.socket("client", af, socket.SOCK_DGRAM, proto)
    try:
        # Ping sockets start with SO_REUSEADDR on (INET_PROTOSW_REUSE), and two binds to one
        # port conflict only when one of them has it off (ping_get_port).
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        holder.bind(("::" if sc.family == 6 else "0.0.0.0", IDENT))
        yield
    finally:
        holder.close()


def _used_ident(run: SideRun) -> int:
    """The identifier a side's probes report having carried (IDENT when it has none)."""
    probes = getattr(run.result, "probes", ()) or ()
    return probes[0].ident if probes else IDENT


def _wire_idents(run: SideRun) -> dict[int, int]:
    """seq -> identifier of each echo request the capture saw leave."""
    out = {}
    for frame in run.frames:
        key = packets.probe_key(frame.ip) if frame.outgoing and frame.ip else None
        if key is not None and key[0] == "icmp":
            out.setdefault(key[2], key[1])
    return out


def _dgram_row(sc: PingScenario, request: PingRequest, runs: dict[str, SideRun]) -> Row:
    """Datagram socket: the identifier the kernel wrote (on the wire) is the one the hand-rolled
    side reports and encoded (its ``sent`` bytes then match the wire, checked by wire_rows), and
    the reference was given it.  A kernel-chosen identifier equal to IDENT would prove nothing."""
    left = runs["handrolled"]
    wire = _wire_idents(left)
    diffs, details = [], []
    for p in left.result.probes:
        on_wire = wire.get(p.seq)
        if p.outcome is not Outcome.DUPLICATE and on_wire is not None and on_wire != p.ident:
            diffs.append(Difference("icmp.identifier", (str(p.ident), str(on_wire)), None,
                                    f"handrolled probe seq {p.seq}",
                                    labels=("handrolled reported", "kernel wrote")))  # fmt: skip
    if wire and set(wire.values()) == {IDENT}:
        # the kernel kept the requested identifier: the datagram path went untested
        diffs.append(Difference("icmp.identifier (kernel's choice)", (str(IDENT), f"not {IDENT}"),
                                labels=("kernel wrote", "needed")))  # fmt: skip
    details += [d.describe() for d in diffs[:5]]
    kernel = ", ".join(f"{v:#06x}" for v in sorted(set(wire.values()))) or "none seen"
    return Row(sc.name, "datagram socket: identifier the kernel wrote = reported, given to the"
               " reference", f"kernel wrote {kernel}", f"sent with {request.ident:#06x}",
               not details, details, differences=diffs[:10])  # fmt: skip


# What each outcome word of the lab's fault plan (compare/lab/faults.py OUTCOMES) allows a side
# to report for that probe (DUPLICATE entries aside), per family.
FAULT_OUTCOMES: dict[str, dict[int, frozenset[Outcome]]] = {
    "reply": {4: frozenset({Outcome.REPLY}), 6: frozenset({Outcome.REPLY})},
    "reordered": {4: frozenset({Outcome.REPLY}), 6: frozenset({Outcome.REPLY})},
    "duplicate": {4: frozenset({Outcome.REPLY}), 6: frozenset({Outcome.REPLY})},
    "corrupt-valid-checksum": {4: frozenset({Outcome.CORRUPT}), 6: frozenset({Outcome.CORRUPT})},
    "corrupt-bad-checksum": {
        4: tolerance.BAD_CHECKSUM_V4,  # seen by a raw socket: corrupt, or ignored as iputils
        6: frozenset({Outcome.TIMEOUT}),  # dropped by the client's kernel (RFC 4443 2.3)
    },
    "lost": {4: frozenset({Outcome.TIMEOUT}), 6: frozenset({Outcome.TIMEOUT})},
}
COUNTED_RECEIVED = ("reply", "reordered", "duplicate")  # iputils' nreceived


def _fault_rows(lab: Lab, sc: PingScenario, res: dict[str, PingResult]) -> list[Row]:
    """The fault plan's per-seq truth (lab promises "faults"): each probe's outcome, the one
    duplicate, the reordered pair's arrival order; then the counts a summary must show."""
    promised = lab.promises()["faults"]
    per_seq = {int(k): v for k, v in promised["per_seq"][str(sc.family)].items()}
    holds = {r.seq: r.after for r in lab_faults.parse_plan(";".join(promised["rules"]))
             if r.action is lab_faults.Action.HOLD}  # fmt: skip
    want_from = lab.nodes[sc.answerer].addr(sc.family)
    rows = []
    cells, diffs = {}, []
    for impl, result in res.items():
        by_seq: dict[int, list] = {}
        for p in result.probes:
            by_seq.setdefault(p.seq, []).append(p)
        bad = 0
        for seq, word in per_seq.items():
            got = by_seq.get(seq, [])
            first = [p for p in got if p.outcome is not Outcome.DUPLICATE]
            dups = len(got) - len(first)
            allowed = FAULT_OUTCOMES[word][sc.family]
            outcome = ", ".join(p.outcome.value for p in first) or "no probe"
            problems = []
            if len(first) != 1 or first[0].outcome not in allowed:
                want = "/".join(sorted(o.value for o in allowed))
                problems.append(("outcome", outcome, f"{word} ({want})"))
            elif first[0].outcome is not Outcome.TIMEOUT and first[0].reply_from != want_from:
                problems.append(("reply_from", str(first[0].reply_from), want_from))
            want_dups = 1 if word == "duplicate" else 0
            if dups != want_dups:
                problems.append(("duplicates", str(dups), str(want_dups)))
            after = holds.get(seq)
            if word == "reordered" and after is not None and first:
                later = [p for p in by_seq.get(after, []) if p.outcome is not Outcome.DUPLICATE]
                mine, theirs = first[0].recv_ns, later[0].recv_ns if later else None
                if mine is None or theirs is None or mine <= theirs:
                    problems.append(("arrival", f"seq {seq} not after seq {after}",
                                     f"after seq {after}"))  # fmt: skip
            for name, value, want in problems:
                bad += 1
                diffs.append(Difference(name, (value, want), None, f"{impl} seq {seq}",
                                        labels=(impl, "lab truth")))  # fmt: skip
        cells[impl] = "as promised" if not bad else f"{bad} differ"
    details = [d.describe() for d in diffs[:10]]
    plan = ", ".join(f"{seq} {word}" for seq, word in per_seq.items())
    if sc.family == 4:
        plan += "; a bad checksum may be corrupt or timeout: BAD_CHECKSUM_V4"
    check = f"per-seq outcome vs lab truth ({plan})"
    rows.append(Row.of_sides(sc.name, check, cells, not diffs, details, differences=diffs[:10]))

    # Duplicates are counted as duplicates, never as received; corrupt replies never count.
    want_received = sum(word in COUNTED_RECEIVED for word in per_seq.values())
    want_dups = sum(word == "duplicate" for word in per_seq.values())
    cells, diffs = {}, []
    for impl, result in res.items():
        s = result.summary
        for name, got, want in (("summary.received", s.received, want_received),
                                ("summary.duplicates", s.duplicates, want_dups),
                                ("summary.transmitted", s.transmitted, len(per_seq))):  # fmt: skip
            if got != want:
                diffs.append(Difference(name, (str(got), str(want)), None, impl,
                                        labels=(impl, "lab truth")))  # fmt: skip
        cells[impl] = f"{s.received} received, +{s.duplicates} duplicates"
    check = f"counts vs lab truth ({want_received} received, +{want_dups} duplicates)"
    details = [d.describe() for d in diffs]
    rows.append(Row.of_sides(sc.name, check, cells, not diffs, details, differences=diffs))
    return rows


def _forger_row(lab: Lab, sc: PingScenario, res: dict[str, PingResult]) -> Row:
    """The forger's replies (lab promises "forger"): one with our identifier and sequence from
    another address, one from the target with identifier XOR 0xffff.  A correct side counts
    neither: every probe has one reply, from the target, with the probe's identifier, and no
    duplicates."""
    forger = lab.promises()["forger"]["forged_from"][str(sc.family)]
    want_from = lab.nodes[sc.answerer].addr(sc.family)
    cells, diffs = {}, []
    for impl, result in res.items():
        bad = 0
        for p in result.probes:
            key = packets.echo_of_reply(p.received) if p.received else None
            problems = []
            if p.outcome is Outcome.DUPLICATE:
                problems.append(("outcome", "duplicate", "no duplicate (forgeries ignored)"))
            if p.reply_from is not None and p.reply_from != want_from:
                problems.append(("reply_from", p.reply_from, want_from))
            if key is not None and key[0] != p.ident:
                problems.append(("icmp.identifier", str(key[0]), str(p.ident)))
            for name, value, want in problems:
                bad += 1
                diffs.append(Difference(name, (value, want), None, f"{impl} seq {p.seq}",
                                        labels=(impl, "lab truth")))  # fmt: skip
        s = result.summary
        if s.duplicates or s.received != s.transmitted:
            bad += 1
            diffs.append(Difference("summary.received/duplicates",
                                    (f"{s.received}/+{s.duplicates}", f"{s.transmitted}/+0"),
                                    None, impl, labels=(impl, "lab truth")))  # fmt: skip
        cells[impl] = "forgeries ignored" if not bad else f"{bad} differ"
    check = f"forgeries ignored (from {forger}; from {want_from} with identifier XOR 0xffff)"
    details = [d.describe() for d in diffs[:10]]
    return Row.of_sides(sc.name, check, cells, not diffs, details, differences=diffs[:10])
