"""`kubevpc graph` (kubevpc/observe/graph.py): the graph built from a plan holds every entity of every
scenario, in each mode the scenario allows (VPCs, vRouters and route tables, vSwitches with zone
and CIDR, instances and nodes with their security groups, pods on their nodes, Services, SLBs, NAT
gateways, EIPs, the internet), each format renders it (mermaid, dot, drawio as well-formed XML, json;
png and svg when Graphviz is installed), and --matrix draws an edge per connecting cell."""
from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kubevpc.observe import graph as graph_mod
from kubevpc.errors import KubevpcError
from kubevpc.evaluator.matrix import Cell, Matrix, expected_matrix, parse_ports, select
from kubevpc.observe.graph import FORMATS, Edge, Graph, Node, _id, build, render
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
# the e2e scenarios are the only ones with SLBs, NAT gateways, EIPs and the internet: drawn too
E2E_SCENARIOS = sorted((REPO / "tests" / "e2e" / "data").glob("*.yaml"))
DEFAULT = REPO / "scenarios" / "default.yaml"
INTERNET = REPO / "tests" / "e2e" / "data" / "internet.yaml"
SERVICES = REPO / "tests" / "e2e" / "data" / "services.yaml"
PODSG = REPO / "tests" / "e2e" / "data" / "podsg.yaml"
MODES = ("vxlan", "vpc-route", "eni")
RUN = "kvxxxx"                     # as cmd_graph plans a scenario file
HAS_DOT = shutil.which("dot") is not None
_plans: dict = {}


def plan_of(path: Path, mode: str) -> Plan:
    """The plan as `kubevpc graph SCENARIO --mode MODE` makes it; a mode the scenario refuses is skipped."""
    key = (str(path), mode)
    if key not in _plans:
        try:
            _plans[key] = make_plan(load(str(path), mode=mode), RUN)
        except KubevpcError as exc:
            _plans[key] = exc
    if isinstance(_plans[key], KubevpcError):
        pytest.skip(f"{path.name} refuses mode {mode}: {str(_plans[key])[:200]}")
    return _plans[key]


CASES = [pytest.param(p, m, id=f"{p.relative_to(REPO)}-{m}") for p in SCENARIOS + E2E_SCENARIOS for m in MODES]


def test_there_are_scenarios():
    assert {p.name for p in SCENARIOS} >= {"default.yaml", "netpol.yaml"}
    assert INTERNET in E2E_SCENARIOS and SERVICES in E2E_SCENARIOS


# ------------------------------------------------------------------------------------ helpers
def by_id(g: Graph) -> dict[str, Node]:
    return {n.id: n for n in g.nodes}


def node(g: Graph, key: str, kind: str) -> Node:
    nodes = by_id(g)
    assert _id(key) in nodes, f"no node for {key} in the graph of {g.title}"
    n = nodes[_id(key)]
    assert n.kind == kind, f"{key} is drawn as a {n.kind}, not a {kind}"
    return n


def edges(g: Graph, src: str, dst: str, kind: str) -> list[Edge]:
    return [e for e in g.edges if (e.src, e.dst, e.kind) == (_id(src), _id(dst), kind)]


