"""A run's name: the rule every run name meets. Standard library only, so that what checks a name
(the planner, the ledger in every daemon) pays nothing to import it."""
from __future__ import annotations

import re

MAX_TAG = 6              # a run's name starts every interface name, which must fit in IFNAMSIZ (15)
RUN_NAME = re.compile(rf"^[a-z][a-z0-9]{{0,{MAX_TAG - 1}}}$")
