"""Terway's PodNetworking (network.alibabacloud.com/v1beta1)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from .meta import K8s, LabelSelector, ObjectMeta, _check_selector

POD_NETWORKING_ANNOTATION = "k8s.aliyun.com/pod-networking"


class PodNetworkingSelector(K8s):
    """Both selectors must match; an absent one does not restrict; with neither, nothing matches."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None


_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> float:
    """A Go duration (time.ParseDuration, as Terway reads releaseAfter: "5m0s", "1h", "90s") in
    seconds; ValueError when it is not one, or is negative."""
    if text in ("0",):
        return 0.0
    if not _DURATION.match(text):
        raise ValueError(f"releaseAfter {text!r} is not a duration; expected a Go duration like 5m0s, 10m or 1h")
    return sum(float(n) * _UNIT[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text))


class AllocationType(K8s):
    """How a selected pod's address is held (Terway's AllocationType): Elastic, released when the
    pod goes; Fixed, kept for a StatefulSet's pod across its re-creation, released `releaseAfter`
    after the pod went (releaseStrategy TTL) or never (Never)."""

    type: Literal["Elastic", "Fixed"] = "Elastic"
    releaseStrategy: Literal["TTL", "Never"] = "TTL"
    releaseAfter: str = "10m"

    @model_validator(mode="after")
    def _check(self) -> "AllocationType":
        duration_seconds(self.releaseAfter)
        return self

    @property
    def release_after(self) -> float:
        return duration_seconds(self.releaseAfter)


class VSwitchSelectOptions(K8s):
    vSwitchSelectionPolicy: Literal["ordered", "random", "most"] = "ordered"


class ENIOptions(K8s):
    """How a selected pod's ENI is attached (Terway's ENIOptions, pkg/apis/network.alibabacloud.com/
    v1beta1: eniType, an enum of Default, ENI and Trunk, default Default). kubevpc's Default is
    the cluster's configuration, a shared ENI; ENI is an exclusive (secondary) ENI moved into the
    pod's namespace, so its packets leave through it even to a pod of its own node (Terway's
    ExclusiveENI datapath); Trunk a member ENI of the node's trunk ENI, whose same-node traffic the
    node routes itself (Terway's policy-route datapath), as Default's."""

    eniType: Literal["Default", "ENI", "Trunk"] = "Default"


class PodNetworkingSpec(K8s):
    selector: PodNetworkingSelector = PodNetworkingSelector()
    eniOptions: ENIOptions = ENIOptions()
    securityGroupIDs: list[str] = Field(default=[], max_length=10)
    vSwitchOptions: list[str] = []
    allocationType: AllocationType = AllocationType()
    vSwitchSelectOptions: VSwitchSelectOptions = VSwitchSelectOptions()

    @model_validator(mode="after")
    def _check(self) -> "PodNetworkingSpec":
        for name in ("podSelector", "namespaceSelector"):
            sel = getattr(self.selector, name)
            if sel is not None:
                _check_selector(sel, f"selector.{name}")
        if not self.securityGroupIDs and not self.vSwitchOptions:
            raise ValueError("expected securityGroupIDs or vSwitchOptions (or both)")
        return self


class PodNetworking(K8s):
    """Terway's PodNetworking (network.alibabacloud.com/v1beta1, cluster-scoped): the pods it
    selects, in eni mode, get their own security groups and take addresses from its vSwitches,
    held as its allocationType says, on the kind of ENI its eniOptions name."""

    apiVersion: Literal["network.alibabacloud.com/v1beta1"]
    kind: Literal["PodNetworking"]
    metadata: ObjectMeta
    spec: PodNetworkingSpec

    def selects(self, pod_labels: dict[str, str], namespace_labels: dict[str, str]) -> bool:
        sel = self.spec.selector
        if sel.podSelector is None and sel.namespaceSelector is None:
            return False
        return (sel.podSelector is None or sel.podSelector.matches(pod_labels)) and \
            (sel.namespaceSelector is None or sel.namespaceSelector.matches(namespace_labels))
