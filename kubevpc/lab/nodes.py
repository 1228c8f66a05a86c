"""Nodes added to a running scenario, as scaling out a node pool does (ACK: "Scale out a node pool";
CCE: "Adding a node"): a new ECS instance of the cluster's VPC joins cluster.nodes, and everything
else is planned as for a node declared in the scenario. In vxlan and vpc-route mode it takes the
next free node CIDR, from podCIDR and then from cluster.additionalPodCIDRs in order (ACK's Flannel
divides the pod CIDR block into per-node subnets and the cloud controller manager keeps one route
entry per node, https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/
work-with-flannel; a block added to a cluster serves the nodes that join afterwards, since a node's
pod CIDR is fixed when it joins); in vpc-route mode its route enters the VPC's route tables, within
their quota; in vxlan mode the other nodes gain it as a VXLAN peer; in eni mode it gets its uplinks as
Terway's configuration gives them. Running nodes, pods and addresses do not change, and running
pods stay on their nodes: only pods created later may be placed on it.

`with_node` checks the request against the running plan and writes the node into the scenario
(pure); the Lab plans it (kubevpc/lab/changes.py) and builds it (topologies/nodes.py). Removing a
node is not supported.

A pod CIDR block added to a running vpc-route cluster (`with_pod_cidr`, Lab.add_pod_cidr), as CCE
adds a container CIDR block to a VPC network cluster ("Add Container CIDR Block" in the cluster's
network settings; a container tunnel network cannot, and a block added cannot be deleted,
https://support.huaweicloud.com/usermanual-cce/cce_10_0784.html): it goes at the end of
cluster.additionalPodCIDRs and is checked as the loader checks every block. Running nodes keep their
node CIDRs ("statically allocated: the CIDR block cannot be changed after a node is created",
https://support.huaweicloud.com/en-us/usermanual-cce/cce_01_0281.html); nodes that join afterwards
take theirs from it once the blocks before it are full. Nothing is built: each node's flows gain
the block among the pods' CIDRs it routes without SNAT. ACK keeps a Flannel cluster's pod CIDR
block as created ("cannot be changed after cluster creation",
https://www.alibabacloud.com/help/en/doc-detail/86500.htm)."""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress

from pydantic import ValidationError

from topologies.nodes import add_nodes, connect_bridges
from topologies.shell import wait_for

from ..errors import DeadlineError, KubevpcError, Problem, ScenarioError
from ..k8s import check_labels
from ..planning import Plan, usable
from ..planning.cluster import MORE_BLOCKS
from ..scenario.load import Loaded, Source, pydantic_problems
from ..scenario.model import Cidr, Instance, Strict

ORIGIN = "<add-node>"          # where problems of the request say they are
BLOCK_ORIGIN = "<add-pod-cidr>"
NODE_DEADLINE = 30.0           # s for a new node's bridge to connect and be programmed, with the change


def with_node(loaded: Loaded, plan: Plan, name: str, vswitch: str, security_groups: list[str] | None = None,
              ip: str | None = None, labels: dict[str, str] | None = None) -> Loaded:
    """The scenario with ECS instance `name` on `vswitch` added to it and to cluster.nodes (with
    `labels` in cluster.nodeLabels), checked against the running `plan`: a new name, a vSwitch of
    the cluster's VPC, security groups of that VPC (default: the first node's), a free address of
    the vSwitch when `ip` is given. Raises ScenarioError naming each problem; nothing changes."""
    if loaded.scenario.cluster is None or plan.cluster is None:
        raise KubevpcError("this scenario has no cluster: a node joins a cluster's nodes")
    groups = list(plan.host(plan.nodes[0].ecs).security_groups) if security_groups is None else security_groups
    data = {"name": name, "vswitch": vswitch, "securityGroups": groups, **({"ip": ip} if ip is not None else {})}
    try:
        instance = Instance.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(pydantic_problems(Source(ORIGIN, data, {}), exc)) from None
    problems = _problems(loaded, plan, instance) + _label_problems(labels)
    if problems:
        raise ScenarioError(problems)
    sc = loaded.scenario
    cluster = sc.cluster.model_copy(update={"nodes": [*sc.cluster.nodes, name],
                                            "nodeLabels": {**sc.cluster.nodeLabels, **({name: labels} if labels else {})}})
    cloud = sc.cloud.model_copy(update={"instances": [*sc.cloud.instances, instance]})
    return dataclasses.replace(loaded, scenario=sc.model_copy(update={"cloud": cloud, "cluster": cluster}))


