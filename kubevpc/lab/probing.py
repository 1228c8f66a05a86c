"""The Lab's probes (kubevpc/lab/lab.py mixes this in): connect, probe and the reachability matrix.

By default every probe of a call runs in ONE process, `python -S -m kubevpc.probeloop`, started
in the root namespace: it makes each probe's socket in its source's namespace and drives all of
them from one selector loop, paced so the servers are not flooded (issue 21; the module says
how). KUBEVPC_PROBE=per-source runs them as before: one `python -m kubevpc.probe` in each source
namespace (mnexec), every target of a source at once. The results are the same either way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from ..errors import KubevpcError
from ..evaluator.matrix import Cell, Matrix, expected_matrix, select
from ..planning import resolve_endpoint
from ..probe import Result
from ..probeloop import PACE_CAP, PACE_WINDOW
from .servers import ROOT

PROBE_ENV = "KUBEVPC_PROBE"             # one (default) | per-source
CAP_ENV = "KUBEVPC_PROBE_CAP"           # kubevpc.probeloop.PACE_CAP, for measuring another
WINDOW_ENV = "KUBEVPC_PROBE_WINDOW"     # kubevpc.probeloop.PACE_WINDOW, in seconds
PROBE_MODES = ("one", "per-source")


@dataclass(frozen=True)
class Probe:
    """One connection attempt to make: from an endpoint to an endpoint's port."""

    source: str
    dest: str
    port: int
    proto: str = "tcp"         # tcp | udp | http
    key: str = ""
    family: int = 4            # 6: to the destination endpoint's IPv6 address (dual stack)


def probe_settings() -> tuple[str, int, float]:
    """KUBEVPC_PROBE, KUBEVPC_PROBE_CAP and KUBEVPC_PROBE_WINDOW, read and checked."""
    mode = os.environ.get(PROBE_ENV, "").strip() or "one"
    if mode not in PROBE_MODES:
        raise KubevpcError(f"{PROBE_ENV}={mode!r}: expected one of {', '.join(PROBE_MODES)}")
    try:
        cap = int(os.environ.get(CAP_ENV, "").strip() or PACE_CAP)
        window = float(os.environ.get(WINDOW_ENV, "").strip() or PACE_WINDOW)
    except ValueError:
        cap, window = 0, -1.0
    if cap < 1 or not 0 <= window <= 60:
        raise KubevpcError(f"{CAP_ENV}={os.environ.get(CAP_ENV, '')!r} or {WINDOW_ENV}="
                           f"{os.environ.get(WINDOW_ENV, '')!r}: expected a whole number >= 1 and seconds from 0 to 60")
    return mode, cap, window


