"""A Lab that builds nothing, for the supervisor of `kubevpc up` (kubevpc/cli/supervise.py) run as
a real background process in the unit tests: it plans the scenario as the Lab does, and its up()
only makes the run's directory (the owner file names the supervisor), records a file and starts
one process with the run's name on its command line, as a build records what it makes; down()
removes them. The fake sits at the boundary to the machine: no namespace, bridge or link.

KUBEVPC_FAKE_LAB chooses how it behaves: "ok" (default), "fail" (up fails once the directory
exists), "slow" (up takes a minute), "stuck" (down never ends)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from kubevpc.errors import BuildError
from kubevpc.lab import Lab
from kubevpc.ledger import Ledger, stop_processes

# `python -c WRAPPER kubevpc.cli.supervise ARGS...`: the supervisor's main with this Lab; its
# command line still names the module, as `kubevpc down` requires
WRAPPER = ("import sys; from kubevpc.cli import supervise; from tests.unit.fakelab import FakeLab; "
           "supervise.Lab = FakeLab; sys.exit(supervise.main(sys.argv[2:]))")


def with_fake_lab(argv: list[str]) -> list[str]:
    """The supervisor's command line (`python -m kubevpc.cli.supervise ...`) run with FakeLab."""
    python, dash_m, module, *rest = argv
    assert dash_m == "-m"
    return [python, "-c", WRAPPER, module, *rest]


@dataclass
class Datapath:
    kind: str = "netdev"


@dataclass
class FakeNet:
    ledger: Ledger
    datapath: Datapath = field(default_factory=Datapath)
    timings: dict = field(default_factory=lambda: {"namespaces": 0.1})
    supervisor = None

    def controller_status(self) -> dict:
        return {}


class FakeLab(Lab):
    def up(self) -> "FakeLab":
        how = os.environ.get("KUBEVPC_FAKE_LAB", "ok")
        ledger = Ledger(self.run)
        ledger.create()
        self.net = FakeNet(ledger)
        self.say("creating 0 namespaces (a fake lab)")
        ledger.record("file", os.path.join(ledger.dir, "made"))
        open(os.path.join(ledger.dir, "made"), "w").close()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", self.run],
                                 stdin=subprocess.DEVNULL)
        ledger.record("process", child.pid, token=self.run)
        try:
            if how == "fail":
                raise BuildError("the fake lab failed as asked")
            if how == "slow":
                time.sleep(60)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> dict[str, int]:
        if self.net is None:
            return {}
        if os.environ.get("KUBEVPC_FAKE_LAB") == "stuck":
            time.sleep(300)
        entries = self.net.ledger.entries()
        stop_processes([e for e in entries if e.kind == "process"])
        shutil.rmtree(self.net.ledger.dir, ignore_errors=True)
        self.net = None
        return {"process": 1, "file": 1}
