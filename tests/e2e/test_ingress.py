"""Ingress on real NGINX end to end, in every mode (tests/e2e/data/ingress.yaml): requests from the
emulated internet through the internet-facing SLB to the ingress-controller pods and on to the
Services' pods, by host and path, over TLS, while Ingresses and endpoints change."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from kubevpc.daemons.ingress import ingress_status
from kubevpc.lab import Lab

from .conftest import MODES, as_user, lab_in_mode
from .test_services import wait_health

SCENARIO = os.path.join(os.path.dirname(__file__), "data", "ingress.yaml")
SLB = "ingress-nginx/ingress-nginx-controller"


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_in_mode(SCENARIO, request.param)


def public_ip(lab: Lab) -> str:
    """The SLB's public address; the first time, waits until its checker counts every backend of
    both listeners healthy and a request goes through (the controller then has them in its groups)."""
    slb = next(s for s in lab.plan.slbs if s.service == SLB)
    if lab.run not in _forwarding:
        for li in slb.listeners:
            wait_health(lab, SLB, {f"{b.ip}:{b.check_port}": "healthy" for b in li.backends}, 20, li.name)
        end = time.monotonic() + 10
        while lab.exec("inet/client", ["curl", "-s", "-o", "/dev/null", "-m", "0.5", f"http://{slb.public_ip}/"]).returncode:
            assert time.monotonic() < end, "the SLB forwards nothing 10 s after its backends became healthy"
        _forwarding.add(lab.run)
    return slb.public_ip


_forwarding: set[str] = set()      # runs whose SLB was seen forwarding


def get(lab: Lab, host: str, path: str = "/", https: bool = False, cacert: str | None = None) -> tuple[int, str]:
    """curl from the internet client: (HTTP status, body); status 0 when curl itself failed."""
    ip = public_ip(lab)
    scheme, port = ("https", 443) if https else ("http", 80)
    cmd = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "--resolve", f"{host}:{port}:{ip}",
           f"{scheme}://{host}{path}"]
    if cacert:
        cmd[1:1] = ["--cacert", cacert]
    r = lab.exec("inet/client", cmd)
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if r.returncode == 0 else 0), body


def ingress_pods(lab: Lab) -> list:
    return [h for h in lab.plan.pods if h.app == "ingress"]


def served_by(body: str) -> str:
    return json.loads(body)["name"]


# ------------------------------------------------------------------------------------ routing
def test_host_and_prefix_reach_the_right_service(lab):
    status, body = get(lab, "web.example.com", "/anything")
    assert status == 200 and served_by(body).startswith("web-")
    status, body = get(lab, "api.example.com", "/v1/users")
    assert status == 200 and served_by(body) == "api-0"


def test_prefix_matches_whole_path_elements_and_exact_only_itself(lab):
    assert get(lab, "api.example.com", "/v1")[0] == 200
    assert get(lab, "api.example.com", "/v1x")[0] == 404            # not an element of /v1
    status, body = get(lab, "api.example.com", "/exact")
    assert status == 200 and served_by(body).startswith("web-")
    assert get(lab, "api.example.com", "/exact/more")[0] == 404


def test_unknown_host_gets_the_default_backend_404(lab):
    status, body = get(lab, "nobody.example.com")
    assert status == 404 and "default backend - 404" in body


def test_the_nginx_pods_reach_the_backends_not_the_client(lab):
    """NGINX proxies: the web pod sees an ingress pod's address."""
    _, body = get(lab, "web.example.com")
    assert json.loads(body)["client"].rsplit(":", 1)[0] in {h.ip for h in ingress_pods(lab)}


# ---------------------------------------------------------------------------------------- TLS
def test_tls_with_the_generated_certificate(lab):
    cert = lab.ingress_certificate("default/web-tls")
    status, body = get(lab, "web.example.com", https=True, cacert=cert)
    assert status == 200 and served_by(body).startswith("web-")
    assert get(lab, "web.example.com", https=True)[0] == 0, "without the certificate, verification fails"
    assert get(lab, "api.example.com", https=True, cacert=cert)[0] == 0, "no certificate for a host without TLS"


