"""ENIs attached to running nodes: the node uplinks a change adds (in eni mode, a node whose pods
now take addresses from a pod vSwitch it had no uplink to; kubevpc.lab.changes.uplinks_added),
made as the builder makes those of a new network (topologies/build.py, `_links` and `_bridges`):
the veth pair ("link") with both ends in the root namespace, recorded in the ledger before it
exists, and the patch pair beside it, each end a port of the node bridge or of the vSwitch at the
planned number. What exists already (a change that failed half way) is taken as it is."""
from __future__ import annotations

import os

from kubevpc.planning import Plan, Uplink

from .netns import no_ipv6
from .shell import sh


def add_uplinks(builder, plan: Plan, uplinks: list[tuple[str, Uplink]]) -> None:
    """Attach `uplinks` (by node) of `plan` to the running network of `builder` (a Builder)."""
    if not uplinks:
        return
    bridge_of = {n.name: n.bridge for n in plan.nodes}
    vswitch_bridge = {v.name: v.bridge for v in plan.vswitches}
    ends = [name for _, u in uplinks for name in (u.port, u.peer)]
    fresh = [u for _, u in uplinks if not os.path.exists(f"/sys/class/net/{u.port}")]
    mtu = builder.offloads.link_mtu
    builder.ledger.record("link", *ends)
    if fresh:
        sh(["ip", "-batch", "-"], "".join(f"link add {u.port} mtu {mtu} type veth peer name {u.peer} mtu {mtu}\n"
                                          for u in fresh))
        no_ipv6([name for u in fresh for name in (u.port, u.peer)])
    sh(["ip", "-batch", "-"], "".join(f"link set {name} up\n" for name in ends))
    cmd = ["ovs-vsctl", "--timeout=60"]
    for node, u in uplinks:
        nb, vb = bridge_of[node], vswitch_bridge[u.vswitch]
        for bridge, name, ofport, peer in ((nb, u.port, u.ofport, ""), (vb, u.peer, u.vswitch_ofport, ""),
                                           (nb, u.patch, u.patch_ofport, u.patch_peer),
                                           (vb, u.patch_peer, u.vswitch_patch_ofport, u.patch)):
            cmd += ["--", "--may-exist", "add-port", bridge, name, "--", "set", "interface", name,
                    f"ofport_request={ofport}"]
            if peer:
                cmd += ["type=patch", f"options:peer={peer}"]
    sh(cmd, timeout=90)
    builder._buffers(ends)          # noqa: SLF001 - the builder's own step, for these ports only
