"""The scenario files the unit tests plan, and their plans, made once per file, mode and run
name (planning is pure; a test must not change a plan it gets)."""
from __future__ import annotations

from pathlib import Path

from kubevpc.scenario.load import load
from kubevpc.planning import Plan, make_plan

REPO = Path(__file__).resolve().parents[2]
E2E_DATA = REPO / "tests" / "e2e" / "data"
DEFAULT = REPO / "scenarios" / "default.yaml"
NETPOL = REPO / "scenarios" / "netpol.yaml"
SERVICES = E2E_DATA / "services.yaml"
INTERNET = E2E_DATA / "internet.yaml"
PODSG = E2E_DATA / "podsg.yaml"
MODES = ("vxlan", "vpc-route", "eni")
_plans: dict[tuple[str, str, str], Plan] = {}


def plan_of(path: Path, mode: str, run: str = "kv") -> Plan:
    key = (str(path), mode, run)
    if key not in _plans:
        _plans[key] = make_plan(load(str(path), mode=mode), run)
    return _plans[key]
