"""`python -m kubevpc.vm build|probe|boot|run|test|clean` (`make vm`, `make vm-test`, `make vm-clean`)."""
from __future__ import annotations

import argparse
import json
import os
import signal

from ..bench.perf_report import summary_lines
from ..errors import KubevpcError
from . import suite
from .image import CACHE_DIR, BuildOptions, build, current_image, ensure_host_tools
from .qemu import decide, device_usable, run_probe
from .runner import boot_login, command_script, copy_results, run_job
from .session import Session, StepFailed, clean

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(line: str) -> None:
    print(line, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubevpc.vm", description=(
        "A Debian 12 VM kubevpc builds for itself (debootstrap from the Debian registry apt uses, provisioned by "
        "scripts/install.sh), booted with qemu on KVM when a test boot shows it works and on TCG otherwise, to run "
        "kubevpc on Open vSwitch's kernel datapath. Needs root."),
        epilog="`make vm` = build, `make vm-test` = test, `make vm-clean` = clean.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build the image unless the cache has the current recipe's"),
                       ("probe", "say whether a boot would use KVM or TCG, and why"),
                       ("boot", "boot the image with a root login on this terminal (Ctrl-a x quits)"),
                       ("run", "run a command in the VM's copy of the checkout, e.g. run -- make scenario MODE=eni"),
                       ("test", "boot the VM and run make scenario x3, the e2e subset and kubevpc perf inside"),
                       ("clean", "remove what crashed VM sessions left")):
        sp = sub.add_parser(name, help=text, description=text)
        if name in ("build", "probe", "boot", "run", "test"):
            sp.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("KUBEVPC_VM_ACCEL", "auto"),
                            help="auto (default): KVM when a test boot on it works, else TCG")
        if name in ("build", "boot", "run", "test"):
            sp.add_argument("--cpus", type=int, default=2, help="the guest's CPUs (default 2)")
            sp.add_argument("--memory", type=int, default=4096, metavar="MIB", help="the guest's memory (default 4096)")
        if name == "build":
            sp.add_argument("--mirror", default="", metavar="URI",
                            help="the Debian registry to debootstrap from (default: apt's own bookworm entry)")
            sp.add_argument("--rebuild", action="store_true", help="build even when the cache has the image")
        if name == "run":
            sp.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
        if name == "test":
            sp.add_argument("--steps", default="", metavar="NAME[,NAME]",
                            help="only these steps (and the required ones): e.g. scenario,e2e-services,perf")
            sp.add_argument("--list", action="store_true", help="list the steps, why each, and the time estimate")
            sp.add_argument("--out", default="vm-results", metavar="DIR",
                            help="where the job's logs, JUnit XML and perf.json go (default ./vm-results)")
        if name == "clean":
            sp.add_argument("--images", action="store_true", help="remove the cached images too")
    return p


def options(args) -> BuildOptions:
    return BuildOptions(mirror=getattr(args, "mirror", ""), accel=args.accel, cpus=getattr(args, "cpus", 2),
                        memory_mb=getattr(args, "memory", 4096), rebuild=getattr(args, "rebuild", False),
                        cache_dir=CACHE_DIR)


def cmd_build(args) -> int:
    build(options(args), say)
    return EXIT_OK


def cmd_probe(args) -> int:
    """Which accelerator a boot would use: needs the image's kernel for the test boot."""
    image = current_image()
    problem = device_usable() if args.accel == "auto" else ""
    if args.accel != "auto" or problem:
        accel = decide(args.accel, problem, None)
    elif not os.path.isfile(image.kernel):
        say(f"vm: no image yet ({image.kernel}): `make vm` first; the probe boots the guest's kernel")
        return EXIT_FAIL
    else:
        ensure_host_tools(say)
        with Session("probe", say) as s:
            accel = decide("auto", "", run_probe(s.spawn, f"kubevpc-vm-{s.run}-probe", image.kernel,
                                                 s.path("kvm-probe.serial")))
    say(f"vm: {accel.kind.upper()}: {accel.reason}")
    return EXIT_OK


