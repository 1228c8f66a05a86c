"""Terway's configuration in eni mode (tests/e2e/data/terway.yaml): the eni-config ConfigMap and a
node's own (label terway-config), merged over it; PodNetworking over both; pod vSwitches tried in
order, the next taking pods once the first is full; and the errors a wrong configuration gets,
with file, line, value and what was expected. Expected values are written out by hand."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab import changes
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

from .problems import check, line_of, the
from .test_services import write

DATA = Path(__file__).resolve().parents[1] / "e2e" / "data" / "terway.yaml"
RUN = "kvtw"


def base() -> dict:
    return yaml.safe_load(DATA.read_text())


def plan_of(tmp_path: Path, data: dict, mode: str | None = None):
    return make_plan(load(str(write(tmp_path, data)), mode=mode), RUN)


def refused(tmp_path: Path, data: dict, mode: str | None = None):
    path = write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), RUN)
    return info.value.problems, path, path.read_text()


def manifest(data: dict, kind: str, name: str) -> dict:
    return next(m for m in data["manifests"] if m["kind"] == kind and m["metadata"]["name"] == name)


def conf(data: dict, name: str) -> dict:
    return json.loads(manifest(data, "ConfigMap", name)["data"]["eni_conf"])


def set_conf(data: dict, name: str, doc: dict) -> None:
    manifest(data, "ConfigMap", name)["data"]["eni_conf"] = json.dumps(doc)


def placed(plan, key: str) -> tuple:
    h = plan.host(key)
    return h.vswitch, h.ip, h.security_groups


# ============================================================================ per-node configuration
def test_a_labelled_node_takes_its_own_configmap_over_eni_config(tmp_path):
    plan = plan_of(tmp_path, base())
    assert placed(plan, "pod/default/pool-0") == ("vsw-pool", "192.168.30.1", ("sg-pool",))
    assert placed(plan, "pod/default/pool-3") == ("vsw-pool", "192.168.30.4", ("sg-pool",))
    assert placed(plan, "pod/default/cache-0") == ("vsw-pods-a", "192.168.10.3", ("sg-pods",))
    assert placed(plan, "pod/default/web") == ("vsw-pods-a", "192.168.10.4", ("sg-pods",))
    assert placed(plan, "pod/kube-system/kube-dns-0") == ("vsw-pods-a", "192.168.10.5", ("sg-pods",))
    # node-3 has an ENI (uplink) on its pods' vSwitch, not on eni-config's vsw-pods-b
    assert [u.vswitch for u in plan.node("node-3").uplinks] == ["vsw-b", "vsw-pool"]
    assert [u.vswitch for u in plan.node("node-1").uplinks] == ["vsw-a", "vsw-pods-a"]
    # where the vSwitch enforces the groups: the pool pods' attachments carry sg-pool
    [att] = [a for a in plan.attachments if a.owner == "pod/default/pool-1"]
    assert (att.vswitch, att.security_groups) == ("vsw-pool", ("sg-pool",))
    assert "192.168.30.2" in next(g for g in plan.groups if g.name == "sg-pool").members


def test_a_node_configmap_merges_key_by_key_and_podnetworking_wins(tmp_path):
    data = base()
    set_conf(data, "eni-config-pool", {"vswitches": {"zone-b": ["vsw-pool"]}})     # no groups of its own
    plan = plan_of(tmp_path, data)
    assert placed(plan, "pod/default/pool-0") == ("vsw-pool", "192.168.30.1", ("sg-pods",))
    # a PodNetworking selecting the pool pods: its groups and vSwitch, whatever the node's config
    manifest(data, "PodNetworking", "fixed")["spec"]["selector"] = {"podSelector": {"matchLabels": {"app": "pool"}}}
    manifest(data, "PodNetworking", "fixed")["spec"]["vSwitchOptions"] = ["vsw-pods-a", "vsw-pods-b"]
    manifest(data, "PodNetworking", "fixed")["spec"]["securityGroupIDs"] = ["sg-trusted"]
    plan = plan_of(tmp_path, data)
    assert placed(plan, "pod/default/pool-0") == ("vsw-pods-b", "192.168.20.1", ("sg-trusted",))
    assert placed(plan, "pod/default/db-0") == ("vsw-pods-a", "192.168.10.1", ("sg-pods",)), "no longer selected"


def test_without_eni_config_cluster_eni_and_else_the_nodes_own(tmp_path):
    data = base()
    data["manifests"] = [m for m in data["manifests"] if m["metadata"]["name"] != "eni-config"]
    data["cluster"]["eni"] = {"vswitches": ["vsw-pods-b", "vsw-pods-a"], "securityGroups": ["sg-trusted"]}
    plan = plan_of(tmp_path, data)
    assert placed(plan, "pod/default/cache-0") == ("vsw-pods-a", "192.168.10.3", ("sg-trusted",))
    assert placed(plan, "pod/default/pool-0") == ("vsw-pool", "192.168.30.1", ("sg-pool",)), "node-3's own still"
    del data["cluster"]["eni"]
    plan = plan_of(tmp_path, data)
    assert placed(plan, "pod/default/cache-0") == ("vsw-a", "192.168.1.7", ("sg-nodes",))   # after db-0, db-1


# ========================================================================== vSwitches in order
def test_the_next_vswitch_takes_pods_once_the_first_is_full(tmp_path):
    data = base()
    manifest(data, "Deployment", "pool")["spec"]["replicas"] = 6
    set_conf(data, "eni-config-pool", {"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]}, "security_group": "sg-pool"})
    plan = plan_of(tmp_path, data)
    assert [plan.host(f"pod/default/pool-{i}").ip for i in range(6)] == [
        "192.168.30.1", "192.168.30.2", "192.168.30.3", "192.168.30.4", "192.168.31.1", "192.168.31.2"]
    assert [u.vswitch for u in plan.node("node-3").uplinks] == ["vsw-b", "vsw-pool", "vsw-pool-2"]


def test_most_takes_the_vswitch_with_the_most_free_addresses(tmp_path):
    data = base()
    # Terway's eni_conf "ordered" sorts the vSwitches by free addresses (its code: ordered -> most)
    set_conf(data, "eni-config-pool", {"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]},
                                       "vswitch_selection_policy": "ordered"})
    plan = plan_of(tmp_path, data)
    assert {plan.host(f"pod/default/pool-{i}").vswitch for i in range(4)} == {"vsw-pool-2"}


def test_every_vswitch_full_is_an_error_naming_each_and_the_pod(tmp_path):
    data = base()
    manifest(data, "Deployment", "pool")["spec"]["replicas"] = 5
    problems, path, text = refused(tmp_path, data)
    [p] = problems
    check(p, path, "vsw-pool", line_of(text, "kind: Deployment") - 1, "vSwitch vsw-pool (192.168.30.0/29)",
          "no free address left for pod default/pool-4", "another pod vSwitch for zone zone-b",
          "ConfigMap kube-system/eni-config-pool")
    data["cloud"]["vpcs"][0]["vswitches"][5]["cidr"] = "192.168.31.0/29"
    set_conf(data, "eni-config-pool", {"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]}})
    manifest(data, "Deployment", "pool")["spec"]["replicas"] = 9
    problems, path, text = refused(tmp_path, data)
    [p] = problems
    assert p.value == ["vsw-pool", "vsw-pool-2"]
    assert "vSwitches vsw-pool (192.168.30.0/29), vsw-pool-2 (192.168.31.0/29) have no free address left for " \
           "pod default/pool-8" in p.expected


# =============================================================================== refusals
def test_wrong_vswitches_and_groups_in_a_configmap_are_refused(tmp_path):
    data = base()
    data["cloud"]["vpcs"].append({"name": "other", "cidr": "10.9.0.0/16",
                                  "vswitches": [{"name": "vsw-other", "zone": "zone-b", "cidr": "10.9.1.0/24"}]})
    data["cloud"]["securityGroups"].append({"name": "sg-other", "vpc": "other"})
    set_conf(data, "eni-config-pool", {"vswitches": {"zone-b": ["vsw-nope", "vsw-other", "vsw-pods-a"]},
                                       "security_group": "sg-nope", "security_groups": ["sg-pods", "sg-other"]})
    problems, path, text = refused(tmp_path, data)
    line = line_of(text, "eni_conf", after="name: eni-config-pool")
    at = "manifests[1].data.eni_conf"
    check(the(problems, f"{at}.vswitches.zone-b[0]"), path, "vsw-nope", line, "no such vSwitch", "vsw-pool-2")
    check(the(problems, f"{at}.vswitches.zone-b[1]"), path, "vsw-other", line, "VPC other",
          "the cluster's VPC vpc")
    check(the(problems, f"{at}.vswitches.zone-b[2]"), path, "vsw-pods-a", line, "zone zone-a",
          "listed under zone zone-b")
    check(the(problems, f"{at}.security_group"), path, "sg-nope", line, "no such security group")
    check(the(problems, f"{at}.security_groups[1]"), path, "sg-other", line, "the cluster's VPC vpc")
    assert len(problems) == 5


def test_a_document_that_is_not_terways_is_refused(tmp_path):
    data = base()
    manifest(data, "ConfigMap", "eni-config")["data"]["eni_conf"] = "{not json"
    manifest(data, "ConfigMap", "eni-config-pool")["data"]["eni_conf"] = json.dumps({"vswitches": ["vsw-pool"]})
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "manifests[0].data.eni_conf"), path, "<eni_conf>",
          line_of(text, "eni_conf"), "JSON object")
    check(the(problems, "manifests[1].data.eni_conf.vswitches"), path, ["vsw-pool"],
          line_of(text, "eni_conf", after="name: eni-config-pool"), "mapping")


def test_node_labels_name_nodes_of_the_cluster_and_configmaps_that_exist(tmp_path):
    data = base()
    data["cluster"]["nodeLabels"] = {"node-3": {"terway-config": "eni-config-gone"}, "ecs-other": {"a": "b"},
                                     "node-1": {"bad key!": "x"}}
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "cluster.nodeLabels.node-3.terway-config"), path, "eni-config-gone",
          line_of(text, "terway-config"), "no ConfigMap kube-system/eni-config-gone")
    check(the(problems, "cluster.nodeLabels.ecs-other"), path, "ecs-other", line_of(text, "ecs-other: {a: b}")
          if "ecs-other: {a: b}" in text else line_of(text, "ecs-other:", after="nodeLabels"), "no such node",
          "node-1")
    check(the(problems, "cluster.nodeLabels.node-1"), path, {"bad key!": "x"}, line_of(text, "node-1:", after="nodeLabels"),
          "not a valid Kubernetes label key")


def test_eni_config_and_cluster_eni_together_are_refused(tmp_path):
    data = base()
    data["cluster"]["eni"] = {"vswitches": ["vsw-pods-a"]}
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "cluster.eni"), path, {"vswitches": ["vsw-pods-a"]}, line_of(text, "eni:"),
          "either it or cluster.eni")


def test_terways_configuration_is_refused_outside_eni_mode(tmp_path):
    data = base()
    data["manifests"] = [m for m in data["manifests"] if m["kind"] != "PodNetworking"]
    problems, path, text = refused(tmp_path, data, mode="vpc-route")
    check(the(problems, "manifests[0].metadata.name"), path, "eni-config",
          line_of(text, "name: eni-config"), "eni mode only", "Flannel")
    check(the(problems, "cluster.nodeLabels.node-3.terway-config"), path, "eni-config-pool",
          line_of(text, "terway-config"), "eni mode only")
    # a ConfigMap that is not Terway's is taken in every mode, and ignored
    other = copy.deepcopy(base())
    other["manifests"] = [m for m in other["manifests"] if m["kind"] not in ("PodNetworking", "ConfigMap")]
    other["manifests"].append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                               "data": {"eni_conf": "not even json"}})
    del other["cluster"]["nodeLabels"]
    assert plan_of(tmp_path, other, mode="vxlan").pods


# ================================================================================= fixed IPs
INTRUDER = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}


def running(tmp_path: Path, data: dict | None = None):
    ld = load(str(write(tmp_path, data or base())))
    return ld, make_plan(ld, RUN)


def step(change, manifests=None, now: float = 0.0, deleted=frozenset()):
    """The next change of a running scenario (what Lab._change plans)."""
    return changes.replan(change.loaded, change.plan, RUN, change.loaded.manifests if manifests is None else manifests,
                          {}, {}, deleted=deleted, now=now)


def start(ld, plan):
    return changes.Replanned(ld, plan, [], [], {}, {})


def test_a_fixed_statefulset_pod_keeps_its_address_when_deleted_and_created_again(tmp_path):
    ld, plan = running(tmp_path)
    assert [(f.pod, f.ip, f.release_strategy, f.release_after, f.gone_since) for f in plan.fixed_ips] == [
        ("pod/default/db-0", "192.168.10.1", "TTL", 600.0, 0), ("pod/default/db-1", "192.168.10.2", "TTL", 600.0, 0)]
    manifests, deleted = changes.deleted(ld.manifests, plan, "pod/default/db-0")
    gone = step(start(ld, plan), manifests, now=1000.0, deleted=deleted)
    assert "pod/default/db-0" not in {h.key for h in gone.plan.pods}
    held = {f.pod: f for f in gone.plan.fixed_ips}["pod/default/db-0"]
    assert (held.ip, held.gone_since) == ("192.168.10.1", 1000.0)
    back = step(gone, now=1001.0)
    assert [h.key for h in back.added] == ["pod/default/db-0"]
    assert back.plan.host("pod/default/db-0").ip == "192.168.10.1"
    assert {f.pod: f.gone_since for f in back.plan.fixed_ips}["pod/default/db-0"] == 0


def test_nobody_takes_a_fixed_address_while_its_pod_is_gone_and_an_elastic_twin_gets_a_new_one(tmp_path):
    ld, plan = running(tmp_path)
    cache = plan.host("pod/default/cache-0").ip
    assert cache == "192.168.10.3"
    down = step(start(ld, plan), changes.scaled(changes.scaled(ld.manifests, "sts/db", 0), "sts/cache", 0), now=10.0)
    assert {f.pod for f in down.plan.fixed_ips if f.gone_since} == {"pod/default/db-0", "pod/default/db-1"}
    [intruder] = changes.parse_objects([INTRUDER])
    taken = step(down, changes.applied(down.loaded.manifests, [intruder]), now=20.0)
    assert taken.plan.host("pod/default/intruder").ip == cache, "the lowest free: not db-0's nor db-1's"
    up = step(taken, changes.scaled(changes.scaled(taken.loaded.manifests, "sts/db", 2), "sts/cache", 1), now=30.0)
    assert up.plan.host("pod/default/db-0").ip == "192.168.10.1" and up.plan.host("pod/default/db-1").ip == "192.168.10.2"
    assert up.plan.host("pod/default/cache-0").ip == "192.168.10.6", "Elastic: whatever is free"


def test_a_fixed_address_is_released_once_its_ttl_has_passed_and_never_with_never(tmp_path):
    data = base()
    manifest(data, "PodNetworking", "fixed")["spec"]["allocationType"]["releaseAfter"] = "5m0s"
    ld, plan = running(tmp_path, data)
    down = step(start(ld, plan), changes.scaled(ld.manifests, "sts/db", 1), now=1000.0)   # db-1 goes
    [intruder] = changes.parse_objects([dict(INTRUDER, spec={**INTRUDER["spec"], "nodeName": "node-2"})])
    held = step(down, changes.applied(down.loaded.manifests, [intruder]), now=1000.0 + 299)
    assert held.plan.host("pod/default/intruder").ip == "192.168.10.6"
    assert "pod/default/db-1" in {f.pod for f in held.plan.fixed_ips}
    again = step(down, changes.applied(down.loaded.manifests, [intruder]), now=1000.0 + 300)
    assert again.plan.host("pod/default/intruder").ip == "192.168.10.2", "released: db-1's address is free again"
    assert "pod/default/db-1" not in {f.pod for f in again.plan.fixed_ips}
    # Never: held for the whole run
    manifest(data, "PodNetworking", "fixed")["spec"]["allocationType"] = {"type": "Fixed", "releaseStrategy": "Never"}
    ld, plan = running(tmp_path, data)
    down = step(start(ld, plan), changes.scaled(ld.manifests, "sts/db", 1), now=1000.0)
    late = step(down, changes.applied(down.loaded.manifests, [intruder]), now=1e9)
    assert late.plan.host("pod/default/intruder").ip == "192.168.10.6"
    assert [(f.pod, f.release_strategy) for f in late.plan.fixed_ips if f.gone_since] == [("pod/default/db-1", "Never")]


def test_fixed_is_for_statefulset_pods_elastic_keeps_nothing(tmp_path):
    data = base()
    manifest(data, "PodNetworking", "fixed")["spec"]["selector"] = {"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["db", "pool", "cache"]}]}}
    ld, plan = running(tmp_path, data)
    assert {f.pod for f in plan.fixed_ips} == {"pod/default/db-0", "pod/default/db-1", "pod/default/cache-0"}
    manifest(data, "PodNetworking", "fixed")["spec"]["allocationType"] = {"type": "Elastic"}
    ld, plan = running(tmp_path, data)
    assert plan.fixed_ips == ()


def test_a_fixed_address_keeps_its_pod_in_its_zone(tmp_path):
    ld, plan = running(tmp_path)
    down = step(start(ld, plan), changes.scaled(ld.manifests, "sts/db", 1), now=10.0)
    sts = copy.deepcopy(manifest(base(), "StatefulSet", "db"))
    sts["spec"]["template"]["spec"]["nodeName"] = "node-3"
    [m] = changes.parse_objects([sts])
    with pytest.raises(ScenarioError) as info:
        step(down, changes.applied(down.loaded.manifests, [m]), now=20.0)
    text = str(info.value)
    assert "fixed address 192.168.10.2 is on vSwitch vsw-pods-a of zone zone-a, and node node-3 is in zone zone-b" \
        in text and "default/db-1" in text


def test_a_release_after_that_is_not_a_duration_is_refused(tmp_path):
    data = base()
    manifest(data, "PodNetworking", "fixed")["spec"]["allocationType"]["releaseAfter"] = "ten minutes"
    problems, path, text = refused(tmp_path, data)
    check(the(problems, "manifests[2].spec.allocationType"), path,
          {"type": "Fixed", "releaseStrategy": "TTL", "releaseAfter": "ten minutes"},
          line_of(text, "allocationType"), "is not a duration", "Go duration like 5m0s")


# ===================================================================== expansion while running
POOL2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "eni-config-pool", "namespace": "kube-system"},
         "data": {"eni_conf": json.dumps({"vswitches": {"zone-b": ["vsw-pool", "vsw-pool-2"]},
                                          "security_group": "sg-pool"})}}


def test_a_pod_vswitch_added_while_running_takes_new_pods_once_the_old_is_full(tmp_path):
    ld, plan = running(tmp_path)
    now = start(ld, plan)
    # vsw-pool is full: a fifth pool pod is refused, naming it, and nothing changes
    with pytest.raises(ScenarioError, match=r"vSwitch vsw-pool \(192.168.30.0/29\) has no free address left for "
                                            r"pod default/pool-4"):
        step(now, changes.scaled(ld.manifests, "deploy/pool", 5))
    # the node's ConfigMap gains vsw-pool-2: the running pods stay where they are, nothing is added
    [cm] = changes.parse_objects([POOL2])
    added = step(now, changes.applied(ld.manifests, [cm]))
    assert added.added == added.removed == added.uplinks == []
    assert added.plan.hosts == plan.hosts
    # now the fifth takes an address of vsw-pool-2, and node-3 gets an ENI (uplink) there
    grown = step(added, changes.scaled(added.loaded.manifests, "deploy/pool", 5))
    [pod] = grown.added
    assert (pod.key, pod.vswitch, pod.ip, pod.security_groups) == ("pod/default/pool-4", "vsw-pool-2", "192.168.31.1",
                                                                   ("sg-pool",))
    [(node, uplink)] = grown.uplinks
    assert node == "node-3" and (uplink.vswitch, uplink.ofport, uplink.vswitch_ofport) == ("vsw-pool-2", 4, 10)
    assert grown.plan.node("node-3").uplinks[:3] == plan.node("node-3").uplinks + (uplink,)
    [att] = [a for a in grown.plan.attachments if a.owner == "pod/default/pool-4"]
    assert (att.vswitch, att.ofport, att.port) == ("vsw-pool-2", 10, uplink.peer)
    # the uplink stays when its last pod goes (an ENI is not detached), and the next change keeps it
    shrunk = step(grown, changes.scaled(grown.loaded.manifests, "deploy/pool", 4))
    assert shrunk.uplinks == [] and shrunk.plan.node("node-3").uplinks == grown.plan.node("node-3").uplinks


def test_a_new_vswitch_port_takes_a_number_no_running_port_holds():
    from kubevpc.planning.context import VSwitchPorts
    plan = make_plan(load(str(DATA)), RUN)
    ports = VSwitchPorts(plan)
    held = {p.name: p.ofport for p in plan.bridge(plan.vswitch("vsw-a").bridge).ports}
    assert sorted(n for n in held.values() if n < 1000) == [1, 10, 11, 12, 13]
    assert ports.take("vsw-a", "kvtwe3") == held["kvtwe3"], "a running port keeps its number"
    assert ports.take("vsw-a", "kvtwnew") == 14 and ports.take("vsw-a", "kvtwnew2") == 15
    assert VSwitchPorts().take("vsw-a", "kvtwnew") == 10, "without a running plan: in order"


def test_a_change_that_would_detach_or_renumber_an_uplink_is_refused(tmp_path):
    ld, plan = running(tmp_path)
    node = plan.node("node-3")
    fewer = plan.model_copy(update={"nodes": tuple(n.model_copy(update={"uplinks": n.uplinks[:1]}) if n.name == "node-3"
                                                   else n for n in plan.nodes)})
    with pytest.raises(KubevpcError, match="node node-3's uplinks would change \\(vsw-b, vsw-pool -> vsw-b\\)"):
        changes.uplinks_added(plan, fewer)
    assert node.uplinks[1].vswitch == "vsw-pool"


def test_attaching_an_uplink_makes_the_veth_pair_and_both_ports_at_their_numbers(tmp_path, monkeypatch):
    from types import SimpleNamespace
    import topologies.uplinks as uplinks
    ld, plan = running(tmp_path)
    [cm] = changes.parse_objects([POOL2])
    added = step(start(ld, plan), changes.applied(ld.manifests, [cm]))
    grown = step(added, changes.scaled(added.loaded.manifests, "deploy/pool", 5))
    commands, recorded, buffered = [], [], []
    monkeypatch.setattr(uplinks, "sh", lambda cmd, stdin=None, timeout=60: commands.append((cmd, stdin)) or "")
    monkeypatch.setattr(uplinks, "no_ipv6", lambda names: None)
    builder = SimpleNamespace(offloads=SimpleNamespace(link_mtu=9216), _buffers=buffered.extend,
                              ledger=SimpleNamespace(record=lambda kind, *names: recorded.append((kind, names))))
    uplinks.add_uplinks(builder, grown.plan, grown.uplinks)
    [(node, u)] = grown.uplinks
    assert recorded == [("link", (u.port, u.peer))], "in the ledger before it exists"
    assert commands[0][1] == f"link add {u.port} mtu 9216 type veth peer name {u.peer} mtu 9216\n"
    vsctl = " ".join(commands[-1][0])
    n3, v2 = grown.plan.node("node-3").bridge, grown.plan.vswitch("vsw-pool-2").bridge
    assert f"add-port {n3} {u.port} -- set interface {u.port} ofport_request=4" in vsctl
    assert f"add-port {v2} {u.peer} -- set interface {u.peer} ofport_request=10" in vsctl
    assert f"add-port {n3} {u.patch} -- set interface {u.patch} ofport_request=52 type=patch " \
           f"options:peer={u.patch_peer}" in vsctl
    assert f"add-port {v2} {u.patch_peer} -- set interface {u.patch_peer} ofport_request=20010 type=patch" in vsctl
    assert buffered == [u.port, u.peer]
