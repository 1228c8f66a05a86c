"""The VPCs' DNS resolvers (issue 19, an upstream for the cluster DNS): their planning and its
refusals, the vRouter flows that let DNS and only DNS reach them (held to the evaluator end to end
with tests/unit/netsim.py in every mode), and the builder's DNS helpers (topologies/dns.py), with
tests/e2e/data/upstream-dns.yaml. The daemons' forwarding is in tests/unit/test_dns_forward.py."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from controller.compile import compile_plan
from controller.pipeline import VROUTER
from kubevpc.evaluator.reach import reach
from kubevpc.planning import OFPORT_VROUTER_EDGE, OFPORT_VROUTER_RESOLVER, VPC_DNS, Plan, make_plan
from kubevpc.render.dns import internet_zone, vpc_resolv_conf
from kubevpc.rundir import RunDir
from kubevpc.scenario.load import load
from topologies import dns as builder_dns

from .fakeoftable import FakeOFTable
from .netsim import Network
from .problems import check, line_of, the
from .test_flows import targets
from .test_validation import refuse

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "e2e" / "data" / "upstream-dns.yaml"
MODES = ("vxlan", "vpc-route", "eni")


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def plan_of(mode: str = "vxlan", path: Path = SCENARIO) -> Plan:
    return make_plan(load(str(path), mode=mode), "kv")


def plan_from(tmp_path: Path, d: dict, mode: str | None = None) -> Plan:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return make_plan(load(str(path), mode=mode), "kv")


# ------------------------------------------------------------------------------------ planning
def test_each_vpc_with_an_internet_gets_a_resolver_on_its_vrouter():
    p = plan_of()
    (h,) = p.resolvers
    assert (h.key, h.kind, h.app, h.ip, h.prefixlen, h.gateway) == (
        "resolver/vpc", "resolver", "resolver", "100.100.2.136", 24, "100.100.2.1")
    assert (h.bridge, h.ofport, h.veth, h.netns) == ("kv-vr0", OFPORT_VROUTER_RESOLVER, "kvd0", "kv-dns-vpc")
    assert {(s.port, s.protocol) for s in h.servers} == {(53, "UDP"), (53, "TCP")}
    assert p.internet.resolvers == VPC_DNS == ("100.100.2.136", "100.100.2.138")
    assert p.internet.domain == "example.net"
    port = next(x for x in p.bridge("kv-vr0").ports if x.ofport == OFPORT_VROUTER_RESOLVER)
    assert (port.name, port.kind, port.peer) == ("kvd0", "veth", "resolver/vpc")
    assert p.resolver("vpc") == h and p.resolver("nope") is None


def test_no_internet_no_resolver_and_the_default_domain(tmp_path):
    assert plan_of(path=REPO / "scenarios" / "default.yaml").resolvers == ()
    d = data()
    del d["cloud"]["internet"]["domain"]
    assert plan_from(tmp_path, d).internet.domain == "example.com"      # RFC 2606


def test_two_vpcs_have_a_resolver_each_at_the_same_addresses(tmp_path):
    d = data()
    d["cloud"]["vpcs"].append({"name": "vpc-b", "cidr": "10.1.0.0/16",
                               "vswitches": [{"name": "vsw-b", "zone": "zone-a", "cidr": "10.1.1.0/24"}]})
    p = plan_from(tmp_path, d)
    assert [(h.key, h.ip, h.bridge, h.veth) for h in p.resolvers] == [
        ("resolver/vpc", "100.100.2.136", "kv-vr0", "kvd0"), ("resolver/vpc-b", "100.100.2.136", "kv-vr1", "kvd1")]


@pytest.mark.parametrize("domain", ["example.io", "google.com", "examplecom"])
def test_the_domain_must_be_reserved(tmp_path, domain):
    d = data()
    d["cloud"]["internet"]["domain"] = domain
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.internet.domain"), f, domain, line_of(text, f"domain: {domain}"),
          "reserved for documentation or testing", "rfc 2606", "no emulated name is a real one")


@pytest.mark.parametrize("domain", ["test", "a.example.org", "lab.home.arpa"])
def test_reserved_domains_and_their_subdomains_are_taken(tmp_path, domain):
    d = data()
    d["cloud"]["internet"]["domain"] = domain
    assert plan_from(tmp_path, d).internet.domain == domain


def test_the_domain_must_be_outside_the_cluster_domain(tmp_path):
    d = data()
    d["cluster"]["dns"] = {"clusterDomain": "cluster.test"}
    d["cloud"]["internet"]["domain"] = "inet.cluster.test"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.internet.domain"), f, "inet.cluster.test", line_of(text, "domain: inet.cluster.test"),
          "inside the cluster domain cluster.test", "without asking the vpc's resolver")


@pytest.mark.parametrize("bad", ["Example.COM", "bad_name.test", ".test"])
def test_the_domain_is_a_dns_name(tmp_path, bad):
    d = data()
    d["cloud"]["internet"]["domain"] = bad
    problems, f, text = refuse(tmp_path, d)
    assert the(problems, "cloud.internet.domain").value == bad


@pytest.mark.parametrize("key,cidr,mode", [("podCIDR", "100.100.0.0/16", "vxlan"),
                                           ("serviceCIDR", "100.100.2.0/24", "eni")])
def test_cluster_ranges_must_leave_the_vpc_dns_alone(tmp_path, key, cidr, mode):
    d = data()
    d["cluster"][key] = cidr
    d["cluster"]["mode"] = mode
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, f"cluster.{key}"), f, cidr, line_of(text, f"{key}: {cidr}"), "100.100.2.0/24",
          "100.100.2.136 and 100.100.2.138", "100.64.0.0/10")


def test_without_an_internet_the_cluster_may_use_that_range(tmp_path):
    d = data()
    for key in ("internet", "eips", "natGateways"):
        del d["cloud"][key]
    d["cloud"]["vpcs"][0]["routeTable"] = {"routes": []}
    d["cluster"]["podCIDR"] = "100.100.0.0/16"
    d["expect"] = [e for e in d["expect"] if "resolver/vpc" not in (e["from"], e["to"])]
    assert plan_from(tmp_path, d).resolvers == ()


def test_an_expectation_naming_a_resolver_needs_an_internet(tmp_path):
    d = data()
    for key in ("internet", "eips", "natGateways"):
        del d["cloud"][key]
    d["cloud"]["vpcs"][0]["routeTable"] = {"routes": []}
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "expect[0].to"), f, "resolver/vpc", line_of(text, "to: resolver/vpc"),
          "no such endpoint", "resolver/<vpc> (a vpc's dns, with cloud.internet)")


# ----------------------------------------------------------------------- flows and the evaluator
@pytest.mark.parametrize("mode", MODES)
def test_the_vrouter_flows_keep_to_the_declared_pipeline(mode):
    for f in compile_plan(plan_of(mode))["kv-vr0"].flows:
        assert all(t in VROUTER.by_id(f.table).next for t in targets(f)), f.to_ofctl()


def delivered(net: Network, src, ip: str, port: int, proto: str) -> set[str]:
    return {e.host for e in net.send(src, ip, port, proto) if e.kind == "delivered"}


CLIENTS = ("pod/default/client", "pod/kube-system/kube-dns-0", "ecs/ecs-client", "ecs/node-1", "ecs/ecs-nodns")


@pytest.mark.parametrize("mode", MODES)
def test_dns_and_only_dns_reaches_the_resolver_as_the_evaluator_says(mode):
    p = plan_of(mode)
    net = Network(p)
    resolver = p.host("resolver/vpc")
    for key in CLIENTS:
        src = p.host(key)
        for ip in VPC_DNS:
            for port, proto in ((53, "udp"), (53, "tcp"), (80, "tcp"), (5353, "udp"), (8080, "tcp")):
                v = reach(p, src, resolver, port, proto)
                got = delivered(net, src, ip, port, proto)
                assert got == ({"resolver/vpc"} if v.allowed else set()), (mode, key, ip, port, proto, v.reason)
                assert v.allowed == (port == 53 and key != "ecs/ecs-nodns"), (key, port, v.reason)


@pytest.mark.parametrize("mode", MODES)
def test_the_client_address_the_resolver_sees(mode):
    p = plan_of(mode)
    net = Network(p)
    pod = p.host("pod/default/client")
    (end,) = [e for e in net.send(pod, VPC_DNS[0], 53, "udp") if e.kind == "delivered"]
    want = pod.ip if mode == "eni" else p.node("node-2").ip      # masqueraded to the node in the overlay modes
    assert end.packet["ipv4_src"] == want == reach(p, pod, p.host("resolver/vpc"), 53, "udp").seen_source


def test_the_evaluator_names_why_it_is_refused():
    p = plan_of()
    r = p.host("resolver/vpc")
    assert "answers DNS only" in reach(p, p.host("ecs/ecs-client"), r, 80, "tcp").reason
    assert "sg-nodns" in reach(p, p.host("ecs/ecs-nodns"), r, 53, "udp").reason
    assert "opens no connection" in reach(p, r, p.host("pod/default/web"), 8080, "tcp").reason
    assert "internet does not route it" in reach(p, p.host("inet/server"), r, 53, "udp").reason


def test_the_resolver_sends_nothing_but_dns_answers():
    p = plan_of()
    net = Network(p)
    r = p.host("resolver/vpc")
    for key, port in (("pod/default/web", 8080), ("ecs/ecs-client", 22), ("inet/server", 80)):
        ends = net.send(r, p.host(key).ip, port, "tcp")
        assert [e.kind for e in ends] == ["dropped"], key
        assert ends[0].path[-1][1].feature == "resolver" and ends[0].path[-1][0] == "kv-vr0"


def answer(p: Plan, src_ip: str, dst_ip: str, sport: int = 53, proto: str = "udp") -> dict:
    r = p.host("resolver/vpc")
    l4 = {"udp": 17, "tcp": 6}[proto]
    return {"eth_type": 0x0800, "eth_src": r.mac, "eth_dst": r.gateway_mac, "ipv4_src": src_ip, "ipv4_dst": dst_ip,
            "ip_proto": l4, f"{proto}_src": sport, f"{proto}_dst": 40000, "in_port": OFPORT_VROUTER_RESOLVER}


@pytest.mark.parametrize("ip", VPC_DNS)
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_an_answer_is_routed_to_the_asker_and_a_forged_one_is_not(ip, proto):
    p = plan_of()
    vr = FakeOFTable.of(compile_plan(p)["kv-vr0"])
    ecs = p.host("ecs/ecs-client")
    vsw = p.vswitch(ecs.vswitch)
    w = vr.walk(answer(p, ip, ecs.ip, proto=proto))
    assert w.last.actions[-1].port == vsw.vrouter_port and w.packet["eth_dst"] == ecs.mac
    # twins: from another port, from another address of the namespace, not from port 53
    assert vr.walk(answer(p, ip, ecs.ip, sport=5353, proto=proto)).last.actions == ()
    assert vr.walk(answer(p, "100.100.2.1", ecs.ip, proto=proto)).last.actions == ()


def test_the_vrouter_answers_arp_for_its_address_on_the_resolvers_port_only():
    p = plan_of()
    vr = FakeOFTable.of(compile_plan(p)["kv-vr0"])
    arp = {"eth_type": 0x0806, "arp_op": 1, "arp_tpa": "100.100.2.1", "arp_spa": VPC_DNS[0],
           "eth_src": p.host("resolver/vpc").mac, "arp_sha": p.host("resolver/vpc").mac}
    w = vr.walk({**arp, "in_port": OFPORT_VROUTER_RESOLVER})
    assert w.packet["arp_sha"] == p.host("resolver/vpc").gateway_mac and w.packet["arp_op"] == 2
    assert vr.walk({**arp, "in_port": 1}).missed, "not on a vSwitch's port"


def test_nothing_from_the_edge_reaches_the_resolver():
    p = plan_of()
    vr = FakeOFTable.of(compile_plan(p)["kv-vr0"])
    pkt = {"eth_type": 0x0800, "ipv4_src": "198.18.0.2", "ipv4_dst": VPC_DNS[0], "ip_proto": 17, "udp_src": 40000,
           "udp_dst": 53, "in_port": OFPORT_VROUTER_EDGE}
    w = vr.walk(pkt)
    assert w.last.actions == () and w.last.feature == "resolver"


def test_without_an_internet_the_vrouters_flows_are_unchanged():
    flows = compile_plan(plan_of(path=REPO / "scenarios" / "default.yaml"))
    assert not any(f.feature == "resolver" for fs in flows.values() for f in fs.flows)


# ------------------------------------------------------------------------- the builder's side
def test_the_internet_zone_and_an_instances_resolv_conf():
    hosts = [SimpleNamespace(name="server", ip="198.18.0.2"), SimpleNamespace(name="client", ip="198.18.0.3")]
    doc = internet_zone(hosts, "Example.NET")
    assert doc["domain"] == "example.net"
    assert doc["records"] == [{"name": "server.example.net.", "type": "A", "value": "198.18.0.2"},
                              {"name": "client.example.net.", "type": "A", "value": "198.18.0.3"}]
    assert vpc_resolv_conf(VPC_DNS) == ("options timeout:2 attempts:3 rotate single-request-reopen\n"
                                        "nameserver 100.100.2.136\nnameserver 100.100.2.138\n")


def test_pods_keep_cluster_first_and_instances_get_the_vpc_dns():
    p = plan_of()
    confs = dict((h.key, text) for h, text in builder_dns.resolv_confs(p, None))
    assert "nameserver 172.21.0.10" in confs["pod/default/client"] and "ndots:5" in confs["pod/default/client"]
    for key in ("ecs/node-1", "ecs/ecs-client", "ecs/ecs-nodns"):
        assert confs[key] == vpc_resolv_conf(VPC_DNS)
    assert not any(k.startswith(("inet/", "resolver/")) for k in confs)
    # pods added to a running scenario get theirs alone; without an internet, instances keep the machine's
    assert [h.key for h, _ in builder_dns.resolv_confs(p, (p.host("pod/default/web"),))] == ["pod/default/web"]
    plain = plan_of(path=REPO / "scenarios" / "default.yaml")
    assert {h.kind for h, _ in builder_dns.resolv_confs(plain, None)} == {"pod"}


def test_the_command_lines_of_the_cluster_dns_and_the_resolver(tmp_path):
    p = plan_of()
    rundir = RunDir(str(tmp_path))
    dns = builder_dns.daemon_command(p, rundir, p.host("pod/kube-system/kube-dns-0"), "READY")
    assert dns[dns.index("--upstream") + 1] == "100.100.2.136" and dns.count("--upstream") == 2
    res = builder_dns.daemon_command(p, rundir, p.host("resolver/vpc"), "READY")
    assert "--resolver" in res and "--upstream" not in res
    assert [res[i + 1] for i, a in enumerate(res) if a == "--listen"] == list(VPC_DNS)
    assert res[res.index("--zone") + 1] == rundir.resolver_zone and res[res.index("--log") + 1].endswith("resolver-vpc.log")
    plain = plan_of(path=REPO / "scenarios" / "default.yaml")
    dns_pod = next(h for h in plain.pods if h.app == "dns")
    assert "--upstream" not in builder_dns.daemon_command(plain, rundir, dns_pod, "READY")


def test_the_zones_are_written_and_checked(tmp_path):
    import json
    p = plan_of()
    rundir = RunDir(str(tmp_path))
    builder_dns.write_zones(p, rundir)
    doc = json.loads(Path(rundir.resolver_zone).read_text())
    assert doc["records"] == [{"name": "server.example.net.", "type": "A", "value": p.host("inet/server").ip}]
    assert Path(rundir.dns_zone).exists()


class Shell:
    def __init__(self, answer: str = "mounted\n"):
        self.commands, self.answer = [], answer

    def cmd(self, text: str) -> str:
        self.commands.append(text)
        return self.answer


class Ledger:
    def __init__(self):
        self.entries = []

    def record(self, kind, *names, token=""):
        self.entries += [(kind, str(n)) for n in names]


def test_each_resolv_conf_is_recorded_written_and_mounted(tmp_path, monkeypatch):
    etc = tmp_path / "etc-netns"
    monkeypatch.setattr(builder_dns, "NETNS_ETC", str(etc))
    p = plan_of()
    rundir, ledger = RunDir(str(tmp_path / "run")), Ledger()
    confs = builder_dns.resolv_confs(p, None)
    shells = {h.key: Shell() for h, _ in confs}
    builder_dns.give_resolv_confs(rundir, ledger, shells, confs)
    ecs = p.host("ecs/ecs-client")
    assert (etc / ecs.netns / "resolv.conf").read_text() == vpc_resolv_conf(VPC_DNS)
    assert Path(rundir.resolv(ecs.netns)).read_text() == vpc_resolv_conf(VPC_DNS)
    assert shells[ecs.key].commands == [f"mount --bind {rundir.resolv(ecs.netns)} /etc/resolv.conf && echo mounted"]
    assert ("emptydir", str(etc)) in ledger.entries and ("file", str(etc / ecs.netns)) in ledger.entries
    shells[ecs.key] = Shell("mount: permission denied")
    with pytest.raises(Exception, match="could not give ecs/ecs-client its resolv.conf"):
        builder_dns.give_resolv_confs(rundir, ledger, shells, [(ecs, "x")])


POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "client-dns-only", "namespace": "default"},
          "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "100.100.2.136/32"}}],
                               "ports": [{"protocol": "UDP", "port": 53}]}]}}


@pytest.mark.parametrize("mode", MODES)
def test_a_pods_networkpolicy_egress_applies_to_the_resolver_as_the_evaluator_says(tmp_path, mode):
    d = data()
    d["manifests"].append(POLICY)
    p = plan_from(tmp_path, d, mode)
    net, pod, r = Network(p), p.host("pod/default/client"), p.host("resolver/vpc")
    for ip, port, proto, want in ((VPC_DNS[0], 53, "udp", True), (VPC_DNS[0], 53, "tcp", False),
                                  (VPC_DNS[1], 53, "udp", False)):
        got = delivered(net, pod, ip, port, proto) == {"resolver/vpc"}
        v = reach(p, pod, r if ip == VPC_DNS[0] else r.model_copy(update={"ip": ip}), port, proto)
        assert got == v.allowed == want, (ip, port, proto, v.reason)


def test_explain_takes_either_address_of_the_resolver(tmp_path):
    from kubevpc.evaluator.explain import explain
    d = data()
    d["manifests"].append(POLICY)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    p = make_plan(load(str(path)), "kv")
    assert explain(p, "pod/default/client", VPC_DNS[0], 53, "udp").allowed
    second = explain(p, "pod/default/client", VPC_DNS[1], 53, "udp")
    assert not second.allowed and "NetworkPolicy" in second.reason
    assert explain(p, "ecs/ecs-client", VPC_DNS[1], 53, "tcp").allowed
