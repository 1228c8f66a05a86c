"""The Debian package registry the machine's apt uses, read from its sources, for the VM's image.

The image is built from the registry this machine already reaches, never from a host written
into the code: apt's own files say where it is. Both of apt's formats are read, as apt reads them:
/etc/apt/sources.list and sources.list.d/*.list (one-line: `deb [opts] URI SUITE COMPONENT...`),
and sources.list.d/*.sources (deb822 stanzas: Types, URIs, Suites, Components, Signed-By,
Enabled). Files with other names (`*.disabled`, `*.save`) are not read, as apt does not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import KubevpcError

APT_DIR = "/etc/apt"
SUITE = "bookworm"                                      # Debian 12
GUEST_SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class NoMirror(KubevpcError):
    """No Debian 12 entry in apt's sources, and none given."""


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str = ""          # a keyring file, when the entry names one
    origin: str = ""             # file (and line) it came from, for messages

    def deb822(self) -> str:
        """This entry as a deb822 stanza (the guest's /etc/apt/sources.list.d/debian.sources)."""
        lines = ["Types: deb", f"URIs: {self.uri}", f"Suites: {self.suite}", f"Components: {' '.join(self.components)}"]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def parse_one_line(text: str, origin: str) -> list[Source]:
    """Entries of a one-line-format file: `deb [key=value ...] URI SUITE COMPONENT...`."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue                                        # deb-src, blank, comment
        line = line[4:].strip()
        options = {}
        if line.startswith("["):
            opts, _, line = line[1:].partition("]")
            options = dict(o.split("=", 1) for o in opts.split() if "=" in o)
        words = line.split()
        if len(words) >= 3 and options.get("enabled", "yes") != "no":
            out.append(Source(words[0].rstrip("/"), words[1], tuple(words[2:]), _keyring(options.get("signed-by", "")),
                              f"{origin}:{n}"))
    return out


def parse_deb822(text: str, origin: str) -> list[Source]:
    """Entries of a deb822 `.sources` file: one Source per URI and suite of each `Types: deb` stanza."""
    out = []
    for n, stanza in enumerate(_stanzas(text), 1):
        if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes").lower() == "no":
            continue
        comps = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            for suite in stanza.get("suites", "").split():
                out.append(Source(uri.rstrip("/"), suite, comps, _keyring(stanza.get("signed-by", "")),
                                  f"{origin} (stanza {n})"))
    return out


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 stanzas as {lowercased field: value}; continuation lines join their field."""
    stanzas, cur, last = [], {}, None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, None
        elif raw[0] in " \t" and last:
            cur[last] += "\n" + raw.strip()
        elif ":" in raw:
            key, _, value = raw.partition(":")
            last = key.strip().lower()
            cur[last] = value.strip()
    return stanzas


def _keyring(value: str) -> str:
    """A Signed-By that names a file (an inline key block, or a fingerprint, is not kept)."""
    value = value.strip()
    return value if value.startswith("/") and "\n" not in value else ""


def read_sources(apt_dir: str = APT_DIR) -> list[Source]:
    """Every deb entry apt reads, in apt's order: sources.list, then sources.list.d by name."""
    files = [os.path.join(apt_dir, "sources.list")]
    parts = os.path.join(apt_dir, "sources.list.d")
    if os.path.isdir(parts):
        files += [os.path.join(parts, f) for f in sorted(os.listdir(parts)) if f.endswith((".list", ".sources"))]
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        out += parse_deb822(text, path) if path.endswith(".sources") else parse_one_line(text, path)
    return out


def debian_sources(sources: list[Source]) -> list[Source]:
    """The entries of Debian 12 itself (bookworm, -updates, -security) with the main component."""
    return [s for s in sources if s.suite in GUEST_SUITES and "main" in s.components]


def mirror(sources: list[Source], given: str = "") -> Source:
    """The registry to debootstrap from: `given` (a URI) when there is one, else apt's first
    `bookworm main` entry. NoMirror says what to do when there is neither."""
    if given:
        return Source(given.rstrip("/"), SUITE, ("main",), "", "--mirror")
    for s in debian_sources(sources):
        if s.suite == SUITE:
            return s
    raise NoMirror(f"apt's sources ({APT_DIR}/sources.list, {APT_DIR}/sources.list.d/*.list and *.sources) have "
                   f"no Debian 12 entry (`deb URI {SUITE} main`): expected one, since the VM is debootstrapped from "
                   "the registry this machine's apt uses; give it with --mirror URI (or KUBEVPC_VM_MIRROR)")


def guest_sources(sources: list[Source], base: Source) -> str:
    """The guest's debian.sources: the machine's Debian 12 entries (or the mirror alone), so the
    guest's apt reaches what the machine's reaches."""
    entries = debian_sources(sources) or [base]
    seen, text = set(), []
    for s in entries:
        if (s.uri, s.suite) not in seen:
            seen.add((s.uri, s.suite))
            # the guest has Debian's keyrings only: another keyring file of the machine's is not there
            keep = s.signed_by.startswith(os.path.dirname(DEFAULT_KEYRING) + "/debian-archive")
            text.append(Source(s.uri, s.suite, s.components, s.signed_by if keep else "").deb822())
    return "\n".join(text)


def keyring(base: Source) -> str:
    """The keyring debootstrap checks the registry's signatures with: the entry's own, else
    Debian's; "" when neither file is there (debootstrap then uses its default)."""
    for path in (base.signed_by, DEFAULT_KEYRING):
        if path and os.path.isfile(path):
            return path
    return ""
