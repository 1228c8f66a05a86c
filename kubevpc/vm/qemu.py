"""qemu: the command line, the choice between KVM and software emulation (TCG), and a boot that
relays the guest's serial console line by line and ends by a deadline.

KVM is used only when a tiny test boot on it works: a /dev/kvm that exists may still fail to run
a guest (`failed to set MSR 0x10a`, or a silent hang, seen on the machines kubevpc is developed
on). The probe boots the guest's kernel with no root file system and `panic=-1`: on a working KVM
it prints its banner, panics at once and qemu exits (-no-reboot) within seconds.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from .recipe import JOB_TAG, SHARE_TAG, kernel_append

QEMU = "qemu-system-x86_64"
PROBE_DEADLINE = 45.0               # seconds a KVM test boot may take before it counts as a hang
KVM_DEV = "/dev/kvm"
Say = Callable[[str], None]


def opt(value: str) -> str:
    """A value inside a qemu option list, where a comma separates options: commas doubled."""
    return value.replace(",", ",,")


@dataclass(frozen=True)
class VmConfig:
    name: str                       # qemu's -name: carries the run's name (the ledger's token)
    accel: str                      # "kvm" or "tcg"
    disk: str                       # qcow2
    kernel: str
    initrd: str
    checkout: str                   # shared read-only as 9p tag "kubevpc"
    jobdir: str | None = None       # shared read-write as 9p tag "kubevpcjob"; a job boot when set
    serial: str = "stdio"           # a file to write the console to, or "stdio" (interactive)
    cpus: int = 2
    memory_mb: int = 4096
    disk_cache: str = "writeback"   # "unsafe" for a throw-away overlay


def qemu_argv(c: VmConfig) -> list[str]:
    """The guest: q35, virtio disk and NIC, qemu's user network (no tap: nothing touches the
    machine's interfaces or routes), the checkout and job directory over 9p, console on serial."""
    if c.accel not in ("kvm", "tcg"):
        raise ValueError(f"accelerator {c.accel!r}: expected kvm or tcg")
    accel = ["-accel", "kvm", "-cpu", "host"] if c.accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = [QEMU, "-name", c.name, "-machine", "q35", *accel, "-smp", str(c.cpus), "-m", str(c.memory_mb),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", c.kernel, "-initrd", c.initrd, "-append", kernel_append(job=c.jobdir is not None),
            "-drive", f"file={opt(c.disk)},if=virtio,format=qcow2,cache={c.disk_cache}",
            "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            "-virtfs", f"local,path={opt(c.checkout)},mount_tag={SHARE_TAG},security_model=none,readonly=on,id={SHARE_TAG}"]
    if c.jobdir is not None:
        argv += ["-virtfs", f"local,path={opt(c.jobdir)},mount_tag={JOB_TAG},security_model=none,id={JOB_TAG}"]
    argv += ["-serial", "mon:stdio" if c.serial == "stdio" else f"file:{c.serial}"]
    return argv


def probe_argv(name: str, kernel: str, serial: str) -> list[str]:
    """A KVM test boot: the kernel alone, no disk, no network; it panics and qemu exits."""
    return [QEMU, "-name", name, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "256",
            "-nodefaults", "-display", "none", "-no-reboot", "-kernel", kernel,
            "-append", kernel_append(job=False, probe=True), "-serial", f"file:{serial}"]


# ---------------------------------------------------------------------------- KVM or TCG
@dataclass(frozen=True)
class ProbeResult:
    """What the KVM test boot did, at the process boundary."""
    returncode: int | None          # None: it did not end within the deadline (and was killed)
    stderr: str
    serial: str


@dataclass(frozen=True)
class Accel:
    kind: str                       # "kvm" or "tcg"
    reason: str

    @property
    def label(self) -> str:
        return "KVM guest" if self.kind == "kvm" else "TCG guest (software emulation)"


def device_usable(path: str = KVM_DEV) -> str:
    """"" when /dev/kvm can be opened for reading and writing, else why not."""
    if not os.path.exists(path):
        return f"no {path}"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} is not readable and writable by this user"
    return ""


