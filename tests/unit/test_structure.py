"""The structure issue 17 reached stays reached: scripts/structure.py's measures, and the module map
at the top of docs/design.md names every module there is and none that is gone."""
from __future__ import annotations

import re
import sys

from tests.unit.golden import REPO

sys.path.insert(0, str(REPO / "scripts"))
import structure  # noqa: E402

MEASURES = structure.measure()


def test_no_import_cycle_and_no_import_against_the_layers():
    assert MEASURES["cycles"] == []
    assert MEASURES["upward"] == []
    assert MEASURES["cycle_breaking_imports"] == []


def test_no_function_over_60_lines_and_no_module_over_600():
    assert MEASURES["long_functions"] == []
    assert MEASURES["big_modules"] == []


def test_one_atomic_writer_and_project_imports_at_the_top():
    assert [w.split()[-1] for w in MEASURES["atomic_writers"]] == ["atomic_write"]
    assert MEASURES["local_project_imports"] == []


def test_every_module_is_in_a_layer():
    assert set(MEASURES["layers"]) == set(structure.modules())


def test_the_module_map_names_every_module_once():
    text = (REPO / "docs" / "design.md").read_text()
    section = text[text.index("## Module map"):text.index("## Architecture")]
    mapped = re.findall(r"^- `([\w/]+\.py)`:", section, re.M)
    files = {str(p.relative_to(REPO)) for p in structure.modules().values()}
    assert sorted(mapped) == sorted(set(mapped)), "a module is mapped twice"
    assert set(mapped) == files, f"missing: {sorted(files - set(mapped))}, gone: {sorted(set(mapped) - files)}"


def test_the_measures_can_fail(tmp_path, monkeypatch):
    """Every measure finds what it counts in a fake package: cycles, upward imports, a long function, a
    big module, atomic writers, local imports and the one of them that hides a cycle."""
    pkg = tmp_path / "kubevpc"
    (pkg / "planning").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "planning" / "__init__.py").write_text("from kubevpc import lab\n")
    (pkg / "lab.py").write_text("from kubevpc import planning\n\n\ndef f():\n" + "    x = 1\n" * 61)
    (pkg / "cli.py").write_text("import os\n\nfrom kubevpc import errors\n\n\ndef g():\n    from kubevpc import lab\n    os.replace('a', 'b')\n"
                                "\n\ndef h():\n    os.replace('a', 'b')\n" + "\n" * 600)
    (pkg / "errors.py").write_text("def e():\n    from kubevpc import cli\n")
    monkeypatch.setattr(structure, "REPO", tmp_path)
    monkeypatch.setattr(structure, "PACKAGES", ("kubevpc",))
    m = structure.measure()
    assert sorted(m["cycles"]) == [["kubevpc.cli", "kubevpc.errors"], ["kubevpc.lab", "kubevpc.planning"]]
    assert ("kubevpc.planning", "kubevpc.lab") in m["upward"] and ("kubevpc.errors", "kubevpc.cli") in m["upward"]
    assert [n for _, n in m["long_functions"]] == [62]
    assert [x for x, _ in m["big_modules"]] == ["kubevpc/cli.py"]
    assert [w.split()[-1] for w in m["atomic_writers"]] == ["g", "h"]
    assert {(a, b) for a, b, _ in m["local_project_imports"]} == {("kubevpc.cli", "kubevpc.lab"),
                                                                  ("kubevpc.errors", "kubevpc.cli")}
    assert [(a, b) for a, b, _ in m["cycle_breaking_imports"]] == [("kubevpc.errors", "kubevpc.cli")]
