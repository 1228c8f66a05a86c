"""Terway's PodNetworking (network.alibabacloud.com/v1beta1)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .meta import K8s, LabelSelector, ObjectMeta, _check_selector

POD_NETWORKING_ANNOTATION = "k8s.aliyun.com/pod-networking"


class PodNetworkingSelector(K8s):
    """Both selectors must match; an absent one does not restrict; with neither, nothing matches."""

    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None


class PodNetworkingSpec(K8s):
    selector: PodNetworkingSelector = PodNetworkingSelector()
    securityGroupIDs: list[str] = Field(default=[], max_length=10)
    vSwitchOptions: list[str] = []

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
    selects, in eni mode, get their own security groups and take addresses from its vSwitches.
    Fields of the CRD that kubevpc does not emulate (allocationType, eniOptions) are ignored."""

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
