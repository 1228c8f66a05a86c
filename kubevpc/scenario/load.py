"""Read a scenario file: YAML -> schema -> Kubernetes objects, with errors that say where.

Every error names the file, the line when we know it, the path inside the document, the value
and what was expected. Nothing here touches the machine.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from .. import k8s
from . import yamlfile
from ..errors import Problem, ScenarioError
from .keys import unknown_key
from .model import ManifestFile, Scenario


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each path in a composed YAML document to its 1-based line number. (kubevpc.yamlfile has
    bounded the document's depth and what its aliases expand to.)"""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue              # a complex key: the schema refuses it, and names its parent
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
    echo: bool = True      # False: a file a scenario refers to, whose content errors do not show

    def problem(self, path: tuple, value: object, expected: str) -> Problem:
        line = None
        for cut in range(len(path), -1, -1):       # nearest enclosing node that has a line
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        return Problem(self.file, dotted(path), value, expected, line)


def read_yaml(path: str, limits: yamlfile.Limits | None = None, echo: bool = True) -> list[Source]:
    """All documents of a YAML file (manifests may hold several, separated by ---), read within
    kubevpc.yamlfile's limits: a regular file, of bounded size, depth and alias expansion.
    echo=False: errors do not quote the file's content (a file a scenario refers to, which may
    be anything on the machine until it proves to hold Kubernetes objects)."""
    limits = limits or yamlfile.Limits.from_env()
    try:
        docs = yamlfile.parse(path, yamlfile.read_text(path, limits), limits)
    except ScenarioError as exc:
        if echo:
            raise
        raise ScenarioError([dataclasses.replace(p, value=_unquoted(p.value)) for p in exc.problems]) from None
    return [Source(path, data, _lines(node), echo) for node, data in docs]


def _unquoted(value: object) -> object:
    """PyYAML's message without the tokens it quotes from the text."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", value) if isinstance(value, str) else value


def referenced_file(scenario: str, name: str, allow_dirs: Sequence[str] = ()) -> str:
    """The path of a `file:` a scenario names, relative to the scenario's directory, checked to
    lie under that directory or one of `allow_dirs` once symbolic links are resolved. Raises
    ValueError saying why not; whether a file outside exists is not told."""
    base = os.path.dirname(os.path.abspath(scenario))
    path = os.path.realpath(os.path.join(base, name))
    roots = [os.path.realpath(base)] + [os.path.realpath(d) for d in allow_dirs]
    if not any(os.path.commonpath([path, root]) == root for root in roots):
        where = " or ".join(roots)
        raise ValueError(f"outside {where}: a scenario's files are read only from its own directory, or from one "
                         "named with --allow-dir (Lab(allow_dirs=...))")
    if not os.path.exists(path):
        raise ValueError("file not found (paths are relative to the scenario file)")
    return path


def pydantic_problems(src: Source, exc: ValidationError, prefix: tuple = (),
                      model: type[BaseModel] | None = None) -> list[Problem]:
    """pydantic's errors as Problems in the words of the scenario: the keys the user wrote (not
    pydantic's union branches and validators) and what was expected (never a class of ours). With
    the `model` validated, an unknown key's problem lists the keys valid there (kubevpc.scenario.keys)."""
    data = src.data
    for part in prefix:
        data = data[part]
    problems = []
    for err in exc.errors():
        loc = _written(data, err["loc"], err["type"] == "missing")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            expected = unknown_key(model, err["loc"])
            value = loc[-1] if loc else value
        elif err["type"] == "missing":
            expected = "required key is missing"
            value = None
        else:
            expected = _expected(err)
        problems.append(src.problem(prefix + loc, value, expected))
    return problems


def _written(data: Any, loc: tuple, missing: bool) -> tuple:
    """The parts of a pydantic location that are keys and indexes of the data: pydantic puts
    union branches ("int", "ServerPort", "function-after[...]") between them."""
    out: list = []
    for i, part in enumerate(loc):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif not (missing and i == len(loc) - 1 and isinstance(data, dict)):
            continue
        out.append(part)
    return tuple(out)


EXPECTED = {"bool_type": "expected true or false", "bool_parsing": "expected true or false",
            "int_type": "expected a whole number", "int_parsing": "expected a whole number",
            "int_from_float": "expected a whole number", "float_type": "expected a number",
            "string_type": "expected a string", "list_type": "expected a list",
            "dict_type": "expected a mapping", "model_type": "expected a mapping",
            "model_attributes_type": "expected a mapping"}


def _expected(err: dict) -> str:
    if err["type"] in EXPECTED:
        return EXPECTED[err["type"]]
    msg = err["msg"].removeprefix("Value error, ")
    return re.sub(r"(a valid dictionary or )?(an )?instance of \w+", "a mapping", msg)


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
    warnings: tuple[Problem, ...] = ()     # objects skipped (kinds that do not touch the network), one each


