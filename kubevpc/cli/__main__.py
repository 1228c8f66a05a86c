# PYTHON_ARGCOMPLETE_OK
"""`python -m kubevpc.cli`: the `kubevpc` command."""
import sys

from . import main

sys.exit(main())
