"""Generate a DermSynth dataset folder in the Derm7pt layout.

Layout written (``ROOT`` is the output folder)::

    ROOT/meta/meta.csv               Derm7pt columns + case_id, patient_id, lesion_id,
                                     variant_of, fitzpatrick, ita, age, sex, split, mask
    ROOT/meta/train_indexes.csv      one column ``indexes``: zero-based rows of meta.csv
    ROOT/meta/valid_indexes.csv      (splits are by patient: no patient in two splits)
    ROOT/meta/test_indexes.csv
    ROOT/meta/modifications.csv      reference_case_id, modification_text, target_case_id, ...
    ROOT/meta/dermsynth.json         the generator's parameters (no timestamps)
    ROOT/images/<shard>/<case_id>.jpg
    ROOT/masks/<shard>/<case_id>.png one bit per criterion (see ``render.MASK_BITS``)

A *modification target* is the same lesion re-rendered (same seeds, same
artifacts) with one criterion changed; each such lesion family has 1-3
variants with different changes, so an image alone cannot tell which variant
a modification text asks for.

The same parameters give the same bytes, whatever the number of workers.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=12, image_size=64,
...                 workers=1, progress=False)
>>> sorted(p.name for p in (root / "meta").iterdir())[:3]
['dermsynth.json', 'meta.csv', 'modifications.csv']
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..._checks import check_int, is_real
from ..._errors import DermretrError, OutputError
from ..._io import atomic_dir, exclusive
from ...color import ita as _ita
from ..splits import group_split
from ..vocab import CRITERIA, CRITERION_NAMES, DIAGNOSIS_GROUPS, diagnosis_group, modification_text, seven_point_score
from .priors import DIAGNOSIS_WEIGHTS, FITZPATRICK_WEIGHTS, GROUP_WEIGHTS, criterion_prior
from .render import Artifacts, LesionSpec, encode_masks, render_case, skin_lab

__all__ = ["generate", "plan_cases", "is_dermsynth", "FORMAT_VERSION", "MIN_IMAGE_SIZE"]

FORMAT_VERSION = 1
MIN_IMAGE_SIZE = 64
PRIORS = ("clinical", "uniform")
_SHARD = 500

_LOCATIONS = ("back", "chest", "abdomen", "upper limbs", "lower limbs", "head neck", "buttocks", "acral",
              "genital areas")
_LOCATION_P = (0.30, 0.12, 0.10, 0.14, 0.18, 0.10, 0.02, 0.03, 0.01)
_MANAGEMENT = {"MEL": "excision", "BCC": "excision"}


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    p = np.asarray([probs[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _sample_criteria(rng: np.random.Generator, diagnosis: str, priors: str) -> dict[str, str]:
    crit = {}
    for c, values in CRITERIA.items():
        if priors == "uniform":
            crit[c] = values[int(rng.integers(len(values)))]
        else:
            crit[c] = _choice(rng, criterion_prior(diagnosis, c))
    if (priors == "clinical" and crit["vascular_structures"] == "within regression"
            and crit["regression_structures"] == "absent"):
        crit["vascular_structures"] = "absent"
    return crit


def _sample_diagnosis(rng: np.random.Generator) -> str:
    group = _choice(rng, GROUP_WEIGHTS)
    return _choice(rng, {d: DIAGNOSIS_WEIGHTS[d] for d in DIAGNOSIS_GROUPS[group]})


def _modify(rng: np.random.Generator, crit: dict[str, str], used: set[str], diagnosis: str, priors: str):
    """Pick one criterion not yet changed in this family and a new value for it."""
    choices = [c for c in CRITERION_NAMES if c not in used]
    c = choices[int(rng.integers(len(choices)))]
    others = [v for v in CRITERIA[c] if v != crit[c]]
    if priors == "clinical":
        prior = criterion_prior(diagnosis, c)
        weights = np.asarray([prior[v] + 0.05 for v in others])
    else:
        weights = np.ones(len(others))
    new = others[int(rng.choice(len(others), p=weights / weights.sum()))]
    return c, new


def plan_cases(
    n_cases: int,
    seed: int = 0,
    priors: str = "clinical",
    modification_rate: float = 0.25,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plan a DermSynth dataset without rendering it: the case rows and the triplets.

    Patients have one to three lesions sharing skin type, age and sex.  A
    fraction ``modification_rate`` of lesions becomes a family with one to
    three single-criterion variants.

    Parameters
    ----------
    n_cases : int
        Total number of images (variants included).
    seed : int
        Master seed.
    priors : {"clinical", "uniform"}
        "clinical" lets the diagnosis drive the criteria (:mod:`.priors`);
        "uniform" draws every criterion value uniformly and independently
        (useful to train criterion classifiers without shortcuts).
    modification_rate : float
        Fraction of lesions that get modification variants.

    Returns
    -------
    (DataFrame, DataFrame)
        The planned rows (one per case, with the seeds) and the modification
        triplets (reference, text, target, criterion, from, to).

    Examples
    --------
    >>> rows, mods = plan_cases(50, seed=1)
    >>> len(rows), bool(rows["case_id"].is_unique)
    (50, True)
    """
    check_int(n_cases, "the number of cases", 0)
    _check_args(max(int(n_cases), 1), MIN_IMAGE_SIZE, None, seed, priors, modification_rate)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    rows: list[dict] = []
    mods: list[dict] = []
    patient = 0
    while len(rows) < n_cases:
        patient += 1
        pid = f"dsp{patient:06d}"
        fitz = int(rng.choice(6, p=FITZPATRICK_WEIGHTS)) + 1
        skin_seed = int(rng.integers(2**31))
        sex = "female" if rng.uniform() < 0.5 else "male"
        base_age = int(rng.integers(18, 86))
        L, _, b = skin_lab(fitz, skin_seed)
        n_lesions = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
        for lesion in range(n_lesions):
            if len(rows) >= n_cases:
                break
            diagnosis = _sample_diagnosis(rng)
            group = diagnosis_group(diagnosis)
            crit = _sample_criteria(rng, diagnosis, priors)
            lesion_id = f"{pid}-l{lesion + 1}"
            common = dict(
                patient_id=pid,
                lesion_id=lesion_id,
                diagnosis=diagnosis,
                fitzpatrick=fitz,
                ita=round(float(_ita(L, b)), 3),
                age=base_age,
                sex=sex,
                location=_LOCATIONS[int(rng.choice(len(_LOCATIONS), p=_LOCATION_P))],
                elevation=("nodular" if group in ("MEL", "BCC") and rng.uniform() < 0.3 else
                           "palpable" if rng.uniform() < 0.35 else "flat"),
                management=_MANAGEMENT.get(group, "clinical follow up" if rng.uniform() < 0.6 else "excision"),
                level_of_diagnostic_difficulty=("low", "medium", "high")[int(rng.choice(3, p=[0.5, 0.35, 0.15]))],
                lesion_seed=int(rng.integers(2**31)),
                image_seed=int(rng.integers(2**31)),
                skin_seed=skin_seed,
            )
            base_id = f"ds{len(rows) + 1:06d}"
            rows.append(dict(case_id=base_id, variant_of="", **common, **crit))
            n_var = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])) if rng.uniform() < modification_rate else 0
            used: set[str] = set()
            for _ in range(n_var):
                if len(rows) >= n_cases:
                    break
                c, new = _modify(rng, crit, used, diagnosis, priors)
                used.add(c)
                target = dict(crit, **{c: new})
                tid = f"ds{len(rows) + 1:06d}"
                rows.append(dict(case_id=tid, variant_of=base_id, **common, **target))
                text_seed = int(rng.integers(2**31))
                for ref, tgt, before, after in ((base_id, tid, crit, target), (tid, base_id, target, crit)):
                    mods.append(dict(
                        reference_case_id=ref,
                        modification_text=modification_text(before, after, seed=text_seed),
                        target_case_id=tgt,
                        criterion=c,
                        from_value=before[c],
                        to_value=after[c],
                    ))
    table = pd.DataFrame(rows)
    table["diagnosis_group"] = table["diagnosis"].map(diagnosis_group)
    table["split"] = group_split(table, by="patient_id", stratify="diagnosis_group", seed=seed).to_numpy()
    mods_df = pd.DataFrame(mods, columns=["reference_case_id", "modification_text", "target_case_id",
                                          "criterion", "from_value", "to_value"])
    return table, mods_df


