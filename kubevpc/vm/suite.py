"""What `make vm-test` runs inside the VM, on Open vSwitch's kernel datapath, and its summary.

The steps: the checkout copied in from the 9p share, scripts/install.sh (it loads the openvswitch
module), a check that the kernel datapath is there, `make scenario` in all three modes with
`DATAPATH=system`, an e2e subset that covers every pipeline feature once, then `kubevpc perf`.
The host writes them as one bash script on the job share (job_script); the guest runs it, each
step under `timeout`, and leaves a line per step in steps.tsv, pytest's JUnit XML and perf.json.

The e2e subset (E2E) is chosen for the kernel datapath's differences (its own conntrack and NAT,
recirculation, patch ports, the VXLAN device's offloads) and for time: each group is one module's
lab in one mode, the modes spread so that each is exercised beyond `make scenario`. Connectivity
and security groups are in `make scenario` itself: every mode's default checks and the scenario's
`expect:` list (pod to pod, pod to Service, ECS to pod, 5432 allowed and 6379 denied by sg-db).

Time under TCG, an estimate made before any run (the machine had no free cores to measure one):
software emulation costs the guest about 10-20x a native run in CPU work, while the tests' own
waits (health checks, timeouts) keep their length. Per step, `tcg_min` below; in all about 44 min
with the boot (`python -m kubevpc.vm test --list`). They stay as the steps' time limits (four times
each, 15 min at least). Measured since (2026-12-07, the development machine, TCG, 2 vCPUs): the
whole run took about 8 min (the guest's uptime at power-off: 486 s); scenarios 20-27 s each, e2e
groups 26-85 s, perf --quick 66 s (docs/performance.md, "The kernel datapath"). Under KVM about 16 min, 6 of them perf, which
then measures vpc-route and vxlan (3 runs of 3 s) for their ratio. Timing bounds in the tests (failover within 4.5 s, a change programmed within 1-2 s, a
NetworkPolicy matrix probed within 10 s) are the host's: under TCG a failure of such a bound says
the guest is slow, not that the kernel datapath is wrong. Read a KVM run for those.
"""
from __future__ import annotations

import os
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .recipe import EXCLUDE, GUEST_CHECKOUT, JOB_DIR, SHARE_DIR

MODES = ("vxlan", "vpc-route", "eni")
OUT = f"{JOB_DIR}/out"


@dataclass(frozen=True)
class E2eGroup:
    """Tests of one e2e module run against one lab (the module fixture's parameter, a mode)."""
    name: str
    file: str
    param: str | None               # the module's lab parameter in the node ids, None when it has none
    tests: tuple[str, ...]          # function names (with their own [id] when parametrized further)
    covers: str
    why: str
    tcg_min: float

    def node_ids(self) -> list[str]:
        return [f"{self.file}::{t}" + (f"[{self.param}]" if self.param and "[" not in t else "") for t in self.tests]


