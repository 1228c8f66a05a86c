"""Property tests of the scenario loader: whatever a file holds, `load` and `make_plan` give a plan
or a ScenarioError, never another exception, and within a time and memory bound.

Three kinds of input: arbitrary bytes; the default scenario with one value somewhere replaced by
an arbitrary YAML value; and YAML text built from anchors, aliases, tags, flow collections and
odd scalars. The budget is small so that the unit suite stays fast, and the examples are the
same on every run; KUBEVPC_FUZZ_EXAMPLES=N runs N examples of each instead, and
KUBEVPC_FUZZ_RANDOM=1 draws new ones.
"""
from __future__ import annotations

import copy
import os
import time
import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevpc.errors import KubevpcError, ScenarioError
from kubevpc.scenario.load import load
from kubevpc.planning import make_plan

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "scenarios", "default.yaml")
EXAMPLES = int(os.environ.get("KUBEVPC_FUZZ_EXAMPLES", "60"))
SECONDS = 5.0                   # for one input, load and plan included
PEAK_BYTES = 200 << 20          # Python allocations while one input is loaded and planned

fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("KUBEVPC_FUZZ_RANDOM") != "1", database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

with open(DEFAULT, encoding="utf-8") as fh:
    BASE = yaml.safe_load(fh)


def outcome(tmp_path, data: bytes) -> str:
    """Load and plan one file; only a plan or a ScenarioError may come out (KubevpcError is how
    the planner reports a scenario it cannot build, with the same exit code), in bounded time
    and memory."""
    path = tmp_path / "scenario.yaml"
    path.write_bytes(data)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        make_plan(load(str(path)), "kvfz")
        result = "plan"
    except ScenarioError as exc:
        assert exc.problems, "a ScenarioError names at least one problem"
        result = "refused"
    except KubevpcError:
        result = "refused"
    finally:
        took = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert took < SECONDS, f"took {took:.1f} s for {data[:200]!r}"
    assert peak < PEAK_BYTES, f"used {peak >> 20} MiB for {data[:200]!r}"
    return result


@fuzz
@given(st.binary(max_size=2000))
def test_any_bytes(tmp_path_factory, data):
    outcome(tmp_path_factory.mktemp("b"), data)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=40), st.sampled_from(["", "0", "no", "10.0.0.0/8", "999.1.1.1/33", "TCP",
                                                           "udp", "-1/-1", "30000-32767", "a" * 300, "\x00"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def paths(data, prefix=()):
    """Every path into a nested document."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, prefix + (i,))


PATHS = [p for p in paths(BASE) if p]


@fuzz
@given(st.sampled_from(PATHS), values, st.booleans())
def test_the_default_scenario_with_one_value_replaced(tmp_path_factory, path, value, delete):
    data = copy.deepcopy(BASE)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    outcome(tmp_path_factory.mktemp("m"), yaml.safe_dump(data, allow_unicode=True).encode())


pieces = st.sampled_from([
    "a: &a [1, 2, 3]\n", "b: [*a, *a, *a]\n", "c: *a\n", "d: *undefined\n", "e: &e {x: *e}\n",
    "f: !!python/object:os.system {}\n", "g: !!binary aGVsbG8=\n", "h: 2024-01-01\n", "? [1, 2]\n: x\n",
    "i: [[[[[[[[]]]]]]]]\n", "cloud: {vpcs: [{name: v, cidr: 10.0.0.0/16, vswitches: [{name: s, cidr: 10.0.1.0/24}]}]}\n",
    "manifests: [{file: /etc/passwd}]\n", "manifests: [{file: ../x.yaml}]\n", "manifests: [5, null, []]\n",
    "name: x\n", "name: &n x\nother: *n\n", "---\n", "...\n", "%YAML 1.1\n---\n", "<<: {a: 1}\n",
    "j: !custom x\n", "k: 'unterminated\n", "\t\n", "l: 0x1F\n", "m: .inf\n", "n: ~\n", "\ufeff", "o: |\n  text\n",
])


@fuzz
@given(st.lists(pieces, min_size=1, max_size=8))
def test_yaml_constructs(tmp_path_factory, parts):
    outcome(tmp_path_factory.mktemp("y"), "".join(parts).encode())


@pytest.mark.parametrize("text", [
    "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                                            for p, c in zip("abcdefgh", "bcdefghi")),
    "a: " + "[" * 100000 + "]" * 100000 + "\n",
    "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",
])
def test_known_bombs_are_refused_quickly(tmp_path, text):
    assert outcome(tmp_path, text.encode()) == "refused"
