"""Planning a running scenario's change that adds or removes pods: pods that stay keep their node,
address, interface and port; new pods take only what nobody holds; what cannot change while
running is refused with the pod's name. Expected values are written out by hand."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.lab.changes import pods_changed
from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"
RUN = "kvrt"


def scenario(tmp_path: Path, mode: str, replicas: int = 2, extra: list | None = None, name: str = "s.yaml"):
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = mode
    web = next(m for m in data["manifests"] if m["kind"] == "Deployment" and m["metadata"]["name"] == "web")
    web["spec"]["replicas"] = replicas
    data["manifests"] += copy.deepcopy(extra or [])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load(str(path))


def pods(plan: Plan) -> dict[str, tuple]:
    return {h.key.removeprefix("pod/default/"): (h.node, h.ip, h.ofport, h.veth) for h in plan.pods
            if h.key.startswith("pod/default/web")}


def test_without_a_running_plan_pods_are_numbered_from_the_start(tmp_path):
    plan = make_plan(scenario(tmp_path, "vxlan", 4), RUN)
    assert pods(plan) == {"web-0": ("node-1", "10.244.0.2", 1000, "kvrtp0"),
                          "web-1": ("node-2", "10.244.1.2", 1000, "kvrtp1"),
                          "web-2": ("node-3", "10.244.2.2", 1000, "kvrtp2"),
                          "web-3": ("node-1", "10.244.0.3", 1001, "kvrtp3")}


def test_scaling_up_keeps_what_runs_and_gives_newcomers_only_free_addresses_ports_and_names(tmp_path):
    running = make_plan(scenario(tmp_path, "vxlan", 2), RUN)
    # client-1 (10.244.0.3, port 1001, kvrtp2) and the DNS pod run on node-1 already
    assert running.host("pod/default/client-1").ip == "10.244.0.3"
    assert running.host("pod/kube-system/kube-dns-0").ip == "10.244.0.4"
    plan = make_plan(scenario(tmp_path, "vxlan", 4), RUN, previous=running)
    assert pods(plan) == {"web-0": ("node-1", "10.244.0.2", 1000, "kvrtp0"),
                          "web-1": ("node-2", "10.244.1.2", 1000, "kvrtp1"),
                          "web-2": ("node-3", "10.244.2.3", 1001, "kvrtp5"),   # client-3 holds .2.2 and 1000
                          "web-3": ("node-1", "10.244.0.5", 1003, "kvrtp6")}   # client-1 and DNS hold .3, .4
    for h in running.hosts:
        assert plan.host(h.key) == h, h.key
    assert pods_changed(running, plan) == ([plan.host("pod/default/web-2"), plan.host("pod/default/web-3")], [])
    # the node bridge gets the new ports, nothing else moves
    node3 = {p.name: p.ofport for p in plan.bridge("kvrt-n2").ports}
    assert node3["kvrtp5"] == 1001 and node3["kvrtp3"] == 1000


def test_a_removed_pods_address_is_not_handed_out_in_the_same_change_but_is_in_the_next(tmp_path):
    running = make_plan(scenario(tmp_path, "vxlan", 2), RUN)
    extra = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late"},
              "spec": {"nodeName": "node-2", "containers": [{"name": "c"}]}}]
    # web-1 (node-2, 10.244.1.2) goes while "late" comes to node-2: late may not take web-1's address yet
    swapped = make_plan(scenario(tmp_path, "vxlan", 1, extra), RUN, previous=running)
    late = swapped.host("pod/default/late")
    assert (late.ip, late.ofport) == ("10.244.1.3", 1001)
    added, removed = pods_changed(running, swapped)
    assert [h.key for h in added] == ["pod/default/late"] and [h.key for h in removed] == ["pod/default/web-1"]
    # one change later web-1's address is free again
    again = make_plan(scenario(tmp_path, "vxlan", 2, extra), RUN, previous=swapped)
    assert (again.host("pod/default/web-1").ip, again.host("pod/default/web-1").ofport) == ("10.244.1.2", 1000)
    assert again.host("pod/default/late") == late


def test_eni_the_slb_keeps_its_vip_when_a_new_pod_would_have_taken_it(tmp_path):
    running = make_plan(scenario(tmp_path, "eni", 2), RUN)
    fresh = make_plan(scenario(tmp_path, "eni", 4), RUN)
    plan = make_plan(scenario(tmp_path, "eni", 4), RUN, previous=running)
    vip = {s.service: s.vip for s in running.slbs}
    assert vip == {"default/web-lb": "192.168.1.7", "default/web-lb-local": "192.168.1.8"}
    # planned from scratch, the new pods push client-1, client-3, the DNS and both VIPs along
    # vsw-a and vsw-b: that is what planning against the running scenario prevents
    assert {s.service: s.vip for s in fresh.slbs} == {"default/web-lb": "192.168.1.8", "default/web-lb-local": "192.168.1.9"}
    assert fresh.host("pod/default/client-3").ip == "192.168.2.4"
    assert {s.service: s.vip for s in plan.slbs} == vip
    for h in running.hosts:
        assert plan.host(h.key) == h, h.key
    assert (plan.host("pod/default/web-2").ip, plan.host("pod/default/web-3").ip) == ("192.168.2.4", "192.168.1.9")
    assert [h.key for h in pods_changed(running, plan)[0]] == ["pod/default/web-2", "pod/default/web-3"]


def test_what_a_running_pod_cannot_change_is_refused_with_its_name(tmp_path):
    running = make_plan(scenario(tmp_path, "vpc-route", 2), RUN)
    data = yaml.safe_load(SERVICES.read_text())
    client = next(m for m in data["manifests"] if m["metadata"]["name"] == "client-1")
    client["spec"]["containers"][0]["ports"] = [{"containerPort": 7001}]
    path = tmp_path / "ports.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = make_plan(load(str(path), mode="vpc-route"), RUN, previous=running)
    with pytest.raises(KubevpcError, match=r"pod/default/client-1 would change its ports \(.*7000.*\) -> \(.*7001"):
        pods_changed(running, changed)
    client["spec"]["containers"][0]["ports"] = [{"containerPort": 7000}]
    client["spec"]["nodeName"] = "node-2"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    moved = make_plan(load(str(path), mode="vpc-route"), RUN, previous=running)
    with pytest.raises(KubevpcError, match="pod/default/client-1 would change its node \\(node-1 -> node-2\\)"):
        pods_changed(running, moved)


LATE_LB = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late-lb", "annotations": {
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "intranet"}},
    "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}


@pytest.mark.parametrize("mode", ["vxlan", "eni"])
def test_an_slb_comes_and_goes_while_running_and_the_others_keep_what_they_hold(tmp_path, mode):
    running = make_plan(scenario(tmp_path, mode, 2), RUN)
    plan = make_plan(scenario(tmp_path, mode, 2, [LATE_LB], name="b.yaml"), RUN, previous=running)
    added, removed = pods_changed(running, plan)
    assert [h.key for h in added] == ["slb/default/late-lb"] and removed == []
    late = plan.host("slb/default/late-lb")
    held = [h for h in running.hosts if h.kind == "slb"]
    assert late.ofport not in {h.ofport for h in held if h.bridge == late.bridge}
    assert late.veth not in {h.veth for h in held} and late.ip not in {h.ip for h in running.hosts}
    for h in running.hosts:
        assert plan.host(h.key) == h, h.key
    # the first SLB goes: the others keep their port, veth and VIP; the newcomer does not renumber
    data = yaml.safe_load((tmp_path / "b.yaml").read_text())
    data["manifests"] = [m for m in data["manifests"] if m["metadata"]["name"] != "web-lb"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    after = make_plan(load(str(tmp_path / "c.yaml")), RUN, previous=plan)
    added, removed = pods_changed(plan, after)
    assert added == [] and [h.key for h in removed] == ["slb/default/web-lb"]
    for key in ("slb/default/web-lb-local", "slb/default/late-lb"):
        assert after.host(key) == plan.host(key), key
    assert [s.service for s in after.slbs] == ["default/web-lb-local", "default/late-lb"]
    # twin: planned from scratch, late-lb would take web-lb's place, which a running SLB cannot
    fresh = make_plan(load(str(tmp_path / "c.yaml")), RUN)
    assert fresh.host("slb/default/late-lb") != plan.host("slb/default/late-lb")
    with pytest.raises(KubevpcError, match=r"slb/default/late-lb would change its address or port"):
        pods_changed(plan, fresh)


def test_an_internet_slb_keeps_its_eip_when_another_goes(tmp_path):
    from .plans import INTERNET
    data = yaml.safe_load(INTERNET.read_text())
    lbs = [m for m in data["manifests"] if m["kind"] == "Service" and m["spec"].get("type") == "LoadBalancer"]
    internet = [m for m in lbs if m["metadata"].get("annotations", {}).get(
        "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type", "internet") == "internet"]
    assert internet, "the internet scenario has an internet-facing SLB"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    running = make_plan(load(str(tmp_path / "a.yaml")), RUN)
    extra = copy.deepcopy(internet[0])
    extra["metadata"]["name"] = "first-lb"
    data["manifests"].insert(0, extra)                    # before the others: from scratch it takes their EIP
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    plan = make_plan(load(str(tmp_path / "b.yaml")), RUN, previous=running)
    old = {s.service: s.public_ip for s in running.slbs}
    new = {s.service: s.public_ip for s in plan.slbs}
    assert all(new[k] == v for k, v in old.items()) and new["default/first-lb"] not in old.values()
    fresh = make_plan(load(str(tmp_path / "b.yaml")), RUN)
    assert {s.service: s.public_ip for s in fresh.slbs} != new, "twin: from scratch the EIPs move"


def test_too_many_replicas_is_an_error_naming_file_path_and_node(tmp_path):
    running = make_plan(scenario(tmp_path, "vxlan", 2), RUN)
    with pytest.raises(ScenarioError) as err:
        make_plan(scenario(tmp_path, "vxlan", 1000), RUN, previous=running)
    text = "\n".join(map(str, err.value.problems))
    assert "s.yaml" in text and "manifests[0]" in text and "pod CIDR 10.244.0.0/24 is exhausted (253 pods)" in text