E2E = (
    E2eGroup("datapath", "tests/e2e/test_datapath.py", None,
             ("test_vxlan_crosses_vswitch_and_vrouter", "test_pod_mtu_is_underlay_minus_50",
              "test_tcp_bulk_transfer_works"),
             "VXLAN underlay, pod MTU, bulk TCP",
             "the kernel VXLAN device with offloads left on (offloads_for: kernel datapath), TSO/GSO through it, "
             "and the MTU the kernel datapath enforces (it drops, never fragments)", 3),
    E2eGroup("services", "tests/e2e/test_services.py", "vxlan",
             ("test_clusterip_tcp_and_udp_reach_the_named_target_ports_and_keep_the_pod_source",
              "test_a_service_without_ready_endpoints_refuses_at_once",
              "test_hairpin_a_pod_reaches_itself_through_its_service",
              "test_nodeport_policy_cluster_answers_on_every_node_with_the_node_as_source",
              "test_nodeport_policy_local_keeps_the_client_address_and_only_serves_local_endpoints",
              "test_session_affinity_holds_then_ends_after_its_timeout",
              "test_slb_cluster_policy_balances_over_every_node", "test_slb_failover_and_recovery",
              "test_zero_packet_ins"),
             "Services: ClusterIP, NodePort (Cluster and Local), SLB with failover, hairpin, affinity",
             "the kernel's conntrack DNAT/SNAT (select groups, hairpin SNAT, masquerade), the controller's "
             "packet-out refusal, learned affinity flows; vxlan mode puts NAT before the VXLAN device, where the "
             "userspace datapath needed full checksums", 6),
    E2eGroup("netpol", "tests/e2e/test_netpol.py", "vpc-route",
             ("test_default_deny_ingress_isolates_a_namespace_in_one_direction",
              "test_both_selectors_in_one_peer_is_and_in_two_peers_is_or",
              "test_ip_block_with_except_for_pods_and_ecs", "test_policy_applies_after_service_dnat",
              "test_policy_changes_keep_established_connections", "test_no_packet_in_during_policy_enforcement"),
             "NetworkPolicy matrix (every test probes the whole matrix against the evaluator)",
             "conjunctive flows after the kernel's DNAT, established connections kept by the kernel's conntrack "
             "while policies change", 5),
    E2eGroup("internet", "tests/e2e/test_internet.py", "eni",
             ("test_eip_maps_the_instance_both_ways", "test_eip_inbound_still_meets_the_security_group",
              "test_snat_entries_take_their_sources_out_through_the_nat_gateway[eni-pod/default/client]",
              "test_without_eip_or_snat_entry_there_is_no_way_out",
              "test_a_dnat_entry_forwards_a_port_of_the_nat_gateway_to_an_instance",
              "test_the_nat_gateway_keeps_the_pods_address_in_eni_mode",
              "test_no_emulated_packet_reaches_the_machines_interfaces"),
             "NAT gateway (SNAT, DNAT) and EIPs",
             "NAT on the edge in the kernel's conntrack, and nothing of the emulated internet on the guest's own "
             "interfaces (the kernel datapath adds ovs-system and the bridges' internal ports there)", 4),
    E2eGroup("ingress", "tests/e2e/test_ingress.py", "vxlan",
             ("test_host_and_prefix_reach_the_right_service", "test_unknown_host_gets_the_default_backend_404",
              "test_the_nginx_pods_reach_the_backends_not_the_client", "test_tls_with_the_generated_certificate"),
             "Ingress (NGINX behind an internet-facing SLB)",
             "an internet SLB to NodePorts to NGINX pods to Services: the longest NAT chain, across VXLAN", 4),
    E2eGroup("pods", "tests/e2e/test_pods_runtime.py", "vpc-route",
             ("test_scaling_up_starts_pods_that_serve_and_join_services_dns_and_slbs",
              "test_scaling_down_removes_pods_and_what_they_held",
              "test_a_pod_applied_joins_its_service_and_leaves_it_when_deleted",
              "test_zero_packet_ins_after_all_the_changes"),
             "pods added and removed while running",
             "ports added to and removed from kernel-datapath bridges while they forward; nothing left at teardown",
             4),
    E2eGroup("cleanup", "tests/e2e/test_cleanup.py", None,
             ("test_sigint_tears_everything_down", "test_kill_9_then_clean"),
             "cleanup (Ctrl-C, and kill -9 then kubevpc clean)",
             "kernel-datapath bridges, their internal ports and the VXLAN devices removed to the last", 3),
)


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    why: str
    tcg_min: float
    limit_s: int
    required: bool = False          # when it fails, the steps after it are skipped
    kvm_min: float | None = None    # when not about a quarter of the TCG time (perf measures for fixed times)


def perf_label(accel: str) -> str:
    if accel == "kvm":
        return "kernel datapath, in a KVM guest"
    return "kernel datapath, in a TCG guest (software emulation: its throughput says nothing about speed)"