def check_entities(plan: Plan, g: Graph) -> None:
    """Every entity of the plan is in the graph, with the facts the drawing promises."""
    vsw_vpc = {v.name: v.vpc for v in plan.vswitches}
    node_of_ecs = {n.ecs: n for n in plan.nodes}
    for vpc in plan.vpcs:
        n = node(g, "vpc/" + vpc.name, "vpc")
        assert vpc.name in n.label and vpc.cidr in n.label and n.parent == ""
        assert node(g, "vrouter/" + vpc.name, "vrouter").parent == n.id
        entries = [r for r in vpc.routes if r.kind != "system"]
        table = node(g, "routes/" + vpc.name, "routes")
        assert table.parent == n.id and f"({len(entries)} of {vpc.quota} entries)" in table.label
        for r in vpc.routes:         # the system routes of the vSwitches too
            hop = f"system ({r.description.removeprefix('vSwitch ')})" if r.kind == "system" else r.next_hop or r.kind
            assert f"{r.destination} → {hop}" in table.label.splitlines()
        assert edges(g, "routes/" + vpc.name, "vrouter/" + vpc.name, "route")
        for t in vpc.route_tables:       # a custom table: its own entries, and the vSwitches associated with it
            own = [r for r in t.routes if r.kind != "system"]
            custom = node(g, f"routes/{vpc.name}/{t.name}", "routes")
            assert custom.parent == n.id and f"route table {t.name} ({len(own)} of {t.quota} entries)" in custom.label
            assert all(f"{r.destination} → {r.next_hop}" in custom.label.splitlines() for r in own)
            assert all(edges(g, "vsw/" + v, f"routes/{vpc.name}/{t.name}", "route") for v in t.vswitches)
    for p in plan.peerings:
        assert [e.label for e in edges(g, "vrouter/" + p.vpcs[0], "vrouter/" + p.vpcs[1], "peering")] == \
            [f"peering {p.name}"]
    for v in plan.vswitches:
        n = node(g, "vsw/" + v.name, "vswitch")
        assert n.label == f"vSwitch {v.name}\n{v.zone} {v.cidr}" and n.parent == _id("vpc/" + v.vpc)
        assert len(edges(g, "vsw/" + v.name, "vrouter/" + v.vpc, "link")) == 1
    for h in plan.instances:
        n = node(g, h.key, "node" if h.key in node_of_ecs else "ecs")
        assert h.name in n.label and h.ip in n.label and n.parent == _id("vpc/" + vsw_vpc[h.vswitch])
        for sg in h.security_groups:
            assert sg in n.label.splitlines()[-1]
        assert edges(g, h.key, "vsw/" + h.vswitch, "attached")
        for u in node_of_ecs[h.key].uplinks if h.key in node_of_ecs else ():
            if u.vswitch != h.vswitch:              # an ENI on another vSwitch
                assert [e.label for e in edges(g, h.key, "vsw/" + u.vswitch, "attached")] == ["ENI"]
    for h in plan.pods:
        n = node(g, h.key, "pod")
        assert n.label == f"pod {h.namespace}/{h.name}\n{h.ip}" + ("\nhostNetwork" if h.host_network else "")
        assert n.parent == _id(plan.node(h.node).ecs), f"{h.key} is not drawn on its node {h.node}"
        eni = edges(g, h.key, "vsw/" + h.vswitch, "attached") if h.vswitch else []
        assert bool(eni) == (plan.cluster.mode == "eni" and bool(h.vswitch))
    for s in plan.services:
        n = node(g, "svc/" + s.key, "service")
        assert s.key in n.label
        assert (s.cluster_ip or s.external_name or "headless") in n.label
        for e in s.endpoints:
            [edge] = edges(g, "svc/" + s.key, e.pod, "endpoint")
            assert edge.label == ("" if e.ready else "not ready")
    for slb in plan.slbs:
        n = node(g, slb.host, "slb")
        assert slb.service in n.label and slb.vip in n.label and n.parent == _id("vpc/" + vsw_vpc[slb.vswitch])
        assert (slb.public_ip in n.label) if slb.public_ip else "public" not in n.label
        assert edges(g, slb.host, "vsw/" + slb.vswitch, "attached")
        assert edges(g, slb.host, "svc/" + slb.service, "backend")
        for li in slb.listeners:
            for b in li.backends:
                target = b.id if b.id.startswith("pod/") else f"ecs/{b.id}"
                assert f"{li.port}/{li.protocol} → :{b.port}" in [e.label for e in edges(g, slb.host, target, "backend")]
    for gw in plan.nat_gateways:
        n = node(g, "natgw/" + gw.name, "natgw")
        assert n.parent == _id("vpc/" + gw.vpc) and all(ip in n.label for ip in gw.public_ips)
        labels = [e.label for e in edges(g, "natgw/" + gw.name, "vrouter/" + gw.vpc, "snat")]
        assert sorted(labels) == sorted(f"SNAT {x.what}" for x in gw.snat)
        for d in gw.dnat:
            assert "DNAT " + d.what.removeprefix("DNAT entry ") + ("" if d.protocol == "any" else f" → :{d.internal_port}") in [
                e.label for e in edges(g, "natgw/" + gw.name, d.target, "dnat")]
        assert len([e for e in g.edges if e.kind == "dnat" and e.src == _id("natgw/" + gw.name)]) == len(gw.dnat)
    for e in plan.eips:
        if e.bound == "natgw":                       # drawn as an address of its gateway
            assert _id("eip/" + e.name) not in by_id(g)
            assert e.ip in node(g, "natgw/" + e.target, "natgw").label
            continue
        n = node(g, "eip/" + e.name, "eip")
        assert e.ip in n.label
        if e.bound == "instance":
            assert edges(g, "eip/" + e.name, "ecs/" + e.target, "bound")
        elif e.bound == "slb":
            assert edges(g, "eip/" + e.name, "slb/" + e.target, "bound")
        elif e.bound == "pod":
            assert edges(g, "eip/" + e.name, e.target, "bound")
    if plan.internet is None:
        assert not [n for n in g.nodes if n.kind in ("internet", "inet")]
    else:
        n = node(g, "internet", "internet")
        assert plan.internet.cidr in n.label
        for h in plan.internet_hosts:
            inet = node(g, h.key, "inet")
            assert inet.parent == n.id and h.name in inet.label and h.ip in inet.label
        for vpc in plan.vpcs:
            assert bool(edges(g, "vrouter/" + vpc.name, "internet", "edge")) == (plan.edge(vpc.name) is not None)
    # each VPC's DNS resolver, inside its VPC, on its vRouter
    assert len([n for n in g.nodes if n.kind == "resolver"]) == len(plan.resolvers)
    for h in plan.resolvers:
        r = node(g, h.key, "resolver")
        assert r.parent == _id("vpc/" + h.name) and all(ip in r.label for ip in plan.internet.resolvers)
        assert edges(g, "vrouter/" + h.name, h.key, "link")
    # nothing else, and nothing twice
    ids = [n.id for n in g.nodes]
    assert len(ids) == len(set(ids)), f"duplicate node ids: {sorted({i for i in ids if ids.count(i) > 1})}"
    known = set(ids)
    assert all(e.src in known and e.dst in known for e in g.edges)
    assert all(n.parent in known for n in g.nodes if n.parent)


