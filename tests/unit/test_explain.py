"""`kubevpc explain`: the evaluator's chain on hand-written cases, read from the scenario's meaning
(routes, security group rules, NAT, Services, NetworkPolicy), and the command line around it."""
from __future__ import annotations

import json

import pytest

from kubevpc import cli
from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.evaluator.explain import explain
from kubevpc.evaluator.matrix import expect

from .plans import DEFAULT, INTERNET, MODES, NETPOL, SERVICES, plan_of


def texts(e, stage: str | None = None) -> list[str]:
    return [s.text for s in e.steps if stage is None or s.stage == stage]


def failing(e):
    [step] = [s for s in e.steps if s.passes is False]
    return step


@pytest.mark.parametrize("mode", MODES)
def test_an_allowed_path_names_the_route_and_the_accepting_rule(mode):
    plan = plan_of(DEFAULT, mode)
    e = explain(plan, "pod/default/web-0", "ecs/ecs-db", 5432)
    assert e.allowed is True
    assert e.steps[0].stage == "source" and e.steps[0].text.startswith("pod/default/web-0 ")
    assert "route table of vpc-prod: system route 192.168.2.0/24 (vSwitch vsw-i)" in texts(e, "route")
    [ingress] = [t for t in texts(e, "security group") if t.startswith("ingress of ecs/ecs-db")]
    assert 'sg-db rule 1 (accept tcp/5432 from sg-nodes, priority 1: "postgres from nodes") accepts tcp/5432' in ingress
    seen = plan.node("node-1").ip if mode == "vxlan" else plan.host("pod/default/web-0").ip
    assert e.seen_source == seen and e.steps[-1].text.startswith(f"the server sees {seen}")
    if mode == "vxlan":
        assert any(t.startswith("SNAT to node node-1") for t in texts(e, "NAT"))
    else:
        assert not texts(e, "NAT")


@pytest.mark.parametrize("mode", MODES)
def test_a_denied_path_names_what_denies_it(mode):
    plan = plan_of(DEFAULT, mode)
    e = explain(plan, "pod/default/web-0", "ecs/ecs-db", 6379)
    assert e.allowed is False and e.seen_source == ""
    step = failing(e)
    assert step.stage == "security group" and "ingress of ecs/ecs-db denied: no rule of sg-db allows tcp/6379" in step.text
    other = explain(plan, "pod/default/web-0", "ecs/ecs-other", 80)
    assert failing(other).stage == "VPC" and "not peered" in failing(other).text


def test_a_pod_route_and_a_pod_cidrs_group_in_vpc_route_mode():
    e = explain(plan_of(DEFAULT, "vpc-route"), "ecs/ecs-db", "pod/shop/client", 9000)
    assert e.allowed
    assert "route table of vpc-prod: pod route (vpc-route mode) 10.244.0.0/24 -> node-1" in texts(e, "route")
    assert any(t.startswith("ingress of node node-1's pod CIDR 10.244.0.0/24: sg-nodes rule 2") for t in texts(e))
    overlay = explain(plan_of(DEFAULT, "vxlan"), "ecs/ecs-db", "pod/shop/client", 9000)
    assert overlay.allowed is False and "overlay address" in failing(overlay).text


def test_networkpolicy_rule_and_default_deny():
    plan = plan_of(NETPOL, "vxlan")
    allowed = explain(plan, "pod/y/b", "pod/x/a", 80)
    assert allowed.allowed and "ingress of x/a allowed by policy x/a-takes-80-from-y rule 0" in texts(allowed, "NetworkPolicy")
    denied = explain(plan, "pod/x/b", "pod/x/a", 80)
    step = failing(denied)
    assert step.stage == "NetworkPolicy" and "isolated by policy x/default-deny-ingress" in step.text


def test_a_clusterip_is_a_dnat_to_each_ready_endpoint():
    plan = plan_of(SERVICES, "vxlan")
    e = explain(plan, "pod/default/client-1", "svc/default/web", 80)
    svc = plan.service("default/web")
    assert e.allowed and texts(e, "Service")[0].startswith(f"Service default/web {svc.cluster_ip}:80/tcp: kube-proxy")
    assert [b.target.split()[0] for b in e.branches] == ["pod/default/web-0", "pod/default/web-1"]
    for b in e.branches:
        assert b.explanation.steps[0].text.startswith(f"DNAT {svc.cluster_ip}:80 to {b.target.split()[0]}")
        assert b.explanation.seen_source == plan.host("pod/default/client-1").ip
    empty = explain(plan, "pod/default/client-1", "svc/default/empty", 80)
    assert empty.allowed is False and failing(empty).text == "Service default/empty has no ready endpoint: refused"
    by_address = explain(plan, "pod/default/client-1", svc.cluster_ip, 80)
    assert by_address.allowed and len(by_address.branches) == 2


def test_a_nodeport_with_policy_local_needs_a_local_endpoint_and_keeps_the_client():
    plan = plan_of(SERVICES, "eni")
    np = plan.service("default/web-local").ports[0].node_port
    far = explain(plan, "ecs/ecs-client", "node/node-3", np)
    assert far.allowed is False and failing(far).text == "externalTrafficPolicy Local and no endpoint on node-3: dropped"
    near = explain(plan, "ecs/ecs-client", "node/node-1", np)
    assert near.allowed and near.seen_source == plan.host("ecs/ecs-client").ip
    assert any("keeps the client's address" in t for t in texts(near, "Service"))


def test_an_slb_takes_a_local_backend_without_endpoints_out_of_rotation():
    plan = plan_of(SERVICES, "vxlan")
    e = explain(plan, "ecs/ecs-client", "slb/default/web-lb-local", 80)
    assert e.allowed is True
    assert any(t.startswith("backend node-3 is out of rotation") for t in texts(e, "SLB"))
    assert [b.target.split()[0] for b in e.branches] == ["node-1", "node-2"]


