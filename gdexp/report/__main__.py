"""`python -m gdexp.report NAME`."""

import sys

from gdexp import stopping, store
from gdexp.report import main

code = main()
store.close()  # its writes (the report logged to the run) folded into mlflow.db, as `python -m gdexp` leaves it
stopping.spare_exit_collection()  # after the files are written: the exit skips its last garbage collection
sys.exit(code)