# ------------------------------------------------------------------------------- every scenario
@pytest.mark.parametrize("path,mode", CASES)
def test_the_graph_holds_every_entity_of_the_plan(path, mode):
    plan = plan_of(path, mode)
    g = build(plan)
    assert g.title == f"scenario {plan.scenario}, mode {mode}"
    check_entities(plan, g)


@pytest.mark.parametrize("path,mode", CASES)
def test_every_format_renders_every_entity(path, mode):
    plan = plan_of(path, mode)
    g = build(plan)
    kids = {n.parent for n in g.nodes if n.parent}

    # json: the same nodes and edges, in order
    doc = json.loads(render(g, "json"))
    assert doc["title"] == g.title
    assert [(n["id"], n["kind"], n["label"], n["parent"]) for n in doc["nodes"]] == \
        [(n.id, n.kind, n.label, n.parent) for n in g.nodes]
    assert [(e["src"], e["dst"], e["kind"], e["label"]) for e in doc["edges"]] == \
        [(e.src, e.dst, e.kind, e.label) for e in g.edges]

    # mermaid: a subgraph for each group, a box for the rest, a line per edge
    text = render(g, "mermaid")
    assert text.startswith(f"---\ntitle: {g.title}\n---\nflowchart LR\n")
    lines = text.splitlines()
    for n in g.nodes:
        label = n.label.replace('"', "'").replace("\n", "<br/>")
        decl = f'subgraph {n.id}["{label}"]' if n.id in kids else f'{n.id}["{label}"]'
        assert sum(1 for x in lines if x.strip() == decl) == 1, decl
    assert sum(1 for x in lines if x.strip().startswith("subgraph ")) == len(kids)
    assert sum(1 for x in lines if x.strip() == "end") == len(kids)
    arrows = [x for x in lines if re.match(r"^  n_\S+ (---|-\.->|-->|==>|<-->)", x)]
    assert len(arrows) == len(g.edges)
    for e, line in zip(g.edges, arrows):
        assert line.startswith(f"  {e.src} ") and line.endswith(f" {e.dst}")

    # dot: a cluster per group; every other node, and every group an edge ends at, declared once
    # inside it (an edge to an undeclared id would draw a stray node labelled with the id); every edge
    text = render(g, "dot")
    assert text.startswith("digraph kubevpc {") and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    ends = {e.src for e in g.edges} | {e.dst for e in g.edges}
    for n in g.nodes:
        declared = re.findall(rf"^\s*{n.id} \[label=(\"[^\n]*?\"), shape=", text, re.M)
        if n.id in kids:
            assert f"subgraph cluster_{n.id} {{" in text
            if n.kind == "node":
                assert declared == [f'"its namespace {n.label.splitlines()[1]}"']
            else:
                assert len(declared) == (1 if n.id in ends else 0), n.id
        else:
            assert len(declared) == 1, n.id
    for e in g.edges:
        assert re.search(rf"^  {e.src} -> {e.dst}( \[.*\])?;$", text, re.M), e

    # drawio: well-formed XML, a vertex per node inside its parent's, an edge per edge
    root = ET.fromstring(render(g, "drawio"))
    assert root.tag == "mxfile"
    cells = list(root.iter("mxCell"))
    ids = [c.get("id") for c in cells]
    assert len(ids) == len(set(ids)), "duplicate mxCell ids"
    vertices = {c.get("value"): c for c in cells if c.get("vertex") == "1"}
    assert len(vertices) == len(g.nodes)
    cell_of = {}
    for n in g.nodes:
        c = vertices[n.label.replace("\n", "<br>")]
        cell_of[n.id] = c.get("id")
        assert c.find("mxGeometry") is not None
    geo = {c.get("id"): [int(c.find("mxGeometry").get(k)) for k in ("x", "y", "width", "height")]
           for c in vertices.values()}
    for n in g.nodes:
        c = vertices[n.label.replace("\n", "<br>")]
        assert c.get("parent") == (cell_of[n.parent] if n.parent else "1")
        if n.parent:          # drawn inside its container, below the container's title
            x, y, w, h = geo[c.get("id")]
            _, _, pw, ph = geo[cell_of[n.parent]]
            assert x >= 0 and y >= 30 and x + w <= pw and y + h <= ph, (n.id, geo[c.get("id")], (pw, ph))
    assert all("html=1" in c.get("style") for c in vertices.values()), "labels hold <br>: html must be on"
    drawn = [c for c in cells if c.get("edge") == "1"]
    assert [(c.get("source"), c.get("target"), c.get("value")) for c in drawn] == \
        [(cell_of[e.src], cell_of[e.dst], e.label) for e in g.edges]


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("path,mode", [(DEFAULT, "vpc-route"), (INTERNET, "eni"), (SERVICES, "vxlan")],
                         ids=["default-vpc-route", "internet-eni", "services-vxlan"])