def perf_step(accel: str) -> Step:
    """`kubevpc perf` on the kernel datapath: --quick (vpc-route, 1 run of 1 s) under TCG; under
    KVM vpc-route and vxlan, 3 runs of 3 s, for the ratio ACK states (VPC routing about 20% faster)."""
    argv = [".venv/bin/kubevpc", "perf", "--datapath", "system", "--out", f"{OUT}/perf", "--no-chart"]
    if accel == "kvm":
        return Step("perf", (*argv, "--modes", "vpc-route,vxlan"), perf_label(accel), 24, 1800, kvm_min=6)
    return Step("perf", (*argv, "--quick"), perf_label(accel), 4, 2400)


def steps(accel: str) -> list[Step]:
    rsync = ["rsync", "-a", "--delete", *[f"--exclude={p}" for p in EXCLUDE], f"{SHARE_DIR}/", f"{GUEST_CHECKOUT}/"]
    out = [Step("sync", tuple(rsync), "the checkout, from the 9p share into the guest", 1, 600, True),
           Step("install", ("bash", "scripts/install.sh"), "scripts/install.sh: packages, Open vSwitch, the "
                "openvswitch module, .venv", 2, 1800, True),
           Step("kernel-datapath", ("bash", "-c", "test -d /sys/module/openvswitch && ovs-vsctl --timeout=10 show "
                                    ">/dev/null && modinfo -F filename openvswitch"),
                "the openvswitch module is loaded and Open vSwitch answers", 0.2, 120, True)]
    out += [Step(f"scenario-{m}", ("make", "scenario", f"MODE={m}", "DATAPATH=system"),
                 f"make scenario in {m} mode on the kernel datapath: the default scenario's checks and expect list "
                 "(connectivity, security groups, Services)", 2, 900) for m in MODES]
    for g in E2E:
        argv = (".venv/bin/python", "-m", "pytest", "-v", "-p", "no:cacheprovider", "--tb=short",
                f"--junitxml={OUT}/e2e-{g.name}.xml", *g.node_ids())
        out.append(Step(f"e2e-{g.name}", argv, f"{g.covers}: {g.why}", g.tcg_min, max(900, int(g.tcg_min * 60 * 4))))
    return out + [perf_step(accel)]


def select(all_steps: list[Step], names: list[str]) -> list[Step]:
    """The required steps and those named (a name, or its prefix before `-`: e2e, scenario)."""
    unknown = [n for n in names if not any(s.name == n or s.name.split("-", 1)[0] == n for s in all_steps)]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}: expected some of "
                         f"{', '.join(s.name for s in all_steps if not s.required)}, e2e or scenario")
    return [s for s in all_steps if s.required or s.name in names or s.name.split("-", 1)[0] in names]


def estimate_min(chosen: list[Step], accel: str) -> float:
    """Minutes the steps should take, with the boot and power-off (2 min under TCG)."""
    if accel != "kvm":
        return sum(s.tcg_min for s in chosen) + 2
    return sum(s.kvm_min if s.kvm_min is not None else s.tcg_min / 4 for s in chosen) + 0.5


JOB_HEAD = """#!/bin/bash
# make vm-test, inside the VM (written by kubevpc/vm/suite.py). One line per step in steps.tsv:
# name, exit status (or "skipped"), seconds.
set -u
mkdir -p {out}
STEPS={jobdir}/steps.tsv
: > "$STEPS"
export PYTHONUNBUFFERED=1 TERM=dumb
FAILED=0
STOP=0
step() {{
    local name=$1 limit=$2 required=$3 why=$4 t0=$SECONDS rc=0
    shift 4
    if [ "$STOP" = 1 ]; then
        printf '%s\\tskipped\\t0\\n' "$name" >> "$STEPS"
        echo "=== $name: skipped (a required step failed)"
        return
    fi
    echo "=== $name: $why"
    echo "=== $name: $* (at most ${{limit}} s; $(date +%T))"
    timeout --kill-after=30 "$limit" "$@" || rc=$?
    printf '%s\\t%s\\t%s\\n' "$name" "$rc" "$((SECONDS - t0))" >> "$STEPS"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
    if [ "$rc" != 0 ]; then
        FAILED=1
        [ "$required" = 1 ] && STOP=1
    fi
}}
mkdir -p {checkout}
cd {checkout}
"""