def cmd_boot(args) -> int:
    opts = options(args)
    return boot_login(build(opts, say), opts, say)


def cmd_run(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        say("vm: run: expected a command, e.g. python -m kubevpc.vm run -- make scenario MODE=eni DATAPATH=system")
        return EXIT_USAGE
    opts = options(args)
    out = run_job(build(opts, say), opts, lambda accel: (command_script(argv), 6 * 3600), say)
    say(f"vm: the command exited {out.rc}" if out.rc is not None else "vm: the guest wrote no exit status")
    return out.rc if out.rc is not None else EXIT_FAIL


def cmd_test(args) -> int:
    names = [n.strip() for n in args.steps.split(",") if n.strip()]
    if args.list:
        for accel in ("tcg", "kvm"):
            chosen = suite.select(suite.steps(accel), names) if names else suite.steps(accel)
            say(f"{accel.upper()}: {len(chosen)} steps, about {suite.estimate_min(chosen, accel):.0f} min")
        for s in (suite.select(suite.steps("tcg"), names) if names else suite.steps("tcg")):
            say(f"  {s.name:<18} ~{s.tcg_min:>4} min (TCG)  {s.why}")
        return EXIT_OK
    opts = options(args)
    image = build(opts, say)
    state = {}

    def script_for(accel):
        chosen = suite.select(suite.steps(accel.kind), names) if names else suite.steps(accel.kind)
        state["chosen"] = chosen
        est = suite.estimate_min(chosen, accel.kind)
        say(f"vm: {len(chosen)} steps, about {est:.0f} min under {accel.kind.upper()} (an estimate)")
        # each step ends by its own limit in the guest; the deadline adds the boot's and power-off's time
        return suite.job_script(chosen, accel=accel.kind), sum(s.limit_s for s in chosen) + 1200

    def collect(jobdir, accel):
        state["results"] = suite.read_steps(jobdir, state["chosen"])
        copy_results(jobdir, args.out)

    out = run_job(image, opts, script_for, say, collect)
    lines, ok = suite.summary(state.get("results", []), f"in a {out.accel.label} ({out.accel.reason})", out.rc)
    for line in lines:
        say(line)
    perf_summary(os.path.join(args.out, "out", "perf", "perf.json"), out.accel.kind)
    say(f"vm: logs, JUnit XML and perf.json in {args.out}/ (job.log: the whole guest's output)")
    return EXIT_OK if ok else EXIT_FAIL


def perf_summary(path: str, accel: str) -> None:
    """The perf report's own summary lines, under the label that says where they were measured."""
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return
    say(f"perf ({suite.perf_label(accel)}):")
    for line in summary_lines(report):
        say("  " + line)


def cmd_clean(args) -> int:
    n = clean(CACHE_DIR, say)
    if args.images and os.path.isdir(CACHE_DIR):
        for f in sorted(os.listdir(CACHE_DIR)):
            if f.startswith("debian12-") and ".part-" not in f:
                os.unlink(os.path.join(CACHE_DIR, f))
                say(f"vm: removed {os.path.join(CACHE_DIR, f)}")
                n += 1
    if not n:
        say("vm: nothing to clean")
    return EXIT_OK


COMMANDS = {"build": cmd_build, "probe": cmd_probe, "boot": cmd_boot, "run": cmd_run, "test": cmd_test,
            "clean": cmd_clean}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0 and not (args.command == "test" and args.list):
        say("vm: needs root (debootstrap, chroot, qemu with 9p shares as root): sudo make vm")
        return EXIT_USAGE
    # SIGTERM ends a session like Ctrl-C: its processes are stopped and its files removed
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return COMMANDS[args.command](args)
    except StepFailed as exc:
        say(f"vm: error: {exc}")
        if exc.output:
            say(exc.output)
        return EXIT_FAIL
    except (KubevpcError, ValueError) as exc:
        say(f"vm: error: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        say(f"vm: error: {exc}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        say("vm: interrupted; the session's processes and files are removed")
        return EXIT_INTERRUPTED
