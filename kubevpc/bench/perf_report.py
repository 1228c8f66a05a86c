"""The report of `kubevpc perf`: references pooled, ratios to the raw veth pair, the targets of the
performance issue judged, what failed, and the report as a table, summary lines and a chart
(perf.png, with matplotlib)."""
from __future__ import annotations

import os
import statistics

from rich.table import Table

from .perf import PATH_KINDS, TITLES, ratio, stat
from .verdicts import AT_LEAST, AT_MOST, Verdict, from_dict, judge, table as verdicts_table


def merge_references(before: dict, after: dict) -> dict:
    """Each reference's runs before and after the modes, pooled (the drift shows in min and max)."""
    out = {}
    for key, b in before.items():
        a = after.get(key, {})
        merged = {"title": b["title"], "before": b, "after": a}
        merged["tcp"] = {"gbps": stat(_values(b, "tcp", "gbps") + _values(a, "tcp", "gbps"))}
        merged["udp"] = {k: stat(_values(b, "udp", k) + _values(a, "udp", k))
                         for k in ("gbps", "lost_percent", "jitter_ms")} if b.get("udp") else None
        merged["ping_ms"], merged["connect_ms"] = b.get("ping_ms"), b.get("connect_ms")
        out[key] = merged
    return out


def _values(entry: dict, proto: str, what: str) -> list[float]:
    s = (entry.get(proto) or {}).get(what)
    return list(s["values"]) if s else []


def _median(entry: dict | None, proto: str = "tcp", what: str = "gbps") -> float | None:
    s = ((entry or {}).get(proto) or {}).get(what)
    return s["median"] if s else None


def add_ratios(report: dict) -> None:
    veth = _median(report["references"].get("veth"))
    for ref in report["references"].values():
        ref["ratio_to_veth"] = ratio(_median(ref), veth)
    for m in report["modes"].values():
        for p in m["paths"]:
            p["ratio_to_veth"] = ratio(_median(p), veth)


def _path(report: dict, mode: str, key: str) -> dict | None:
    m = report["modes"].get(mode)
    return next((p for p in m["paths"] if p["key"] == key), None) if m else None


def _gbps(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} Gbit/s"


def _ratio_verdict(target: str, value: float | None, ref: float | None, limit: float, what: str,
                   ref_name: str) -> Verdict:
    """A target on value / ref, both Gbit/s of this run; `what` says which measurement value is."""
    r = ratio(value, ref)
    shown = f"{r:.2f}x ({what} {_gbps(value)})" if r is not None else f"- ({what} {_gbps(value)})"
    return judge(target, r, limit, AT_LEAST, shown, f"{ref_name} {_gbps(ref)}")


def verdicts(report: dict) -> list[Verdict]:
    """The performance issues' targets this run can judge, each against a reference of this run:
    issue 21's for vxlan (across nodes and through a Service at least 0.4x the raw veth pair, the
    same node at least 0.9x vpc-route's same path, across nodes at least 0.7x vpc-route: ACK puts
    VPC routing about 20% ahead of Flannel VXLAN), the first round's half a raw veth pair for the
    other modes, and no packet-in in any mode."""
    out = []
    veth = _median(report["references"].get("veth"))
    for mode in report["modes"]:
        medians = (_median(_path(report, mode, k)) for k in ("pod-pod-same-vswitch", "pod-pod-cross-vswitch"))
        across = [m for m in medians if m is not None]
        slower = min(across) if across else None      # the slower of the two paths across nodes
        limit = 0.4 if mode == "vxlan" else 0.5
        out.append(_ratio_verdict(f"{mode}: pod to pod across nodes / raw veth >= {limit}x", slower, veth, limit,
                                  "slower path", "raw veth"))
    if "vxlan" in report["modes"]:
        for k in ("pod-clusterip", "pod-nodeport"):
            out.append(_ratio_verdict(f"vxlan: {TITLES[k]} / raw veth >= 0.4x", _median(_path(report, "vxlan", k)),
                                      veth, 0.4, "vxlan", "raw veth"))
    if "vxlan" in report["modes"] and "vpc-route" in report["modes"]:
        for k, limit in (("pod-pod-same-node", 0.9), ("pod-pod-same-vswitch", 0.7), ("pod-pod-cross-vswitch", 0.7)):
            out.append(_ratio_verdict(f"vxlan / vpc-route, {TITLES[k]} >= {limit}x",
                                      _median(_path(report, "vxlan", k)), _median(_path(report, "vpc-route", k)),
                                      limit, "vxlan", "vpc-route"))
    for mode, m in report["modes"].items():
        n = m.get("packet_in")
        out.append(judge(f"{mode}: packet-ins == 0", n, 0, AT_MOST, f"{n} packet-in(s)" if n is not None else "-"))
    return out


