"""What a plan holds that ACK accepts but does not act on, told as warnings (not refusals): a
NetworkPolicy that selects a pod with an exclusive ENI (Terway's eniType ENI). ACK, "Configure
exclusive ENI mode for a node pool", Limitations: "Pods assigned an exclusive ENI do not support
eBPF network acceleration or Kubernetes NetworkPolicy"
(https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/configure-a-node-pool-level-container-network).
The API server takes the policy; it isolates the other pods it selects, and none of the exclusive
ones (controller/policy.py and kubevpc/evaluator/netpol.py, `enforced`).

The warnings go where the loader's go (`Loaded.warnings`, kinds skipped): one line each, on stderr
from `kubevpc validate`, `plan`, `run` and the other commands that plan a scenario, and to a Lab's
`say`, naming the policy's file, line and path.
"""
from __future__ import annotations

from .. import k8s
from ..errors import Problem
from ..scenario.load import Loaded, Manifest
from .model import Plan

NOT_ENFORCED = "ACK does not enforce NetworkPolicy on such pods"


def plan_warnings(loaded: Loaded, plan: Plan) -> list[Problem]:
    """One warning per NetworkPolicy of `loaded` that selects pods of `plan` with an exclusive ENI
    (by its namespace and podSelector, on the pods' labels as planned), listing those pods."""
    exclusive = [h for h in plan.hosts if h.kind == "pod" and h.exclusive_eni and not h.host_network]
    out = []
    for m in loaded.manifests:
        policy = m.obj
        if not isinstance(policy, k8s.NetworkPolicy) or not exclusive:
            continue
        pods = [h for h in exclusive if h.namespace == policy.metadata.namespace
                and policy.spec.podSelector.matches(h.labels)]
        if pods:
            out.append(_warning(m, policy, [f"{h.namespace}/{h.name}" for h in pods]))
    return out


def _warning(m: Manifest, policy: k8s.NetworkPolicy, pods: list[str]) -> Problem:
    which = f"pod {pods[0]}, which has an exclusive ENI" if len(pods) == 1 else \
        f"pods {', '.join(pods)}, which have exclusive ENIs"
    line = m.source.problem(m.prefix, None, "").line if m.source is not None else None
    return Problem(m.file, m.path, f"NetworkPolicy/{policy.key}",
                   f"selects {which}: {NOT_ENFORCED}", line)
