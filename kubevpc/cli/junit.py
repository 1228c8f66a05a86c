"""JUnit XML reports (`kubevpc check --junit FILE`, `kubevpc matrix --junit FILE`), for CI systems.

One <testsuite> per scenario and mode, one <testcase> per check or per matrix cell. A case that
failed carries a <failure> whose message is the evaluator's reason (and, for a check, what the run
knows of a failure besides: a stopped server); its text says what was expected and what was
observed. A case that passed carries the same reason as its <system-out>, so a CI page shows why
each path connects or not. Times are the probes' own, in seconds.

The structure is the one Jenkins reads (the xunit plugin's junit-10.xsd, which GitLab, GitHub
Actions' reporters and cilium's and cyclonus' --junit output follow too): <testsuites> holding
<testsuite name tests failures errors skipped time timestamp hostname>, its <properties>, then
<testcase name classname time> with at most one <failure>, <error> or <skipped> and a
<system-out>. tests/unit/test_cli_output.py validates what this module writes against a copy of
that structure.

Written with xml.etree (standard library), which escapes markup; characters XML 1.0 cannot carry
at all (control characters other than tab and newline) are written as \\xNN first, so a hostile
name or reason can neither break the file nor inject elements.
"""
from __future__ import annotations

import os
import re
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..errors import KubevpcError
from ..rundir import atomic_write

# what XML 1.0 may carry (https://www.w3.org/TR/xml/#charsets); everything else is escaped
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """Text XML 1.0 can carry: control characters written as \\xNN, lone surrogates as \\uNNNN."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        str(text))


@dataclass
class Case:
    """One test case: a check or a matrix cell."""

    name: str
    classname: str
    time: float = 0.0
    failure: str | None = None       # the failure's message (the evaluator's reason)
    kind: str = ""                   # the failure's type, e.g. unexpected-refusal
    details: str = ""                # the failure's text
    output: str = ""                 # <system-out>
    error: str | None = None         # the case could not be run (the build failed)
    skipped: str | None = None       # not probed


@dataclass
class Suite:
    """One scenario in one mode."""

    name: str
    cases: list[Case] = field(default_factory=list)
    time: float = 0.0
    timestamp: str = ""
    properties: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"tests": len(self.cases), "failures": sum(c.failure is not None for c in self.cases),
                "errors": sum(c.error is not None for c in self.cases),
                "skipped": sum(c.skipped is not None for c in self.cases)}


def timestamp(t: float | None = None) -> str:
    """The local time as Ant's JUnit task writes it (ISO 8601 without a zone)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if t is None else t))


def _seconds(t: float) -> str:
    return f"{max(t, 0.0):.3f}"


def _case(parent: ET.Element, c: Case) -> None:
    el = ET.SubElement(parent, "testcase", name=xml_text(c.name), classname=xml_text(c.classname),
                       time=_seconds(c.time))
    for tag, message in (("error", c.error), ("failure", c.failure), ("skipped", c.skipped)):
        if message is not None:
            sub = ET.SubElement(el, tag, message=xml_text(message))
            if tag == "failure" and c.kind:
                sub.set("type", xml_text(c.kind))
            if tag != "skipped" and c.details:
                sub.text = xml_text(c.details)
    if c.output:
        ET.SubElement(el, "system-out").text = xml_text(c.output)


