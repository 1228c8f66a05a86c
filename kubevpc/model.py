"""Deprecated home of the scenario schema: it is kubevpc.scenario.model now. Kept so that
`from kubevpc.model import Scenario` goes on working."""
import warnings

warnings.warn("kubevpc.model is deprecated: import kubevpc.scenario.model", DeprecationWarning, stacklevel=2)
from .scenario.model import *  # noqa: F401,F403