def _problems(loaded: Loaded, plan: Plan, e: Instance) -> list[Problem]:
    """What the running scenario refuses of instance `e` as a new node."""
    out = []
    vpc = plan.cluster.vpc
    if e.name in {i.name for i in loaded.scenario.cloud.instances}:
        what = "a node of the cluster" if e.name in loaded.scenario.cluster.nodes else "an ECS instance"
        out.append(Problem(ORIGIN, "name", e.name, f"{what} has this name already; expected a new name"))
    mine = sorted(v.name for v in plan.vswitches if v.vpc == vpc)
    vsw = next((v for v in plan.vswitches if v.name == e.vswitch), None)
    if vsw is None or vsw.vpc != vpc:
        where = "no such vSwitch" if vsw is None else f"vSwitch of VPC {vsw.vpc}"
        out.append(Problem(ORIGIN, "vswitch", e.vswitch, f"{where}; expected a vSwitch of the cluster's VPC {vpc}: "
                           f"one of {mine}"))
    groups = {g.name: g for g in plan.groups}
    for k, g in enumerate(e.securityGroups):
        if g not in groups:
            out.append(Problem(ORIGIN, f"securityGroups[{k}]", g,
                               f"no such security group; expected one of {sorted(groups)}"))
        elif groups[g].vpc != vpc:
            out.append(Problem(ORIGIN, f"securityGroups[{k}]", g, f"security group of VPC {groups[g].vpc}; expected "
                               f"one of the cluster's VPC {vpc}: {sorted(n for n, x in groups.items() if x.vpc == vpc)}"))
    if e.ip is not None and vsw is not None and vsw.vpc == vpc:
        out += _address_problems(plan, vsw, e.ip)
    return out


def _address_problems(plan: Plan, vsw, ip: ipaddress.IPv4Address) -> list[Problem]:
    """A declared address: inside the vSwitch, not reserved, held by nothing that runs."""
    net = ipaddress.IPv4Network(vsw.cidr)
    held = {h.ip: h.key for h in plan.hosts if h.vswitch == vsw.name and h.kind != "internet"}
    held.update({f.ip: f"{f.pod} (its fixed address)" for f in plan.fixed_ips if f.vswitch == vsw.name})
    if ip not in net:
        return [Problem(ORIGIN, "ip", str(ip), f"outside vSwitch {vsw.name} ({net}); expected an address of it")]
    if ip not in usable(net):
        return [Problem(ORIGIN, "ip", str(ip), f"reserved address of {net}: the first and the last three addresses "
                        "of a vSwitch belong to the cloud")]
    if str(ip) in held:
        return [Problem(ORIGIN, "ip", str(ip), f"address held by {held[str(ip)]}; expected a free address of "
                        f"vSwitch {vsw.name}, or none (the lowest free)")]
    return []


def _label_problems(labels: dict[str, str] | None) -> list[Problem]:
    if labels is not None and not isinstance(labels, dict):
        return [Problem(ORIGIN, "labels", labels, "expected a mapping of label keys to values")]
    try:
        check_labels(labels or {})
    except ValueError as exc:
        return [Problem(ORIGIN, "labels", labels, str(exc))]
    return []


class _Block(Strict):
    cidr: Cidr


def with_pod_cidr(loaded: Loaded, plan: Plan, cidr: str) -> Loaded:
    """The scenario with pod CIDR block `cidr` at the end of cluster.additionalPodCIDRs, checked
    first for what the running cluster refuses of any block: a mode other than vpc-route (the
    loader's reasons), a value that is not an IPv4 CIDR without host bits, a block too small for one
    node CIDR of cluster.nodeCIDRMaskSize. The planner then checks it as the loader checks every
    block (`named_as_request`). Raises ScenarioError; nothing changes."""
    sc = loaded.scenario
    if sc.cluster is None or plan.cluster is None:
        raise KubevpcError("this scenario has no cluster: a pod CIDR block is a cluster's")
    cl = sc.cluster
    if cl.mode != "vpc-route":
        raise ScenarioError([Problem(BLOCK_ORIGIN, "cidr", cidr, f"cluster.mode is {cl.mode}: {MORE_BLOCKS[cl.mode]}")])
    try:
        net = _Block.model_validate({"cidr": cidr}).cidr
    except ValidationError as exc:
        raise ScenarioError(pydantic_problems(Source(BLOCK_ORIGIN, {"cidr": cidr}, {}), exc)) from None
    if net.prefixlen > cl.nodeCIDRMaskSize:
        raise ScenarioError([Problem(BLOCK_ORIGIN, "cidr", cidr, f"a /{net.prefixlen} block cannot hold one node CIDR "
                                     f"of /{cl.nodeCIDRMaskSize} (cluster.nodeCIDRMaskSize); expected a prefix of "
                                     f"/{cl.nodeCIDRMaskSize} or shorter")])
    cluster = cl.model_copy(update={"additionalPodCIDRs": [*cl.additionalPodCIDRs, net]})
    return dataclasses.replace(loaded, scenario=sc.model_copy(update={"cluster": cluster}))


