"""A NAT gateway's DNAT entries (Alibaba's ForwardEntry), checked and planned.

The rules are Alibaba Cloud's (CreateForwardEntry, ALIYUN::VPC::ForwardEntry):
- ExternalIp is one of the gateway's EIPs;
- IpProtocol TCP, UDP or Any; with Any, ExternalPort and InternalPort are Any too (IP mapping);
- each ExternalIp, ExternalPort and IpProtocol in one entry only, and each IpProtocol, InternalIp
  and InternalPort too (an IP mapping claims every port of its EIP and of its target);
- InternalIp is an address of the gateway's VPC, used by an instance that has no EIP bound (the
  entry does not take effect otherwise: kubevpc refuses it);
- a DNAT entry on an EIP that SNAT entries use takes a port above 1024 only with PortBreak.
kubevpc names the target by instance, by pod (eni mode: a pod has an address of the VPC only
there) or by address. A pod is resolved to its address at each plan: while a scenario runs, a pod
that is gone leaves its entry without a target, so it forwards nothing.
"""
from __future__ import annotations

import ipaddress

from .cloud import Cloud
from .cluster import Cluster
from .context import Context
from .model import DnatPlan, EipPlan, HostPlan
from .podeip import mode_refusal

PORT_BREAK_ABOVE = 1024


def plan_dnat(ctx: Context, cloud: Cloud, cluster: Cluster, g, at: tuple, mine: dict[str, str],
              hosts: list[HostPlan], eips: list[EipPlan]) -> tuple[DnatPlan, ...]:
    """The DNAT entries of gateway `g` (at `at` in the scenario); `mine`: its EIPs, name -> address."""
    if not g.dnat:
        return ()
    snat_eips = {e.eip or next(iter(mine)) for e in g.snat}
    ctx.problems.unique([at + ("dnat", j, "name") for j in range(len(g.dnat))],
                        [e.name or f"dnat-{j}" for j, e in enumerate(g.dnat)], f"DNAT entry of {g.name}")
    out, external, internal = [], {}, {}
    for j, entry in enumerate(g.dnat):
        path = at + ("dnat", j)
        d = _entry(ctx, cloud, cluster, g, path, j, entry, mine, hosts, eips)
        if d is None or not _free(ctx, path, d, entry, snat_eips, external, internal):
            continue
        out.append(d)
    return tuple(out)


def _entry(ctx: Context, cloud: Cloud, cluster: Cluster, g, path: tuple, j: int, entry, mine: dict[str, str],
           hosts: list[HostPlan], eips: list[EipPlan]) -> DnatPlan | None:
    if entry.eip not in mine:
        ctx.bad(path + ("eip",), entry.eip, f"expected an EIP bound to NAT gateway {g.name} ({', '.join(mine)})")
        return None
    ports = _ports(ctx, path, entry)
    target = _target(ctx, cloud, cluster, g, path, entry, hosts)
    if ports is None or target is None:
        return None
    key, ip = target
    bound = next((e for e in eips if e.one_to_one and ip and e.private_ip == ip), None)
    if bound is not None:
        ctx.bad(path, key or ip, f"{bound.target} has EIP {bound.name} bound: Alibaba Cloud applies a DNAT entry "
                "only to an instance without an EIP; expected a target without one")
        return None
    return DnatPlan(name=entry.name or f"dnat-{j}", eip=entry.eip, public_ip=mine[entry.eip],
                    protocol=entry.ipProtocol, external_port=ports[0], target=key, internal_ip=ip,
                    internal_port=ports[1])


def _ports(ctx: Context, path: tuple, entry) -> tuple[int, int] | None:
    """(external, internal) port; (0, 0) for IP mapping."""
    if entry.ipProtocol == "any":
        for field in ("externalPort", "internalPort"):
            if getattr(entry, field) not in (None, "any"):
                ctx.bad(path + (field,), getattr(entry, field), "ipProtocol any is IP mapping, every protocol and "
                        "port of the EIP: expected any, or no port")
                return None
        return 0, 0
    if not isinstance(entry.externalPort, int):
        ctx.bad(path + ("externalPort",), entry.externalPort, f"expected a port, 1 to 65535, with ipProtocol "
                f"{entry.ipProtocol} (any is for ipProtocol any: IP mapping)")
        return None
    if entry.internalPort == "any":
        ctx.bad(path + ("internalPort",), "any", f"expected a port, 1 to 65535, with ipProtocol {entry.ipProtocol}, "
                "or none (the external port)")
        return None
    return entry.externalPort, entry.internalPort or entry.externalPort


