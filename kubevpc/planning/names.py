"""Every name a run gives to an interface, a bridge or a network namespace, made here and only here.

Each starts with the run's name, so runs never collide and `kubevpc clean` can tell what a run made.
Interface names (bridges, veth ends, patch and link ports, VXLAN devices) must fit the kernel's
IFNAMSIZ; `too_long` finds the first that does not. docs/design.md ("Names") lists them.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..runname import MAX_TAG, RUN_NAME  # noqa: F401 - the run name's rule, with the names it starts

IFNAMSIZ = 15            # the kernel's limit on interface names (16 with the NUL)


@dataclass(frozen=True)
class Names:
    run: str

    # bridges
    def vrouter(self, vpc: int) -> str:
        return f"{self.run}-vr{vpc}"

    def vswitch(self, vsw: int) -> str:
        return f"{self.run}-vs{vsw}"

    def node(self, node: int) -> str:
        return f"{self.run}-n{node}"

    def edge(self, vpc: int) -> str:
        return f"{self.run}-ed{vpc}"

    def internet(self) -> str:
        return f"{self.run}-inet"

    # the patch pair between a vRouter and each of its vSwitches (numbered among all vSwitches)
    def vrouter_to_vswitch(self, vsw: int) -> str:
        return f"{self.run}rv{vsw}"

    def vswitch_to_vrouter(self, vsw: int) -> str:
        return f"{self.run}vr{vsw}"

    # a VPC's edge: the link from its vRouter and the patch pair to the internet router
    def vrouter_to_edge(self, vpc: int) -> str:
        return f"{self.run}ve{vpc}"

    def edge_to_vrouter(self, vpc: int) -> str:
        return f"{self.run}ev{vpc}"

    def edge_to_internet(self, vpc: int) -> str:
        return f"{self.run}ei{vpc}"

    def internet_to_edge(self, vpc: int) -> str:
        return f"{self.run}ie{vpc}"

    # a VPC peering connection (number `k` in cloud.peerings): a patch pair between the two vRouters
    def peering(self, k: int) -> tuple[str, str]:
        """Its port on the first VPC's vRouter, and on the second's."""
        return f"{self.run}pc{k}a", f"{self.run}pc{k}b"

    # a node's uplink number `u` to a vSwitch: a link (veth pair) and a patch pair beside it
    def uplink(self, node: int, u: int) -> tuple[str, str, str, str]:
        """The node's link end, the vSwitch's link end, the node's patch, the vSwitch's patch."""
        return (f"{self.run}nu{node}.{u}", f"{self.run}un{node}.{u}",
                f"{self.run}np{node}.{u}", f"{self.run}pn{node}.{u}")

    def csum_hop(self, node: int) -> tuple[str, str]:
        """The node bridge's checksum hop (vxlan, KUBEVPC_VXLAN_CSUM_HOP), a veth pair with both ends
        on that bridge: the end Open vSwitch sends into, and the end the packet comes back in by."""
        return f"{self.run}ck{node}o", f"{self.run}ck{node}i"

    def tunnel(self, node: int) -> str:
        """The node's VXLAN device (one per node, as flannel.1)."""
        return f"{self.run}x{node}"

    # the root-side veth end of each namespace, and the namespace
    def ecs_veth(self, instance: int) -> str:
        return f"{self.run}e{instance}"

    def ecs_netns(self, name: str) -> str:
        return f"{self.run}-ecs-{name}"

    def pod_veth(self, seq: int) -> str:
        return f"{self.run}p{seq}"

    def pod_netns(self, namespace: str, name: str) -> str:
        return f"{self.run}-pod-{namespace}_{name}"

    def slb_veth(self, slb: int) -> str:
        return f"{self.run}l{slb}"

    def slb_netns(self, namespace: str, name: str) -> str:
        return f"{self.run}-slb-{namespace}_{name}"

    def internet_veth(self, host: int) -> str:
        return f"{self.run}i{host}"

    def internet_netns(self, name: str) -> str:
        return f"{self.run}-inet-{name}"

    def resolver_veth(self, vpc: int) -> str:
        """The vRouter's port to VPC `vpc`'s DNS resolver."""
        return f"{self.run}d{vpc}"

    def resolver_netns(self, vpc: str) -> str:
        return f"{self.run}-dns-{vpc}"


def interface_names(plan) -> list[str]:
    """Every interface name a plan makes: the ones IFNAMSIZ limits."""
    names = [h.veth for h in plan.hosts if h.veth] + [b.name for b in plan.bridges]   # host-network pods: none
    names += [t.ifname for n in plan.nodes for t in n.tunnels[:1]]
    names += [p.name for b in plan.bridges for p in b.ports if p.kind in ("patch", "link", "hop")]
    return names


def too_long(plan) -> str | None:
    """The first interface name over IFNAMSIZ, or None. A name made twice is the planner's bug."""
    names = interface_names(plan)
    for name in names:
        if len(name) > IFNAMSIZ:
            return name
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AssertionError(f"planner produced duplicate interface names {dup}")
    return None
