"""`kubevpc perf` on this machine (kubevpc/bench/perf.py says what is measured): iperf3, ping and
connect times in namespaces, the physical references (a raw veth pair, a Linux bridge, one Open
vSwitch bridge), each mode's Lab, and the whole run. Every namespace, link, bridge and process is
written to a run's ledger before it is made, so `kubevpc clean` removes what a crash leaves."""
from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import asdict

from topologies.datapath import detect_datapath, enlarge_ovs_rcvbuf
from topologies.netns import no_ipv6

from ..lab import Lab
from ..ledger import Ledger, clean_run, run_dir
from .perf import (CONNECT_PROBE, FORMAT, IPERF_PORT, REF_NET, UDP_LENGTH, PerfError, Say, Settings, choose_paths,
                   first_and_steady, parse_iperf, parse_ping, stat)
from .perf_report import add_ratios, merge_references, targets


# ---------------------------------------------------------------------------- measuring
class Namespace:
    """Where commands run: a kubevpc endpoint (by its shell's pid) or one of our named namespaces."""

    def __init__(self, prefix: list[str], name: str):
        self.prefix, self.name = prefix, name

    @classmethod
    def of_lab(cls, lab, endpoint: str) -> "Namespace":
        return cls(["mnexec", "-a", str(lab.net.host_pid(lab.host(endpoint).key))], endpoint)

    @classmethod
    def named(cls, netns: str) -> "Namespace":
        return cls(["ip", "netns", "exec", netns], netns)

    def run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PerfError(f"{' '.join(cmd[:3])} in {self.name} did not finish within {timeout:.0f} s") from None

    def popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(self.prefix + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)


