"""Read a scenario file: YAML -> schema -> Kubernetes objects, with errors that say where.

Every error names the file, the line when we know it, the path inside the document, the value
and what was expected. Nothing here touches the machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from . import k8s
from .errors import Problem, ScenarioError
from .model import ManifestFile, Scenario


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each path in a composed YAML document to its 1-based line number."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + (key.value,)] = key.start_mark.line + 1
            _lines(value, path + (key.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (i,), out)
    return out


def dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class Source:
    """One YAML document and where its parts are, so problems can cite lines."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def problem(self, path: tuple, value: object, expected: str) -> Problem:
        line = None
        for cut in range(len(path), -1, -1):       # nearest enclosing node that has a line
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        return Problem(self.file, dotted(path), value, expected, line)


def read_yaml(path: str) -> list[Source]:
    """All documents of a YAML file (manifests may hold several, separated by ---)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ScenarioError([Problem(path, "", path, f"cannot read the file: {exc.strerror}")]) from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        datas = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ScenarioError([Problem(path, "", getattr(exc, "problem", str(exc)),
                                     "expected valid YAML", line)]) from None
    return [Source(path, d, _lines(n) if n is not None else {}) for n, d in zip(nodes, datas)
            if d is not None]


def pydantic_problems(src: Source, exc: ValidationError, prefix: tuple = ()) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in
                                                   ("function-after[_check(), ObjectMeta]",)))
        # pydantic puts union branch names into locations; drop the ones that are not keys
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in (
            "ManifestFile", "dict[str,any]"))))
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            expected = "unknown key; expected one of the documented keys (see docs/scenario.md)"
            value = loc[-1] if loc else value
        elif err["type"] == "missing":
            expected = "required key is missing"
            value = None
        else:
            expected = err["msg"].removeprefix("Value error, ")
        problems.append(src.problem(prefix + loc, value, expected))
    return problems


@dataclass(frozen=True)
class Manifest:
    """A Kubernetes object with where it came from."""

    obj: k8s.K8s
    file: str
    path: str
    source: Source | None = field(default=None, compare=False, repr=False)
    prefix: tuple = ()


@dataclass(frozen=True)
class Loaded:
    file: str
    scenario: Scenario
    manifests: tuple[Manifest, ...]
    source: Source


def load(path: str, mode: str | None = None) -> Loaded:
    """Load and shape-check a scenario; `mode` overrides cluster.mode. Raises ScenarioError."""
    docs = read_yaml(path)
    if len(docs) != 1:
        raise ScenarioError([Problem(path, "", f"{len(docs)} documents",
                                     "expected exactly one YAML document (a mapping)")])
    src = docs[0]
    if not isinstance(src.data, dict):
        raise ScenarioError([src.problem((), type(src.data).__name__, "expected a mapping at the top")])
    data = dict(src.data)
    if mode is not None:
        if not isinstance(data.get("cluster"), dict):
            raise ScenarioError([src.problem(("cluster",), None,
                                             f"--mode {mode} needs a cluster section")])
        data["cluster"] = {**data["cluster"], "mode": mode}
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(pydantic_problems(src, exc)) from None

    manifests: list[Manifest] = []
    problems: list[Problem] = []
    base = os.path.dirname(os.path.abspath(path))
    for i, item in enumerate(scenario.manifests):
        if isinstance(item, ManifestFile):
            mpath = item.file if os.path.isabs(item.file) else os.path.join(base, item.file)
            if not os.path.exists(mpath):
                problems.append(src.problem(("manifests", i, "file"), item.file,
                                            "file not found (paths are relative to the scenario file)"))
                continue
            for j, doc in enumerate(read_yaml(mpath)):
                problems += _parse_object(doc, (), manifests, f"[{j}]")
        else:
            problems += _parse_object(src, ("manifests", i), manifests, "")
    if problems:
        raise ScenarioError(problems)
    return Loaded(path, scenario, tuple(manifests), src)


def all_kinds() -> dict:
    """Every manifest kind a scenario may hold: kubevpc.k8s's and the Ingress controller's."""
    from . import ingress
    return {**k8s.KINDS, **ingress.KINDS}


def _parse_object(src: Source, prefix: tuple, out: list[Manifest], label: str) -> list[Problem]:
    obj = src.data
    for part in prefix:
        obj = obj[part]
    if not isinstance(obj, dict):
        return [src.problem(prefix, obj, "expected a Kubernetes object (a mapping)")]
    api, kind = k8s.kind_of(obj)
    cls = all_kinds().get((api, kind))
    if cls is None:
        kinds = ", ".join(f"{k} ({a})" for a, k in sorted(all_kinds()))
        return [src.problem(prefix + ("kind",), f"{kind} ({api})" if api else kind,
                            f"unsupported object; expected one of {kinds}")]
    try:
        parsed = cls.model_validate(obj)
    except ValidationError as exc:
        return pydantic_problems(src, exc, prefix)
    out.append(Manifest(parsed, src.file, dotted(prefix) or label, src, prefix))
    return []
