"""Terminating endpoints (KEP-1669): pods deleted with a grace period stay endpoints, not ready but
serving while their readiness holds, and every consumer reads them as its upstream does.

- kube-proxy (pkg/proxy/topology.go CategorizeEndpoints): Cluster traffic policy balances over the
  ready endpoints, else over those serving while terminating; Local policies over the node's own
  ready endpoints, else its own serving terminating ones; refused only with neither anywhere.
  Checked on the compiled flows (the flow-table simulator, tests/unit/fakeoftable.py) and against
  the evaluator (kubevpc.evaluator), which must agree on every node.
- kube-proxy's health check server counts local ready endpoints only: a node left with terminating
  pods answers 503 while its NodePort still serves them.
- SLB backends and ingress-nginx's upstreams take ready endpoints only; so does CoreDNS for a
  headless Service (unless it publishes not-ready addresses).

Plans are made as the Lab makes them: the running plan first, then the pods deleted from the
manifests and named `terminating` (kubevpc.planning.make_plan)."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from controller.compile import compile_plan
from controller.flows import Ct, GroupAction, Output, SetField
from kubevpc import k8s
from kubevpc.control import summary
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.reach import service_targets
from kubevpc.observe.graph import _id, build
from kubevpc.planning import Plan, make_plan
from kubevpc.render.dns import zone
from kubevpc.render.ingress import state_document
from kubevpc.render.nodehealth import health_ports
from kubevpc.scenario.load import load

from .fakeoftable import FakeOFTable

RUN = "t"
T_SERVICE = 21
FROM_POD, FROM_HOST = 1, 2              # reg0: where the packet came from
REJECT_PORT = 1

# a and b serve app=web on 8080, a on node-1 and b on node-2; the client pod is on node-1
SCENARIO = """
name: terminating
cloud:
  vpcs:
    - name: vpc
      cidr: 192.168.0.0/16
      vswitches:
        - {name: vsw-a, zone: zone-a, cidr: 192.168.1.0/24}
  securityGroups:
    - name: sg-open
      vpc: vpc
      rules:
        - {direction: ingress, protocol: tcp, ports: 1-65535, cidr: 192.168.0.0/16}
  instances:
    - {name: node-1, vswitch: vsw-a, securityGroups: [sg-open]}
    - {name: node-2, vswitch: vsw-a, securityGroups: [sg-open]}
    - {name: ecs-client, vswitch: vsw-a, securityGroups: [sg-open]}
cluster:
  mode: vxlan
  nodes: [node-1, node-2]
  dns: {enabled: false}
manifests:
  - {apiVersion: v1, kind: Pod, metadata: {name: a, labels: {app: web}},
     spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 8080}]}]}}
  - {apiVersion: v1, kind: Pod, metadata: {name: b, labels: {app: web}},
     spec: {nodeName: node-2, containers: [{name: c, ports: [{containerPort: 8080}]}]}}
  - {apiVersion: v1, kind: Pod, metadata: {name: client, labels: {app: client}},
     spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 7000}]}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: web},
     spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: web-itp},
     spec: {selector: {app: web}, internalTrafficPolicy: Local, ports: [{port: 80, targetPort: 8080}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: web-np},
     spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, targetPort: 8080, nodePort: 30080}]}}
  - apiVersion: v1
    kind: Service
    metadata:
      name: web-lb
      annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: intranet}
    spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: web},
           ports: [{port: 80, targetPort: 8080, nodePort: 30081}], healthCheckNodePort: 30100}
  - {apiVersion: v1, kind: Service, metadata: {name: web-headless},
     spec: {clusterIP: None, selector: {app: web}, ports: [{port: 8080}]}}
  - {apiVersion: v1, kind: Service, metadata: {name: web-published},
     spec: {clusterIP: None, publishNotReadyAddresses: true, selector: {app: web}, ports: [{port: 8080}]}}
