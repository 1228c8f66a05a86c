"""The NetworkPolicy benchmark's generated world and policies are valid scenarios, and its
figures come from the compiler (no timing is asserted: that is the benchmark's job)."""
from __future__ import annotations

from kubevpc.bench.netpol import compile_case, policies, world


def test_generated_policies_cover_every_kind_and_compile():
    ps = policies(12)
    assert len(ps) == 12 and len({p["metadata"]["name"] for p in ps}) == 12
    assert policies(12) == ps, "a fixed seed: every run compiles the same set"
    kinds = {("Egress" if "egress" in p["spec"] else "Ingress") for p in ps}
    assert kinds == {"Ingress", "Egress"}
    r = compile_case(40, 12, repeat=1)
    assert r["pods"] == 40 and r["policies"] == 12
    assert 0 < r["policy_flows"] <= r["all_flows"]
    assert r["cross_product_flows"] > 0 and r["flows_per_policy_max"] >= r["flows_per_policy_median"] > 0


def test_world_spreads_pods_over_namespaces_and_apps():
    doc = world(23)
    replicas = sum(m["spec"]["replicas"] for m in doc["manifests"] if m["kind"] == "Deployment")
    assert replicas == 23
    assert {m["metadata"]["name"] for m in doc["manifests"] if m["kind"] == "Namespace"} == {f"ns{i}" for i in range(10)}
