"""Benchmark (not a test): how bring-up, teardown, peak memory and the number of flows grow with the
number of pods, next to plain Mininet building the same number of hosts, measured in the same run.

    make bench-scale         # or: python -m kubevpc.bench.scale --sizes 10,50,100,250,500
    make bench-scale SCALE="--upto 3000"      # the default sizes, then 1,000, 2,000 and 3,000 pods

Each size is a generated scenario (kubevpc.bench.bringup.generated_scenario): one VPC, two vSwitches,
Deployments of up to 1,000 replicas spread over max(4, pods/200) nodes. For every measure the report gives its growth
per doubling of the pods between two sizes, (v2 / v1) ** (1 / log2(n2 / n1)): 2.0 is linear, more
is worse than linear. Per build step too, so that a step that grows faster than the rest shows.
A size whose memory, extrapolated from the sizes before it, would not fit in 80% of the memory
available now is skipped, and the report says so. The report ends with every target of the
performance issue this benchmark measures, met or not met, with the figure and the reference
measured in the same run (targets).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile

import yaml

from kubevpc.bench.bringup import generated_scenario, measure_kubevpc, measure_mininet, write_json
from kubevpc.errors import KubevpcError
from topologies.servers import SERVERS_ENV, servers_mode

SIZES = (10, 50, 100, 250, 500)
LARGE = (1000, 2000, 3000)  # --upto N adds those up to N
MAX_PODS = 3000
TARGET_RATIO = 1.0          # bring-up and teardown: at most plain Mininet's for as many hosts
TEARDOWN_AT = (100, 1000)   # the sizes whose teardown the issue names
TARGET_MIB = 3.0            # memory per pod, marginal: MiB a pod adds between the two largest sizes
TARGET_PODS = 3000          # pods on one machine, with bring-up at most Mininet's for as many hosts
MIN_MIB = 20                # memory figures below this are too noisy for a growth factor


def nodes_for(pods: int) -> int:
    """Nodes of the generated scenario: a /24 pod CIDR per node holds 253 pods; 200 leaves room."""
    return max(4, math.ceil(pods / 200))


def per_doubling(n1: float, v1: float | None, n2: float, v2: float | None) -> float | None:
    """The factor by which v grows when n doubles, between two points; 2.0 is linear."""
    if not v1 or not v2 or n2 == n1:
        return None
    return (v2 / v1) ** (1 / math.log2(n2 / n1))


def growth(points: list[tuple[float, float | None]]) -> list[float | None]:
    """Growth per doubling between each point and the next, in order of n."""
    pts = sorted(points)
    return [per_doubling(n1, v1, n2, v2) for (n1, v1), (n2, v2) in zip(pts, pts[1:])]


def mem_available_mib() -> float:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fits(hosts: int, done: list[dict], available_mib: float) -> tuple[bool, str]:
    """Would a run with this many hosts fit in 80% of the available memory, judged from the
    largest size measured so far (with a quarter more for safety)?"""
    if not done:
        return True, ""
    last = max(done, key=lambda d: d["hosts"])
    per_host = last["kubevpc"]["peak_mib"] / max(last["hosts"], 1)
    need = per_host * hosts * 1.25
    if need > 0.8 * available_mib:
        return False, f"needs about {need:.0f} MiB, {available_mib:.0f} MiB available"
    return True, ""


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(pods: int, kv: list[dict], mn: list[dict]) -> dict:
    steps = {name: statistics.median(r["steps"].get(name, 0.0) for r in kv) for name in kv[0]["steps"]}
    k = {key: median_of(kv, key) for key in ("up_s", "down_s", "peak_mib")}
    m = {key: median_of(mn, key) for key in ("up_s", "down_s", "peak_mib")}
    return {"pods": pods, "hosts": kv[0]["hosts"], "nodes": nodes_for(pods), "flows": kv[0]["flows"],
            "kubevpc": k, "mininet": m, "steps": steps, "up_ratio": k["up_s"] / m["up_s"] if m["up_s"] else None,
            "runs": {"kubevpc": kv, "mininet": mn}}


def report_growth(sizes: list[dict]) -> dict:
    """Growth per doubling of every measure and every build step, between consecutive sizes."""
    def series(get) -> list[float | None]:
        return growth([(s["pods"], get(s)) for s in sizes])
    def measure(who: str, key: str):
        # a few MiB above idle is noise on a machine others use: no growth is computed from it
        return lambda s: None if key == "peak_mib" and (s[who][key] or 0) < MIN_MIB else s[who][key]
    out = {f"{who} {k}": series(measure(who, k))
           for who in ("kubevpc", "mininet") for k in ("up_s", "down_s", "peak_mib")}
    out["flows"] = series(lambda s: s["flows"])
    for step in sizes[0]["steps"] if sizes else ():
        out[f"step {step}"] = series(lambda s, step=step: s["steps"].get(step))
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_report(result: dict) -> None:
    sizes = result["sizes"]
    print(f"{'pods':>5} {'hosts':>5} {'nodes':>5} {'flows':>6} {'up s':>7} {'Mininet':>7} {'ratio':>6} "
          f"{'down s':>7} {'Mininet':>7} {'MiB':>6} {'Mininet':>7}   (medians of {result['repeat']})")
    for s in sizes:
        k, m = s["kubevpc"], s["mininet"]
        print(f"{s['pods']:>5} {s['hosts']:>5} {s['nodes']:>5} {s['flows']:>6} {_f(k['up_s']):>7} {_f(m['up_s']):>7} "
              f"{_f(s['up_ratio']):>6} {_f(k['down_s']):>7} {_f(m['down_s']):>7} {_f(k['peak_mib'], 0):>6} "
              f"{_f(m['peak_mib'], 0):>7}")
    for note in result["skipped"]:
        print(f"skipped: {note}")
    if len(sizes) > 1:
        pairs = " ".join(f"{a['pods']}->{b['pods']}".rjust(9) for a, b in zip(sizes, sizes[1:]))
        print(f"\ngrowth per doubling (2.00 = linear){'':14}{pairs}")
        for name, values in result["growth"].items():
            print(f"{name:50}" + " ".join(f"{_f(v):>9}" for v in values))
    print("\nbuild steps (s): " + " ".join(f"{s['pods']} pods: " + ", ".join(
        f"{k} {v:.2f}" for k, v in s["steps"].items() if v >= 0.01) for s in sizes[-1:]))
    print(f"\nservers: {result.get('servers', 'node')} ({SERVERS_ENV}); the targets of issue 21:")
    for t in result["targets"]:
        print(target_line(t))


def _ratio(s: dict, key: str) -> float | None:
    k, m = s["kubevpc"][key], s["mininet"][key]
    return k / m if k is not None and m else None


def _against_mininet(sizes: list[dict], pods: int, key: str, what: str) -> dict:
    """Target: `what` of `pods` pods (up_s or down_s) at most TARGET_RATIO x Mininet's, same run."""
    target = f"{what} of {pods:,} pods <= {TARGET_RATIO:.1f} x plain Mininet's for as many hosts"
    s = next((s for s in sizes if s["pods"] == pods), None)
    ratio = _ratio(s, key) if s else None
    if ratio is None:
        return {"target": target, "ok": None, "figure": "not measured",
                "reference": f"run with --sizes including {pods} (or --upto {max(pods, 500)})"}
    return {"target": target, "ok": ratio <= TARGET_RATIO, "figure": f"{s['kubevpc'][key]:.2f} s = {ratio:.2f} x",
            "reference": f"plain Mininet {s['mininet'][key]:.2f} s ({s['hosts']} hosts)"}


