"""The reachability matrix: what should connect between every pair of chosen endpoints and
ports, from the scenario's meaning (kubevpc.evaluator, written independently of the flow
compiler), next to what does, probed on the real network, all pairs in parallel (Lab.matrix
probes; this module chooses the endpoints, expects and prints).

Printed in the style of the upstream Kubernetes NetworkPolicy tests (test/e2e/network/netpol):
one grid per port and protocol, sources in rows, destinations in columns, `.` connects, `X` does
not; a cell where the network disagrees with the expectation is marked.

    with Lab("tests/e2e/data/netpol.yaml") as lab:
        m = lab.matrix(["pods"], [(80, "tcp"), (81, "udp")])
        print(m.text())
        assert not m.differences
"""
from __future__ import annotations

import csv
import fnmatch
import io
import json
from dataclasses import asdict, dataclass
from typing import Iterable

from rich.table import Table

from ..errors import KubevpcError
from ..planning import HostPlan, Plan, ServicePlan, resolve_endpoint
from .reach import reach, service_targets
from .verdict import Verdict

CONNECTS, BLOCKED, MIXED = ".", "X", "~"
GROUPS = ("pods", "ecs", "nodes", "services")


@dataclass(frozen=True)
class Cell:
    source: str             # endpoint reference, e.g. pod/x/a
    dest: str               # pod/..., ecs/..., node/... or svc/<ns>/<name>
    port: int
    protocol: str           # tcp | udp
    expected: bool | None   # None: a Service whose endpoints disagree (either outcome is right)
    reason: str
    observed: bool | None = None
    outcome: str = ""       # the probe's: answered, refused, timeout, ...
    elapsed_ms: float = 0.0
    family: int = 4         # 6: to the destination's IPv6 address (or a Service's IPv6 ClusterIP)

    @property
    def differs(self) -> bool:
        return self.observed is not None and self.expected is not None and self.observed != self.expected


@dataclass
class Matrix:
    sources: list[str]
    dests: list[str]
    ports: list[tuple[int, str]]
    cells: list[Cell]
    mode: str = ""
    probe_s: float = 0.0    # wall time of the probing

    @property
    def differences(self) -> list[Cell]:
        return [c for c in self.cells if c.differs]

    def cell(self, source: str, dest: str, port: int, protocol: str = "tcp") -> Cell:
        for c in self.cells:
            if (c.source, c.dest, c.port, c.protocol) == (source, dest, port, protocol):
                return c
        raise KeyError((source, dest, port, protocol))

    def grid(self, port: int, protocol: str, what: str = "expected") -> list[list[str]]:
        """Rows of symbols: expected, observed, or comparison (`.` agrees, `X` differs)."""
        by = {(c.source, c.dest): c for c in self.cells if (c.port, c.protocol) == (port, protocol)}
        rows = []
        for s in self.sources:
            row = []
            for d in self.dests:
                c = by[(s, d)]
                if what == "comparison":
                    row.append(BLOCKED if c.differs else CONNECTS)
                else:
                    row.append(_symbol(c.expected if what == "expected" else c.observed))
            rows.append(row)
        return rows

    def text(self, observed: bool = True) -> str:
        """The upstream layout: tab-separated grids, expected, then observed and comparison."""
        out = []
        for port, protocol in self.ports:
            kinds = ("expected", "observed", "comparison") if observed else ("expected",)
            for what in kinds:
                out.append(f"{what}, {port}/{protocol}:")
                out.append("\t".join(["-"] + [short(d) for d in self.dests]))
                for s, row in zip(self.sources, self.grid(port, protocol, what)):
                    out.append("\t".join([short(s)] + row))
                out.append("")
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {"mode": self.mode, "sources": self.sources, "destinations": self.dests,
                "ports": [{"port": p, "protocol": proto} for p, proto in self.ports],
                "probe_s": round(self.probe_s, 3), "differences": len(self.differences),
                "cells": [{**asdict(c), "elapsed_ms": round(c.elapsed_ms, 1), "differs": c.differs}
                          for c in self.cells]}


def _symbol(value: bool | None) -> str:
    return MIXED if value is None else CONNECTS if value else BLOCKED


def short(ref: str) -> str:
    """How an endpoint is labelled in a grid: x/a for pods (as upstream), svc:x/web, the name otherwise."""
    kind, _, rest = ref.partition("/")
    return {"pod": rest, "svc": f"svc:{rest}"}.get(kind, rest)


