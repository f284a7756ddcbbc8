"""`python -m gdexp.report NAME`."""

import sys

from gdexp import stopping
from gdexp.report import main

code = main()
stopping.spare_exit_collection()  # after the files are written: the exit skips its last garbage collection
sys.exit(code)
