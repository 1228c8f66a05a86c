"""qemu's command line (KVM or TCG, the 9p shares, the user network, CPUs and memory), the KVM
probe's decision with its process faked at the process boundary, and a boot's serial relay and
deadline with a stand-in process. No VM is booted."""
from __future__ import annotations

import subprocess
import sys

import pytest

from kubevpc.vm import qemu
from kubevpc.vm.qemu import Accel, ProbeResult, VmConfig, decide, qemu_argv


def config(**kw) -> VmConfig:
    base = dict(name="kubevpc-vm-vm1a2b", accel="tcg", disk="/r/vm1a2b/overlay.qcow2", kernel="/c/k", initrd="/c/i",
                checkout="/src/kubevpc", jobdir="/r/vm1a2b/job", serial="/r/vm1a2b/serial.log")
    return VmConfig(**{**base, **kw})


def value(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_tcg_and_kvm_command_lines():
    tcg = qemu_argv(config())
    assert value(tcg, "-accel") == ["tcg,thread=multi"] and value(tcg, "-cpu") == ["max"]
    kvm = qemu_argv(config(accel="kvm"))
    assert value(kvm, "-accel") == ["kvm"] and value(kvm, "-cpu") == ["host"]
    assert [a for a in tcg if a not in ("tcg,thread=multi", "max")] == [a for a in kvm if a not in ("kvm", "host")]
    with pytest.raises(ValueError):
        qemu_argv(config(accel="hvf"))


def test_cpus_memory_disk_kernel_and_a_run_name_for_the_ledger():
    argv = qemu_argv(config(cpus=3, memory_mb=6144, disk_cache="unsafe"))
    assert argv[0] == "qemu-system-x86_64" and value(argv, "-name") == ["kubevpc-vm-vm1a2b"]
    assert value(argv, "-smp") == ["3"] and value(argv, "-m") == ["6144"]
    assert value(argv, "-drive") == ["file=/r/vm1a2b/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe"]
    assert value(argv, "-kernel") == ["/c/k"] and value(argv, "-initrd") == ["/c/i"]
    assert "kubevpc.job=1" in value(argv, "-append")[0]
    assert {"-nodefaults", "-no-reboot"} <= set(argv) and value(argv, "-display") == ["none"]


def test_the_user_network_and_no_tap():
    argv = qemu_argv(config())
    assert value(argv, "-netdev") == ["user,id=net0"] and value(argv, "-device")[0] == "virtio-net-pci,netdev=net0"
    assert not [a for a in argv if "tap" in a or "bridge" in a or "hostfwd" in a]


def test_the_checkout_read_only_and_the_job_directory_over_9p():
    argv = qemu_argv(config())
    assert value(argv, "-virtfs") == [
        "local,path=/src/kubevpc,mount_tag=kubevpc,security_model=none,readonly=on,id=kubevpc",
        "local,path=/r/vm1a2b/job,mount_tag=kubevpcjob,security_model=none,id=kubevpcjob"]
    login = qemu_argv(config(jobdir=None, serial="stdio"))
    assert len(value(login, "-virtfs")) == 1 and value(login, "-serial") == ["mon:stdio"]
    assert "kubevpc.job" not in value(login, "-append")[0]
    assert value(argv, "-serial") == ["file:/r/vm1a2b/serial.log"]


def test_a_comma_in_a_path_cannot_add_an_option():
    argv = qemu_argv(config(checkout="/src/a,readonly=off", disk="/r/x,if=ide"))
    assert value(argv, "-virtfs")[0].startswith("local,path=/src/a,,readonly=off,mount_tag=kubevpc")
    assert value(argv, "-drive")[0].startswith("file=/r/x,,if=ide,if=virtio")


def test_the_probe_boots_the_kernel_alone_on_kvm():
    argv = qemu.probe_argv("kubevpc-vm-vm1a2b-probe", "/c/k", "/r/p.serial")
    assert value(argv, "-accel") == ["kvm"] and value(argv, "-kernel") == ["/c/k"]
    assert "-drive" not in argv and "-initrd" not in argv and "-netdev" not in argv and "-no-reboot" in argv
    assert value(argv, "-append") == ["console=ttyS0 panic=-1"] and value(argv, "-serial") == ["file:/r/p.serial"]


# --------------------------------------------------------------------------- the decision
BANNER = "Linux version 6.1.0-30-amd64 ...\nKernel panic - not syncing: VFS: Unable to mount root fs\n"


@pytest.mark.parametrize("requested, problem, probe, kind, words", [
    ("tcg", "", None, "tcg", "asked for"),
    ("kvm", "no /dev/kvm", None, "kvm", "asked for"),
    ("auto", "no /dev/kvm", None, "tcg", "no /dev/kvm"),
    ("auto", "/dev/kvm is not readable and writable by this user", None, "tcg", "not readable"),
    ("auto", "", ProbeResult(None, "", ""), "tcg", "silent hang"),
    ("auto", "", ProbeResult(-6, "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x2000000ff\n"
                                 "qemu-system-x86_64: ../target/i386/kvm/kvm.c:2996: kvm_buf_set_msrs: Assertion failed.\n",
                             ""), "tcg", "failed to set MSR 0x10a"),
    ("auto", "", ProbeResult(1, "qemu-system-x86_64: -accel kvm: Could not access KVM kernel module\n", ""), "tcg",
     "Could not access KVM"),
    ("auto", "", ProbeResult(0, "", ""), "tcg", "without the kernel's banner"),
    ("auto", "", ProbeResult(0, "", BANNER), "kvm", "test boot ran"),
])
def test_kvm_only_when_a_test_boot_works(requested, problem, probe, kind, words):
    accel = decide(requested, problem, probe)
    assert accel.kind == kind and words in accel.reason, accel
    assert ("KVM" if kind == "kvm" else "TCG") in accel.label


def test_auto_with_a_usable_device_needs_the_probe():
    with pytest.raises(ValueError):
        decide("auto", "", None)


def test_the_device_check(tmp_path):
    assert qemu.device_usable(str(tmp_path / "kvm")) == f"no {tmp_path / 'kvm'}"
    dev = tmp_path / "dev"
    dev.write_text("")
    assert qemu.device_usable(str(dev)) == ""


class FakeQemu:
    """A KVM test boot at the process boundary: what it writes to the console, what it says on
    stderr, how it ends (a status, or no end before the deadline)."""

    def __init__(self, serial: str, console: str, stderr: str, returncode: int | None):
        self.serial, self.console, self.err, self.rc = serial, console, stderr, returncode
        self.returncode = None
        self.killed = False

    def communicate(self, timeout=None):
        with open(self.serial, "w", encoding="utf-8") as fh:
            fh.write(self.console)
        if self.rc is None and not self.killed:
            raise subprocess.TimeoutExpired("qemu", timeout)
        self.returncode = self.rc if not self.killed else -9
        return "", self.err

    def kill(self):
        self.killed = True


@pytest.mark.parametrize("console, stderr, rc, kind", [
    (BANNER, "", 0, "kvm"),
    ("", "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x1\n", -6, "tcg"),
    ("Linux version 6.1\n", "", None, "tcg"),
])
def test_the_probe_result_at_the_process_boundary(tmp_path, console, stderr, rc, kind):
    serial = str(tmp_path / "probe.serial")
    started = []

    def spawn(argv, **kw):
        started.append(argv)
        return FakeQemu(serial, console, stderr, rc)
    result = qemu.run_probe(spawn, "kubevpc-vm-vm1a2b-probe", "/c/k", serial, deadline=0.1)
    assert started[0][:3] == ["qemu-system-x86_64", "-name", "kubevpc-vm-vm1a2b-probe"]
    assert result.serial == console and result.stderr == stderr
    assert result.returncode == rc
    assert decide("auto", "", result).kind == kind


# ---------------------------------------------------------------------------------- a boot
def test_the_relay_hands_on_whole_lines_without_escape_codes(tmp_path):
    path = tmp_path / "serial.log"
    seen = []
    relay = qemu.SerialRelay(str(path), seen.append)
    relay.pump()                                     # no file yet
    path.write_bytes(b"[  \x1b[0;32mOK\x1b[0m  ] Started kubevpc\r\npart")
    relay.pump()
    assert seen == ["vm| [  OK  ] Started kubevpc"]
    with open(path, "ab") as fh:
        fh.write(b"ial line\n\n\xff bad byte\nlast")
    relay.pump()
    assert seen[1:] == ["vm| partial line", "vm| \ufffd bad byte"]
    relay.pump(final=True)
    assert seen[-1] == "vm| last" and relay.lines == 4


def stand_in(script: str):
    """A spawn that starts a Python process in qemu's place."""
    def spawn(argv, **kw):
        return subprocess.Popen([sys.executable, "-c", script, *argv], **kw)
    return spawn


def test_a_boot_relays_the_console_until_the_guest_powers_off(tmp_path):
    serial = str(tmp_path / "serial.log")
    script = (f"import time\nf = open({serial!r}, 'w')\nfor i in range(3):\n    f.write(f'line {{i}}\\n'); f.flush(); "
              "time.sleep(0.1)\nimport sys; sys.stderr.write('qemu: terminating\\n')")
    seen = []
    res = qemu.boot(stand_in(script), ["qemu"], serial, 30, seen.append, heartbeat=60)
    assert res.returncode == 0 and res.seconds < 30 and "terminating" in res.stderr
    assert seen == ["vm| line 0", "vm| line 1", "vm| line 2"]


def test_a_boot_past_its_deadline_is_stopped(tmp_path):
    serial = str(tmp_path / "serial.log")
    seen = []
    res = qemu.boot(stand_in("import time; time.sleep(60)"), ["qemu"], serial, 1.0, seen.append, heartbeat=0.4)
    assert res.returncode is None and res.seconds < 15
    assert any("still at work" in s for s in seen) and any("stopping qemu" in s for s in seen)


def test_labels():
    assert Accel("kvm", "").label == "KVM guest"
    assert "software emulation" in Accel("tcg", "").label
