"""Print the structure measures of issue 17 for the project's own code (kubevpc, controller,
topologies), with the bar each must meet:

- functions over 60 lines (a function marked `# declarative table` on its def line is exempt);
- modules over 600 lines;
- import cycles between modules, counting imports inside functions too (a cycle hidden by a
  function-local import is still a cycle);
- imports against the declared layers (LAYERS below: dependencies point one way);
- imports inside functions that break a cycle (the imported module reaches the importer);
- other imports inside functions (allowed only for optional heavy dependencies);
- atomic-write helpers (functions that call os.replace, unless marked as a log rotation) and daemon entry points (modules with an
  argparse parser under `if __name__ == "__main__"`).

    .venv/bin/python scripts/structure.py [--strict]

With --strict it exits 1 when a bar is not met (for a unit test once the restructure is done).
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kubevpc", "controller", "topologies")
MAX_FUNCTION, MAX_MODULE = 60, 600
EXEMPT = "# declarative table"
NOT_ATOMIC = "# not an atomic write"     # marks a function whose os.replace rotates a log

# The layers, lowest first: a module may import from its own layer and those below, never above.
# Each entry is a module or a package (every module under it). docs/design.md draws them.
LAYERS = (
    ("scenario model", ("kubevpc.errors", "kubevpc.runname", "kubevpc.scenario", "kubevpc.k8s", "kubevpc.load", "kubevpc.model")),
    # renderers read plan objects without importing the Plan's types; the planner reads an SLB's
    # ACK annotations with render.slb, whose check settings the Plan carries
    ("renderers", ("kubevpc.render",)),
    ("planning", ("kubevpc.planning", "kubevpc.plan")),
    # importers write scenarios from other tools' descriptions and validate them with the planner
    ("importers", ("kubevpc.importers",)),
    ("compilers and evaluator", ("controller.flows", "controller.pipeline", "controller.compile", "controller.reconcile",
                                 "controller.ofmsg", "controller.vrouter", "controller.vswitch", "controller.slb",
                                 "controller.secgroup", "controller.flowlog", "controller.edge", "controller.internet",
                                 "controller.node", "controller.podroute", "controller.services", "controller.policy",
                                 "controller.resolver", "controller.ipv6", "controller.node6", "controller.csumhop",
                                 "kubevpc.evaluator")),
    ("the machine: namespaces, Open vSwitch, processes, sockets, files",
     ("kubevpc.rundir", "kubevpc.ledger", "kubevpc.probe", "kubevpc.probeloop", "kubevpc.daemons", "kubevpc.observe", "topologies",
      "controller.app", "controller.__main__", "controller", "kubevpc.control")),
    ("Lab API", ("kubevpc.lab", "kubevpc.testing", "kubevpc.pytest_plugin")),
    ("CLI and benchmarks", ("kubevpc.cli", "kubevpc.bench", "kubevpc.vm", "kubevpc")),
)


def layer_of(module: str) -> int:
    """The layer of a module: the one naming it, or the nearest package above it."""
    best, depth = -1, -1
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if (module == m or module.startswith(m + ".")) and len(m) > depth:
                best, depth = i, len(m)
    if best < 0:
        raise SystemExit(f"scripts/structure.py: module {module} is in no layer; add it to LAYERS")
    return best


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, level: int, importer: str, is_package: bool) -> str:
    if not level:
        return name
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class Imports(ast.NodeVisitor):
    """Imports of project modules, each marked as module-level or inside a function."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.module, self.is_package, self.known = module, is_package, known
        self.depth = 0
        self.found: list[tuple[str, bool, int]] = []     # (target, inside a function, line)
        self.other_local: list[tuple[str, int]] = []     # third-party imports inside functions
        self.type_checking = 0

    def _target(self, name: str) -> str | None:
        while name:
            if name in self.known:
                return name
            name = name.rpartition(".")[0]
        return None

    def _add(self, names: list[str], line: int) -> None:
        if self.type_checking:
            return
        for name in names:
            target = self._target(name)
            if target and target != self.module:
                self.found.append((target, self.depth > 0, line))
            elif target is None and self.depth > 0 and name.split(".")[0] not in sys.stdlib_module_names:
                self.other_local.append((name, line))

    def visit_Import(self, node: ast.Import) -> None:
        self._add([a.name for a in node.names], node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(node.module or "", node.level, self.module, self.is_package)
        self._add([f"{base}.{a.name}" for a in node.names] or [base], node.lineno)

    def visit_If(self, node: ast.If) -> None:
        guarded = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or \
            isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"
        self.type_checking += guarded
        for child in node.body:
            self.visit(child)
        self.type_checking -= guarded
        for child in node.orelse:
            self.visit(child)

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function


def long_functions(tree: ast.AST, lines: list[str]) -> list[tuple[str, int, int]]:
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = child.end_lineno - child.lineno + 1
                if n > MAX_FUNCTION and EXEMPT not in lines[child.lineno - 1]:
                    out.append((prefix + child.name, child.lineno, n))
                walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)
    walk(tree, "")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v not in seen:
            seen.add(v)
            todo.extend(graph.get(v, ()))
    return False


