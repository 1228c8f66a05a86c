"""Building the image (`make vm`): the recipe's steps carried out in a session, and the cache.

The cache holds, per key (recipe.cache_key: scripts/install.sh and the recipe), the image and the
kernel and initramfs qemu boots it with: `<cache>/debian12-<key>.qcow2`, `.vmlinuz`, `.initrd`.
An image is there once complete (it is renamed in last), and a build is skipped while it is.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

from ..rundir import private_dir
from . import recipe, sources
from .qemu import Accel, VmConfig, boot, decide, device_usable, qemu_argv, run_probe
from .session import Session, StepFailed

CACHE_DIR = os.environ.get("KUBEVPC_VM_CACHE", "/var/cache/kubevpc/vm")
# command -> the Debian package that has it (checked first, installed only when missing)
HOST_TOOLS = {"debootstrap": "debootstrap", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
              "mkfs.ext4": "e2fsprogs", "unshare": "util-linux", "chroot": "coreutils"}
Say = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    dir: str
    key: str

    def file(self, ext: str) -> str:
        return os.path.join(self.dir, f"{recipe.image_name(self.key)}.{ext}")

    @property
    def disk(self) -> str:
        return self.file("qcow2")

    @property
    def kernel(self) -> str:
        return self.file("vmlinuz")

    @property
    def initrd(self) -> str:
        return self.file("initrd")

    def complete(self) -> bool:
        return all(os.path.isfile(p) for p in (self.kernel, self.initrd, self.disk))


def current_image(cache_dir: str = CACHE_DIR) -> Image:
    return Image(cache_dir, recipe.cache_key())


@dataclass(frozen=True)
class BuildOptions:
    mirror: str = ""                # a registry URI instead of apt's bookworm entry
    accel: str = "auto"
    cpus: int = 2
    memory_mb: int = 4096
    rebuild: bool = False
    cache_dir: str = CACHE_DIR


# ------------------------------------------------------------------------- the machine's tools
def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The Debian packages of the host tools that are not there, and Debian's keyring if absent."""
    pkgs = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if not which(cmd)})
    if not os.path.isfile(sources.DEFAULT_KEYRING):
        pkgs.append("debian-archive-keyring")
    return pkgs


def ensure_host_tools(say: Say, run: Callable = subprocess.run) -> None:
    """apt-get install what is missing, in scripts/install.sh's manner: look first, say each step."""
    pkgs = missing_tools()
    if not pkgs:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", "update"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *pkgs]):
        say(f"vm: {' '.join(argv)}")
        res = run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
        if res.returncode != 0:
            raise StepFailed(f"{' '.join(argv)}: exit {res.returncode}", (res.stdout + res.stderr)[-3000:])


