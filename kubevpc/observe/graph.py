"""`kubevpc graph`: a picture of a scenario's network, drawn from its plan (nothing is built).

The graph is data first (`Graph`: nodes with a kind, a label and a parent, edges with a kind and
a label), then rendered: Mermaid (for Markdown), Graphviz dot, draw.io (mxGraph XML) or JSON.
Graphviz's `dot`, when it is installed, turns the dot text into PNG or SVG.

Nodes: each VPC (a group) with its vRouter and route table, its vSwitches (zone, CIDR), the ECS
instances on them with their security groups, the cluster's nodes with their pods, Services,
SLBs, NAT gateways, EIPs and the emulated internet with its hosts. With a matrix, an edge a
connecting cell between endpoints, dashed where it depends on the endpoint.
"""
from __future__ import annotations

import html
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

from ..errors import KubevpcError
from ..planning import Plan

FORMATS = ("mermaid", "dot", "drawio", "json", "png", "svg")


@dataclass(frozen=True)
class Node:
    id: str
    kind: str        # vpc, vrouter, routes, vswitch, resolver, ecs, node, pod, service, slb, natgw, eip, internet, inet
    label: str
    parent: str = ""


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str        # attached, link, route, peering, endpoint, backend, bound, snat, dnat, edge, reach
    label: str = ""


@dataclass
class Graph:
    title: str = ""
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def add(self, *nodes: Node) -> None:
        self.nodes.extend(nodes)

    def link(self, *edges: Edge) -> None:
        self.edges.extend(edges)

    def as_dict(self) -> dict:
        return {"title": self.title, "nodes": [asdict(n) for n in self.nodes], "edges": [asdict(e) for e in self.edges]}


def _id(text: str) -> str:
    """A node id of letters, digits and _, distinct for distinct texts: any other character is _
    and its code in hex (mapping both / and - to _ made pod/a/b-c and pod/a-b/c one node)."""
    return "n_" + "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" if ord(c) < 0x100
                          else f"_u{ord(c):06x}" for c in text)


def build(plan: Plan, matrix=None) -> Graph:
    """The graph of a plan; `matrix` (kubevpc.evaluator.matrix.Matrix) adds its connecting cells as edges."""
    g = Graph(f"scenario {plan.scenario}, mode {plan.cluster.mode if plan.cluster else '-'}")
    for part in (_vpcs, _instances, _pods, _services, _slbs, _nat, _internet):
        part(g, plan)
    if matrix is not None:
        _reach(g, matrix)
    known = {n.id for n in g.nodes}
    g.edges = [e for e in g.edges if e.src in known and e.dst in known]
    return g


def _vpcs(g: Graph, plan: Plan) -> None:
    """Each VPC with its vRouter and route table, and its vSwitches."""
    for vpc in plan.vpcs:
        vid = _id("vpc/" + vpc.name)
        g.add(Node(vid, "vpc", f"VPC {vpc.name} {vpc.cidr}"))
        g.add(Node(_id("vrouter/" + vpc.name), "vrouter", f"vRouter of {vpc.name}", vid))
        # every entry, the system routes of the vSwitches too (the console lists them); the quota counts the others
        entries = sum(1 for r in vpc.routes if r.kind != "system")
        text = "\n".join(f"{r.destination} → " + (f"system ({r.description.removeprefix('vSwitch ')})"
                                                   if r.kind == "system" else r.next_hop or r.kind) for r in vpc.routes)
        g.add(Node(_id("routes/" + vpc.name), "routes", f"route table ({entries} of {vpc.quota} entries)\n{text}", vid))
        g.link(Edge(_id("routes/" + vpc.name), _id("vrouter/" + vpc.name), "route"))
        for t in vpc.route_tables:       # custom tables: their own entries (the system routes are in each)
            rid = _id(f"routes/{vpc.name}/{t.name}")
            own = [r for r in t.routes if r.kind != "system"]
            text = "\n".join(f"{r.destination} → {r.next_hop}" for r in own)
            g.add(Node(rid, "routes", f"route table {t.name} ({len(own)} of {t.quota} entries)\n{text}".rstrip(), vid))
            g.link(Edge(rid, _id("vrouter/" + vpc.name), "route"),
                   *(Edge(_id("vsw/" + v), rid, "route", "associated") for v in t.vswitches))
    for p in plan.peerings:
        g.link(Edge(_id("vrouter/" + p.vpcs[0]), _id("vrouter/" + p.vpcs[1]), "peering", f"peering {p.name}"))
    for h in plan.resolvers:             # each VPC's DNS, on its vRouter
        rid = _id(h.key)
        g.add(Node(rid, "resolver", f"VPC DNS\n{', '.join(plan.internet.resolvers)}", _id("vpc/" + h.name)))
        g.link(Edge(_id("vrouter/" + h.name), rid, "link", "DNS only"))
    for v in plan.vswitches:
        sid = _id("vsw/" + v.name)
        g.add(Node(sid, "vswitch", f"vSwitch {v.name}\n{v.zone} {v.cidr}", _id("vpc/" + v.vpc)))
        g.link(Edge(sid, _id("vrouter/" + v.vpc), "link"))