def test_svg_and_png_with_graphviz(path, mode):
    g = build(plan_of(path, mode))
    svg = render(g, "svg")
    assert isinstance(svg, bytes)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    svgns = "{http://www.w3.org/2000/svg}"
    titles = {t.text for t in root.iter(svgns + "title")}
    groups = {n.parent for n in g.nodes if n.parent}
    for n in g.nodes:                          # a node, or a cluster for a group
        assert (f"cluster_{n.id}" if n.id in groups else n.id) in titles, n.id
    for e in g.edges:
        assert f"{e.src}->{e.dst}" in titles, e
    drawn = {x.find(svgns + "title").text: " ".join(t.text or "" for t in x.iter(svgns + "text"))
             for x in root.iter(svgns + "g") if x.get("class") == "node"}
    assert set(drawn) <= {n.id for n in g.nodes}
    stray = [i for i, text in drawn.items() if text == i]
    assert not stray, f"nodes drawn with their id for a label (an edge to an undeclared node): {stray}"
    png = render(g, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_png_and_svg_without_graphviz_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(graph_mod.shutil, "which", lambda name: None)
    g = build(plan_of(DEFAULT, "vxlan"))
    for fmt in ("png", "svg"):
        with pytest.raises(KubevpcError, match=rf"-o {fmt} needs Graphviz's dot, which is not installed"):
            render(g, fmt)
    assert render(g, "dot").startswith("digraph")      # the text formats need nothing


def test_an_unknown_format_is_refused():
    with pytest.raises(KubevpcError, match=r"format 'gif': expected one of mermaid, dot, drawio, json, png, svg"):
        render(Graph("t"), "gif")
    assert FORMATS == ("mermaid", "dot", "drawio", "json", "png", "svg")


# -------------------------------------------------------------------------------- particulars
def test_the_internet_scenario_in_detail():
    plan = plan_of(INTERNET, "vxlan")
    g = build(plan)
    assert node(g, "natgw/ngw", "natgw").label == "NAT gateway ngw\n198.19.0.1"
    assert node(g, "eip/eip-bastion", "eip").label == "EIP eip-bastion\n198.19.0.10"
    assert node(g, "slb/default/web-inet", "slb").label == "SLB default/web-inet\n192.168.1.3\npublic 198.19.0.2"
    assert node(g, "routes/vpc", "routes").label.splitlines() == [
        "route table (1 of 50 entries)", "192.168.1.0/24 → system (vsw-a)", "192.168.2.0/24 → system (vsw-b)",
        "0.0.0.0/0 → ngw"]
    assert node(g, "ecs/node-1", "node").label == "node node-1\n192.168.1.1\n[sg-nodes]"
    assert node(g, "ecs/bastion", "ecs").label == "ECS bastion\n192.168.2.1\n[sg-web]"
    assert [e.label for e in edges(g, "eip/eip-bastion", "ecs/bastion", "bound")] == ["1:1 NAT"]
    assert [e.label for e in edges(g, "vrouter/vpc", "internet", "edge")] == ["edge (EIP, SNAT)"]
    assert sorted(n.label for n in g.nodes if n.kind == "inet") == ["client\n198.18.0.2", "server\n198.18.0.3"]
    # the SLB's backends are the nodes (a NodePort) outside eni mode, the pods in it
    assert {e.dst for e in g.edges if e.src == _id("slb/default/web-inet") and e.label.startswith("80/TCP")} == \
        {_id("ecs/node-1"), _id("ecs/node-2")}
    eni = build(plan_of(INTERNET, "eni"))
    assert {e.dst for e in eni.edges if e.src == _id("slb/default/web-inet") and e.label.startswith("80/TCP")} == \
        {_id("pod/default/web-0"), _id("pod/default/web-1")}


def test_pod_routes_appear_in_vpc_route_mode_only():
    vxlan, route = build(plan_of(DEFAULT, "vxlan")), build(plan_of(DEFAULT, "vpc-route"))
    system = ["192.168.1.0/24 → system (vsw-h)", "192.168.2.0/24 → system (vsw-i)"]
    assert node(vxlan, "routes/vpc-prod", "routes").label.splitlines() == ["route table (0 of 50 entries)", *system]
    label = node(route, "routes/vpc-prod", "routes").label
    assert label.splitlines() == ["route table (3 of 50 entries)", *system, "10.244.0.0/24 → node-1",
                                  "10.244.1.0/24 → node-2", "10.244.2.0/24 → node-3"]


def test_a_node_with_an_eni_on_another_vswitch():
    g = build(plan_of(PODSG, "eni"))
    assert [e.label for e in edges(g, "ecs/node-2", "vsw/vsw-a", "attached")] == [""]
    assert [e.label for e in edges(g, "ecs/node-2", "vsw/vsw-pods", "attached")] == ["ENI"]


def test_headless_externalname_and_unready_endpoints():
    loaded = load(str(SERVICES), mode="vxlan")
    plan = make_plan(loaded, RUN, ready={"pod/default/web-1": False})
    g = build(plan)
    assert node(g, "svc/default/web-headless", "service").label == "Service default/web-headless\nheadless"
    assert node(g, "svc/default/ext", "service").label == "Service default/ext\nExternalName db.example.com"
    assert node(g, "svc/default/web", "service").label == "Service default/web\nClusterIP 172.21.0.11"
    assert [e.label for e in edges(g, "svc/default/web", "pod/default/web-1", "endpoint")] == ["not ready"]
    assert [e.label for e in edges(g, "svc/default/web", "pod/default/web-0", "endpoint")] == [""]
    check_entities(plan, g)


def test_node_ids_differ_for_names_that_differ_only_in_slashes_and_dashes(tmp_path):
    """pod/a/b-c and pod/a-b/c are two pods (both names are valid), so two nodes of the graph."""
    doc = yaml.safe_load(DEFAULT.read_text())
    pod = {"nodeName": "node-1", "containers": [{"name": "x", "image": "busybox", "ports": [{"containerPort": 80}]}]}
    doc["manifests"] += [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a-b"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b-c", "namespace": "a"}, "spec": pod},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "namespace": "a-b"},
         "spec": {**pod, "nodeName": "node-2"}},
    ]
    path = tmp_path / "collide.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = make_plan(load(str(path), mode="vxlan"), RUN)
    g = build(plan)
    check_entities(plan, g)
    a, b = node(g, "pod/a/b-c", "pod"), node(g, "pod/a-b/c", "pod")
    assert a.id != b.id and a.parent == _id("ecs/node-1") and b.parent == _id("ecs/node-2")
    cells = [c.get("id") for c in ET.fromstring(render(g, "drawio")).iter("mxCell")]
    assert len(cells) == len(set(cells))
    dot = render(g, "dot")
    assert re.search(rf"^\s*{a.id} \[label=\"pod a/b-c", dot, re.M)
    assert re.search(rf"^\s*{b.id} \[label=\"pod a-b/c", dot, re.M)


