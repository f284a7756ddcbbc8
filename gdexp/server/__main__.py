"""`python -m gdexp.server`."""

import sys

from gdexp.server import main

sys.exit(main())
