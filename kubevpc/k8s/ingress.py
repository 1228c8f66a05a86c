"""Ingress (networking.k8s.io/v1) and Secret (v1), checked as the API server checks them
(pkg/apis/networking/validation, pkg/apis/core/validation); the TLS pair of a Secret
(:func:`tls_pair`), and :func:`self_signed` for a TLS Secret a scenario names but does not declare.
The nginx.conf they make is kubevpc.render.nginx's."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import datetime, timedelta, timezone
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import Field, field_validator, model_validator

from .meta import DNS1123_SUBDOMAIN, K8s, Keyed, ObjectMeta, _port_name_problem

CLASS_ANNOTATION = "kubernetes.io/ingress.class"          # the legacy way to name a class
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"
# ingress-nginx refuses snippet annotations unless its ConfigMap sets allow-snippet-annotations
# (false by default since controller 1.9, after CVE-2021-25742): a snippet is NGINX configuration,
# which the master process, running as root, acts on (an access_log writes any file)
SNIPPET = re.compile(re.escape(ANNOTATION_PREFIX) + r"[a-z-]*snippet$")


def snippet_refusal(key: str) -> str:
    """ingress-nginx's own words for a snippet annotation it does not allow, and kubevpc's way out."""
    return (f"{key} annotation cannot be used. Snippet directives are disabled by the Ingress administrator "
            "(ingress-nginx's allow-snippet-annotations is false by default since 1.9, CVE-2021-25742); set "
            "cluster.ingress.allowSnippetAnnotations: true in the scenario to allow them (NGINX's master "
            "runs as root: only for scenarios you trust)")


def snippet_annotations(ing: "Ingress") -> list[str]:
    return sorted(key for key in ing.metadata.annotations if SNIPPET.match(key))


DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# what the API server refuses in Exact and Prefix paths (validateIngressHTTPPath)
BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")
BAD_PATH_ENDS = ("/..", "/.")


# -- Ingress -----------------------------------------------------------------------------------


def _check_host(host: str, where: str) -> str:
    """A DNS-1123 subdomain, or a wildcard ``*.`` + one; never an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError(f"{where} {host!r} must be a DNS name, not an IP address")
    name = host[2:] if host.startswith("*.") else host
    if len(host) > 253 or not DNS1123_SUBDOMAIN.match(name):
        raise ValueError(f"{where} {host!r} must be a DNS-1123 subdomain (lower case), "
                         "or a wildcard '*.' followed by one")
    return host


class ServiceBackendPort(K8s):
    """Exactly one of a Service port's number or its name."""

    number: int | None = Field(default=None, ge=1, le=65535)
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "ServiceBackendPort":
        if (self.number is None) == (self.name is None):
            raise ValueError("port: exactly one of port.number and port.name must be set")
        if self.name is not None and (problem := _port_name_problem(self.name)):
            raise ValueError(f"port.name {self.name!r} {problem}")
        return self

    @property
    def ref(self) -> int | str:
        return self.number if self.number is not None else str(self.name)


class IngressServiceBackend(K8s):
    name: str
    port: ServiceBackendPort

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            raise ValueError(f"service.name {name!r} must be a DNS-1035 label (a Service name)")
        return name


class IngressBackend(K8s):
    """A Service backend. The API's other kind, a ``resource`` backend, is refused here: only
    Services can be emulated."""

    service: IngressServiceBackend | None = None
    resource: dict | None = None

    @model_validator(mode="after")
    def _check(self) -> "IngressBackend":
        if self.resource is not None:
            raise ValueError("backend.resource is not supported by kubevpc: use backend.service")
        if self.service is None:
            raise ValueError("backend.service is required")
        return self


class HTTPIngressPath(K8s):
    path: str | None = None
    pathType: Literal["Exact", "Prefix", "ImplementationSpecific"]
    backend: IngressBackend

    @model_validator(mode="after")
    def _check(self) -> "HTTPIngressPath":
        path = self.path or ""
        if self.pathType == "ImplementationSpecific" and not path:
            return self                   # the API accepts it; it is served as Prefix "/"
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must be an absolute path (start with '/')")
        if self.pathType != "ImplementationSpecific":
            for part in BAD_PATH_PARTS:
                if part in path:
                    raise ValueError(f"path {path!r} must not contain {part!r} (pathType {self.pathType})")
            for end in BAD_PATH_ENDS:
                if path.endswith(end):
                    raise ValueError(f"path {path!r} must not end with {end!r} (pathType {self.pathType})")
        return self

    @property
    def prefix(self) -> bool:
        """Prefix matching (Prefix, and ImplementationSpecific, which is served as Prefix)."""
        return self.pathType != "Exact"

    @property
    def match_path(self) -> str:
        """The path as matched: a Prefix path without its trailing '/' ("/" stays "/")."""
        path = self.path or "/"
        return (path.rstrip("/") or "/") if self.prefix else path


