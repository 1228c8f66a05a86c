"""bench-matrix's measurement on a real network, small: its generated scenario with 6 pods gives a
matrix with no cell differing from the evaluator, the quarter refused by its NetworkPolicy (a to
b) included, in each pod network mode."""
from __future__ import annotations


import pytest

from kubevpc.bench import matrix

from .conftest import MODES, lab_of_doc


@pytest.fixture(scope="module", params=MODES)
def lab(request):
    yield from lab_of_doc(matrix.matrix_scenario(6, request.param), request.param, "kubevpc-matrix-")


def test_a_small_matrix_agrees_with_the_evaluator(lab):
    r = matrix.measure_matrix(lab, timeout=0.5)
    assert r["cells"] == 36 and r["pairs"] == 30 and r["differ"] == 0, r["differ_examples"]
    # allowed and refused: a -> b is refused (3 x 3 cells), the rest connects
    assert r["expected_connect"] == 27 and r["connect"] == 27
    assert 0 < r["probe_s"] <= r["total_s"]
    s = matrix.summary([r])
    (v,) = matrix.verdicts(6, s, None)
    assert v.figure == r["total_s"] and v.why_not == ""