class Servers:
    """iperf3 servers we started, one per (namespace, port), each written to a run's ledger (so
    that `kubevpc clean` stops them after a crash); all stopped by stop()."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}

    def ensure(self, ns: Namespace, port: int) -> None:
        key = (ns.name, port)
        if key in self.procs and self.procs[key].poll() is None:
            return
        self.procs[key] = ns.popen(["iperf3", "-s", "-p", str(port)])
        self.ledger.record("process", self.procs[key].pid, token="iperf3")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:     # listening once `ss` in that namespace shows it
            if self.procs[key].poll() is not None:
                raise PerfError(f"iperf3 -s -p {port} in {ns.name} exited with {self.procs[key].returncode}")
            if f":{port} " in ns.run(["ss", "-Htln"], timeout=5).stdout:
                return
            time.sleep(0.05)
        raise PerfError(f"iperf3 -s -p {port} in {ns.name} was not listening after 5 s")

    def restart(self, ns: Namespace, port: int) -> None:
        proc = self.procs.pop((ns.name, port), None)
        if proc is not None:
            _stop([proc])
        self.ensure(ns, port)

    def stop(self) -> None:
        _stop(list(self.procs.values()))
        self.procs.clear()


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL whatever has not ended after 5 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def iperf_run(client: Namespace, dest: str, port: int, seconds: int, udp_rate: str | None = None) -> dict:
    cmd = ["iperf3", "-c", dest, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    if udp_rate:
        cmd += ["-u", "-b", udp_rate, "-l", str(UDP_LENGTH)]
    res = client.run(cmd, timeout=seconds + 20)
    return parse_iperf(res.stdout, udp=bool(udp_rate))


def latency(client: Namespace, dest: str, port: int, settings: Settings, ping: bool) -> dict:
    """First and steady ping RTT (when the address answers pings as the server would) and TCP
    connect time, measured before any bulk traffic on the path."""
    out: dict = {"ping_ms": None, "connect_ms": None}
    if ping:
        n = settings.pings
        res = client.run(["ping", "-n", "-c", str(n), "-i", "0.01", "-W", "1", dest], timeout=n + 10)
        out["ping_ms"] = first_and_steady(parse_ping(res.stdout, n))
    res = client.run([sys.executable, "-c", CONNECT_PROBE, dest, str(port), str(settings.connects)],
                     timeout=settings.connects * 2.5 + 10)
    try:
        out["connect_ms"] = first_and_steady(json.loads(res.stdout))
    except json.JSONDecodeError:
        raise PerfError(f"connect probe in {client.name} failed: {res.stderr.strip()[-300:]}") from None
    return out


def measure(client: Namespace, server: Namespace, dest: str, port: int, listen: int, settings: Settings,
            servers: Servers, say: Say, label: str, udp: bool = True, ping: bool = True) -> dict:
    """Latency first (cold), then TCP runs, then UDP runs, on one path: the client connects to
    dest:port, iperf3 listens on `listen` in the server. Each run gets a fresh iperf3 server (the
    connect probe's bare connections, or a run that failed, can leave one busy); a failed run is
    tried once more, and both the failure and the retry are in the report."""
    servers.ensure(server, listen)
    result: dict = {"dest": dest, "port": port, **latency(client, dest, port, settings, ping)}
    errors: list[str] = []

    def runs(proto: str, rate: str | None) -> list[dict]:
        out = []
        for i in range(settings.repeat):
            for attempt in (1, 2):
                servers.restart(server, listen)
                try:
                    out.append(iperf_run(client, dest, port, settings.seconds, rate))
                    break
                except PerfError as exc:
                    errors.append(f"{proto} run {i + 1}, attempt {attempt}: {exc}")
                    say(f"{label}: {proto} run {i + 1} failed: {exc}")
            else:
                continue
            r = out[-1]
            extra = f", {r['lost_percent']:.1f}% lost at {rate}bit/s" if rate else ""
            say(f"{label}: {proto} {r['gbps']:.2f} Gbit/s{extra} (run {i + 1}/{settings.repeat})")
        return out

    tcp = runs("TCP", None)
    result["tcp"] = {"gbps": stat(r["gbps"] for r in tcp), "retransmits": [r["retransmits"] for r in tcp]}
    result["udp"] = None
    if settings.udp and udp:
        got = runs("UDP", settings.udp_rate)
        result["udp"] = {k: stat(r[k] for r in got) for k in ("gbps", "lost_percent", "jitter_ms")}
    result["errors"] = errors
    result["complete"] = len(tcp) == settings.repeat and (result["udp"] is None or
                                                          (result["udp"]["gbps"] or {}).get("n") == settings.repeat)
    return result


# --------------------------------------------------------------------------- references
class References:
    """The physical references: namespaces (and, for Open vSwitch, a bridge and two root-side veth
    ends) named with a run name of their own, written to that run's ledger before they are made.
    close() removes them; after a crash, `kubevpc clean` does."""

    def __init__(self, datapath):
        for _ in range(64):
            self.prefix = "kvpf" + secrets.token_hex(1)      # a run name of 6 characters
            if not os.path.exists(run_dir(self.prefix)):
                break
        else:
            raise PerfError("no free run name kvpf00-kvpfff for the references; run `kubevpc clean`")
        self.datapath = datapath
        self.ledger = Ledger(self.prefix)
        self.ledger.create()

    def _ns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.ledger.record("netns", name)
        _ip(["netns", "add", name])
        _ip(["-n", name, "link", "set", "lo", "up"])
        return name

    def _address(self, ns: str, ip: str) -> None:
        _ip(["-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
        _ip(["-n", ns, "link", "set", "eth0", "up"])

    def veth(self) -> tuple[str, str]:
        a, b = self._ns("va"), self._ns("vb")
        _ip(["-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        self._address(a, f"{REF_NET}.1")
        self._address(b, f"{REF_NET}.2")
        return a, b

    def linux_bridge(self) -> tuple[str, str]:
        br, a, b = self._ns("br"), self._ns("ba"), self._ns("bb")
        _ip(["-n", br, "link", "add", "br0", "type", "bridge"])
        _ip(["-n", br, "link", "set", "br0", "up"])
        for ns, port, ip in ((a, "pa", f"{REF_NET}.1"), (b, "pb", f"{REF_NET}.2")):
            _ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", br])
            _ip(["-n", br, "link", "set", port, "master", "br0", "up"])
            self._address(ns, ip)
        return a, b

    def ovs_bridge(self) -> tuple[str, str]:
        """One bridge of kubevpc's datapath, no controller (standalone: the normal action), the same
        receive buffers as kubevpc's ports."""
        a, b = self._ns("oa"), self._ns("ob")
        ends = [f"{self.prefix}o0", f"{self.prefix}o1"]
        for ns, end, ip in ((a, ends[0], f"{REF_NET}.1"), (b, ends[1], f"{REF_NET}.2")):
            self.ledger.record("link", end)
            _ip(["link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", ns])
            no_ipv6([end])
            _ip(["link", "set", end, "up"])
            self._address(ns, ip)
        bridge = f"{self.prefix}-ovs"
        self.ledger.record("bridge", bridge)
        cmd = ["ovs-vsctl", "--timeout=30", "--", "add-br", bridge, "--", "set", "bridge", bridge,
               f"datapath_type={self.datapath.kind}", "fail_mode=standalone", "other-config:disable-in-band=true",
               f"external_ids:kubevpc-run={self.prefix}"]
        for end in ends:
            cmd += ["--", "add-port", bridge, end]
        _run(cmd)
        if self.datapath.kind == "netdev":
            enlarge_ovs_rcvbuf(ends)
        return a, b

    def close(self) -> None:
        clean_run(self.prefix)


def _run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise PerfError(f"{' '.join(cmd[:6])} failed: {(res.stderr or res.stdout).strip()[:300]}")
    return res.stdout


def _ip(args: list[str]) -> str:
    return _run(["ip", *args])


REFERENCE_KINDS = (("veth", "raw veth pair"), ("linux-bridge", "Linux bridge"),
                   ("ovs-bridge", "one Open vSwitch bridge"))


def measure_references(settings: Settings, datapath, say: Say) -> dict[str, dict]:
    out = {}
    for key, title in REFERENCE_KINDS:
        refs = References(datapath)
        servers = Servers(refs.ledger)
        try:
            a, b = {"veth": refs.veth, "linux-bridge": refs.linux_bridge, "ovs-bridge": refs.ovs_bridge}[key]()
            out[key] = measure(Namespace.named(a), Namespace.named(b), f"{REF_NET}.2", IPERF_PORT, IPERF_PORT,
                               settings, servers, say, f"reference {title}")
            out[key]["title"] = title
        finally:
            servers.stop()
            refs.close()
    return out


# -------------------------------------------------------------------------------- modes
def _packet_ins(lab) -> int:
    return sum(b.get("packet_in", 0) for b in lab.status().get("bridges", {}).values())


def datapath_settings(lab) -> dict:
    """What the report says about the data plane of a running lab."""
    dp, builder = lab.net.datapath, lab.builder
    return {"kind": dp.kind, "userspace_tso": dp.userspace_tso, "note": dp.note,
            "offloads": asdict(builder.offloads), "ovs_rcvbuf": dict(builder.rcvbuf)}


def measure_mode(file: str, mode: str, settings: Settings, say: Say) -> dict:
    lab = Lab(file, mode=mode, datapath=settings.datapath, say=lambda s: say(f"[{mode}] {s}"))
    say(f"mode {mode}: building {file} (run {lab.run})")
    paths = choose_paths(lab.plan)
    lab.up()
    servers = Servers(lab.net.ledger)
    try:
        out = {"run": lab.run, "bringup_s": lab.timings.get("up"), "datapath": datapath_settings(lab), "paths": []}
        before = _packet_ins(lab)
        for p in paths:
            entry = asdict(p)
            if not p.skip:
                try:
                    entry.update(measure(Namespace.of_lab(lab, p.client), Namespace.of_lab(lab, p.server), p.dest,
                                         p.port, p.listen, settings, servers, say, f"{mode} {p.title}",
                                         udp=p.udp, ping=p.ping))
                except PerfError as exc:
                    entry["errors"] = [str(exc)]
                    say(f"{mode} {p.title}: {exc}")
            out["paths"].append(entry)
        out["packet_in"] = _packet_ins(lab)
        out["packet_in_during_run"] = out["packet_in"] - before
        say(f"mode {mode}: packet-ins to the controller: {out['packet_in']}")
        return out
    finally:
        servers.stop()
        lab.down()


def machine() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""
    other = first_line(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "other_config"])
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "ovs": first_line(["ovs-vswitchd", "--version"]), "ovs_other_config": other,
            "iperf3": first_line(["iperf3", "--version"])}


def run(file: str, settings: Settings, say: Say) -> dict:
    """The whole benchmark: references, each mode, references again; the report as a dict."""
    t0 = time.monotonic()
    dp = detect_datapath(settings.datapath)
    report = {"format": FORMAT, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scenario": file,
              "machine": machine(), "settings": asdict(settings), "modes": {}}
    say(f"references (raw veth, Linux bridge, one Open vSwitch bridge, {dp.kind} datapath), before the modes")
    before = measure_references(settings, dp, say)
    for mode in settings.modes:
        report["modes"][mode] = measure_mode(file, mode, settings, say)
    say("references again, after the modes")
    after = measure_references(settings, dp, say)
    report["references"] = merge_references(before, after)
    report["duration_s"] = time.monotonic() - t0
    add_ratios(report)
    report["targets"] = targets(report)
    return report