def to_xml(suites: list[Suite], name: str = "kubevpc") -> bytes:
    """The report as UTF-8 XML with its declaration."""
    root = ET.Element("testsuites", name=xml_text(name))
    totals = {"tests": 0, "failures": 0, "errors": 0}
    host = socket.gethostname()
    for s in suites:
        counts = s.counts()
        for k in totals:
            totals[k] += counts[k]
        el = ET.SubElement(root, "testsuite", name=xml_text(s.name), **{k: str(v) for k, v in counts.items()},
                           time=_seconds(s.time), timestamp=s.timestamp or timestamp(), hostname=xml_text(host))
        if s.properties:
            props = ET.SubElement(el, "properties")
            for k, v in s.properties.items():
                ET.SubElement(props, "property", name=xml_text(k), value=xml_text(v))
        for c in s.cases:
            _case(el, c)
    root.set("time", _seconds(sum(s.time for s in suites)))
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root, space=" ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def check_path(path: str) -> None:
    """Refuse, before anything is built or probed, a report that could not be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise KubevpcError(f"--junit {path}: a directory; expected a file name")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise KubevpcError(f"--junit {path}: cannot write in {folder} (no such directory, or not writable)")


def write(path: str, suites: list[Suite]) -> None:
    """Write the report to `path` (replaced whole: a CI job never reads half a file)."""
    try:
        atomic_write(path, to_xml(suites), 0o644, umask=True)
    except OSError as exc:
        raise KubevpcError(f"cannot write the JUnit report {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------------- the reports
def _classname(kind: str, file: str, mode: str) -> str:
    """kubevpc.check.default.vxlan: CI systems group cases by the dotted prefix."""
    stem = os.path.splitext(os.path.basename(file))[0] if file else "run"
    return f"kubevpc.{kind}.{re.sub(r'[^A-Za-z0-9_-]', '_', stem)}.{mode or 'none'}"


def check_case(o, classname: str) -> Case:
    """A check's outcome (kubevpc.lab.checks.Outcome) as a case."""
    c = o.check
    case = Case(f"{c.title}: {c.source} -> {c.dest} {c.port}/{c.proto}", classname, o.elapsed_ms / 1000)
    if o.passed:
        case.output = c.reason
        return case
    if o.connected != c.expect:
        case.kind = "unexpected-connection" if o.connected else "unexpected-refusal"
    else:
        case.kind = "wrong-client-address"
    case.failure = o.why
    seen = o.client or "-"
    case.details = (f"expected: {'connect' if c.expect else 'refuse'}"
                    + (f" (the server sees {c.seen_source})" if c.expect and c.seen_source else "")
                    + f"\nobserved: {o.outcome}" + (f" (the server saw {seen})" if o.connected else "")
                    + f"\nevaluator: {c.reason}" + (f"\nrun: {o.note}" if o.note else ""))
    return case


def check_suite(outcomes: list, file: str, mode: str, took: float, started: float,
                properties: dict[str, str] | None = None) -> Suite:
    """`kubevpc check`: a case per check."""
    classname = _classname("check", file, mode)
    return Suite(f"kubevpc check {file} ({mode or 'no cluster'})", [check_case(o, classname) for o in outcomes],
                 took, timestamp(started), {"scenario": file, "mode": mode or "", **(properties or {})})


def cell_case(cell: dict, classname: str) -> Case:
    """A matrix cell (as Matrix.as_dict() has it) as a case."""
    name = (f"{cell['source']} -> {cell['dest']} {cell['port']}/{cell['protocol']}"
            + (" (IPv6)" if cell.get("family", 4) == 6 else ""))
    case = Case(name, classname, cell.get("elapsed_ms", 0.0) / 1000)
    expected, observed, reason = cell["expected"], cell.get("observed"), cell["reason"]
    if observed is None:
        case.skipped = "not probed"
        case.output = reason
    elif expected is not None and observed != expected:
        case.failure, case.kind = reason, "unexpected-connection" if observed else "unexpected-refusal"
        case.details = (f"expected: {'connect' if expected else 'refuse'}\nobserved: {cell.get('outcome') or observed}"
                        f"\nevaluator: {reason}")
    else:
        case.output = reason if expected is not None else f"either outcome is right: {reason}"
    return case


def matrix_suite(doc: dict, file: str, started: float, properties: dict[str, str] | None = None) -> Suite:
    """A probed reachability matrix (Matrix.as_dict()): a case per cell."""
    mode = doc.get("mode") or ""
    classname = _classname("matrix", file, mode)
    return Suite(f"kubevpc matrix {file} ({mode or 'no cluster'})", [cell_case(c, classname) for c in doc["cells"]],
                 doc.get("probe_s", 0.0), timestamp(started), {"scenario": file, "mode": mode, **(properties or {})})


def error_suite(kind: str, file: str, mode: str, message: str, took: float, started: float) -> Suite:
    """A run that could not be checked (the build failed): one case in error, so CI reports it."""
    case = Case("build", _classname(kind, file, mode), took, error=message, details="")
    return Suite(f"kubevpc {kind} {file} ({mode or 'no cluster'})", [case], took, timestamp(started),
                 {"scenario": file, "mode": mode})
