"""`kubevpc schema`: print the JSON Schema of the scenario file (kubevpc/scenario/schema.py), the
same text as the published schema/kubevpc-scenario.schema.json, for editors and CI."""
from __future__ import annotations

import sys

from ..scenario.schema import PUBLISHED, UPDATE, schema_text
from .common import EXIT_OK


def add_schema(sub) -> None:
    sub.add_parser("schema", help="print the JSON Schema of the scenario file (for editors and CI)",
                   description="Print the JSON Schema (draft-07) of the scenario file, generated from the "
                   f"scenario's models; the repository publishes it as {PUBLISHED} ({UPDATE} updates it). Point "
                   "the YAML language server at it with a first line `# yaml-language-server: $schema=PATH` in a "
                   "scenario, or with yaml.schemas in the editor's settings (docs/scenario.md). Exit codes: 0.")


def cmd_schema(args) -> int:
    sys.stdout.write(schema_text())
    return EXIT_OK


COMMANDS = {"schema": (add_schema, cmd_schema)}
