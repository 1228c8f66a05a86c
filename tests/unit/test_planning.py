"""The planning stages' own parts: names, the allocators, and the stage sequence's checkpoints.
(Every stage's output is held byte for byte by tests/unit/test_golden.py.)"""
from __future__ import annotations

import pytest

from kubevpc.errors import ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import IFNAMSIZ, Names, make_plan
from kubevpc.planning.context import AddressPool, Context, Problems, VSwitchPorts
from kubevpc.planning.model import OFPORT_FIRST_ATTACHMENT, HostPlan, VSwitchPlan
from kubevpc.planning.names import interface_names, too_long
from tests.unit.plans import DEFAULT, MODES, plan_of


def test_names_start_with_the_run_and_fit_the_kernel():
    n = Names("kvxxxx")
    made = [n.vrouter(0), n.vswitch(12), n.node(9), n.edge(1), n.internet(), n.vrouter_to_vswitch(3),
            n.vswitch_to_vrouter(3), n.vrouter_to_edge(0), n.edge_to_vrouter(0), n.edge_to_internet(0),
            n.internet_to_edge(0), *n.uplink(9, 2), n.tunnel(9), n.ecs_veth(99), n.pod_veth(999),
            n.slb_veth(9), n.internet_veth(9)]
    assert all(x.startswith("kvxxxx") for x in made)
    assert len(set(made)) == len(made)
    assert max(map(len, made)) <= IFNAMSIZ
    assert n.pod_netns("web", "a-0") == "kvxxxx-pod-web_a-0"      # namespaces have no IFNAMSIZ limit


@pytest.mark.parametrize("mode", MODES)
def test_every_interface_name_of_a_plan_is_one_names_makes(mode):
    plan = plan_of(DEFAULT, mode, "kvxxxx")
    names = interface_names(plan)
    assert names and all(x.startswith("kvxxxx") for x in names)
    assert too_long(plan) is None


def test_too_long_names_the_first_name_over_the_limit_and_a_repeated_name_is_a_bug():
    plan = plan_of(DEFAULT, "vxlan", "kvxxxx")
    hosts = list(plan.hosts)
    hosts[1] = hosts[1].model_copy(update={"veth": "kvxxxx-sixteen!"[:15] + "x"})
    assert too_long(plan.model_copy(update={"hosts": tuple(hosts)})) == "kvxxxx-sixteen!x"
    hosts[1] = hosts[1].model_copy(update={"veth": hosts[0].veth})
    with pytest.raises(AssertionError, match="duplicate interface names"):
        too_long(plan.model_copy(update={"hosts": tuple(hosts)}))


def _ctx(previous=None) -> Context:
    loaded = load(str(DEFAULT), mode="vxlan")
    return Context(loaded=loaded, run="kv", problems=Problems(loaded.source), previous=previous or {})


def _vsw(cidr: str) -> VSwitchPlan:
    return VSwitchPlan(name="v", vpc="vpc", zone="z", cidr=cidr, gateway="", gateway_mac="", bridge="b",
                       vrouter_port=1)


def test_address_pool_skips_taken_addresses_and_says_which_vswitch_is_full():
    ctx = _ctx()
    pool = AddressPool(ctx, [_vsw("10.0.0.0/29")])         # usable: .1 .2 .3 .4
    pool.taken["v"].add("10.0.0.2")
    got = [pool.allocate("v", ("p",), f"host {i}") for i in range(4)]
    assert got == ["10.0.0.1", "10.0.0.3", "10.0.0.4", None]
    assert "vSwitch v (10.0.0.0/29) has no free address left for host 3" in str(ctx.problems.items[0])


def test_address_pool_keeps_a_running_hosts_address_and_never_hands_it_out():
    old = HostPlan(key="pod/default/a", kind="pod", name="a", netns="n", veth="v", bridge="b", ofport=1000,
                   ip="10.0.0.3", prefixlen=29, mac="m", gateway="g", gateway_mac="gm", mtu=1500, vswitch="v")
    ctx = _ctx({old.key: old})
    pool = AddressPool(ctx, [_vsw("10.0.0.0/29")])
    pool.hold_previous()
    assert pool.allocate("v", ("p",), "a", key="pod/default/a") == "10.0.0.3"
    assert [pool.allocate("v", ("p",), "b"), pool.allocate("v", ("p",), "c"), pool.allocate("v", ("p",), "d")] == \
        ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
    assert not ctx.problems


def test_vswitch_ports_count_from_the_first_attachment_per_vswitch():
    ports = VSwitchPorts()
    assert [ports.take("a"), ports.take("a"), ports.take("b")] == \
        [OFPORT_FIRST_ATTACHMENT, OFPORT_FIRST_ATTACHMENT + 1, OFPORT_FIRST_ATTACHMENT]


def test_problems_collects_and_a_checkpoint_raises_them_all():
    ctx = _ctx()
    ctx.problems.checkpoint()                   # nothing found: planning goes on
    ctx.problems.unique([("a", 0), ("a", 1), ("a", 2)], ["x", "y", "x"], "thing")
    ctx.bad(("b",), 1, "expected 2")
    with pytest.raises(ScenarioError) as err:
        ctx.problems.checkpoint()
    assert [p.path for p in err.value.problems] == ["a[2]", "b"]


def test_the_deprecated_modules_still_give_the_plan_the_loader_and_the_schema():
    import importlib
    import warnings

    with warnings.catch_warnings():             # the first import warns too; the reloads below show it
        warnings.simplefilter("ignore", DeprecationWarning)
        from kubevpc import load as old_load, model as old_model, plan as old
    from kubevpc.scenario import load as new_load, model as new_model
    for module, new in ((old, "kubevpc.planning"), (old_load, "kubevpc.scenario.load"),
                        (old_model, "kubevpc.scenario.model")):
        with pytest.warns(DeprecationWarning, match=f"{module.__name__} is deprecated: import {new}"):
            importlib.reload(module)
    assert old.make_plan is make_plan and old.Plan is plan_of(DEFAULT, "eni").__class__
    assert old_load.load is new_load.load and old_load.Loaded is new_load.Loaded
    assert old_model.Scenario is new_model.Scenario
