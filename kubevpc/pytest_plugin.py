"""pytest plugin (registered by the package): the `lab` fixture, defined in kubevpc.testing."""
from kubevpc.testing import *  # noqa: F401,F403
