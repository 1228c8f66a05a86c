"""The verdict table every benchmark ends with (kubevpc/bench/verdicts.py): figures in, met / not
met out."""
import json

import pytest
from rich.console import Console

from kubevpc.bench import verdicts
from kubevpc.bench.verdicts import AT_LEAST, AT_MOST, from_dict, judge


def test_at_most_and_at_least_limits_are_inclusive():
    assert judge("p99 <= 100 ms", 0.1, 0.1).met
    assert not judge("p99 <= 100 ms", 0.1001, 0.1).met
    assert judge("ratio >= 0.4x", 0.4, 0.4, AT_LEAST).met
    assert not judge("ratio >= 0.4x", 0.399, 0.4, AT_LEAST).met


def test_not_measured_nan_and_a_reason_are_not_met():
    v = judge("x <= 1 s", None, 1.0)
    assert not v.met and v.word == "not met: not measured" and v.shown == "-"
    assert not judge("x <= 1 s", float("nan"), 1.0).met
    bad = judge("matrix <= 10 s", 3.0, 10.0, why_not="12 cells differ from the evaluator")
    assert not bad.met and bad.word == "not met: 12 cells differ from the evaluator"
    with pytest.raises(ValueError):
        judge("x", 1.0, 1.0, "<")


def test_lines_rows_and_json_round_trip():
    vs = [judge("vxlan / raw veth >= 0.4x", 0.45, 0.4, AT_LEAST, "0.45x (8.60 Gbit/s)", "raw veth 19.10 Gbit/s"),
          judge("flows p99 <= 100 ms", 0.325, 0.1, AT_MOST, verdicts.ms(0.325))]
    assert verdicts.lines(vs) == [
        "met: vxlan / raw veth >= 0.4x: 0.45x (8.60 Gbit/s); reference raw veth 19.10 Gbit/s",
        "not met: flows p99 <= 100 ms: 325 ms"]
    assert verdicts.rows(vs)[1] == ["flows p99 <= 100 ms", "325 ms", "-", "not met"]
    again = [from_dict(d) for d in json.loads(json.dumps([v.as_dict() for v in vs]))]
    assert again == vs and vs[0].as_dict()["verdict"] == "met"
    console = Console(record=True, width=160)
    console.print(verdicts.table(vs, "targets"))
    text = console.export_text()
    assert "reference (this run)" in text and "raw veth 19.10 Gbit/s" in text and "not met" in text


def test_percentile():
    assert verdicts.percentile([], 99) is None
    assert verdicts.percentile([0.2], 99) == 0.2
    vals = [i / 100 for i in range(1, 101)]                 # 0.01 .. 1.00
    assert verdicts.percentile(vals, 50) == pytest.approx(0.505)
    assert verdicts.percentile(vals, 99) == pytest.approx(0.9901)
    assert verdicts.percentile([0.1, 0.3], 99) == pytest.approx(0.298)      # between the two highest
