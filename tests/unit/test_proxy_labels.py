"""Services labelled service.kubernetes.io/service-proxy-name (any value) or
service.kubernetes.io/headless: kube-proxy does not watch them (cmd/kube-proxy/app/server.go), so
no node programs their ClusterIP, NodePorts, LoadBalancer short-circuit or health check port.

- the node bridge drops new connections to such a ClusterIP (on a real node they would follow the
  default route into a VPC with no route for them: a timeout, never a refusal), and the evaluator
  says so, naming the label;
- a NodePort nobody programs is a closed port of the node: refused by it;
- the cloud controller still makes the SLB: in eni mode it sends to the pods and works, in the
  other modes its NodePort backends fail their health checks;
- CoreDNS still answers for the Service; status and the graph say kube-proxy is off.

Each case has its twin, a Service that is the same but for the label."""
from __future__ import annotations

import pytest

from controller.compile import compile_plan
from controller.flows import Goto, GroupAction
from controller.services import entries
from kubevpc.control import summary
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.matrix import expect
from kubevpc.observe.graph import _id, build
from kubevpc.planning import Plan, make_plan
from kubevpc.render.dns import zone
from kubevpc.render.nodehealth import health_ports
from kubevpc.scenario.load import load

from .fakeoftable import FakeOFTable

RUN = "t"
T_SERVICE, T_DESTINATION = 21, 24
MODES = ("vxlan", "vpc-route", "eni")
PROXY_NAME = "service.kubernetes.io/service-proxy-name"
HEADLESS = "service.kubernetes.io/headless"
INTRANET = "{service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: intranet}"

# web (on node-1) and its twins: other is web labelled for another proxy, np-off a NodePort labelled
# headless, lb-off a LoadBalancer labelled for another proxy (lb its twin); iperf for the benchmark
SCENARIO = f"""
name: proxy-labels
cloud:
  vpcs:
    - name: vpc
      cidr: 192.168.0.0/16
      vswitches:
        - {{name: vsw-a, zone: zone-a, cidr: 192.168.1.0/24}}
  securityGroups:
    - name: sg-open
      vpc: vpc
      rules:
        - {{direction: ingress, protocol: tcp, ports: 1-65535, cidr: 192.168.0.0/16}}
  instances:
    - {{name: node-1, vswitch: vsw-a, securityGroups: [sg-open]}}
    - {{name: node-2, vswitch: vsw-a, securityGroups: [sg-open]}}
    - {{name: ecs-client, vswitch: vsw-a, securityGroups: [sg-open]}}
cluster:
  mode: vxlan
  nodes: [node-1, node-2]
manifests:
  - {{apiVersion: v1, kind: Pod, metadata: {{name: web-0, labels: {{app: web}}}},
     spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: client, labels: {{app: client}}}},
     spec: {{nodeName: node-2, containers: [{{name: c, ports: [{{containerPort: 7000}}]}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: web}},
     spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: other, labels: {{{PROXY_NAME}: other-proxy}}}},
     spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: np}},
     spec: {{type: NodePort, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: np-off, labels: {{{HEADLESS}: ""}}}},
     spec: {{type: NodePort, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080, nodePort: 30090}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: lb, annotations: {INTRANET}}},
     spec: {{type: LoadBalancer, externalTrafficPolicy: Local, selector: {{app: web}},
            ports: [{{port: 80, targetPort: 8080, nodePort: 30081}}], healthCheckNodePort: 30100}}}}
  - {{apiVersion: v1, kind: Service,
     metadata: {{name: lb-off, labels: {{{PROXY_NAME}: other-proxy}}, annotations: {INTRANET}}},
     spec: {{type: LoadBalancer, externalTrafficPolicy: Local, selector: {{app: web}},
            ports: [{{port: 80, targetPort: 8080, nodePort: 30091}}], healthCheckNodePort: 30101}}}}
"""

_plans: dict[str, Plan] = {}


def plan_of(tmp_path, mode: str = "vxlan") -> Plan:
    if mode not in _plans:
        path = tmp_path / "proxy-labels.yaml"
        path.write_text(SCENARIO)
        _plans[mode] = make_plan(load(str(path), mode=mode), RUN)
    return _plans[mode]