def test_ids_are_plain_and_distinct():
    texts = ["pod/a/b-c", "pod/a-b/c", "pod/a/b/c", "pod_a_b_c", "vpc/x.y", "vpc/x-y", "vpc/é", "vpc/e", ""]
    ids = [_id(t) for t in texts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"n_[A-Za-z0-9_]*", i) for i in ids)
    assert _id("internet") == "n_internet"


def test_labels_with_quotes_and_pipes_are_escaped():
    g = Graph('a "title"', [Node("n_a", "ecs", 'say "hi"\nline 2'), Node("n_b", "pod", "b <&> c", "n_a")],
              [Edge("n_b", "n_a", "reach", "80/tcp | 81/tcp")])
    m = render(g, "mermaid")
    assert "subgraph n_a[\"say 'hi'<br/>line 2\"]" in m and "==>|80/tcp / 81/tcp| n_a" in m
    d = render(g, "dot")
    assert 'label="say \\"hi\\"\\nline 2"' in d and 'label="80/tcp | 81/tcp"' in d
    root = ET.fromstring(render(g, "drawio"))
    assert {c.get("value") for c in root.iter("mxCell") if c.get("vertex")} == {'say "hi"<br>line 2', "b <&> c"}


# ------------------------------------------------------------------------------------- matrix
def reach(g: Graph) -> list[tuple[str, str, str]]:
    return [(e.src, e.dst, e.label) for e in g.edges if e.kind == "reach"]


