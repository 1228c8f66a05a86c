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
