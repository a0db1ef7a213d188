"""One loader per public dataset layout; each returns a validated case table.

Use :func:`dermretr.data.load` (``load("ham10000", root)`` or
``load("ham10000:/path")``); the modules here are imported on demand.
"""

from __future__ import annotations