def ref_id(ref: str) -> str:
    return _id("ecs/" + ref[5:] if ref.startswith("node/") else ref)


@pytest.mark.parametrize("path,mode,between,to,ports", [
    (DEFAULT, "vpc-route", "pods,ecs,nodes", "pods,ecs,services", "8080,5432,9000"),
    (DEFAULT, "vxlan", "pods,ecs,nodes", "pods,ecs,services", "8080,5432,9000"),
    (REPO / "scenarios" / "netpol.yaml", "eni", "pods", None, "80"),
    (INTERNET, "vxlan", "pods,ecs", "pods,services", "80,8080"),
])
def test_the_matrix_overlay_draws_an_edge_per_connecting_cell(path, mode, between, to, ports):
    plan = plan_of(path, mode)
    sources = select(plan, between.split(","))                   # as cmd_graph chooses them
    dests = select(plan, to.split(",")) if to else sources
    m = expected_matrix(plan, sources, dests, parse_ports([ports]))
    g = build(plan, m)
    want = [(ref_id(c.source), ref_id(c.dest), f"{c.port}/{c.protocol}")
            for c in m.cells if c.source != c.dest and c.expected is True]
    assert want, "a matrix with no connecting cell tests nothing"
    assert any(c.expected is False for c in m.cells), "a matrix with no refused cell tests nothing"
    assert reach(g) == want
    assert {e.kind for e in g.edges if e.kind != "reach"} <= {"attached", "link", "route", "endpoint", "backend",
                                                              "bound", "snat", "dnat", "edge"}
    mermaid = render(g, "mermaid")
    assert sum(1 for line in mermaid.splitlines() if " ==>|" in line) == len(want)
    dot = render(g, "dot")
    assert dot.count("color=forestgreen") == len(want)
    base = build(plan)
    assert [e for e in g.edges if e.kind != "reach"] == base.edges and g.nodes == base.nodes