def _instances(g: Graph, plan: Plan) -> None:
    """ECS instances and nodes, on their vSwitches (a node's other uplinks too)."""
    vsw_vpc = {v.name: v.vpc for v in plan.vswitches}
    nodes = {n.ecs: n for n in plan.nodes}
    for h in plan.instances:
        kind = "node" if h.key in nodes else "ecs"
        groups = f"\n[{', '.join(h.security_groups)}]" if h.security_groups else ""
        g.add(Node(_id(h.key), kind, f"{'node ' if kind == 'node' else 'ECS '}{h.name}\n{h.ip}{groups}",
                   _id("vpc/" + vsw_vpc[h.vswitch])))
        g.link(Edge(_id(h.key), _id("vsw/" + h.vswitch), "attached"))
        if kind == "node":
            for u in nodes[h.key].uplinks:
                if u.vswitch != h.vswitch:
                    g.link(Edge(_id(h.key), _id("vsw/" + u.vswitch), "attached", "ENI"))


def _pods(g: Graph, plan: Plan) -> None:
    for h in plan.pods:
        node = plan.node(h.node)
        where = "\nhostNetwork" if h.host_network else ""       # its node's address and namespace
        g.add(Node(_id(h.key), "pod", f"pod {h.namespace}/{h.name}\n{h.ip}{where}", _id(node.ecs)))
        if h.vswitch and plan.cluster and plan.cluster.mode == "eni":
            g.link(Edge(_id(h.key), _id("vsw/" + h.vswitch), "attached", "ENI"))


def _services(g: Graph, plan: Plan) -> None:
    for s in plan.services:
        if not s.cluster_ip and not s.external_name:
            label = f"Service {s.key}\nheadless"
        else:
            label = f"Service {s.key}\n{s.type} {s.cluster_ip or s.external_name}"
        if not s.proxied:
            label += "\nkube-proxy off"
        g.add(Node(_id("svc/" + s.key), "service", label))
        for e in s.endpoints:
            g.link(Edge(_id("svc/" + s.key), _id(e.pod), "endpoint", e.condition))


def _slbs(g: Graph, plan: Plan) -> None:
    vsw_vpc = {v.name: v.vpc for v in plan.vswitches}
    for slb in plan.slbs:
        sid = _id(slb.host)
        public = f"\npublic {slb.public_ip}" if slb.public_ip else ""
        g.add(Node(sid, "slb", f"SLB {slb.service}\n{slb.vip}{public}", _id("vpc/" + vsw_vpc[slb.vswitch])))
        g.link(Edge(sid, _id("vsw/" + slb.vswitch), "attached"), Edge(sid, _id("svc/" + slb.service), "backend", "for"))
        for li in slb.listeners:
            for b in li.backends:
                target = b.id if b.id.startswith("pod/") else f"ecs/{b.id}"
                g.link(Edge(sid, _id(target), "backend", f"{li.port}/{li.protocol} → :{b.port}"))


