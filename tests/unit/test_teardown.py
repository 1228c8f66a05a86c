"""What bring-up and teardown batch, measured on the commands they produce, without root: the
`bridges` step's ovs-vsctl transaction reads ovs-vsctl's cache once, not once a port; teardown
stops every process under one deadline, deletes the namespaces before the links and lets the
namespaces take the hosts' veths, and still removes exactly what the ledger lists."""
from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from kubevpc import ledger
from kubevpc.bench.bringup import generated_scenario
from kubevpc.ledger import NETNS_LINK, Entry, remove, stop_processes
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load
from topologies.build import bridge_command, controller_command, ports_command
from topologies.shell import VSCTL_CACHED, vsctl_cache_reads, vsctl_commands, vsctl_name, vsctl_order


def bridges_transaction(tmp_path, pods: int) -> list[str]:
    """The arguments the builder's `bridges` step gave ovs-vsctl before vsctl_order, for a generated
    scenario of `pods` pods (kubevpc.bench.scale's)."""
    path = tmp_path / f"gen{pods}.yaml"
    path.write_text(yaml.safe_dump(generated_scenario(pods, 4)))
    plan = make_plan(load(str(path), "vxlan", ()), "kv1")
    net = SimpleNamespace(controller_target="unix:/run/kv1.sock")
    cmd = []
    for b in plan.bridges:
        cmd += bridge_command(b, "netdev", plan.run) + controller_command(b.name, net) + ports_command(b.name, b.ports)
    return cmd


def test_the_bridges_transaction_reads_ovs_vsctls_cache_once_not_once_a_port(tmp_path):
    small, large = bridges_transaction(tmp_path, 100), bridges_transaction(tmp_path, 400)
    ports = sum(vsctl_name(c) == "add-port" for c in vsctl_commands(large))
    bridges = sum(vsctl_name(c) == "add-br" for c in vsctl_commands(large))
    before, after = vsctl_cache_reads(large), vsctl_cache_reads(vsctl_order(large))
    assert before[0] > ports and after[0] == bridges + 1, (before, after)
    # the rows read, for 4 times the pods: quadratic in the ports before (about 16 times as many),
    # after only the bridges' rows, whatever the number of ports (the rows already in the database,
    # other runs', are read once a bridge and once more, where they were read once a port)
    grow_before = vsctl_cache_reads(large)[1] / vsctl_cache_reads(small)[1]
    grow_after = vsctl_cache_reads(vsctl_order(large))[1] / vsctl_cache_reads(vsctl_order(small))[1]
    assert grow_before > 8 and grow_after < 1.1, (grow_before, grow_after)   # linear would be 4
    assert vsctl_cache_reads(vsctl_order(large), rows=5000)[1] == 5000 * (bridges + 1) + after[1]


def test_ordering_keeps_every_command_and_each_kinds_own_order(tmp_path):
    cmd = bridges_transaction(tmp_path, 20)
    ordered = vsctl_commands(vsctl_order(cmd))
    assert sorted(map(tuple, ordered)) == sorted(map(tuple, vsctl_commands(cmd)))
    ranks = [VSCTL_CACHED.get(vsctl_name(c), 3) for c in ordered]
    assert ranks == sorted(ranks), "bridges, then ports, then controllers, then the generic commands"
    for rank in set(ranks):
        assert [c for c in ordered if VSCTL_CACHED.get(vsctl_name(c), 3) == rank] == \
            [c for c in vsctl_commands(cmd) if VSCTL_CACHED.get(vsctl_name(c), 3) == rank]
    # each interface's number is set after its port is added; options stay with their command
    first_set = next(i for i, c in enumerate(ordered) if vsctl_name(c) == "set")
    assert all(vsctl_name(c) != "add-port" for c in ordered[first_set:])
    assert vsctl_order(["--", "--may-exist", "add-port", "b", "p", "--", "set", "interface", "p", "ofport_request=3",
                        "--", "--if-exists", "del-port", "b", "q"]) == \
        ["--", "--may-exist", "add-port", "b", "p", "--", "--if-exists", "del-port", "b", "q",
         "--", "set", "interface", "p", "ofport_request=3"]


