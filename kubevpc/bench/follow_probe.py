"""The stream of probes behind "the datapath follows" (kubevpc/bench/follow.py), run inside the
client's network namespace:

    python -m kubevpc.bench.follow_probe --interval 0.01 --timeout 0.3 --duration 8 \\
        --source-ports 12000:12900 tcp:10.244.1.3:8080

A new connection to the target every --interval seconds, each from the next port of
--source-ports (a new conntrack entry every time, see kubevpc/probe.py) and each with its own
deadline, until --duration ends or the process is terminated. One JSON line a finished probe, as
soon as it finishes: when it started (time.monotonic(): the machine's monotonic clock, the same
in every network namespace, so the caller compares it with its own), its outcome, and the name
the server answered with. The stream does not catch up when it falls behind (a busy machine):
the next probe starts one interval after the late one. Stdlib only, like kubevpc/probe.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Callable, Sequence

from kubevpc.probe import PortRange, Target, parse_port_range, parse_target, probe_one


def sample(start: float, result) -> dict:
    """What the caller reads of one probe."""
    return {"start": start, "ok": result.ok, "outcome": result.outcome,
            "name": (result.answer or {}).get("name")}


async def _one(target: Target, timeout: float, ports: PortRange, write: Callable[[dict], None]) -> None:
    start = time.monotonic()
    write(sample(start, await probe_one(target, timeout, ports)))


async def stream(target: Target, interval: float, timeout: float, duration: float, ports: PortRange,
                 write: Callable[[dict], None]) -> int:
    """Start a probe every `interval` seconds for `duration` seconds; wait for the last ones.
    Returns how many were started."""
    tasks: set[asyncio.Task] = set()
    end = time.monotonic() + duration
    started = 0
    while (now := time.monotonic()) < end:
        task = asyncio.create_task(_one(target, timeout, ports, write))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        started += 1
        await asyncio.sleep(max(0.0, now + interval - time.monotonic()))
    if tasks:
        await asyncio.gather(*tasks)
    return started


def _print(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kubevpc.bench.follow_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between probe starts (default 0.01)")
    p.add_argument("--timeout", type=float, default=0.3, help="each probe's deadline in seconds (default 0.3)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to go on for (default 10)")
    p.add_argument("--source-ports", required=True, metavar="FIRST:LAST", help="the probes' source ports, in order")
    p.add_argument("target", metavar="PROTO:HOST:PORT", help="e.g. tcp:10.244.1.3:8080")
    args = p.parse_args(argv)
    for name in ("interval", "timeout", "duration"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            p.error(f"bad --{name} {value!r}: must be a number > 0")
    try:
        args.target = parse_target(args.target)
        args.source_ports = parse_port_range(args.source_ports)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    asyncio.run(stream(args.target, args.interval, args.timeout, args.duration, args.source_ports, _print))
    return 0


if __name__ == "__main__":
    sys.exit(main())
