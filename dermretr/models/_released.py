"""The released model's name and the DermSynth data seeds reserved for it (no torch: cheap to import).

``scripts/release_dermsynth_tiny.py`` trains ``dermretr/dermsynth-tiny`` on data seed
:data:`RELEASED_DATA_SEED` and measures it on :data:`RELEASED_FRESH_SEED`; no default of the
course, the demo or ``dermretr synth`` uses either seed, so a data set they generate never holds
the released model's training patients.  ``dermretr demo --released`` evaluates it on the fresh
seed (the queries of its model card).

>>> RELEASED, RELEASED_DATA_SEED, RELEASED_FRESH_SEED
('dermretr/dermsynth-tiny', 1000, 1001)
"""

from __future__ import annotations

__all__ = ["RELEASED", "RELEASED_DATA_SEED", "RELEASED_FRESH_SEED"]

#: The released model shipped with dermretr: the course notebooks, the query builder and
#: ``dermretr index``/``search`` use it unless told to train or given another model.
RELEASED = "dermretr/dermsynth-tiny"
#: DermSynth data seed of its training data (1,000 cases at 128 px).
RELEASED_DATA_SEED = 1000
#: DermSynth data seed of the fresh data set its model card reports.
RELEASED_FRESH_SEED = 1001