def decide(requested: str, device_problem: str, probe: ProbeResult | None) -> Accel:
    """KVM or TCG. `requested` is "auto", "kvm" or "tcg"; `probe` is the test boot's result (None
    when none was made because the choice did not need it)."""
    if requested == "tcg":
        return Accel("tcg", "asked for (--accel tcg)")
    if requested == "kvm":
        return Accel("kvm", "asked for (--accel kvm), not probed")
    if device_problem:
        return Accel("tcg", device_problem)
    if probe is None:
        raise ValueError("decide: auto with a usable /dev/kvm needs the test boot's result")
    if probe.returncode is None:
        return Accel("tcg", f"a KVM test boot did not end within {PROBE_DEADLINE:.0f} s (a silent hang)")
    msr = re.search(r"failed to set MSR[^\n]*", probe.stderr)
    if msr:
        return Accel("tcg", f"KVM cannot run a guest here: {msr.group(0).strip()}")
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return Accel("tcg", f"a KVM test boot failed: {last}")
    if "Linux version" not in probe.serial:
        return Accel("tcg", "a KVM test boot ended without the kernel's banner on the console")
    return Accel("kvm", "a KVM test boot ran the guest's kernel")


def run_probe(spawn: Callable[..., subprocess.Popen], name: str, kernel: str, serial: str,
              deadline: float = PROBE_DEADLINE) -> ProbeResult:
    """Boot the kernel on KVM with a deadline; `spawn` starts (and records) the process."""
    proc = spawn(probe_argv(name, kernel, serial), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=deadline)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        rc = None
    try:
        with open(serial, encoding="utf-8", errors="replace") as fh:
            console = fh.read()
    except OSError:
        console = ""
    return ProbeResult(rc, err or "", console)


# ---------------------------------------------------------------------------- a boot
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


class SerialRelay:
    """Follows the serial console's file and hands on each complete line, escape codes removed."""

    def __init__(self, path: str, say: Say, prefix: str = "vm| "):
        self.path, self.say, self.prefix = path, say, prefix
        self.offset, self.partial = 0, ""
        self.lines = 0

    def pump(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        *complete, self.partial = text.split("\n")
        if final and self.partial:
            complete, self.partial = complete + [self.partial], ""
        for line in complete:
            line = ANSI.sub("", line).rstrip()
            if line:
                self.lines += 1
                self.say(self.prefix + line)


@dataclass(frozen=True)
class BootResult:
    returncode: int | None          # qemu's; None when the deadline ended it
    seconds: float
    stderr: str


def boot(spawn: Callable[..., subprocess.Popen], argv: list[str], serial: str, deadline: float, say: Say,
         heartbeat: float = 300.0, errlog: str | None = None) -> BootResult:
    """Run qemu until the guest powers off (qemu exits) or `deadline` seconds pass (then it is
    stopped), relaying the serial console; a line every `heartbeat` seconds when the guest is quiet."""
    t0 = last = time.monotonic()
    relay = SerialRelay(serial, say)
    errlog = errlog or serial + ".qemu-stderr"
    with open(errlog, "wb") as err:
        proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=err)
        rc: int | None = None
        while True:
            rc = proc.poll()
            seen = relay.lines
            relay.pump()
            now = time.monotonic()
            if relay.lines != seen:
                last = now
            elif now - last >= heartbeat:
                say(f"vm: {(now - t0) / 60:.0f} min in, the guest is still at work")
                last = now
            if rc is not None:
                break
            if now - t0 > deadline:
                say(f"vm: no end after {deadline / 60:.0f} min: stopping qemu")
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                rc = None
                break
            time.sleep(0.5)
    relay.pump(final=True)
    with open(errlog, encoding="utf-8", errors="replace") as fh:
        stderr = fh.read()[-4000:]
    return BootResult(rc, time.monotonic() - t0, stderr)