class HTTPIngressRuleValue(K8s):
    paths: list[HTTPIngressPath] = Field(min_length=1)


class IngressRule(K8s):
    host: str | None = None
    http: HTTPIngressRuleValue | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str | None:
        return _check_host(host, "host") if host else None


class IngressTLS(K8s):
    hosts: list[str] = []
    secretName: str | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        return [_check_host(h, "tls host") for h in hosts]

    @field_validator("secretName")
    @classmethod
    def _secret(cls, name: str | None) -> str | None:
        if name is not None and (len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)):
            raise ValueError(f"secretName {name!r} must be a DNS-1123 subdomain")
        return name


class IngressSpec(K8s):
    ingressClassName: str | None = None
    defaultBackend: IngressBackend | None = None
    tls: list[IngressTLS] = []
    rules: list[IngressRule] = []

    @model_validator(mode="after")
    def _check(self) -> "IngressSpec":
        if not self.rules and self.defaultBackend is None:
            raise ValueError("spec: either defaultBackend or rules must be specified")
        name = self.ingressClassName
        if name is not None and (len(name) > 253 or not DNS1123_SUBDOMAIN.match(name)):
            raise ValueError(f"ingressClassName {name!r} must be a DNS-1123 subdomain")
        return self


class Ingress(K8s, Keyed):
    apiVersion: Literal["networking.k8s.io/v1"]
    kind: Literal["Ingress"]
    metadata: ObjectMeta
    spec: IngressSpec

    @property
    def ingress_class(self) -> str | None:
        """``spec.ingressClassName``, else the legacy ``kubernetes.io/ingress.class`` annotation."""
        return self.spec.ingressClassName or self.metadata.annotations.get(CLASS_ANNOTATION)


# -- Secret ------------------------------------------------------------------------------------


class Secret(K8s, Keyed):
    """A Secret; only ``kubernetes.io/tls`` ones are used. ``data`` values are base64, as in a
    manifest; ``stringData`` values are plain text and win over ``data`` for the same key."""

    apiVersion: Literal["v1"]
    kind: Literal["Secret"]
    metadata: ObjectMeta
    type: str = "Opaque"
    data: dict[str, str] = {}
    stringData: dict[str, str] = {}

    @model_validator(mode="after")
    def _check(self) -> "Secret":
        for key, value in self.data.items():
            _b64(value, f"data[{key!r}]")
        for key in [*self.data, *self.stringData]:
            if len(key) > 253 or not SECRET_KEY.match(key):
                raise ValueError(f"key {key!r} must consist of alphanumeric characters, '-', '_' or '.'")
        if self.type == "kubernetes.io/tls":
            for key in ("tls.crt", "tls.key"):
                if key not in self.data and key not in self.stringData:
                    raise ValueError(f"data[{key!r}] is required for a Secret of type kubernetes.io/tls")
        return self


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where} is not valid base64") from None


def tls_pair(secret: Secret) -> tuple[bytes, bytes]:
    """The PEM certificate and key of a TLS Secret: ValueError when one is missing, is not
    base64, is not PEM, or when the key does not belong to the certificate."""
    pems = []
    for key in ("tls.crt", "tls.key"):
        if key in secret.stringData:
            pems.append(secret.stringData[key].encode())
        elif key in secret.data:
            pems.append(_b64(secret.data[key], f"secret {secret.key} data[{key!r}]"))
        else:
            raise ValueError(f"secret {secret.key} has no {key}")
    try:
        check_tls_pair(pems[0], pems[1])
    except ValueError as exc:
        raise ValueError(f"secret {secret.key}: {exc}") from None
    return pems[0], pems[1]


def check_tls_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """ValueError unless ``cert_pem`` is a PEM certificate and ``key_pem`` its unencrypted PEM
    private key (what NGINX itself refuses to load)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError("tls.crt is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("tls.key is not an unencrypted PEM private key") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("tls.key is not the key of tls.crt")


def self_signed(hosts: list[str], days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 server certificate and its key, both PEM.

    The subject alternative names are ``hosts`` (IP addresses become IP SANs); the common name
    is the first host, or ``kubevpc self-signed`` when that is longer than X.509's 64
    characters. Valid from five minutes ago (clock skew) for ``days`` days.
    """
    if not hosts:
        raise ValueError("self_signed needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = hosts[0] if len(hosts[0]) <= 64 else "kubevpc self-signed"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.now(timezone.utc)
    usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                           "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