class Probing:
    """Needs `plan`, `net`, `source_ports`, `host()`, `address()`, `service()`, `_pid()` and
    `down_reason()` from the Lab."""

    def connect(self, source: str, dest: str, port: int, proto: str = "tcp", timeout: float = 2.0,
                family: int = 4) -> Result:
        return self.probe([Probe(source, dest, port, proto, family=family)], timeout)[0]

    def probe(self, probes: Iterable[Probe], timeout: float = 2.0) -> list[Result]:
        """Run probes, every source and every target at once (paced: kubevpc.probeloop), each with
        its own deadline; results in order. A host-network pod's probes run in its node's
        namespace, with the node's own: their source ports are handed out from one range, so they
        never collide. Each call takes a new block of source ports (kubevpc.probe.PortBlocks)."""
        probes = list(probes)
        if not probes:
            return []
        homes = [self.plan.network_host(self.host(p.source)).key for p in probes]
        targets = [f"{p.proto}:{_bracket(self._dest_ip(p.dest, p.family))}:{p.port}" for p in probes]
        mode, cap, window = probe_settings()
        block = self.source_ports.take(max(Counter(homes).values()))
        if mode == "per-source":
            return self._probe_per_source(homes, targets, block, timeout)
        spread: dict[str, str] = {}
        netns = {home: f"/proc/{self._pid(home)}/ns/net" for home in dict.fromkeys(homes)}
        request = {"timeout": timeout, "ports": list(block), "cap": cap, "window": window, "probes": [
            {"key": str(i), "target": t, "netns": netns[home], "group": home,
             "spread": spread.setdefault(p.dest, self._spread(p.dest))}
            for i, (p, home, t) in enumerate(zip(probes, homes, targets))]}
        limit = timeout * 4 + 10 + len(probes) / 100       # paced: at worst 100 a second
        try:
            proc = subprocess.run([sys.executable, "-S", "-m", "kubevpc.probeloop"], input=json.dumps(request),
                                  capture_output=True, text=True, cwd=ROOT, timeout=limit)
        except subprocess.TimeoutExpired:
            raise KubevpcError(f"{len(probes)} probes did not finish within {limit:.0f} s") from None
        if proc.returncode != 0:
            raise KubevpcError(f"probing failed: {proc.stderr.strip()}")
        results: list[Result | None] = [None] * len(probes)
        for item in json.loads(proc.stdout):
            results[int(item["key"])] = Result(**item)
        return results  # type: ignore[return-value]

    def _probe_per_source(self, homes: list[str], targets: list[str], block: tuple[int, int],
                          timeout: float) -> list[Result]:
        """KUBEVPC_PROBE=per-source: a probe process in each source namespace, every target of a
        source at once. Its Python starts without site-packages (-S, 10 ms less a source),
        finding kubevpc in ROOT, the cwd."""
        by_source: dict[str, list[int]] = {}
        for i, home in enumerate(homes):
            by_source.setdefault(home, []).append(i)
        ports = ["--source-ports", "%d:%d" % block]
        procs = {}
        for src, idxs in by_source.items():
            procs[src] = subprocess.Popen(
                ["mnexec", "-a", str(self._pid(src)), sys.executable, "-S", "-m", "kubevpc.probe", "--json",
                 "--timeout", str(timeout), *ports, *(f"{i}={targets[i]}" for i in idxs)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
        results: list[Result | None] = [None] * len(homes)
        for src, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=timeout * 4 + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise KubevpcError(f"probes from {src} did not finish within {timeout * 4 + 10:.0f} s") from None
            if proc.returncode != 0:
                raise KubevpcError(f"probe in {src} failed: {err.strip()}")
            for item in json.loads(out):
                results[int(item["key"])] = Result(**item)
        return results  # type: ignore[return-value]

    def _spread(self, dest: str) -> str:
        """What answers at `dest`, for spreading probes over the servers: an endpoint's node (one
        node server answers for all its pods) or the endpoint; anything else (an address, a
        Service, an EIP) as it is written."""
        try:
            h = resolve_endpoint(self.plan, dest)
        except KeyError:
            return dest
        return f"node/{h.node}" if h.node else h.key

    def matrix(self, sources: Iterable[str] = ("pods",), ports: Iterable[tuple[int, str]] = ((80, "tcp"),),
               dests: Iterable[str] | None = None, timeout: float = 1.0, family: int = 4) -> Matrix:
        """The reachability matrix (kubevpc.evaluator.matrix): expected next to observed, for every pair of
        the chosen endpoints (groups pods, ecs, nodes, services; references; patterns) and ports,
        probed in parallel. A cell to oneself is probed too (a pod reaches itself whatever the
        policies). `family` 6: the IPv6 matrix of a dual-stack scenario (endpoints' IPv6 addresses,
        Services' IPv6 ClusterIPs)."""
        src_refs = select(self.plan, sources)
        dst_refs = select(self.plan, dests) if dests is not None else src_refs
        m = expected_matrix(self.plan, src_refs, dst_refs, list(ports), family)
        t0 = time.monotonic()
        results = self.probe([Probe(c.source, c.dest, c.port, c.protocol, family=family) for c in m.cells],
                             timeout=timeout)
        m.probe_s = time.monotonic() - t0
        down = {d: self.down_reason(d) for d in dst_refs}      # a refusal from a server that does not run says so
        m.cells = [Cell(c.source, c.dest, c.port, c.protocol, c.expected,
                        f"{c.reason}; but {down[c.dest]}" if down[c.dest] and not r.ok else c.reason,
                        r.ok, r.outcome, r.elapsed_ms, family) for c, r in zip(m.cells, results)]
        return m

    def _dest_ip(self, dest: str, family: int = 4) -> str:
        """An address (a Service's external IP is one), an endpoint (pod/..., ecs/..., node/..., inet/...,
        slb/...), an EIP (eip/<name>; an internet-facing SLB's is slb-<namespace>-<name>) or a Service's
        ClusterIP (svc/...). An IPv6 literal, or an endpoint with family 6: its IPv6 address."""
        if dest.count(".") == 3 and dest.replace(".", "").isdigit() or ":" in dest:
            return dest
        if family == 6 and dest.startswith("svc/"):
            svc = self.service(dest)
            if not svc.cluster_ip_of(6):
                raise KubevpcError(f"Service {svc.key} has no IPv6 ClusterIP (ipFamilies "
                                   f"{', '.join(svc.ip_families) or 'none'})")
            return svc.cluster_ip_of(6)
        if family == 6:
            return self.address(dest, 6)
        if dest.startswith("eip/"):
            eip = next((e for e in self.plan.eips if e.name == dest[4:]), None)
            if eip is None:
                raise KubevpcError(f"no EIP {dest[4:]!r}; this scenario has "
                                   f"{', '.join(e.name for e in self.plan.eips) or 'none'}")
            return eip.ip
        if dest.startswith("svc/"):
            svc = self.service(dest)
            if not svc.cluster_ip:
                raise KubevpcError(f"Service {svc.key} has no ClusterIP ({'headless' if svc.headless else svc.type})")
            return svc.cluster_ip
        return self.address(dest)


def _bracket(ip: str) -> str:
    """An address as kubevpc.probe takes it: IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip
