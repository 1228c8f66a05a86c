"""How the controller sends a change, set by environment variables (standard library only: the
builder checks them before it starts the controller, which inherits its environment).

    KUBEVPC_BUNDLE=1    (default) each change to a bridge goes in one atomic OpenFlow bundle
                        (ONF extension 230): the switch applies all of it at once, or none
    KUBEVPC_BUNDLE=0    the same messages back to back, in one write, without a bundle
    KUBEVPC_PURGE=1     (default) after every change, once each bridge it touched has answered
                        its barrier, `ovs-appctl revalidator/purge` empties Open vSwitch's
                        datapath flow cache, so no packet takes a path the flows no longer hold
    KUBEVPC_PURGE=0     the revalidators bring the cache up to date. Measured: NetworkPolicy
                        changes made right after probes (tests/e2e/test_netpol.py, eni) then let
                        a few denied connections through; the revalidators' two cycles that the
                        Lab waits for did not catch every cached flow

docs/performance.md ("A change reaches the datapath") says what each costs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

BUNDLE_ENV, PURGE_ENV = "KUBEVPC_BUNDLE", "KUBEVPC_PURGE"
DEFAULTS = {BUNDLE_ENV: True, PURGE_ENV: True}
MEANING = {BUNDLE_ENV: ("1 (each change to a bridge in one OpenFlow bundle)", "0 (the messages without a bundle)"),
           PURGE_ENV: ("1 (empty the datapath's flow cache after a change)", "0 (leave it to the revalidators)")}


def setting(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """One switch: "1" or "0"; unset or empty: its default. Anything else is refused by name and value."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if value == "":
        return DEFAULTS[name]
    if value in ("0", "1"):
        return value == "1"
    on, off = MEANING[name]
    raise ValueError(f"environment variable {name}={value!r}: expected {on}, {off} or unset "
                     f"(default {int(DEFAULTS[name])})")


def settings(environ: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Both switches: {"bundle": ..., "purge": ...}."""
    return {"bundle": setting(BUNDLE_ENV, environ), "purge": setting(PURGE_ENV, environ)}
