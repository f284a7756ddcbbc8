"""`python -m gdexp.report NAME`."""

# ruff: noqa: E402 -- the imports come after stopping.exit_at_once(): an import cut by Ctrl-C prints a traceback

import sys

from gdexp import stopping

stopping.exit_at_once()  # Ctrl-C during the imports below: nothing is open yet, so end at once, quietly

from gdexp import store
from gdexp.report import main

code = main()
store.close()  # its writes (the report logged to the run) folded into mlflow.db, as `python -m gdexp` leaves it
stopping.spare_exit_collection()  # after the files are written: the exit skips its last garbage collection
sys.exit(code)