def targets(report: dict) -> list[dict]:
    """verdicts() as perf.json keeps them (`ok` and `detail` as before issue 21, for readers of
    older reports)."""
    return [{**v.as_dict(), "ok": v.met, "detail": f"{v.shown}; reference {v.reference}"} for v in verdicts(report)]


def verdict_table(report: dict):
    """The table `kubevpc perf` ends with: each target, its figure and reference, met or not."""
    return verdicts_table([from_dict(t) for t in report["targets"]],
                          "targets of this run (ratios to references measured in this run)")


def failures(report: dict) -> list[str]:
    """Paths that should have been measured but were not, or not every run (even retried)."""
    out = []
    for mode, m in report["modes"].items():
        for p in m["paths"]:
            if not p.get("skip") and p.get("errors") and not p.get("complete"):
                out.append(f"{mode} {p['title']}: {p['errors'][-1]}")
    return out


# -------------------------------------------------------------------------------- report
def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _spread(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return _fmt(s["median"], digits)
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def _short(text: str, limit: int = 60) -> str:
    text = text.split(" (")[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _latency(x: dict | None) -> str:
    if not x:
        return "-"
    steady = x["steady"]["median"] if x.get("steady") else None
    first = x.get("first")
    lost = f", {x['lost']} lost" if x.get("lost") else ""
    return f"{_fmt(first)} / {_fmt(steady)}{lost}"


def rows(report: dict) -> list[list[str]]:
    """The table's rows: references, then each path in each mode."""
    out = []
    for ref in report["references"].values():
        out.append(_row(ref["title"], "reference", ref))
    for key, title in PATH_KINDS:
        for mode in report["modes"]:
            p = _path(report, mode, key)
            if p is not None:
                out.append(_row(title, mode, p))
    return out


def _row(title: str, mode: str, e: dict) -> list[str]:
    if e.get("skip"):       # the first clause of the reason; perf.json has all of it
        return [title, mode, "n/a: " + _short(e["skip"]), "", "", "", "", "", "", ""]
    tcp, udp = e.get("tcp") or {}, e.get("udp") or {}
    retr = [r for r in tcp.get("retransmits", []) if r is not None]
    if e.get("errors") and not tcp.get("gbps"):
        return [title, mode, "failed: " + _short(e["errors"][0]), "", "", "", "", "", "", ""]
    return [title, mode, _spread(tcp.get("gbps")), _fmt(e.get("ratio_to_veth")),
            str(int(statistics.median(retr))) if retr else "-", _spread(udp.get("gbps")),
            _spread(udp.get("lost_percent"), 1), _spread(udp.get("jitter_ms"), 3),
            _latency(e.get("ping_ms")), _latency(e.get("connect_ms"))]


COLUMNS = ("path", "mode", "TCP Gbit/s median (min-max)", "x raw veth", "retr.", "UDP Gbit/s rcvd",
           "UDP loss %", "jitter ms", "ping ms first / steady", "connect ms first / steady")


def table(report: dict):
    s = report["settings"]
    t = Table(title=f"kubevpc perf: {report['scenario']}; {s['repeat']} x {s['seconds']} s per measurement, "
                    f"UDP at {s['udp_rate']}bit/s")
    for col in COLUMNS:
        t.add_column(col, overflow="fold")
    for r in rows(report):
        t.add_row(*r)
    return t


def summary_lines(report: dict) -> list[str]:
    lines = []
    for mode, m in report["modes"].items():
        d = m["datapath"]
        buf = d.get("ovs_rcvbuf") or {}
        buffers = (f"; Open vSwitch receive buffers {buf['bytes'] >> 20} MiB on {buf['sockets']} of {buf['ports']} "
                   "ports" if buf.get("bytes") else "")
        lines.append(f"{mode}: {d['kind']} datapath; {d['offloads']['note']}{buffers}; packet-ins {m['packet_in']}; "
                     f"bring-up {_fmt(m.get('bringup_s'), 1)} s")
    lines.append(f"machine: {report['machine']['kernel']}, {report['machine']['cpus']} CPUs, "
                 f"{report['machine']['ovs']}; took {report['duration_s']:.0f} s")
    return lines


def chart(report: dict, path: str) -> None:
    """Bars per path and mode (median TCP Gbit/s, whiskers from lowest to highest run), the
    references as horizontal lines; below, steady ping RTT and TCP connect time per path and mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = list(report["modes"])
    keys = [k for k, _ in PATH_KINDS]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9), gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / max(len(modes), 1)
    colors = {"vxlan": "#d95f02", "vpc-route": "#1b9e77", "eni": "#7570b3"}
    for i, mode in enumerate(modes):
        xs, ys, lo, hi, lat_x, lat_y, con_y = [], [], [], [], [], [], []
        for j, k in enumerate(keys):
            p = _path(report, mode, k) or {}
            s = (p.get("tcp") or {}).get("gbps")
            x = j + (i - (len(modes) - 1) / 2) * width
            if s:
                xs.append(x)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            elif p.get("skip") or p.get("errors"):
                top.text(x, 0.05, "n/a" if p.get("skip") else "failed", rotation=90, ha="center", va="bottom",
                         fontsize=7, color="grey")
            lat = p.get("connect_ms") or {}
            if lat.get("steady"):
                lat_x.append(x)
                con_y.append(lat["steady"]["median"])
                ping = (p.get("ping_ms") or {}).get("steady")
                lat_y.append(ping["median"] if ping else None)
        color = colors.get(mode)
        bars = top.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=mode, color=color)
        top.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=2)
        bottom.bar(lat_x, con_y, width, label=f"{mode} TCP connect", color=color)
        pings = [(x, y) for x, y in zip(lat_x, lat_y) if y is not None]
        if pings:
            bottom.plot([x for x, _ in pings], [y for _, y in pings], "k_", markersize=12,
                        label="ping RTT" if i == 0 else None)
    _axes(top, bottom, report, keys)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _axes(top, bottom, report: dict, keys: list[str]) -> None:
    """The chart's references (a line each), path labels, titles and legends."""
    styles = {"veth": "-", "linux-bridge": "--", "ovs-bridge": ":"}
    for key, ref in report["references"].items():
        m = _median(ref)
        if m:
            top.axhline(m, color="black", linestyle=styles.get(key, "-."), linewidth=1,
                        label=f"{ref['title']}: {m:.1f} Gbit/s")
    labels = [TITLES[k].replace(", ", ",\n") for k in keys]
    for ax in (top, bottom):
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    s, mach = report["settings"], report["machine"]
    top.set_ylabel("TCP Gbit/s (median; whiskers: min-max)")
    top.set_title(f"kubevpc perf: {os.path.basename(report['scenario'])}, {s['repeat']} x {s['seconds']} s; "
                  f"{mach['ovs']}, kernel {mach['kernel']}, {mach['cpus']} CPUs", fontsize=10)
    top.set_ylim(0, max([_median(r) or 0 for r in report["references"].values()] + [1]) * 1.3)
    top.legend(fontsize=8, ncol=3, loc="upper right")
    bottom.set_ylabel("ms (steady state median)")
    bottom.legend(fontsize=8, ncol=2)
