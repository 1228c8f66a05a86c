"""Deprecated home of the scenario loader: it is kubevpc.scenario.load now. Kept so that
`from kubevpc.load import load` goes on working."""
from .scenario.load import *  # noqa: F401,F403
