"""Benchmark (not a test): bring-up and teardown time and peak memory of kubevpc, next to plain
Mininet building the same number of hosts on one userspace switch, measured in the same run.

    make bench-up            # or: python -m kubevpc.bench.bringup --pods 100 --repeat 3

Memory is the machine's used memory (MemTotal - MemAvailable) above what it was before the build,
sampled every 20 ms while building and while up: it covers the namespaces' shells, servers,
the controller and Open vSwitch's share.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import threading
import time

import yaml

from kubevpc.lab import Lab

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "default.yaml")


def used_mib() -> float:
    info = {}
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class PeakMemory:
    def __init__(self):
        self.base = used_mib()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, used_mib())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)

    @property
    def delta(self) -> float:
        return self.peak - self.base


MAX_REPLICAS = 1000          # a Deployment's replicas the scenario schema takes (kubevpc/k8s/workloads.py)


def generated_scenario(pods: int, nodes: int = 4) -> dict:
    """One VPC, two vSwitches, `nodes` nodes, `pods` replicas: one Deployment `app` up to 1,000
    replicas, then `app2`, `app3`, ... of at most 1,000 each. The vSwitches are /22s, or /20s when
    eni pods (vSwitch addresses) would not fit in two /22s."""
    prefix = 22 if pods <= 1800 else 20
    step = 1 << (32 - prefix - 8)           # the third octet's step between the two vSwitches
    deployments = []
    for i, first in enumerate(range(0, pods, MAX_REPLICAS)):
        name = "app" if i == 0 else f"app{i + 1}"
        deployments.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                            "spec": {"replicas": min(MAX_REPLICAS, pods - first),
                                     "selector": {"matchLabels": {"app": name}},
                                     "template": {"metadata": {"labels": {"app": name}},
                                                  "spec": {"containers": [{"name": "c", "ports": [
                                                      {"containerPort": 8080}]}]}}}})
    return {
        "name": f"gen{pods}",
        "cloud": {"vpcs": [{"name": "vpc", "cidr": "192.168.0.0/16", "vswitches": [
            {"name": "vsw-a", "zone": "a", "cidr": f"192.168.0.0/{prefix}"},
            {"name": "vsw-b", "zone": "b", "cidr": f"192.168.{step}.0/{prefix}"}]}],
            "securityGroups": [{"name": "sg", "vpc": "vpc"}],
            "instances": [{"name": f"node-{i}", "vswitch": "vsw-a" if i % 2 else "vsw-b", "securityGroups": ["sg"]}
                          for i in range(nodes)]},
        "cluster": {"mode": "vxlan", "nodes": [f"node-{i}" for i in range(nodes)], "nodeCIDRMaskSize": 24},
        "manifests": deployments,
    }


def measure_kubevpc(path: str, mode: str | None) -> dict:
    lab = Lab(path, mode=mode)
    with PeakMemory() as mem:
        t0 = time.monotonic()
        lab.up()
        up = time.monotonic() - t0
        time.sleep(0.2)
    flows = sum(b.get("flows", 0) for b in lab.status().get("bridges", {}).values())
    steps = {k: round(v, 3) for k, v in lab.net.timings.items()}
    t0 = time.monotonic()
    lab.down()
    down = time.monotonic() - t0
    return {"hosts": len(lab.plan.hosts), "up_s": up, "down_s": down, "peak_mib": mem.delta, "flows": flows,
            "steps": steps}


def measure_mininet(hosts: int) -> dict:
    """Plain Mininet: `hosts` hosts on one userspace OVS switch in standalone mode, no controller."""
    from mininet.net import Mininet
    from mininet.node import OVSSwitch
    from mininet.topo import Topo
    switch = functools.partial(OVSSwitch, datapath="user", failMode="standalone")
    topo = Topo()
    # a name nothing else on the machine uses, short enough for kvb0-eth1000 (at most 15 characters)
    sw = topo.addSwitch("kvb0", dpid="0000000000006b76")
    for i in range(1, hosts + 1):
        topo.addLink(topo.addHost(f"h{i}"), sw)
    with PeakMemory() as mem:
        t0 = time.monotonic()
        net = Mininet(topo=topo, switch=switch, controller=None, autoSetMacs=True, build=False, waitConnected=False)
        try:
            net.build()
            net.start()
        except BaseException:
            net.stop()
            raise
        up = time.monotonic() - t0
        time.sleep(0.2)
    t0 = time.monotonic()
    net.stop()
    down = time.monotonic() - t0
    return {"hosts": hosts, "up_s": up, "down_s": down, "peak_mib": mem.delta}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubevpc.bench.bringup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100, help="pods in the generated scenario (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; medians are reported (default 3)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root")
    from mininet.log import setLogLevel
    setLogLevel("warning")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(generated_scenario(args.pods), fh)
        gen = fh.name
    cases = [("kubevpc default scenario (vxlan)", lambda: measure_kubevpc(SCENARIO, "vxlan")),
             (f"kubevpc generated, {args.pods} pods (vxlan)", lambda: measure_kubevpc(gen, None))]
    results = {}
    try:
        for name, fn in cases:
            runs = [fn() for _ in range(args.repeat)]
            results[name] = runs
            hosts = runs[0]["hosts"]
            ref = [measure_mininet(hosts) for _ in range(args.repeat)]
            results[f"plain Mininet, {hosts} hosts"] = ref
    finally:
        os.unlink(gen)
    print(f"{'case':45} {'hosts':>5} {'up s':>7} {'down s':>7} {'peak MiB':>9} {'flows':>6}  (medians of {args.repeat})")
    names = list(results)
    for name in names:
        runs = results[name]
        med = {k: statistics.median(r[k] for r in runs) for k in ("up_s", "down_s", "peak_mib")}
        flows = runs[0].get("flows", "")
        print(f"{name:45} {runs[0]['hosts']:>5} {med['up_s']:>7.2f} {med['down_s']:>7.2f} {med['peak_mib']:>9.0f} "
              f"{flows:>6}")
    for i in range(0, len(names), 2):
        ours, ref = results[names[i]], results[names[i + 1]]
        ratio = statistics.median(r["up_s"] for r in ours) / statistics.median(r["up_s"] for r in ref)
        print(f"bring-up ratio {names[i]} / plain Mininet: {ratio:.2f}")
    print("kubevpc bring-up steps (last run):", json.dumps(results[names[-2]][-1]["steps"]))
    if args.json:
        write_json(args.json, results)
    return 0


def write_json(path: str, doc) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
