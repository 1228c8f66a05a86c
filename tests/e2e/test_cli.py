"""The command line as users run it: exit codes, JSON, and a custom route in vxlan mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys

DATA = os.path.join(os.path.dirname(__file__), "data")
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kubevpc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubevpc.cli", *args], capture_output=True, text=True, cwd=TOP,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_check_json_with_a_custom_route_to_overlay_pods():
    res = kubevpc("check", os.path.join(DATA, "vxlan-route.yaml"), "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["passed"] and report["mode"] == "vxlan" and report["packet_in"] == 0
    declared = {(c["source"], c["dest"]): c for c in report["checks"] if c["declared"]}
    routed = declared[("ecs/ecs-db", "pod/shop/client")]
    assert routed["connected"] and routed["client"] == "192.168.2.50"      # the ECS's own address, not SNATed
    assert not declared[("ecs/ecs-db", "pod/default/web-1")]["connected"]  # the twin without a route


def test_check_exits_1_when_an_expectation_is_wrong():
    res = kubevpc("check", os.path.join(DATA, "wrong-expectation.yaml"))
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "1 failed" in res.stdout


def test_invalid_scenario_exits_2_and_builds_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cloud:\n  vpcs:\n    - name: v\n      cidr: 10.0.0.0/16\n      vswitches:\n"
                   "        - {name: a, cidr: 10.0.1.0/24}\n        - {name: b, cidr: 10.0.1.128/25}\n")
    before = set(os.listdir("/var/lib/kubevpc/runs")) if os.path.isdir("/var/lib/kubevpc/runs") else set()
    res = kubevpc("run", str(bad))
    assert res.returncode == 2
    assert f"{bad}:7: cloud.vpcs[0].vswitches[1].cidr: '10.0.1.128/25': overlaps vSwitch 'a'" in res.stderr
    after = set(os.listdir("/var/lib/kubevpc/runs")) if os.path.isdir("/var/lib/kubevpc/runs") else set()
    assert after == before


def test_check_matrix_json_on_the_networkpolicy_demo():
    res = kubevpc("check", os.path.join(TOP, "scenarios", "netpol.yaml"), "--matrix", "--between", "pods,ecs",
                  "--to", "pod/x/*,pod/z/a,ecs", "--ports", "80/tcp,81/tcp", "--mode", "eni", "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["mode"] == "eni" and report["differences"] == 0
    assert report["destinations"] == ["pod/x/a", "pod/x/b", "pod/x/c", "pod/z/a", "ecs/ecs-out"]
    cells = {(c["source"], c["dest"], c["port"]): c for c in report["cells"]}
    assert len(cells) == 10 * 5 * 2
    assert cells[("pod/y/b", "pod/x/a", 80)]["observed"], "x/a takes port 80 from namespace y"
    assert not cells[("pod/y/b", "pod/x/a", 81)]["observed"], "... and nothing else"
    assert not cells[("pod/z/b", "pod/x/a", 80)]["observed"] and cells[("pod/z/b", "pod/z/a", 80)]["observed"]
    assert cells[("ecs/ecs-out", "pod/z/a", 80)]["observed"], "eni: the VPC reaches pods; z takes ingress"
    assert not cells[("ecs/ecs-out", "pod/x/b", 80)]["observed"]


def test_check_matrix_refuses_bad_choices_before_building():
    res = kubevpc("check", os.path.join(TOP, "scenarios", "netpol.yaml"), "--matrix", "--between", "pod/q/*")
    assert res.returncode == 2 and "matches no endpoint" in res.stderr and "building" not in res.stderr
    res = kubevpc("check", os.path.join(TOP, "scenarios", "netpol.yaml"), "--matrix", "--ports", "80/icmp")
    assert res.returncode == 2 and "expected tcp or udp" in res.stderr


def test_check_runs_declared_checks_through_services():
    res = kubevpc("check", os.path.join(TOP, "scenarios", "netpol.yaml"), "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    declared = {(c["source"], c["dest"]): c for c in report["checks"] if c["declared"]}
    assert declared[("pod/y/b", "svc/x/svc-a")]["connected"]
    assert not declared[("pod/z/b", "svc/x/svc-a")]["connected"]
    assert not declared[("pod/x/b", "pod/x/a")]["connected"]
    assert report["passed"]
