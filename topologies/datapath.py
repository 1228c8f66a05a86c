"""The Open vSwitch datapath of a run, and how namespace NICs, node uplinks and Open vSwitch's
packet sockets are set up for it: checksum offloads and MTUs (offloads_for), receive buffers
(enlarge_ovs_rcvbuf). Why, in docs/performance.md."""
from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Callable

from kubevpc.errors import BuildError, DeadlineError
from kubevpc.planning import HostPlan, Plan
from kubevpc.rundir import ovs_rundir

from .shell import sh, wait_for

LINK_MTU = 9216          # bridge-to-bridge links never limit a packet: the senders' MTUs do


@dataclass(frozen=True)
class Datapath:
    kind: str                    # "system" (kernel) or "netdev" (userspace)
    userspace_tso: bool
    note: str


def detect_datapath(prefer: str | None = None) -> Datapath:
    """The kernel datapath when the openvswitch module is there, the userspace one otherwise."""
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode != 0:
        raise BuildError("Open vSwitch is not running (ovs-vsctl show failed); run `make install` or "
                         "`/usr/share/openvswitch/scripts/ovs-ctl start`")
    kernel = os.path.exists("/sys/module/openvswitch")
    if prefer == "netdev" or (prefer is None and not kernel):
        tso = sh(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "other_config:userspace-tso-enable"],
                 check=False).strip().strip('"') == "true" and tso_active()
        note = "userspace datapath " + ("with" if tso else "without") + " userspace TSO"   # offloads: see offloads_for
        return Datapath("netdev", tso, note)
    if not kernel:
        raise BuildError("the kernel datapath was asked for but the openvswitch module is not loaded")
    return Datapath("system", False, "kernel datapath (openvswitch module)")


VSWITCHD_LOG = "/var/log/openvswitch/ovs-vswitchd.log"


def tso_active(log: str = VSWITCHD_LOG) -> bool:
    """Has ovs-vswitchd turned userspace TSO on since it last started? (Once on, it stays on.)
    (If the log cannot be read, trust the configuration.)"""
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return True
    # a process's first log line is number 00001 (log rotation reopens the file but keeps counting);
    # the TSO line comes a few lines later, before the version line
    start = text.rfind("|00001|vlog|INFO|opened log file")
    return "Userspace TCP Segmentation Offloading support enabled" in text[max(start, 0):]


FULL_CHECKSUMS_ENV = "KUBEVPC_FULL_CHECKSUMS"    # "1": TX checksum offload off everywhere (the slow, safe setting);
                                                # "0": offloads on even where they are wrong (for measuring only)


def full_checksums_setting(environ: dict | None = None) -> bool | None:
    """KUBEVPC_FULL_CHECKSUMS: True for "1", False for "0", None (kubevpc decides) when unset or empty."""
    value = (os.environ if environ is None else environ).get(FULL_CHECKSUMS_ENV, "").strip()
    if value in ("", "0", "1"):
        return None if value == "" else value == "1"
    raise BuildError(f"environment variable {FULL_CHECKSUMS_ENV}={value!r}: expected 1 (TX checksum offload off "
                     "on every namespace NIC), 0 (offloads on even where NAT before VXLAN breaks them; for "
                     "measuring only) or unset")


CSUM_HOP_ENV = "KUBEVPC_VXLAN_CSUM_HOP"         # "0": vxlan mode without the checksum hop (full checksums)


def csum_hop_setting(environ: dict | None = None) -> bool:
    """KUBEVPC_VXLAN_CSUM_HOP: True for "1", unset or empty (the default since it was measured:
    docs/performance.md); False for "0"; anything else refused by name and value."""
    value = (os.environ if environ is None else environ).get(CSUM_HOP_ENV, "").strip()
    if value in ("", "0", "1"):
        return value != "0"
    raise BuildError(f"environment variable {CSUM_HOP_ENV}={value!r}: expected 1 or unset (the default: in vxlan "
                     "mode on the userspace datapath, pods keep their offloads, and their traffic that is NATed and "
                     "then tunnelled completes its checksums through a veth pair on each node bridge) or 0 (full "
                     "checksums in vxlan mode, no hop)")


@dataclass(frozen=True)
class Offloads:
    """How namespace NICs and node uplinks are set up for the datapath in use."""

    full_checksums: bool         # TX checksum offload (and so TSO) off on every namespace NIC (but the pods', with csum_hop)
    link_mtu: int                # MTU of both ends of every node uplink
    note: str                    # why, for the progress line and the perf report
    csum_hop: bool = False       # vxlan: the pods keep their offloads, and each node bridge has a checksum hop


def checksums_off(o: Offloads, h: HostPlan) -> bool:
    """Does host `h`'s NIC get TX checksum offload off? With the checksum hop, every one but the pods'."""
    return o.full_checksums and not (o.csum_hop and h.kind == "pod")


