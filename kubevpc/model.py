"""Deprecated home of the scenario schema: it is kubevpc.scenario.model now. Kept so that
`from kubevpc.model import Scenario` goes on working."""
from .scenario.model import *  # noqa: F401,F403
