"""Read YAML files that may be hostile: kubevpc runs as root, and a scenario may come from anyone.

Every limit here gives a ScenarioError that names the file, the place and what was expected, at
once, instead of a hang, a traceback or gigabytes of memory:

- only regular files are read (a FIFO would block forever, /dev/zero never ends), opened without
  blocking, and at most `max_bytes` of them (KUBEVPC_MAX_YAML_BYTES raises it); standard input
  (`apply -f -`) is read until it ends, but never beyond `max_bytes` either;
- the text must be UTF-8; the error names the byte offset of the first byte that is not;
- nesting is at most `max_depth` levels deep (100,000 brackets were a RecursionError), counted
  through aliases too;
- aliases may add at most `max_alias_nodes` nodes to a document when it is expanded (a 371-byte
  "billion laughs" document took 4 GB), and an alias may not point into the node that holds it.

Each document is composed once, with the limits checked as the composer goes, and constructed
from the composed nodes, so the text is parsed once.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO, Mapping

import yaml

from ..errors import Problem, ScenarioError

MAX_BYTES_ENV = "KUBEVPC_MAX_YAML_BYTES"
DEFAULT_MAX_BYTES = 4 << 20        # a 1,000-pod scenario is about 200 kB; the API server takes 3 MiB a request
DEFAULT_MAX_DEPTH = 64             # a Deployment's deepest field is about 10 levels down
DEFAULT_MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to one document


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Limits":
        """The default limits, with the size taken from KUBEVPC_MAX_YAML_BYTES when it is set."""
        value = (os.environ if environ is None else environ).get(MAX_BYTES_ENV, "").strip()
        if not value:
            return cls()
        if not value.isdigit() or int(value) < 1:
            raise ScenarioError([Problem(f"environment variable {MAX_BYTES_ENV}", "", value,
                                         "expected a number of bytes, 1 or more")])
        return cls(max_bytes=int(value))


def _problem(path: str, value: object, expected: str, line: int | None = None) -> ScenarioError:
    return ScenarioError([Problem(path, "", value, expected, line)])


def read_text(path: str, limits: Limits | None = None, what: str = "a YAML file", env: str = MAX_BYTES_ENV) -> str:
    """The UTF-8 text of a regular file of at most limits.max_bytes bytes; `what` the file is and
    the environment variable `env` that raises the limit name it in the error (a Terraform plan's
    JSON is read here too)."""
    limits = limits or Limits.from_env()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _problem(path, path, f"cannot read the file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _problem(path, _kind(st.st_mode), "expected a regular file")
        too_big = (f"more than the {limits.max_bytes} bytes {what} may have; set {env} "
                   "to a larger number of bytes to allow it")
        if st.st_size > limits.max_bytes:
            raise _problem(path, f"{st.st_size} bytes", too_big)
        chunks, size = [], 0
        while size <= limits.max_bytes:            # the file may grow while it is read
            chunk = os.read(fd, min(1 << 20, limits.max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limits.max_bytes:
            raise _problem(path, f"over {limits.max_bytes} bytes", too_big)
    except OSError as exc:
        raise _problem(path, path, f"cannot read the file: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _decoded(path, b"".join(chunks))


def read_stream(name: str, stream: BinaryIO, limits: Limits | None = None) -> str:
    """The UTF-8 text of a binary stream (standard input, for `kubevpc apply -f -`), read until it
    ends but never more than limits.max_bytes bytes: /dev/zero behind it fails at once, as a file
    too large does. `name` is what problems call it."""
    limits = limits or Limits.from_env()
    chunks, size = [], 0
    try:
        while size <= limits.max_bytes:
            chunk = stream.read(min(1 << 20, limits.max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise _problem(name, name, f"cannot read it: {exc.strerror}") from None
    if size > limits.max_bytes:
        raise _problem(name, f"over {limits.max_bytes} bytes", f"more than the {limits.max_bytes} bytes a YAML "
                       f"file may have; set {MAX_BYTES_ENV} to a larger number of bytes to allow it")
    return _decoded(name, b"".join(chunks))


def _decoded(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _problem(path, f"byte 0x{data[exc.start]:02x} at byte offset {exc.start}",
                       "expected UTF-8 text", line) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


class LimitError(yaml.YAMLError):
    """A limit of this module, raised by the composer where the document crosses it."""

    def __init__(self, value: str, expected: str, mark):
        super().__init__(f"{value}: {expected}")
        self.value, self.expected, self.problem_mark = value, expected, mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a composer that keeps count: the depth it is at, and for each
    node it finished, the size and height the node has when its aliases are expanded."""

    def __init__(self, text: str, limits: Limits):
        super().__init__(text)
        self.limits = limits
        self.depth = 0
        self.aliased = 0                # nodes the aliases of this document add when expanded

    def compose_document(self):
        self.aliased = 0
        return super().compose_document()

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = getattr(target, "kv_size", None)
                if size is None:
                    raise LimitError(f"alias *{event.anchor}", "it points into the node that holds it (a "
                                     "recursive structure); expected an alias to a finished node", event.start_mark)
                self.aliased += size
                if self.aliased > self.limits.max_alias_nodes:
                    raise LimitError(f"alias *{event.anchor}", "with it, aliases expand the document by more "
                                     f"than the {self.limits.max_alias_nodes} nodes allowed (an alias bomb?); "
                                     "expected fewer aliases of large nodes", event.start_mark)
                if self.depth + target.kv_height > self.limits.max_depth:
                    raise LimitError(f"alias *{event.anchor}", "it nests the document deeper than the "
                                     f"{self.limits.max_depth} levels allowed", event.start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise LimitError(f"level {self.depth}", f"nesting deeper than the {self.limits.max_depth} "
                                 "levels allowed; expected a shallower document", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        node.kv_size = 1 + sum(c.kv_size for c in children)
        node.kv_height = 1 + max((c.kv_height for c in children), default=0)
        return node


def parse(path: str, text: str, limits: Limits | None = None) -> list[tuple[yaml.Node, Any]]:
    """Every document of the text as (composed node, constructed data); empty ones left out."""
    limits = limits or Limits.from_env()
    out = []
    loader = None
    try:
        loader = _Loader(text, limits)         # the reader checks the characters here
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                out.append((node, data))
    except LimitError as exc:
        raise _problem(path, exc.value, exc.expected, exc.problem_mark.line + 1) from None
    except yaml.reader.ReaderError as exc:
        raise _problem(path, f"character #x{exc.character:04x} at character {exc.position}",
                       f"expected printable text ({exc.reason})", text.count("\n", 0, exc.position) + 1) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _problem(path, getattr(exc, "problem", None) or str(exc).splitlines()[0], "expected valid YAML",
                       mark.line + 1 if mark else None) from None
    finally:
        if loader is not None:
            loader.dispose()
    return out