def marginal_mib(sizes: list[dict], who: str) -> tuple[float, int, int] | None:
    """MiB of peak memory each pod (host) adds between the two largest sizes measured: (MiB, n1, n2)."""
    pts = sorted((s["pods"], s[who]["peak_mib"]) for s in sizes if s[who]["peak_mib"] is not None)
    if len(pts) < 2:
        return None
    (n1, m1), (n2, m2) = pts[-2], pts[-1]
    return (m2 - m1) / (n2 - n1), n1, n2


def _memory(sizes: list[dict]) -> dict:
    target = f"memory per pod (marginal) <= {TARGET_MIB:g} MiB"
    ours, theirs = marginal_mib(sizes, "kubevpc"), marginal_mib(sizes, "mininet")
    if ours is None:
        return {"target": target, "ok": None, "figure": "not measured", "reference": "needs two sizes"}
    mib, n1, n2 = ours
    ref = f"plain Mininet {theirs[0]:.2f} MiB a host" if theirs else "plain Mininet not measured"
    return {"target": target, "ok": mib <= TARGET_MIB, "figure": f"{mib:.2f} MiB a pod from {n1:,} to {n2:,} pods",
            "reference": ref}


def _pods(sizes: list[dict]) -> dict:
    target = f"{TARGET_PODS:,} pods on this machine, bring-up <= plain Mininet's for as many hosts"
    s = next((s for s in sizes if s["pods"] == TARGET_PODS), None)
    if s is None:
        largest = max((s["pods"] for s in sizes), default=0)
        return {"target": target, "ok": None, "figure": f"not measured (largest: {largest:,} pods)",
                "reference": f"run with --upto {TARGET_PODS}"}
    ratio = _ratio(s, "up_s")
    return {"target": target, "ok": ratio is not None and ratio <= TARGET_RATIO,
            "figure": f"{s['kubevpc']['up_s']:.2f} s, {s['kubevpc']['peak_mib']:.0f} MiB = {ratio:.2f} x",
            "reference": f"plain Mininet {s['mininet']['up_s']:.2f} s ({s['hosts']} hosts)"}


