"""A NAT gateway's DNAT entries and EIPs bound to pods (tests/e2e/data/dnat.yaml): every validation
error with file, line and value; the plan while pods come and go; the edge's flows; and the flows
against the evaluator end to end (tests/unit/netsim.py beside `kubevpc explain`). Expected
addresses and words are written out by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.compile import compile_plan
from controller.flows import Ct, Nat
from controller.pipeline import EDGE
from kubevpc.evaluator.explain import explain
from kubevpc.lab import changes
from kubevpc.planning import Plan, make_plan
from kubevpc.scenario.load import load

from .netsim import Network
from .problems import check, line_of, the
from .test_validation import refuse

SCENARIO = Path(__file__).resolve().parents[1] / "e2e" / "data" / "dnat.yaml"
RUN = "kvd"
WEB, MAP, GAME, VOIP, CLIENT = "192.168.2.1", "192.168.2.2", "192.168.1.3", "192.168.1.4", "198.18.0.2"
NGW, DNAT, MAPPED, POD_EIP = "198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"
POD_EIP_KEY = "k8s.aliyun.com/pod-eip-instanceid"


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def dnat(d: dict) -> list:
    return d["cloud"]["natGateways"][0]["dnat"]


def manifest(d: dict, name: str) -> dict:
    return next(m for m in d["manifests"] if m["metadata"]["name"] == name)


def without_pods(d: dict) -> dict:
    """The scenario as vxlan and vpc-route take it: no pod target, no pod EIP."""
    d["cloud"]["natGateways"][0]["dnat"] = [e for e in dnat(d) if "pod" not in e]
    del manifest(d, "voip")["metadata"]["annotations"]
    return d


def plan_of(tmp_path: Path, d: dict, mode: str | None = None) -> Plan:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return make_plan(load(str(path), mode=mode), RUN)


_plans: dict[str, Plan] = {}


def eni() -> Plan:
    if "eni" not in _plans:
        _plans["eni"] = make_plan(load(str(SCENARIO)), RUN)
    return _plans["eni"]


# ======================================================================================= planning
def test_the_scenario_plans_its_entries_and_the_pods_eip():
    p = eni()
    (gw,) = p.nat_gateways
    assert [(d.name, d.public_ip, d.protocol, d.external_port, d.target, d.internal_ip, d.internal_port)
            for d in gw.dnat] == [
        ("web", DNAT, "tcp", 80, "ecs/ecs-web", WEB, 8080), ("web-closed", DNAT, "tcp", 81, "ecs/ecs-web", WEB, 8081),
        ("dns", DNAT, "udp", 53, "ecs/ecs-web", WEB, 53),        # internalPort: the external one
        ("game", DNAT, "tcp", 8080, "pod/default/game", GAME, 8080),
        ("game-closed", DNAT, "tcp", 9090, "pod/default/game", GAME, 9090),
        ("map", MAPPED, "any", 0, "ecs/ecs-map", MAP, 0)]
    eip = next(e for e in p.eips if e.name == "eip-pod")
    assert (eip.ip, eip.vpc, eip.bound, eip.target, eip.private_ip) == (POD_EIP, "vpc", "pod", "pod/default/voip", VOIP)


def test_an_entry_may_name_its_target_by_address_and_takes_tcp_udp_any_in_either_case(tmp_path):
    d = data()
    dnat(d)[0] = {"eip": "eip-dnat", "externalPort": 80, "ipProtocol": "TCP", "internalIp": WEB, "internalPort": 8080}
    dnat(d)[5]["ipProtocol"], dnat(d)[5]["externalPort"] = "Any", "Any"
    gw = plan_of(tmp_path, d).nat_gateways[0]
    assert (gw.dnat[0].name, gw.dnat[0].protocol, gw.dnat[0].target) == ("dnat-0", "tcp", "ecs/ecs-web")
    assert (gw.dnat[5].protocol, gw.dnat[5].external_port) == ("any", 0)


@pytest.mark.parametrize("mode, where", [("vxlan", "an overlay address, behind VXLAN"),
                                         ("vpc-route", "an address of the pod CIDR, behind its node's route")])
def test_pods_are_targets_in_eni_mode_only(tmp_path, mode, where):
    problems, f, text = refuse(tmp_path, data(), mode)
    check(the(problems, "cloud.natGateways[0].dnat[3].pod"), f, "default/game", line_of(text, "pod: default/game"),
          "a DNAT entry to a pod", f"in {mode} mode a pod has no address of the VPC", where, "Terway feature",
          "expected cluster.mode eni")
    check(the(problems, f"manifests[1].metadata.annotations.{POD_EIP_KEY}"), f, "eip-pod", line_of(text, POD_EIP_KEY),
          "an EIP bound to a pod", f"in {mode} mode", "Terway feature")
    assert len(problems) == 3                          # and game-closed; DNAT to instances is taken in every mode
    assert make_plan(load(str(_write(tmp_path, without_pods(data()))), mode=mode), RUN).nat_gateways[0].dnat


def _write(tmp_path: Path, d: dict) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.mark.parametrize("change, path, value, words", [
    (lambda e: e.update(eip="eip-pod"), "eip", "eip-pod", ["expected an EIP bound to NAT gateway ngw",
                                                           "eip-ngw, eip-dnat, eip-map"]),
    (lambda e: e.update(pod="default/game"), "", None, ["exactly one of instance, pod, internalIp"]),
    (lambda e: e.pop("instance"), "", None, ["exactly one of instance, pod, internalIp"]),
    (lambda e: e.pop("externalPort"), "externalPort", None, ["expected a port, 1 to 65535, with ipProtocol tcp"]),
    (lambda e: e.update(externalPort="any"), "externalPort", "any", ["expected a port", "ipProtocol any"]),
    (lambda e: e.update(internalPort="any"), "internalPort", "any", ["expected a port, 1 to 65535"]),
    (lambda e: e.update(instance="nobody"), "instance", "nobody", ["expected an ECS instance of VPC vpc"]),
    (lambda e: (e.pop("instance"), e.update(internalIp="10.0.0.1")), "internalIp", "10.0.0.1",
     ["expected an address of VPC vpc (192.168.0.0/16)"]),
    (lambda e: (e.pop("instance"), e.update(internalIp="192.168.2.77")), "internalIp", "192.168.2.77",
     ["no instance or pod holds this address", "must be used by an ECS instance"]),
    (lambda e: e.update(eip="eip-ngw"), "eip", "eip-ngw", ["used by SNAT entries too",
                                                           "port above 1024 there only with portBreak: true"]),
])
def test_a_dnat_entry_refused(tmp_path, change, path, value, words):
    """Each refusal names the entry's key and says what was expected (Alibaba's ForwardEntry rules)."""
    d = data()
    entry = dnat(d)[0]
    change(entry)
    if path == "eip":                   # port 80 is below 1024: the PortBreak rule needs a high port
        entry["externalPort"] = 8088
        value = value if value == "eip-pod" else 8088
        path = path if value == "eip-pod" else "externalPort"
    problems, f, text = refuse(tmp_path, d)
    at = "cloud.natGateways[0].dnat[0]" + (f".{path}" if path else "")
    p = the(problems, at)
    if value is not None:
        assert p.value == value, p
    for w in words:
        assert w.lower() in p.expected.lower(), p.expected
    assert p.file == str(f) and p.line is not None


@pytest.mark.parametrize("change, at, value, words", [
    (lambda d: dnat(d)[0].update(externalPort=53, ipProtocol="udp"), 2, "dns",
     "the same EIP, external port and protocol as DNAT entry web; expected each in one entry only"),
    (lambda d: dnat(d)[0].update(internalPort=8081), 1, "web-closed",
     "the same internal address, port and protocol as DNAT entry web; expected each in one entry only"),
])
def test_one_entry_for_each_eip_port_and_protocol_and_each_target_port_and_protocol(tmp_path, change, at, value, words):
    """Alibaba: ExternalIp, ExternalPort and IpProtocol unique; IpProtocol, InternalIp and InternalPort too."""
    d = data()
    change(d)
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, f"cloud.natGateways[0].dnat[{at}]"), f, value, line_of(text, f"name: {value}"), words)


def test_port_break_lets_a_dnat_entry_share_the_snat_eip_above_1024(tmp_path):
    d = data()
    dnat(d)[0].update(eip="eip-ngw", externalPort=8088, portBreak=True)
    assert plan_of(tmp_path, d).nat_gateways[0].dnat[0].public_ip == NGW
    dnat(d)[0].update(portBreak=False, externalPort=1024)      # at or below 1024: no PortBreak needed
    assert plan_of(tmp_path, d).nat_gateways[0].dnat[0].external_port == 1024


def test_ip_mapping_takes_every_port_of_its_eip_and_of_its_target(tmp_path):
    d = data()
    dnat(d).append({"name": "map-ssh", "eip": "eip-map", "externalPort": 2222, "ipProtocol": "tcp",
                    "instance": "ecs-web", "internalPort": 22})
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.natGateways[0].dnat[6]"), f, "map-ssh", line_of(text, "name: map-ssh"),
          "the same EIP, external port and protocol as DNAT entry map", "an IP mapping takes them all")
    d = data()
    dnat(d)[5]["eip"] = "eip-ngw"
    problems, f, text = refuse(tmp_path, d)
    assert "IP mapping (ipProtocol any) takes every port of EIP eip-ngw" in the(
        problems, "cloud.natGateways[0].dnat[5].eip").expected
    d = data()
    dnat(d)[5]["externalPort"] = 22
    problems, f, text = refuse(tmp_path, d)
    assert "ipProtocol any is IP mapping" in the(problems, "cloud.natGateways[0].dnat[5].externalPort").expected
    d = data()
    dnat(d).append({"name": "map2", "eip": "eip-dnat", "externalPort": 2222, "ipProtocol": "tcp",
                    "instance": "ecs-map", "internalPort": 22})
    problems, f, text = refuse(tmp_path, d)
    assert "internal address, port and protocol as DNAT entry map" in the(problems, "cloud.natGateways[0].dnat[6]").expected


def test_a_target_with_an_eip_of_its_own_is_refused(tmp_path):
    d = data()
    d["cloud"]["eips"].append({"name": "eip-web", "instance": "ecs-web"})
    problems, f, text = refuse(tmp_path, d)
    for j in (0, 1, 2):
        assert "ecs-web has EIP eip-web bound" in the(problems, f"cloud.natGateways[0].dnat[{j}]").expected
    d = data()
    dnat(d)[3]["pod"] = "voip"
    problems, f, text = refuse(tmp_path, d)
    p = the(problems, "cloud.natGateways[0].dnat[3]")
    assert p.value == "pod/default/voip" and "has EIP eip-pod bound" in p.expected
    assert "only to an instance without an EIP" in p.expected


def test_pod_targets_must_exist_and_have_their_own_network(tmp_path):
    d = data()
    dnat(d)[3]["pod"] = "shop/game"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, "cloud.natGateways[0].dnat[3].pod"), f, "shop/game", line_of(text, "pod: shop/game"),
          "no such pod", "default/game")
    d = data()
    manifest(d, "game")["spec"]["hostNetwork"] = True
    problems, f, text = refuse(tmp_path, d)
    assert "hostNetwork has its node's address" in the(problems, "cloud.natGateways[0].dnat[3].pod").expected


def test_entry_names_are_unique_in_a_gateway(tmp_path):
    d = data()
    dnat(d)[1]["name"] = "web"
    problems, f, text = refuse(tmp_path, d)
    assert "duplicate DNAT entry of ngw name" in the(problems, "cloud.natGateways[0].dnat[1].name").expected


@pytest.mark.parametrize("key, value", [("ipProtocol", "icmp"), ("externalPort", "80"), ("externalPort", 70000)])
def test_the_schema_refuses_other_protocols_and_ports(tmp_path, key, value):
    d = data()
    dnat(d)[0][key] = value
    problems, f, text = refuse(tmp_path, d)
    assert the(problems, f"cloud.natGateways[0].dnat[0].{key}").value == value


# ------------------------------------------------------------------------------------ pod EIPs
def test_a_pod_eip_must_be_a_free_eip_of_the_scenario(tmp_path):
    d = data()
    manifest(d, "voip")["metadata"]["annotations"][POD_EIP_KEY] = "eip-other"
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, f"manifests[1].metadata.annotations.{POD_EIP_KEY}"), f, "eip-other",
          line_of(text, "eip-other"), "no such EIP", "['eip-pod']")
    manifest(d, "voip")["metadata"]["annotations"][POD_EIP_KEY] = "eip-ngw"
    problems, f, text = refuse(tmp_path, d)
    assert "EIP eip-ngw is bound to natgw ngw; expected an EIP bound to nothing" in the(
        problems, f"manifests[1].metadata.annotations.{POD_EIP_KEY}").expected


def test_a_pod_eip_is_for_one_pod_not_a_deployment_of_several(tmp_path):
    d = data()
    template = copy.deepcopy(manifest(d, "voip"))
    del template["spec"]["nodeName"]
    d["manifests"][1] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "voip"},
                         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "voip"}}, "template": template}}
    problems, f, text = refuse(tmp_path, d)
    check(the(problems, f"manifests[1].spec.template.metadata.annotations.{POD_EIP_KEY}"), f, "eip-pod",
          line_of(text, POD_EIP_KEY), "EIP eip-pod is bound to pod/default/voip-0 already", "one pod per EIP")
    d["manifests"][1]["spec"]["replicas"] = 1
    assert next(e for e in plan_of(tmp_path, d).eips if e.name == "eip-pod").target == "pod/default/voip-0"


@pytest.mark.parametrize("annotations, key, words", [
    ({"k8s.aliyun.com/pod-with-eip": "true"}, "k8s.aliyun.com/pod-with-eip", "kubevpc does not allocate EIPs"),
    ({POD_EIP_KEY: "eip-pod", "network.alibabacloud.com/pod-eip-instanceid": "eip-ngw"},
     "network.alibabacloud.com/pod-eip-instanceid", "expected the same EIP in both annotations"),
])
def test_pod_eip_annotations_refused(tmp_path, annotations, key, words):
    d = data()
    manifest(d, "voip")["metadata"]["annotations"] = annotations
    problems, f, text = refuse(tmp_path, d)
    assert words in the(problems, f"manifests[1].metadata.annotations.{key}").expected


def test_a_host_network_pod_has_no_eip_of_its_own_and_the_newer_annotation_works(tmp_path):
    d = data()
    manifest(d, "voip")["spec"]["hostNetwork"] = True
    problems, f, text = refuse(tmp_path, d)
    assert "hostNetwork has its node's address" in the(problems, f"manifests[1].metadata.annotations.{POD_EIP_KEY}").expected
    d = data()
    manifest(d, "voip")["metadata"]["annotations"] = {"network.alibabacloud.com/pod-eip-instanceid": "eip-pod"}
    assert next(e for e in plan_of(tmp_path, d).eips if e.name == "eip-pod").target == "pod/default/voip"


# ================================================================================ while running
def _replan(loaded, plan: Plan, ref: str, terminating: frozenset[str] = frozenset()) -> Plan:
    """As Lab.delete does: the pod's manifest gone (or, for a Deployment's pod, the pod deleted)."""
    manifests, deleted = changes.deleted(loaded.manifests, plan, ref)
    return changes.replan(loaded, plan, RUN, manifests, {}, {}, terminating, deleted).plan


def test_a_deleted_pod_leaves_its_eip_unbound_and_its_dnat_entries_without_target():
    loaded, before = load(str(SCENARIO)), eni()
    after = _replan(loaded, before, "pod/default/voip")
    eip = next(e for e in after.eips if e.name == "eip-pod")
    assert (eip.bound, eip.vpc, eip.target) == ("", "", "")
    edge = compile_plan(after)[after.edge("vpc").bridge].flows
    assert not [f for f in edge if POD_EIP in f.to_ofctl() or VOIP in f.to_ofctl()]
    router = compile_plan(after)[after.internet.bridge].flows
    assert not [f for f in router if POD_EIP in f.to_ofctl()]
    assert "198.19.0.4 is held by nobody" in explain(after, "inet/client", POD_EIP, 8080).reason
    # the game pod named by two DNAT entries: gone, the entries stay without an address and forward nothing
    after = _replan(loaded, before, "pod/default/game")
    game = next(d for d in after.nat_gateways[0].dnat if d.name == "game")
    assert (game.target, game.internal_ip) == ("pod/default/game", "")
    assert not [f for f in compile_plan(after)[after.edge("vpc").bridge].flows if GAME in f.to_ofctl()]
    e = explain(after, "inet/client", "eip/eip-dnat", 8080)
    assert e.allowed is False and "forwards to pod/default/game, which is gone" in e.reason


def test_a_terminating_pod_keeps_its_eip_and_its_replacement_gets_it_once_it_is_gone(tmp_path):
    """Alibaba: the EIP is detached after the pod exits and cannot be used by a new pod meanwhile."""
    d = data()
    template = copy.deepcopy(manifest(d, "voip"))
    d["manifests"][1] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "voip"},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "voip"}}, "template": template}}
    path = _write(tmp_path, d)
    loaded = load(str(path))
    running = make_plan(loaded, RUN)
    assert next(e for e in running.eips if e.name == "eip-pod").target == "pod/default/voip-0"
    dying = _replan(loaded, running, "pod/default/voip-0", terminating=frozenset({"pod/default/voip-0"}))
    assert {h.key: h.terminating for h in dying.pods if "voip" in h.key} == {"pod/default/voip-0": True,
                                                                             "pod/default/voip-1": False}
    eip = next(e for e in dying.eips if e.name == "eip-pod")
    assert (eip.target, eip.private_ip) == ("pod/default/voip-0", running.host("pod/default/voip-0").ip)
    gone = changes.replan(loaded, dying, RUN, loaded.manifests, {}, {}).plan        # the grace period is over
    eip = next(e for e in gone.eips if e.name == "eip-pod")
    assert (eip.target, eip.private_ip) == ("pod/default/voip-1", gone.host("pod/default/voip-1").ip)


# ========================================================================================= flows
def edge_flows(plan: Plan):
    return [f for f in compile_plan(plan)[plan.edge("vpc").bridge].flows if f.table == EDGE.table("translate")]


def test_the_edge_forwards_each_entry_and_the_pods_eip():
    dnats = {}
    for f in edge_flows(eni()):
        m = dict(f.match)
        for a in f.actions:
            if isinstance(a, Ct) and a.nat and a.nat.kind == "dst":
                dnats[(m["ipv4_dst"], m.get("ip_proto"), m.get("tcp_dst") or m.get("udp_dst"))] = (f.priority, a.nat)
    assert dnats == {(DNAT, 6, 80): (150, Nat("dst", WEB, 8080, 8080)), (DNAT, 6, 81): (150, Nat("dst", WEB, 8081, 8081)),
                     (DNAT, 17, 53): (150, Nat("dst", WEB, 53, 53)), (DNAT, 6, 8080): (150, Nat("dst", GAME, 8080, 8080)),
                     (DNAT, 6, 9090): (150, Nat("dst", GAME, 9090, 9090)),
                     (MAPPED, None, None): (150, Nat("dst", MAP)), (POD_EIP, None, None): (150, Nat("dst", VOIP))}
    snats = {dict(f.match).get("ipv4_src"): a.nat.ip for f in edge_flows(eni()) for a in f.actions
             if isinstance(a, Ct) and a.nat and a.nat.kind == "src" and f.priority == 150}
    assert snats == {MAP: MAPPED, VOIP: POD_EIP}     # the IP mapping and the pod's EIP beat the SNAT entries


# ========================================================================= against the evaluator
INBOUND = [(DNAT, 80, "tcp"), (DNAT, 81, "tcp"), (DNAT, 82, "tcp"), (DNAT, 53, "udp"), (DNAT, 8080, "tcp"),
           (DNAT, 9090, "tcp"), (MAPPED, 22, "tcp"), (MAPPED, 5000, "udp"), (POD_EIP, 8080, "tcp"),
           (POD_EIP, 9090, "tcp"), (NGW, 80, "tcp")]
OUTBOUND = ["pod/default/voip", "pod/default/client", "ecs/ecs-map", "ecs/ecs-web", "pod/default/game"]


def landed(plan: Plan, net: Network, src: str, ip: str, port: int, proto: str) -> dict[str, tuple[str, int]]:
    """Where the flows deliver the first packet, to a host listening there: {host key: (source, port)}."""
    got = {}
    for e in net.send(plan.host(src), ip, port, proto):
        if e.kind != "delivered":
            continue
        h = plan.host(e.host)
        to = e.packet.get("tcp_dst") or e.packet.get("udp_dst")
        if e.packet["ipv4_dst"] == h.ip and any(s.port == to and s.protocol.lower() == proto for s in plan.servers_at(h)):
            got[h.key] = (e.packet["ipv4_src"], to)
    return got


def expected(plan: Plan, src: str, ip: str, port: int, proto: str) -> dict[str, tuple[str, int]]:
    """Where the evaluator says it lands: {host key: (the client address it sees, the port)}."""
    e = explain(plan, src, ip, port, proto)
    if not e.allowed:
        return {}
    step = next(s.text for s in reversed(e.steps) if s.stage == "destination")
    key, addr = step.split()[0], step.split()[1]
    return {key: (e.seen_source, int(addr.split(":")[1].split("/")[0]))}


@pytest.mark.parametrize("mode", ["eni", "vxlan", "vpc-route"])
def test_the_flows_agree_with_the_evaluator(tmp_path, mode):
    plan = eni() if mode == "eni" else plan_of(tmp_path, without_pods(data()), mode)
    net = Network(plan)
    verdicts = {}
    for ip, port, proto in INBOUND:
        got, want = landed(plan, net, "inet/client", ip, port, proto), expected(plan, "inet/client", ip, port, proto)
        assert got == want, f"{ip}:{port}/{proto}: flows {got}, evaluator {want}"
        verdicts[(ip, port)] = bool(got)
    for src in [s for s in OUTBOUND if s in {h.key for h in plan.hosts}]:
        got, want = landed(plan, net, src, "198.18.0.3", 80, "tcp"), expected(plan, src, "198.18.0.3", 80, "tcp")
        assert got == want, f"{src}: flows {got}, evaluator {want}"
        verdicts[src] = got["inet/server"][0]
    assert verdicts[(DNAT, 80)] and verdicts[(MAPPED, 22)] and verdicts[(MAPPED, 5000)]
    assert not (verdicts[(DNAT, 81)] or verdicts[(DNAT, 82)] or verdicts[(NGW, 80)])
    assert verdicts["ecs/ecs-map"] == MAPPED and verdicts["ecs/ecs-web"] == NGW
    if mode == "eni":
        assert verdicts[(DNAT, 8080)] and verdicts[(POD_EIP, 8080)] and not verdicts[(DNAT, 9090)]
        assert not verdicts[(POD_EIP, 9090)]
        assert (verdicts["pod/default/voip"], verdicts["pod/default/client"]) == (POD_EIP, NGW)
    else:                                   # no pod EIP: voip leaves masqueraded to node-2, then SNATed
        assert (POD_EIP, 8080) in verdicts and not verdicts[(POD_EIP, 8080)]
        assert verdicts["pod/default/voip"] == NGW


def test_network_policy_applies_to_a_pod_behind_its_eip_and_a_dnat_entry(tmp_path):
    d = data()
    d["manifests"].append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "from-pods-only"},
                           "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}})
    plan = plan_of(tmp_path, d)
    net = Network(plan)
    for ip in (POD_EIP, DNAT):
        e = explain(plan, "inet/client", ip, 8080)
        assert e.allowed is False and e.reason.startswith("NetworkPolicy"), e.reason
        assert landed(plan, net, "inet/client", ip, 8080, "tcp") == {}
    assert explain(plan, "inet/client", DNAT, 80).allowed is True       # an instance: no NetworkPolicy


def test_a_deployment_naming_an_eip_outside_eni_mode_is_refused_once_not_once_a_replica(tmp_path):
    d = data()
    template = copy.deepcopy(manifest(d, "voip"))
    d["manifests"][1] = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "voip"},
                         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "voip"}}, "template": template}}
    problems, f, text = refuse(tmp_path, d, "vxlan")
    check(the(problems, f"manifests[1].spec.template.metadata.annotations.{POD_EIP_KEY}"), f, "eip-pod",
          line_of(text, POD_EIP_KEY), "in vxlan mode a pod has no address of the VPC")


def test_kubevpc_plan_lists_eips_and_nat_entries(capsys):
    """`kubevpc plan` (text) shows each EIP's binding and each NAT gateway's SNAT and DNAT entries."""
    from kubevpc.cli import main
    assert main(["plan", str(Path(__file__).resolve().parents[2] / "scenarios" / "dnat-eip.yaml"), "--mode", "eni"]) == 0
    text = capsys.readouterr().out
    assert "eip-rtc" in text and "pod pod/default/rtc-0" in text
    assert "DNAT web" in text and "198.19.0.1:80/tcp" in text and "ecs/ecs-web (192.168.1.3:8080)" in text
    assert "vSwitch vsw-pods (192.168.8.0/22)" in text
