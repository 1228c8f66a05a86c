"""Deprecated home of the Plan and make_plan: both now live in kubevpc.planning (the Plan's parts
in kubevpc.planning.model, the stages beside them). Kept so that `from kubevpc.plan import
make_plan, Plan, ...` goes on working."""
import warnings

warnings.warn("kubevpc.plan is deprecated: import kubevpc.planning", DeprecationWarning, stacklevel=2)
from .planning import *  # noqa: F401,F403
from .planning import __all__  # noqa: F401