@contextlib.contextmanager
def named_as_request(loaded: Loaded):
    """Problems the planner finds in the block just added (the last of cluster.additionalPodCIDRs,
    which no file holds) named as the request's: `<add-pod-cidr>: cidr: ...`."""
    at = f"cluster.additionalPodCIDRs[{len(loaded.scenario.cluster.additionalPodCIDRs) - 1}]"
    try:
        yield
    except ScenarioError as exc:
        raise ScenarioError([Problem(BLOCK_ORIGIN, "cidr", p.value, p.expected) if p.path == at else p
                             for p in exc.problems]) from None


class Nodes:
    """Adding nodes while running; needs `loaded`, `plan`, `lock`, `builder`, `say`, `status`,
    `_plan_file` and `_change` from the Lab."""

    def add_node(self, name: str, vswitch: str, security_groups: list[str] | None = None, ip: str | None = None,
                 labels: dict[str, str] | None = None) -> dict:
        """Add a node to the running cluster, as scaling out a node pool does: ECS instance `name` on
        `vswitch` (at `ip`, or the lowest free address), in `security_groups` (default: the first
        node's), with node `labels`. It takes the next free node CIDR (vxlan, vpc-route: podCIDR, then
        cluster.additionalPodCIDRs in order) and its route (vpc-route), its uplinks (eni), its VXLAN
        peers (vxlan). Running pods stay where they are; pods created afterwards may be placed on it
        (round-robin by index). Refused, with nothing changed, when no block has a free node CIDR,
        the vSwitch is full, the route table's quota is reached, or the request names what does not
        exist."""
        with self.lock:
            loaded = with_node(self.loaded, self.plan, name, vswitch, security_groups, ip, labels)
            return self._change(self.loaded.manifests, self.ready, None, NODE_DEADLINE, frozenset(), None, loaded)

    def add_pod_cidr(self, cidr: str) -> dict:
        """Add pod CIDR block `cidr` to the running vpc-route cluster, after cluster.additionalPodCIDRs,
        as CCE adds a container CIDR block: running nodes keep their node CIDRs, nodes added
        afterwards take theirs from it once the blocks before it are full. Refused, with nothing
        changed, in vxlan and eni mode, for a value that is not an IPv4 CIDR, a block smaller than
        one node CIDR, or one that overlaps the VPC, a peered VPC, serviceCIDR, another pod CIDR block
        or anything else the loader keeps pod CIDR blocks from. Answers the blocks, in order."""
        with self.lock:
            loaded = with_pod_cidr(self.loaded, self.plan, cidr)
            with named_as_request(loaded):
                out = self._change(self.loaded.manifests, self.ready, None, NODE_DEADLINE, frozenset(), None, loaded)
            return {**out, "pod_cidrs": list(self.plan.cluster.pod_cidrs)}

    def _build_nodes(self, change) -> None:
        """The nodes a change adds, made in the network, not yet connected to the controller."""
        if change.nodes:
            self.say("adding " + ", ".join(f"node {n.name} ({n.ip} on {n.vswitch}"
                                           + (f", pod CIDR {n.pod_cidr})" if n.pod_cidr else ")") for n in change.nodes))
            add_nodes(self.builder, change.plan, change.nodes)

    def _connect_nodes(self, change, deadline: float) -> None:
        """Once the controller holds the plan that names them, the new nodes' bridges connect to it."""
        if not change.nodes:
            return
        try:
            wait_for("the controller to take the plan with the new nodes",
                     lambda: self.status().get("plan_file") == self._plan_file, deadline, interval=0.02)
        except DeadlineError:
            raise KubevpcError(f"the controller did not take the plan with node(s) "
                               f"{', '.join(n.name for n in change.nodes)} within {deadline:g} s: "
                               f"{self.why_not_programmed()}") from None
        connect_bridges(self.builder, change.nodes)
