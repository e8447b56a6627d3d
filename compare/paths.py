"""Path scenarios (issue 12): traces over the lab's equal-cost fork, classic, Paris and MDA.

The lab's fork (promises()["fork"]): r2 hashes each flow (addresses, protocol, ports:
fib_multipath_hash_policy=1) over fork-a and fork-b, which join again before ``multi``.  So:

- a classic UDP or TCP trace varies the ports with every probe and, given enough probes,
  shows both branches at the fork's TTL; a classic ICMP trace keeps its addresses and, for
  Linux's hash, its flow (ICMP has no ports: the identifier is not hashed), so it shows one;
- a Paris trace keeps the flow for the whole trace: one address at every TTL, and one flow
  (``Probe.flow``, and the flow read back from the wire) across all probes;
- a multipath (MDA) trace enumerates both branches and spends exactly the probes its stopping
  rule asks for (n_1 at each single-address TTL, n_2 at the fork).

Each scenario runs both implementations with one request, checks them against each other and
the lab's truth, and reuses compare/wire.py's checks with keys that tell apart probes sharing
their ports (the UDP checksum, the TCP sequence).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from compare import wire
from compare.lab import Lab
from compare.packets import ICMP_ERRORS, split_ip
from compare.scenario import Context, Difference, Row, Sides, both_ran, run_side
from handrolled.requests import TraceRequest
from handrolled.results import Method, Probe, TraceResult

IDENT = 0x7774
PAYLOAD = b"wiretwin:traceroute:same-bytes:)"
SIDES = Sides("handrolled.traceroute:run_trace", "reference.traceroute:run_trace")
METHODS = ((Method.ICMP, "-I"), (Method.UDP, "-U"), (Method.TCP, "-T"))
CLASSIC_PROBES = 6  # per hop: enough for both branches to show for UDP and TCP (fixed seed)


@dataclass(frozen=True)
class PathScenario:
    name: str
    family: int
    method: Method
    probes_per_hop: int = 3
    paris: bool = False
    multipath: bool = False
    to: str = "multi"
    mtu: bool = False


def scenarios(lab: Lab, quick: bool = False) -> list[PathScenario]:
    out = []
    for method, flag in METHODS:
        out.append(PathScenario(f"traceroute -4 {flag} -q {CLASSIC_PROBES} multi (fork)", 4,
                                method, CLASSIC_PROBES))  # fmt: skip
        out.append(PathScenario(f"traceroute -4 {flag} --paris multi (fork)", 4, method,
                                paris=True))  # fmt: skip
    out.append(PathScenario("traceroute -6 -U --paris multi (fork)", 6, Method.UDP, paris=True))
    out.append(PathScenario("traceroute -4 -U --multipath multi (fork)", 4, Method.UDP, 1,
                            multipath=True))  # fmt: skip
    for family in (4, 6):
        out.append(PathScenario(f"traceroute -{family} --mtu -f {MTU_FIRST_TTL} narrow", family,
                                Method.UDP, 2, to="narrow", mtu=True))  # fmt: skip
    return out


LINK_MTU = 1500  # the client's veth: Linux's default for Ethernet devices
MTU_FIRST_TTL = 4  # past the silent r3: one probe in flight would wait out its MAX there


# -- keys: probes that share their ports ------------------------------------------------------


def _transport_key(proto: str, body: bytes) -> tuple | None:
    if proto in ("icmp", "icmpv6") and len(body) >= 8 and body[0] in (8, 128):
        return ("icmp", *struct.unpack_from("!HH", body, 4))
    if proto == "udp" and len(body) >= 8:  # RFC 768: ports, length, checksum
        return ("udp", *struct.unpack_from("!HHxxH", body, 0))
    if proto == "tcp" and len(body) >= 8:  # RFC 793 §3.1: ports, sequence number
        return ("tcp", *struct.unpack_from("!HHI", body, 0))
    return None


def sent_key(datagram: bytes) -> tuple | None:
    try:
        _ip, _head, proto, body = split_ip(datagram)
    except ValueError:
        return None
    return _transport_key(proto, body)


def reply_key(datagram: bytes) -> tuple | None:
    try:
        ip, _head, proto, body = split_ip(datagram)
    except ValueError:
        return None
    if proto in ("icmp", "icmpv6") and len(body) >= 8:
        if body[0] in (0, 129):
            return ("icmp", *struct.unpack_from("!HH", body, 4)), "echo-reply"
        if body[0] in ICMP_ERRORS[6 if ip == "ipv6" else 4]:
            quoted = sent_key(body[8:])
            return (quoted, "icmp-error") if quoted else None
    if proto == "tcp" and len(body) >= 12:  # a SYN-ACK or RST acknowledges seq + 1
        sport, dport, _seq, ack = struct.unpack_from("!HHII", body, 0)
        return ("tcp", dport, sport, (ack - 1) & 0xFFFFFFFF), "tcp"
    return None


def _probe_transport(probe: Probe) -> bytes:
    sent = probe.sent
    if sent and sent[0] >> 4 in (4, 6):  # the whole datagram (the reference's raw(packet))
        try:
            return split_ip(sent)[3]
        except ValueError:
            return sent
    return sent


def probe_key(probe: Probe) -> tuple:
    body = _probe_transport(probe)
    if probe.method is Method.ICMP:
        return ("icmp", probe.ident, probe.seq)
    if probe.method is Method.UDP:
        return ("udp", probe.src_port or 0, probe.dst_port or 0, int.from_bytes(body[6:8], "big"))
    return ("tcp", probe.src_port or 0, probe.dst_port or 0, probe.seq)


KEYS = wire.Keys(probe_key, sent_key, reply_key)


def wire_flow(datagram: bytes) -> tuple[int, int] | None:
    """The flow an ECMP router hashes, read from the datagram that left (not from a side):
    ports for UDP/TCP, identifier and checksum for an echo request."""
    try:
        _ip, _head, proto, body = split_ip(datagram)
    except ValueError:
        return None
    if len(body) < 8:
        return None
    if proto in ("icmp", "icmpv6"):
        return struct.unpack_from("!HH", body, 4)[0], struct.unpack_from("!H", body, 2)[0]
    return struct.unpack_from("!HH", body, 0)


# -- running ----------------------------------------------------------------------------------


def request_of(lab: Lab, sc: PathScenario) -> TraceRequest:
    fork = lab.promises()["fork"]
    if sc.mtu:
        return TraceRequest(
            lab.nodes[sc.to].hostname,
            method=sc.method,
            probes_per_hop=sc.probes_per_hop,
            first_ttl=MTU_FIRST_TTL,
            max_hops=lab.nodes[sc.to].ttl,  # type: ignore[arg-type]
            wait=(1.0, 3.0, 10.0),
            family=sc.family,
            resolve=False,
            ident=IDENT,
            mtu=True,
        )
    return TraceRequest(
        lab.nodes[sc.to].hostname,
        method=sc.method,
        probes_per_hop=sc.probes_per_hop,
        max_hops=fork["joins_at_ttl"] + 1,
        wait=(2.0, 3.0, 10.0),
        family=sc.family,
        resolve=False,
        ident=IDENT,
        payload=b"" if sc.method is Method.TCP else PAYLOAD,
        paris=sc.paris,
        multipath=sc.multipath,
    )


def run(ctx: Context, sc: PathScenario, sides: Sides = SIDES) -> tuple[list[Row], dict]:
    lab = ctx.lab
    assert lab is not None, "path scenarios need the lab's fork"
    request = request_of(lab, sc)
    runs = {}
    for impl, target, env in (("handrolled", sides.handrolled, sides.env),
                              ("reference", sides.reference, None)):  # fmt: skip
        if sc.mtu:
            lab.forget_pmtu()  # each side meets r6's too-big answer itself
        runs[impl] = run_side(ctx.site, impl, target, (request,), {}, env)
    rows = [both_ran(sc.name, runs)]
    if not rows[0].ok:
        return rows, runs
    res: dict[str, TraceResult] = {impl: r.result for impl, r in runs.items()}
    rows.append(_mtu_row(lab, sc, res) if sc.mtu else _fork_row(lab, sc, res))
    rows.append(_same_addresses_row(sc, res))
    if sc.paris:
        rows.append(_flow_row(sc, res, {i: r.frames for i, r in runs.items()}))
    if sc.multipath:
        rows.append(_budget_row(sc, request, res))
    left, right = _outcomes(res["handrolled"]), _outcomes(res["reference"])
    same = left == right
    first = next((f"{a} vs {b}" for a, b in zip(left, right, strict=False) if a != b), "lengths")
    rows.append(Row(sc.name, "same outcome per probe", f"{len(left)} probes",
                    f"{len(right)} probes", same, [] if same else [first]))  # fmt: skip
    flat = {impl: [p for hop in r.hops for p in hop.probes] for impl, r in res.items()}
    rows += wire.wire_rows(sc.name, flat, {i: r.frames for i, r in runs.items()}, KEYS)
    return rows, runs


def _outcomes(result: TraceResult) -> list[tuple]:
    return [
        (hop.ttl, p.seq, p.outcome.value, p.reply_from, p.icmp_type, p.icmp_code)
        for hop in result.hops
        for p in hop.probes
    ]


def addresses(result: TraceResult) -> dict[int, set[str]]:
    """Every address that answered at each TTL."""
    return {hop.ttl: {p.reply_from for p in hop.probes if p.reply_from} for hop in result.hops}


def _fork_row(lab: Lab, sc: PathScenario, res: dict[str, TraceResult]) -> Row:
    """Each TTL's addresses against the lab's truth: the fork's TTL shows both branches
    (classic UDP/TCP, multipath), exactly one of them (Paris), at least one (classic ICMP:
    Linux hashes no ICMP identifier); every other TTL its one node; the trace reaches multi."""
    fam = sc.family
    branch_ttl = lab.promises()["fork"]["branch_ttl"]
    truth: dict[int, set[str]] = {}
    for branch in (0, 1):
        for node in lab.hops(sc.to, branch=branch):
            truth.setdefault(node.ttl, set()).add(node.addr(fam))
    both = not sc.paris and (sc.multipath or sc.method is not Method.ICMP)
    want = "both branches" if both else ("one branch" if sc.paris else "one or both")
    cells, details, diffs, ok = {}, [], [], True
    for impl, result in res.items():
        seen = addresses(result)
        problems = []
        for ttl, promised in truth.items():
            got = seen.get(ttl, set())
            if ttl == branch_ttl:
                good = got == promised if both else (len(got) == 1 if sc.paris else bool(got))
                good = good and got <= promised
            else:
                good = got == promised
            if not good:
                problems.append(ttl)
                diffs.append(Difference(f"hop {ttl} addresses", (",".join(sorted(got)) or "none",
                                        ",".join(sorted(promised))), None, impl,
                                        labels=(impl, "lab truth")))  # fmt: skip
        if not result.reached:
            problems.append("end")
            details.append(f"{impl}: did not report reaching {sc.to}")
        shown = ",".join(sorted(seen.get(branch_ttl, set()))) or "none"
        cells[impl] = f"ttl {branch_ttl}: {shown}" if not problems else f"{len(problems)} differ"
        ok = ok and not problems
    details += [d.describe() for d in diffs]
    check = f"addresses per TTL vs lab truth (fork: {want})"
    return Row.of_sides(sc.name, check, cells, ok, details, differences=diffs)


def _same_addresses_row(sc: PathScenario, res: dict[str, TraceResult]) -> Row:
    left, right = addresses(res["handrolled"]), addresses(res["reference"])
    same = left == right
    show = {impl: " ".join(f"{t}:{len(a)}" for t, a in addresses(r).items())
            for impl, r in res.items()}  # fmt: skip
    details = [] if same else [f"handrolled {left}", f"reference {right}"]
    return Row.of_sides(sc.name, "same addresses per TTL", show, same, details)


def _flow_row(sc: PathScenario, res: dict[str, TraceResult], frames: dict) -> Row:
    """Paris: one flow for every probe, as each side reports it (Probe.flow) and as the wire
    shows it (read from the captured datagrams that left)."""
    cells, details, diffs, ok = {}, [], [], True
    for impl, result in res.items():
        reported = {p.flow for hop in result.hops for p in hop.probes}
        on_wire = set()
        for frame in frames[impl]:
            datagram = frame.ip
            key = sent_key(datagram) if frame.outgoing and datagram else None
            if key is not None and key[0] == sc.method.value:
                on_wire.add(wire_flow(datagram))
        good = len(reported) == 1 and None not in reported and len(on_wire) == 1
        good = good and reported == on_wire
        if not good:
            ok = False
            field = "icmp.identifier/checksum" if sc.method is Method.ICMP else "ports (flow)"
            diffs.append(Difference(f"{sc.method.value} {field}", (
                f"{len(reported)} reported: {sorted(map(str, reported))[:4]}",
                f"{len(on_wire)} on the wire: {sorted(map(str, on_wire))[:4]}"), None, impl,
                labels=(f"{impl} reported", "wire")))  # fmt: skip
        cells[impl] = f"{len(on_wire)} flow on the wire" if good else f"{len(on_wire)} flows"
    details += [d.describe() for d in diffs]
    check = "one flow for the whole trace (reported and on the wire)"
    return Row.of_sides(sc.name, check, cells, ok, details, differences=diffs)


# The MDA's stopping points n_1..n_16 at 95 % confidence, as published (Veitch, Augustin,
# Friedman, Teixeira, "Failure Control in Multipath Route Tracing", INFOCOM 2009, table 1; the
# same list drives Paris traceroute's MDA): n_k flows in all rule out a k+1th next hop.  The
# truth is this table, not the hand-rolled side's own computation of it.
MDA_STOPPING_95 = (6, 11, 16, 21, 27, 33, 38, 44, 51, 57, 63, 70, 76, 83, 90, 96)


def published_stopping_point(seen: int, confidence: float) -> int:
    """n_k from the published table (k = next hops seen, at least 1)."""
    if confidence != 0.95 or not 0 <= seen <= len(MDA_STOPPING_95):
        raise ValueError(f"no published n_k for k={seen} at {confidence:.0%}")
    return MDA_STOPPING_95[max(seen, 1) - 1]


def _budget_row(sc: PathScenario, request: TraceRequest, res: dict[str, TraceResult]) -> Row:
    """MDA: at each TTL exactly n_k probes (distinct flows) for the k addresses it saw."""
    cells, details, ok = {}, [], True
    for impl, result in res.items():
        spent = 0
        for hop in result.hops:
            k = len({p.reply_from for p in hop.probes if p.reply_from})
            want = published_stopping_point(k, request.confidence)
            flows = {p.flow for p in hop.probes}
            spent += len(hop.probes)
            if len(hop.probes) != want or len(flows) != len(hop.probes):
                ok = False
                details.append(f"{impl}: ttl {hop.ttl}: {len(hop.probes)} probes in "
                               f"{len(flows)} flows for {k} next hops, n_{k} = {want}")  # fmt: skip
        cells[impl] = f"{spent} probes"
    check = f"probes per TTL = n_k at {request.confidence:.0%}"
    return Row.of_sides(sc.name, check, cells, ok, details)


def _mtu_row(lab: Lab, sc: PathScenario, res: dict[str, TraceResult]) -> Row:
    """--mtu: F= where the path shrinks, against the lab's promise: the link MTU on the first
    probe (65000 bytes do not fit the client's link) and the narrow link's MTU (r6's
    frag-needed / Packet Too Big, RFC 1191 §4 / RFC 8201 §4) at the hop beyond r6; every
    later probe sized to it."""
    promise = lab.promises()["mtu"]
    small = promise["mtu6" if sc.family == 6 else "mtu4"]
    want = [(MTU_FIRST_TTL, LINK_MTU), (promise["ttl"] + 1, small)]
    cells, details, diffs, ok = {}, [], [], True
    for impl, result in res.items():
        got = [(hop.ttl, p.mtu) for hop in result.hops for p in hop.probes if p.mtu]
        last = [p for p in result.hops[-1].probes] if result.hops else []
        sizes = {len(_probe_transport(p)) + (40 if sc.family == 6 else 20) for p in last}
        good = got == want and sizes == {small} and result.reached
        if not good:
            ok = False
            diffs.append(Difference("F= (mtu)", (" ".join(f"{t}:F={m}" for t, m in got) or "none",
                                    " ".join(f"{t}:F={m}" for t, m in want)), None, impl,
                                    labels=(impl, "lab truth")))  # fmt: skip
            details.append(f"{impl}: last hop's datagrams {sorted(sizes)} bytes, reached"
                           f" {result.reached}")  # fmt: skip
        cells[impl] = " ".join(f"{t}:F={m}" for t, m in got) or "no F="
    details = [d.describe() for d in diffs] + details
    check = "F= per hop vs lab truth (link, then narrow's MTU)"
    return Row.of_sides(sc.name, check, cells, ok, details, differences=diffs)
