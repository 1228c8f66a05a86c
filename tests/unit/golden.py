"""Golden outputs of `kubevpc plan -o json` and `kubevpc flows` for every scenario file under
scenarios/ (subdirectories too) and tests/, in every mode, plus plans of changes made while a
scenario runs (readiness, labels, a previous plan). A refactor must leave every one byte-identical
(tests/unit/test_golden.py).

Regenerate only for a change that is meant to change behaviour, and say so in the commit:

    .venv/bin/python -m tests.unit.golden --update
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "unit" / "golden"
MODES = ("vxlan", "vpc-route", "eni")


def scenario_files() -> list[Path]:
    files = sorted((REPO / "scenarios").rglob("*.yaml"))      # scenarios/terraform/imported.yaml too
    files += sorted(p for p in (REPO / "tests").rglob("*.yaml") if "golden" not in p.parts)
    return files


def _cli(argv: list[str]) -> str:
    """What the command prints (stdout, then stderr) and its exit code, as a user sees them."""
    from kubevpc.cli import main
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return f"{stdout.getvalue()}{stderr.getvalue()}# exit {code}\n"


def _changes(path: Path, mode: str) -> str:
    """Plans of a running scenario after changes: the first pod not ready, its labels changed, and
    a replan against the previous plan (the path Lab._update takes)."""
    from kubevpc.scenario.load import load
    from kubevpc.planning import make_plan
    from controller.compile import compile_plan
    loaded = load(str(path), mode=mode)
    base = make_plan(loaded, "kvxxxx")
    if not base.pods:
        return ""
    first = base.pods[0].key
    changed = make_plan(loaded, "kvxxxx", ready={first: False}, labels={first: {"golden": "yes", "app": None}},
                        previous=base)
    out = [changed.model_dump_json(indent=1)]
    for name, fs in compile_plan(changed).items():
        out.append(f"# bridge {name}")
        out.extend(fs.groups_ofctl())
        out.extend(fs.ofctl())
    return "\n".join(out) + "\n"


def outputs() -> dict[str, str]:
    """Every golden output by file name."""
    result: dict[str, str] = {}
    for path in scenario_files():
        rel = path.relative_to(REPO)
        stem = str(rel.with_suffix("")).replace("/", "__")
        for mode in MODES:
            result[f"{stem}.{mode}.plan"] = _cli(["plan", "-o", "json", str(rel), "--mode", mode])
            result[f"{stem}.{mode}.flows"] = _cli(["flows", str(rel), "--mode", mode])
            if "# exit 0" in result[f"{stem}.{mode}.plan"] and path.parent.name in ("scenarios", "data"):
                try:
                    changes = _changes(rel, mode)
                except Exception as exc:    # noqa: BLE001 - an error is an output like any other
                    changes = f"{type(exc).__name__}: {exc}\n"
                if changes:
                    result[f"{stem}.{mode}.changes"] = changes
    return result


def read(name: str) -> str:
    with gzip.open(GOLDEN / f"{name}.gz", "rt", encoding="utf-8") as f:
        return f.read()


def write_all() -> int:
    GOLDEN.mkdir(exist_ok=True)
    found = outputs()
    for old in GOLDEN.glob("*.gz"):
        if old.name[:-3] not in found:
            old.unlink()
    for name, text in found.items():
        # mtime 0 and no file name: the same text gives the same bytes
        with open(GOLDEN / f"{name}.gz", "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(text.encode())
    return len(found)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", action="store_true", help="rewrite tests/unit/golden from the current code")
    if not ap.parse_args().update:
        ap.print_help()
        sys.exit(2)
    import os
    os.chdir(REPO)
    print(f"wrote {write_all()} golden files to {GOLDEN.relative_to(REPO)}")
