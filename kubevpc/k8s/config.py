"""ConfigMap (v1), and the Terway configuration some of them hold.

Terway reads its configuration from the ConfigMap `kube-system/eni-config`, key `eni_conf`: a JSON
document whose `vswitches` (zone -> vSwitch IDs), `security_group`/`security_groups` and
`vswitch_selection_policy` say where eni pods take their addresses and which security groups they
carry (Alibaba Cloud, "Customize Terway configuration parameters"). A node labelled
`terway-config: <name>` takes the `eni_conf` of ConfigMap `kube-system/<name>` over that one
("Configure node-level networking"; Terway's daemon: labelDynamicConfig), merged key by key as a
JSON merge patch (RFC 7396). Other ConfigMaps are accepted and ignored.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .meta import K8s, ObjectMeta

ENI_CONFIG = "eni-config"           # the cluster's Terway configuration, in kube-system
ENI_CONF_KEY = "eni_conf"           # its key holding the JSON document
NODE_CONFIG_LABEL = "terway-config"  # a node label naming the ConfigMap of its own configuration
TERWAY_NAMESPACE = "kube-system"


class ConfigMap(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str] = {}


class EniConf(BaseModel):
    """What kubevpc uses of an `eni_conf` document; every other key of Terway's (pool sizes, ENI
    tags, credentials, ...) is accepted and ignored. Types are strict, as Go's JSON decoding is."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    vswitches: dict[str, list[str]] = {}      # zone -> the pods' vSwitches there, in order
    security_group: str = ""
    security_groups: list[str] = Field(default=[], max_length=10)
    vswitch_selection_policy: str = ""        # "ordered": the one with the most free addresses first (Terway)

    @property
    def groups(self) -> tuple[str, ...]:
        """security_group and security_groups together, each once (Terway's GetSecurityGroups)."""
        out = [self.security_group] if self.security_group else []
        return tuple(dict.fromkeys(out + list(self.security_groups)))


def eni_conf_document(text: str) -> dict[str, Any]:
    """The JSON object an `eni_conf` holds; ValueError saying why when it is not one."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected Terway's eni_conf as a JSON object ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected Terway's eni_conf as a JSON object, not a {type(doc).__name__}")
    return doc


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7396: `patch` over `base`; an object merges key by key (null removes the key), anything
    else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
