"""Deprecated home of the scenario loader: it is kubevpc.scenario.load now. Kept so that
`from kubevpc.load import load` goes on working."""
import warnings

warnings.warn("kubevpc.load is deprecated: import kubevpc.scenario.load", DeprecationWarning, stacklevel=2)
from .scenario.load import *  # noqa: F401,F403