def _render_chunk(args) -> int:
    rows, size, art_flags, root = args
    art = Artifacts(**art_flags)
    root = Path(root)
    for row in rows:
        spec = LesionSpec(
            lesion_seed=row["lesion_seed"], image_seed=row["image_seed"], skin_seed=row["skin_seed"],
            diagnosis=row["diagnosis"], fitzpatrick=row["fitzpatrick"],
            criteria={c: row[c] for c in CRITERION_NAMES},
        )
        out = render_case(spec, size=size, artifacts=art)
        rng = np.random.default_rng([row["image_seed"], 4])
        if art.jpeg:
            quality, subsampling = int(rng.integers(70, 95)), 2
        else:
            quality, subsampling = 98, 0
        Image.fromarray(out.image).save(root / "images" / row["derm"], format="JPEG", quality=quality,
                                        subsampling=subsampling)
        Image.fromarray(encode_masks(out.masks)).save(root / "masks" / row["mask_file"], format="PNG")
    return len(rows)


def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _check_args(n_cases, image_size, workers, seed=0, priors="clinical", modification_rate=0.25,
                artifacts=None) -> None:
    check_int(n_cases, "the number of cases")
    check_int(image_size, "the image size", MIN_IMAGE_SIZE, what=f"an integer of at least {MIN_IMAGE_SIZE} px")
    if workers is not None:
        check_int(workers, "workers")
    check_int(seed, "seed", 0)
    if not isinstance(priors, str) or priors not in PRIORS:
        raise DermretrError(f"priors must be one of {PRIORS}, got {priors!r}")
    if not is_real(modification_rate) or not 0.0 <= modification_rate <= 1.0:
        raise DermretrError(f"modification rate must be a number in [0, 1], got {modification_rate!r}")
    if artifacts is not None and not isinstance(artifacts, Artifacts):
        raise DermretrError(f"artifacts must be an Artifacts(...) object or None, got {type(artifacts).__name__}")


