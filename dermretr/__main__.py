"""``python -m dermretr``: the ``dermretr`` command (also ``torchrun --nproc_per_node N -m dermretr train ...``)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
