"""The JSON that `terraform show -json` prints, read as hostile input: its resources through every
module, and what their arguments name.

Terraform's "JSON Output Format" (developer.hashicorp.com/terraform/internals/json-format):

- a plan (`terraform show -json PLANFILE`) has `planned_values`, the resources as they will be, and
  `configuration`, the configuration with the `references` of every argument's expression; a value
  known only after apply (the ID of a resource to be created) is left out of `planned_values`, so
  what an argument names is found through those references (`alicloud_vpc.main.id`), through
  `var.NAME` into the module call that sets it, and through `module.NAME.OUTPUT` into a module;
- a state (`terraform show -json`) has `values`, every value known: an argument names a resource
  by its ID (`vpc_id: "vpc-bp1..."`);
- both list the root module's `resources` and its `child_modules`, each with the same two lists;
- `format_version` is "MAJOR.MINOR": "Reject any input which reports an unsupported major
  version"; minor versions only add properties, which are ignored.

Everything is checked for shape as it is read: a file that is not such a document gives a
ScenarioError naming the file, the place in it and what was expected.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import Problem, ScenarioError
from ..scenario import yamlfile

MAX_BYTES_ENV = "KUBEVPC_MAX_PLAN_BYTES"
DEFAULT_MAX_BYTES = 64 << 20     # a plan of a few thousand resources is a few MB; its JSON holds every value
MAX_MODULE_DEPTH = 32            # modules inside modules
MAX_HOPS = 16                    # var.X and module.M.OUT followed from module to module
MAX_PROBLEMS = 20
MAX_RESOURCES = 5000             # a lab, not a region: more is refused (import a part of the configuration)
EXPECTED_DOC = "expected the JSON of `terraform show -json` (a plan file's or a state's)"
# what an argument may name a resource by, besides its ID (a route table, an EIP's address, ...)
MATCHED_ATTRIBUTES = ("id", "route_table_id", "ip_address", "snat_table_ids", "forward_table_ids", "private_ip")
_MODULE_STEP = r'module\.([A-Za-z0-9_-]+)(\[(?:\d+|"[^"\\]*")\])?'
_MODULE_ADDRESS = re.compile(rf"^{_MODULE_STEP}(\.{_MODULE_STEP})*$")
_REFERENCE = re.compile(r'^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)(?:\[(\d{1,9}|"[^"\\]*")\])?(?:\..*)?$')
_IGNORED_REFS = ("count.", "each.", "path.", "terraform.", "self.")


@dataclass
class Resource:
    """One managed resource instance: where it is, its values, and its configuration's expressions."""

    address: str                 # module.net.alicloud_vswitch.a[0]
    type: str
    name: str
    index: Any                   # None, or the count index (int) or for_each key (str)
    module: tuple[str, ...]      # the module instance's steps: ("module.net[0]",); () for the root
    calls: tuple[str, ...]       # the module calls on the way: ("net",)
    values: dict
    exprs: dict = field(default_factory=dict)

    @property
    def local(self) -> str:
        """Its address inside its module, without the index: what a reference names."""
        return f"{self.type}.{self.name}"

    def text(self, *keys: str) -> str | None:
        """The first of these values that is a non-empty string."""
        for key in keys:
            value = self.values.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def number(self, key: str) -> int | None:
        value = self.values.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
            return int(value)
        return None

    def flag(self, key: str) -> bool | None:
        value = self.values.get(key)
        return value if isinstance(value, bool) else None

    def blocks(self, key: str) -> list[dict]:
        """A nested block's instances (`addons { ... }`), as the mappings they are."""
        value = self.values.get(key)
        return [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []


@dataclass
class Targets:
    """What an argument names: the resources found, and what named nothing of this document."""

    found: list[Resource]
    missing: list[str]


def _limits(environ: Mapping[str, str] | None) -> yamlfile.Limits:
    value = (os.environ if environ is None else environ).get(MAX_BYTES_ENV, "").strip()
    if not value:
        return yamlfile.Limits(max_bytes=DEFAULT_MAX_BYTES)
    if not value.isdigit() or int(value) < 1:
        raise ScenarioError([Problem(f"environment variable {MAX_BYTES_ENV}", "", value,
                                     "expected a number of bytes, 1 or more")])
    return yamlfile.Limits(max_bytes=int(value))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(path: str, text: str) -> Any:
    """The JSON text's value; an error names the file, the line and what is wrong."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ScenarioError([Problem(path, "", f"{exc.msg} at line {exc.lineno} column {exc.colno}",
                                     f"{EXPECTED_DOC}: not valid JSON", exc.lineno)]) from None
    except RecursionError:
        raise ScenarioError([Problem(path, "", "nesting too deep", f"{EXPECTED_DOC}: nested deeper than "
                                     "Python's JSON reader goes (terraform never nests that deep)")]) from None
    except ValueError as exc:          # NaN, Infinity, an integer of more than 4300 digits
        raise ScenarioError([Problem(path, "", str(exc)[:80], f"{EXPECTED_DOC}: not valid JSON")]) from None


def read(path: str, environ: Mapping[str, str] | None = None) -> "Document":
    """The document in the file: a regular file of at most KUBEVPC_MAX_PLAN_BYTES bytes (64 MiB),
    UTF-8, JSON, and shaped as `terraform show -json` prints it."""
    text = yamlfile.read_text(path, _limits(environ), what="a Terraform JSON document", env=MAX_BYTES_ENV)
    return Document(path, parse_json(path, text))


def format_problem(path: str, data: Any) -> Problem | None:
    """Why the value is not a `terraform show -json` document of a format this reads, or None."""
    if not isinstance(data, dict):
        return Problem(path, "", f"a JSON {type(data).__name__}", f"{EXPECTED_DOC}: a JSON object with format_version")
    version = data.get("format_version")
    m = re.match(r"^(\d{1,3})\.(\d{1,3})$", version) if isinstance(version, str) else None
    if m is None or (int(m.group(1)), int(m.group(2))) < (0, 1) or int(m.group(1)) > 1:
        return Problem(path, "format_version", version, "expected a format_version from 0.1 to 1.x, as Terraform "
                       "0.12 and later print; a new major version is not backward compatible (Terraform's JSON "
                       f"Output Format), so it is refused. {EXPECTED_DOC}")
    return None


class Document:
    """A plan or a state: every managed resource, and how to find what an argument names."""

    def __init__(self, path: str, data: Any):
        self.path = path
        self.problems: list[Problem] = []
        bad = format_problem(path, data)
        if bad:
            raise ScenarioError([bad])
        self.format_version: str = data["format_version"]
        self.terraform_version = data.get("terraform_version") if isinstance(data.get("terraform_version"), str) else ""
        self.kind, root, where = self._root(data)
        self.config: dict[tuple[str, ...], dict] = {}
        self._exprs: dict[tuple, dict] = {}
        configuration = data.get("configuration")
        if isinstance(configuration, dict) and isinstance(configuration.get("root_module"), dict):
            self._config_module(configuration["root_module"], (), "configuration.root_module")
        self.resources: list[Resource] = []
        self._module(root, (), (), where, 0)
        if self.problems:
            raise ScenarioError(self.problems[:MAX_PROBLEMS])
        if len(self.resources) > MAX_RESOURCES:
            raise ScenarioError([Problem(path, "", f"{len(self.resources)} managed resources", f"at most {MAX_RESOURCES}: "
                                         "kubevpc emulates a lab on one machine, not a region; import a part of the "
                                         "configuration (a module of its own, or a plan made with -target)")])
        self._children: dict[tuple, dict[str, set]] = {}     # module instance -> call name -> its instances
        for steps in {r.module for r in self.resources}:
            for k in range(len(steps)):
                call = re.match(_MODULE_STEP, steps[k]).group(1)
                self._children.setdefault(steps[:k], {}).setdefault(call, set()).add(steps[:k + 1])
        self._instances: dict[tuple, list[Resource]] = {}
        self._by_value: dict[str, list[Resource]] = {}
        for r in self.resources:
            self._instances.setdefault((r.module, r.type, r.name), []).append(r)
            for attr in MATCHED_ATTRIBUTES:
                value = r.values.get(attr)
                for piece in value.split(",") if isinstance(value, str) else ():
                    if piece.strip():
                        self._by_value.setdefault(piece.strip(), []).append(r)

    def _root(self, data: dict) -> tuple[str, dict, str]:
        for kind, key in (("plan", "planned_values"), ("state", "values")):
            values = data.get(key)
            if values is None:
                continue
            if not isinstance(values, dict) or not isinstance(values.get("root_module", {}), dict):
                raise ScenarioError([Problem(self.path, key, _shape(values), f"{EXPECTED_DOC}: {key} is an object "
                                             "whose root_module is an object")])
            return kind, values.get("root_module", {}), f"{key}.root_module"
        raise ScenarioError([Problem(self.path, "", "no planned_values and no values",
                                     f"{EXPECTED_DOC}: a plan has planned_values, a state values (an empty state "
                                     "has neither: nothing to import)")])

    def _problem(self, where: str, value: Any, expected: str) -> None:
        self.problems.append(Problem(self.path, where, value, expected))

    def _module(self, module: Any, steps: tuple, calls: tuple, where: str, depth: int) -> None:
        if depth > MAX_MODULE_DEPTH:
            self._problem(where, f"level {depth}", f"modules nested at most {MAX_MODULE_DEPTH} deep")
            return
        resources = module.get("resources", [])
        children = module.get("child_modules", [])
        for key, value in (("resources", resources), ("child_modules", children)):
            if not isinstance(value, list):
                self._problem(f"{where}.{key}", _shape(value), "expected a list")
                return
        for i, item in enumerate(resources):
            self._resource(item, steps, calls, f"{where}.resources[{i}]")
        for i, child in enumerate(children):
            at = f"{where}.child_modules[{i}]"
            address = child.get("address") if isinstance(child, dict) else None
            if not isinstance(address, str) or not _MODULE_ADDRESS.match(address):
                self._problem(at, _shape(child) if address is None else address,
                              "expected a child module with an address such as module.net or module.net[0]")
                continue
            child_steps = tuple(s.group(0) for s in re.finditer(_MODULE_STEP, address))
            if child_steps[:len(steps)] != steps or len(child_steps) != len(steps) + 1:
                self._problem(f"{at}.address", address, f"expected a module directly inside {'.'.join(steps) or 'the root module'}")
                continue
            call = re.match(_MODULE_STEP, child_steps[-1]).group(1)
            self._module(child, child_steps, calls + (call,), at, depth + 1)

    def _resource(self, item: Any, steps: tuple, calls: tuple, where: str) -> None:
        if not isinstance(item, dict):
            self._problem(where, _shape(item), "expected a resource: an object with address, mode, type, name and values")
            return
        kinds = {k: item.get(k) for k in ("address", "type", "name")}
        bad = [k for k, v in kinds.items() if not isinstance(v, str) or not v]
        if bad or not isinstance(item.get("values", {}), dict):
            self._problem(where, _shape(item), "expected a resource: address, type and name strings, values an "
                          f"object ({', '.join(bad) or 'values'}: not so)")
            return
        if item.get("mode", "managed") != "managed":
            return                  # a data source: read, never created
        index = item.get("index")
        if not isinstance(index, (int, str)) or isinstance(index, bool):
            index = None
        exprs = self._exprs.get((calls, kinds["type"], kinds["name"]), {})
        self.resources.append(Resource(kinds["address"], kinds["type"], kinds["name"], index, steps, calls,
                                       item.get("values") or {}, exprs))

    def _config_module(self, module: dict, calls: tuple, where: str) -> None:
        if len(calls) > MAX_MODULE_DEPTH:
            return
        self.config[calls] = module
        resources = module.get("resources")
        for r in resources if isinstance(resources, list) else ():
            if isinstance(r, dict) and r.get("mode", "managed") == "managed" and isinstance(r.get("expressions"), dict):
                self._exprs.setdefault((calls, r.get("type"), r.get("name")), r["expressions"])
        module_calls = module.get("module_calls")
        for name, call in (module_calls.items() if isinstance(module_calls, dict) else ()):
            if isinstance(call, dict) and isinstance(call.get("module"), dict):
                self._config_module(call["module"], calls + (name,), f"{where}.module_calls.{name}.module")

    # ------------------------------------------------------------------------------ references
    def targets(self, res: Resource, key: str, types: tuple[str, ...]) -> Targets:
        """The resources of `types` that argument `key` of `res` names, in order: by its value when
        that is known (an ID, several separated by commas, or a list of them), else by the
        references of its expression in the configuration."""
        value = res.values.get(key)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            found, missing = [], []
            for v in value:
                hits = [r for r in self._by_value.get(v, []) if r.type in types]
                found += hits[:1]
                if not hits:
                    missing.append(v)
            return Targets(_unique(found), missing)
        expr = res.exprs.get(key)
        refs = expr.get("references") if isinstance(expr, dict) else None
        if not isinstance(refs, list):
            return Targets([], [] if value is None and expr is None else [f"{key} (a value not known before apply)"])
        found, missing = self._follow([r for r in refs if isinstance(r, str)], res.module, res.calls, res.index, 0)
        return Targets(_unique([r for r in found if r.type in types]),
                       missing + [r.address for r in found if r.type not in types])

    def _follow(self, refs: list[str], steps: tuple, calls: tuple, hint: Any, hops: int) -> tuple[list, list]:
        """The resources the references name from one module, with those that named none."""
        found: list[Resource] = []
        missing: list[str] = []
        bases = _bases(refs)
        for base in bases:
            if hops > MAX_HOPS:
                missing.append(base)
                continue
            hits, miss = self._one(base, steps, calls, hint, hops)
            found += hits
            missing += miss
        return found, missing

    def _one(self, base: str, steps: tuple, calls: tuple, hint: Any, hops: int) -> tuple[list, list]:
        head, _, rest = base.partition(".")
        if head == "var" and calls:
            parent = self.config.get(calls[:-1], {}).get("module_calls") or {}
            call = parent.get(calls[-1]) if isinstance(parent, dict) else None
            expr = (call.get("expressions") or {}).get(rest) if isinstance(call, dict) else None
            refs = expr.get("references") if isinstance(expr, dict) else None
            if not isinstance(refs, list):
                return [], [base]
            return self._follow([r for r in refs if isinstance(r, str)], steps[:-1], calls[:-1], hint, hops + 1)
        if head == "module":
            return self._module_output(rest, steps, calls, hint, hops)
        if head in ("var", "local", "data"):
            return [], [base]      # a root variable, a local (not in the JSON), a data source: nothing created here
        m = _REFERENCE.match(base)
        instances = self._instances.get((steps, m.group(1), m.group(2)), []) if m else []
        if m and m.group(3) is not None:
            index = int(m.group(3)) if m.group(3).isdigit() else m.group(3)[1:-1]
            instances = [r for r in instances if r.index == index]
        elif len(instances) > 1:
            instances = [r for r in instances if hint is not None and r.index == hint]
        return (instances[:1], []) if len(instances) == 1 else ([], [base])

    def _module_output(self, rest: str, steps: tuple, calls: tuple, hint: Any, hops: int) -> tuple[list, list]:
        name, _, output = rest.partition(".")
        output = output.split(".")[0].split("[")[0]
        outputs = self.config.get(calls + (name,), {}).get("outputs")
        expr = outputs.get(output, {}).get("expression") if isinstance(outputs, dict) and \
            isinstance(outputs.get(output), dict) else None
        refs = expr.get("references") if isinstance(expr, dict) else None
        instances = self._children.get(steps, {}).get(name, set())
        if not isinstance(refs, list) or len(instances) != 1:
            return [], [f"module.{rest}"]
        return self._follow([r for r in refs if isinstance(r, str)], next(iter(instances)), calls + (name,), hint,
                            hops + 1)


def _bases(refs: list[str]) -> list[str]:
    """The distinct things the references name, in order: `alicloud_vpc.main.id` and `alicloud_vpc.main`
    name one resource; `alicloud_vswitch.a` beside `alicloud_vswitch.a[0]` names nothing more."""
    out: list[str] = []
    for ref in refs[:1000]:
        if ref.startswith(_IGNORED_REFS):
            continue
        parts = ref.split(".")
        if parts[0] == "module":
            base = ".".join(parts[:3])
        elif parts[0] in ("var", "local"):
            base = ".".join(parts[:2])
        elif parts[0] == "data":
            base = ".".join(parts[:3])
        else:
            m = _REFERENCE.match(ref)
            base = ref if m is None else f"{m.group(1)}.{m.group(2)}" + (f"[{m.group(3)}]" if m.group(3) else "")
        if base not in out:
            out.append(base)
    return [b for b in out if not any(o != b and o.startswith(b + "[") for o in out)]


def _unique(resources: list[Resource]) -> list[Resource]:
    seen, out = set(), []
    for r in resources:
        if id(r) not in seen:
            seen.add(id(r))
            out.append(r)
    return out


def _shape(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"
