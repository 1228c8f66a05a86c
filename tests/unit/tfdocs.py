"""Terraform JSON documents for the import tests, written the way `terraform show -json` writes them
(Terraform's JSON Output Format): planned values without the values known only after apply, and a
configuration whose expressions hold the references."""
from __future__ import annotations

import json
from pathlib import Path

from kubevpc.importers.terraform import Imported, import_terraform

PROVIDER = "registry.terraform.io/aliyun/alicloud"


def r(type_: str, name: str, values: dict | None = None, index=None, **exprs) -> dict:
    """One resource instance: its planned values, its index, and its configuration's expressions."""
    return {"type": type_, "name": name, "values": values or {}, "index": index, "exprs": exprs}


def ref(*targets: str, attr: str = "id") -> dict:
    """An expression naming these resources' `attr`, as Terraform lists the references: the attribute,
    then the resource."""
    out: list[str] = []
    for t in targets:
        out += [f"{t}.{attr}", t]
    return {"references": out}


def const(value) -> dict:
    return {"constant_value": value}


def _address(res: dict, module: str = "") -> str:
    index = res["index"]
    suffix = "" if index is None else f"[{json.dumps(index)}]"
    return f"{module + '.' if module else ''}{res['type']}.{res['name']}{suffix}"


def module_values(resources, module: str = "", children=()) -> dict:
    """A module of planned_values (or of a state's values)."""
    out: dict = {"resources": []}
    if module:
        out["address"] = module
    for res in resources:
        item = {"address": _address(res, module), "mode": "managed", "type": res["type"], "name": res["name"],
                "provider_name": PROVIDER, "schema_version": 0, "values": res["values"], "sensitive_values": {}}
        if res["index"] is not None:
            item["index"] = res["index"]
        out["resources"].append(item)
    if children:
        out["child_modules"] = list(children)
    return out


def module_config(resources, module_calls: dict | None = None, outputs: dict | None = None) -> dict:
    """A module of the configuration: each resource once (its instances share one block)."""
    seen, out = set(), []
    for res in resources:
        if (res["type"], res["name"]) in seen:
            continue
        seen.add((res["type"], res["name"]))
        out.append({"address": f"{res['type']}.{res['name']}", "mode": "managed", "type": res["type"],
                    "name": res["name"], "provider_config_key": "alicloud", "expressions": res["exprs"],
                    "schema_version": 0})
    module: dict = {"resources": out}
    if module_calls:
        module["module_calls"] = module_calls
    if outputs:
        module["outputs"] = outputs
    return module


def plan(*resources, children=(), module_calls=None) -> dict:
    return {"format_version": "1.2", "terraform_version": "1.5.7",
            "planned_values": {"root_module": module_values(resources, children=children)},
            "configuration": {"root_module": module_config(resources, module_calls)}}


def state(*resources) -> dict:
    return {"format_version": "1.0", "terraform_version": "1.5.7",
            "values": {"root_module": module_values(resources)}}


def imported(tmp_path: Path, doc) -> Imported:
    path = tmp_path / "plan.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return import_terraform(str(path))


def skipped(imp: Imported) -> dict[str, str]:
    """Why each resource was not imported (reasons of one address joined)."""
    out: dict[str, str] = {}
    for address, why in imp.skipped:
        out[address] = f"{out[address]} | {why}" if address in out else why
    return out


def invented(imp: Imported) -> dict[str, str]:
    out: dict[str, str] = {}
    for address, what in imp.invented:
        out[address] = f"{out[address]} | {what}" if address in out else what
    return out


VPC = r("alicloud_vpc", "main", {"vpc_name": "vpc", "cidr_block": "192.168.0.0/16"})
VSW_A = r("alicloud_vswitch", "a", {"vswitch_name": "vsw-a", "cidr_block": "192.168.1.0/24", "zone_id": "zone-i"},
          vpc_id=ref("alicloud_vpc.main"))
VSW_B = r("alicloud_vswitch", "b", {"vswitch_name": "vsw-b", "cidr_block": "192.168.2.0/24", "zone_id": "zone-j"},
          vpc_id=ref("alicloud_vpc.main"))
NET = (VPC, VSW_A, VSW_B)


def group(name: str, **values) -> dict:
    return r("alicloud_security_group", name, {"name": name, **values}, vpc_id=ref("alicloud_vpc.main"))


def rule(name: str, group_name: str, values: dict, **exprs) -> dict:
    base = {"type": "ingress", "ip_protocol": "tcp", "port_range": "80/80", "policy": "accept", "priority": 1,
            "nic_type": "intranet"}
    return r("alicloud_security_group_rule", name, {**base, **values},
             security_group_id=ref(f"alicloud_security_group.{group_name}"), **exprs)


def instance(name: str, values: dict | None = None, vsw: str = "a", groups=("web",)) -> dict:
    return r("alicloud_instance", name, {"instance_name": name, **(values or {})},
             vswitch_id=ref(f"alicloud_vswitch.{vsw}"),
             security_groups=ref(*(f"alicloud_security_group.{g}" for g in groups)))
