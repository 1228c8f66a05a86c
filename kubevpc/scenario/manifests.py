"""Manifests named as kubectl names them, for `kubevpc apply -f` and `delete -f`: a file, a
directory (its *.yaml, *.yml and *.json files, sorted by name; its subdirectories too with -R), or
`-` for standard input; each holding one or more YAML documents, any of which may be a `kind: List`.

Everything read is hostile: files are read within kubevpc.scenario.yamlfile's limits (regular
files, size, UTF-8, depth, aliases), standard input too (its size is bounded while it is read), and
a directory gives at most MAX_FILES files. The objects are checked as the scenario loader checks a
scenario's manifests (kubevpc.scenario.load.parse_document): a problem names the file, the line,
the path and what was expected; an object of a kind that does not touch the network is skipped
with one warning.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Sequence

from ..errors import Problem, ScenarioError
from . import yamlfile
from .load import Manifest, Source, _lines, parse_document

STDIN = "-"
STDIN_NAME = "<stdin>"                       # what problems call standard input
EXTENSIONS = (".yaml", ".yml", ".json")      # kubectl's FileExtensions
MAX_FILES = 1000                             # files one command reads, directories expanded


@dataclass
class Manifests:
    """The objects read, in order (as the YAML held them, each checked), with where each came from,
    and the warnings of the objects skipped."""

    objects: list[dict] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def manifest_files(names: Sequence[str], recursive: bool = False) -> list[str]:
    """The files `-f` names: a file as it is, a directory's manifest files (sorted; recursively
    with `recursive`), `-` (standard input) at most once. Raises ScenarioError naming a directory
    without manifests, a second `-`, and more than MAX_FILES files."""
    out, problems = _expanded(names, recursive)
    if problems:
        raise ScenarioError(problems)
    return out


def _expanded(names: Sequence[str], recursive: bool) -> tuple[list[str], list[Problem]]:
    out: list[str] = []
    problems: list[Problem] = []
    for name in names:
        if name == STDIN:
            if STDIN in out:
                problems.append(Problem(STDIN_NAME, "", name, "standard input may be named once"))
            out.append(name)
        elif os.path.isdir(name):
            found = _directory(name, recursive)
            if not found:
                problems.append(Problem(name, "", name, "a directory without manifests; expected *.yaml, *.yml or "
                                        "*.json files in it" + ("" if recursive else " (-R reads its subdirectories)")))
            out += found
        else:
            out.append(name)             # read_yaml says what is wrong with it, if anything
        if len(out) > MAX_FILES:
            raise ScenarioError(problems + [Problem(name, "", f"over {MAX_FILES} files",
                                                    f"at most {MAX_FILES} manifest files in one command")])
    return out, problems


def _directory(top: str, recursive: bool) -> list[str]:
    """A directory's manifest files, as kubectl's visitor finds them: by extension, sorted by path,
    subdirectories only when recursive (symbolic links to directories are not followed)."""
    found = []
    for root, dirs, files in os.walk(top, followlinks=False):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith(EXTENSIONS)]
        if not recursive or len(found) > MAX_FILES:
            break
    return found


def read_manifests(names: Sequence[str], recursive: bool = False, stdin: BinaryIO | None = None,
                   limits: yamlfile.Limits | None = None) -> Manifests:
    """The Kubernetes objects of the manifests `names` names (see manifest_files), checked.
    `stdin`: the stream `-` reads (default: this process's standard input). Raises ScenarioError
    with every problem found: nothing is applied then."""
    limits = limits or yamlfile.Limits.from_env()
    got = Manifests()
    files, problems = _expanded(names, recursive)
    for path in dict.fromkeys(files):
        try:
            docs = _documents(path, stdin, limits)
        except ScenarioError as exc:
            problems += exc.problems
            continue
        for j, src in enumerate(docs):
            before = len(got.manifests)
            problems += parse_document(src, (), got.manifests, f"[{j}]", got.warnings)
            got.objects += [_data(m) for m in got.manifests[before:]]
    if not problems and not got.objects and not got.warnings:
        problems.append(Problem(", ".join(names), "", None, "no objects; expected one or more Kubernetes objects "
                                "(YAML documents)"))
    if problems:
        raise ScenarioError(problems)
    return got


def _documents(path: str, stdin: BinaryIO | None, limits: yamlfile.Limits) -> list[Source]:
    """The YAML documents of a file, or of standard input (`-`). JSON is read as the YAML it is,
    but for tabs: JSON allows them between tokens and YAML does not, and a valid JSON document has
    none elsewhere (a tab in a string is written \\t), so in a .json file, or in a text that starts as
    JSON does (kubectl's YAMLOrJSONDecoder looks at the first character too), they become spaces."""
    if path == STDIN:
        name, text = STDIN_NAME, yamlfile.read_stream(STDIN_NAME, stdin if stdin is not None else sys.stdin.buffer,
                                                      limits)
    else:
        name, text = path, yamlfile.read_text(path, limits)
    if path.endswith(".json") or text.lstrip().startswith(("{", "[")):
        text = text.replace("\t", " ")
    return [Source(name, data, _lines(node)) for node, data in yamlfile.parse(name, text, limits)]


def _data(m: Manifest) -> dict:
    """The object as the YAML held it (a List's item, or the whole document)."""
    obj = m.source.data
    for part in m.prefix:
        obj = obj[part]
    return obj
