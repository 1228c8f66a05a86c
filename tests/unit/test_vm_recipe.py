"""The VM image's recipe (kubevpc/vm/sources.py, recipe.py, image.py) as command lines and files:
the registry read from apt's own sources, debootstrap and the chroot isolated in their own
namespaces, the guest's files, the cache key. Nothing here builds an image or boots a VM."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from kubevpc.vm import image, recipe, sources
from kubevpc.vm.session import StepFailed
from tests.unit.golden import REPO

ONE_LINE = """# the machine's sources
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://registry.invalid/debian/ bookworm main contrib
deb-src http://registry.invalid/debian bookworm main
deb http://registry.invalid/debian bookworm-updates main   # updates
deb http://other.invalid/ubuntu noble main
"""

DEB822 = """Types: deb
# a comment inside
URIs: http://registry.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://registry.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /etc/apt/keyrings/custom.gpg

Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://inline.invalid/x
Suites: stable
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 abc
"""


def test_one_line_sources_are_read_with_their_options_and_without_deb_src():
    got = sources.parse_one_line(ONE_LINE, "sources.list")
    assert [(s.uri, s.suite, s.components) for s in got] == [
        ("http://registry.invalid/debian", "bookworm", ("main", "contrib")),
        ("http://registry.invalid/debian", "bookworm-updates", ("main",)),
        ("http://other.invalid/ubuntu", "noble", ("main",))]
    assert got[0].signed_by == sources.DEFAULT_KEYRING and got[0].origin == "sources.list:2"


def test_deb822_sources_give_one_entry_per_suite_and_skip_disabled_stanzas():
    got = sources.parse_deb822(DEB822, "debian.sources")
    assert [(s.uri, s.suite) for s in got] == [
        ("http://registry.invalid/debian", "bookworm"), ("http://registry.invalid/debian", "bookworm-updates"),
        ("http://registry.invalid/debian-security", "bookworm-security"), ("http://inline.invalid/x", "stable")]
    assert got[3].signed_by == "", "an inline key block is not a keyring file"


def test_apt_reads_only_list_and_sources_files(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://a.invalid/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "b.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "c.list.disabled-by-farm").write_text("deb http://c.invalid/ bookworm main\n")
    (tmp_path / "sources.list.d" / "d.sources.save").write_text(DEB822.replace("registry", "saved"))
    got = sources.read_sources(str(tmp_path))
    assert {s.uri for s in got} == {"http://a.invalid/debian", "http://registry.invalid/debian",
                                     "http://registry.invalid/debian-security", "http://inline.invalid/x"}
    assert sources.mirror(got).uri == "http://a.invalid/debian", "apt's order: sources.list first"


def test_the_mirror_is_apts_bookworm_main_entry_or_the_one_given():
    got = sources.parse_deb822(DEB822, "debian.sources")
    assert sources.mirror(got).uri == "http://registry.invalid/debian"
    assert sources.mirror(got, "http://given.invalid/debian/").uri == "http://given.invalid/debian"


def test_no_debian_12_entry_is_an_error_that_says_what_to_do():
    ubuntu = sources.parse_one_line("deb http://other.invalid/ubuntu noble main\n", "sources.list")
    with pytest.raises(sources.NoMirror) as exc:
        sources.mirror(ubuntu)
    assert "bookworm" in str(exc.value) and "--mirror" in str(exc.value)


def test_the_guests_sources_are_the_machines_debian_entries_with_debians_keyrings_only():
    got = sources.parse_deb822(DEB822, "debian.sources")
    text = sources.guest_sources(got, sources.mirror(got))
    assert "Suites: bookworm\n" in text and "Suites: bookworm-updates" in text and "bookworm-security" in text
    assert "inline.invalid" not in text and "disabled.invalid" not in text
    assert "custom.gpg" not in text, "the guest has no keyring of the machine's own"
    assert text.count(f"Signed-By: {sources.DEFAULT_KEYRING}") == 2


def test_the_machines_own_sources_can_be_read():
    sources.read_sources()          # whatever they hold, reading them does not fail


# -------------------------------------------------------------------------------- cache key
def copy_recipe(dst) -> str:
    for rel in recipe.RECIPE_FILES:
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(REPO, rel), os.path.join(dst, rel))
    return str(dst)


def test_the_cache_key_follows_install_sh_and_the_recipe_and_nothing_else(tmp_path):
    repo = copy_recipe(tmp_path)
    key = recipe.cache_key(repo)
    assert len(key) == 12 and int(key, 16) >= 0
    assert key == recipe.cache_key(str(REPO)) == recipe.cache_key(repo)
    (tmp_path / "README.md").write_text("anything else")
    assert recipe.cache_key(repo) == key
    for rel in recipe.RECIPE_FILES:
        path = tmp_path / rel
        before = path.read_bytes()
        path.write_bytes(before + b"\n# changed\n")
        assert recipe.cache_key(repo) != key, rel
        path.write_bytes(before)
    assert recipe.cache_key(repo) == key
    assert image.Image("/c", key).disk == f"/c/debian12-{key}.qcow2"


# ---------------------------------------------------------------------------- the recipe
def test_install_sh_packages_are_read_from_its_array():
    pkgs = recipe.install_sh_packages((REPO / "scripts" / "install.sh").read_text())
    assert {"openvswitch-switch", "mininet", "iperf3", "make", "graphviz", "nginx-light"} <= set(pkgs)
    assert not [p for p in pkgs if "#" in p or "(" in p or ")" in p]
    with pytest.raises(ValueError):
        recipe.install_sh_packages("PACKAGES=(a b)\n")


def test_debootstrap_runs_isolated_in_its_own_mount_and_pid_namespaces():
    argv = recipe.isolated(recipe.debootstrap_argv("/r/vm1a/root", "http://registry.invalid/debian",
                                                   sources.DEFAULT_KEYRING))
    assert argv[:8] == ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--"]
    assert argv[8:] == ["debootstrap", "--variant=minbase", "--arch=amd64", "--components=main",
                        f"--keyring={sources.DEFAULT_KEYRING}", "bookworm", "/r/vm1a/root",
                        "http://registry.invalid/debian"]
    assert "--keyring" not in " ".join(recipe.debootstrap_argv("/r", "http://m.invalid"))


def test_the_chroot_mounts_only_in_its_namespace_and_takes_the_root_as_an_argument():
    root = "/var/lib/kubevpc/runs/vm1a/root; rm -rf /"
    argv = recipe.chroot_argv(root, "/root/kubevpc-provision.sh")
    assert argv[:8] == recipe.isolated([])[:8]
    script = argv[argv.index("-c") + 1]
    assert root not in script, "the root is a positional argument, never part of the shell text"
    assert argv[-2:] == [root, "/root/kubevpc-provision.sh"]
    assert 'mount -t proc proc "$1/proc"' in script and 'exec chroot "$1"' in script


def test_nothing_in_the_recipe_takes_a_loop_device_or_mounts_in_the_machines_namespace():
    cmds = [recipe.mkfs_argv("/r/root", "/r/disk.raw"), recipe.convert_argv("/r/disk.raw", "/r/disk.qcow2"),
            recipe.overlay_argv("/c/base.qcow2", "/r/o.qcow2")]
    assert cmds[0] == ["mkfs.ext4", "-q", "-F", "-L", "kubevpc-root", "-d", "/r/root", "/r/disk.raw"]
    assert cmds[2] == ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/c/base.qcow2", "-F", "qcow2", "/r/o.qcow2"]
    for argv in cmds:
        assert not {"losetup", "mount", "kpartx", "qemu-nbd"} & set(argv)


def test_the_chroot_installs_without_starting_services_and_makes_the_venv_with_install_sh():
    text = recipe.provision_script(["linux-image-amd64", "openvswitch-switch", "a b"])
    assert "exit 101" in text and "policy-rc.d" in text
    assert "--no-install-recommends" in text and "linux-image-amd64 openvswitch-switch 'a b'" in text
    assert f"bash {recipe.GUEST_CHECKOUT}/scripts/install.sh --python-only" in text
    assert "systemctl enable systemd-networkd.service kubevpc-vm-job.service" in text
    assert "linux-image-amd64" in recipe.BASE_PACKAGES
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_the_guests_files():
    files = recipe.guest_files("Types: deb\n")
    net = files["etc/systemd/network/20-eth0.network"][0]
    assert "Name=eth0\n" in net and "*" not in net, "networkd takes qemu's NIC only, never kubevpc's links"
    assert "ConditionKernelCommandLine=!kubevpc.job=1" in files["etc/systemd/system/serial-getty@ttyS0.service.d/kubevpc.conf"][0]
    runner, mode = files["usr/local/sbin/kubevpc-vm-job"]
    assert mode == 0o755 and "grep -qw kubevpc.job=1 /proc/cmdline || exit 0" in runner
    assert "mount_tag" not in runner and f"{recipe.SHARE_TAG} {recipe.SHARE_DIR} ro" in runner
    assert f"> {recipe.JOB_DIR}/rc" in runner and "poweroff" in runner
    assert subprocess.run(["bash", "-n"], input=runner, text=True).returncode == 0
    assert files["etc/fstab"][0].startswith("/dev/vda / ext4")
    assert subprocess.run(["bash", "-n"], input=recipe.provision_job(), text=True).returncode == 0


def test_the_kernel_command_line():
    job = recipe.kernel_append(job=True)
    assert "root=/dev/vda" in job and "console=ttyS0" in job and "net.ifnames=0" in job and "panic=-1" in job
    assert job.endswith(" kubevpc.job=1") and "kubevpc.job" not in recipe.kernel_append(job=False)
    assert recipe.kernel_append(job=False, probe=True) == "console=ttyS0 panic=-1"


# ------------------------------------------------------------------------------- the build
def test_missing_host_tools_name_their_debian_packages():
    assert image.missing_tools(lambda cmd: "/usr/bin/" + cmd) in ([], ["debian-archive-keyring"])
    missing = image.missing_tools(lambda cmd: None if cmd in ("qemu-img", "debootstrap") else "/x")
    assert {"qemu-utils", "debootstrap"} <= set(missing) and "qemu-system-x86" not in missing


def test_host_tools_are_installed_only_when_missing(monkeypatch):
    calls = []
    monkeypatch.setattr(image, "missing_tools", lambda: [])
    image.ensure_host_tools(lambda s: None, run=lambda *a, **k: calls.append(a))
    assert calls == []
    monkeypatch.setattr(image, "missing_tools", lambda: ["qemu-utils"])
    image.ensure_host_tools(lambda s: None, run=lambda argv, **k: calls.append(argv) or subprocess.CompletedProcess(argv, 0))
    assert calls[0][-1] == "update" and calls[1][:2] == ["apt-get", "install"] and calls[1][-1] == "qemu-utils"
    monkeypatch.setattr(image, "missing_tools", lambda: ["x"])
    with pytest.raises(StepFailed):
        image.ensure_host_tools(lambda s: None, run=lambda argv, **k: subprocess.CompletedProcess(argv, 100, "", "E: no"))


def test_the_chroots_environment_is_clean_but_keeps_proxies_and_indexes_by_url():
    env = image.chroot_env({"http_proxy": "http://p.invalid:3128", "SECRET": "x", "PIP_FIND_LINKS": "/opt/wheels",
                            "PIP_EXTRA_INDEX_URL": "file:///opt/pypi/simple https://i.invalid/simple"})
    assert env["http_proxy"] == "http://p.invalid:3128" and env["PIP_EXTRA_INDEX_URL"] == "https://i.invalid/simple"
    assert "SECRET" not in env and "PIP_FIND_LINKS" not in env and env["PATH"].startswith("/usr/sbin")


def test_the_root_is_filled_with_the_recipes_files_and_the_checkout_without_what_a_machine_made(tmp_path):
    repo = tmp_path / "repo"
    for rel in ("scripts/install.sh", "kubevpc/x.py", ".venv/bin/python", ".git/HEAD", "kubevpc/__pycache__/x.pyc",
                "kubevpc.egg-info/PKG-INFO", "vm-results/job.log"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    shutil.copyfile(REPO / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "root").mkdir()
    image.fill_root(str(root), "Types: deb\n", str(repo))
    checkout = root / recipe.GUEST_CHECKOUT.lstrip("/")
    assert (checkout / "kubevpc" / "x.py").exists() and (checkout / "scripts" / "install.sh").exists()
    for gone in (".venv", ".git", "kubevpc/__pycache__", "kubevpc.egg-info", "vm-results"):
        assert not (checkout / gone).exists(), gone
    assert (root / "usr/local/sbin/kubevpc-vm-job").stat().st_mode & 0o777 == 0o755
    script = (root / "root" / "kubevpc-provision.sh").read_text()
    assert "openvswitch-switch" in script and "linux-image-amd64" in script
    assert (root / "etc" / "resolv.conf").exists()
    image.finish_root(str(root))
    assert (root / "etc" / "resolv.conf").read_text() == recipe.GUEST_RESOLV
    assert not (root / "root" / "kubevpc-provision.sh").exists()


def test_the_newest_kernel_and_its_initramfs(tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    with pytest.raises(StepFailed):
        image.boot_files(str(tmp_path))
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-30-amd64", "initrd.img-6.1.0-9-amd64"):
        (boot / name).write_text("")
    with pytest.raises(StepFailed, match="no initramfs"):
        image.boot_files(str(tmp_path))
    (boot / "initrd.img-6.1.0-30-amd64").write_text("")
    assert image.boot_files(str(tmp_path)) == (str(boot / "vmlinuz-6.1.0-30-amd64"), str(boot / "initrd.img-6.1.0-30-amd64"))


def test_the_machines_own_certificate_authorities_go_into_the_guest(tmp_path):
    cas = tmp_path / "cas"
    (cas / "corp").mkdir(parents=True)
    (cas / "proxy.crt").write_text("A")
    (cas / "corp" / "root.crt").write_text("B")
    (cas / "README").write_text("not a certificate")
    root = tmp_path / "root"
    assert sorted(image.copy_local_cas(str(root), str(cas))) == ["corp/root.crt", "proxy.crt"]
    dest = root / str(cas).lstrip("/")
    assert (dest / "proxy.crt").read_text() == "A" and (dest / "corp" / "root.crt").read_text() == "B"
    assert not (dest / "README").exists()
    assert image.copy_local_cas(str(root), str(tmp_path / "none")) == []       # a machine that adds none
    script = recipe.provision_script(["ca-certificates"])
    # the CAs are taken before anything reaches PyPI, and a venv's pip (which has its own bundle) uses them
    assert script.index("update-ca-certificates") < script.index("install.sh --python-only")
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in script
