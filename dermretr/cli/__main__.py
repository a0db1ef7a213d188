"""``python -m dermretr.cli``: the ``dermretr`` command."""

import sys

from . import main

sys.exit(main())
