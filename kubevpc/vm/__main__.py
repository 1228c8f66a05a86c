"""`python -m kubevpc.vm`: see kubevpc/vm/cli.py."""
import sys

from .cli import main

sys.exit(main())