def test_the_matrix_overlay_in_detail():
    plan = plan_of(DEFAULT, "vpc-route")
    m = expected_matrix(plan, ["pod/default/web-0", "node/node-1", "ecs/ecs-other"],
                        ["ecs/ecs-db", "pod/shop/client", "svc/kube-system/kube-dns"],
                        [(5432, "tcp"), (6379, "tcp"), (9000, "tcp"), (53, "udp")])
    g = build(plan, m)
    web, node1, db, client, dns = (_id(x) for x in ("pod/default/web-0", "ecs/node-1", "ecs/ecs-db", "pod/shop/client",
                                                     "svc/kube-system/kube-dns"))
    # sg-db accepts 5432 (not 6379) from the nodes' group; the pods of node-1 and the DNS Service;
    # nothing from ecs/ecs-other, in another VPC
    assert reach(g) == [(web, db, "5432/tcp"), (node1, db, "5432/tcp"), (web, client, "9000/tcp"),
                        (node1, client, "9000/tcp"), (web, dns, "53/udp"), (node1, dns, "53/udp")]
    assert not [e for e in g.edges if e.kind == "reach" and e.src == _id("ecs/ecs-other")]


def test_observed_verdicts_win_and_unknown_ones_are_dashed():
    plan = plan_of(DEFAULT, "eni")
    a, b, c = "pod/default/web-0", "pod/default/web-1", "node/node-3"
    m = Matrix([a, b, c], [a, b, c], [(80, "tcp")], [
        Cell(a, b, 80, "tcp", True, "", observed=False),      # probed: refused, no edge
        Cell(b, a, 80, "tcp", False, "", observed=True),      # probed: connects, an edge
        Cell(a, c, 80, "tcp", None, ""),                      # depends on the endpoint: dashed, with ?
        Cell(c, a, 80, "tcp", True, ""),
        Cell(a, a, 80, "tcp", True, ""),                      # to itself: not drawn
    ])
    g = build(plan, m)
    assert reach(g) == [(_id(b), _id(a), "80/tcp"), (_id(a), _id("ecs/node-3"), "80/tcp ?"),
                        (_id("ecs/node-3"), _id(a), "80/tcp")]
    dot = render(g, "dot")
    assert f'{_id(a)} -> {_id("ecs/node-3")} [color=forestgreen, penwidth=2, label="80/tcp ?", style=dashed];' in dot
    assert f'{_id(b)} -> {_id(a)} [color=forestgreen, penwidth=2, label="80/tcp"];' in dot


def test_the_graph_command_writes_each_format(tmp_path, capsys):
    """The command line end to end on a scenario file (nothing is built)."""
    from kubevpc import cli
    out = tmp_path / "g.json"
    assert cli.main(["graph", str(DEFAULT), "--mode", "eni", "-o", "json", "-w", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {n["id"] for n in doc["nodes"]} >= {_id("vpc/vpc-prod"), _id("pod/shop/client"), _id("ecs/ecs-db")}
    assert cli.main(["graph", str(DEFAULT), "-o", "mermaid", "--matrix", "--ports", "5432"]) == 0
    text = capsys.readouterr().out
    assert "flowchart LR" in text and "==>|5432/tcp|" not in text       # pods only: none listens on 5432
    assert cli.main(["graph", str(DEFAULT), "-o", "drawio", "--matrix", "--between", "pods", "--to", "ecs",
                     "--ports", "5432"]) == 0
    root = ET.fromstring(capsys.readouterr().out)
    # the server pods web-0, web-1, web-2 and shop/client (sg-nodes) reach ecs-db; no other ECS listens on 5432
    assert sum(1 for c in root.iter("mxCell") if c.get("value") == "5432/tcp" and c.get("edge") == "1") == 4
    if HAS_DOT:
        png = tmp_path / "g.png"
        assert cli.main(["graph", str(DEFAULT), "-o", "png", "-w", str(png)]) == 0
        assert png.read_bytes().startswith(b"\x89PNG")