"""


# ------------------------------------------------------------------------------------- helpers
def _loaded(tmp_path, mode: str, without: tuple[str, ...] = ()):
    """The scenario, without the Pod manifests named in `without` (deleted)."""
    path = tmp_path / "terminating.yaml"
    path.write_text(SCENARIO)
    ld = load(str(path), mode=mode)
    return dataclasses.replace(ld, manifests=tuple(m for m in ld.manifests if not (
        isinstance(m.obj, k8s.Pod) and m.obj.metadata.name in without)))


def deleting(tmp_path, *names: str, not_ready: tuple[str, ...] = (), mode: str = "vxlan") -> Plan:
    """The plan once pods `names` are deleted with a grace period, as the Lab replans: against the
    running plan, those pods terminating; the pods in `not_ready` failing their readiness."""
    before = make_plan(_loaded(tmp_path, mode), RUN)
    return make_plan(_loaded(tmp_path, mode, names), RUN, previous=before,
                     terminating={f"pod/default/{n}" for n in names},
                     ready={f"pod/default/{n}": False for n in not_ready})


def _pod_on(plan: Plan, node: str) -> str:
    return {"node-1": "pod/default/client", "node-2": "pod/default/b"}[node]


def flows_say(plan: Plan, node: str, key: str, nodeport: bool = False, from_host: bool = False):
    """What `node`'s bridge does with a new TCP connection to Service `key` (its ClusterIP port 80,
    or its NodePort at the node): the set of pod names its select group balances over, "refused"
    (DNAT to the node's closed port, or the controller for the node itself) or "dropped"."""
    fs = compile_plan(plan)[plan.node(node).bridge]
    svc = plan.service(key)
    dst, port = (plan.node(node).ip, svc.ports[0].node_port) if nodeport else (svc.cluster_ip, 80)
    src = plan.node(node).ip if from_host else plan.host(_pod_on(plan, node)).ip
    packet = {"eth_type": 0x0800, "ct_state": 0x21, "ipv4_src": src, "ipv4_dst": dst, "ip_proto": 6, "tcp_dst": port,
              "reg0": FROM_HOST if from_host else FROM_POD}
    f = FakeOFTable.of(fs).lookup(T_SERVICE, packet)
    assert f is not None and f.priority >= 200, f
    names = {int(ipaddress.IPv4Address(h.ip)): h.name for h in plan.pods}
    for a in f.actions:
        if isinstance(a, GroupAction):
            return {names[x.value] for b in fs.groups[a.group_id].buckets for x in b.actions
                    if isinstance(x, SetField) and x.field == "reg2"}
        if isinstance(a, Output) and a.port == "controller" or isinstance(a, Ct) and a.nat and a.nat.port_min == REJECT_PORT:
            return "refused"
    assert f.actions == (), f
    return "dropped"


def evaluator_says(plan: Plan, node: str, key: str):
    """The evaluator's answer for the same ClusterIP connection, in flows_say's terms."""
    whole, targets = service_targets(plan, plan.host(_pod_on(plan, node)), plan.service(key), 80)
    if whole is None:
        return {h.name for h, _, _ in targets}
    assert whole.reason.endswith(("refused", "dropped")), whole.reason
    return whole.reason.rsplit(" ", 1)[1]


def endpoint(plan: Plan, key: str, name: str):
    [e] = [e for e in plan.service(key).endpoints if e.name == name]
    return e


# ------------------------------------------------------------------------------------ the plan
def test_a_deleted_pod_stays_an_endpoint_not_ready_serving_while_its_readiness_holds(tmp_path):
    plan = deleting(tmp_path, "b")
    b = endpoint(plan, "default/web", "b")
    assert (b.ready, b.serving, b.terminating) == (False, True, True)
    a = endpoint(plan, "default/web", "a")
    assert (a.ready, a.serving, a.terminating) == (True, True, False)
    failing = endpoint(deleting(tmp_path, "b", not_ready=("b",)), "default/web", "b")
    assert (failing.ready, failing.serving, failing.terminating) == (False, False, True)
    published = endpoint(plan, "default/web-published", "b")
    assert (published.ready, published.serving, published.terminating) == (True, True, True)


# ------------------------------------------------------------------------- kube-proxy, the flows
def test_cluster_policy_prefers_a_ready_endpoint_elsewhere_to_a_terminating_one(tmp_path):
    plan = deleting(tmp_path, "b")
    for node in ("node-1", "node-2"):
        assert flows_say(plan, node, "default/web") == {"a"}
        assert flows_say(plan, node, "default/web-np", nodeport=True) == {"a"}


def test_cluster_policy_falls_back_to_the_terminating_endpoints_when_none_is_ready(tmp_path):
    plan = deleting(tmp_path, "a", "b")
    for node in ("node-1", "node-2"):
        assert flows_say(plan, node, "default/web") == {"a", "b"}
        assert flows_say(plan, node, "default/web-np", nodeport=True) == {"a", "b"}
        assert flows_say(plan, node, "default/web", from_host=True) == {"a", "b"}


def test_a_terminating_pod_that_is_not_serving_is_never_used(tmp_path):
    plan = deleting(tmp_path, "a", "b", not_ready=("b",))
    for node in ("node-1", "node-2"):
        assert flows_say(plan, node, "default/web") == {"a"}
    # neither serving: refused, from a pod (DNAT to the closed port) and from the node (the controller)
    plan = deleting(tmp_path, "a", "b", not_ready=("a", "b"))
    for node in ("node-1", "node-2"):
        assert flows_say(plan, node, "default/web") == "refused"
        assert flows_say(plan, node, "default/web", from_host=True) == "refused"
        assert flows_say(plan, node, "default/web-np", nodeport=True) == "refused"
        assert flows_say(plan, node, "default/web-itp") == "refused"


def test_local_policies_fall_back_to_the_nodes_own_terminating_endpoints(tmp_path):
    plan = deleting(tmp_path, "b")          # a is ready on node-1; node-2 has only b, terminating
    assert flows_say(plan, "node-1", "default/web-itp") == {"a"}
    assert flows_say(plan, "node-2", "default/web-itp") == {"b"}
    assert flows_say(plan, "node-2", "default/web-lb", nodeport=True) == {"b"}
    assert flows_say(plan, "node-1", "default/web-lb", nodeport=True) == {"a"}


def test_local_policies_drop_where_the_local_terminating_pod_is_not_serving(tmp_path):
    plan = deleting(tmp_path, "b", not_ready=("b",))     # a ready elsewhere: dropped, not refused
    assert flows_say(plan, "node-2", "default/web-itp") == "dropped"
    assert flows_say(plan, "node-2", "default/web-lb", nodeport=True) == "dropped"
    assert flows_say(plan, "node-1", "default/web-itp") == {"a"}


CASES = {"nothing deleted": ((), ()), "b deleted": (("b",), ()), "both deleted": (("a", "b"), ()),
         "b deleted, failing": (("b",), ("b",)), "both deleted, b failing": (("a", "b"), ("b",)),
         "both deleted, both failing": (("a", "b"), ("a", "b")), "a failing, b deleted": (("b",), ("a",))}


@pytest.mark.parametrize("case", CASES)
def test_the_evaluator_agrees_with_the_flows_on_every_node(tmp_path, case):
    names, not_ready = CASES[case]
    plan = deleting(tmp_path, *names, not_ready=not_ready)
    for node in ("node-1", "node-2"):
        for key in ("default/web", "default/web-itp", "default/web-np", "default/web-lb"):
            assert evaluator_says(plan, node, key) == flows_say(plan, node, key), (node, key)


# ------------------------------------------------------------------------------- the evaluator
def test_explain_says_when_kube_proxy_falls_back_to_terminating_endpoints(tmp_path):
    plan = deleting(tmp_path, "a", "b")
    e = explain(plan, "pod/default/client", "svc/default/web", 80)
    assert e.allowed is True
    [head] = [s.text for s in e.steps if s.stage == "Service"]
    assert "one of 2 terminating endpoint(s) (none is ready: kube-proxy falls back" in head
    assert all(b.explanation.steps[0].text.endswith("(terminating, still serving)") for b in e.branches)
    ready = explain(deleting(tmp_path, "b"), "pod/default/client", "svc/default/web", 80)
    [head] = [s.text for s in ready.steps if s.stage == "Service"]
    assert "one of 1 ready endpoint(s)" in head and "falls back" not in head
    assert [b.target.split()[0] for b in ready.branches] == ["pod/default/a"]


def test_explain_names_the_terminating_pods_that_do_not_serve_when_it_refuses(tmp_path):
    plan = deleting(tmp_path, "a", "b", not_ready=("a", "b"))
    e = explain(plan, "pod/default/client", "svc/default/web", 80)
    assert e.allowed is False
    assert e.reason == "Service default/web has no ready endpoint (terminating a, b: not serving either): refused"


def test_a_nodeport_with_policy_local_serves_the_local_terminating_pod(tmp_path):
    plan = deleting(tmp_path, "b")
    e = explain(plan, "ecs/ecs-client", "node/node-2", 30081)
    assert e.allowed is True and [b.target.split()[0] for b in e.branches] == ["pod/default/b"]
    assert e.seen_source == plan.host("ecs/ecs-client").ip
    failing = explain(deleting(tmp_path, "b", not_ready=("b",)), "ecs/ecs-client", "node/node-2", 30081)
    assert failing.allowed is False and failing.reason == "externalTrafficPolicy Local and no endpoint on node-2: dropped"


def test_the_slb_drains_a_node_left_with_terminating_pods(tmp_path):
    """The health check counts ready local endpoints only: node-2 answers 503 and leaves rotation,
    although its NodePort would still serve b."""
    plan = deleting(tmp_path, "b")
    e = explain(plan, "ecs/ecs-client", "slb/default/web-lb", 80)
    assert e.allowed is True and [b.target.split()[0] for b in e.branches] == ["node-1"]
    [out] = [s.text for s in e.steps if s.text.startswith("backend node-2 is out of rotation")]
    assert "answers 503" in out and "that is ready" in out
    before = explain(deleting(tmp_path), "ecs/ecs-client", "slb/default/web-lb", 80)
    assert [b.target.split()[0] for b in before.branches] == ["node-1", "node-2"]


# --------------------------------------------------------------- health checks, SLB, ingress, DNS
def test_health_check_counts_only_local_ready_endpoints(tmp_path):
    def count(plan: Plan, node: str) -> int:
        return health_ports(plan, node)["ports"]["30100"]["local_endpoints"]
    before = deleting(tmp_path)
    assert (count(before, "node-1"), count(before, "node-2")) == (1, 1)
    plan = deleting(tmp_path, "b")
    assert (count(plan, "node-1"), count(plan, "node-2")) == (1, 0)      # 503 on node-2
    published = deleting(tmp_path, "a", "b")
    assert (count(published, "node-1"), count(published, "node-2")) == (0, 0)


def test_slb_backends_in_eni_mode_and_ingress_upstreams_take_ready_endpoints_only(tmp_path):
    plan = deleting(tmp_path, "b", mode="eni")
    [listener] = next(s for s in plan.slbs if s.service == "default/web-lb").listeners
    assert [b.id for b in listener.backends] == ["pod/default/a"]
    before = deleting(tmp_path, mode="eni")
    [listener] = next(s for s in before.slbs if s.service == "default/web-lb").listeners
    assert [b.id for b in listener.backends] == ["pod/default/a", "pod/default/b"]
    doc = state_document(plan, "192.168.1.100", {}, 1)
    a, b = (plan.host(f"pod/default/{n}").ip for n in "ab")
    assert doc["services"]["default/web"]["ports"][0]["endpoints"] == [f"{a}:8080"]
    doc = state_document(before, "192.168.1.100", {}, 1)
    assert doc["services"]["default/web"]["ports"][0]["endpoints"] == [f"{a}:8080", f"{b}:8080"]


def test_a_terminating_pod_leaves_headless_dns_unless_the_service_publishes_not_ready(tmp_path):
    def a_records(plan: Plan, name: str) -> set[str]:
        doc = zone(plan.services, [])
        return {r["value"] for r in doc["records"] if r["name"] == f"{name}.default.svc.cluster.local."
                and r["type"] == "A"}
    plan = deleting(tmp_path, "b")
    a, b = (plan.host(f"pod/default/{n}").ip for n in "ab")
    assert a_records(plan, "web-headless") == {a}
    assert a_records(plan, "web-published") == {a, b}
    assert a_records(deleting(tmp_path), "web-headless") == {a, b}


# ------------------------------------------------------------------------- status and the graph
def test_status_and_the_graph_say_terminating(tmp_path):
    plan = deleting(tmp_path, "a", "b", not_ready=("b",))
    assert summary(plan)["default/web"]["endpoints"] == "a (terminating), b (terminating, not ready)"
    g = build(plan)
    labels = {e.dst: e.label for e in g.edges if e.kind == "endpoint" and e.src == _id("svc/default/web")}
    assert labels == {_id("pod/default/a"): "terminating", _id("pod/default/b"): "terminating, not ready"}
    before = deleting(tmp_path, not_ready=("b",))
    assert summary(before)["default/web"]["endpoints"] == "a, b (not ready)"
