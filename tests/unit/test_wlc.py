"""The wlc scheduler: established connections counted per backend from the conntrack table, and
the SLB group's bucket weights that follow from them. Dumps are written by hand in the formats
`ovs-appctl dpctl/dump-conntrack` prints for the userspace and the kernel datapath."""
from __future__ import annotations

from pathlib import Path

import yaml

from controller.compile import compile_plan
from controller.slb import WLC_SCALE, active_connections, wlc_weight
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

SERVICES = Path(__file__).resolve().parents[1] / "e2e" / "data" / "services.yaml"
SCHEDULER = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler"


def plan_with_wlc(tmp_path, mode: str = "eni"):
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = mode
    lb = next(m for m in data["manifests"] if m["metadata"]["name"] == "web-lb")
    lb["metadata"]["annotations"][SCHEDULER] = "wlc"
    path = tmp_path / "wlc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load(str(path)), "kvwl")


def userspace(src, dst, dport, rsrc, rsport, state="ESTABLISHED", proto="tcp", mark=3):
    info = f",protoinfo=(state_orig={state},state_reply={state})" if proto == "tcp" else ""
    return (f"{proto},orig=(src={src},dst={dst},sport=40000,dport={dport}),reply=(src={rsrc},dst={src},"
            f"sport={rsport},dport=40000),id=0,zone=14657,status=0,mark={mark}{info}")


def kernel(src, dst, dport, rsrc, rsport, state="ESTABLISHED"):
    return (f"tcp,orig=(src={src},dst={dst},sport=40001,dport={dport}),reply=(src={rsrc},dst={src},"
            f"sport={rsport},dport=40001),zone=7,mark=3,protoinfo=(state={state})")


def test_established_connections_are_counted_per_backend_of_each_wlc_listener(tmp_path):
    plan = plan_with_wlc(tmp_path)
    lb = next(s for s in plan.slbs if s.service == "default/web-lb")
    rr = next(s for s in plan.slbs if s.service == "default/web-lb-local")
    assert lb.scheduler == "wlc" and rr.scheduler == "wrr"
    [li] = lb.listeners
    web0, web1 = (f"{b.ip}:{b.port}" for b in li.backends)
    a0, p0 = web0.split(":")
    a1, p1 = web1.split(":")
    client = "192.168.2.9"
    dump = "\n".join([
        userspace(client, lb.vip, 80, a0, p0), userspace(client, lb.vip, 80, a0, p0), kernel(client, lb.vip, 80, a0, p0),
        userspace(client, lb.vip, 80, a1, p1),
        # not counted: closing or closed, half-open, not to the listener's port, not DNATed (the
        # reply comes from the VIP itself), a reply source that is no backend, another SLB's listener
        userspace(client, lb.vip, 80, a1, p1, state="TIME_WAIT"), kernel(client, lb.vip, 80, a1, p1, state="FIN_WAIT"),
        userspace(client, lb.vip, 80, a1, p1, state="SYN_SENT"),
        userspace(client, lb.vip, 81, a1, p1), userspace(client, lb.vip, 80, lb.vip, 80),
        userspace(client, lb.vip, 80, "10.9.9.9", p1), userspace(client, rr.vip, 80, a1, p1),
        "garbage line", ""])
    assert active_connections(plan, dump) == {li.name: {web0: 3, web1: 1}}
    assert active_connections(plan, "") == {li.name: {web0: 0, web1: 0}}


def test_udp_entries_count_whatever_their_state(tmp_path):
    data = yaml.safe_load(SERVICES.read_text())
    data["cluster"]["mode"] = "eni"
    lb = next(m for m in data["manifests"] if m["metadata"]["name"] == "web-lb")
    lb["metadata"]["annotations"][SCHEDULER] = "wlc"
    lb["spec"]["ports"] = [{"port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]
    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = make_plan(load(str(path)), "kvwl")
    slb = next(s for s in plan.slbs if s.service == "default/web-lb")
    [li] = slb.listeners
    b = li.backends[0]
    dump = userspace("192.168.2.9", slb.vip, 53, b.ip, b.port, proto="udp")
    assert active_connections(plan, dump)[li.name][f"{b.ip}:{b.port}"] == 1


def test_weights_fall_as_connections_grow():
    assert [wlc_weight(1, n) for n in (0, 1, 3, 9, 99, 10**6)] == [WLC_SCALE, 50, 25, 10, 1, 1]
    assert wlc_weight(3, 2) == WLC_SCALE and wlc_weight(700, 0) == 0xFFFF


def test_the_groups_follow_the_counts_and_other_schedulers_do_not(tmp_path):
    for mode in ("eni", "vxlan"):
        plan = plan_with_wlc(tmp_path, mode)
        lb = next(s for s in plan.slbs if s.service == "default/web-lb")
        [li] = lb.listeners
        keys = [f"{b.ip}:{b.port}" for b in li.backends]
        loads = {li.name: {keys[0]: 9}}
        vsw = plan.vswitch(lb.vswitch).bridge
        idle, busy = compile_plan(plan, {}, None)[vsw], compile_plan(plan, None, loads)[vsw]
        assert idle.groups == {}, "the checkers have not called any backend healthy yet"
        static = compile_plan(plan, None, None)[vsw]
        wlc_group = next(g for g in busy.groups.values() if g.note == li.name)
        assert [b.weight for b in wlc_group.buckets] == [10] + [WLC_SCALE] * (len(keys) - 1), mode
        assert [b.weight for b in next(g for g in static.groups.values() if g.note == li.name).buckets] == \
            [WLC_SCALE] * len(keys)
        # the wrr listener keeps its weights whatever is counted
        other = next(s for s in plan.slbs if s.service == "default/web-lb-local").listeners[0]
        assert [b.weight for b in next(g for g in busy.groups.values() if g.note == other.name).buckets] == \
            [b.weight for b in other.backends if b.weight > 0]