# How much longer the e2e tests' probe deadlines are in a guest (KUBEVPC_E2E_SLOW, tests/e2e/conftest.py):
# under TCG every instruction is emulated, and a NetworkPolicy matrix of 324 cells probed at once
# with 1 s deadlines timed out on allowed cells (docs/performance.md, "The kernel datapath")
SLOW = {"tcg": 5.0, "kvm": 1.0}


def job_script(chosen: list[Step], jobdir: str = JOB_DIR, checkout: str = GUEST_CHECKOUT, accel: str = "kvm") -> str:
    """The guest's job: each step under `timeout`, a line in steps.tsv, the rest skipped after a
    required step fails; exit 1 when any step failed. Under TCG the e2e probes' deadlines are longer."""
    lines = [JOB_HEAD.format(out=f"{jobdir}/out", jobdir=jobdir, checkout=checkout),
             f"export KUBEVPC_E2E_SLOW={SLOW.get(accel, 1.0):g}"]
    for s in chosen:
        lines.append(" ".join(["step", shlex.quote(s.name), str(s.limit_s), "1" if s.required else "0",
                               shlex.quote(s.why), *map(shlex.quote, s.argv)]))
    lines.append('exit "$FAILED"\n')
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the summary
@dataclass(frozen=True)
class StepResult:
    name: str
    status: str                     # ok, failed, skipped, not run
    seconds: int
    detail: str = ""


def read_steps(jobdir: str, chosen: list[Step]) -> list[StepResult]:
    """Each chosen step's outcome from steps.tsv and, for e2e steps, its JUnit XML."""
    done = {}
    try:
        with open(os.path.join(jobdir, "steps.tsv"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                f = line.rstrip("\n").split("\t")
                if len(f) == 3:
                    done[f[0]] = (f[1], int(f[2]) if f[2].isdigit() else 0)
    except OSError:
        pass
    out = []
    for s in chosen:
        rc, secs = done.get(s.name, ("", 0))
        status = "not run" if not rc else "skipped" if rc == "skipped" else "ok" if rc == "0" else "failed"
        detail = "" if status != "failed" else "timed out" if rc in ("124", "137") else f"exit {rc}"
        if s.name.startswith("e2e-") and status in ("ok", "failed"):
            detail = junit_detail(os.path.join(jobdir, "out", s.name + ".xml")) or detail
        out.append(StepResult(s.name, status, secs, detail))
    return out


def junit_detail(path: str) -> str:
    """"N passed, M failed: name, name" from pytest's JUnit XML ("" when there is none)."""
    try:
        if os.path.getsize(path) > 16 << 20:
            return "JUnit report too large to read"
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return ""
    cases = root.iter("testcase")
    failed, passed, skipped = [], 0, 0
    for c in cases:
        if c.find("failure") is not None or c.find("error") is not None:
            failed.append(c.get("name", "?"))
        elif c.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    text = f"{passed} passed, {len(failed)} failed" + (f", {skipped} skipped" if skipped else "")
    return text + (": " + ", ".join(failed) if failed else "")


def summary(results: list[StepResult], accel_line: str, job_rc: int | None) -> tuple[list[str], bool]:
    """The summary's lines, and whether everything passed."""
    ok = job_rc == 0 and all(r.status == "ok" for r in results)
    lines = [f"make vm-test: Open vSwitch kernel datapath, {accel_line}", f"  {'step':<22} {'result':<8} {'time':>6}"]
    for r in results:
        lines.append(f"  {r.name:<22} {r.status:<8} {r.seconds:>5}s" + (f"  {r.detail}" if r.detail else ""))
    passed = sum(r.status == "ok" for r in results)
    tail = "" if job_rc is not None else "; the guest wrote no exit status (it died, or ran out of time)"
    lines.append(f"{passed} of {len(results)} steps passed{tail}: {'PASS' if ok else 'FAIL'}")
    return lines, ok