def _target(ctx: Context, cloud: Cloud, cluster: Cluster, g, path: tuple, entry,
            hosts: list[HostPlan]) -> tuple[str, str] | None:
    """(host key, its address) of the entry's target; ("", address) or (key, "") for one that is
    gone while the scenario runs; None with a problem."""
    given = [k for k in ("instance", "pod", "internalIp") if getattr(entry, k) is not None]
    if len(given) != 1:
        ctx.bad(path, entry.model_dump(exclude_none=True, exclude_defaults=True),
                "expected exactly one of instance, pod, internalIp")
        return None
    if entry.instance is not None:
        host = next((h for h in hosts if h.key == f"ecs/{entry.instance}"), None)
        if host is None or cloud.vswitch(host.vswitch).vpc != g.vpc:
            ctx.bad(path + ("instance",), entry.instance, f"expected an ECS instance of VPC {g.vpc}")
            return None
        return host.key, host.ip
    if entry.pod is not None:
        return _pod(ctx, cluster, g, path, entry.pod, hosts)
    return _address(ctx, g, path, str(entry.internalIp), hosts)


def _pod(ctx: Context, cluster: Cluster, g, path: tuple, ref: str, hosts: list[HostPlan]) -> tuple[str, str] | None:
    if cluster.mode != "eni":
        ctx.bad(path + ("pod",), ref, "a DNAT entry to a pod: " + mode_refusal(cluster.mode))
        return None
    ns, _, name = ref.rpartition("/")
    key = f"pod/{ns or 'default'}/{name}"
    host = next((h for h in hosts if h.key == key), None)
    if cluster.vpc != g.vpc:
        ctx.bad(path + ("pod",), ref, f"the cluster's pods are in VPC {cluster.vpc}; expected a pod of VPC {g.vpc}")
    elif host is None and not ctx.running:
        pods = sorted(h.key.removeprefix("pod/") for h in hosts if h.kind == "pod" and not h.host_network)
        ctx.bad(path + ("pod",), ref, f"no such pod; expected <namespace>/<name> of one of {pods}")
    elif host is not None and host.host_network:
        ctx.bad(path + ("pod",), ref, "a pod with hostNetwork has its node's address: expected the node's instance "
                "as the target, or a pod of its own network")
    else:
        return key, host.ip if host is not None else ""
    return None


def _address(ctx: Context, g, path: tuple, ip: str, hosts: list[HostPlan]) -> tuple[str, str] | None:
    """InternalIp: an address of the VPC that an instance or an eni pod holds (at first)."""
    vpc = next(v for v in ctx.sc.cloud.vpcs if v.name == g.vpc)
    if ipaddress.IPv4Address(ip) not in vpc.cidr:
        ctx.bad(path + ("internalIp",), ip, f"expected an address of VPC {g.vpc} ({vpc.cidr})")
        return None
    host = next((h for h in hosts if h.ip == ip and h.kind in ("ecs", "pod") and not h.host_network), None)
    if host is None and not ctx.running:
        ctx.bad(path + ("internalIp",), ip, "no instance or pod holds this address; expected the address of an "
                "instance (Alibaba Cloud: the DNAT entry's private address must be used by an ECS instance) or an "
                "eni pod")
        return None
    return (host.key if host else ""), ip


def _free(ctx: Context, path: tuple, d: DnatPlan, entry, snat_eips: set[str], external: dict, internal: dict) -> bool:
    """Alibaba's uniqueness rules and PortBreak; `external` and `internal` hold the entries so far."""
    mapped = d.protocol == "any"
    if mapped and d.eip in snat_eips:
        ctx.bad(path + ("eip",), d.eip, f"IP mapping (ipProtocol any) takes every port of EIP {d.eip}, which SNAT "
                "entries of this gateway use too; expected an EIP that no SNAT entry uses")
        return False
    if not mapped and d.eip in snat_eips and d.external_port > PORT_BREAK_ABOVE and not entry.portBreak:
        ctx.bad(path + ("externalPort",), d.external_port, f"EIP {d.eip} is used by SNAT entries too: Alibaba Cloud "
                f"takes a port above {PORT_BREAK_ABOVE} there only with portBreak: true; expected a port 1 to "
                f"{PORT_BREAK_ABOVE}, portBreak: true, or another EIP")
        return False
    for table, ip, port, side in ((external, d.public_ip, d.external_port, "EIP, external port"),
                                  (internal, d.internal_ip, d.internal_port, "internal address, port")):
        if not ip:
            continue
        clash = table.get((ip, "any", 0)) or (table.get((ip, d.protocol, port)) if not mapped else
                                              next((n for (a, _, _), n in table.items() if a == ip), None))
        if clash:
            mapping = " (an IP mapping takes them all)" if mapped or (ip, "any", 0) in table else ""
            ctx.bad(path, d.name, f"the same {side} and protocol as DNAT entry {clash}{mapping}; expected each in "
                    "one entry only (Alibaba Cloud)")
            return False
    external[(d.public_ip, d.protocol, d.external_port)] = d.name
    if d.internal_ip:
        internal[(d.internal_ip, d.protocol, d.internal_port)] = d.name
    return True
