"""The pure parts of the benchmarks: statistics, iperf3 and ping parsing, path choice, the report's
shape, the chart, growth per doubling, and the data plane's offload choice. No root, no network."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kubevpc.bench import perf, perf_report, scale
from kubevpc.cli import perf as perf_cli
from kubevpc.errors import KubevpcError
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan
from topologies.datapath import LINK_MTU, Datapath, offloads_for

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "scenarios" / "default.yaml"

# iperf3 3.12 -J output, trimmed to what a report needs (the numbers are from a real run)
IPERF_TCP = {
    "start": {"version": "iperf 3.12", "test_start": {"protocol": "TCP", "duration": 1}},
    "intervals": [],
    "end": {"sum_sent": {"seconds": 1.000051, "bytes": 2434007040, "bits_per_second": 19471063295.771915,
                         "retransmits": 35, "sender": True},
            "sum_received": {"seconds": 1.000127, "bytes": 2416836608, "bits_per_second": 19332237669.815933,
                             "sender": True}},
}
IPERF_UDP = {
    "start": {"version": "iperf 3.12", "test_start": {"protocol": "UDP", "blksize": 1400}},
    "intervals": [],
    "end": {"sum": {"bits_per_second": 99906108.54412247, "jitter_ms": 0.0034170109343436865, "lost_packets": 210,
                    "packets": 8921, "lost_percent": 2.3539961887680754, "sender": True},
            "sum_sent": {"bits_per_second": 99906108.54412247, "jitter_ms": 0, "lost_packets": 0, "packets": 8921,
                         "lost_percent": 0, "sender": True},
            "sum_received": {"bits_per_second": 97548567.71484277, "jitter_ms": 0.0034170109343436865,
                             "lost_packets": 210, "packets": 8921, "lost_percent": 2.3539961887680754,
                             "sender": False}},
}
IPERF_REFUSED = {"start": {"connected": [], "version": "iperf 3.12"}, "intervals": [], "end": {},
                 "error": "unable to connect to server: Connection refused"}
PING = """PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=2.53 ms
64 bytes from 10.244.1.2: icmp_seq=3 ttl=62 time=1.22 ms
64 bytes from 10.244.1.2: icmp_seq=4 ttl=62 time=1.10 ms

