"""The builder's DNS work, in the namespaces and the run directory: the zones the cluster DNS and
the VPCs' resolvers serve, a resolv.conf for every pod (ClusterFirst) and, in a VPC with a
resolver, for every ECS instance (the VPC's DNS servers, as on Alibaba Cloud), the resolvers'
second address, and the command line of each program that is not a forked echo server (the
cluster DNS, a VPC's resolver, an ingress controller).

A resolv.conf is bind-mounted over /etc/resolv.conf from the host's Mininet shell, which has a
mount namespace of its own, so only that host sees it; it is also written to
/etc/netns/<netns>/resolv.conf, where `ip netns exec` looks. The machine's /etc/resolv.conf is
never written, read or mounted over."""
from __future__ import annotations

import functools
import os
from typing import Iterable

from kubevpc.daemons.dns import dns_command, resolver_command, upstreams, write_resolver_zone, write_zone
from kubevpc.daemons.ingress import ingress_command, write_ingress_state
from kubevpc.errors import BuildError
from kubevpc.ledger import NETNS_ETC, Ledger
from kubevpc.planning import HostPlan, Plan
from kubevpc.render.dns import resolv_conf, vpc_resolv_conf
from kubevpc.rundir import RunDir

from .netns import add_addresses, in_each_namespace

DAEMONS = ("dns", "ingress", "resolver")      # apps that are programs of their own, not forked servers


def daemon_command(plan: Plan, rundir: RunDir, h: HostPlan, ready: str) -> list[str]:
    """The command line of host h's program (h.app in DAEMONS), its configuration written first."""
    if h.app == "dns":
        return dns_command(rundir, h.ip, ready, upstreams(plan))
    if h.app == "resolver":
        return resolver_command(rundir, h, plan.internet.resolvers, ready)
    write_ingress_state(rundir.path, plan, h)
    return ingress_command(rundir, h, plan.run, ready)


def write_zones(plan: Plan, rundir: RunDir) -> None:
    """The cluster DNS's zone, and the emulated internet's that the VPCs' resolvers serve."""
    if plan.dns is not None:
        write_zone(rundir, plan)
    if plan.resolvers:
        write_resolver_zone(rundir, plan)


def resolver_addresses(plan: Plan, shell_pids: dict[str, int]) -> None:
    """Each resolver's addresses beyond the one its interface was given (100.100.2.138)."""
    extra = plan.internet.resolvers[1:] if plan.internet else ()
    jobs = [(f"/proc/{shell_pids[h.key]}/ns/net", f"{h.key} ({h.netns})",
             functools.partial(add_addresses, h.ifname, extra, h.prefixlen)) for h in plan.resolvers]
    if jobs and extra:
        try:
            in_each_namespace(jobs)
        except BuildError as exc:
            raise BuildError(f"could not give the VPC's DNS resolvers their addresses: {exc}") from None


def resolv_confs(plan: Plan, pods: Iterable[HostPlan] | None) -> list[tuple[HostPlan, str]]:
    """(host, resolv.conf) for `pods`, or for the whole plan: every pod with a namespace of its own
    (ClusterFirst; a host-network pod has its node's) and every ECS instance of a VPC with a
    resolver (nodes included: what kubelet's dnsPolicy Default and the node itself use)."""
    dns = plan.dns
    out = [] if dns is None else [(h, resolv_conf(h.namespace, dns.ip, dns.domain))
                                  for h in (plan.own_pods if pods is None else pods)]
    if pods is None and plan.resolvers:
        text = vpc_resolv_conf(plan.internet.resolvers)
        out += [(h, text) for h in plan.instances if plan.resolver(plan.vswitch(h.vswitch).vpc) is not None]
    return out


def give_resolv_confs(rundir: RunDir, ledger: Ledger, shells: dict, confs: list[tuple[HostPlan, str]]) -> None:
    """Write each host's resolv.conf and bind-mount it over its /etc/resolv.conf (`shells`: Mininet
    hosts by key)."""
    if not confs:
        return
    os.makedirs(rundir.resolv_dir, exist_ok=True)
    if not os.path.isdir(NETNS_ETC):
        ledger.record("emptydir", NETNS_ETC)
        os.makedirs(NETNS_ETC, exist_ok=True)
    for h, text in confs:
        path = rundir.resolv(h.netns)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        etc = os.path.join(NETNS_ETC, h.netns)
        ledger.record("file", etc)
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "resolv.conf"), "w", encoding="utf-8") as fh:
            fh.write(text)
        out = shells[h.key].cmd(f"mount --bind {path} /etc/resolv.conf && echo mounted")
        if "mounted" not in out:
            raise BuildError(f"could not give {h.key} its resolv.conf: {out.strip()}")