def chroot_env(environ: dict | None = None) -> dict:
    """The environment of debootstrap and the chroot: a clean one, with the machine's proxies and
    the package indexes it names by URL (its file:// ones are not in the chroot)."""
    environ = os.environ if environ is None else environ
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    env.update({k: v for k, v in environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")})
    for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        urls = [u for u in environ.get(k, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            env[k] = " ".join(urls)
    return env


# ------------------------------------------------------------------------------- the build
def build(opts: BuildOptions, say: Say) -> Image:
    """The current recipe's image, built unless the cache has it."""
    image = Image(opts.cache_dir, recipe.cache_key())
    if image.complete() and not opts.rebuild:
        say(f"vm: image {image.disk} is up to date (key {image.key}: scripts/install.sh and the recipe)")
        return image
    ensure_host_tools(say)
    base = sources.mirror(sources.read_sources(), opts.mirror or os.environ.get("KUBEVPC_VM_MIRROR", ""))
    say(f"vm: building {image.disk}: Debian 12 from {base.uri} ({base.origin})")
    with Session("build", say) as s:
        root = s.path("root")
        s.run_step("debootstrap (Debian 12, minbase)", recipe.isolated(
            recipe.debootstrap_argv(root, base.uri, sources.keyring(base))), 3600, env=chroot_env())
        fill_root(root, sources.guest_sources(sources.read_sources(), base))
        s.run_step("chroot: packages, the kernel, .venv (scripts/install.sh --python-only)",
                   recipe.chroot_argv(root, "/root/kubevpc-provision.sh"), 3600, s.path("chroot.log"), chroot_env())
        finish_root(root)
        disk, kernel, initrd = make_disk(s, root)
        shutil.rmtree(root)
        first_boot(s, opts, disk, kernel, initrd)
        publish(s, image, {"vmlinuz": kernel, "initrd": initrd, "qcow2": disk})
    say(f"vm: image ready: {image.disk}")
    return image


def fill_root(root: str, guest_sources: str, repo: str | None = None) -> None:
    """The recipe's files, the checkout and the chroot's script in the debootstrapped root."""
    for rel, (text, mode) in recipe.guest_files(guest_sources).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, mode)
    repo = repo or recipe.repo_root()
    dest = root + recipe.GUEST_CHECKOUT
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(repo, dest, symlinks=True, ignore=shutil.ignore_patterns(*recipe.EXCLUDE))
    with open(os.path.join(repo, "scripts", "install.sh"), encoding="utf-8") as fh:
        packages = list(recipe.BASE_PACKAGES) + recipe.install_sh_packages(fh.read())
    with open(os.path.join(root, "root", "kubevpc-provision.sh"), "w", encoding="utf-8") as fh:
        fh.write(recipe.provision_script(packages))
    resolv = os.path.join(root, "etc", "resolv.conf")
    if os.path.lexists(resolv):
        os.unlink(resolv)
    shutil.copyfile("/etc/resolv.conf", resolv)        # the chroot resolves names as the machine does
    copy_local_cas(root)


LOCAL_CAS = "/usr/local/share/ca-certificates"


def copy_local_cas(root: str, source: str = LOCAL_CAS) -> list[str]:
    """The certificate authorities this machine adds to Debian's (a company's, or a proxy's that
    inspects TLS: without them the guest's pip cannot reach PyPI where the machine's can), copied
    to the same place in the guest, where the provisioning's update-ca-certificates takes them."""
    copied = []
    if not os.path.isdir(source):
        return copied
    dest = os.path.join(root, source.lstrip("/"))
    os.makedirs(dest, exist_ok=True)
    for dirpath, _, files in os.walk(source):
        for name in sorted(f for f in files if f.endswith(".crt")):
            rel = os.path.relpath(os.path.join(dirpath, name), source)
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(dirpath, name), os.path.join(dest, rel))
            copied.append(rel)
    return copied


def finish_root(root: str) -> None:
    """After the chroot: the guest's resolver (qemu's user network), no provisioning script."""
    resolv = os.path.join(root, "etc", "resolv.conf")
    if os.path.lexists(resolv):
        os.unlink(resolv)
    with open(resolv, "w", encoding="utf-8") as fh:
        fh.write(recipe.GUEST_RESOLV)
    os.unlink(os.path.join(root, "root", "kubevpc-provision.sh"))


def boot_files(root: str) -> tuple[str, str]:
    """The newest kernel (by version: 6.1.0-30 after 6.1.0-9) and its initramfs in the root's /boot."""
    kernels = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")),
                     key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", os.path.basename(p))])
    if not kernels:
        raise StepFailed(f"no kernel in {root}/boot: did linux-image-amd64 install? (see chroot.log)")
    version = os.path.basename(kernels[-1])[len("vmlinuz-"):]
    initrd = os.path.join(root, "boot", f"initrd.img-{version}")
    if not os.path.isfile(initrd):
        raise StepFailed(f"no initramfs {initrd} beside the kernel (see chroot.log)")
    return kernels[-1], initrd


def make_disk(s: Session, root: str) -> tuple[str, str, str]:
    """The root as an ext4 file system, then qcow2; the kernel and initramfs copied beside it."""
    kernel, initrd = boot_files(root)
    out = (s.path("disk.qcow2"), s.path("vmlinuz"), s.path("initrd"))
    shutil.copyfile(kernel, out[1])
    shutil.copyfile(initrd, out[2])
    raw = s.path("disk.raw")
    with open(raw, "wb") as fh:
        fh.truncate(recipe.SIZE_GB << 30)
    s.run_step(f"mkfs.ext4 -d: the root as a {recipe.SIZE_GB} GB file system (no loop device, no mount)",
               recipe.mkfs_argv(root, raw), 1800)
    s.run_step("qemu-img convert to qcow2", recipe.convert_argv(raw, out[0]), 1800)
    os.unlink(raw)
    return out


def choose_accel(s: Session, requested: str, kernel: str) -> Accel:
    """KVM when a test boot on it works (or when asked for), TCG otherwise; says which and why."""
    problem = device_usable() if requested == "auto" else ""
    probe = None
    if requested == "auto" and not problem:
        s.say("vm: probing KVM with a test boot of the guest's kernel")
        probe = run_probe(s.spawn, f"kubevpc-vm-{s.run}-probe", kernel, s.path("kvm-probe.serial"))
    accel = decide(requested, problem, probe)
    s.say(f"vm: accelerator {accel.kind.upper()}: {accel.reason}")
    return accel


def first_boot(s: Session, opts: BuildOptions, disk: str, kernel: str, initrd: str) -> Accel:
    """Boot the new image once: scripts/install.sh provisions it as on any machine."""
    accel = choose_accel(s, opts.accel, kernel)
    jobdir = s.path("job")
    os.makedirs(jobdir)
    with open(os.path.join(jobdir, "job.sh"), "w", encoding="utf-8") as fh:
        fh.write(recipe.provision_job())
    cfg = VmConfig(f"kubevpc-vm-{s.run}", accel.kind, disk, kernel, initrd, recipe.repo_root(), jobdir,
                   s.path("serial.log"), opts.cpus, opts.memory_mb)
    s.say(f"vm: first boot ({accel.label}): scripts/install.sh provisions the image")
    res = boot(s.spawn, qemu_argv(cfg), cfg.serial, 3600 if accel.kind == "tcg" else 900, s.say)
    rc = read_rc(jobdir)
    if rc != 0:
        raise StepFailed(f"the first boot's provisioning failed (job exit {rc}, qemu exit {res.returncode}); "
                         f"see {s.kept(cfg.serial)}", res.stderr)
    s.say(f"vm: first boot done in {res.seconds / 60:.1f} min")
    return accel


def read_rc(jobdir: str) -> int | None:
    """The job's exit status the guest wrote, None when it wrote none (it died or ran out of time)."""
    try:
        with open(os.path.join(jobdir, "rc"), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def publish(s: Session, image: Image, files: dict[str, str]) -> None:
    """Move the finished files into the cache, the disk last (its presence means complete), and
    remove the images of other keys."""
    private_dir(image.dir)
    for ext in ("vmlinuz", "initrd", "qcow2"):
        src, dst = files[ext], image.file(ext)
        try:
            os.rename(src, dst)
        except OSError:                                 # another file system: copy, then rename
            part = f"{dst}.part-{s.run}"
            shutil.copyfile(src, part)
            os.rename(part, dst)
    for old in glob.glob(os.path.join(image.dir, "debian12-*")):
        name = os.path.basename(old)
        if recipe.image_name(image.key) not in name and ".part-" not in name:
            os.unlink(old)
            s.say(f"vm: removed {old} (another recipe's)")
