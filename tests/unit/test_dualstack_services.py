"""Dual stack, second half (scenarios/dualstack-services.yaml, eni): Services' ipFamilies,
ipFamilyPolicy and clusterIPs checked in the API server's words; the plan's clusterIPs by family
from serviceCIDRv6; the IPv6 flows walked with tests/unit/netsim.py beside the evaluator (ClusterIP,
NodePort with externalTrafficPolicy Cluster and Local, refusal without endpoints, NetworkPolicy's
IPv6 ipBlock and its twins); the cluster DNS's AAAA answers from a real process on loopback;
the controller's IPv6 refusal; explain and the matrix in IPv6. Expected addresses are written out
by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from os_ken.lib.packet import ethernet, icmpv6, ipv6, packet, tcp, udp

from controller.compile import compile_plan
from controller.refuse import refusal
from controller.services import entries
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.matrix import expect, expected_matrix
from kubevpc.evaluator.reach import reach, service_targets
from kubevpc.planning import REJECT_PORT, Plan, make_plan, resolve_endpoint
from kubevpc.render.dns import zone
from kubevpc.scenario.load import load

from .netsim import Network
from .plans import plan_of
from .problems import check, line_of, the
from .test_dns_forward import ask, servers  # noqa: F401  (a fixture)
from .test_validation import refuse

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "dualstack-services.yaml"
RUN = "kvs"
WEB6, WEB_NP6, SOLO6_VIP, WEB6_ONLY, EMPTY6 = ("fd00:172:21::b", "fd00:172:21::c", "fd00:172:21::d",
                                                 "fd00:172:21::e", "fd00:172:21::f")
NODE1_6, NODE2_6, APP6 = "2001:db8:0:101::1", "2001:db8:0:102::1", "2001:db8:0:102::50"
WEB0_6, WEB1_6, CLIENT6, SOLO6, GUARDED6 = ("2001:db8:0:101::2", "2001:db8:0:102::2", "2001:db8:0:101::3",
                                            "2001:db8:0:101::4", "2001:db8:0:102::3")


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def plan() -> Plan:
    return plan_of(SCENARIO, "eni", RUN)


def host(ref: str):
    return resolve_endpoint(plan(), ref)


def service(name: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}], **spec}}


def with_service(spec: dict, name: str = "extra", single_stack: bool = False) -> dict:
    d = data()
    if single_stack:
        del d["cluster"]["serviceCIDRv6"]
        d["manifests"] = [m for m in d["manifests"] if m["kind"] != "Service"]
    d["manifests"].append(service(name, spec))
    return d


# ------------------------------------------------------------------------------------------ plan
def test_clusterips_by_family_from_both_service_cidrs():
    got = {s.name: (s.cluster_ip, s.cluster_ips, s.ip_families, s.ip_family_policy) for s in plan().services}
    assert got["web"] == ("172.21.0.11", ("172.21.0.11", WEB6), ("IPv4", "IPv6"), "PreferDualStack")
    assert got["web-np"] == (WEB_NP6, (WEB_NP6, "172.21.0.12"), ("IPv6", "IPv4"), "RequireDualStack")
    assert got["legacy"] == ("172.21.0.14", ("172.21.0.14",), ("IPv4",), "SingleStack")
    assert got["web6"] == (WEB6_ONLY, (WEB6_ONLY,), ("IPv6",), "SingleStack")
    assert got["solo-direct"] == ("", (), ("IPv4", "IPv6"), "PreferDualStack")
    assert got["kube-dns"] == ("172.21.0.10", ("172.21.0.10",), ("IPv4",), "SingleStack")
    assert plan().cluster.service_cidr6 == "fd00:172:21::/112"
    web = plan().service("default/web")
    assert [(e.name, e.ip, e.ipv6) for e in web.endpoints] == [("web-0", "192.168.1.2", WEB0_6),
                                                                ("web-1", "192.168.2.2", WEB1_6)]


def test_a_declared_ipv6_clusterip_is_kept_and_the_rest_allocated_around_it(tmp_path):
    d = with_service({"ipFamilyPolicy": "PreferDualStack", "clusterIPs": ["172.21.0.40", "fd00:172:21::b"]})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    p = make_plan(load(str(path)), RUN)
    assert p.service("default/extra").cluster_ips == ("172.21.0.40", "fd00:172:21::b")
    assert p.service("default/web").cluster_ips == ("172.21.0.11", "fd00:172:21::c")      # moved past it


def test_prefer_dual_stack_on_a_single_stack_cluster_gets_one_family(tmp_path):
    d = with_service({"ipFamilyPolicy": "PreferDualStack"}, single_stack=True)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    svc = make_plan(load(str(path)), RUN).service("default/extra")
    assert (svc.cluster_ips, svc.ip_families) == (("172.21.0.11",), ("IPv4",))


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("spec, words", [
    ({"ipFamilies": ["IPv4", "IPv4"]}, 'spec.ipFamilies[1]: Duplicate value: "IPv4"'),
    ({"ipFamilies": ["IPv5"]}, 'spec.ipFamilies[0]: Unsupported value: "IPv5"'),
    ({"ipFamilyPolicy": "DualStack"}, 'spec.ipFamilyPolicy: Unsupported value: "DualStack"'),
    ({"clusterIP": "172.21.0.40", "clusterIPs": ["172.21.0.41"]}, "first value must match `clusterIP`"),
    ({"clusterIPs": ["172.21.0.40", "172.21.0.41"], "ipFamilyPolicy": "PreferDualStack"},
     "may specify no more than one IP for each IP family"),
    ({"clusterIPs": ["172.21.0.40", "fd00:172:21::40", "172.21.0.41"], "ipFamilyPolicy": "PreferDualStack"},
     "may only hold up to 2 values"),
    ({"clusterIPs": ["None", "fd00:172:21::40"]}, "'None' must be the first and only value"),
    ({"clusterIPs": ["172.21.0.40"], "ipFamilies": ["IPv6"]},
     'spec.clusterIPs[0]: Invalid value: "172.21.0.40": expected an IPv6 value as indicated by `ipFamilies[0]`'),
    ({"clusterIPs": ["fd00:172:21::300"], "ipFamilies": ["IPv4"]}, "expected an IPv4 value"),
    ({"clusterIPs": ["10.0.0.256"]}, 'spec.clusterIPs[0]: Invalid value: "10.0.0.256": must be a valid IP address'),
    ({"type": "ExternalName", "externalName": "db.example.com", "ipFamilies": ["IPv4"]},
     "spec.ipFamilies: Forbidden: may not be set for ExternalName services"),
    ({"type": "ExternalName", "externalName": "db.example.com", "ipFamilyPolicy": "SingleStack"},
     "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services"),
])
def test_the_api_servers_checks_of_the_dual_stack_fields(tmp_path, spec, words):
    d = with_service(spec)
    problems, f, text = refuse(tmp_path, d)
    k = len(d["manifests"]) - 1
    p = the(problems, f"manifests[{k}].spec")
    check(p, f, yaml.safe_load(text)["manifests"][k]["spec"], line_of(text, "spec:", after="name: extra"), words)


@pytest.mark.parametrize("spec, single, path, value, words", [
    ({"ipFamilyPolicy": "RequireDualStack"}, True, "spec.ipFamilyPolicy", "RequireDualStack",
     ["this cluster is not configured for dual-stack services"]),
    ({"ipFamilies": ["IPv6"]}, True, "spec.ipFamilies[0]", "IPv6", ["not configured on this cluster"]),
    ({"ipFamilies": ["IPv4", "IPv6"]}, False, "spec.ipFamilyPolicy", "SingleStack",
     ["must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"]),
    ({"clusterIPs": ["172.21.0.40", "fd00:172:21::40"]}, False, "spec.ipFamilyPolicy", "SingleStack",
     ["when multiple cluster IPs are specified"]),
    ({"type": "LoadBalancer", "ipFamilies": ["IPv6"]}, False, "spec.ipFamilies", ["IPv6"],
     ["kubevpc emulates SLBs in IPv4 only"]),
    ({"clusterIPs": ["fd00:172:22::1"], "ipFamilies": ["IPv6"]}, False, "spec.clusterIPs[0]", "fd00:172:22::1",
     ["inside serviceCIDRv6 fd00:172:21::/112"]),
])
def test_what_the_cluster_decides_is_refused_with_its_reason(tmp_path, spec, single, path, value, words):
    d = with_service(spec, single_stack=single)
    problems, f, text = refuse(tmp_path, d)
    k = next(i for i, m in enumerate(d["manifests"]) if m["metadata"]["name"] == "extra")
    p = the(problems, f"manifests[{k}].{path}")
    assert p.value == value
    assert all(w in p.expected for w in words), p.expected


def test_an_ipv6_clusterip_declared_twice_is_refused_the_second_time(tmp_path):
    d = with_service({"clusterIPs": ["fd00:172:21::40"], "ipFamilies": ["IPv6"]})
    d["manifests"].append(service("extra2", {"clusterIPs": ["fd00:172:21::40"], "ipFamilies": ["IPv6"]}))
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, f"manifests[{len(d['manifests']) - 1}].spec.clusterIPs[0]")
    check(p, f, "fd00:172:21::40", line_of(text, "fd00:172:21::40", after="name: extra2"),
          "already allocated to Service default/extra")


@pytest.mark.parametrize("cidr, dual, words", [
    ("fd00:172:21::/100", True, ["/108 to /120"]),
    ("fd00:172:21::/124", True, ["/108 to /120"]),
    ("2001:db8:0:100::/112", True, ["overlaps the VPC's ipv6Cidr"]),
    ("fd00:172:21::/112", False, ["dual-stack cluster only"]),
    ("2400:3200::/112", True, ["2001:db8::/32", "fd00::/8"]),
])
def test_service_cidr_v6_is_checked(tmp_path, cidr, dual, words):
    d = data()
    d["cluster"]["serviceCIDRv6"] = cidr
    if not dual:
        d["cluster"]["dualStack"] = False
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, "cluster.serviceCIDRv6")
    check(p, f, p.value, line_of(text, cidr), *words)


# ----------------------------------------------------------------------------------------- flows
def delivered(ends) -> set[tuple[str, str, str]]:
    return {(e.host, e.packet.get("ipv6_src"), e.packet.get("ipv6_dst")) for e in ends if e.kind == "delivered"}


def test_a_pod_reaches_a_dual_stack_service_over_ipv6_keeping_its_address():
    ends = Network(plan()).send(host("pod/client"), WEB6, 80)
    assert delivered(ends) == {("pod/default/web-0", CLIENT6, WEB0_6), ("pod/default/web-1", CLIENT6, WEB1_6)}
    assert all(e.packet["tcp_dst"] == 8080 for e in ends)
    whole, targets = service_targets(plan(), host("pod/client"), plan().service("default/web"), 80, "tcp", 6)
    assert whole is None and {(h.key, v.allowed, v.seen_source) for h, _, v in targets} == {
        ("pod/default/web-0", True, CLIENT6), ("pod/default/web-1", True, CLIENT6)}
    v4 = Network(plan()).send(host("pod/client"), "172.21.0.11", 80)      # the IPv4 twin, unchanged
    assert {e.host for e in v4 if e.kind == "delivered"} == {"pod/default/web-0", "pod/default/web-1"}


def test_an_ipv4_only_service_has_no_ipv6_entry_and_an_ipv6_only_one_no_ipv4():
    for node in plan().nodes:
        es = entries(plan(), node)
        assert {e.family for e in es if e.service.name == "legacy"} == {4}
        assert {e.family for e in es if e.service.name == "web6"} == {6}
    whole, _ = service_targets(plan(), host("pod/client"), plan().service("default/legacy"), 80, "tcp", 6)
    assert whole is not None and "no IPv6 ClusterIP" in whole.reason
    ends = Network(plan()).send(host("pod/client"), WEB6_ONLY, 80)
    assert {e.host for e in ends if e.kind == "delivered"} == {"pod/default/web-0", "pod/default/web-1"}


def test_nodeport_cluster_over_ipv6_is_masqueraded_to_the_node():
    ends = Network(plan()).send(host("ecs/ecs-app"), NODE2_6, 30080)
    assert delivered(ends) == {("pod/default/web-0", NODE2_6, WEB0_6), ("pod/default/web-1", NODE2_6, WEB1_6)}
    e = explain(plan(), "ecs/ecs-app", NODE2_6, 30080)
    assert e.allowed and e.seen_source == NODE2_6


def test_nodeport_local_over_ipv6_keeps_the_client_and_drops_where_no_endpoint_is():
    ends = Network(plan()).send(host("ecs/ecs-app"), NODE1_6, 30081)
    assert delivered(ends) == {("pod/default/solo", APP6, SOLO6)}
    e = explain(plan(), "ecs/ecs-app", NODE1_6, 30081)
    assert e.allowed and e.seen_source == APP6
    twin = Network(plan()).send(host("ecs/ecs-app"), NODE2_6, 30081)
    assert [x.kind for x in twin] == ["dropped"] and "no endpoint on this node" in twin[0].path[-1][1].note
    e = explain(plan(), "ecs/ecs-app", NODE2_6, 30081)
    assert e.allowed is False and "no endpoint on node-2" in e.reason
    v4 = explain(plan(), "ecs/ecs-app", "ecs/node-1", 30081)       # sg-nodes admits NodePorts over IPv6 only
    assert v4.allowed is False


def test_a_service_without_endpoints_refuses_at_once_in_ipv6():
    ends = Network(plan()).send(host("pod/client"), EMPTY6, 80)
    assert [(e.kind, e.host, e.packet["ipv6_dst"], e.packet["tcp_dst"]) for e in ends] == [
        ("delivered", "ecs/node-1", NODE1_6, REJECT_PORT)]
    own = Network(plan()).send(host("ecs/node-1"), EMPTY6, 80)      # the node itself: the controller answers
    assert [e.kind for e in own] == ["controller"]
    whole, _ = service_targets(plan(), host("pod/client"), plan().service("default/empty"), 80, "tcp", 6)
    assert "refused" in whole.reason


def test_an_ipv6_ip_block_admits_ipv6_only_and_its_except_is_cut_out():
    net = Network(plan())
    allow = net.send(host("pod/web-0"), GUARDED6, 8080)
    assert delivered(allow) == {("pod/default/guarded", WEB0_6, GUARDED6)}
    excepted = net.send(host("pod/client"), GUARDED6, 8080)
    v4 = net.send(host("pod/web-0"), "192.168.2.3", 8080)
    for ends in (excepted, v4):
        assert [e.kind for e in ends] == ["dropped"] and ends[0].path[-1][1].feature == "netpol"
    assert reach(plan(), host("pod/web-0"), host("pod/guarded"), 8080, "tcp", 6).allowed
    assert not reach(plan(), host("pod/client"), host("pod/guarded"), 8080, "tcp", 6).allowed
    assert not reach(plan(), host("pod/web-0"), host("pod/guarded"), 8080).allowed


def test_policy_conjunctions_of_the_two_families_never_share_an_id():
    for fs in compile_plan(plan()).values():
        ids: dict[int, int] = {}
        for f in fs.flows:
            for a in f.actions:
                if type(a).__name__ == "Conjunction":
                    assert ids.setdefault(a.conj_id, f.match[0][1]) == f.match[0][1], a


# ------------------------------------------------------------------------------------------ DNS
def records(name: str) -> set[tuple[str, str]]:
    doc = zone(plan().services, [h for h in plan().hosts if h.kind == "pod"])
    return {(r["type"], r["value"]) for r in doc["records"] if r["name"] == name}


def test_the_zone_has_aaaa_for_ipv6_clusterips_and_headless_pods():
    assert records("web.default.svc.cluster.local.") == {("A", "172.21.0.11"), ("AAAA", WEB6)}
    assert records("legacy.default.svc.cluster.local.") == {("A", "172.21.0.14")}
    assert records("web6.default.svc.cluster.local.") == {("AAAA", WEB6_ONLY)}
    assert records("solo-direct.default.svc.cluster.local.") == {("A", "192.168.1.4"), ("AAAA", SOLO6)}
    assert records("2001-db8-0-101--4.default.pod.cluster.local.") == {("AAAA", SOLO6)}


def test_the_dns_server_answers_aaaa_and_nodata_for_an_ipv4_only_service(servers):  # noqa: F811
    s = servers(zone(plan().services, [h for h in plan().hosts if h.kind == "pod"]))
    six = ask(s, "web.default.svc.cluster.local.", "AAAA")
    assert [a.to_text() for rr in six.answer for a in rr] == [WEB6]
    none = ask(s, "legacy.default.svc.cluster.local.", "AAAA")
    assert none.rcode() == dns.rcode.NOERROR and not none.answer and none.authority      # NODATA, with the SOA
    four = ask(s, "legacy.default.svc.cluster.local.", "A")
    assert [a.to_text() for rr in four.answer for a in rr] == ["172.21.0.14"]
    head = ask(s, "solo-direct.default.svc.cluster.local.", "AAAA")
    assert [a.to_text() for rr in head.answer for a in rr] == [SOLO6]
    assert isinstance(six, dns.message.Message) and dns.query


# -------------------------------------------------------------------------- refusal, explain, matrix
def _segment(proto: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="02:00:00:00:00:02", src="02:00:00:00:00:01", ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src=NODE1_6, dst=EMPTY6, nxt=6 if proto == "tcp" else 17))
    pkt.add_protocol(tcp.tcp(src_port=40000, dst_port=80, seq=7, bits=tcp.TCP_SYN) if proto == "tcp" else
                     udp.udp(src_port=40000, dst_port=80))
    pkt.add_protocol(b"x" * (0 if proto == "tcp" else 4))
    pkt.serialize()
    return bytes(pkt.data)


def test_the_controller_refuses_in_ipv6_as_the_service_address():
    reset = packet.Packet(refusal(_segment("tcp")))
    ip6, seg = reset.get_protocol(ipv6.ipv6), reset.get_protocol(tcp.tcp)
    assert (ip6.src, ip6.dst, seg.src_port, seg.dst_port, seg.ack) == (EMPTY6, NODE1_6, 80, 40000, 8)
    assert seg.bits & tcp.TCP_RST
    unreachable = packet.Packet(refusal(_segment("udp")))
    icmp6 = unreachable.get_protocol(icmpv6.icmpv6)
    assert (icmp6.type_, icmp6.code, unreachable.get_protocol(ipv6.ipv6).src) == (1, 4, EMPTY6)


def test_explain_and_the_matrix_take_the_ipv6_clusterip():
    e = explain(plan(), "pod/client", WEB6, 80)
    assert e.allowed and e.seen_source == CLIENT6 and len(e.branches) == 2
    e = explain(plan(), "pod/client", "svc/default/web", 80, family=6)
    assert e.allowed and WEB6 in e.steps[-1].text
    assert expect(plan(), "pod/default/client", "svc/default/web", 80, "tcp", 6)[0] is True
    assert expect(plan(), "pod/default/client", "svc/default/legacy", 80, "tcp", 6)[0] is False
    m = expected_matrix(plan(), ["pod/default/web-0", "pod/default/client"], ["pod/default/guarded"], [(8080, "tcp")], 6)
    assert [(c.source, c.expected, c.family) for c in m.cells] == [("pod/default/web-0", True, 6),
                                                                    ("pod/default/client", False, 6)]