def _nat(g: Graph, plan: Plan) -> None:
    """NAT gateways with their SNAT entries and DNAT entries (to their targets while those exist),
    and the EIPs not bound to a gateway."""
    for gw in plan.nat_gateways:
        nid = _id("natgw/" + gw.name)
        g.add(Node(nid, "natgw", f"NAT gateway {gw.name}\n{', '.join(gw.public_ips)}", _id("vpc/" + gw.vpc)))
        for entry in gw.snat:
            g.link(Edge(nid, _id("vrouter/" + gw.vpc), "snat", f"SNAT {entry.what}"))
        for d in gw.dnat:
            if d.target and d.internal_ip:
                to = "" if d.protocol == "any" else f" → :{d.internal_port}"
                g.link(Edge(nid, _id(d.target), "dnat", f"DNAT {d.what.removeprefix('DNAT entry ')}{to}"))
    for e in plan.eips:
        if e.bound == "natgw":
            continue                         # listed on its gateway
        eid = _id("eip/" + e.name)
        g.add(Node(eid, "eip", f"EIP {e.name}\n{e.ip}"))
        if e.bound == "instance":
            g.link(Edge(eid, _id(f"ecs/{e.target}"), "bound", "1:1 NAT"))
        elif e.bound == "pod":
            g.link(Edge(eid, _id(e.target), "bound", "1:1 NAT"))
        elif e.bound == "slb":
            g.link(Edge(eid, _id(f"slb/{e.target}"), "bound"))


def _internet(g: Graph, plan: Plan) -> None:
    if plan.internet is not None:
        iid = _id("internet")
        g.add(Node(iid, "internet", f"the internet {plan.internet.cidr}"))
        for h in plan.internet_hosts:
            g.add(Node(_id(h.key), "inet", f"{h.name}\n{h.ip}", iid))
        for vpc in plan.vpcs:
            if plan.edge(vpc.name):
                g.link(Edge(_id("vrouter/" + vpc.name), iid, "edge", "edge (EIP, SNAT)"))


def _reach(g: Graph, matrix) -> None:
    """An edge a connecting cell of the matrix, marked where it depends on the endpoint."""
    for c in matrix.cells:
        verdict = c.expected if c.observed is None else c.observed
        if c.source != c.dest and verdict is not False:
            g.link(Edge(_id(_ref(c.source)), _id(_ref(c.dest)), "reach",
                        f"{c.port}/{c.protocol}" + (" ?" if verdict is None else "")))


def _ref(ref: str) -> str:
    """A matrix reference as a graph node's key: node/<name> is its instance, svc/ a Service."""
    return "ecs/" + ref[5:] if ref.startswith("node/") else ref


# --------------------------------------------------------------------------------------- render
SHAPES = {"vrouter": "hexagon", "routes": "note", "vswitch": "box3d", "ecs": "box", "node": "box", "pod": "ellipse",
          "service": "component", "slb": "invtrapezium", "natgw": "octagon", "eip": "cds", "resolver": "cylinder", "internet": "box",
          "inet": "ellipse"}
GROUPS = ("vpc", "node", "internet")      # kinds that hold other nodes