def targets(sizes: list[dict]) -> list[dict]:
    """Every target of the performance issue (issue 21) this benchmark measures: met (ok True), not
    met (False) or not measured in this run (None), with the figure and the same run's reference."""
    return [_against_mininet(sizes, 100, "up_s", "bring-up"),
            *(_against_mininet(sizes, n, "down_s", "teardown") for n in TEARDOWN_AT),
            _memory(sizes), _pods(sizes)]


def target_line(t: dict) -> str:
    verdict = "met" if t["ok"] else "NOT met" if t["ok"] is False else "NOT met (not measured)"
    return f"target {verdict}: {t['target']}: {t['figure']}; reference: {t['reference']}"


def sizes_asked(text: str, upto: int | None) -> list[int]:
    """The sizes to measure: --sizes, and with --upto N the default sizes and those of LARGE up to N."""
    sizes = {int(x) for x in text.split(",") if x.strip()}
    if upto is not None:
        sizes |= {n for n in (*SIZES, *LARGE) if n <= upto}
    return sorted(sizes)


def measure_sizes(sizes: list[int], mode: str, repeat: int) -> tuple[list[dict], list[str]]:
    """Each size measured (kubevpc, then plain Mininet with as many hosts); the sizes skipped, and why."""
    done, skipped = [], []
    for pods in sizes:
        hosts = pods + nodes_for(pods) + 1          # + the cluster DNS pod
        ok, why = fits(hosts, done, mem_available_mib())
        if not ok:
            skipped.append(f"{pods} pods: {why}")
            print(f"skipping {pods} pods: {why}", flush=True)
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(generated_scenario(pods, nodes_for(pods)), fh)
        try:
            kv = [measure_kubevpc(fh.name, mode) for _ in range(repeat)]
        except KubevpcError as exc:       # a bigger size would fail too: report and stop here
            skipped.append(f"{pods} pods: bring-up failed: {exc}")
            print(f"{pods} pods: bring-up failed: {exc}", flush=True)
            break
        finally:
            os.unlink(fh.name)
        mn = [measure_mininet(kv[0]["hosts"]) for _ in range(repeat)]
        done.append(summarize(pods, kv, mn))
        s = done[-1]
        print(f"{pods} pods: kubevpc up {s['kubevpc']['up_s']:.2f} s, down {s['kubevpc']['down_s']:.2f} s, "
              f"{s['kubevpc']['peak_mib']:.0f} MiB, {s['flows']} flows; plain Mininet up {s['mininet']['up_s']:.2f} s, "
              f"down {s['mininet']['down_s']:.2f} s", flush=True)
    return done, skipped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubevpc.bench.scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)),
                    help=f"comma-separated numbers of pods (default {','.join(map(str, SIZES))})")
    ap.add_argument("--upto", type=int, metavar="N",
                    help=f"also the default sizes and {', '.join(map(str, LARGE))} up to N pods (at most {MAX_PODS})")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions per size; medians are reported (default 1)")
    ap.add_argument("--mode", choices=("vxlan", "vpc-route", "eni"), default="vxlan", help="pod network mode")
    ap.add_argument("--json", metavar="FILE", help="also write the results to this file")
    args = ap.parse_args(argv)
    try:
        sizes = sizes_asked(args.sizes, args.upto)
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: expected comma-separated whole numbers")
    if not sizes or sizes[0] < 1 or args.repeat < 1:
        ap.error("--sizes and --repeat must be at least 1")
    if sizes[-1] > MAX_PODS:
        ap.error(f"at most {MAX_PODS} pods (the generated scenario's address plan): got {sizes[-1]}")
    try:
        servers = servers_mode()
    except KubevpcError as exc:
        ap.error(str(exc))
    if os.geteuid() != 0:
        ap.error("needs root")
    from mininet.log import setLogLevel
    setLogLevel("warning")
    done, skipped = measure_sizes(sizes, args.mode, args.repeat)
    result = {"mode": args.mode, "repeat": args.repeat, "servers": servers, "sizes": done, "skipped": skipped,
              "growth": report_growth(done), "targets": targets(done)}
    print_report(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