--- 10.244.1.2 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 31ms
"""


def plan_of(tmp_path: Path, data: dict, mode: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path), mode=mode), "kvxxxx")


# ------------------------------------------------------------------------------ statistics
def test_stat_median_lowest_highest_and_missing_values():
    s = perf.stat([3.0, None, 1.0, 2.0, 10.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert s["values"] == [3.0, 1.0, 2.0, 10.0]
    assert perf.stat([None, None]) is None and perf.stat([]) is None


def test_ratio_and_first_and_steady():
    assert perf.ratio(8.0, 16.0) == 0.5
    assert perf.ratio(None, 16.0) is None and perf.ratio(8.0, 0) is None and perf.ratio(8.0, None) is None
    fs = perf.first_and_steady([2.5, None, 1.2, 1.1])
    assert fs["first"] == 2.5 and fs["steady"]["median"] == pytest.approx(1.15) and fs["lost"] == 1
    assert fs["count"] == 4
    assert perf.first_and_steady([]) is None
    assert perf.first_and_steady([0.9])["steady"] is None


# ------------------------------------------------------------------------------- parsing
def test_parse_iperf_tcp_reports_received_rate_and_retransmissions():
    r = perf.parse_iperf(json.dumps(IPERF_TCP))
    assert r == {"gbps": pytest.approx(19.3322376698), "retransmits": 35}


def test_parse_iperf_udp_reports_received_rate_loss_and_jitter():
    r = perf.parse_iperf(json.dumps(IPERF_UDP), udp=True)
    assert r["gbps"] == pytest.approx(0.0975485677)
    assert r["lost_percent"] == pytest.approx(2.354, abs=1e-3) and r["jitter_ms"] == pytest.approx(0.003417, abs=1e-6)
    assert r["packets"] == 8921


@pytest.mark.parametrize("text, message", [
    (json.dumps(IPERF_REFUSED), "iperf3: unable to connect to server: Connection refused"),
    ("iperf3: error - the server is busy running a test", "iperf3 gave no JSON: iperf3: error - the server is busy"),
    ("", "iperf3 gave no JSON: (nothing)"),
    (json.dumps({"start": {}, "end": {}}), "iperf3 TCP run has no received summary"),
])
def test_parse_iperf_errors_say_what_iperf3_said(text, message):
    with pytest.raises(perf.PerfError) as exc:
        perf.parse_iperf(text)
    assert str(exc.value).startswith(message)
    assert isinstance(exc.value, KubevpcError)


def test_parse_iperf_udp_without_the_servers_report():
    with pytest.raises(perf.PerfError, match="UDP run has no received summary"):
        perf.parse_iperf(json.dumps({"start": {}, "end": {"sum_sent": {}}}), udp=True)


def test_parse_ping_keeps_sequence_order_and_marks_losses():
    assert perf.parse_ping(PING, 4) == [2.53, None, 1.22, 1.10]
    assert perf.parse_ping("", 2) == [None, None]


@pytest.mark.parametrize("fn, good, want", [(perf_cli.parse_rate, "500M", "500M"), (perf_cli.parse_rate, " 1.5G", "1.5G"),
                                            (perf_cli.parse_rate, "200000", "200000"),
                                            (perf_cli.parse_modes, "eni,vxlan,eni", ["eni", "vxlan"]),
                                            (perf_cli.positive_int, "3", 3)])
def test_argument_types_accept(fn, good, want):
    assert fn(good) == want


@pytest.mark.parametrize("fn, bad", [(perf_cli.parse_rate, "fast"), (perf_cli.parse_rate, "5T"), (perf_cli.parse_rate, "-1M"),
                                     (perf_cli.parse_modes, "vxlan,calico"), (perf_cli.parse_modes, ","),
                                     (perf_cli.positive_int, "0"), (perf_cli.positive_int, "two")])
def test_argument_types_reject_with_what_was_expected(fn, bad):
    with pytest.raises(argparse.ArgumentTypeError, match="expected"):
        fn(bad)


def test_cli_perf_arguments_and_quick_settings():
    from kubevpc.cli import parser
    args = parser().parse_args(["perf", "--quick"])
    s = perf_cli.settings_from(args)
    assert (s.repeat, s.seconds, s.modes, s.udp, s.pings) == (1, 1, ["vpc-route"], True, 10)
    args = parser().parse_args(["perf", "x.yaml", "--modes", "eni", "--repeat", "5", "--no-udp", "--udp-rate", "1G"])
    s = perf_cli.settings_from(args)
    assert (args.file, s.repeat, s.seconds, s.modes, s.udp, s.udp_rate) == ("x.yaml", 5, 3, ["eni"], False, "1G")
    assert perf_cli.settings_from(parser().parse_args(["perf"])).modes == list(perf.MODES)


def test_cli_perf_rejects_bad_input(capsys):
    from kubevpc.cli import parser
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["perf", "--modes", "flannel"])
    assert exc.value.code == 2
    assert "expected a comma-separated list of vxlan, vpc-route, eni" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("mode", perf.MODES)
def test_builtin_scenario_has_every_path(tmp_path, mode):
    plan = plan_of(tmp_path, perf.perf_scenario(), mode)
    paths = {p.key: p for p in perf.choose_paths(plan)}
    assert list(paths) == [k for k, _ in perf.PATH_KINDS]
    assert (paths["pod-pod-same-node"].client, paths["pod-pod-same-node"].server) == ("pod/default/client",
                                                                                       "pod/default/peer-1")
    assert paths["pod-pod-same-vswitch"].server == "pod/default/server"
    assert paths["pod-pod-cross-vswitch"].server == "pod/default/peer-3"
    svc = plan.service("default/iperf")
    node2 = plan.node("node-2")
    assert (paths["pod-clusterip"].dest, paths["pod-clusterip"].port) == (svc.cluster_ip, 5201)
    assert (paths["pod-nodeport"].dest, paths["pod-nodeport"].port) == (node2.ip, svc.ports[0].node_port)
    assert paths["client-slb"].dest == plan.slbs[0].vip and paths["client-slb"].client == "ecs/ecs-client"
    for key in ("pod-clusterip", "pod-nodeport", "client-slb"):
        p = paths[key]
        assert (p.server, p.listen, p.udp, p.ping, p.skip) == ("pod/default/server", 5201, True, False, "")
    skipped = {k for k, p in paths.items() if p.skip}
    if mode == "vxlan":
        assert skipped == {"ecs-pod"} and "overlay address" in paths["ecs-pod"].skip
    else:
        assert skipped == set()
        assert paths["ecs-pod"].client == "ecs/ecs-client" and paths["ecs-pod"].server == "pod/default/server"


def test_a_scenario_without_a_measurable_service_says_why(tmp_path):
    plan = make_plan(load(str(DEFAULT), mode="vpc-route"), "kvxxxx")
    paths = {p.key: p for p in perf.choose_paths(plan)}
    assert not paths["pod-pod-same-node"].skip and paths["pod-pod-same-node"].port == 5201
    for key in ("pod-clusterip", "pod-nodeport", "client-slb"):
        assert "no Service with exactly one ready endpoint" in paths[key].skip
    # sg-nodes lets ecs-db in on 9000 only: the evaluator's reason is the report's
    assert "denied" in paths["ecs-pod"].skip and "5201" in paths["ecs-pod"].skip


def test_a_service_kube_proxy_does_not_program_is_not_measured(tmp_path):
    data = perf.perf_scenario()
    [svc] = [m for m in data["manifests"] if m["kind"] == "Service"]
    svc["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "other-proxy"}
    paths = {p.key: p for p in perf.choose_paths(plan_of(tmp_path, data, "vpc-route"))}
    for key in ("pod-clusterip", "pod-nodeport", "client-slb"):
        assert "no Service with exactly one ready endpoint" in paths[key].skip
    del svc["metadata"]["labels"]
    paths = {p.key: p for p in perf.choose_paths(plan_of(tmp_path, data, "vpc-route"))}
    assert not paths["pod-clusterip"].skip


def test_iperf_port_avoids_the_pods_declared_ports(tmp_path):
    data = perf.perf_scenario()
    data["manifests"][1]["spec"]["containers"][0]["ports"].append({"containerPort": 5201})
    plan = plan_of(tmp_path, data, "vpc-route")
    same = next(p for p in perf.choose_paths(plan) if p.key == "pod-pod-same-node")
    assert (same.server, same.port, same.listen) == ("pod/default/peer-1", 5202, 5202)


# --------------------------------------------------------------------------------- report
def fake_path(key: str, gbps: list[float], skip: str = "") -> dict:
    p = {"key": key, "title": perf.TITLES[key], "skip": skip, "errors": []}
    if not skip:
        p.update(tcp={"gbps": perf.stat(gbps), "retransmits": [0] * len(gbps)},
                 udp={"gbps": perf.stat([0.4]), "lost_percent": perf.stat([1.0]), "jitter_ms": perf.stat([0.01])},
                 ping_ms=perf.first_and_steady([2.0, 1.0, 1.1]), connect_ms=perf.first_and_steady([1.5, 1.2]))
    return p


def fake_report() -> dict:
    ref = lambda title, g: {"title": title, "tcp": {"gbps": perf.stat(g)}, "udp": None,  # noqa: E731
                            "ping_ms": None, "connect_ms": None}
    modes = {}
    for mode, across in (("vxlan", 0.25), ("vpc-route", 8.0)):
        modes[mode] = {"packet_in": 0 if mode == "vpc-route" else 2, "bringup_s": 1.0,
                       "datapath": {"kind": "netdev", "offloads": {"note": "x"}},
                       "paths": [fake_path("pod-pod-same-node", [10.0]),
                                 fake_path("pod-pod-same-vswitch", [across, across + 0.1]),
                                 fake_path("pod-pod-cross-vswitch", [across]),
                                 fake_path("ecs-pod", [], skip="overlay" if mode == "vxlan" else ""),
                                 ] + ([] if mode == "vxlan" else [])}
        if mode == "vpc-route":
            modes[mode]["paths"][3] = fake_path("ecs-pod", [7.0])
    report = {"format": perf.FORMAT, "scenario": "s.yaml", "modes": modes,
              "settings": {"repeat": 2, "seconds": 1, "udp_rate": "500M"},
              "machine": {"kernel": "6.1", "cpus": 2, "ovs": "ovs-vswitchd (Open vSwitch) 3.1.0"},
              "references": {"veth": ref("raw veth pair", [15.0, 17.0]), "linux-bridge": ref("Linux bridge", [14.0])},
              "duration_s": 12.0}
    perf_report.add_ratios(report)
    report["targets"] = perf_report.targets(report)
    return report


def test_ratios_are_to_the_raw_veth_median():
    r = fake_report()
    assert r["references"]["veth"]["ratio_to_veth"] == 1.0
    assert r["references"]["linux-bridge"]["ratio_to_veth"] == pytest.approx(14 / 16)
    p = perf_report._path(r, "vpc-route", "pod-pod-same-vswitch")
    assert p["ratio_to_veth"] == pytest.approx(8.05 / 16)
    assert perf_report._path(r, "vxlan", "ecs-pod")["ratio_to_veth"] is None


def test_targets_judge_issue_21s_ratios_against_references_of_the_same_run():
    t = {x["target"]: x for x in fake_report()["targets"]}
    across = t["vxlan: pod to pod across nodes / raw veth >= 0.4x"]
    assert across["ok"] is False and across["met"] is False
    assert across["shown"] == "0.02x (slower path 0.25 Gbit/s)" and across["reference"] == "raw veth 16.00 Gbit/s"
    assert t["vpc-route: pod to pod across nodes / raw veth >= 0.5x"]["ok"] is True     # 8.0 / 16 = 0.5
    same = t["vxlan / vpc-route, pod to pod, same node >= 0.9x"]
    assert same["ok"] is True and same["figure"] == pytest.approx(1.0) and same["reference"] == "vpc-route 10.00 Gbit/s"
    vs = t["vxlan / vpc-route, pod to pod, across nodes, one vSwitch >= 0.7x"]
    assert vs["ok"] is False and vs["figure"] == pytest.approx(0.30 / 8.05)
    clusterip = t["vxlan: pod to ClusterIP / raw veth >= 0.4x"]
    assert clusterip["ok"] is False and clusterip["verdict"] == "not met: not measured"
    assert t["vxlan: packet-ins == 0"]["ok"] is False and t["vpc-route: packet-ins == 0"]["ok"] is True
    assert "vxlan: pod to NodePort / raw veth >= 0.4x" in t and "vxlan / vpc-route, pod to pod, across vSwitches >= 0.7x" in t


def test_vxlan_targets_met_when_the_figures_reach_them():
    r = fake_report()
    for p in r["modes"]["vxlan"]["paths"]:
        if p.get("tcp"):
            p["tcp"]["gbps"] = perf.stat([7.0])         # 7 / 16 = 0.44x veth; 7 / 8.05 = 0.87x vpc-route
    r["modes"]["vxlan"]["paths"] += [fake_path("pod-clusterip", [6.5]), fake_path("pod-nodeport", [6.6])]
    got = {v.target: v for v in perf_report.verdicts(r)}
    assert got["vxlan: pod to pod across nodes / raw veth >= 0.4x"].met
    assert got["vxlan: pod to ClusterIP / raw veth >= 0.4x"].met and got["vxlan: pod to NodePort / raw veth >= 0.4x"].met
    assert got["vxlan / vpc-route, pod to pod, across nodes, one vSwitch >= 0.7x"].met
    assert not got["vxlan / vpc-route, pod to pod, same node >= 0.9x"].met          # 7 / 10
    only = fake_report()
    del only["modes"]["vpc-route"]
    assert not any("vpc-route" in v.target for v in perf_report.verdicts(only))   # no reference: no row


def test_report_is_json_and_the_table_has_a_row_per_reference_and_measured_path():
    r = fake_report()
    again = json.loads(json.dumps(r))
    assert again["format"] == 1 and set(again["modes"]) == {"vxlan", "vpc-route"}
    rows = perf_report.rows(r)
    assert [row[:2] for row in rows[:2]] == [["raw veth pair", "reference"], ["Linux bridge", "reference"]]
    assert len(rows) == 2 + 4 * 2
    assert all(len(row) == len(perf_report.COLUMNS) for row in rows)
    same = next(row for row in rows if row[:2] == ["pod to pod, same node", "vpc-route"])
    assert same[2] == "10.00" and same[3] == "0.62" and same[8] == "2.00 / 1.05" and same[9] == "1.50 / 1.20"
    spread = next(row for row in rows if row[:2] == ["pod to pod, across nodes, one vSwitch", "vpc-route"])
    assert spread[2] == "8.05 (8.00-8.10)"
    skipped = next(row for row in rows if row[:2] == ["ECS to pod", "vxlan"])
    assert skipped[2] == "n/a: overlay"
    assert perf_report.failures(r) == []
    r["modes"]["vpc-route"]["paths"][0].update(errors=["TCP run 1, attempt 1: iperf3: busy"], complete=True)
    assert perf_report.failures(r) == []                   # the retry measured it
    r["modes"]["vpc-route"]["paths"][0].update(errors=["TCP run 1, attempt 2: iperf3: boom"], complete=False)
    assert perf_report.failures(r) == ["vpc-route pod to pod, same node: TCP run 1, attempt 2: iperf3: boom"]
    assert not any("packet-ins ==" in line for line in perf_report.summary_lines(r))     # in the verdict table
    from rich.console import Console
    console = Console(record=True, width=200)
    console.print(perf_report.table(r))
    assert "raw veth pair" in console.export_text()
    console.print(perf_report.verdict_table(json.loads(json.dumps(r))))
    text = console.export_text()
    assert "vxlan: packet-ins == 0" in text and "2 packet-in(s)" in text and "not met: not measured" in text


def test_chart_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "perf.png"
    perf_report.chart(fake_report(), str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_references_are_merged_before_and_after():
    before = {"veth": {"title": "raw veth pair", "tcp": {"gbps": perf.stat([18.0, 17.0])}, "udp": None,
                       "ping_ms": None, "connect_ms": None}}
    after = {"veth": {"title": "raw veth pair", "tcp": {"gbps": perf.stat([14.0])}, "udp": None}}
    m = perf_report.merge_references(before, after)["veth"]
    assert (m["tcp"]["gbps"]["median"], m["tcp"]["gbps"]["min"], m["tcp"]["gbps"]["n"]) == (17.0, 14.0, 3)


# ---------------------------------------------------------------------------------- scale
def test_growth_per_doubling():
    assert scale.per_doubling(100, 2.0, 200, 4.0) == pytest.approx(2.0)             # linear
    assert scale.per_doubling(100, 1.0, 400, 16.0) == pytest.approx(4.0)            # quadratic
    assert scale.per_doubling(10, 1.0, 50, 5.0) == pytest.approx(2.0)
    assert scale.per_doubling(10, None, 50, 5.0) is None and scale.per_doubling(10, 0, 50, 5.0) is None
    assert scale.growth([(50, 5.0), (10, 1.0), (100, 10.0)]) == [pytest.approx(2.0), pytest.approx(2.0)]


def test_scale_nodes_and_memory_guard():
    assert [scale.nodes_for(n) for n in (10, 500, 1000, 2000)] == [4, 4, 5, 10]
    done = [{"hosts": 100, "kubevpc": {"peak_mib": 1000.0}}]
    assert scale.fits(500, done, 10_000) == (True, "")
    ok, why = scale.fits(1000, done, 10_000)
    assert not ok and "needs about 12500 MiB" in why
    assert scale.fits(10**6, [], 1.0) == (True, "")


def _size(pods, up, mn_up, down, mn_down, mib, mn_mib):
    return {"pods": pods, "hosts": pods + 5, "kubevpc": {"up_s": up, "down_s": down, "peak_mib": mib},
            "mininet": {"up_s": mn_up, "down_s": mn_down, "peak_mib": mn_mib}}


def test_scale_targets_are_the_issues_each_met_or_not_with_figure_and_reference():
    sizes = [_size(100, 2.0, 2.0, 3.0, 4.0, 300, 200), _size(500, 9, 10, 18, 10, 1500, 1000),
             _size(1000, 19, 20, 21, 20, 2900, 2000)]
    t = {x["target"].split(" <=")[0].split(" pods on")[0]: x for x in scale.targets(sizes)}
    assert list(t) == ["bring-up of 100 pods", "teardown of 100 pods", "teardown of 1,000 pods",
                       "memory per pod (marginal)", "3,000"]
    # bring-up of 100 pods: 1.0x is met, no longer 1.5x
    assert t["bring-up of 100 pods"]["ok"] is True and t["bring-up of 100 pods"]["figure"] == "2.00 s = 1.00 x"
    assert t["bring-up of 100 pods"]["reference"] == "plain Mininet 2.00 s (105 hosts)"
    sizes[0]["kubevpc"]["up_s"] = 2.4                          # 1.2x: met at 1.5x, not at 1.0x
    assert scale.targets(sizes)[0]["ok"] is False
    assert t["teardown of 100 pods"]["ok"] is True and t["teardown of 1,000 pods"]["ok"] is False
    assert t["teardown of 1,000 pods"]["figure"] == "21.00 s = 1.05 x"
    # memory: between the two largest sizes, (2900 - 1500) / 500 MiB a pod; Mininet's the same way
    m = t["memory per pod (marginal)"]
    assert m["ok"] is True and m["figure"] == "2.80 MiB a pod from 500 to 1,000 pods"
    assert m["reference"] == "plain Mininet 2.00 MiB a host"
    assert t["3,000"]["ok"] is None and t["3,000"]["figure"] == "not measured (largest: 1,000 pods)"
    lines = [scale.target_line(x) for x in scale.targets(sizes)]
    assert lines[0] == ("target NOT met: bring-up of 100 pods <= 1.0 x plain Mininet's for as many hosts: "
                        "2.40 s = 1.20 x; reference: plain Mininet 2.00 s (105 hosts)")
    assert lines[-1].startswith("target NOT met (not measured): 3,000 pods on this machine")
    sizes.append(_size(3000, 58, 60, 60, 61, 9000, 6000))
    assert scale.targets(sizes)[-1]["ok"] is True and scale.targets(sizes)[3]["ok"] is False   # 3.05 MiB a pod
    assert [x["ok"] for x in scale.targets(sizes[:1])][3:] == [None, None], "one size: no marginal, no 3,000"


def test_scale_sizes_up_to_3000_when_asked():
    assert scale.sizes_asked("10,50,100,250,500", None) == [10, 50, 100, 250, 500]
    assert scale.sizes_asked("100", 3000) == [10, 50, 100, 250, 500, 1000, 2000, 3000]
    assert scale.sizes_asked("100", 1500) == [10, 50, 100, 250, 500, 1000]
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "100,4000"])
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "x"])


@pytest.mark.parametrize("pods", [1000, 3000])
def test_the_generated_scenario_plans_up_to_3000_pods_in_every_mode(tmp_path, pods):
    from kubevpc.bench.bringup import generated_scenario
    for mode in ("vxlan", "vpc-route", "eni"):
        plan = plan_of(tmp_path, generated_scenario(pods, scale.nodes_for(pods)), mode)
        assert len(plan.own_pods) == pods + 1, mode                 # and the cluster DNS pod
    assert generated_scenario(100)["manifests"][0]["spec"]["replicas"] == 100, "the default sizes' scenario as before"
    assert generated_scenario(100)["cloud"]["vpcs"][0]["vswitches"][1]["cidr"] == "192.168.4.0/22"


# ------------------------------------------------------------------- the data plane's offloads
NETDEV_TSO = Datapath("netdev", True, "")


@pytest.mark.parametrize("mode, full", [("vxlan", True), ("vpc-route", False), ("eni", False)])
def test_userspace_tso_stays_on_where_it_is_correct(tmp_path, mode, full):
    plan = plan_of(tmp_path, perf.perf_scenario(), mode)
    o = offloads_for(plan, NETDEV_TSO)
    assert o.full_checksums is full
    # TSO through node uplinks: the uplinks get the namespaces' one MTU, never more
    assert o.link_mtu == (LINK_MTU if full else 1500)
    assert ("VXLAN" in o.note) is full


def test_full_checksums_without_tso_when_forced_and_with_mixed_mtus(tmp_path):
    plan = plan_of(tmp_path, perf.perf_scenario(), "vpc-route")
    assert offloads_for(plan, Datapath("netdev", False, "")).full_checksums
    assert "KUBEVPC_FULL_CHECKSUMS=1" in offloads_for(plan, NETDEV_TSO, force_full=True).note
    kernel = offloads_for(plan, Datapath("system", False, ""))
    assert (kernel.full_checksums, kernel.link_mtu) == (False, LINK_MTU)
    data = perf.perf_scenario()
    data["cluster"]["underlayMTU"] = 9000          # nodes and pods 9000, the plain ECS 1500
    mixed = offloads_for(plan_of(tmp_path, data, "vpc-route"), NETDEV_TSO)
    assert mixed.full_checksums and "1500, 9000" in mixed.note


def test_offloads_can_be_left_on_for_measuring_even_where_they_are_wrong(tmp_path):
    vxlan = offloads_for(plan_of(tmp_path, perf.perf_scenario(), "vxlan"), NETDEV_TSO, force_full=False)
    assert not vxlan.full_checksums and vxlan.link_mtu == LINK_MTU, "pods 1450, instances 1500: uplinks stay 9216"
    assert "KUBEVPC_FULL_CHECKSUMS=0" in vxlan.note and "fails" in vxlan.note
    route = offloads_for(plan_of(tmp_path, perf.perf_scenario(), "vpc-route"), NETDEV_TSO, force_full=False)
    assert (route.full_checksums, route.link_mtu) == (False, 1500)


@pytest.mark.parametrize("value, setting", [(None, None), ("", None), ("1", True), ("0", False), (" 1 ", True)])
def test_full_checksums_setting_reads_the_environment(value, setting):
    from topologies.datapath import full_checksums_setting
    env = {} if value is None else {"KUBEVPC_FULL_CHECKSUMS": value}
    assert full_checksums_setting(env) is setting


def test_full_checksums_setting_refuses_other_values():
    from kubevpc.errors import BuildError
    from topologies.datapath import full_checksums_setting
    with pytest.raises(BuildError, match=r"KUBEVPC_FULL_CHECKSUMS='yes': expected 1 .*, 0 .* or unset"):
        full_checksums_setting({"KUBEVPC_FULL_CHECKSUMS": "yes"})