# ------------------------------------------------------------------------------- choosing endpoints
def select(plan: Plan, specs: Iterable[str]) -> list[str]:
    """Endpoint references from a list of groups (pods, ecs, nodes, services), references
    (pod/x/a, svc/x/web, ecs/db, node/node-1) and patterns (pod/x/*). Order kept, no repeats."""
    out: list[str] = []
    refs = _all_refs(plan)
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        if spec in GROUPS:
            found = _group(plan, spec)
        elif any(ch in spec for ch in "*?["):
            found = [r for r in refs if fnmatch.fnmatchcase(r, spec)]
            if not found:
                raise KubevpcError(f"{spec!r} matches no endpoint; this scenario has {', '.join(refs)}")
        else:
            found = [_resolve(plan, spec)]
        out += [r for r in found if r not in out]
    if not out:
        raise KubevpcError("no endpoints chosen")
    return out


def _group(plan: Plan, group: str) -> list[str]:
    if group == "pods":
        return [h.key for h in sorted(plan.pods, key=lambda h: (h.namespace, h.name)) if h.app == "server"]
    if group == "ecs":
        return [h.key for h in plan.instances if not h.node]
    if group == "nodes":
        return [f"node/{n.name}" for n in plan.nodes]
    return [f"svc/{s.key}" for s in plan.services if s.cluster_ip and s.ports]


def _all_refs(plan: Plan) -> list[str]:
    return [r for g in GROUPS for r in _group(plan, g)]


def _resolve(plan: Plan, ref: str) -> str:
    if ref.startswith("svc/"):
        try:
            return f"svc/{plan.service(ref.removeprefix('svc/')).key}"
        except KeyError:
            raise KubevpcError(f"no Service {ref!r}; this scenario has "
                               f"{', '.join(s.key for s in plan.services) or 'none'}") from None
    try:
        h = resolve_endpoint(plan, ref)
    except KeyError:
        raise KubevpcError(f"no endpoint {ref!r}; expected a group ({', '.join(GROUPS)}), pod/<ns>/<name>, "
                           "ecs/<name>, node/<name>, svc/<ns>/<name> or a pattern such as pod/x/*") from None
    return f"node/{h.name}" if h.node == h.name and h.kind == "ecs" else h.key


def parse_ports(specs: Iterable[str]) -> list[tuple[int, str]]:
    """`80`, `80/tcp`, `81/udp`, `80,81`: a port without a protocol stands for TCP and UDP."""
    out: list[tuple[int, str]] = []
    for spec in ",".join(specs).split(","):
        spec = spec.strip().lower()
        if not spec:
            continue
        port, _, proto = spec.partition("/")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise KubevpcError(f"port {spec!r}: expected a number from 1 to 65535, optionally /tcp or /udp")
        if proto not in ("", "tcp", "udp"):
            raise KubevpcError(f"port {spec!r}: protocol {proto!r}; expected tcp or udp")
        for p in ([proto] if proto else ["tcp", "udp"]):
            if (int(port), p) not in out:
                out.append((int(port), p))
    if not out:
        raise KubevpcError("no ports given")
    return out


# ----------------------------------------------------------------------------------- expectations
def expect(plan: Plan, source: str, dest: str, port: int, protocol: str, family: int = 4) -> tuple[bool | None, str]:
    """The evaluator's verdict for one cell; None when a Service's endpoints disagree. `family` 6:
    to the destination's IPv6 address, or a Service's IPv6 ClusterIP (dual stack)."""
    src = resolve_endpoint(plan, source)
    if dest.startswith("svc/"):
        svc: ServicePlan = plan.service(dest.removeprefix("svc/"))
        whole, targets = service_targets(plan, src, svc, port, protocol, family)
        if whole is not None:
            return whole.allowed, whole.reason
        verdicts = [_serving(plan, h, target, protocol) or v for h, target, v in targets]
        allowed = {v.allowed for v in verdicts}
        if len(allowed) == 2:
            good = [h.key for (h, _, _), v in zip(targets, verdicts) if v.allowed]
            return None, f"only some endpoints allow it ({', '.join(good)}): depends on the one chosen"
        (h, target, _), v = targets[0], verdicts[0]
        return v.allowed, f"via {h.key}:{target}: {v.reason}" if len(targets) == 1 else \
            f"all {len(targets)} endpoints {'connect' if v.allowed else 'fail'}; e.g. {h.key}: {v.reason}"
    dst = resolve_endpoint(plan, dest)
    if src.key == dst.key:
        v = Verdict(True, "to itself")
    else:
        v = reach(plan, src, dst, port, protocol, family)
    v = _serving(plan, dst, port, protocol) or v
    return v.allowed, v.reason


def _serving(plan: Plan, h: HostPlan, port: int, protocol: str) -> Verdict | None:
    """A refusal when nothing listens there (whatever the network allows), else None. In a node's
    namespace the node's servers and its host-network pods' listen at one address."""
    if any(s.port == port and s.protocol.lower() == protocol for s in plan.servers_at(h)):
        return None
    return Verdict(False, f"nothing listens on {h.key} {port}/{protocol}")