def offloads_for(plan: Plan, dp: Datapath, force_full: bool | None = None, csum_hop: bool = False) -> Offloads:
    """offloads_for_datapath, and where the checksum hop (`csum_hop`, KUBEVPC_VXLAN_CSUM_HOP unset or
    1) would apply on the userspace datapath and is not used, why, in the note. The kernel datapath
    never needs it and says nothing of it."""
    o = offloads_for_datapath(plan, dp, force_full, csum_hop)
    if csum_hop and not o.csum_hop and dp.kind == "netdev" and plan.cluster and plan.cluster.mode == "vxlan":
        why = (f"{FULL_CHECKSUMS_ENV} is set" if force_full is not None else "no userspace TSO"
               if not dp.userspace_tso else "the namespaces other than pods have different MTUs")
        o = Offloads(o.full_checksums, o.link_mtu, f"{o.note} (checksum hop not in force: {why})")
    return o


def offloads_for_datapath(plan: Plan, dp: Datapath, force_full: bool | None = None, csum_hop: bool = False) -> Offloads:
    """The fastest setting that keeps TCP and UDP correct on this datapath (docs/performance.md).

    Open vSwitch 3.1's userspace TSO has two traps. (1) A TSO packet it sends into a veth is cut
    into segments as large as that veth's MTU allows, and a packet no longer than one such
    segment leaves as a single frame: through a node uplink of MTU 9216 a 5 kB frame reached a
    pod with MTU 1500 ("Message too long"). Uplinks as large as, and no larger than, every
    namespace's NIC avoid that, so TSO stays on only when every namespace has the same MTU.
    (2) Conntrack NAT updates an offloaded packet's pseudo-header checksum as if it were a full
    one. Nothing computes it on the way to a local receiver, which trusts an offloaded checksum,
    but the kernel VXLAN device computes it, wrongly: Service traffic to another node fails in
    vxlan mode unless every sender computes full checksums itself.

    force_full True turns TX checksum offload off everywhere; False leaves offloads on even in
    vxlan mode and with differing MTUs, where they are wrong (KUBEVPC_FULL_CHECKSUMS=0: for
    measuring what full checksums cost, docs/performance.md). `csum_hop` (KUBEVPC_VXLAN_CSUM_HOP unset
    or 1, when neither is set): in vxlan mode the pods keep their offloads, and what they send that is NATed
    and then tunnelled completes its checksums in a checksum hop first (csum_hop_offloads)."""
    links = any(p.kind == "link" for b in plan.bridges for p in b.ports)
    mtus = sorted({h.mtu for h in plan.hosts})
    if dp.kind != "netdev":
        return Offloads(False, LINK_MTU, "kernel datapath: offloads stay on")
    if force_full:
        return Offloads(True, LINK_MTU, f"{FULL_CHECKSUMS_ENV}=1: TX checksum offload off on every namespace NIC")
    if not dp.userspace_tso:
        return Offloads(True, LINK_MTU, "no userspace TSO: TX checksum offload off on every namespace NIC, so "
                                        "TCP checksums are right (slower; see docs/performance.md)")
    if not links:
        return Offloads(False, LINK_MTU, "userspace TSO: offloads stay on")
    if force_full is False:
        return Offloads(False, mtus[0] if len(mtus) == 1 else LINK_MTU,
                        f"{FULL_CHECKSUMS_ENV}=0: offloads stay on everywhere (for measuring only: in vxlan mode, "
                        "Service traffic to another node fails)")
    if plan.cluster and plan.cluster.mode == "vxlan":
        hop = csum_hop_offloads(plan) if csum_hop else None
        return hop or Offloads(True, LINK_MTU, "vxlan mode: TX checksum offload off on every namespace NIC; conntrack "
                                               "NAT before the kernel VXLAN device needs full checksums (see "
                                               "docs/performance.md)")
    if len(mtus) > 1:
        return Offloads(True, LINK_MTU, f"namespace MTUs differ ({', '.join(map(str, mtus))}): TX checksum offload "
                                        "off on every namespace NIC; TSO through node uplinks needs one MTU")
    return Offloads(False, mtus[0], f"userspace TSO: offloads stay on; node uplinks get MTU {mtus[0]}, the "
                                    "namespaces' MTU, so TSO segments fit every NIC (see docs/performance.md)")


