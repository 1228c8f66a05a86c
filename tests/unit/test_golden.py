"""Every `kubevpc plan --json` and `kubevpc flows` output, and the plans of runtime changes, are
byte-identical to the recorded golden files (tests/unit/golden.py says how to regenerate them)."""
from __future__ import annotations

import difflib

import pytest

from tests.unit import golden

OUTPUTS = golden.outputs()


def test_every_golden_file_is_still_produced():
    recorded = {p.name[:-3] for p in golden.GOLDEN.glob("*.gz")}
    assert recorded == set(OUTPUTS), "scenarios were added or removed: regenerate the golden files"
    assert len(recorded) >= 100


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_output_is_byte_identical(name):
    want, got = golden.read(name), OUTPUTS[name]
    if want != got:
        diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "golden", "now", lineterm="", n=2)
        pytest.fail(f"{name} changed:\n" + "\n".join(list(diff)[:60]))


def test_no_flow_sets_a_field_with_a_mask():
    """OpenFlow 1.3's set_field takes no mask: Open vSwitch refuses such a flow (OFPBAC_BAD_SET_MASK),
    which a /32 route destination once produced in an ARP responder."""
    flows = {name: text for name, text in OUTPUTS.items() if name.endswith(".flows")}
    assert len(flows) >= 40
    masked = [(name, line) for name, text in flows.items() for line in text.splitlines()
              if "set_field:" in line and any("/" in a.split("->")[0] for a in line.split("set_field:")[1:])]
    assert masked == [], masked[:3]