def expected_matrix(plan: Plan, sources: list[str], dests: list[str], ports: list[tuple[int, str]],
                    family: int = 4) -> Matrix:
    """Every cell's expectation; `family` 6: the IPv6 matrix of a dual-stack scenario (one family per
    matrix: ask for each)."""
    cells = []
    for port, protocol in ports:
        for s in sources:
            for d in dests:
                allowed, reason = expect(plan, s, d, port, protocol, family)
                cells.append(Cell(s, d, port, protocol, allowed, reason, family=family))
    return Matrix(sources, dests, ports, cells, plan.cluster.mode if plan.cluster else "")


# ----------------------------------------------------------------------------------------- output
def tables(m: Matrix) -> list:
    """rich renderables: one grid per port and protocol (observed symbols, a differing cell in red
    with the expected one beside it), then every differing cell with the evaluator's reason."""
    out: list = []
    for port, protocol in m.ports:
        t = Table(title=f"{port}/{protocol}: rows connect to columns ({CONNECTS} connects, {BLOCKED} does not, "
                        f"{MIXED} depends on the endpoint chosen)", title_justify="left")
        t.add_column("from \\ to")
        for d in m.dests:
            t.add_column(short(d), justify="center")
        by = {(c.source, c.dest): c for c in m.cells if (c.port, c.protocol) == (port, protocol)}
        for s in m.sources:
            row = []
            for d in m.dests:
                c = by[(s, d)]
                seen = _symbol(c.observed) if c.observed is not None else _symbol(c.expected)
                row.append(f"[bold white on red]{seen}≠{_symbol(c.expected)}[/]" if c.differs else seen)
            t.add_row(short(s), *row)
        out.append(t)
    wrong = m.differences
    n = len(m.cells)
    if all(c.observed is None for c in m.cells):          # the static matrix: nothing was probed
        counts = [sum(1 for c in m.cells if c.expected is v) for v in (True, False, None)]
        out.append(f"{n} cells expected: {counts[0]} connect, {counts[1]} do not, {counts[2]} depend on the "
                   "endpoint" + (f"; mode {m.mode}" if m.mode else "") + " (nothing built: `kubevpc explain` "
                   "shows why for one cell)")
        return out
    summary = (f"{n - len(wrong)} of {n} cells as expected" + (f", [red]{len(wrong)} differ[/red]" if wrong else "")
               + f"; probed in {m.probe_s:.1f} s" + (f", mode {m.mode}" if m.mode else ""))
    out.append(summary)
    for c in wrong:
        out.append(f"  [red]✗[/red] {c.source} → {c.dest} {c.port}/{c.protocol}: expected "
                   f"{'connect' if c.expected else 'refuse'}, observed {c.outcome}; evaluator: {c.reason}")
    return out


FORMATS = ("table", "json", "csv", "md", "dot")


def render(m: Matrix, fmt: str) -> str:
    """The matrix as text: json (as_dict), csv (a row a cell), md (a Markdown grid a port) or dot
    (Graphviz: an edge a connecting cell, dashed where it depends on the endpoint)."""
    if fmt == "json":
        return json.dumps(m.as_dict(), indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["source", "destination", "port", "protocol", "expected", "observed", "reason"])
        for c in m.cells:
            w.writerow([c.source, c.dest, c.port, c.protocol, _word(c.expected),
                        "" if c.observed is None else _word(c.observed), c.reason])
        return buf.getvalue()
    if fmt == "md":
        out = []
        for port, protocol in m.ports:
            out += [f"**{port}/{protocol}** (rows connect to columns: `{CONNECTS}` connects, `{BLOCKED}` does not, "
                    f"`{MIXED}` depends on the endpoint)", "",
                    "| from \\ to | " + " | ".join(short(d) for d in m.dests) + " |",
                    "|---|" + "---|" * len(m.dests)]
            for s, row in zip(m.sources, m.grid(port, protocol, "expected" if m.cells[0].observed is None else "observed")):
                out.append(f"| {short(s)} | " + " | ".join(f"`{x}`" for x in row) + " |")
            out.append("")
        return "\n".join(out)
    if fmt == "dot":
        names = list(dict.fromkeys(m.sources + m.dests))
        ids = {n: f"n{i}" for i, n in enumerate(names)}
        out = ["digraph reachability {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
        out += [f'  {ids[n]} [label="{n}"];' for n in names]
        for c in m.cells:
            v = c.expected if c.observed is None else c.observed
            if c.source != c.dest and v is not False:
                style = ", style=dashed" if v is None else ""
                out.append(f'  {ids[c.source]} -> {ids[c.dest]} [label="{c.port}/{c.protocol}"{style}];')
        out.append("}")
        return "\n".join(out) + "\n"
    raise KubevpcError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _word(value: bool | None) -> str:
    return {True: "connects", False: "blocked", None: "depends"}[value]
