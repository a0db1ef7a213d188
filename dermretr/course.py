"""The course notebooks' shared setup: their sizes, their dataset and their trained models, in one place.

Every notebook of the course (``notebooks/``) starts from the same
parameters (``DATA``, ``FAST``, ``SEED``, ``OUT`` and, where a model is
searched, ``MODEL``) and needs the same things: the sizes that ``FAST``
selects, the case table (DermSynth generated first when the source is
synthetic), the model to search with (the released DermSynth model, loaded
in a second, unless ``MODEL = None`` asks to train one) and a way to train a
model once and reuse it in every later notebook.  :class:`Course` holds them,
so that the notebooks hold narrative, calls and exercises, and every notebook
uses the same sizes (they share the dataset and the trained models).

Examples
--------
>>> course = Course("synthetic:./dermsynth-course")
>>> course.n_cases, course.image_size, course.train_image_size, course.epochs, course.batch_size, course.n_boot
(600, 128, 96, 10, 48, 1000)
>>> course.runs.as_posix(), course.model
('dermretr-course/full', 'dermretr/dermsynth-tiny')
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import check_seed, show
from ._errors import DermretrError, OutputError
from .data import load, parse_spec
from .data.synth import ensure
from .models._released import RELEASED

if TYPE_CHECKING:
    import pandas as pd

    from .index import CaseIndex
    from .models.retriever import Retriever
    from .train import TrainResult

__all__ = ["Course", "CourseSizes", "SIZES"]


@dataclass(frozen=True)
class CourseSizes:
    """The sizes of one version of the course (see :data:`SIZES`)."""

    n_cases: int  #: DermSynth images
    image_size: int  #: pixels of an image side in the dataset (the released model's 128)
    train_image_size: int  #: pixels of an image side in training (images are resized)
    epochs: int  #: training epochs
    batch_size: int  #: cases per training batch
    n_boot: int  #: bootstrap resamples behind every confidence interval


#: The course sizes: ``"full"`` (the default, several minutes of training on a laptop CPU) and ``"fast"``
#: (a first look and the test suite: a minute or two).  The one place they are set.
SIZES: dict[str, CourseSizes] = {
    "full": CourseSizes(n_cases=600, image_size=128, train_image_size=96, epochs=10, batch_size=48, n_boot=1000),
    "fast": CourseSizes(n_cases=240, image_size=128, train_image_size=64, epochs=3, batch_size=32, n_boot=200),
}
#: (cases, pixels) of the DermSynth datasets earlier versions of the course generated: still the course's own.
_EARLIER_SIZES = ((600, 96), (240, 64))

#: The share of DermSynth lesions re-drawn with one criterion changed (the modification triplets).
MODIFICATION_RATE = 0.4

#: TrainConfig fields a course sets itself: the data is the course's, the run folder is ``runs / name``.
_COURSE_FIELDS = ("data", "out")


def _is_course_dataset(root: Path) -> bool:
    """Whether ``root`` holds no DermSynth yet, or one with one of the course's sizes (the course may replace it)."""
    params_file = root / "meta" / "dermsynth.json"
    if not params_file.exists():
        return True
    try:
        params = json.loads(params_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    made = {(sizes.n_cases, sizes.image_size) for sizes in SIZES.values()} | set(_EARLIER_SIZES)
    return params.get("modification_rate") == MODIFICATION_RATE and \
        (params.get("n_cases"), params.get("image_size")) in made


class Course:
    """The setup every course notebook shares: sizes, the case table, trained models.

    Parameters
    ----------
    data : str
        The dataset as ``SOURCE:PATH``.  A synthetic source is a DermSynth
        folder generated there with the course sizes when it is missing (or
        holds other sizes: it is generated again in its place); any other
        source is only read.
    fast : bool
        ``True``: the small sizes (a first look, CI); ``False``: the course
        sizes (see :data:`SIZES`).
    seed : int
        Seed of the data, the training and every resampling.
    out : str or path
        Where trained models are kept (and reused): ``out/fast`` or ``out/full``.
    model : str, path or None
        The model :meth:`retriever` and :meth:`index` search with: a name or
        folder that ``Retriever.from_pretrained`` reads, by default the
        released DermSynth model ``"dermretr/dermsynth-tiny"`` (no training:
        the first composed query comes within a minute); ``None`` trains one
        on ``data`` with the course sizes instead (several minutes).

    Attributes
    ----------
    data : str
        The dataset spec, as given.
    source : str
        Its source name (``"synthetic"``, ``"derm7pt"``...).
    root : Path
        Its folder (as given, with ``~`` expanded).
    fast : bool
        Which sizes are used.
    seed : int
        The seed.
    sizes : CourseSizes
        The sizes ``fast`` selects; ``n_cases``, ``image_size``, ``epochs``,
        ``batch_size`` and ``n_boot`` are also attributes of the course.
    runs : Path
        The folder of this version's trained models: ``out/fast`` or ``out/full``.
    model : str or None
        As given (a path as a string).

    Raises
    ------
    DermretrError
        A bad data spec, ``fast`` that is not a bool, a bad seed or ``out``.

    Examples
    --------
    Nothing is generated, loaded or trained until it is asked for:
    ``course.cases`` generates DermSynth (once) and loads the case table,
    ``course.retriever()`` loads the released model (or, with ``model=None``,
    trains the composed model into ``runs/full`` once and reuses it later),
    ``course.train("full")`` trains whatever the notebook asks for.

    >>> course = Course("synthetic:./dermsynth-course", fast=True, seed=0, out="dermretr-course")
    >>> course.n_cases, course.image_size, course.train_image_size, course.epochs, course.batch_size, course.n_boot
    (240, 128, 64, 3, 32, 200)
    >>> course.root.as_posix(), course.checkpoint("full").as_posix()
    ('dermsynth-course', 'dermretr-course/fast/full/checkpoints/best.pt')
    >>> Course(fast="yes")
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: fast must be True or False, got 'yes'
    """

    def __init__(self, data: str = "synthetic:./dermsynth-course", fast: bool = False, seed: int = 0,
                 out: str | os.PathLike = "dermretr-course", model: str | os.PathLike | None = RELEASED) -> None:
        self.source, path = parse_spec(data)
        self.data = data
        if not isinstance(fast, (bool, np.bool_)):
            raise DermretrError(f"fast must be True or False, got {show(fast)}")
        self.fast = bool(fast)
        self.seed = check_seed(seed)
        if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
            raise DermretrError(f"out must be a folder path (a non-empty string or Path), got {show(out)}")
        self.root = Path(path).expanduser()
        self._out = os.fspath(out)
        self.sizes = SIZES["fast" if self.fast else "full"]
        self.runs = Path(out).expanduser() / ("fast" if self.fast else "full")
        if model is not None and (not isinstance(model, (str, os.PathLike)) or not str(model).strip()):
            raise DermretrError(f"model must be a model name or folder (such as {RELEASED!r}) or None to train one, "
                                f"got {show(model)}")
        self.model = None if model is None else os.fspath(model)
        self._cases: pd.DataFrame | None = None
        self._data_ready = False
        self._retrievers: dict[str, Retriever] = {}

    # ------------------------------------------------------------------ sizes

    @property
    def n_cases(self) -> int:
        """DermSynth images generated for a synthetic source."""
        return self.sizes.n_cases

    @property
    def image_size(self) -> int:
        """Pixels of an image side in the generated dataset."""
        return self.sizes.image_size

    @property
    def train_image_size(self) -> int:
        """Pixels of an image side in training."""
        return self.sizes.train_image_size

    @property
    def epochs(self) -> int:
        """Training epochs."""
        return self.sizes.epochs

    @property
    def batch_size(self) -> int:
        """Cases per training batch."""
        return self.sizes.batch_size

    @property
    def n_boot(self) -> int:
        """Bootstrap resamples behind every confidence interval."""
        return self.sizes.n_boot

    # ------------------------------------------------------------------ data

    def _ensure_data(self) -> None:
        """Generate DermSynth in :attr:`root` with the course sizes unless it is there (synthetic source only)."""
        if self.source == "synthetic" and not self._data_ready:
            if not _is_course_dataset(self.root):
                # a DermSynth of the user's own (other sizes): ensure keeps it if it fits, refuses to replace it
                try:
                    ensure(self.root, n_cases=self.n_cases, image_size=self.image_size, seed=self.seed,
                           modification_rate=MODIFICATION_RATE, replace=False, progress=not self.fast)
                except OutputError:
                    raise OutputError(f"{self.root} holds a DermSynth dataset with other settings than the "
                                      f"course's ({self.n_cases} cases, {self.image_size} px, modification rate "
                                      f"{MODIFICATION_RATE}); the course does not replace a dataset it did not "
                                      f"make: point DATA to another folder") from None
            else:
                ensure(self.root, n_cases=self.n_cases, image_size=self.image_size, seed=self.seed,
                       modification_rate=MODIFICATION_RATE, replace=True, progress=not self.fast)
        self._data_ready = True

    @property
    def cases(self) -> pd.DataFrame:
        """The case table of :attr:`data`, loaded once (DermSynth generated first when missing).

        A DermSynth folder is generated only when it is missing or holds other
        settings (for instance the other sizes): otherwise it is kept, so later
        notebooks and later runs reuse it.  The table is cached: every access
        returns the same DataFrame.
        """
        if self._cases is None:
            self._ensure_data()
            self._cases = load(self.data)
        return self._cases

    # ------------------------------------------------------------------ models

    def run_dir(self, name: str) -> Path:
        """The folder of the trained model ``name``: ``runs / name``.

        >>> Course(fast=True).run_dir("full-1mask").as_posix()
        'dermretr-course/fast/full-1mask'
        >>> Course().run_dir("../elsewhere")
        Traceback (most recent call last):
            ...
        dermretr._errors.DermretrError: a run name must be a plain folder name such as 'full', got '../elsewhere'
        """
        if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
                or name != name.strip()):
            raise DermretrError(f"a run name must be a plain folder name such as 'full', got {show(name)}")
        return self.runs / name

    def checkpoint(self, name: str) -> Path:
        """The best checkpoint of the trained model ``name``: ``runs / name / checkpoints / best.pt``.

        >>> Course().checkpoint("full").as_posix()
        'dermretr-course/full/full/checkpoints/best.pt'
        """
        return self.run_dir(name) / "checkpoints" / "best.pt"

    def train(self, name: str, **settings: Any) -> TrainResult:
        """Train a model into ``runs / name`` with the course sizes, or reuse the finished run there.

        A thin wrapper around :func:`dermretr.train.fit_or_load`: the first
        call trains (the dataset is generated first when it is missing); a
        later call with the same settings, in this notebook or another one,
        reuses the run without training; a run with other settings is an error
        that names the differences.

        Parameters
        ----------
        name : str
            The run's folder name under :attr:`runs` (``"full"``, ``"full-1mask"``).
        **settings
            :class:`~dermretr.train.TrainConfig` fields (``model``, ``n_masks``,
            ``balance_by``...).  The course sets ``data`` and ``out``; it also
            sets ``epochs``, ``batch_size``, ``image_size`` (its
            :attr:`train_image_size`) and ``seed`` from its sizes and
            ``progress`` (on unless fast), which settings may change (a
            pretrained backbone wants ``image_size=224``).

        Returns
        -------
        TrainResult
            What :func:`~dermretr.train.fit_or_load` returns: the retriever, the
            history (one record per epoch), the best epoch's record and the run folder.

        Raises
        ------
        DermretrError
            A bad name, a setting that is not a TrainConfig field or that the
            course sets, a bad value, or a run with other settings in the folder.
        """
        from .train import TrainConfig, fit_or_load

        run = self.run_dir(name)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise DermretrError(f"unknown training setting {unknown[0]!r}: settings are TrainConfig fields "
                                f"({', '.join(sorted(fields - set(_COURSE_FIELDS)))})")
        fixed = [key for key in _COURSE_FIELDS if key in settings]
        if fixed:
            raise DermretrError(f"the course sets {fixed[0]!r} itself (the course's data, the run folder runs/name); "
                                f"make another Course to use other data or another folder")
        self._ensure_data()
        values = dict(epochs=self.epochs, batch_size=self.batch_size, image_size=self.train_image_size,
                      seed=self.seed, progress=not self.fast)
        return fit_or_load(TrainConfig(data=self.data, out=str(run), **{**values, **settings}))

    def retriever(self, name: str = "full") -> Retriever:
        """The model the notebook searches with: :attr:`model` loaded, or ``name`` trained when it is None.

        With a :attr:`model` (by default the released DermSynth model) nothing
        is trained: it is loaded once (on a real dataset it is only a start:
        it has seen DermSynth alone; set ``model=None`` to train on the
        data).  With ``model=None`` the composed model ``name`` is trained
        into ``runs / name`` with the course sizes (:meth:`train`), or the
        finished run there is reused, and its best checkpoint is loaded.
        Either way the same object is returned on every later call.
        """
        from .models.retriever import Retriever

        if self.model is not None and name != "full":
            raise DermretrError(f"the course searches with {self.model} (MODEL); retriever({name!r}) needs a model "
                                "trained here: course.train(name, ...) then Retriever.load(course.checkpoint(name)), "
                                "or set MODEL = None")
        if name not in self._retrievers:
            if self.model is not None:
                if self.source != "synthetic" and self.model == RELEASED:
                    print(f"note: {RELEASED} was trained on DermSynth only; for {self.source} data set MODEL = None "
                          "to train a model on it")
                self._retrievers[name] = Retriever.from_pretrained(self.model)
            else:
                self.train(name)
                self._retrievers[name] = Retriever.load(self.checkpoint(name))
        return self._retrievers[name]

    def index(self, name: str = "full") -> CaseIndex:
        """A search index of :attr:`cases` made with :meth:`retriever` (``name``), which it records."""
        from .index import CaseIndex

        model = self.retriever(name)
        if self.model is not None:
            return CaseIndex.build(model, self.cases, pretrained=self.model)
        return CaseIndex.build(model, self.cases, checkpoint=self.checkpoint(name))

    def __repr__(self) -> str:
        sizes = self.sizes
        searched = f"searches with {self.model}" if self.model is not None else "trains the model it searches with"
        return (f"Course({self.data!r}, fast={self.fast}, seed={self.seed}, out={self._out!r}): "
                f"{sizes.n_cases} cases of {sizes.image_size} px; {searched}; training at {sizes.train_image_size} "
                f"px, {sizes.epochs} epochs in batches of {sizes.batch_size}; {sizes.n_boot} bootstrap resamples")
