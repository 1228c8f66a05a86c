"""The JSON Schema of the scenario file, generated from the pydantic models (model.py and the
Kubernetes kinds of kubevpc.k8s), for editors (the YAML language server) and CI. `kubevpc schema`
prints it; the repository publishes it as schema/kubevpc-scenario.schema.json, which a unit test
holds to this generator.

What it adds to pydantic's own `model_json_schema()`: the `$schema` dialect (draft-07, which
editors' YAML language server reads, with the definitions where draft-07 keeps them) and an `$id`; models'
docstrings as descriptions (pydantic's) and each field's comment in model.py as its description
(ours); no title on every property (pydantic makes "Vswitches" of `vswitches`); and the manifests,
which the models hold as plain mappings: a `file:` reference, or a Kubernetes object with
`apiVersion` and `kind`, checked against kubevpc's model of that kind when it has one (unknown
keys in an object are allowed there, as the loader ignores fields it does not emulate).
"""
from __future__ import annotations

import inspect
import io
import json
import textwrap
import tokenize
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from .. import k8s
from .model import Scenario

# draft-07: what the YAML language server validates with (pydantic writes nothing newer than it here)
DIALECT = "http://json-schema.org/draft-07/schema#"
DEFS = "definitions"
SCHEMA_ID = "urn:kubevpc:scenario-schema"     # a name, not a place: editors take the file by path or URL
PUBLISHED = "schema/kubevpc-scenario.schema.json"     # in the repository
UPDATE = f"kubevpc schema > {PUBLISHED}"              # how to regenerate it
OBJECT = "KubernetesObject"


class _Generator(GenerateJsonSchema):
    """pydantic's generator without a title on each property (a field's name, recapitalised)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def scenario_schema() -> dict[str, Any]:
    """The schema: the Scenario model at the root, every other model in `definitions`."""
    kinds = sorted(k8s.KINDS.items())
    refs, top = models_json_schema([(Scenario, "validation")] + [(cls, "validation") for _, cls in kinds],
                                   schema_generator=_Generator, ref_template=f"#/{DEFS}/{{model}}")
    defs = top["$defs"]
    for cls in _models([Scenario] + [cls for _, cls in kinds]):
        _describe_fields(defs.get(cls.__name__), cls)
    root = defs.pop(Scenario.__name__)
    defs[OBJECT] = _object_schema({kind: refs[(cls, "validation")]["$ref"] for kind, cls in kinds})
    root["properties"]["manifests"]["items"] = {"anyOf": [{"$ref": f"#/{DEFS}/ManifestFile"},
                                                          {"$ref": f"#/{DEFS}/{OBJECT}"}]}
    head = {"$schema": DIALECT, "$id": SCHEMA_ID, "title": "kubevpc scenario",
            "description": "A kubevpc scenario: the cloud (VPCs, vSwitches, security groups, ECS instances, SLB, "
                           "NAT, EIPs), the cluster and its pod network mode, Kubernetes manifests, and the "
                           "connectivity expected (docs/scenario.md)."}
    return {**head, **{k: v for k, v in root.items() if k not in ("title", "description")}, DEFS: defs}


def schema_text() -> str:
    """The schema as published: indented JSON, keys in the models' order, a final newline."""
    return json.dumps(scenario_schema(), indent=2, ensure_ascii=False) + "\n"


def _object_schema(kinds: dict[tuple[str, str], str]) -> dict[str, Any]:
    """A Kubernetes object: any apiVersion and kind, checked against the kind's model when
    kubevpc has one (which object kinds the loader takes is its to say, with its reasons)."""
    cases = [{"if": {"properties": {"apiVersion": {"const": api}, "kind": {"const": kind}},
                     "required": ["apiVersion", "kind"]},
              "then": {"$ref": ref}} for (api, kind), ref in kinds.items()]
    return {"type": "object", "title": OBJECT,
            "description": "A Kubernetes object as in a manifest. Kinds kubevpc emulates: "
                           + ", ".join(f"{kind} ({api})" for api, kind in kinds) + ".",
            "required": ["apiVersion", "kind"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}},
            "allOf": cases}


def _models(roots: list[type[BaseModel]]) -> list[type[BaseModel]]:
    """Every model reachable from `roots` through the types of their fields."""
    seen: dict[type, None] = {}
    todo: list[Any] = list(roots)
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:
                continue
            seen[tp] = None
            todo += [f.annotation for f in tp.model_fields.values()]
        todo += list(typing.get_args(tp))
    return list(seen)


def _describe_fields(schema: dict | None, cls: type[BaseModel]) -> None:
    """Each field's comment in the model's source becomes its property's description."""
    if schema is None:
        return
    props = schema.get("properties", {})
    for name, text in field_comments(cls).items():
        info = cls.model_fields.get(name)
        key = (info.alias or name) if info else name
        if key in props:
            props[key] = {**props[key], "description": text}


def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field a class declares: the one ending its line, or else the comment
    lines just above it. Comments are found by the tokenizer, so a '#' inside a string is none."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base.__module__.split(".")[0] not in ("builtins", "pydantic"):
            out.update(_own_comments(base))
    return out


def _own_comments(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)]
    trailing, alone = {}, {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (trailing if tok.line[:tok.start[1]].strip() else alone)[tok.start[0]] = text
    out = {}
    for prev, tok, nxt in zip(tokens, tokens[1:], tokens[2:]):
        starts = prev.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL)
        if starts and tok.type == tokenize.NAME and tok.start[1] == 4 and nxt.string == ":":
            line = tok.start[0]
            above = []
            while line - 1 - len(above) in alone:
                above.insert(0, alone[line - 1 - len(above)])
            text = trailing.get(line) or " ".join(above)
            if text:
                out[tok.string] = text
    return out
