"""Error types shared across dermretr.

Every error raised because of *user input* (a bad file, a bad value, a bad
option) derives from :class:`DermretrError`.  The command line interface
prints such errors as one line, without a traceback, and exits with code 2.
"""

from __future__ import annotations

__all__ = ["DermretrError", "CaseTableError", "VocabularyError", "OutputError", "DataWarning"]


class DermretrError(Exception):
    """Base class for errors caused by user input; the CLI prints them plainly."""


class CaseTableError(DermretrError, ValueError):
    """A case table does not follow the schema of :mod:`dermretr.data.cases`."""


class VocabularyError(DermretrError, ValueError):
    """A criterion, criterion value or diagnosis is not in the vocabulary."""


class OutputError(DermretrError, OSError):
    """An output location cannot be used (exists, not writable, ...)."""


class DataWarning(UserWarning):
    """Something in a dataset was dropped, repaired or guessed (missing images, case-mismatched names...)."""