@pytest.mark.parametrize("mode", MODES)
def test_out_to_the_internet_through_the_nat_gateway_or_an_eip(mode):
    plan = plan_of(INTERNET, mode)
    ngw = plan.nat_gateways[0].public_ips[0]
    pod = explain(plan, "pod/default/client", "inet/server", 80)
    assert pod.allowed and pod.seen_source == ngw
    assert any(t.startswith("NAT gateway ngw: SNAT entry for vSwitch vsw-a") for t in texts(pod, "NAT"))
    assert any(t.startswith("SNAT to node node-1") for t in texts(pod, "NAT")) == (mode != "eni")
    bastion = explain(plan, "ecs/bastion", "inet/server", 80)
    assert bastion.seen_source == "198.19.0.10" and any("EIP eip-bastion" in t for t in texts(bastion, "NAT"))
    nosnat = explain(plan, "ecs/ecs-nosnat", "inet/server", 80)
    assert nosnat.allowed is False and failing(nosnat).stage == "NAT"


def test_in_from_the_internet_through_an_eip():
    plan = plan_of(INTERNET, "vxlan")
    ok = explain(plan, "inet/client", "eip/eip-bastion", 80)
    assert ok.allowed and ok.seen_source == plan.host("inet/client").ip
    assert any(t.startswith("EIP eip-bastion: DNAT 198.19.0.10 to ecs/bastion") for t in texts(ok, "NAT"))
    closed = explain(plan, "inet/client", "eip/eip-bastion", 81)
    assert closed.allowed is False and "no rule of sg-web allows tcp/81" in failing(closed).text
    ngw = explain(plan, "inet/client", plan.nat_gateways[0].public_ips[0], 80)
    assert ngw.allowed is False and "nothing unsolicited gets in" in failing(ngw).text
    private = explain(plan, "inet/client", "ecs/bastion", 80)
    assert private.allowed is False and "private address" in failing(private).text
    slb = explain(plan, "inet/client", plan.slbs[0].public_ip, 80)
    assert slb.allowed and [b.target.split()[0] for b in slb.branches] == ["node-1", "node-2"]
    assert explain(plan, "inet/client", plan.slbs[0].public_ip, 8080).allowed is False


@pytest.mark.parametrize("mode", MODES)
def test_explain_agrees_with_the_checks_of_the_default_scenario(mode):
    plan = plan_of(DEFAULT, mode)
    for c in default_checks(plan) + declared_checks(plan):
        e = explain(plan, c.source, c.dest, c.port, c.proto)
        assert e.allowed == c.expect, (c, e.reason)
        assert e.allowed == expect(plan, c.source, c.dest, c.port, c.proto)[0]


# ------------------------------------------------------------------------------ the command line
def test_the_command_prints_the_chain_and_exits_by_the_verdict(capsys):
    assert cli.main(["explain", str(DEFAULT), "pod/default/web-0", "ecs/ecs-db", "5432/tcp"]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pod/default/web-0 → ecs/ecs-db 5432/tcp in ") and "CONNECTS" in out[0]
    assert any(line.startswith("✓ security group: ingress of ecs/ecs-db: sg-db rule 1") for line in out)
    assert cli.main(["explain", str(DEFAULT), "pod/default/web-0", "ecs/ecs-db", "6379"]) == cli.EXIT_CHECKS
    assert "REFUSED" in capsys.readouterr().out
    assert cli.main(["explain", str(DEFAULT), "pod/default/web-0", "ecs/ecs-db", "5432", "-o", "json",
                     "--mode", "eni"]) == cli.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "eni" and doc["allowed"] is True and doc["steps"][0]["stage"] == "source"


@pytest.mark.parametrize("argv, words", [
    (["pod/default/web-0", "ecs/nope", "80"], "no endpoint 'ecs/nope'"),
    (["pod/default/web-0", "ecs/ecs-db", "80/sctp"], "expected a port from 1 to 65535"),
    (["pod/default/web-0", "ecs/ecs-db", "99999"], "expected a port from 1 to 65535"),
    (["pod/default/web-0", "ecs/ecs-db"], "expected SRC DST PORT"),
    (["pod/default/web-0", "svc/nope", "80"], "no Service 'svc/nope'"),
    (["pod/default/web-0", "10.9.9.9", "80"], "nothing in this scenario holds 10.9.9.9"),
    (["pod/default/web-0", "--matrix"], "--matrix takes no SRC"),
])
def test_bad_arguments_are_refused_with_exit_2(capsys, argv, words):
    assert cli.main(["explain", str(DEFAULT), *argv]) == cli.EXIT_USAGE
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("fmt, check", [
    ("csv", lambda t: t.startswith("source,destination,port,protocol,expected,observed,reason\n")
     and "pod/default/web-0,ecs/ecs-db,5432,tcp,connects,," in t),
    ("md", lambda t: "| from \\ to |" in t and "**5432/tcp**" in t),
    ("dot", lambda t: t.startswith("digraph reachability {") and '-> ' in t and t.rstrip().endswith("}")),
    ("json", lambda t: json.loads(t)["differences"] == 0 and len(json.loads(t)["cells"]) == 6 * 6),
])
def test_the_static_matrix_in_every_format(capsys, fmt, check):
    argv = ["explain", str(DEFAULT), "--matrix", "--between", "pods,ecs", "--ports", "5432/tcp", "-o", fmt]
    assert cli.main(argv) == cli.EXIT_OK
    assert check(capsys.readouterr().out)
