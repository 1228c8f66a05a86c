"""Fixtures shared by the unit tests."""
from __future__ import annotations

import shutil
import tempfile

import pytest

from kubevpc import rundir


@pytest.fixture
def state(monkeypatch):
    """A state directory of our own (short, so socket paths fit in 107 bytes)."""
    root = tempfile.mkdtemp(prefix="kvc", dir="/tmp")
    monkeypatch.setattr(rundir, "STATE_ROOT", root)
    yield root
    shutil.rmtree(root, ignore_errors=True)
