"""Training composed retrievers on CPU or GPU.

:func:`fit` trains a :class:`~dermretr.models.retriever.Retriever` of any kind
on a case table (``TrainConfig.data`` is a ``SOURCE:PATH`` spec):

* case search: query = (augmented image, its findings text in a random
  style; never the caption, which may name the diagnosis), targets = the
  other in-batch images (a second augmentation); every
  in-batch case of the same diagnosis group is a positive, the query's own
  case is left out;
* modification triplets (DermSynth's ``meta/modifications.csv``): query =
  (reference image, modification text), the exact target is the positive;
* tone triplets (:func:`derive_tone_triplets`, with ``modifications`` and
  ``tone_triplets`` (off by default), when the training cases have skin-tone labels in two ranges or more):
  query = (reference image, "on Fitzpatrick type V-VI skin: " + its
  findings), target = a training case of its diagnosis group in that range;
  every in-batch target of that group and range is a positive (whichever
  triplet brought it), and a modification's exact target is its positive;
* finding triplets (:func:`derive_finding_triplets`, with ``modifications`` and ``finding_triplets`` (off by
  default), when the training cases have annotated 7-point findings): query = (reference image, "with
  irregular streaks"), target = a training case of its group with that finding; every in-batch target of
  that group and finding is a positive;
* class-balanced sampling, mild augmentation (crops, flips, small colour
  jitter), mixed precision on CUDA, fixed seeds;
* each epoch: a progress bar with the loss, validation Recall@K / mAP@K with
  the case protocol, the best checkpoint by ``select_metric``; for the full
  model also the target masks' entropy (fraction of uniform) and overlap, to
  see masks collapsing onto one map.

RUN_DIR holds ``config.json`` (the options, and ``data_split``: where the split of the data came from,
:func:`dermretr.data.split_source`), ``metrics.jsonl`` (one line per epoch),
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically,
loadable with ``weights_only=True``) and ``training_curve.png``.  A run
interrupted at any point continues with ``resume=True`` from the last
completed epoch, with the same result as an uninterrupted run on CPU.
:func:`fit_or_load` trains a run once and reuses it afterwards (notebooks).

Several processes (torchrun)
----------------------------
``torchrun --nproc_per_node N -m dermretr train ...`` (or :func:`fit` in a script started that way; add
``--nnodes``/``--rdzv-endpoint`` for several machines) trains data-parallel: DistributedDataParallel, NCCL on
CUDA (each process on the GPU of its ``LOCAL_RANK``), gloo on CPU.  ``batch_size`` is the global batch: every
process draws the epoch's class-balanced order alike and takes its slice of each global batch, the features
of all processes are gathered (with gradients) so the loss of every process is the loss of the whole global
batch with all of its negatives, and only rank 0 validates and writes the run folder.  Because the global
batches do not depend on the number of processes, ``resume`` continues a run with another number of processes
(the weights and the optimiser's state travel from rank 0).  The run folder must be on a file system rank 0
sees; the others read nothing from it.

What is and is not identical between 1 and N processes: the global batches, texts, triplets and schedule
are; the augmentations and dropout masks are not (each process draws its own; rank 0 those of a one-process
run), and the order of floating-point sums differs (averaged half-batch gradients).  Without random draws the
epoch losses agree to about 1e-7 relative (tests/test_train_distributed.py); with them, as two augmentation
streams would.  Each process holds the training images in memory, as one process does.

Run folder safety
-----------------
* RUN_DIR must be new, empty, or a run folder dermretr wrote (marked with
  ``.dermretr.json``; older runs are recognised by their ``config.json``); a
  folder of the user's is refused, never emptied, and a file is refused.  It is
  checked (and made) before the data is loaded, so an unwritable place fails at
  once.  While :func:`fit` runs, RUN_DIR is locked: a second training into it
  gets a clear error instead of racing the first.  Temporaries left by a killed
  run are removed (with a warning) when the next one starts.
* A folder holding a completed epoch (``checkpoints/last.pt``, ``best.pt`` or
  ``metrics.jsonl``) is only continued with ``resume=True``; one whose first
  epoch never finished (a crash, a full disk) is simply started again.
* A failed write (a full disk...) is an :class:`~dermretr.OutputError` naming
  the file; the previous ``last.pt``/``best.pt`` are left as they were.

Write order and the invariant after a kill
------------------------------------------
Each epoch writes, each file atomically: ``last.pt`` first (weights,
optimiser, history and the best record), then ``metrics.jsonl``, then
``best.pt`` when the epoch improved the best, then the figure.  So ``last.pt``
is always the newest and the reference: ``metrics.jsonl`` and ``best.pt`` are
never newer than it, and at most one step behind.  On ``resume=True`` that step
is repaired from ``last.pt``: ``metrics.jsonl`` is rewritten from its history
when it differs, and when its best record names its own epoch but ``best.pt``
holds another (or is missing), ``best.pt`` is written from its weights.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> from dermretr.train import TrainConfig, fit
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> root = generate(tmp / "ds", n_cases=40, image_size=64, workers=1, progress=False)
>>> cfg = TrainConfig(data=f"synthetic:{root}", out=str(tmp / "run"), epochs=1, batch_size=8,
...                   image_size=64, progress=False)
>>> result = fit(cfg)
>>> sorted(p.name for p in (tmp / "run").iterdir())  # .dermretr.json marks the folder as dermretr's
['.dermretr.json', 'checkpoints', 'config.json', 'metrics.jsonl', 'training_curve.png']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._config import RESUME_KEYS_FREE, TrainConfig, config_from_dict, field_docs, read_run_config

if TYPE_CHECKING:
    from ._distributed import GlobalBatches, RankStopped
    from ._fit import fit, fit_or_load
    from ._loop import TrainResult
    from ._runs import is_run_folder, run_data
    from ._triplets import derive_finding_triplets, derive_tone_triplets

__all__ = ["TrainConfig", "fit", "fit_or_load", "TrainResult", "RESUME_KEYS_FREE", "config_from_dict",
           "read_run_config", "field_docs", "derive_tone_triplets", "derive_finding_triplets", "is_run_folder",
           "run_data", "GlobalBatches", "RankStopped"]

#: Names loaded on first use: they need torch, which TrainConfig (and so ``dermretr --help``) does not.
_LAZY = {"fit": "._fit", "fit_or_load": "._fit", "TrainResult": "._loop", "is_run_folder": "._runs",
         "run_data": "._runs", "derive_tone_triplets": "._triplets", "derive_finding_triplets": "._triplets",
         "GlobalBatches": "._distributed", "RankStopped": "._distributed"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