#: What :func:`generate` writes (and so may replace with ``overwrite``): top-level entries and meta files.
_OWN_ENTRIES = frozenset({"meta", "images", "masks"})
_OWN_META = frozenset({"meta.csv", "train_indexes.csv", "valid_indexes.csv", "test_indexes.csv",
                       "modifications.csv", "dermsynth.json"})
_OWN_FILE = re.compile(r"^ds\d+\.(?:jpg|png)$")
_SHARD_DIR = re.compile(r"^s\d{3,}$")
#: Files the operating system drops into folders a user browsed (harmless to replace).
_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_TEMPORARY = re.compile(r"^\..+\.dermretr-(?:\d+-[A-Za-z0-9_]+\.(?:tmp|new|old|lock)|lock)$")


def is_dermsynth(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DermSynth dataset folder (it holds the ``meta/dermsynth.json`` generate writes)."""
    try:
        params = json.loads((Path(path) / "meta" / "dermsynth.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(params, dict) and params.get("generator") == "dermretr.data.synth"


def _foreign_entries(out: Path) -> list[str]:
    """Entries of the DermSynth folder ``out`` that :func:`generate` did not write (relative paths)."""
    foreign: list[str] = []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if name in _SYSTEM_FILES or _TEMPORARY.match(name):
            continue
        if name not in _OWN_ENTRIES or entry.is_symlink() or not entry.is_dir():
            foreign.append(name)
        elif name == "meta":
            foreign += [f"meta/{p.name}" for p in sorted(entry.iterdir())
                        if p.name not in _OWN_META and p.name not in _SYSTEM_FILES]
        else:
            for shard in sorted(entry.iterdir()):
                if shard.name in _SYSTEM_FILES:
                    continue
                if not _SHARD_DIR.match(shard.name) or shard.is_symlink() or not shard.is_dir():
                    foreign.append(f"{name}/{shard.name}")
                    continue
                foreign += [f"{name}/{shard.name}/{f.name}" for f in sorted(shard.iterdir())
                            if not _OWN_FILE.match(f.name) and f.name not in _SYSTEM_FILES]
        if len(foreign) > 3:
            break
    return foreign


def _shown(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that generate may not write; nothing is changed.

    Accepted: a missing or empty folder, or (with ``overwrite``) a DermSynth
    dataset holding only what generate writes.  Refused: a file; a folder with
    anything else in it, whatever ``overwrite`` says; the current working
    folder or one above it (it would be swapped away under the user's feet).
    """
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"cannot write to {out}: {parent} is a file, not a folder; choose another --out")
            break
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a folder; choose another --out (nothing was changed)")
    if not out.exists():
        return
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    real = out.resolve()
    if cwd is not None and (real == cwd or real in cwd.parents):
        raise OutputError(f"--out {out} is the current folder{' (or one above it)' if real != cwd else ''}; "
                          "DermSynth replaces its whole output folder, so choose a new folder, e.g. "
                          f"--out {out / 'dermsynth'} (nothing was changed)")
    try:
        content = sorted(p.name for p in out.iterdir() if not _TEMPORARY.match(p.name))
        if not content:
            return
        dataset = is_dermsynth(out)
        foreign = _foreign_entries(out) if dataset else content
    except OSError as exc:
        raise OutputError(f"cannot read the output folder {out}: {exc.strerror or exc}; choose another --out") \
            from None
    if not dataset:
        raise OutputError(f"output folder {out} is not empty and is not a DermSynth dataset (it holds "
                          f"{_shown(content)}); choose a new or empty folder for --out (--overwrite only replaces "
                          "a DermSynth dataset; nothing was changed)")
    if foreign:
        raise OutputError(f"output folder {out} is a DermSynth dataset but also holds files it did not write "
                          f"({_shown(foreign)}); move them out or choose another --out (nothing was changed)")
    if not overwrite:
        raise OutputError(f"output folder {out} already holds a DermSynth dataset; pass --overwrite "
                          "(overwrite=True) to replace it, or choose another --out")


