"""bench-matrix (kubevpc/bench/matrix.py): its generated scenario, what the evaluator expects of
it, its arguments and its verdict; and the matrix's two speedups, which change no result: the
probe's Python without site-packages, and the evaluator's remembered CIDR questions."""
from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kubevpc.bench import matrix
from kubevpc.evaluator import vpc
from kubevpc.evaluator.matrix import expected_matrix, select
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load

REPO = Path(__file__).resolve().parents[2]


def plan_of(tmp_path, doc, mode=None):
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return make_plan(load(str(path), mode), "kvmx")


@pytest.mark.parametrize("mode", matrix.MODES)
def test_the_100_pod_scenario_plans_and_a_quarter_of_its_cells_are_refused(tmp_path, mode):
    plan = plan_of(tmp_path, matrix.matrix_scenario(100, mode), mode)
    pods = select(plan, ["pods"])
    assert len(pods) == 100 and {p.split("/")[1] for p in pods} == {"a", "b"}
    assert len({plan.host(p).node for p in pods}) > 1                    # across nodes, not one bridge
    m = expected_matrix(plan, pods, pods, [(matrix.PORT, "tcp")])
    assert len(m.cells) == 100 * 100
    refused = [c for c in m.cells if not c.expected]
    assert len(refused) == 50 * 50 and all(c.source.startswith("pod/a/") and c.dest.startswith("pod/b/")
                                           for c in refused)
    assert all(c.expected is not None for c in m.cells)


def test_without_the_policy_every_cell_connects_and_odd_counts_fill_namespace_a(tmp_path):
    plan = plan_of(tmp_path, matrix.matrix_scenario(7, policy=False))
    pods = select(plan, ["pods"])
    assert sum(p.startswith("pod/a/") for p in pods) == 4 and len(pods) == 7
    assert all(c.expected for c in expected_matrix(plan, pods, pods, [(matrix.PORT, "tcp")]).cells)


def test_arguments():
    args = matrix.parse_args([])
    assert (args.pods, args.mode, args.repeat, args.probe_timeout, args.mininet_hosts) == (100, "vxlan", 3, 1.0, 100)
    assert matrix.parse_args(["--pods", "30"]).mininet_hosts == 30
    assert matrix.parse_args(["--mininet-hosts", "0"]).mininet_hosts == 0
    for bad in (["--pods", "1"], ["--pods", "5000"], ["--repeat", "0"], ["--probe-timeout", "0"],
                ["--mininet-hosts", "1"], ["--mode", "flannel"]):
        with pytest.raises(SystemExit):
            matrix.parse_args(bad)


def run(total, probe=0.8, differ=0, cells=10_000):
    return {"cells": cells, "pairs": 9_900, "total_s": total, "probe_s": probe, "differ": differ}


def test_verdict_against_10_s_with_mininet_as_the_reference():
    s = matrix.summary([run(4.0), run(5.0), run(12.0)])
    assert s["total_s"] == 5.0 and s["max_s"] == 12.0 and s["cells_per_s"] == 2000
    ref = {"hosts": 100, "pairs": 9_900, "pingall_s": 180.0, "pairs_per_s": 55.0}
    (v,) = matrix.verdicts(100, s, ref)
    assert v.met and v.target == "reachability matrix, 100 x 100 pods on one port (9,900 pairs), <= 10 s"
    assert v.shown.startswith("5.0 s (max 12.0; 2000 cells/s")
    assert "55 pairs/s" in v.reference and "would take 182 s" in v.reference and "36.4x faster" in v.reference
    assert not matrix.verdicts(100, matrix.summary([run(10.5)]), None)[0].met
    assert matrix.verdicts(100, matrix.summary([run(10.5)]), None)[0].reference == "-"
    wrong = matrix.verdicts(100, matrix.summary([run(3.0, differ=2)]), ref)[0]
    assert not wrong.met and wrong.word == "not met: 2 cell(s) differ from the evaluator"
    assert matrix.verdicts(100, None, None)[0].word == "not met: not measured"


# ---------------------------------------------------------------------------------- speedups
def test_the_probe_runs_the_same_without_site_packages():
    """Lab.probe starts `python -S -m kubevpc.probeloop` in ROOT (or, KUBEVPC_PROBE=per-source,
    `python -S -m kubevpc.probe` in each source): the same modules, the same results."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve():
        for _ in range(4):
            conn, _ = srv.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b'{"name": "p", "client": "c"}\n')
    threading.Thread(target=serve, daemon=True).start()
    outs, loops = [], []
    request = json.dumps({"timeout": 2, "ports": None, "probes": [{"key": "k", "target": f"tcp:127.0.0.1:{port}"}]})
    for flags in (["-S"], []):
        got = subprocess.run([sys.executable, *flags, "-m", "kubevpc.probe", "--timeout", "2",
                              f"k=tcp:127.0.0.1:{port}"], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert got.returncode == 0, got.stderr
        outs.append(got.stdout.split()[:4])     # OK key target outcome (not the time)
        got = subprocess.run([sys.executable, *flags, "-m", "kubevpc.probeloop"], input=request, cwd=REPO,
                             capture_output=True, text=True, timeout=30)
        assert got.returncode == 0, got.stderr
        (r,) = json.loads(got.stdout)
        loops.append((r["key"], r["outcome"], r["answer"]))
    srv.close()
    assert outs[0] == outs[1] and outs[0][0] == "OK"
    assert loops[0] == loops[1] == ("k", "answered", {"name": "p", "client": "c"})
    source = (REPO / "kubevpc/lab/probing.py").read_text()
    assert 'sys.executable, "-S", "-m", "kubevpc.probe"' in source
    assert '[sys.executable, "-S", "-m", "kubevpc.probeloop"]' in source


def test_in_cidr_remembers_answers_and_still_raises_on_bad_input():
    cases = [("10.0.1.5", "10.0.1.0/24"), ("10.0.2.5", "10.0.1.0/24"), ("10.0.1.5", "0.0.0.0/0"),
             ("2001:db8::1", "10.0.0.0/8"), ("2001:db8::1", "2001:db8::/64")]
    for ip, cidr in cases * 2:
        a, n = ipaddress.ip_address(ip), ipaddress.ip_network(cidr)
        assert vpc.in_cidr(ip, cidr) is (a.version == n.version and a in n)
    for _ in range(2):
        with pytest.raises(ValueError):
            vpc.in_cidr("10.0.0.300", "10.0.0.0/8")
    assert vpc.in_cidr.cache_info().hits >= len(cases)


def test_the_runs_table_says_how_the_probes_ran(monkeypatch):
    from kubevpc.lab import probing
    for name in (probing.PROBE_ENV, probing.CAP_ENV, probing.WINDOW_ENV):
        monkeypatch.delenv(name, raising=False)
    args = matrix.parse_args([])
    assert "probes from one process (cap 128, window 0.1 s)" in str(matrix.runs_table([], args).title)
    monkeypatch.setenv(probing.PROBE_ENV, "per-source")
    assert "probes a process a source" in str(matrix.runs_table([], args).title)
