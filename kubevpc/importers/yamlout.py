"""A scenario written as YAML that reads like the hand-written ones: one line for each small object
(a vSwitch, a rule, an instance), blocks for the rest, and after each object's first line a comment
naming what it came from (the key "#" of kubevpc.importers.build). PyYAML writes every scalar and
every one-line object, so quoting is its; `dump` checks that what it wrote reads back as the data.
"""
from __future__ import annotations

from typing import Any

import yaml

from .build import ORIGIN, printable

FLOW_WIDTH = 140          # an object longer than this on one line is written as a block


def strip(value: Any) -> Any:
    """The data without the origins."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != ORIGIN}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def prune(value: Any, key: str = "") -> Any:
    """The data without empty lists and mappings (defaults), except the `internet: {}` that asks for one."""
    if isinstance(value, dict):
        out = {k: prune(v, k) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v not in ([], {}) or (k == "internet" and v == {})}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def _flow(value: Any) -> str:
    text = yaml.safe_dump(strip(value), default_flow_style=True, sort_keys=False, width=1 << 30, allow_unicode=False)
    return text.removesuffix("\n...\n").strip()


def _small(value: Any) -> bool:
    """No list of objects inside: a line can hold it."""
    if isinstance(value, dict):
        return all(_small(v) for k, v in value.items() if k != ORIGIN)
    if isinstance(value, list):
        return all(not isinstance(v, (dict, list)) for v in value)
    return True


def _comment(obj: dict) -> str:
    return f"  # {printable(obj[ORIGIN], 200)}" if isinstance(obj, dict) and obj.get(ORIGIN) else ""


def _mapping(obj: dict, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in obj.items():
        if key == ORIGIN:
            continue
        head = f"{pad}{_flow(key)}:"
        if isinstance(value, dict) and value and not (_small(value) and len(_flow(value)) + len(head) <= FLOW_WIDTH):
            lines.append(head + _comment(value))
            _mapping(value, indent + 2, lines)
        elif isinstance(value, list) and value and not _small(value):
            lines.append(head)
            for item in value:
                _item(item, indent + 2, lines)
        else:
            lines.append(f"{head} {_flow(value)}" + _comment(value))


def _item(item: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if not isinstance(item, dict) or (_small(item) and len(_flow(item)) + indent <= FLOW_WIDTH):
        lines.append(f"{pad}- {_flow(item)}" + _comment(item))
        return
    block: list[str] = []
    _mapping(item, indent + 2, block)
    block[0] = f"{pad}- {block[0].lstrip()}" + _comment(item)
    lines.extend(block)


def dump(data: dict, header: list[str]) -> str:
    """The YAML text of the data (with origins), after the header's comment lines."""
    lines = [f"# {printable(h, 400)}" if h else "#" for h in header]
    _mapping(data, 0, lines)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != strip(data):
        raise AssertionError("kubevpc.importers.yamlout wrote YAML that does not read back as the scenario")
    return text