def render(g: Graph, fmt: str) -> str | bytes:
    if fmt == "json":
        return json.dumps(g.as_dict(), indent=1) + "\n"
    if fmt == "mermaid":
        return mermaid(g)
    if fmt == "dot":
        return dot(g)
    if fmt == "drawio":
        return drawio(g)
    if fmt in ("png", "svg"):
        exe = shutil.which("dot")
        if exe is None:
            raise KubevpcError(f"-o {fmt} needs Graphviz's dot, which is not installed (apt-get install graphviz); "
                               "-o dot writes the text for it")
        res = subprocess.run([exe, f"-T{fmt}"], input=dot(g).encode(), capture_output=True, timeout=60)
        if res.returncode != 0:
            raise KubevpcError(f"dot -T{fmt} failed: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout
    raise KubevpcError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _children(g: Graph) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for n in g.nodes:
        out.setdefault(n.parent, []).append(n)
    return out


def mermaid(g: Graph) -> str:
    kids = _children(g)
    out = (["---", f"title: {g.title}", "---"] if g.title else []) + ["flowchart LR"]

    def emit(n: Node, indent: str) -> None:
        label = n.label.replace('"', "'").replace("\n", "<br/>")
        if n.id in kids:
            out.append(f'{indent}subgraph {n.id}["{label}"]')
            for c in kids[n.id]:
                emit(c, indent + "  ")
            out.append(f"{indent}end")
        else:
            out.append(f'{indent}{n.id}["{label}"]')
    for n in kids.get("", []):
        emit(n, "  ")
    arrows = {"endpoint": "-.->", "backend": "-->", "reach": "==>", "route": "---", "link": "---", "attached": "---",
              "peering": "<-->"}
    for e in g.edges:
        arrow = arrows.get(e.kind, "-->")
        out.append(f"  {e.src} {arrow}{'|' + e.label.replace('|', '/') + '|' if e.label else ''} {e.dst}")
    return "\n".join(out) + "\n"


def dot(g: Graph) -> str:
    kids = _children(g)
    out = ["digraph kubevpc {", "  rankdir=LR; compound=true; fontname=Helvetica; labelloc=t;",
           f'  label="{g.title}";' if g.title else "",
           '  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];']

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    def emit(n: Node, indent: str) -> None:
        if n.id in kids:
            out.append(f"{indent}subgraph cluster_{n.id} {{")
            out.append(f"{indent}  label={q(n.label)}; style=rounded;")
            if n.kind == "node":          # the node's own namespace, inside its box
                out.append(f"{indent}  {n.id} [label={q('its namespace ' + n.label.split(chr(10))[1])}, shape=box];")
            elif any(n.id in (e.src, e.dst) for e in g.edges):     # an edge ends at it (the internet): a box
                out.append(f"{indent}  {n.id} [label={q(n.label)}, shape={SHAPES.get(n.kind, 'box')}];")   # inside
            for c in kids[n.id]:
                emit(c, indent + "  ")
            out.append(f"{indent}}}")
        else:
            out.append(f"{indent}{n.id} [label={q(n.label)}, shape={SHAPES.get(n.kind, 'box')}];")
    for n in kids.get("", []):
        emit(n, "  ")
    styles = {"endpoint": "style=dashed", "reach": "color=forestgreen, penwidth=2", "route": "arrowhead=none",
              "link": "arrowhead=none", "attached": "arrowhead=none", "peering": "dir=both, color=steelblue"}
    for e in g.edges:
        attrs = [styles[e.kind]] if e.kind in styles else []
        if e.label:
            attrs.append(f"label={q(e.label)}")
            if e.label.endswith(" ?"):
                attrs.append("style=dashed")
        out.append(f"  {e.src} -> {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def drawio(g: Graph) -> str:
    """draw.io's mxGraph XML: boxes in rows, groups as containers sized to what they hold, edges
    between them (draw.io's Arrange > Layout tidies them up)."""
    kids = _children(g)
    cells = ['<mxCell id="0"/>', '<mxCell id="1" parent="0"/>']
    ids = {n.id: f"c{i + 2}" for i, n in enumerate(g.nodes)}
    geometry: dict[str, tuple[int, int, int, int]] = {}      # id -> x, y (in its parent), width, height

    def rows(nodes: list[Node], limit: int, top: int) -> tuple[int, int]:
        """Place nodes left to right, a new row past `limit`; the width and height they take."""
        x, y, row, width = 20, top, 0, 0
        for n in nodes:
            w, h = size(n)
            if x > 20 and x + w > limit:
                x, y, row = 20, y + row + 20, 0
            geometry[n.id] = (x, y, w, h)
            x += w + 20
            row, width = max(row, h), max(width, x)
        return width, y + row + 20

    def size(n: Node) -> tuple[int, int]:
        inner = kids.get(n.id, [])
        if not inner:
            return 160, 60
        return rows(inner, 640, 40)

    def emit(nodes: list[Node], parent: str) -> None:
        for n in nodes:
            inner = kids.get(n.id, [])
            x, y, w, h = geometry[n.id]
            style = ("swimlane;rounded=1;html=1;startSize=30;" if inner else "rounded=1;whiteSpace=wrap;html=1;")
            cells.append(f'<mxCell id="{ids[n.id]}" value="{html.escape(n.label.replace(chr(10), "<br>"))}" '
                         f'style="{style}" vertex="1" parent="{ids.get(parent, "1")}">'
                         f'<mxGeometry x="{x}" y="{y}" width="{w}" height="{h}" as="geometry"/></mxCell>')
            emit(inner, n.id)
    rows(kids.get("", []), 1400, 20)
    emit(kids.get("", []), "")
    for i, e in enumerate(g.edges):
        cells.append(f'<mxCell id="e{i}" value="{html.escape(e.label)}" edge="1" source="{ids[e.src]}" '
                     f'target="{ids[e.dst]}" parent="1" style="endArrow=classic;html=1;'
                     f'{"dashed=1;" if e.kind == "endpoint" else ""}"><mxGeometry relative="1" as="geometry"/></mxCell>')
    return ('<mxfile host="kubevpc"><diagram name="kubevpc"><mxGraphModel><root>'
            + "".join(cells) + "</root></mxGraphModel></diagram></mxfile>\n")