def service_flow(plan: Plan, node: str, dst: str, port: int):
    """The service table's flow for a new TCP connection from the client pod to dst:port."""
    fs = compile_plan(plan)[plan.node(node).bridge]
    packet = {"eth_type": 0x0800, "ct_state": 0x21, "ipv4_src": plan.host("pod/default/client").ip, "ipv4_dst": dst,
              "ip_proto": 6, "tcp_dst": port, "reg0": 1}
    return FakeOFTable.of(fs).lookup(T_SERVICE, packet)


# ------------------------------------------------------------------------------------ the plan
def test_the_labels_switch_kube_proxy_off_whatever_their_value(tmp_path):
    plan = plan_of(tmp_path)
    proxied = {s.name: s.proxied for s in plan.services if s.namespace == "default"}
    assert proxied == {"web": True, "other": False, "np": True, "np-off": False, "lb": True, "lb-off": False}
    assert plan.service("default/other").proxy_off_label() == f"{PROXY_NAME}=other-proxy"
    assert plan.service("default/np-off").proxy_off_label() == HEADLESS
    assert plan.service("default/web").proxy_off_label() == ""
    # still Services in every other respect: a ClusterIP, NodePorts, endpoints, an SLB
    off = plan.service("default/lb-off")
    assert off.cluster_ip and off.ports[0].node_port == 30091 and [e.name for e in off.endpoints] == ["web-0"]
    assert "default/lb-off" in {s.service for s in plan.slbs}


# ----------------------------------------------------------------------------------- the flows
@pytest.mark.parametrize("mode", MODES)
def test_no_node_programs_a_labelled_service(tmp_path, mode):
    plan = plan_of(tmp_path, mode)
    for node in plan.nodes:
        keys = {e.service.name for e in entries(plan, node)}
        assert {"web", "np", "lb"} <= keys and not keys & {"other", "np-off", "lb-off"}, node.name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("port", [80, 81])
def test_a_labelled_clusterip_is_dropped_on_every_port_not_refused(tmp_path, mode, port):
    plan = plan_of(tmp_path, mode)
    # the client's packet reaches the service table (through conntrack) in every mode
    c = plan.host("pod/default/client")
    walk = FakeOFTable.of(compile_plan(plan)[plan.node("node-2").bridge]).walk(
        {"in_port": c.ofport, "eth_type": 0x0800, "eth_src": c.mac, "eth_dst": c.gateway_mac, "ipv4_src": c.ip,
         "ipv4_dst": plan.service("default/other").cluster_ip, "ip_proto": 6, "tcp_dst": port})
    assert walk.end == 20 and walk.last.actions[-1].table == T_SERVICE
    for node in ("node-1", "node-2"):
        f = service_flow(plan, node, plan.service("default/other").cluster_ip, port)
        assert (f.priority, f.actions) == (100, ()), f
        assert f"labelled {PROXY_NAME}=other-proxy" in f.note
    twin = service_flow(plan, "node-2", plan.service("default/web").cluster_ip, 80)
    assert twin.priority == 200 and any(isinstance(a, GroupAction) for a in twin.actions)


@pytest.mark.parametrize("mode", MODES)
def test_a_labelled_nodeport_and_lb_address_are_no_service_of_the_node(tmp_path, mode):
    """Not taken as Service connections: on to the node (where nothing listens) or the VPC."""
    plan = plan_of(tmp_path, mode)
    vip = {s.service: s.vip for s in plan.slbs}
    node_ip = plan.node("node-2").ip
    for dst, port in ((node_ip, 30090), (node_ip, 30091), (vip["default/lb-off"], 80)):
        f = service_flow(plan, "node-2", dst, port)
        assert (f.priority, f.actions) == (1, (Goto(T_DESTINATION),)), (dst, port, f)
    # the twins are Service entries: balanced, or (lb's NodePort: no local endpoint on node-2) dropped as one
    for dst, port in ((node_ip, 30080), (node_ip, 30081), (vip["default/lb"], 80)):
        f = service_flow(plan, "node-2", dst, port)
        assert f.priority == 200 and f.note.startswith("default/lb:30081/TCP (node-port): externalTrafficPolicy "
                                                       "Local and no endpoint") == (port == 30081), (dst, port, f)


