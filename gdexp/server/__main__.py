"""`python -m gdexp.server`."""

# ruff: noqa: E402 -- the imports come after stopping.exit_at_once(): an import cut by Ctrl-C prints a traceback

import sys

from gdexp import stopping

stopping.exit_at_once()  # Ctrl-C during the imports below: nothing is open yet, so end at once, quietly

from gdexp.server import main

sys.exit(main())
