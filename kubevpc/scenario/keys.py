"""The keys a model takes at a place in a document, for unknown-key errors that list them and
suggest the closest ("did you mean `securityGroups`?").

pydantic reports an unknown key by its location in the data (cloud, vpcs, 0, vswitchs); the walk
follows the same location through the model's field types (models, lists, dicts, unions, the
union branches pydantic names) to the model that refused the key.
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

GENERIC = "unknown key; expected one of the documented keys (see docs/scenario.md)"


def unknown_key(model: type[BaseModel] | None, loc: tuple) -> str:
    """What an unknown key at `loc` (its own name last) should have been: the valid keys there,
    the closest first when one is close (letter case aside)."""
    found = model_at(model, loc[:-1]) if model is not None and loc else None
    if found is None:
        return GENERIC
    keys = valid_keys(found)
    close = closest(str(loc[-1]), keys)
    hint = f"did you mean `{close}`? " if close else ""
    return f"unknown key; {hint}expected one of {', '.join(keys)}"


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a model takes, as a scenario writes them (a field's alias, like `from`), in the
    order the model declares them."""
    return [info.alias or name for name, info in model.model_fields.items()]


def closest(key: str, keys: list[str]) -> str | None:
    """The valid key most like `key` when one is like it (difflib's ratio at least 0.6)."""
    lower = {k.lower(): k for k in keys}
    match = difflib.get_close_matches(key.lower(), list(lower), n=1)
    return lower[match[0]] if match else None


def model_at(model: Any, loc: tuple) -> type[BaseModel] | None:
    """The model that holds the mapping at `loc` in data of type `model`; None when the walk
    ends anywhere else. Parts that are not keys or indexes (the union branch pydantic tried, as
    "int" or "ServerPort") are skipped when nothing takes them."""
    tp = model
    for part in loc:
        step = _step(tp, part)
        if step is not None:
            tp = step
    return _model(tp)


def _strip(tp: Any) -> Any:
    """A type without its Annotated metadata."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _model(tp: Any) -> type[BaseModel] | None:
    """The model a type is, or the one model of an optional (X | None)."""
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        models = [m for m in map(_model, typing.get_args(tp)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def _step(tp: Any, part: Any) -> Any:
    """The type found at `part` inside a value of type `tp`, or None."""
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [_strip(m) for m in typing.get_args(tp) if m is not type(None)]
        named = [m for m in members if getattr(m, "__name__", None) == part]
        if named:                  # the branch pydantic names
            return named[0]
        return next((s for s in (_step(m, part) for m in members) if s is not None), None)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return next((info.annotation for name, info in tp.model_fields.items() if part in (name, info.alias)), None)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int):
        return typing.get_args(tp)[0]
    if origin is dict and isinstance(part, str):
        return typing.get_args(tp)[1]
    return None
