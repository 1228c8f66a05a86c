"""`kubevpc import terraform`: the JSON of `terraform show -json` of an Alibaba Cloud configuration
becomes a scenario's `cloud:` and `cluster:` sections.

The mappers run in the order the scenario's references need (VPCs before vSwitches before
instances, ...). Then the scenario is validated as `kubevpc validate` would (in the cluster's own
mode): an object the validator refuses is left out, with the validator's reason, and the rest is
validated again, so that what is written always validates. A resource no mapper takes, and an
argument value kubevpc cannot express, is listed with its address and the reason; a value the
import has to make up (an instance's address when the plan does not know it, the emulated
internet) is listed too. docs/scenario.md ("Importing Terraform") says what maps to what.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from ..errors import Problem, ScenarioError
from ..planning import make_plan
from ..scenario.load import Loaded, Source, pydantic_problems
from ..scenario.model import Scenario
from . import tfcloud, tfcluster, tfedge, tfplan, yamlout
from .build import ORIGIN, Build, printable, valid_name

PLACEHOLDER_RUN = "kvxxxx"      # as long as the longest run name: interface names are checked as in a run
MAX_ROUNDS = 8                  # validation rounds: leaving out a vSwitch may leave out its instances next
MAPPERS = (tfcloud.vpcs, tfcloud.vswitches, tfcloud.prune_vpcs, tfcloud.route_tables, tfcloud.security_groups,
           tfcloud.instances, tfcluster.cluster, tfcloud.peerings, tfedge.eips, tfedge.nat_gateways,
           tfedge.associations, tfedge.drop_gateways_without_eip, tfedge.snat_entries, tfedge.dnat_entries,
           tfcloud.route_entries, tfedge.nat_routes, tfedge.slbs, tfcloud.instance_ports, tfedge.internet,
           tfcluster.drop_ack_marks)


@dataclass
class Imported:
    """The scenario an import wrote, and what the user is told about it."""

    text: str                           # the scenario's YAML
    data: dict                          # the scenario itself
    skipped: list[tuple[str, str]]      # (Terraform address, why it is not in the scenario)
    invented: list[tuple[str, str]]     # (Terraform address, the value made up and how)
    kind: str                           # plan or state


def import_terraform(path: str, name: str | None = None, environ: Mapping[str, str] | None = None) -> Imported:
    """The scenario of the Terraform JSON document in the file. Raises ScenarioError when the file is
    not such a document, holds no VPC, or gives a scenario that does not validate."""
    doc = tfplan.read(path, environ)
    b = Build(doc)
    for step in MAPPERS:
        step(b)
    if not b.cloud["vpcs"]:
        raise ScenarioError([Problem(path, "", f"{len(doc.resources)} managed resources",
                                     "expected an alicloud_vpc with an alicloud_vswitch: a scenario needs a VPC")])
    for res in doc.resources:
        if id(res) not in b.done:
            b.skip(res, "not an Alibaba Cloud (alicloud) resource" if not res.type.startswith("alicloud_") else
                   f"{printable(res.type, 60)} is not emulated (docs/scenario.md, Importing Terraform, lists what is)")
    base = os.path.basename(path)
    data: dict[str, Any] = {
        "name": valid_name(name or "") or valid_name((b.cluster or {}).get("name", "")) or "terraform",
        "description": f"Imported from {printable(base, 80)}, a Terraform {doc.kind} (format {printable(doc.format_version)}"
                       + (f", Terraform {printable(doc.terraform_version, 20)}" if doc.terraform_version else "")
                       + "), by kubevpc import terraform",
        "cloud": b.cloud, "cluster": b.cluster}
    data = _validated(path, b, data)
    text = yamlout.dump(data, _header(base, b))
    return Imported(text, yamlout.strip(data), b.skipped, b.invented, doc.kind)


def _header(base: str, b: Build) -> list[str]:
    lines = [f"Imported by `kubevpc import terraform {printable(base, 80)}`. Each object's comment names the "
             "Terraform resource it came from.", "Add manifests: (Kubernetes objects) and expect: to run it "
             "(docs/scenario.md, Importing Terraform).", ""]
    lines += [f"not imported: {address}: {reason}" for address, reason in b.skipped]
    lines += [f"invented: {address}: {what}" for address, what in b.invented]
    return lines + ([""] if b.skipped or b.invented else [])


def validate(label: str, data: dict) -> list[Problem]:
    """What `kubevpc validate` would say of the scenario (no lines: it has no file yet)."""
    src = Source(label, data)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        return pydantic_problems(src, exc)
    try:
        make_plan(Loaded(label, scenario, (), src), PLACEHOLDER_RUN)
    except ScenarioError as exc:
        return exc.problems
    return []


def _validated(path: str, b: Build, data: dict) -> dict:
    """The scenario less what the validator refuses, each object left out told with the reason."""
    for _ in range(MAX_ROUNDS):
        clean = yamlout.prune(data)
        problems = validate(f"{os.path.basename(path)} (imported)", yamlout.strip(clean))
        if not problems:
            return clean
        drops = [(p, _owner(data, p.path)) for p in problems]
        if any(owner is None for _, owner in drops):
            raise ScenarioError([Problem(path, "", "the imported scenario", "it does not validate, and these problems "
                                         "are not about one object that could be left out:")]
                                + [p for p, owner in drops if owner is None])
        for p, (container, obj) in drops:
            if any(o is obj for o in container):
                container[:] = [o for o in container if o is not obj]
                b.skipped.append((obj[ORIGIN], f"{p.path}: {p.value!r:.80}: {p.expected}"))
        _dangling(b, data)
    raise ScenarioError([Problem(path, "", "the imported scenario", f"still invalid after {MAX_ROUNDS} rounds of "
                                 "leaving out what the validator refused")])


def _owner(data: dict, path: str) -> tuple[list, dict] | None:
    """The list and the object in it that a problem's path is about: the deepest object with an origin
    inside the path (a VPC or the cluster are never left out: without them nothing is left)."""
    node: Any = data
    found = None
    for key, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        if index and isinstance(node, list) and int(index) < len(node):
            parent, node = node, node[int(index)]
            if isinstance(node, dict) and ORIGIN in node and parent is not data["cloud"]["vpcs"]:
                found = (parent, node)
        elif key and isinstance(node, dict) and key in node:
            node = node[key]
        else:
            break
    return found


def _dangling(b: Build, data: dict) -> None:
    """After objects are left out: the cluster's lists lose the names that are gone (a cluster without
    nodes goes too), instances lose the groups that are gone."""
    cloud = data["cloud"]
    names = {i["name"] for i in cloud["instances"]}
    groups = {g["name"] for g in cloud["securityGroups"]}
    vswitches = {v["name"] for vpc in cloud["vpcs"] for v in vpc["vswitches"]}
    for inst in cloud["instances"]:
        inst["securityGroups"] = [g for g in inst.get("securityGroups", []) if g in groups]
    spec = data.get("cluster")
    if spec is None:
        return
    spec["nodes"] = [n for n in spec["nodes"] if n in names]
    if "nodeLabels" in spec:
        spec["nodeLabels"] = {n: v for n, v in spec["nodeLabels"].items() if n in names}
    if "eni" in spec:
        spec["eni"]["vswitches"] = [v for v in spec["eni"]["vswitches"] if v in vswitches]
        if "securityGroups" in spec["eni"]:
            spec["eni"]["securityGroups"] = [g for g in spec["eni"]["securityGroups"] if g in groups] or None
    if not spec["nodes"]:
        b.skipped.append((spec[ORIGIN], "every node of it was left out"))
        data["cluster"] = None
