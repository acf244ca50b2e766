"""``python -m clgrid.worker <verb> ...``: the ``clgrid`` console script, as ``python -m`` runs it."""

import sys

from clgrid.worker import main

sys.exit(main())