def generate(
    out: str | os.PathLike,
    n_cases: int = 1000,
    seed: int = 0,
    image_size: int = 224,
    artifacts: Artifacts | None = None,
    priors: str = "clinical",
    modification_rate: float = 0.25,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate a DermSynth dataset folder (Derm7pt layout) and return its path.

    Everything is written into a temporary folder beside ``out`` and renamed at
    the end, so an interrupted or failed run leaves nothing half-written (and
    an existing dataset is only replaced, with ``overwrite=True``, once the new
    one is complete).  Files and folders follow the process umask; a second
    process writing the same ``out`` at the same time gets an error.

    Only a folder that is itself a DermSynth dataset (it holds
    ``meta/dermsynth.json``, and nothing generate did not write) is ever
    replaced.  Any other non-empty folder, the current working folder and the
    folders above it are refused with an :class:`~dermretr._errors.OutputError`
    naming the folder and some of what it holds, whatever ``overwrite`` says;
    nothing is changed then.

    Parameters
    ----------
    out : path
        Output folder: missing, empty, or (with ``overwrite``) a DermSynth dataset.
    n_cases : int
        Number of images (cases) including modification variants.
    seed : int
        Master seed: the same seed gives the same bytes.
    image_size : int
        Square image side in pixels (>= 64).
    artifacts : Artifacts, optional
        Switch artifacts on or off (default: all on).
    priors : {"clinical", "uniform"}
        How criteria are drawn (see :func:`plan_cases`).
    modification_rate : float
        Fraction of lesions with modification variants.
    workers : int, optional
        Processes used to render (default: the CPU count, at most 8).
    overwrite : bool
        Replace an existing DermSynth dataset (never any other folder).
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path
        The output folder.

    Examples
    --------
    >>> import tempfile, pathlib, pandas as pd
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=8, image_size=64,
    ...                 workers=1, progress=False)
    >>> len(pd.read_csv(root / "meta" / "meta.csv"))
    8
    """
    _check_args(n_cases, image_size, workers, seed, priors, modification_rate, artifacts)
    art = artifacts if artifacts is not None else Artifacts()
    out = _check_out(out)
    _check_output(out, overwrite)  # before planning: a refused --out fails at once
    rows, mods = plan_cases(int(n_cases), seed=seed, priors=priors, modification_rate=modification_rate)
    with exclusive(out, "--out"):
        _check_output(out, overwrite)  # again, now that no other dermretr process can write it
        with atomic_dir(out) as tmp:
            rows["shard"] = [f"s{i // _SHARD:03d}" for i in range(len(rows))]
            rows["derm"] = rows["shard"] + "/" + rows["case_id"] + ".jpg"
            rows["mask_file"] = rows["shard"] + "/" + rows["case_id"] + ".png"
            for sub in ("images", "masks"):
                for shard in rows["shard"].unique():
                    (tmp / sub / shard).mkdir(parents=True, exist_ok=True)
            (tmp / "meta").mkdir()
            records = rows.to_dict("records")
            n_workers = workers or min(os.cpu_count() or 1, 8)
            chunk = max(4, min(32, len(records) // (n_workers * 4) or 4))
            tasks = [(list(c), int(image_size), {n: getattr(art, n) for n in Artifacts.names()}, str(tmp))
                     for c in _chunks(records, chunk)]
            with tqdm(total=len(records), desc="DermSynth", unit="case", disable=not progress) as bar:
                if n_workers == 1 or len(records) < 64:
                    for task in tasks:
                        bar.update(_render_chunk(task))
                else:
                    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                    with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(method)) as pool:
                        for done in pool.map(_render_chunk, tasks):
                            bar.update(done)
            _write_meta(tmp, rows, mods, dict(
                format_version=FORMAT_VERSION, generator="dermretr.data.synth", n_cases=int(n_cases),
                seed=int(seed), image_size=int(image_size), priors=priors,
                modification_rate=float(modification_rate), artifacts=art.enabled(),
            ))
    return out


def _check_out(out: object) -> Path:
    """``out`` as an absolute Path (``~`` expanded); anything but a non-empty path is an error."""
    if isinstance(out, (str, os.PathLike)) and not isinstance(out, bytes):
        text = os.fspath(out)
        if isinstance(text, str) and text.strip():
            path = Path(text).expanduser().absolute()
            # a link to a folder: its target is what the user means (replacing the link would leave it behind)
            return path.resolve() if path.is_symlink() and path.is_dir() else path
    raise DermretrError(f"the output folder (out) must be a path (a non-empty str or os.PathLike), got "
                        f"{type(out).__name__} {out!r}")


def _write_meta(root: Path, rows: pd.DataFrame, mods: pd.DataFrame, params: dict) -> None:
    meta = pd.DataFrame({
        "case_num": np.arange(1, len(rows) + 1),
        "diagnosis": rows["diagnosis"],
        "seven_point_score": [seven_point_score({c: r[c] for c in CRITERION_NAMES}) for r in rows.to_dict("records")],
        **{c: rows[c] for c in CRITERION_NAMES},
        "level_of_diagnostic_difficulty": rows["level_of_diagnostic_difficulty"],
        "elevation": rows["elevation"],
        "location": rows["location"],
        "sex": rows["sex"],
        "management": rows["management"],
        "clinic": "",
        "derm": rows["derm"],
        "case_id": rows["case_id"],
        "notes": "",
        "patient_id": rows["patient_id"],
        "lesion_id": rows["lesion_id"],
        "variant_of": rows["variant_of"],
        "fitzpatrick": rows["fitzpatrick"],
        "ita": rows["ita"],
        "age": rows["age"],
        "split": rows["split"],
        "mask": "masks/" + rows["mask_file"],
    })
    meta_dir = root / "meta"
    meta.to_csv(meta_dir / "meta.csv", index=False, lineterminator="\n")
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        idx = np.flatnonzero(meta["split"].to_numpy() == split)
        pd.DataFrame({"indexes": idx}).to_csv(meta_dir / f"{name}_indexes.csv", index=False, lineterminator="\n")
    pos = {cid: i for i, cid in enumerate(meta["case_id"])}
    mods = mods.assign(
        reference_index=mods["reference_case_id"].map(pos).astype("int64"),
        target_index=mods["target_case_id"].map(pos).astype("int64"),
    )
    mods.to_csv(meta_dir / "modifications.csv", index=False, lineterminator="\n")
    (meta_dir / "dermsynth.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
