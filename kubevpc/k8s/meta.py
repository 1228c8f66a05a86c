"""What every Kubernetes object here shares: strict decoding, metadata, labels and selectors, and
the API server's checks of names that several kinds use."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class K8s(BaseModel):
    """Types are strict, as the API server's JSON decoding is: `replicas: true`, `replicas: 3.0`
    and `port: "80"` are errors, not 1, 3 and 80."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        if not name or len(name) > 63 or not LABEL_VALUE.match(name):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if len(str(value)) > 63 or not LABEL_VALUE.match(str(value)):
            raise ValueError(f"label value {value!r} of {key!r} is not a valid label value")


class Keyed:
    """An object known as ``namespace/name``: its ``key``."""

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


class ObjectMeta(K8s):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> "ObjectMeta":
        if len(self.name) > 253 or not DNS1123_SUBDOMAIN.match(self.name):
            raise ValueError(f"metadata.name {self.name!r} is not a DNS-1123 subdomain")
        if len(self.namespace) > 63 or not DNS1123_LABEL.match(self.namespace):
            raise ValueError(f"metadata.namespace {self.namespace!r} is not a DNS-1123 label")
        check_labels(self.labels)
        return self


class TemplateMeta(K8s):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> "TemplateMeta":
        check_labels(self.labels)
        return self


class LabelSelectorRequirement(K8s):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(K8s):
    matchLabels: dict[str, str] = {}
    matchExpressions: list[LabelSelectorRequirement] = []

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label selector semantics (an empty selector matches everything)."""
        if any(labels.get(k) != v for k, v in self.matchLabels.items()):
            return False
        for req in self.matchExpressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")


def _check_selector(selector: LabelSelector, where: str) -> None:
    """ValidateLabelSelector: valid keys and values; In/NotIn need values, Exists/DoesNotExist none."""
    check_labels(selector.matchLabels)
    for req in selector.matchExpressions:
        if req.operator in ("In", "NotIn") and not req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} needs at least one value")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            raise ValueError(f"{where}: operator {req.operator} of {req.key!r} takes no values")
        for value in req.values or [""]:
            check_labels({req.key: value})


def _port_name_problem(name: str) -> str:
    """IsValidPortName (IANA service names), in the API server's words; "" when valid."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not _PORT_NAME_CHARS.match(name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search("[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return ""
