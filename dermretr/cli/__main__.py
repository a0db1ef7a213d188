"""``python -m dermretr.cli``: the ``dermretr`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