# ------------------------------------------------------------------------------------ teardown
@pytest.fixture
def machine(monkeypatch):
    """A fake machine: the links, namespaces and bridges there are, and every command run."""
    m = SimpleNamespace(links={"kv1-a", "kv1-b", "kv1-up0", "kv1-up1", "eth0"}, netns={"kv1-pa", "kv1-pb"},
                        bridges={"kv1-vsw"}, ran=[], takes_links={"kv1-a", "kv1-b"})

    def run(cmd, stdin=None):
        m.ran.append((cmd[0], stdin or " ".join(cmd[1:])))
        if stdin and "netns del" in stdin:
            m.netns.clear()
            m.links -= m.takes_links           # the kernel removes each namespace's devices
        if stdin and "link del" in stdin:
            m.links -= {line.split()[-1] for line in stdin.splitlines()}
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(ledger, "_run", run)
    monkeypatch.setattr(ledger, "existing_links", lambda: set(m.links))
    monkeypatch.setattr(ledger, "existing_netns", lambda: set(m.netns))
    monkeypatch.setattr(ledger, "existing_bridges", lambda: set(m.bridges))
    return m


def _entries(tokens: bool) -> list[Entry]:
    token = NETNS_LINK if tokens else ""
    return [Entry("bridge", "kv1-vsw"), Entry("netns", "kv1-pa"), Entry("netns", "kv1-pb"),
            Entry("link", "kv1-a", token), Entry("link", "kv1-b", token), Entry("link", "kv1-up0"),
            Entry("link", "kv1-up1")]


def test_namespaces_go_first_and_take_their_veths_the_rest_in_one_batch(machine):
    counts = remove(_entries(tokens=True))
    assert [tool for tool, _ in machine.ran] == ["ovs-vsctl", "ip", "ip"]
    assert machine.ran[1][1] == "netns del kv1-pa\nnetns del kv1-pb\n"
    assert machine.ran[2][1] == "link del dev kv1-up0\nlink del dev kv1-up1\n", "the uplinks, whose ends are ours"
    assert machine.links == {"eth0"} and counts["link"] == 4 and counts["netns"] == 2


def test_a_veth_its_namespace_did_not_take_is_deleted_after_the_wait(machine, monkeypatch):
    monkeypatch.setattr(ledger, "LINKS_GONE_WAIT", 0.1)
    machine.takes_links = {"kv1-a"}                    # kv1-b's namespace is held by something else
    t0 = time.monotonic()
    remove(_entries(tokens=True))
    assert time.monotonic() - t0 < 2
    assert machine.ran[-1][1] == "link del dev kv1-b\n" and machine.links == {"eth0"}


def test_a_ledger_written_before_link_tokens_deletes_every_link_itself(machine):
    machine.takes_links = set()
    remove(_entries(tokens=False))
    assert machine.ran[2][1] == "link del dev kv1-a\nlink del dev kv1-b\nlink del dev kv1-up0\nlink del dev kv1-up1\n"
    assert machine.links == {"eth0"}, "nothing the ledger does not list"


SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, {}); time.sleep(60)  # {}"


def _sleeper(token: str, ignore_term: bool = False) -> subprocess.Popen:
    handler = "signal.SIG_IGN" if ignore_term else "lambda *a: sys.exit(0)"
    return subprocess.Popen([sys.executable, "-c", SLEEPER.format(handler, token)])


def test_every_process_is_stopped_under_one_deadline_and_only_those_carrying_the_token():
    quick = [_sleeper("kvstop") for _ in range(5)]
    stubborn, stranger = _sleeper("kvstop", ignore_term=True), _sleeper("someone-else")
    time.sleep(0.3)                                      # the handlers are set
    try:
        t0 = time.monotonic()
        killed = stop_processes([Entry("process", str(p.pid), "kvstop") for p in [*quick, stubborn, stranger]],
                                deadline=0.5)
        took = time.monotonic() - t0
        assert killed == [str(stubborn.pid)] and 0.5 <= took < 1.5, (killed, took)
        assert [p.wait(timeout=5) for p in quick] == [0] * 5 and stubborn.wait(timeout=5) == -9
        assert stranger.poll() is None, "a pid whose command line lacks the token is left alone"
    finally:
        stranger.kill()
        stranger.wait()
