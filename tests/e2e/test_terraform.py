"""`kubevpc import terraform` end to end: scenarios/terraform/plan.json (an ACK cluster with Terway,
written as `terraform show -json` prints it) imported, a workload added (a Deployment behind a
ClusterIP Service, and a client pod), and run in the mode the import chose (eni: the cluster has
Terway). A pod reaches the Service, and the ECS instance web on the port its imported security group
opens (80); their twins time out: a port the Service does not expose, and a port web serves that its
group does not open (8080). The evaluator (`kubevpc explain`) agrees with every probe."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubevpc.evaluator.explain import explain
from kubevpc.importers.terraform import import_terraform
from kubevpc.lab import Probe

from .conftest import lab_in_mode

PLAN = Path(__file__).resolve().parents[2] / "scenarios" / "terraform" / "plan.json"
CLIENT = "pod/default/client"
UNOPENED = 8080                  # web serves it; its security group (alicloud_security_group.web) does not open it
WORKLOAD = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                           "spec": {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
     "spec": {"nodeName": "default-pool-2", "containers": [{"name": "c", "ports": [{"containerPort": 7000}]}]}},
]
ALLOWED = [Probe(CLIENT, "svc/default/web", 80), Probe(CLIENT, "ecs/web", 80)]
DENIED = [Probe(CLIENT, "svc/default/web", 81), Probe(CLIENT, "ecs/web", UNOPENED)]


def scenario(directory: Path) -> Path:
    """The imported scenario with the workload, and a server on web's port 8080, written in `directory`."""
    data = import_terraform(str(PLAN)).data
    web = next(i for i in data["cloud"]["instances"] if i["name"] == "web")
    web["ports"] = [*web.get("ports", []), UNOPENED]
    data["manifests"] = WORKLOAD
    path = directory / "terraform.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    path = scenario(tmp_path_factory.mktemp("terraform"))
    runs = lab_in_mode(str(path), yaml.safe_load(path.read_text())["cluster"]["mode"])
    yield next(runs)
    next(runs, None)


def probe_and_agree(lab, probes: list[Probe], timeout: float) -> list:
    """The probes' results, each held to the evaluator: it connects exactly when explain says so,
    and the server sees the client address explain names."""
    results = lab.probe(probes, timeout=timeout)
    for p, r in zip(probes, results):
        e = explain(lab.plan, p.source, p.dest, p.port, p.proto)
        assert (r.outcome == "answered") == bool(e.allowed), f"{p}: {r.outcome} ({r.detail}); explain: {e.reason}"
        if e.allowed:
            assert r.answer["client"].rsplit(":", 1)[0] == e.seen_source, f"{p}: {r.answer}; explain: {e.seen_source}"
    return results


def test_the_import_runs_in_the_mode_of_its_network_plugin(lab):
    assert lab.plan.cluster.mode == "eni"
    assert [n.name for n in lab.plan.nodes] == ["default-pool-1", "default-pool-2", "default-pool-3"]


def test_a_pod_reaches_the_service_and_the_instance_its_group_opens(lab):
    results = probe_and_agree(lab, ALLOWED, timeout=2)
    assert [r.outcome for r in results] == ["answered", "answered"], [r.detail for r in results]
    assert results[0].answer["name"].startswith("web-")
    assert results[1].answer["name"] == "web"
    assert results[1].answer["client"].rsplit(":", 1)[0] == lab.address(CLIENT), "Terway: the pod's own address"


def test_twins_a_port_the_service_does_not_expose_and_one_the_group_does_not_open(lab):
    assert lab.connect("ecs/web", "127.0.0.1", UNOPENED).outcome == "answered", "web serves the port"
    results = probe_and_agree(lab, DENIED, timeout=1)
    assert [r.outcome for r in results] == ["timeout", "timeout"], [r.detail for r in results]


def test_no_packet_ins(lab):
    st = lab.status()
    assert st["errors"] == []
    assert {b: s["packet_in"] for b, s in st["bridges"].items() if s["packet_in"]} == {}
