"""Namespace, Pod, Deployment, StatefulSet and DaemonSet (apps/v1): the objects that make pods."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .meta import DNS1123_LABEL, PORT_NAME, K8s, LabelSelector, ObjectMeta, TemplateMeta


class ContainerPort(K8s):
    containerPort: int = Field(ge=1, le=65535)
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"

    @model_validator(mode="after")
    def _check(self) -> "ContainerPort":
        if self.name is not None and (len(self.name) > 15 or not PORT_NAME.match(self.name)):
            raise ValueError(f"port name {self.name!r} must be at most 15 lowercase letters, digits and '-'")
        return self


class Container(K8s):
    name: str
    image: str | None = None
    ports: list[ContainerPort] = []


class PodSpec(K8s):
    containers: list[Container] = Field(min_length=1)
    nodeName: str | None = None
    hostNetwork: bool = False       # the pod runs in its node's network namespace, with the node's address
    terminationGracePeriodSeconds: int = Field(default=30, ge=0, le=86400)   # kubevpc's bound: a day
    nodeSelector: dict[str, str] = {}   # read for a DaemonSet's pods (the nodes they run on); a Pod's is not


class PodStatus(K8s):
    """What the kubelet reports; kubevpc reads the phase: Succeeded and Failed (an evicted pod)
    pods have stopped for good."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] = "Running"
    reason: str | None = None       # e.g. Evicted


class Pod(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus = PodStatus()


class PodTemplate(K8s):
    metadata: TemplateMeta = TemplateMeta()
    spec: PodSpec


class DeploymentSpec(K8s):
    replicas: int = Field(default=1, ge=0, le=1000)
    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _check(self) -> "DeploymentSpec":
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError("spec.selector does not match spec.template.metadata.labels "
                             "(the API server rejects such a Deployment)")
        return self


class Deployment(K8s):
    apiVersion: Literal["apps/v1"]
    kind: Literal["Deployment"]
    metadata: ObjectMeta
    spec: DeploymentSpec


class StatefulSetSpec(K8s):
    """What kubevpc uses of a StatefulSet: replicas, selector, template, and serviceName, the
    governing (headless) Service that gives each pod its DNS name `<pod>.<serviceName>`. Its pods
    are `<name>-0` .. `<name>-(replicas-1)`; fields it does not emulate (podManagementPolicy,
    updateStrategy, volumeClaimTemplates, ...) are accepted and ignored."""

    replicas: int = Field(default=1, ge=0, le=1000)
    selector: LabelSelector
    template: PodTemplate
    serviceName: str = ""

    @model_validator(mode="after")
    def _check(self) -> "StatefulSetSpec":
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError("spec.selector does not match spec.template.metadata.labels "
                             "(the API server rejects such a StatefulSet)")
        if self.serviceName and (len(self.serviceName) > 63 or not DNS1123_LABEL.match(self.serviceName)):
            raise ValueError(f"spec.serviceName {self.serviceName!r} is not a DNS-1123 label (it names a Service)")
        return self


class StatefulSet(K8s):
    """apps/v1 StatefulSet: pods with stable names (and, under a Fixed PodNetworking in eni mode,
    stable addresses). A pod deleted is created again under the same name once it is gone."""

    apiVersion: Literal["apps/v1"]
    kind: Literal["StatefulSet"]
    metadata: ObjectMeta
    spec: StatefulSetSpec


class DaemonSetSpec(K8s):
    """What kubevpc uses of a DaemonSet: selector and template (its nodeSelector says which nodes
    run a pod). Fields it does not emulate (updateStrategy, minReadySeconds, tolerations, ...) are
    accepted and ignored."""

    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _check(self) -> "DaemonSetSpec":
        if not self.selector.matches(self.template.metadata.labels):
            raise ValueError("spec.selector does not match spec.template.metadata.labels "
                             "(the API server rejects such a DaemonSet)")
        if self.template.spec.nodeName is not None:
            raise ValueError("spec.template.spec.nodeName is set; a DaemonSet runs one pod on each node its "
                             "nodeSelector matches (expected a nodeSelector instead)")
        return self


class DaemonSet(K8s):
    """apps/v1 DaemonSet: one pod on every node of the cluster whose labels its template's
    nodeSelector matches, named `<name>-<node>` (kubevpc.planning.workloads)."""

    apiVersion: Literal["apps/v1"]
    kind: Literal["DaemonSet"]
    metadata: ObjectMeta
    spec: DaemonSetSpec


class Namespace(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Namespace"]
    metadata: ObjectMeta
