"""The image recipe, as data and command lines (pure: nothing here runs anything).

Debian 12 is debootstrapped (minbase) from the registry the machine's apt uses, into a directory
of the session's run. A chroot, inside its own mount and PID namespaces (so that nothing it mounts
is seen by the machine and nothing it starts outlives it), installs the kernel (Debian's
linux-image-amd64, which carries openvswitch.ko), systemd, the packages scripts/install.sh
installs, and the project's virtual environment (`install.sh --python-only`: no daemon starts).
The directory becomes an ext4 file system without a loop device or a mount (`mkfs.ext4 -d`), then
a qcow2 image. qemu boots its kernel directly (no boot loader) on the image's root, and the first
boot runs the whole scripts/install.sh (Open vSwitch, the kernel module) as on any machine.

The cache key hashes scripts/install.sh and this recipe (RECIPE_FILES): the image is rebuilt when
either changes, and only then.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex

SIZE_GB = 12                      # the root file system (sparse: the qcow2 holds what is written)
GUEST_CHECKOUT = "/opt/kubevpc"   # where the guest keeps its copy of the checkout
HOSTNAME = "kubevpc-vm"
SHARE_TAG, JOB_TAG = "kubevpc", "kubevpcjob"     # the 9p shares: the checkout (read-only), the job directory
SHARE_DIR, JOB_DIR = "/mnt/kubevpc", "/mnt/job"  # where the guest mounts them
RECIPE_FILES = ("scripts/install.sh", "kubevpc/vm/recipe.py", "kubevpc/vm/image.py")
# What the guest needs besides scripts/install.sh's packages: a kernel with openvswitch.ko and its
# initramfs (zstd compresses it), systemd as init (networkd takes the address qemu's user network
# hands out), e2fsprogs (fsck of the root), rsync (the checkout copied in from the 9p share),
# procps (pgrep: tests/e2e/test_cleanup.py), netbase (/etc/services, /etc/protocols).
BASE_PACKAGES = ("linux-image-amd64", "zstd", "systemd-sysv", "udev", "dbus", "kmod", "e2fsprogs", "iproute2",
                 "rsync", "ca-certificates", "procps", "netbase", "less")
# Copied into the image and into the guest's checkout: the source, not what a machine made of it.
EXCLUDE = (".venv", ".git", ".vagrant", "results", "perf-results", "vm-results", ".pytest_cache", "__pycache__",
           "*.egg-info")


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cache_key(repo: str | None = None) -> str:
    """12 hex digits of SHA-256 over each recipe file's path and bytes."""
    repo = repo or repo_root()
    h = hashlib.sha256()
    for rel in RECIPE_FILES:
        with open(os.path.join(repo, rel), "rb") as fh:
            data = fh.read()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def image_name(key: str) -> str:
    return f"debian12-{key}"


def install_sh_packages(text: str) -> list[str]:
    """The apt packages scripts/install.sh installs: the words of its APT_PACKAGES=( ... ) array,
    comments left out. They go into the image from the chroot, so the first boot finds them."""
    m = re.search(r"^APT_PACKAGES=\(\s*(.*?)^\)", text, re.M | re.S)
    if not m:
        raise ValueError("scripts/install.sh has no APT_PACKAGES=( ... ) array")
    return [w for line in m.group(1).splitlines() for w in line.split("#", 1)[0].split()]


def debootstrap_argv(root: str, mirror: str, keyring: str = "") -> list[str]:
    """debootstrap of Debian 12's minimal base into `root`."""
    return ["debootstrap", "--variant=minbase", "--arch=amd64", "--components=main",
            *([f"--keyring={keyring}"] if keyring else []), "bookworm", root, mirror]


def isolated(argv: list[str]) -> list[str]:
    """`argv` in a mount namespace of its own (whatever it mounts, the machine never sees) and a
    PID namespace (it and everything it started die together when unshare is killed)."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", *argv]


def chroot_argv(root: str, script: str) -> list[str]:
    """Run `script` (a path inside the root) in the chroot, isolated, with /proc, /sys and /dev
    mounted in its namespace only (the machine's view of the root's directories stays empty, so
    removing the root never reaches through a mount)."""
    mounts = ('mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" && mount --rbind /dev "$1/dev" && '
              'exec chroot "$1" /bin/bash "$2"')
    return isolated(["/bin/sh", "-c", mounts, "sh", root, script])


def provision_script(packages: list[str]) -> str:
    """What runs in the chroot: packages without starting their services, the units enabled, the
    project's .venv made by its own install script, and nothing the package started left enabled
    that scripts/install.sh would have stopped (nginx: the tests run their own)."""
    q = " ".join(shlex.quote(p) for p in packages)
    return f"""#!/bin/bash
