"""Booting the cached image for a job (`test`, `run`) or a login (`boot`), each in a session of
its own: a throw-away overlay over the cached image, the accelerator probed, qemu recorded in the
ledger, and everything removed when the session ends."""
from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from typing import Callable

from . import recipe, suite
from .image import BuildOptions, Image, choose_accel, read_rc
from .qemu import Accel, BootResult, VmConfig, boot, qemu_argv
from .session import Session

Say = Callable[[str], None]


@dataclass(frozen=True)
class JobOutcome:
    accel: Accel
    boot: BootResult
    rc: int | None                  # the job's exit status, None when the guest wrote none


def _config(s: Session, image: Image, opts: BuildOptions, accel: Accel, jobdir: str | None, serial: str) -> VmConfig:
    overlay = s.path("overlay.qcow2")
    s.run_step("a throw-away overlay on the cached image", recipe.overlay_argv(image.disk, overlay), 120)
    return VmConfig(f"kubevpc-vm-{s.run}", accel.kind, overlay, image.kernel, image.initrd, recipe.repo_root(),
                    jobdir, serial, opts.cpus, opts.memory_mb, disk_cache="unsafe")


def run_job(image: Image, opts: BuildOptions, script_for: Callable[[Accel], tuple[str, float]], say: Say,
            collect: Callable[[str, Accel], None] | None = None) -> JobOutcome:
    """Boot the image with a job: `script_for(accel)` gives the script and its deadline in seconds;
    `collect(jobdir, accel)` runs before the session's files go."""
    with Session("job", say) as s:
        accel = choose_accel(s, opts.accel, image.kernel)
        jobdir = s.path("job")
        os.makedirs(jobdir)
        script, deadline = script_for(accel)
        with open(os.path.join(jobdir, "job.sh"), "w", encoding="utf-8") as fh:
            fh.write(script)
        cfg = _config(s, image, opts, accel, jobdir, s.path("serial.log"))
        say(f"vm: booting ({accel.label}, {opts.cpus} CPUs, {opts.memory_mb} MiB); the guest's console follows")
        res = boot(s.spawn, qemu_argv(cfg), cfg.serial, deadline, say)
        rc = read_rc(jobdir)
        if res.returncode not in (0, None) or rc is None:
            say(f"vm: qemu exit {res.returncode}" + (f": {res.stderr.strip().splitlines()[-1]}" if res.stderr.strip() else ""))
        if collect:
            for name in ("serial.log",):
                shutil.copyfile(s.path(name), os.path.join(jobdir, name))
            collect(jobdir, accel)
        return JobOutcome(accel, res, rc)


def boot_login(image: Image, opts: BuildOptions, say: Say) -> int:
    """Boot the image with a root login on this terminal (the serial console); Ctrl-a x quits."""
    with Session("boot", say) as s:
        accel = choose_accel(s, opts.accel, image.kernel)
        cfg = _config(s, image, opts, accel, None, "stdio")
        say(f"vm: booting ({accel.label}); root logs in on this console; the checkout is at {recipe.SHARE_DIR} "
            f"(read-only) and the image's copy at {recipe.GUEST_CHECKOUT}; Ctrl-a x ends qemu")
        proc = s.spawn(qemu_argv(cfg), stdin=None)
        return proc.wait()


def command_script(argv: list[str]) -> str:
    """A job that runs one command in the guest's copy of the checkout, brought up to date first."""
    sync = suite.steps("tcg")[0]
    return (f"#!/bin/bash\nset -u\n{' '.join(map(shlex.quote, sync.argv))} || exit 1\ncd {recipe.GUEST_CHECKOUT}\n"
            f"bash scripts/install.sh || exit 1\n{' '.join(map(shlex.quote, argv))}\n")


def copy_results(jobdir: str, out: str) -> None:
    """The job's outputs (steps.tsv, job.log, serial.log, JUnit XML, perf.json) into `out`
    (files of the same name replaced, nothing else there removed)."""
    shutil.copytree(jobdir, out, ignore=shutil.ignore_patterns("job.sh"), dirs_exist_ok=True)