# -------------------------------------------------------------------------------------- changes
def test_an_ingress_change_takes_effect_without_dropping_requests(lab):
    ip = public_ip(lab)
    assert get(lab, "new.example.com")[0] == 404
    loop = ("ok=0; bad=0; for i in $(seq 150); do c=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "
            f"-H 'Host: web.example.com' http://{ip}/); [ \"$c\" = 200 ] && ok=$((ok+1)) || bad=$((bad+1)); done; "
            "echo $ok $bad")
    result = {}
    t = threading.Thread(target=lambda: result.update(out=lab.exec("inet/client", ["sh", "-c", loop], timeout=120)))
    t.start()
    try:
        lab.apply({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "new"},
                   "spec": {"ingressClassName": "nginx", "rules": [{"host": "new.example.com", "http": {"paths": [
                       {"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}]}})
        status, body = get(lab, "new.example.com")
        assert status == 200 and served_by(body) == "api-0"
    finally:
        t.join(130)
    ok, bad = map(int, result["out"].stdout.split())
    assert (ok, bad) == (150, 0), result["out"].stdout
    lab.delete("ingress/default/new")
    assert get(lab, "new.example.com")[0] == 404


def test_a_bad_ingress_is_reported_and_the_last_good_configuration_serves(lab):
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "broken", "annotations": {
               "nginx.ingress.kubernetes.io/configuration-snippet": "no_such_directive on;"}},
           "spec": {"ingressClassName": "nginx", "rules": [{"host": "broken.example.com", "http": {"paths": [
               {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}
    lab.apply(bad)
    try:
        for h in ingress_pods(lab):
            st = ingress_status(lab.net.state_dir, h)
            assert st["ok"] is False and "no_such_directive" in st["error"], st
        assert get(lab, "web.example.com")[0] == 200
        assert get(lab, "broken.example.com")[0] == 404, "the broken Ingress is not served"
    finally:
        lab.delete("ingress/default/broken")
    assert all(ingress_status(lab.net.state_dir, h).get("ok") for h in ingress_pods(lab))


def test_nginx_follows_the_endpoints(lab):
    """A web pod marked not ready leaves NGINX's upstream; it comes back when ready again."""
    lab.set_ready("pod/default/web-0", False)
    try:
        names = {served_by(get(lab, "web.example.com")[1]) for _ in range(8)}
        assert names == {"web-1"}
    finally:
        lab.set_ready("pod/default/web-0", True)
    names = {served_by(get(lab, "web.example.com")[1]) for _ in range(16)}
    assert names == {"web-0", "web-1"}


def test_nginx_runs_in_the_ingress_pods_and_is_recorded_for_cleanup(lab):
    entries = {e.name for e in lab.net.ledger.entries() if e.kind == "process"}
    for h in ingress_pods(lab):
        pid = ingress_status(lab.net.state_dir, h)["nginx_pid"]
        assert str(pid) in entries
        ns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
        assert ns == h.netns


def test_nginx_workers_run_unprivileged_and_keys_are_roots_alone(lab, unprivileged_user):
    import pwd
    for h in ingress_pods(lab):
        master = ingress_status(lab.net.state_dir, h)["nginx_pid"]
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master]
        assert workers, "NGINX has a worker"
        assert _uid(master) == 0
        for pid in workers:
            assert pwd.getpwuid(_uid(pid)).pw_name in ("www-data", "nobody"), pid
    # every file that holds a private key is root's alone, and so is the directory above them
    keys = []
    for top, _, files in os.walk(lab.net.state_dir):
        for name in files:
            path = os.path.join(top, name)
            with open(path, "rb") as fh:
                if b"PRIVATE KEY" in fh.read():
                    keys.append(path)
                    assert os.stat(path).st_mode & 0o077 == 0, f"{path} is readable by others"
    assert any(p.endswith("state.json") for p in keys) and any(p.endswith(".key") for p in keys), keys
    for path in keys[:3]:
        res = as_user(unprivileged_user, ["cat", path])
        assert res.returncode != 0 and "Permission denied" in res.stderr and "PRIVATE" not in res.stdout


def _status_field(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        return next(line.split()[1] for line in fh if line.startswith(field + ":"))


def _ppid(pid: int) -> int:
    try:
        return int(_status_field(pid, "PPid"))
    except (OSError, StopIteration):
        return -1


def _uid(pid: int) -> int:
    return int(_status_field(pid, "Uid"))
