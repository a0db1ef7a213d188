"""The training options: :class:`TrainConfig`, its checks, and reading it back from a run's ``config.json``.

This module imports neither torch nor numpy at load time, so that the command
line can build its ``train`` options from :class:`TrainConfig` (its fields and
the Parameters section of its docstring, see :func:`field_docs`) and still
answer ``dermretr --help`` at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import DermretrError

__all__ = ["TrainConfig", "RESUME_KEYS_FREE", "RECORDED_KEYS", "config_from_dict", "read_run_config", "field_docs",
           "plain", "check_data_options"]

#: Config keys that may differ when resuming (everything else must match the run; ``out`` may differ
#: because a run folder may be moved or named another way).
RESUME_KEYS_FREE = ("epochs", "resume", "progress", "device", "num_workers", "out")

#: Keys of a run's ``config.json`` that record what the run found rather than an option: ``data_split``, where
#: the split of its data came from (:func:`dermretr.data.split_source`; runs of an older dermretr lack it).
RECORDED_KEYS = ("data_split",)

#: TrainConfig's initial weight of local evidence: :data:`dermretr.models.embeddings.DEFAULT_ALPHA`, written out
#: so that the command line builds its options without importing numpy or torch (a test keeps the two equal).
DEFAULT_ALPHA = 0.6

_DEVICE_RE = re.compile(r"^(?:auto|cpu|mps|cuda(?::[0-9]+)?)$")
_STR_FIELDS = ("data", "out", "model", "backbone", "balance_by", "select_metric", "device")
_BOOL_FIELDS = ("learn_alpha", "freeze_backbone", "text_skip", "balanced", "augment", "modifications", "tone_triplets",
                "finding_triplets", "resume", "progress")
#: integer fields and their least value
_INT_FIELDS = {"epochs": 1, "batch_size": 2, "image_size": 1, "n_masks": 1, "seed": 0, "num_workers": 0}
#: float fields: (least value, whether the least value itself is allowed, greatest value or None)
_FLOAT_FIELDS: dict[str, tuple[float, bool, float | None]] = {
    "lr": (0.0, False, None), "weight_decay": (0.0, True, None), "alpha": (0.0, True, 1.0),
    "alpha_lr_mult": (0.0, False, None), "patient_weight": (0.0, True, None), "word_region_weight": (0.0, True, None),
    "hair_augment": (0.0, True, 1.0),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as RUN_DIR/config.json).

    Each field is an option of ``dermretr train`` (``batch_size`` is
    ``--batch-size``); its help text is the field's entry below.

    Parameters
    ----------
    data : str
        SOURCE:PATH of the case table, e.g. synthetic:./dermsynth.
    out : str
        The run folder (RUN_DIR).
    model : str
        Retriever kind: full (global+local), global, clip4cir, late_fusion, image or text.
    backbone : str
        open_clip architecture, hf-hub:ORG/REPO or local-dir:PATH (see :func:`dermretr.models.backbones.create`).
    pretrained : str, optional
        open_clip pretrained tag or a local weights file.
    epochs : int
        Training epochs.
    batch_size : int
        In-batch size, also the number of negatives (at least 2); under torchrun the global batch, split over
        the processes.
    image_size : int
        Input image side in pixels.
    lr : float
        AdamW learning rate (cosine schedule with a short warm-up).
    weight_decay : float
        AdamW weight decay (none on alpha, biases, norms or the temperature).
    n_masks : int
        Spatial masks M of the full model.
    alpha : float
        Initial weight of local evidence, in [0, 1].
    learn_alpha : bool
        Learn alpha (``--fixed-alpha`` keeps it fixed).
    alpha_lr_mult : float
        Alpha learns this many times faster than the rest.
    freeze_backbone : bool
        Train only the heads.
    text_skip : bool
        Global and full models: the composers start as late fusion (a learned-scale text term); off is the
        ablation, the composer of runs before checkpoint format 4.
    balanced : bool
        Balanced sampling over the strata of balance_by.
    balance_by : str
        Comma-separated case-table columns whose value combinations are sampled equally often, e.g.
        diagnosis_group,fitzpatrick (which also balances skin types, a fairness mitigation); unknown values form
        their own stratum.
    augment : bool
        Mild augmentation (crops, flips, small colour jitter).
    hair_augment : float
        Probability that a training view also gets 1-8 thin dark curves drawn across it, like hairs (a dermoscopy
        augmentation, with augment; 0 = off). On PH2 it helped the composed model, +0.019 [0.001, 0.038] macro
        mAP@10 at 0.6 (README).
    modifications : bool
        Also train on triplets: DermSynth's modification triplets when the data has them, and (with
        tone_triplets) tone triplets.
    tone_triplets : bool
        With modifications: also tone triplets ("this case, on darker skin", derived from skin-type labels in two
        ranges or more), needed for the tone protocol at a cost to case and modification search.
    finding_triplets : bool
        With modifications: also finding triplets ("this case, with irregular streaks": a training case of the
        same group with that annotated finding is the answer; derived from 7-point findings, e.g. Derm7pt or
        PH2), so that the image side learns to see the findings a text names. On PH2 (three seeds) they lifted
        the composed model's case search by +0.037 [0.009, 0.066] macro mAP@10 and its modification queries
        by +0.033 [0.021, 0.045], and the other fusion models by about as much; on DermSynth, beside its
        exact-target modification triplets, they cost 0.04 case mAP@10 and 0.31 modification mAP@10 (README).
    patient_weight : float
        Weight of the optional SLIMP-style patient-level loss term (0 = off).
    word_region_weight : float
        Weight of the optional AFLoc-style word-region loss term (0 = off).
    select_metric : str
        Validation metric that picks best.pt: recall@K, precision@K, map@K, ndcg@K or mrr.
    seed : int
        Seed of everything.
    device : str
        auto (CUDA when present), cpu, cuda, cuda:N or mps.
    num_workers : int
        Data-loader worker processes (0: load in the training process).
    resume : bool
        Continue the run in the out folder.
    progress : bool
        Show progress bars.
    data_options : dict
        Options of the data's loader, e.g. {"image": "clinic"} (-o KEY=VALUE on the command line; see
        :func:`dermretr.data.loader_options`); evaluate, index and fairness reuse them for the run.
    extra : dict
        Free-form JSON values saved with the run (Python only: no command-line option).

    Notes
    -----
    Tone triplets are off by default: on DermSynth (1,000 cases, seed 0) they lift the tone protocol's macro
    mAP@10 from 0.03 (random) to 0.24, above the asked range alone (filter-only 0.13) but below the range
    with its most common group first (majority 0.34) or with the best-agreeing findings first (criteria
    match 0.40), and they cut case search from 0.44 to 0.30 mAP@10 and modification Recall@1 from 0.53 to 0.18.
    """

    data: str
    out: str
    model: str = "full"
    backbone: str = "dermretr-tiny"
    pretrained: str | None = None
    epochs: int = 15
    batch_size: int = 64
    image_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    n_masks: int = 4
    alpha: float = DEFAULT_ALPHA
    learn_alpha: bool = True
    alpha_lr_mult: float = 20.0
    freeze_backbone: bool = False
    text_skip: bool = True
    balanced: bool = True
    balance_by: str = "diagnosis_group"
    augment: bool = True
    hair_augment: float = 0.0
    modifications: bool = True
    tone_triplets: bool = False
    finding_triplets: bool = False
    patient_weight: float = 0.0
    word_region_weight: float = 0.0
    select_metric: str = "map@10"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    resume: bool = False
    progress: bool = True
    data_options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`DermretrError` for values that cannot work (of a wrong type, out of range, not finite)."""
        import numpy as np

        from .._checks import METRIC_RE, check_int, is_int
        from ..models.retriever import KINDS

        for name in _STR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DermretrError(f"{name} must be a non-empty string, got {value!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise DermretrError(f"pretrained must be a pretrained tag or the path of a weights file (a string) or "
                                f"None, got {self.pretrained!r}")
        if self.model not in KINDS:
            raise DermretrError(f"unknown model {self.model!r}; choose from {', '.join(KINDS)}")
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise DermretrError(f"{name} must be True or False, got {value!r}")
        for name, least in _INT_FIELDS.items():
            value = getattr(self, name)
            if not is_int(value):
                raise DermretrError(f"{name} must be an integer, got {value!r}")
            if name == "batch_size" and value < least:
                raise DermretrError(f"batch_size must be at least 2, got {value!r}: the other cases in a batch "
                                    "are the negatives")
            check_int(value, name, least, what="a positive integer" if least else "an integer >= 0")
        if self.seed >= 2**32:
            raise DermretrError(f"seed must be below 2**32, got {self.seed!r}")
        for name, (low, inclusive, high) in _FLOAT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise DermretrError(f"{name} must be a number, got {value!r}")
            number = float(value)
            ok = math.isfinite(number) and (number >= low if inclusive else number > low) and (
                high is None or number <= high)
            if not ok:
                want = (f"in [{low:g}, {high:g}]" if high is not None
                        else f"{'>=' if inclusive else '>'} {low:g}")
                raise DermretrError(f"{name} must be a finite number {want}, got {value!r}")
        if self.hair_augment > 0 and not self.augment:
            raise DermretrError(f"hair_augment={self.hair_augment:g} draws hairs on augmented training views: "
                                "turn augment on, or set hair_augment to 0")
        if not METRIC_RE.match(self.select_metric):
            raise DermretrError(f"select_metric {self.select_metric!r} is not a retrieval metric: use recall@K, "
                                "precision@K, map@K or ndcg@K with K a positive integer (e.g. map@10), or mrr")
        if not _DEVICE_RE.match(self.device):
            raise DermretrError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N or mps")
        check_data_options(self.data, self.data_options)
        if not isinstance(self.extra, dict):
            raise DermretrError(f"extra must be a dict, got {self.extra!r}")
        try:
            json.dumps(self.extra, default=plain)
        except (TypeError, ValueError) as exc:
            raise DermretrError(f"extra must hold JSON values only (it is saved in config.json): {exc}") from None


def check_data_options(data: str, options: object) -> None:
    """Loader options as a run saves them: a dict of option names to text, numbers or lists of text.

    The names must be options of the loader of ``data``'s source (when ``data`` names one).

    >>> check_data_options("derm7pt:/data", {"image": "clinic"})
    >>> check_data_options("derm7pt:/data", {"colour": "red"})
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: data_options: unknown option 'colour' for data source 'derm7pt'; its options: ...
    """
    def scalar(v: object) -> bool:
        return v is None or isinstance(v, (str, bool, int, float))

    if not isinstance(options, dict):
        raise DermretrError(f"data_options must be a dict of loader options, got {options!r}")
    for key, value in options.items():
        if not isinstance(key, str) or not (scalar(value) or (isinstance(value, (list, tuple))
                                                              and all(isinstance(v, str) for v in value))):
            raise DermretrError(f"data_options must map option names to text, numbers or lists of text (it is saved "
                                f"in config.json; give paths as text), got {key!r}: {value!r}")
    from ..data import loader_options, parse_spec

    try:
        source = parse_spec(data)[0]
    except DermretrError:
        return  # loading the data says what is wrong with the spec
    unknown = [k for k in options if k not in loader_options(source)]
    if unknown:
        raise DermretrError(f"data_options: unknown option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} for data source {source!r}; its options: "
                            f"{', '.join(loader_options(source)) or 'none'}")


def plain(value: Any) -> Any:
    """JSON form of numpy scalars in a config (``json.dumps(default=plain)``).

    >>> import numpy as np
    >>> json.dumps({"epochs": np.int64(3)}, default=plain)
    '{"epochs": 3}'
    """
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_PARAM_HEAD = re.compile(r"^(\w+(?:, \w+)*) : (.+)$")


@functools.cache
def field_docs() -> dict[str, str]:
    """Each :class:`TrainConfig` field's entry in the Parameters section of its docstring, as one line of plain text.

    The command line takes its ``train`` help texts from here (``:func:`x``` and ````x```` become ``x``).

    >>> field_docs()["epochs"]
    'Training epochs.'
    >>> field_docs()["backbone"]
    'open_clip architecture, hf-hub:ORG/REPO or local-dir:PATH (see dermretr.models.backbones.create).'
    """
    doc = TrainConfig.__doc__ or ""
    lines = doc.split("Parameters\n    ----------\n", 1)[1].splitlines()
    out: dict[str, str] = {}
    names: list[str] = []
    for line, after in zip(lines, [*lines[1:], ""]):
        if set(after.strip()) == {"-"}:  # the next section starts
            break
        if not line.strip():
            continue
        head = _PARAM_HEAD.match(line.strip()) if not line.startswith(" " * 8) else None
        if head:
            names = head.group(1).split(", ")
            for name in names:
                out[name] = ""
        else:
            text = re.sub(r":\w+:`~?([^`]+)`", r"\1", line.strip()).replace("``", "")
            for name in names:
                out[name] = f"{out[name]} {text}".strip()
    return out


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
               type(None): "null"}


def read_run_config(file: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run's ``config.json``, checked; a DermretrError naming the file."""
    file = Path(file)
    restore = "restore it, or start a new run in another --out"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DermretrError(f"{file} not found") from None
    except UnicodeDecodeError:
        raise DermretrError(f"{file} is not a text file, so not the run's config.json; {restore}") from None
    except OSError as exc:
        raise DermretrError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        where = f" ({exc.msg}, line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DermretrError(f"{file} is not valid JSON{where}; it should hold the run's training options as dermretr "
                            f"wrote them: {restore}") from None
    if not isinstance(values, dict):
        raise DermretrError(f"{file} holds {_JSON_TYPES.get(type(values), 'a JSON value')}, not an object of "
                            f"training options; {restore}")
    if "text_skip" not in values and values.get("model", "full") in ("global", "full"):
        values = {**values, "text_skip": False}  # a run of a dermretr before format 4: composers without a text skip
    return config_from_dict(values, source=file)


def config_from_dict(values: dict, source: str | os.PathLike | None = None) -> TrainConfig:
    """A checked :class:`TrainConfig` from a dict, rejecting unknown keys, missing required ones and bad values.

    ``source`` (e.g. a run's config.json) is named in the errors; the keys of
    :data:`RECORDED_KEYS` (what a run wrote beside its options) are left out.
    """
    where = f"{source}: " if source is not None else ""
    if not isinstance(values, dict):
        raise DermretrError(f"{where}training options must be a dict, got {type(values).__name__}")
    values = {k: v for k, v in values.items() if k not in RECORDED_KEYS}  # what a run found, not options
    fields = dataclasses.fields(TrainConfig)
    known = {f.name for f in fields}
    unknown = sorted(map(str, set(values) - known))
    if unknown:
        raise DermretrError(f"{where}unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise DermretrError(f"{where}missing training option(s) {missing}")
    config = TrainConfig(**values)
    try:
        config.check()
    except DermretrError as exc:
        raise DermretrError(f"{where}{exc}") from None
    return config
