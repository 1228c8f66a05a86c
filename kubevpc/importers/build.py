"""What the Terraform mappers share while they build a scenario: the document, the scenario's
sections as they grow, the names given, what each resource became, and the two lists the user is
told about: resources skipped (with the reason) and values invented (and how).

Every object written into the scenario carries its Terraform address under the key "#": the YAML
writer turns it into a comment, and the validation round (kubevpc.importers.terraform) finds by it
the resource an error is about.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from ..scenario.model import MAX_NAME, NAME_RE
from .tfplan import Document, Resource

ORIGIN = "#"                 # the key of an object's Terraform address
HOP = "next hop"             # the namespace of instances, NAT gateways and peering connections
MAX_TEXT = 200               # a description copied from Terraform, at most


def printable(text: Any, limit: int = 160) -> str:
    """Text from the document made safe for one line of a terminal or a YAML comment."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def valid_name(raw: str) -> str:
    """`raw` as a scenario Name (a lowercase RFC 1123 label of at most 40 characters), or ""."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", raw.lower())).strip("-")
    return name[:MAX_NAME].rstrip("-")


class Build:
    """The scenario under construction and what is known about each resource."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.skipped: list[tuple[str, str]] = []      # (address, why it is not in the scenario)
        self.invented: list[tuple[str, str]] = []     # (address, what was made up, and how)
        self.used: set[tuple[str, str]] = set()          # (namespace, name)
        self.objects: dict[int, tuple[str, dict]] = {}  # id(resource) -> (its scenario name, its object)
        self.done: set[int] = set()                      # resources mapped or skipped
        self.cloud: dict[str, list] = {"vpcs": [], "peerings": [], "securityGroups": [], "instances": [],
                                       "eips": [], "natGateways": []}
        self.cluster: dict | None = None
        self.nodes: set[str] = set()                     # instance names that are cluster nodes
        self.vpc_of: dict[tuple[str, str], str] = {}     # (namespace, name) of a vSwitch, group, ... -> its VPC's name

    # ------------------------------------------------------------------------------- resources
    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.doc.resources if r.type in types]

    def skip(self, res: Resource, reason: str) -> None:
        self.done.add(id(res))
        self.skipped.append((res.address, reason))

    def invent(self, where: str, text: str) -> None:
        self.invented.append((where, text))

    def record(self, res: Resource, name: str, obj: dict) -> dict:
        """`res` became `obj`, named `name`; the object is marked with the resource's address."""
        obj[ORIGIN] = res.address
        self.objects[id(res)] = (name, obj)
        self.done.add(id(res))
        return obj

    def name_of(self, res: Resource) -> str | None:
        got = self.objects.get(id(res))
        return got[0] if got else None

    def object_of(self, res: Resource) -> dict | None:
        got = self.objects.get(id(res))
        return got[1] if got else None

    # ----------------------------------------------------------------------------------- names
    def name(self, res: Resource, space: str, *keys: str) -> str:
        """A unique scenario Name for the resource: its first name argument that makes one (vpc_name,
        instance_name, ...), else its Terraform name, with its index."""
        raw = res.text(*keys) or ""
        if not valid_name(raw):
            raw = res.name + ("" if res.index is None else f"-{res.index}")
        return self.unique(valid_name(raw) or valid_name(res.type.removeprefix("alicloud_")) or "imported", space)

    def unique(self, name: str, space: str) -> str:
        """`name`, or `name-2`, `name-3`, ..., unique in its namespace: HOP for instances, NAT gateways
        and peering connections (a route's next hop names any of them), one for each other kind."""
        candidate, n = name, 1
        while (space, candidate) in self.used or not NAME_RE.match(candidate):
            n += 1
            candidate = f"{name[:MAX_NAME - 1 - len(str(n))].rstrip('-')}-{n}"
        self.used.add((space, candidate))
        return candidate

    # ------------------------------------------------------------------------------ references
    def one(self, res: Resource, key: str, types: tuple[str, ...], what: str) -> Resource | None:
        """The one imported resource that argument `key` names; else `res` is skipped with the reason."""
        t = self.doc.targets(res, key, types)
        for target in t.found:
            if self.name_of(target):
                return target
        if t.found:
            self.skip(res, f"{key} names {t.found[0].address}, which is not imported")
        elif t.missing:
            self.skip(res, f"{key} names {printable(t.missing[0], 80)}, which is not {what} of this document")
        else:
            self.skip(res, f"{key} is not set; expected {what}")
        return None

    def many(self, res: Resource, key: str, types: tuple[str, ...]) -> tuple[list[Resource], list[str]]:
        """The imported resources that argument `key` names, and what it names that is not imported."""
        t = self.doc.targets(res, key, types)
        found = [r for r in t.found if self.name_of(r)]
        return found, [printable(m, 80) for m in t.missing] + [r.address for r in t.found if not self.name_of(r)]

    def description(self, res: Resource, *keys: str) -> dict:
        text = res.text(*keys)
        return {"description": printable(text, MAX_TEXT)} if text else {}


def network(value: Any) -> ipaddress.IPv4Network | None:
    """An IPv4 CIDR as Alibaba accepts one (a bare address is a /32), or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return ipaddress.IPv4Network(value.strip(), strict=False)
    except ValueError:
        return None


def address(value: Any) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return ipaddress.IPv4Address(value.strip())
    except ValueError:
        return None