def csum_hop_offloads(plan: Plan) -> Offloads | None:
    """vxlan mode with the checksum hop: the pods' NICs keep every offload (TSO), the other
    namespaces keep full checksums (TX checksum offload off), and the node uplinks get the other
    namespaces' one MTU. Only pods send TSO packets then, and Open vSwitch cuts one it sends into a
    veth into segments as large as that veth's MTU allows (docs/performance.md, "What was wrong",
    1): through an uplink at the instances' MTU they fit every instance, and the pods' own frames
    (50 bytes smaller) fit it too. The other namespaces keep full checksums because an SLB's DNAT on
    a vSwitch, before any node bridge, would spoil an offloaded checksum where no hop can help. With
    several MTUs among them (a jumbo underlay with plain instances at 1500) no uplink MTU is right
    for TSO packets: None, and full checksums everywhere, as without the hop."""
    others = sorted({h.mtu for h in plan.hosts if h.kind != "pod" or h.host_network})
    if len(others) != 1 or any(h.mtu > others[0] for h in plan.own_pods):
        return None
    mtu = others[0]
    return Offloads(True, mtu, "vxlan mode with the checksum hop: the pods' offloads stay on (TSO), TX checksum "
                               f"offload off on every other namespace NIC, node uplinks at MTU {mtu}; pod traffic "
                               "that is NATed and then tunnelled completes its checksums in each node bridge's "
                               "checksum hop first (see docs/performance.md)", csum_hop=True)


OVS_RCVBUF = 4 << 20     # bytes asked for each of Open vSwitch's packet sockets on our ports (the kernel doubles it)
RCVBUF_ENV = "KUBEVPC_OVS_RCVBUF"   # bytes instead of OVS_RCVBUF; 0 leaves the kernel's default (for comparisons)
SO_RCVBUFFORCE = 33      # <asm-generic/socket.h>; Python's socket module does not name it
SYS_PIDFD_GETFD = 438    # the same number on every architecture


def enlarge_ovs_rcvbuf(ifnames: list[str], size: int = OVS_RCVBUF) -> tuple[int, str]:
    """Give the packet sockets on which ovs-vswitchd receives from these interfaces a larger buffer.

    The userspace datapath reads each port through an AF_PACKET socket with the kernel's default
    buffer (net.core.rmem_default, 208 KiB here): three 64 KiB TSO packets. A TCP sender in a
    namespace outruns ovs-vswitchd's single polling thread, the socket drops the rest, and TCP
    retransmits: 150,000 retransmissions in 5 s and a third of the throughput (docs/performance.md).
    Open vSwitch has no setting for it and the sysctl is the whole machine's, so the builder takes
    a copy of each of those sockets (pidfd_getfd, Linux 5.6) and sets SO_RCVBUFFORCE on it: only
    sockets bound to our own interfaces change. Returns how many sockets were changed and, when it
    could not be done, why (never an error: the datapath still works, only slower)."""
    import ctypes
    try:
        with open(os.path.join(ovs_rundir(), "ovs-vswitchd.pid"), encoding="ascii") as fh:
            pid = int(fh.read().strip())
        wanted = set()
        for name in ifnames:
            with open(f"/sys/class/net/{name}/ifindex", encoding="ascii") as fh:
                wanted.add(fh.read().strip())
        inodes = set()
        with open("/proc/net/packet", encoding="ascii") as fh:
            next(fh)
            for line in fh:     # sk RefCnt Type Proto Iface R Rmem User Inode
                f = line.split()
                if f[4] in wanted:
                    inodes.add(f"socket:[{f[8]}]")
        fds = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    fds.append(int(fd))
            except OSError:
                continue        # closed meanwhile
        libc = ctypes.CDLL(None, use_errno=True)
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError, StopIteration, AttributeError) as exc:
        return 0, f"could not find Open vSwitch's packet sockets: {exc}"
    done = 0
    try:
        for fd in fds:
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                err = ctypes.get_errno()
                return done, f"pidfd_getfd: {os.strerror(err)}"
            with socket.socket(fileno=copy) as sock:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
            done += 1
    except OSError as exc:
        return done, f"SO_RCVBUFFORCE: {exc}"
    finally:
        os.close(pidfd)
    return done, ""


def wait_datapath(status: Callable[[], dict], deadline: float) -> str:
    """Until Open vSwitch's datapath flow cache follows the plan version the controller has just
    programmed; returns how it came to ("purged" or "revalidated").

    With KUBEVPC_PURGE=1 the controller empties the cache once every bridge has taken a change,
    and says so in status.json ("datapath": the plan version it follows): that is waited for.
    Otherwise, or if the purge failed, the revalidators bring it up to date: a whole cycle that
    started after the change is waited for (the first `revalidator/wait` may end a cycle already
    under way)."""
    st = status()
    version = st.get("plan_version", 0)
    if st.get("settings", {}).get("purge"):
        try:
            wait_for("the controller to empty the datapath's flow cache",
                     lambda: status().get("datapath", {}).get("version", 0) >= version, deadline, interval=0.005)
            if not status().get("datapath", {}).get("error"):
                return "purged"
        except DeadlineError:
            pass
    for _ in range(2):
        subprocess.run(["ovs-appctl", f"--timeout={max(int(deadline), 1)}", "revalidator/wait"], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
    return "revalidated"
