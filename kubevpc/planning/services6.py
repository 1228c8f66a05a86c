"""Services in a dual-stack cluster (KEP-563): each Service's IP families and policy as the API
server completes them (pkg/registry/core/service/storage/alloc.go, initIPFamilyFields), with its
errors in its words, and the IPv6 ClusterIPs from cluster.serviceCIDRv6 (ACK's "IPv6 Service
CIDR"). A cluster is dual stack for Services when it has a service CIDR of each family: here, a
dual-stack eni cluster with a serviceCIDRv6. Its default family is IPv4 (serviceCIDR is the
primary range), as ACK has it.

kubevpc emulates SLBs in IPv4 only: an ACK SLB may be dual stack, but a LoadBalancer Service
without IPv4 among its families is refused, with that reason.
"""
from __future__ import annotations

import ipaddress

from .context import Context

SingleStack, PreferDualStack, RequireDualStack = "SingleStack", "PreferDualStack", "RequireDualStack"


def dual_stack_services(cl) -> bool:
    """Does the cluster have a service CIDR of each family?"""
    return bool(cl.dualStack and cl.mode == "eni" and cl.serviceCIDRv6 is not None)


def _declared_families(spec) -> list[str]:
    """spec.ipFamilies, or, when it is empty, the families of the clusterIPs given (as alloc.go
    takes them from clusterIPs)."""
    if spec.ipFamilies:
        return list(spec.ipFamilies)
    out = []
    for ip in spec.clusterIPs or ([spec.clusterIP] if spec.clusterIP else []):
        try:
            out.append(f"IPv{ipaddress.ip_address(ip).version}")
        except ValueError:
            pass            # not an address: the stage reports it where it allocates ClusterIPs
    return out


def service_families(ctx: Context, cl, svc, prefix: tuple, src) -> tuple[tuple[str, ...], str]:
    """(ipFamilies, ipFamilyPolicy) of a Service as the API server completes them; () and "" for an
    ExternalName Service. Errors: the policy against the families and clusterIPs, a family the
    cluster lacks, RequireDualStack on a single-stack cluster, and (kubevpc) a LoadBalancer
    without IPv4."""
    spec = svc.spec
    if spec.type == "ExternalName":
        return (), ""
    policy = spec.ipFamilyPolicy or SingleStack
    at = prefix + ("spec", "ipFamilyPolicy")
    declared = _declared_families(spec)
    ips = [ip for ip in spec.clusterIPs if ip != "None"]
    if policy == SingleStack and len(declared) == 2:
        what = "cluster IPs" if len(ips) == 2 and not spec.ipFamilies else "IP families"
        ctx.bad(at, policy, f"must be 'RequireDualStack' or 'PreferDualStack' when multiple {what} are specified", src)
        return ("IPv4",), policy
    dual = dual_stack_services(cl)
    bad = False
    if policy == RequireDualStack and not dual:
        ctx.bad(at, policy, "this cluster is not configured for dual-stack services (kubevpc: cluster.dualStack "
                "with a cluster.serviceCIDRv6)", src)
        bad = True
    for i, family in enumerate(declared):
        if family == "IPv6" and not dual:
            ctx.bad(prefix + ("spec", "ipFamilies", i), family, "not configured on this cluster (kubevpc: expected "
                    "cluster.dualStack with a cluster.serviceCIDRv6)", src)
            bad = True
    if bad:
        return ("IPv4",), policy
    families = declared or ["IPv4"]
    if policy != SingleStack and dual and len(families) == 1:
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    if spec.type == "LoadBalancer" and "IPv4" not in families:
        ctx.bad(prefix + ("spec", "ipFamilies"), families, "an ACK SLB can be dual stack, but kubevpc emulates SLBs "
                "in IPv4 only; expected IPv4 among a LoadBalancer Service's ipFamilies", src)
        return ("IPv4",), policy
    return tuple(families), policy


def cluster_ips6_of(ctx: Context, cl, items: list, families: list[tuple[tuple[str, ...], str]]) -> dict[int, str]:
    """IPv6 ClusterIPs by item, for the Services with IPv6 among their families (not headless):
    the declared ones first (inside serviceCIDRv6, not its first or last address, not taken), then
    the rest in order from its 11th address, as the IPv4 ones are."""
    if not dual_stack_services(cl):
        return {}
    net = cl.serviceCIDRv6
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    out: dict[int, str] = {}
    taken: dict[str, int] = {}
    wanted = [k for k, (svc, _, _) in enumerate(items) if "IPv6" in families[k][0] and not svc.spec.headless]
    for k in wanted:
        svc, prefix, src = items[k]
        want = next((ip for ip in svc.spec.clusterIPs or [svc.spec.clusterIP or ""] if ":" in ip), "")
        if not want:
            continue
        addr = ipaddress.IPv6Address(want)
        i = svc.spec.clusterIPs.index(want) if want in svc.spec.clusterIPs else 0
        if not first <= int(addr) <= last:
            ctx.bad(prefix + ("spec", "clusterIPs", i), want, f"expected an address inside serviceCIDRv6 {net} "
                    "(not its first or last)", src)
        elif str(addr) in taken:
            other = items[taken[str(addr)]][0].metadata
            ctx.bad(prefix + ("spec", "clusterIPs", i), want, f"already allocated to Service {other.namespace}/"
                    f"{other.name}", src)
        else:
            taken[str(addr)], out[k] = k, str(addr)
    cursor = first + 10
    for k in wanted:
        if k in out:
            continue
        while cursor <= last and str(ipaddress.IPv6Address(cursor)) in taken:
            cursor += 1
        if cursor > last:
            svc, prefix, src = items[k]
            ctx.bad(prefix + ("metadata", "name"), svc.metadata.name, f"serviceCIDRv6 {net} has no free ClusterIP "
                    "left; expected a larger cluster.serviceCIDRv6", src)
            continue
        out[k] = str(ipaddress.IPv6Address(cursor))
        taken[out[k]] = k
    return out
