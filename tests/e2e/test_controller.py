"""The controller reconciles, the real interfaces see nothing, and the user-facing helpers work."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from kubevpc.evaluator.checks import declared_checks, default_checks
from kubevpc.lab import Lab
from kubevpc.lab.checks import run_checks
from kubevpc.planning import Plan

from .conftest import SCENARIO

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def lab():
    the_lab = Lab(SCENARIO, mode="vpc-route").up()
    yield the_lab
    the_lab.down()


def _wait(what, test, deadline=15.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if test():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {deadline} s")


def real_interfaces() -> list[str]:
    """Root-namespace interfaces that are up and are not veth, VXLAN, tun/tap or loopback."""
    out = subprocess.run(["ip", "-d", "-o", "link", "show", "up"], capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo" and not any(f" {kind} " in line for kind in ("veth", "vxlan", "tun", "openvswitch")):
            names.append(name)
    return names


def test_no_emulated_packet_reaches_the_real_interfaces(lab):
    addresses = sorted({h.ip for h in lab.plan.hosts} | {v.gateway for v in lab.plan.vswitches})
    bpf = " or ".join(f"host {a}" for a in addresses)
    interfaces = real_interfaces()
    assert interfaces, "this machine has a real interface to watch"
    caps = [subprocess.Popen(["tcpdump", "-n", "-l", "-i", i, bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in interfaces]
    time.sleep(0.8)
    try:
        checks = default_checks(lab.plan) + declared_checks(lab.plan)
        assert all(o.passed for o in run_checks(lab, checks)), "the traffic to watch did flow as expected"
        time.sleep(0.3)
    finally:
        for c in caps:
            c.terminate()
    seen = [c.communicate(timeout=5) for c in caps]
    for iface, (out, err) in zip(interfaces, seen):
        assert out.strip() == "", f"emulated packets on {iface}:\n{out[:2000]}"
        assert "listening on" in err, f"tcpdump did not watch {iface}: {err}"


def test_plan_change_is_reconciled_without_restart(lab):
    path = os.path.join(lab.net.state_dir, "plan.json")
    original = open(path, encoding="utf-8").read()
    plan = Plan.model_validate_json(original)
    version = lab.status()["plan_version"]
    assert lab.connect("pod/default/web-0", "ecs/ecs-db", 5432).ok
    # take sg-db's only rule away: 5432 from the nodes must now be refused
    groups = tuple(g.model_copy(update={"rules": ()}) if g.name == "sg-db" else g for g in plan.groups)
    changed = plan.model_copy(update={"groups": groups})
    try:
        _write(path, changed.model_dump_json())
        _wait("controller reloads the plan", lambda: lab.status()["plan_version"] == version + 1 and
              all(b["programmed"] for b in lab.status()["bridges"].values()))
        vs1 = lab.status()["bridges"][f"{lab.run}-vs1"]
        assert vs1["deleted"] > 0, vs1
        assert lab.connect("pod/default/web-0", "ecs/ecs-db", 5432, timeout=1.0).outcome == "timeout"
    finally:
        _write(path, original)
        _wait("controller restores the plan", lambda: lab.status()["plan_version"] == version + 2 and
              all(b["programmed"] for b in lab.status()["bridges"].values()))
    assert lab.connect("pod/default/web-0", "ecs/ecs-db", 5432).ok


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def test_reconnect_restores_deleted_flows(lab):
    bridge = f"{lab.run}-vs1"
    assert lab.connect("ecs/node-3", "ecs/ecs-db", 5432).ok
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", bridge], check=True)
    assert lab.connect("ecs/node-3", "ecs/ecs-db", 5432, timeout=1.0).outcome == "timeout"
    before = lab.status()["bridges"][bridge]["added"]
    # a reconnect (here forced by setting the controller again) makes the controller compare and re-add
    subprocess.run(["ovs-vsctl", "del-controller", bridge], check=True)
    subprocess.run(["ovs-vsctl", "set-controller", bridge, lab.net.controller_target], check=True)
    _wait("flows re-added", lambda: lab.status()["bridges"][bridge]["added"] > before and
          lab.status()["bridges"][bridge]["programmed"])
    assert lab.connect("ecs/node-3", "ecs/ecs-db", 5432).ok


def test_http_answers_with_the_pod_name(lab):
    r = lab.connect("pod/shop/client", "pod/default/web-2", 8080, "http")
    assert r.ok and r.answer["status"] == 200 and r.answer["name"] == "web-2" and r.answer["proto"] == "http"
    refused = lab.connect("pod/shop/client", "pod/default/web-2", 8081, "http")
    assert refused.outcome == "refused"


def test_pytest_fixture_for_users(tmp_path):
    test = tmp_path / "test_user.py"
    test.write_text(textwrap.dedent("""
        def test_db(lab):
            assert lab.connect("pod/default/web-0", "ecs/ecs-db", 5432).ok
            assert not lab.connect("pod/default/web-0", "ecs/ecs-db", 6379, timeout=1).ok
    """))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "kubevpc", str(test),
                          "--kubevpc-scenario", SCENARIO, "--kubevpc-mode", "eni"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]


def test_mininet_cli_runs_commands_in_namespaces():
    res = subprocess.run([sys.executable, "-m", "kubevpc.cli", "run", SCENARIO, "--no-checks", "--cli"],
                         input="web-0 ip -4 -o addr show eth0\nnode-1 ping -c 1 -W 2 web-2\n"
                               "node-1 ping -c 1 -W 1 ecs-db\nexit\n",
                         capture_output=True, text=True, cwd=TOP, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout + res.stderr           # Mininet's CLI writes node output through its logger
    assert "10.244.0.2/24" in out
    assert "PING 10.244.2.2" in out and " 1 received" in out      # names become addresses
    assert "PING 192.168.2.50" in out and " 0 received" in out   # sg-db allows no ICMP