# kubevpc VM image: provisioning in the chroot (written by kubevpc/vm/recipe.py)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d     # no service starts in a chroot
chmod 755 /usr/sbin/policy-rc.d
echo "chroot: apt-get update"
apt-get -q -o DPkg::Lock::Timeout=300 update
echo "chroot: apt-get install {q}"
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold {q}
update-ca-certificates          # the machine's own CAs (copied to /usr/local/share/ca-certificates) trusted too
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf   # a venv's pip: the system's CAs
systemctl enable systemd-networkd.service kubevpc-vm-job.service
systemctl disable nginx.service 2>/dev/null || true
echo "chroot: bash {GUEST_CHECKOUT}/scripts/install.sh --python-only"
bash {GUEST_CHECKOUT}/scripts/install.sh --python-only
rm -f /usr/sbin/policy-rc.d
apt-get clean
echo "chroot: done"
"""


def kernel_append(job: bool, probe: bool = False) -> str:
    """The guest kernel's command line: root on the virtio disk, console on the first serial port
    (what the host relays), eth0 as the NIC's name (networkd's match), reboot at once on a panic
    (qemu's -no-reboot then exits). kubevpc.job=1 tells the guest to run the host's job."""
    if probe:
        return "console=ttyS0 panic=-1"
    return ("root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 loglevel=4 panic=-1"
            + (" kubevpc.job=1" if job else ""))


JOB_RUNNER = f"""#!/bin/bash
# kubevpc-vm-job (written by kubevpc/vm/recipe.py): mount the host's 9p shares; in a job boot
# (kubevpc.job=1 on the kernel command line) run the host's {JOB_DIR}/job.sh, its output on the
# serial console (which the host relays) and in job.log, its exit status in {JOB_DIR}/rc; then
# power off, which ends qemu.
set -u
share() {{
    mkdir -p "$2"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        mountpoint -q "$2" && return 0
        mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2" 2>/dev/null && return 0
        sleep 1
    done
    return 1
}}
modprobe -q 9pnet_virtio || true
share {SHARE_TAG} {SHARE_DIR} ro || echo "kubevpc-vm-job: the checkout's share ({SHARE_TAG}) is not there" >/dev/ttyS0
grep -qw kubevpc.job=1 /proc/cmdline || exit 0
if ! share {JOB_TAG} {JOB_DIR} rw || [ ! -f {JOB_DIR}/job.sh ]; then
    echo "kubevpc-vm-job: no job on the share {JOB_TAG}; powering off" >/dev/ttyS0
    systemctl --no-block poweroff
    exit 1
fi
read -r _ kb _ < /proc/meminfo                     # MemTotal, in kB
echo "kubevpc-vm-job: $(uname -r), $(nproc) CPUs, $((kb / 1024)) MiB" >/dev/ttyS0
bash {JOB_DIR}/job.sh 2>&1 | tee {JOB_DIR}/job.log >/dev/ttyS0
echo "${{PIPESTATUS[0]}}" > {JOB_DIR}/rc
sync
systemctl --no-block poweroff
"""

JOB_UNIT = """[Unit]
Description=kubevpc: mount the host's shares and run the job the host left there
Wants=network-online.target
After=network-online.target openvswitch-switch.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kubevpc-vm-job
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
"""

# A login on the serial console for `python -m kubevpc.vm boot` (root, no password: the guest is
# reached only through that console, its network is qemu's user network); none in a job boot.
GETTY_DROPIN = """[Unit]
ConditionKernelCommandLine=!kubevpc.job=1

[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
"""

# Only the NIC qemu gives the guest: never kubevpc's veths, bridges or tunnels.
NETWORK = """[Match]
Name=eth0

[Network]
DHCP=yes
"""


def guest_files(sources: str) -> dict[str, tuple[str, int]]:
    """Files written into the image before the chroot runs: path -> (text, mode)."""
    return {
        "etc/hostname": (HOSTNAME + "\n", 0o644),
        "etc/hosts": (f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n", 0o644),
        "etc/fstab": ("/dev/vda / ext4 errors=remount-ro 0 1\n", 0o644),
        "etc/apt/sources.list": ("# see sources.list.d/debian.sources (the machine's Debian entries)\n", 0o644),
        "etc/apt/sources.list.d/debian.sources": (sources, 0o644),
        "etc/systemd/network/20-eth0.network": (NETWORK, 0o644),
        "etc/systemd/system/kubevpc-vm-job.service": (JOB_UNIT, 0o644),
        "etc/systemd/system/serial-getty@ttyS0.service.d/kubevpc.conf": (GETTY_DROPIN, 0o644),
        "usr/local/sbin/kubevpc-vm-job": (JOB_RUNNER, 0o755),
    }


# qemu's user network answers DNS at this address of its own (not a host of any network)
GUEST_RESOLV = "nameserver 10.0.2.3\n"


def mkfs_argv(root: str, image: str) -> list[str]:
    """An ext4 file system in the regular file `image`, filled from the directory `root`: no loop
    device, no mount."""
    return ["mkfs.ext4", "-q", "-F", "-L", "kubevpc-root", "-d", root, image]


def convert_argv(raw: str, qcow2: str) -> list[str]:
    return ["qemu-img", "convert", "-O", "qcow2", raw, qcow2]


def overlay_argv(base: str, overlay: str) -> list[str]:
    """A throw-away overlay on the cached image: a test never changes the cache."""
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay]


def provision_job() -> str:
    """The first boot's job: the whole scripts/install.sh, as on any machine, then its --check and
    the kernel datapath's module."""
    return f"""#!/bin/bash
set -eu
cd {GUEST_CHECKOUT}
echo "=== first boot: bash scripts/install.sh"
bash scripts/install.sh
bash scripts/install.sh --check
test -d /sys/module/openvswitch || {{ echo "the openvswitch kernel module is not loaded"; exit 1; }}
echo "=== first boot: $(modinfo -F filename openvswitch) loaded; $(ovs-vsctl --version | head -n 1)"
"""