def load(path: str, mode: str | None = None, allow_dirs: Sequence[str] = ()) -> Loaded:
    """Load and shape-check a scenario; `mode` overrides cluster.mode. `file:` references are
    read from the scenario's directory, or from `allow_dirs`. Raises ScenarioError."""
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
        raise ScenarioError(pydantic_problems(src, exc, model=Scenario)) from None

    manifests: list[Manifest] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for i, item in enumerate(scenario.manifests):
        if isinstance(item, ManifestFile):
            try:
                mpath = referenced_file(path, item.file, allow_dirs)
            except ValueError as exc:
                problems.append(src.problem(("manifests", i, "file"), item.file, str(exc)))
                continue
            try:
                docs = read_yaml(mpath, echo=False)
            except ScenarioError as exc:
                problems += exc.problems
                continue
            skipped: list[Problem] = []
            for j, doc in enumerate(docs):
                problems += parse_document(doc, (), manifests, f"[{j}]", skipped)
            shown = os.path.normpath(os.path.join(os.path.dirname(path), item.file))   # as the scenario names it
            warnings += [dataclasses.replace(w, file=shown) for w in skipped]
        else:
            problems += parse_document(src, ("manifests", i), manifests, "", warnings)
    if problems:
        raise ScenarioError(problems)
    return Loaded(path, scenario, tuple(manifests), src, tuple(warnings))


KIND_TEXT = re.compile(r"^[A-Za-z0-9]{0,63}( \([a-z0-9./-]{1,63}\))?$")   # what an apiVersion and kind look like
LIST = ("v1", "List")                # kubectl's list of objects: `kind: List` with `items`


def all_kinds() -> dict:
    """Every manifest kind a scenario may hold."""
    return k8s.KINDS


def parse_document(src: Source, prefix: tuple, out: list[Manifest], label: str,
                   warnings: list[Problem] | None = None) -> list[Problem]:
    """One YAML document, or a scenario's inline manifest: a Kubernetes object, or a `kind: List`
    whose items are (as kubectl reads them). Objects parsed go to `out`; objects of kinds that do
    not touch the network are skipped, with one warning each in `warnings`. Returns the problems."""
    obj = src.data
    for part in prefix:
        obj = obj[part]
    if not (isinstance(obj, dict) and k8s.kind_of(obj) == LIST):
        return _parse_object(src, prefix, out, label, warnings)
    items = obj.get("items")
    if not isinstance(items, list):
        shown = items if src.echo else f"<a {type(items).__name__}, not shown>"
        return [src.problem(prefix + ("items",), shown, "expected a list of Kubernetes objects (a List's items)")]
    problems = []
    for k, item in enumerate(items):
        if isinstance(item, dict) and k8s.kind_of(item) == LIST:
            problems.append(src.problem(prefix + ("items", k, "kind"), "List", "a List inside a List; expected "
                                        "Kubernetes objects as a List's items"))
            continue
        problems += _parse_object(src, prefix + ("items", k), out, label, warnings)
    return problems


def _where(prefix: tuple, label: str) -> str:
    """Where an object is, for messages: its path in the scenario, or its document in a file
    ("[2]", "[0].items[3]")."""
    path = dotted(prefix)
    return f"{label}.{path}" if label and path else (path or label)


def _parse_object(src: Source, prefix: tuple, out: list[Manifest], label: str,
                  warnings: list[Problem] | None = None) -> list[Problem]:
    obj = src.data
    for part in prefix:
        obj = obj[part]
    if not isinstance(obj, dict):
        shown = obj if src.echo else f"<a {type(obj).__name__}, not shown>"
        return [src.problem(prefix, shown, "expected a Kubernetes object (a mapping)")]
    api, kind = k8s.kind_of(obj)
    shown = f"{kind} ({api})" if api else kind
    if not src.echo and not KIND_TEXT.match(shown):
        shown = "<not shown>"
    refused = k8s.refusal(obj)
    if refused is not None:
        return [src.problem(prefix + ("kind",), shown, f"not emulated: {refused}")]
    skipped = k8s.skip_reason(obj)
    if skipped is not None:
        if warnings is not None:
            line = src.problem(prefix, None, "").line
            warnings.append(Problem(src.file, _where(prefix, label), f"{kind}/{_name(obj)}", skipped, line))
        return []
    cls = all_kinds().get((api, kind))
    if cls is None:
        kinds = ", ".join(f"{k} ({a})" for a, k in sorted(all_kinds()))
        return [src.problem(prefix + ("kind",), shown, f"unsupported object; expected one of {kinds}, or a kind "
                            "that does not touch the network (skipped with a warning: docs/scenario.md)")]
    try:
        parsed = cls.model_validate(obj)
    except ValidationError as exc:
        return pydantic_problems(src, exc, prefix, cls)
    out.append(Manifest(parsed, src.file, _where(prefix, label), src, prefix))
    return []


def _name(obj: dict) -> str:
    """An object's metadata.name as a warning shows it: only a valid name is quoted."""
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    ok = isinstance(name, str) and len(name) <= 253 and k8s.DNS1123_SUBDOMAIN.match(name)
    return name if ok else "<no valid name>"
