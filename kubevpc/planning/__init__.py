"""Planning: a validated scenario becomes a Plan, the complete description of what to build.

    from kubevpc.planning import make_plan
    plan = make_plan(kubevpc.scenario.load.load("scenario.yaml"), "kv")

`model` holds the Plan and its parts, `names` every name a run gives, `planner` the sequence of
stages (cloud, addresses, cluster, workloads, hosts, services, SLBs, internet, routes, bridges),
each in a module of its own. docs/design.md has the module map.
"""
from .model import *  # noqa: F401,F403 - the Plan's parts are this package's interface
from .model import __all__ as _model
from .bridges import has_csum_hops, with_csum_hops
from .names import IFNAMSIZ, Names
from .planner import make_plan
from .unenforced import plan_warnings

__all__ = [*_model, "IFNAMSIZ", "Names", "has_csum_hops", "make_plan", "plan_warnings", "with_csum_hops"]
