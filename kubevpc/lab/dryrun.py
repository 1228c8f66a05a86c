"""What a change would do to a running scenario, planned and not carried out: `kubevpc apply
--dry-run` and `kubevpc delete --dry-run` (Lab.dry_run, over the control channel).

The change is planned exactly as Lab.apply and Lab.delete plan it (kubevpc.lab.changes: the
objects parsed and checked, applied or deleted by kind, namespace and name, planned again against
the running plan, pods that stay keeping their node and address), so a change the planner would
reject is rejected here with the same problems. Nothing is started, removed or handed to the
controller: the Lab's plan, manifests, readiness and labels are left as they are.

The answer says, as kubectl's dry run does (`service/web configured (dry run)`), what would become
of each object (created, configured, unchanged, deleted), which pods would start (node and
address) and which would go (with the grace period they would terminate for), the node uplinks
(ENIs) that would be attached, and what would change in the Services, in the words of the control
channel's `changes` (kubevpc.control.diff).
"""
from __future__ import annotations

import time
from typing import Any

from ..control import diff, summary
from ..errors import KubevpcError
from ..k8s import KINDS, Service
from ..k8s.skipped import group_of
from . import changes

MAX_REF = 600          # characters in a KIND/<namespace>/<name> reference (253 + 63 + the kind and slashes)


def resource(cls: type, name: str) -> str:
    """An object as kubectl prints it: `service/web`, `deployment.apps/web`."""
    api, kind = next((a, k) for (a, k), c in KINDS.items() if c is cls)
    group = group_of(api)
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


def plan_change(lab, objects: list[dict], deletes: list[str], origin: str = "<api>",
                grace_period: int | None = None) -> dict[str, Any]:
    """apply(*objects), then delete(ref) of each of `deletes`, planned against the running plan of
    `lab` and not carried out. Raises as apply and delete would (nothing changes either way)."""
    skipped: list[str] = []
    entries = changes.parse_objects(objects, origin, skipped.append)
    manifests = list(lab.loaded.manifests)
    objects_out = []
    for entry in entries:
        objects_out.append(_applied(manifests, entry, lab.plan))
        manifests = changes.applied(manifests, [entry])
    gone: frozenset[str] = frozenset()
    for ref in deletes:
        if len(ref) > MAX_REF:
            raise KubevpcError(f"a reference of {len(ref)} characters; expected KIND/<namespace>/<name>, at most "
                               f"{MAX_REF}")
        if _pod_key(ref) in lab.terminating:       # deleted again: only its grace period may shorten
            objects_out.append({**_deleted(ref), "action": "deleted (already terminating)"})
            continue
        manifests, pods = changes.deleted(manifests, lab.plan, ref)
        gone |= pods
        objects_out.append(_deleted(ref))
    return _planned(lab, manifests, gone, grace_period) | {"objects": objects_out, "skipped": skipped}


def _planned(lab, manifests: list, gone: frozenset[str], grace_period: int | None) -> dict[str, Any]:
    """The change planned as Lab._replan plans it: the pods it removes with a grace period stay,
    terminating, in what happens at once (the Services' `changes`)."""
    wall = time.time()
    change = changes.replan(lab.loaded, lab.plan, lab.run, manifests, lab.ready, lab.labels,
                            lab.terminating.keys(), gone, wall)
    removed = [_removed(h, grace_period) for h in change.removed if h.kind == "pod"]
    graceful = frozenset(r["pod"] for r in removed if r["grace_period_s"] > 0 and r["pod"] not in lab.terminating)
    at_once = change if not graceful else changes.replan(lab.loaded, lab.plan, lab.run, manifests, lab.ready,
                                                          lab.labels, lab.terminating.keys() | graceful, gone, wall)
    return {"dry_run": True,
            "pods_started": [{"pod": h.key, "node": h.node, "ip": h.ip} for h in change.added if h.kind == "pod"],
            "pods_removed": removed,
            "uplinks": [f"{node}: an ENI on {u.vswitch}" for node, u in change.uplinks],
            "changes": diff(summary(lab.plan), summary(at_once.plan))}


def _applied(manifests: list, entry, plan) -> dict[str, str]:
    """What applying one object would do to it: created, configured or unchanged."""
    obj, cls = entry.obj, type(entry.obj)
    meta = obj.metadata
    at = changes.find_manifest(manifests, cls, meta.namespace, meta.name)
    if at is None:
        action = "created"
    else:
        old = manifests[at].obj
        if isinstance(obj, Service):      # the API server keeps a ClusterIP and NodePorts: so does the compare
            obj, old = changes.keep_allocations(obj, plan), changes.keep_allocations(old, plan)
        action = "unchanged" if old == obj else "configured"
    return {"object": resource(cls, meta.name), "namespace": _namespace(obj), "action": action}


def _deleted(ref: str) -> dict[str, str]:
    kind, _, rest = ref.partition("/")
    ns, _, name = rest.rpartition("/")
    cls = changes.DELETABLE[kind.lower()]
    return {"object": resource(cls, name), "namespace": ns or "default", "action": "deleted"}


def _pod_key(ref: str) -> str:
    """The key of the pod `ref` names (pod/<ns>/<name>), or ""."""
    kind, _, rest = ref.partition("/")
    ns, _, name = rest.rpartition("/")
    return f"pod/{ns or 'default'}/{name}" if kind.lower() in ("pod", "po") and name else ""


def _removed(h, grace_period: int | None) -> dict[str, Any]:
    grace = h.grace_period if grace_period is None else grace_period
    return {"pod": h.key, "node": h.node, "grace_period_s": 0 if h.terminating else grace}


def _namespace(obj) -> str:
    """The object's namespace; "" for the cluster-scoped kinds (Namespace, PodNetworking)."""
    return "" if type(obj).__name__ in ("Namespace", "PodNetworking") else obj.metadata.namespace
