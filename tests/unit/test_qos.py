"""Pod QoS: the bandwidth annotations read as kubernetes' pkg/util/bandwidth reads them, refused
where ACK does not offer them, carried in the plan, and turned into the token bucket filters the
builder installs (scenarios/qos.yaml; tests/e2e/test_qos.py measures them with iperf3)."""
from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from kubevpc.errors import ScenarioError
from kubevpc.k8s.bandwidth import EGRESS_BANDWIDTH, INGRESS_BANDWIDTH, bandwidth_bits, describe_bits, parse_quantity
from kubevpc.planning import make_plan
from kubevpc.scenario.load import load
from topologies import netns

from .problems import check, line_of
from .test_services import write

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "scenarios" / "qos.yaml"
SHAPED, FREE, BATCH = 0, 1, 3          # manifests of qos.yaml by index


def data() -> dict:
    return copy.deepcopy(yaml.safe_load(SCENARIO.read_text()))


def refused(tmp_path: Path, d: dict, mode: str | None = None):
    path = write(tmp_path, d)
    with pytest.raises(ScenarioError) as info:
        make_plan(load(str(path), mode=mode), "t")
    return info.value.problems, path, path.read_text()


@pytest.mark.parametrize("text, value", [
    ("100M", 100_000_000), ("1G", 10**9), ("512Ki", 512 * 1024), ("1.5M", 1_500_000), ("10e6", 10_000_000),
    ("1E3", 1000), ("+2k", 2000), (".5M", 500_000), ("1000", 1000), ("1Mi", 2**20), ("1500m", Fraction(3, 2))])
def test_quantities_are_read_as_the_api_server_reads_them(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "100K", "100 M", "-1M", "M", "1.2.3", "10mbit", "1e", "0x10", "1Mb"])
def test_what_is_not_a_quantity_is_refused(text):
    with pytest.raises(ValueError, match="expected a quantity of bits per second"):
        parse_quantity(text)


def test_the_limits_of_pkg_util_bandwidth():
    assert bandwidth_bits("1k") == 1000 and bandwidth_bits("1P") == 10**15
    assert bandwidth_bits("1000.2") == 1001          # Quantity.Value() rounds up
    with pytest.raises(ValueError, match=r"unreasonably small \(< 1kbit\)"):
        bandwidth_bits("999")
    with pytest.raises(ValueError, match=r"unreasonably large \(> 1Pbit\)"):
        bandwidth_bits("2P")
    assert describe_bits(100_000_000) == "100 Mbit/s" and describe_bits(1_500) == "1.5 kbit/s"


def test_the_plan_carries_each_pods_limits():
    plan = make_plan(load(str(SCENARIO)), "t")
    shaped, free = plan.host("pod/default/shaped"), plan.host("pod/default/free")
    assert (shaped.ingress_bandwidth, shaped.egress_bandwidth) == (100_000_000, 50_000_000)
    assert (free.ingress_bandwidth, free.egress_bandwidth) == (0, 0)
    batch = next(h for h in plan.pods if h.name.startswith("batch-"))
    assert (batch.ingress_bandwidth, batch.egress_bandwidth) == (0, 10_000_000)     # from the template


@pytest.mark.parametrize("mode", ["vxlan", "vpc-route"])
def test_flannel_modes_refuse_the_annotations_with_acks_reason(tmp_path, mode):
    problems, path, text = refused(tmp_path, data(), mode)
    assert len(problems) == 3, problems
    base = f"manifests[{SHAPED}].metadata.annotations."
    for key, value in ((INGRESS_BANDWIDTH, "100M"), (EGRESS_BANDWIDTH, "50M")):
        p = next(p for p in problems if p.path == base + key)
        check(p, path, value, line_of(text, key, after="name: shaped"), "Terway feature", "not supported for Flannel",
              f"expected cluster.mode eni, not {mode}")
    p = next(p for p in problems if p.path.startswith(f"manifests[{BATCH}].spec.template.metadata.annotations"))
    assert p.value == "10M"


@pytest.mark.parametrize("value, words", [("100K", ["expected a quantity", "100M"]),
                                          ("10", ["unreasonably small (< 1kbit)"]),
                                          ("3P", ["unreasonably large (> 1Pbit)"])])
def test_a_bad_value_is_refused_at_its_annotation(tmp_path, value, words):
    d = data()
    d["manifests"][FREE]["metadata"]["annotations"] = {EGRESS_BANDWIDTH: value}
    problems, path, text = refused(tmp_path, d)
    assert len(problems) == 1, problems
    check(problems[0], path, value, line_of(text, EGRESS_BANDWIDTH, after="name: free"), *words)
    assert problems[0].path == f"manifests[{FREE}].metadata.annotations.{EGRESS_BANDWIDTH}"


def test_a_host_network_pod_has_no_interface_to_shape(tmp_path):
    d = data()
    d["manifests"][SHAPED]["spec"]["hostNetwork"] = True
    problems, path, text = refused(tmp_path, d)
    assert {p.path for p in problems} == {f"manifests[{SHAPED}].metadata.annotations.{k}"
                                          for k in (INGRESS_BANDWIDTH, EGRESS_BANDWIDTH)}
    assert all("hostNetwork pod has no interface of its own" in p.expected for p in problems)


class FakeIPRoute:
    """What the shapers ask of netlink, recorded."""

    def __init__(self):
        self.calls: list[tuple] = []

    def tc(self, *args, **kwargs):
        self.calls.append(("tc", *args, kwargs))

    def link(self, *args, **kwargs):
        self.calls.append(("link", *args, kwargs))

    def link_lookup(self, ifname):
        return [7]


def test_egress_is_a_token_bucket_on_the_pods_interface():
    ipr = FakeIPRoute()
    netns.shape(ipr, 3, 100_000_000)
    assert ipr.calls == [("tc", "add", "tbf", {"index": 3, "handle": "1:", "rate": "100000000bit",
                                               "burst": 125_000, "latency": "25ms"})]
    ipr = FakeIPRoute()
    netns.shape(ipr, 3, 1_000_000)          # 10 ms would be 1,250 bytes: less than one GSO segment
    assert ipr.calls[0][-1]["burst"] == 65536 + 1514


def test_ingress_is_redirected_through_an_ifb_of_the_pods_own():
    ipr = FakeIPRoute()
    netns.shape_ingress(ipr, 3, 20_000_000)
    kinds = [(c[0], c[1], c[2] if c[0] == "tc" else c[2].get("kind", c[2].get("state"))) for c in ipr.calls]
    assert kinds == [("link", "add", "ifb"), ("link", "set", "up"), ("tc", "add", "tbf"), ("tc", "add", "ingress"),
                     ("tc", "add-filter", "u32")]
    assert ipr.calls[2][-1]["index"] == 7 and ipr.calls[2][-1]["rate"] == "20000000bit"     # on the IFB
    redirect = ipr.calls[4][-1]
    assert redirect["index"] == 3 and redirect["action"] == {"kind": "mirred", "direction": "egress",
                                                             "action": "redirect", "ifindex": 7}

