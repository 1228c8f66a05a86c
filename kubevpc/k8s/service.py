"""Service (v1), checked as the API server's ValidateService checks it."""
from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, model_validator

from .meta import DNS1123_LABEL, DNS1123_SUBDOMAIN, PORT_NAME, K8s, ObjectMeta, check_labels


class ServicePort(K8s):
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    port: int = Field(ge=1, le=65535)
    targetPort: int | str | None = None        # default: port
    nodePort: int | None = None

    @model_validator(mode="after")
    def _check(self) -> "ServicePort":
        if self.name is not None and not DNS1123_LABEL.match(self.name):
            raise ValueError(f"port name {self.name!r} must be a DNS-1123 label")
        if isinstance(self.targetPort, int) and not 1 <= self.targetPort <= 65535:
            raise ValueError(f"targetPort {self.targetPort} must be between 1 and 65535")
        if isinstance(self.targetPort, str) and (len(self.targetPort) > 15 or not PORT_NAME.match(self.targetPort)
                                                 or not re.search("[a-z]", self.targetPort)):
            raise ValueError(f"targetPort {self.targetPort!r} must be a number or a container port name "
                             "(at most 15 lowercase letters, digits and '-', with a letter)")
        return self

    @property
    def target(self) -> int | str:
        return self.port if self.targetPort is None else self.targetPort


class ClientIPConfig(K8s):
    timeoutSeconds: int = Field(default=10800, ge=1, le=86400)


class SessionAffinityConfig(K8s):
    clientIP: ClientIPConfig = ClientIPConfig()


class ServiceSpec(K8s):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = []
    clusterIP: str | None = None               # "None": headless
    externalName: str | None = None
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: SessionAffinityConfig = SessionAffinityConfig()
    externalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    internalTrafficPolicy: Literal["Cluster", "Local"] = "Cluster"
    healthCheckNodePort: int | None = None
    publishNotReadyAddresses: bool = False
    externalIPs: list[str] = []                # kube-proxy balances these like the ClusterIP
    clusterIPs: list[str] = []                 # dual stack (KEP-563): one per family, the first is clusterIP
    ipFamilies: list[str] = []                 # IPv4, IPv6: the families, primary first ([] : the cluster's default)
    ipFamilyPolicy: str | None = None          # SingleStack (default), PreferDualStack, RequireDualStack

    @property
    def externally_accessible(self) -> bool:
        """pkg/api/service ExternallyAccessible: where externalTrafficPolicy means something."""
        return self.type in ("NodePort", "LoadBalancer") or (self.type == "ClusterIP" and bool(self.externalIPs))

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data):
        """clusterIP is clusterIPs[0] when only clusterIPs is given, as the API server's strategy
        makes it (pkg/registry/core/service/strategy.go, normalizeClusterIPs)."""
        if isinstance(data, dict) and data.get("clusterIPs") and not data.get("clusterIP"):
            data = {**data, "clusterIP": data["clusterIPs"][0]}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ServiceSpec":
        """The API server's own checks (pkg/apis/core/validation ValidateService), in its words."""
        headless = self.clusterIP == "None"
        if self.type == "ExternalName":
            if not self.externalName or not DNS1123_SUBDOMAIN.match(self.externalName.rstrip(".").lower()):
                raise ValueError("spec.externalName is required for type ExternalName and must be a DNS name")
        elif self.externalName:
            raise ValueError("spec.externalName is only for type ExternalName")
        if not self.ports and self.type != "ExternalName" and not headless:
            raise ValueError("spec.ports: at least one port is required (except for headless and ExternalName)")
        if len(self.ports) > 1 and any(not p.name for p in self.ports):
            raise ValueError("spec.ports: every port needs a name when there is more than one")
        names = [p.name for p in self.ports if p.name]
        if len(names) != len(set(names)):
            raise ValueError("spec.ports: port names must be unique")
        pairs = [(p.port, p.protocol) for p in self.ports]
        if len(pairs) != len(set(pairs)):
            raise ValueError("spec.ports: each port and protocol pair may appear once")
        if self.type in ("ClusterIP", "ExternalName") and any(p.nodePort for p in self.ports):
            raise ValueError("spec.ports[].nodePort may only be set for type NodePort or LoadBalancer")
        if headless and self.type != "ClusterIP":
            raise ValueError('spec.clusterIP "None" (headless) is only allowed for type ClusterIP')
        if self.externalTrafficPolicy is not None and not self.externally_accessible:
            raise ValueError("spec.externalTrafficPolicy may only be set for externally-accessible services "
                             "(type NodePort or LoadBalancer, or ClusterIP with externalIPs)")
        if self.healthCheckNodePort is not None and not (self.type == "LoadBalancer"
                                                         and self.externalTrafficPolicy == "Local"):
            raise ValueError("spec.healthCheckNodePort is only for type LoadBalancer with externalTrafficPolicy Local")
        if self.selector:
            check_labels(self.selector)
        for i, ip in enumerate(self.externalIPs):
            check_external_ip(i, ip)
        check_families(self)
        return self

    @property
    def headless(self) -> bool:
        return self.clusterIP == "None"


IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")


def _quoted(values: list[str]) -> str:
    """A list as the API server prints one in an error: []string{"a", "b"}."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def check_families(spec: "ServiceSpec") -> None:
    """clusterIPs, ipFamilies and ipFamilyPolicy as ValidateService checks them (pkg/apis/core/
    validation ValidateService and ValidateServiceClusterIPsRelatedFields), in its words. What
    depends on the cluster (a family it lacks, RequireDualStack on a single-stack cluster) and the
    policy against the families (pkg/registry/core/service/storage/alloc.go) are the planner's
    (kubevpc.planning.services). As the API server's strategy does, clusterIP is clusterIPs[0]
    when only clusterIPs is given (normalizeClusterIPs)."""
    if spec.type == "ExternalName":
        for name, value in (("clusterIPs", spec.clusterIPs), ("ipFamilies", spec.ipFamilies),
                            ("ipFamilyPolicy", spec.ipFamilyPolicy)):
            if value:
                raise ValueError(f"spec.{name}: Forbidden: may not be set for ExternalName services")
        return
    if spec.clusterIP and spec.clusterIPs and spec.clusterIPs[0] != spec.clusterIP:
        raise ValueError(f"spec.clusterIPs: Invalid value: {_quoted(spec.clusterIPs)}: first value must match "
                         "`clusterIP`")
    for i, family in enumerate(spec.ipFamilies):
        if family not in IP_FAMILIES:
            raise ValueError(f'spec.ipFamilies[{i}]: Unsupported value: "{family}": supported values: "IPv4", "IPv6"')
        if family in spec.ipFamilies[:i]:
            raise ValueError(f'spec.ipFamilies[{i}]: Duplicate value: "{family}"')
    if spec.ipFamilyPolicy is not None and spec.ipFamilyPolicy not in IP_FAMILY_POLICIES:
        raise ValueError(f'spec.ipFamilyPolicy: Unsupported value: "{spec.ipFamilyPolicy}": supported values: '
                         '"PreferDualStack", "RequireDualStack", "SingleStack"')
    _check_cluster_ips(spec)


def _check_cluster_ips(spec: "ServiceSpec") -> None:
    ips = spec.clusterIPs
    if not ips:
        return
    if ips[0] == "None":
        if len(ips) > 1:
            raise ValueError(f"spec.clusterIPs: Invalid value: {_quoted(ips)}: 'None' must be the first and only value")
        return
    versions = []
    for i, ip in enumerate(ips):
        try:
            versions.append(ipaddress.ip_address(ip).version)
        except ValueError:
            raise ValueError(f'spec.clusterIPs[{i}]: Invalid value: "{ip}": must be a valid IP address, '
                             "(e.g. 10.9.8.7 or 2001:db8::ffff)") from None
    if len(ips) > 2:
        raise ValueError(f"spec.clusterIPs: Invalid value: {_quoted(ips)}: may only hold up to 2 values")
    if len(ips) == 2 and versions[0] == versions[1]:
        raise ValueError(f"spec.clusterIPs: Invalid value: {_quoted(ips)}: may specify no more than one IP for "
                         "each IP family")
    for i, (ip, version) in enumerate(zip(ips, versions)):
        if i < len(spec.ipFamilies) and spec.ipFamilies[i] != f"IPv{version}":
            want = spec.ipFamilies[i]
            raise ValueError(f'spec.clusterIPs[{i}]: Invalid value: "{ip}": expected an {want} value as indicated '
                             f"by `ipFamilies[{i}]`")


LINK_LOCAL_MULTICAST = ipaddress.IPv4Network("224.0.0.0/24")     # Go's net.IP.IsLinkLocalMulticast


def check_external_ip(i: int, ip: str) -> None:
    """spec.externalIPs[i] as ValidateService checks it (validation.IsValidIP, then
    ValidateNonSpecialIP, pkg/apis/core/validation), in the API server's words; an IPv6 address,
    which the API server takes, kubevpc refuses: it emulates IPv4 only."""
    at = f'spec.externalIPs[{i}]: Invalid value: "{ip}"'
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{at}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)") from None
    if addr.version != 4:
        raise ValueError(f"{at}: kubevpc emulates IPv4 only; expected an IPv4 address")
    for bad, words in ((addr.is_unspecified, f"may not be unspecified ({ip})"),
                       (addr.is_loopback, "may not be in the loopback range (127.0.0.0/8, ::1/128)"),
                       (addr.is_link_local, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"),
                       (addr in LINK_LOCAL_MULTICAST,
                        "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")):
        if bad:
            raise ValueError(f"{at}: {words}")


class Service(K8s):
    apiVersion: Literal["v1"]
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec
