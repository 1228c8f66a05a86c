"""`-o table|json|yaml` for every command that prints a result, the deprecated `--json` alias, and
`kubevpc --version`.

`table` is the human output each command always printed (rich tables, or ovs-ofctl text for
`flows`). `json` and `yaml` print one structured document, the same one: the YAML is the JSON
document read back and dumped with PyYAML's safe_dump, keys in the order the command built them
(so `yq` and `jq` users see the same fields in the same order). kubectl and containerlab spell the
option the same way (`kubectl get -o json|yaml`, `clab inspect --format json`).
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata

import yaml

FORMATS = ("table", "json", "yaml")
DEPRECATED_JSON = "note: --json is deprecated; use -o json (it prints the same document)\n"


def add_output(p: argparse.ArgumentParser, *extra: str, json_alias: bool = False, default: str | None = "table",
               help: str | None = None) -> None:
    """`-o/--output` with table, json, yaml and the command's own extra formats; with json_alias,
    also the `--json` flag the command had before `-o` existed."""
    p.add_argument("-o", "--output", choices=(*FORMATS, *extra), default=default,
                   help=help or "table (default: the human output), json or yaml (the same document)")
    if json_alias:
        p.add_argument("--json", action="store_true", help="deprecated: the same as -o json")


def resolve_json_alias(args: argparse.Namespace) -> str | None:
    """`--json` becomes `-o json`, with a one-line note on stderr. Returns an error message when
    it contradicts the -o given, else None."""
    if not getattr(args, "json", False) or not hasattr(args, "output"):
        return None                      # (perf's --json is its own option, not an alias)
    if getattr(args, "output", None) not in (None, "table", "text", "json"):
        return f"--json and -o {args.output} ask for two formats: give one (-o {args.output} or -o json)"
    sys.stderr.write(DEPRECATED_JSON)
    args.output = "json"
    return None


def plain(doc):
    """The document as JSON has it: tuples become lists, anything else JSON cannot hold becomes
    its string. json and yaml print this, so they hold the same values."""
    return json.loads(json.dumps(doc, default=str))


def dumps(doc, fmt: str) -> str:
    """The document as json (indented by one, as kubevpc always printed it) or yaml."""
    if fmt == "json":
        return json.dumps(plain(doc), indent=1) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(plain(doc), sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)
    raise ValueError(f"format {fmt!r}: expected json or yaml")


def emit(doc, fmt: str) -> None:
    """Print the document on stdout in json or yaml."""
    sys.stdout.write(dumps(doc, fmt))
    sys.stdout.flush()


# ------------------------------------------------------------------------------------ --version
def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ovs_version() -> str | None:
    """Open vSwitch's version as `ovs-vswitchd --version` prints it (no daemon needed), or None."""
    for prog in ("ovs-vswitchd", "ovs-vsctl"):
        path = shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin:/usr/local/sbin")
        if not path:
            continue
        try:
            text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.search(r"\(Open vSwitch\) (\S+)", text)
        if m:
            return m.group(1)
    return None


def version_lines() -> list[str]:
    """kubevpc's version, then those of what it runs on: os-ken, Open vSwitch, Python."""
    return [f"kubevpc {package_version('kubevpc') or 'unknown (not installed: pip install -e .)'}",
            f"os-ken {package_version('os-ken') or 'not installed'}",
            f"Open vSwitch {ovs_version() or 'not found (scripts/install.sh installs it)'}",
            f"Python {platform.python_version()}"]


class VersionAction(argparse.Action):
    """`--version`: the versions, computed only when asked (Open vSwitch's takes a process)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write("\n".join(version_lines()) + "\n")
        parser.exit(0)
