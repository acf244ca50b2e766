"""``python -m clgrid.doctor``: the same as ``clgrid doctor``."""

import sys

from clgrid.doctor.command import main

sys.exit(main())