def measure() -> dict:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = defaultdict(set)
    local: list[tuple[str, str, int]] = []
    other_local: list[tuple[str, str, int]] = []
    long_fns, big_mods, writers, daemons = [], [], [], []
    for name, path in mods.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        v = Imports(name, path.name == "__init__.py", known)
        v.visit(tree)
        for target, inside, line in v.found:
            graph[name].add(target)
            if inside:
                local.append((name, target, line))
        other_local += [(name, n, line) for n, line in v.other_local]
        rel = str(path.relative_to(REPO))
        long_fns += [(f"{rel}:{line} {fn}", n) for fn, line, n in long_functions(tree, lines)]
        if len(lines) > MAX_MODULE:
            big_mods.append((rel, len(lines)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "replace"
                    and isinstance(c.func.value, ast.Name) and c.func.value.id == "os" for c in ast.walk(node)) \
                    and NOT_ATOMIC not in lines[node.lineno - 1]:
                writers.append(f"{rel}:{node.lineno} {node.name}")
        if '__name__ == "__main__"' in text and "ArgumentParser(" in text:
            daemons.append(rel)
    upward = sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    breakers = sorted({(a, b, line) for a, b, line in local if reaches(graph, b, a)})
    return {"long_functions": sorted(long_fns, key=lambda x: -x[1]), "big_modules": sorted(big_mods, key=lambda x: -x[1]),
            "cycles": cycles(graph), "upward": upward, "layers": {m: layer_of(m) for m in mods}, "cycle_breaking_imports": breakers,
            "local_project_imports": local, "local_other_imports": other_local, "atomic_writers": writers,
            "daemon_entry_points": daemons}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a bar is not met")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every item, not only the counts")
    args = ap.parse_args()
    m = measure()
    rows = [
        (f"functions over {MAX_FUNCTION} lines", len(m["long_functions"]), 0),
        (f"modules over {MAX_MODULE} lines", len(m["big_modules"]), 0),
        ("import cycles between modules", len(m["cycles"]), 0),
        ("imports of a higher layer (scripts/structure.py LAYERS)", len(m["upward"]), 0),
        ("imports inside functions that break a cycle", len(m["cycle_breaking_imports"]), 0),
        ("atomic-write helpers (functions calling os.replace)", len(m["atomic_writers"]), 1),
    ]
    failed = False
    for label, value, bar in rows:
        ok = value <= bar
        failed |= not ok
        print(f"{'ok ' if ok else 'NO '} {label}: {value} (bar {bar})")
    print(f"    project imports inside functions: {len(m['local_project_imports'])}; "
          f"other imports inside functions: {len(m['local_other_imports'])}; "
          f"daemon entry points: {len(m['daemon_entry_points'])}")
    if args.verbose:
        for fn, n in m["long_functions"]:
            print(f"  function {n:4d} lines  {fn}")
        for mod, n in m["big_modules"]:
            print(f"  module   {n:4d} lines  {mod}")
        for c in m["cycles"]:
            print(f"  cycle    {' <-> '.join(c)}")
        for a, b in m["upward"]:
            print(f"  upward   {a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})")
        for a, b, line in m["cycle_breaking_imports"]:
            print(f"  breaker  {a}:{line} imports {b}")
        for w in m["atomic_writers"]:
            print(f"  writer   {w}")
        for d in m["daemon_entry_points"]:
            print(f"  entry    {d}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