# ------------------------------------------------------------------------------- the evaluator
@pytest.mark.parametrize("mode", MODES)
def test_explain_names_the_label_and_says_the_connection_times_out(tmp_path, mode):
    plan = plan_of(tmp_path, mode)
    for port in (80, 81):
        e = explain(plan, "pod/default/client", "svc/default/other", port)
        assert e.allowed is False
        assert e.reason == (f"Service default/other is labelled {PROXY_NAME}=other-proxy: kube-proxy does not "
                            "program it, and nothing else answers for its ClusterIP: dropped at the node, the "
                            "connection times out")
        allowed, reason = expect(plan, "pod/default/client", "svc/default/other", port, "tcp")
        assert allowed is False and reason == e.reason
    twin = explain(plan, "pod/default/client", "svc/default/web", 80)
    assert twin.allowed is True


@pytest.mark.parametrize("mode", MODES)
def test_a_labelled_nodeport_is_refused_by_the_node(tmp_path, mode):
    plan = plan_of(tmp_path, mode)
    e = explain(plan, "ecs/ecs-client", "node/node-1", 30090)
    assert e.allowed is False
    assert e.reason.startswith(f"Service default/np-off is labelled {HEADLESS}: kube-proxy does not program its "
                               "NodePort 30090")
    assert e.reason.endswith("the node refuses it")
    assert explain(plan, "ecs/ecs-client", "node/node-1", 30080).allowed is True


def test_the_slb_of_a_labelled_service_fails_its_health_checks_on_nodeports(tmp_path):
    for mode in ("vxlan", "vpc-route"):
        plan = plan_of(tmp_path, mode)
        e = explain(plan, "ecs/ecs-client", "slb/default/lb-off", 80)
        assert e.allowed is False and e.reason == "no backend of SLB default/lb-off is in rotation: it drops the connection"
        out = [s.text for s in e.steps if "out of rotation" in s.text]
        assert len(out) == 2 and all("kube-proxy programs neither its NodePort nor its health check port" in t
                                     for t in out), out
        twin = explain(plan, "ecs/ecs-client", "slb/default/lb", 80)
        assert twin.allowed is True and [b.target.split()[0] for b in twin.branches] == ["node-1"]


def test_in_eni_mode_the_slb_of_a_labelled_service_sends_to_the_pods_and_works(tmp_path):
    plan = plan_of(tmp_path, "eni")
    e = explain(plan, "ecs/ecs-client", "slb/default/lb-off", 80)
    assert e.allowed is True and [b.target.split()[0] for b in e.branches] == ["pod/default/web-0"]


# ------------------------------------------------------------------- health checks, DNS, status
def test_no_health_check_server_for_a_labelled_service(tmp_path):
    plan = plan_of(tmp_path)
    for node, count in (("node-1", 1), ("node-2", 0)):
        ports = health_ports(plan, node)["ports"]
        assert set(ports) == {"30100"} and ports["30100"]["local_endpoints"] == count


def test_dns_still_answers_for_a_labelled_service(tmp_path):
    plan = plan_of(tmp_path)
    records = {(r["name"], r["value"]) for r in zone(plan.services, [])["records"] if r["type"] == "A"}
    for name in ("other", "np-off", "lb-off", "web"):
        assert (f"{name}.default.svc.cluster.local.", plan.service(f"default/{name}").cluster_ip) in records


def test_status_and_the_graph_say_kube_proxy_is_off(tmp_path):
    plan = plan_of(tmp_path)
    rows = summary(plan)
    assert rows["default/other"]["kube-proxy"] == f"off (labelled {PROXY_NAME}=other-proxy)"
    assert "kube-proxy" not in rows["default/web"]
    labels = {n.id: n.label for n in build(plan).nodes}
    assert labels[_id("svc/default/other")].endswith("\nkube-proxy off")
    assert "kube-proxy off" not in labels[_id("svc/default/web")]
