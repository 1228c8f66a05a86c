"""Pod QoS: the bandwidth annotations of a pod checked and read (kubevpc.k8s.bandwidth), for the
builder to shape the pod's traffic with a token bucket filter (topologies/netns.py).

ACK honours `kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth` in Terway
clusters; its comparison of network plugins lists pod QoS as not supported for Flannel. So they
are refused in vxlan and vpc-route mode, and on host-network pods, which have no interface of
their own to shape (the network plugin is not called for them)."""
from __future__ import annotations

from ..k8s.bandwidth import BANDWIDTH_ANNOTATIONS, bandwidth_bits
from .context import Context


def pod_bandwidth(ctx: Context, annotations: dict[str, str], at: tuple, source, host_network: bool) -> tuple[int, int]:
    """(ingress, egress) limits in bits per second, 0 for none, from a pod's annotations at path
    `at` (its metadata); every problem is reported with the annotation's path."""
    mode = ctx.sc.cluster.mode if ctx.sc.cluster else ""
    out = []
    for key in BANDWIDTH_ANNOTATIONS:
        text = annotations.get(key)
        bits = 0
        if text is not None:
            path = at + ("annotations", key)
            try:
                bits = bandwidth_bits(text)
            except ValueError as exc:
                ctx.bad(path, text, str(exc), source)
            else:
                if mode != "eni":
                    ctx.bad(path, text, "pod bandwidth limits are a Terway feature (ACK lists pod QoS as not "
                            f"supported for Flannel); expected cluster.mode eni, not {mode}", source)
                elif host_network:
                    ctx.bad(path, text, "a hostNetwork pod has no interface of its own to shape; expected no "
                            "bandwidth annotation, or hostNetwork false", source)
        out.append(bits)
    return out[0], out[1]
