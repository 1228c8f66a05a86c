"""The cluster DNS's records: ``zone()`` turns Services and Pods into the JSON zone document the
DNS server (kubevpc.daemons.dns) serves, and ``resolv_conf()`` writes what kubelet gives a
``dnsPolicy: ClusterFirst`` pod. A VPC's DNS resolver serves ``internet_zone()``, the emulated
internet's names, and ECS instances get ``vpc_resolv_conf()``, an Alibaba Cloud instance's
/etc/resolv.conf.

The records follow CoreDNS's *kubernetes* plugin, which implements the Kubernetes DNS-Based
Service Discovery specification:

- https://github.com/kubernetes/dns/blob/master/docs/specification.md
  (schema 1.0.1): A record of a ClusterIP Service; one A per *ready*
  endpoint for a headless Service, plus ``<hostname>.<svc>...`` per
  endpoint; ``_<port>._<proto>`` SRV records for named ports only (one per
  ready endpoint of a headless Service); CNAME for ExternalName;
  ``<a-b-c-d>.<ns>.pod.<zone>`` A records.
- https://coredns.io/plugins/kubernetes/: an endpoint's name is its hostname,
  else its dashed IP (``endpoint_pod_names`` off, the default); TTL 5 s.
- CoreDNS plugin/backend_lookup.go: SRV weights split 100 among the records
  of one answer.

Only the Pods given to ``zone()`` have pod records (``pods verified``). Stdlib only.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any, Iterable, Iterator

DEFAULT_DOMAIN = "cluster.local"
DEFAULT_TTL = 5  # CoreDNS kubernetes plugin default
INTERNET_TTL = 60  # the emulated internet's records


# -- the zone document ---------------------------------------------------------


def zone(
    services: Iterable[Any],
    pods: Iterable[Any],
    domain: str = DEFAULT_DOMAIN,
    ttl: int = DEFAULT_TTL,
) -> dict:
    """The JSON zone document for ``services`` and ``pods`` (duck-typed models).

    Records are ``{"name", "type", "value"}`` with fully qualified lower-case
    names; duplicates are dropped, since a DNS RRset is a set.
    """
    origin = _fqdn(domain)
    rows = [r for svc in services for r in _service_records(svc, origin)]
    rows += [_pod_record(pod, origin) for pod in pods]
    rows += [_pod_record(pod, origin, pod.ipv6) for pod in pods if getattr(pod, "ipv6", "")]
    records = [{"name": name, "type": rtype, "value": value} for name, rtype, value in rows]
    unique = {json.dumps(rec, sort_keys=True): rec for rec in records}
    return {"domain": origin.rstrip("."), "ttl": ttl, "records": list(unique.values())}


def _service_records(svc: Any, origin: str) -> Iterator[tuple[str, str, Any]]:
    name = _fqdn(f"{svc.name}.{svc.namespace}.svc.{origin}")
    named = [p for p in svc.ports if p.name]
    if svc.type == "ExternalName":
        # CoreDNS only makes a CNAME of a host name; an IP address gives nothing.
        if svc.external_name and not _is_ip(svc.external_name):
            yield name, "CNAME", _fqdn(svc.external_name)
        return
    if not svc.headless:
        # a dual-stack Service: an A and an AAAA record; a single-stack one has no record of the
        # other type, so a query for it is NODATA (NOERROR, no answer), as CoreDNS answers
        for ip in getattr(svc, "cluster_ips", ()) or (svc.cluster_ip,):
            yield name, _addr_type(ip), ip
        for port in named:
            yield _srv_name(port, name), "SRV", _srv(port.port, 100, name)
        return
    ready = [ep for ep in svc.endpoints if ep.ready]
    families = getattr(svc, "ip_families", ()) or ("IPv4",)
    for ep in ready:
        addresses = [a for a, f in ((ep.ip, "IPv4"), (getattr(ep, "ipv6", ""), "IPv6")) if a and f in families]
        host = _fqdn(f"{ep.hostname}.{name}") if ep.hostname else ""
        for ip in addresses:
            # an endpoint without a hostname is named after each of its addresses (CoreDNS: one
            # endpoint per address, in the EndpointSlice of its family)
            yield name, _addr_type(ip), ip
            yield host or _fqdn(f"{_dashed(ip)}.{name}"), _addr_type(ip), ip
        host = host or _fqdn(f"{_dashed(addresses[0] if addresses else ep.ip)}.{name}")
        for port in named:
            # CoreDNS splits a weight of 100 among the records of one answer.
            yield _srv_name(port, name), "SRV", _srv(port.port, max(1, 100 // len(ready)), host)


def _pod_record(pod: Any, origin: str, ip: str = "") -> tuple[str, str, Any]:
    """``<a-b-c-d>.<ns>.pod.<zone>``: an A record; for a pod's IPv6 address (``ip``), its dashed
    form and an AAAA record."""
    ip = ip or pod.ip
    return _fqdn(f"{_dashed(ip)}.{pod.namespace}.pod.{origin}"), _addr_type(ip), ip


def _srv_name(port: Any, name: str) -> str:
    return _fqdn(f"_{port.name}._{port.protocol}.{name}")


def _srv(port: int, weight: int, target: str) -> dict:
    return {"priority": 0, "weight": weight, "port": port, "target": target}


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _dashed(ip: str) -> str:
    """``10.244.1.5`` -> ``10-244-1-5`` (``:`` too for IPv6), as CoreDNS names endpoints."""
    return ip.replace(".", "-").replace(":", "-")


def _addr_type(ip: str) -> str:
    return "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def internet_zone(hosts: Iterable[Any], domain: str, ttl: int = INTERNET_TTL) -> dict:
    """The zone document of the emulated internet: ``<host>.<domain>`` is an A record of each
    host's address (duck-typed: ``name`` and ``ip``)."""
    origin = _fqdn(domain)
    records = [{"name": _fqdn(f"{h.name}.{origin}"), "type": _addr_type(h.ip), "value": h.ip} for h in hosts]
    return {"domain": origin.rstrip("."), "ttl": ttl, "records": records}


def vpc_resolv_conf(nameservers: Iterable[str]) -> str:
    """/etc/resolv.conf of an ECS instance: the VPC's DNS servers, with the options Alibaba Cloud's
    images set (``options timeout:2 attempts:3 rotate single-request-reopen``), and no search
    domain (none is set unless a DHCP options set gives one)."""
    return "options timeout:2 attempts:3 rotate single-request-reopen\n" + "".join(
        f"nameserver {ip}\n" for ip in nameservers)


def resolv_conf(namespace: str, dns_ip: str, domain: str = DEFAULT_DOMAIN) -> str:
    """/etc/resolv.conf of a ``dnsPolicy: ClusterFirst`` pod in ``namespace``.

    The node's own search domains, which kubelet would append, are left out:
    nothing of the real machine's DNS must leak into the emulation.
    """
    d = domain.rstrip(".")
    return (
        f"search {namespace}.svc.{d} svc.{d} {d}\n"
        f"nameserver {dns_ip}\n"
        "options ndots:5\n"
    )
