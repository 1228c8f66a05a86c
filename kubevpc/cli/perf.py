"""`kubevpc perf`: its arguments, and the command that runs the benchmark (kubevpc/bench/perf.py)
and writes and prints its report."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal

import yaml

from ..bench.perf import MODES, Settings, perf_scenario, preflight
from ..bench.perf_measure import run
from ..bench.perf_report import chart, failures, summary_lines, table, verdict_table
from ..scenario.load import load
from .common import EXIT_CHECKS, EXIT_OK, EXIT_USAGE, console, out, say


def add_perf(sub) -> None:
    """The arguments of `kubevpc perf`."""
    p = sub.add_parser("perf", help="benchmark: iperf3, ping and connect times of every path and mode vs a raw veth")
    p.description = ("Measure throughput (iperf3 TCP, and UDP at a set rate with loss and jitter), ping RTT "
                     "and TCP connect time on the paths that matter, in each pod network mode, next to a raw "
                     "veth pair, a Linux bridge and one Open vSwitch bridge measured in the same run. Needs "
                     "root, Open vSwitch and iperf3. A benchmark: figures on a shared or small machine are noisy; "
                     "compare medians, and look at the spread.")
    p.epilog = ("examples:\n"
                "  kubevpc perf --quick                       about a minute: vpc-route, 1 run of 1 s\n"
                "  kubevpc perf                               every mode, 3 runs of 3 s (several minutes)\n"
                "  kubevpc perf scenarios/default.yaml --modes vxlan,eni --repeat 5\n"
                "Results go to --out: perf.json, perf.png and the scenario used.")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="scenario to measure (default: the built-in one, which has every path; a scenario "
                        "needs a Service with one ready endpoint and a target port no container declares for "
                        "the Service paths)")
    p.add_argument("--modes", type=parse_modes, metavar="M[,M...]",
                   help=f"comma-separated modes (default: {','.join(MODES)})")
    p.add_argument("--repeat", type=positive_int, metavar="N", help="iperf3 runs per path and protocol (default 3)")
    p.add_argument("--seconds", type=positive_int, metavar="S",
                   help="length of each iperf3 run, whole seconds (default 3)")
    p.add_argument("--udp-rate", type=parse_rate, default="500M", metavar="RATE",
                   help="UDP sending rate, iperf3 -b syntax (default 500M)")
    p.add_argument("--no-udp", action="store_true", help="TCP only")
    p.add_argument("--quick", action="store_true",
                   help="one run of 1 s, mode vpc-route (unless --modes, --repeat or --seconds say otherwise)")
    p.add_argument("--datapath", choices=("netdev", "system"),
                   help="Open vSwitch datapath (default: kernel if the openvswitch module is loaded, else userspace)")
    p.add_argument("--out", default="perf-results", metavar="DIR",
                   help="directory for perf.json, perf.png and the scenario (default ./perf-results)")
    p.add_argument("--no-chart", action="store_true", help="do not draw perf.png")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout instead of the table")


def settings_from(args) -> Settings:
    quick = args.quick
    return Settings(repeat=args.repeat or (1 if quick else 3), seconds=args.seconds or (1 if quick else 3),
                    udp_rate=args.udp_rate, udp=not args.no_udp, pings=10 if quick else 20,
                    connects=10 if quick else 20,
                    modes=args.modes or (["vpc-route"] if quick else list(MODES)), datapath=args.datapath)


def parse_rate(text: str) -> str:
    """An iperf3 bitrate: a number with an optional K, M or G (argparse type)."""
    if not re.fullmatch(r"\d+(\.\d+)?[KMG]?", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a bitrate such as 500M, 1G or 200000")
    return text.strip()


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list of {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def cmd_perf(args) -> int:
    """`kubevpc perf`: exit 0 when every path that the scenario has was measured, 1 when one failed."""
    settings = settings_from(args)
    if args.file is not None and not os.path.isfile(args.file):
        console.print(f"[red]error:[/red] no such scenario file: {args.file}")
        return EXIT_USAGE
    preflight()
    os.makedirs(args.out, exist_ok=True)
    file = args.file
    if file is None:
        file = os.path.join(args.out, "scenario.yaml")
        with open(file, "w", encoding="utf-8") as fh:
            fh.write("# the built-in scenario of `kubevpc perf` (kubevpc/bench/perf.py, perf_scenario)\n")
            yaml.safe_dump(perf_scenario(), fh, sort_keys=False)
    for mode in settings.modes:
        load(file, mode)            # a bad scenario stops here, before anything is built
    # SIGTERM ends the run like Ctrl-C, so that labs and references are taken down
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    say(f"kubevpc perf: {file}, modes {', '.join(settings.modes)}, {settings.repeat} x {settings.seconds} s")
    report = run(file, settings, say)
    with open(os.path.join(args.out, "perf.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    if not args.no_chart:
        try:
            chart(report, os.path.join(args.out, "perf.png"))
        except ImportError:
            say("no chart: matplotlib is missing (pip install -e '.[perf]', or `make install`)")
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        out.print(table(report))
        for line in summary_lines(report):
            out.print(line)
        out.print(verdict_table(report))
    say(f"results in {args.out}/: perf.json" + ("" if args.no_chart else ", perf.png"))
    bad = failures(report)
    for line in bad:
        say(f"[red]not measured[/red]: {line}")
    return EXIT_CHECKS if bad else EXIT_OK


COMMANDS = {"perf": (add_perf, cmd_perf)}
