"""Localisation: whether the attribution falls on the region that should explain the match.

:func:`localisation_score` scores one heatmap against a ground-truth mask
(pointing game, IoU of the top attributed area, attribution energy inside
the mask, each with its uniform-map baseline); :func:`dermsynth_localisation`
runs it on DermSynth's rendered structures and :func:`mask_localisation`
against any binary mask column of a case table (e.g. PH2's ``lesion_mask``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .._checks import check_choice
from .._errors import DataWarning, DermretrError
from ..skin_tone import check_mask_aspect, default_mask_bit
from ._image import explain_pairs
from ._inputs import METHODS, SIDES, WHICH, check_options

__all__ = ["LOCALISATION_COLUMNS", "align_mask", "localisation_score", "localisation_summary",
           "dermsynth_localisation", "mask_localisation"]


def align_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask the way the preprocess resizes images (shorter side, centre crop; nearest).

    >>> import numpy as np
    >>> m = np.zeros((64, 96), bool); m[:, 40:56] = True
    >>> align_mask(m, 32).shape, int(align_mask(m, 32).sum())
    ((32, 32), 256)
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DermretrError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    h, w = m.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = m[top:top + side, left:left + side].astype(np.uint8) * 255
    img = Image.fromarray(crop).resize((int(out_w), int(out_h)), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    from scipy.ndimage import binary_dilation

    yy, xx = np.mgrid[-px:px + 1, -px:px + 1]
    return binary_dilation(mask, structure=(yy ** 2 + xx ** 2) <= px ** 2)


def localisation_score(heatmap: np.ndarray, mask: np.ndarray, tolerance: int = 0,
                       top_fraction: float | None = None) -> dict[str, float]:
    """How well a heatmap falls on a ground-truth region, each number with its uniform-map baseline.

    Parameters
    ----------
    heatmap : ndarray
        ``[H, W]`` attribution (higher = more important).
    mask : ndarray
        ``[H, W]`` boolean ground truth (see :func:`align_mask` for other sizes).
    tolerance : int
        Pointing-game tolerance in pixels: a peak this close to the mask is a hit.
    top_fraction : float, optional
        Share of the image taken as "attributed" for the IoU (default: the
        mask's own area fraction).

    Returns
    -------
    dict
        ``hit`` (1.0 when the heatmap's peak lies in the mask dilated by
        ``tolerance``; a flat heatmap has no peak and scores its expected
        value, the baseline) and ``hit_baseline`` (the dilated mask's area
        fraction: the hit rate of a uniformly random point); ``iou`` of the
        top ``top_fraction`` pixels with the mask and ``iou_baseline`` (the
        expected IoU of as many random pixels); ``energy``, the share of the
        positive attribution inside the mask, and ``energy_baseline`` (the
        mask's area fraction); ``mask_fraction``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((20, 20), bool); mask[5:10, 5:10] = True
    >>> heat = np.zeros((20, 20)); heat[7, 7] = 1.0
    >>> s = localisation_score(heat, mask)
    >>> s["hit"], s["hit_baseline"], s["energy"]
    (1.0, 0.0625, 1.0)
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if heat.ndim != 2:
        raise DermretrError(f"a heatmap must be 2-D [H, W], got shape {heat.shape}")
    if heat.shape != m.shape:
        raise DermretrError(f"heatmap {heat.shape} and mask {m.shape} differ in size; resize the mask with "
                            "align_mask(mask, heatmap.shape)")
    if not np.isfinite(heat).all():
        raise DermretrError("the heatmap holds NaN or infinite values")
    area = float(m.mean())
    if area == 0:
        raise DermretrError("the ground-truth mask is empty: nothing to localise")
    tolerance = int(tolerance)
    if tolerance < 0:
        raise DermretrError(f"tolerance must be >= 0 pixels, got {tolerance}")
    q = area if top_fraction is None else float(top_fraction)
    if not 0 < q <= 1:
        raise DermretrError(f"top_fraction must be in (0, 1], got {top_fraction}")
    near = _dilate(m, tolerance)
    hit_baseline = float(near.mean())
    flat = np.ptp(heat) == 0
    if flat:
        hit = hit_baseline
    else:
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hit = 1.0 if near[peak] else 0.0
    n_top = max(1, int(round(q * heat.size)))
    if flat:
        iou = q * area / (q + area - q * area)
    else:
        chosen = np.zeros(heat.size, dtype=bool)
        chosen[np.argsort(-heat.ravel(), kind="stable")[:n_top]] = True
        top = chosen.reshape(heat.shape)
        iou = float((top & m).sum() / (top | m).sum())
    q_eff = n_top / heat.size
    iou_baseline = q_eff * area / (q_eff + area - q_eff * area)
    pos = np.clip(heat, 0, None)
    energy = float(pos[m].sum() / pos.sum()) if pos.sum() > 0 else area
    return {"hit": float(hit), "hit_baseline": hit_baseline, "iou": float(iou), "iou_baseline": float(iou_baseline),
            "energy": energy, "energy_baseline": area, "mask_fraction": area}


def localisation_summary(table: pd.DataFrame) -> dict[str, float]:
    """Means of :func:`dermsynth_localisation`'s per-pair table (and the number of pairs).

    >>> import pandas as pd
    >>> localisation_summary(pd.DataFrame({"hit": [1.0, 0.0], "hit_baseline": [0.2, 0.2], "iou": [0.5, 0.1],
    ...     "iou_baseline": [0.1, 0.1], "energy": [0.6, 0.2], "energy_baseline": [0.2, 0.2]}))["pointing"]
    0.5
    """
    if len(table) == 0:
        raise DermretrError("no pairs to summarise")
    mean = lambda c: float(table[c].mean())  # noqa: E731
    return {"pairs": int(len(table)), "pointing": mean("hit"), "pointing_baseline": mean("hit_baseline"),
            "iou": mean("iou"), "iou_baseline": mean("iou_baseline"), "energy": mean("energy"),
            "energy_baseline": mean("energy_baseline")}


def dermsynth_localisation(retriever, root: str | os.PathLike, method: str = "gradcam", which: str = "score",
                           n: int | None = 50, seed: int = 0, tolerance: int | None = None,
                           top_fraction: float | None = None, split: str | None = None, batch_size: int = 8,
                           **options: Any) -> pd.DataFrame:
    """Annotation-free localisation on DermSynth, scored against its ground-truth masks.

    For modification triplets whose change *adds* a criterion value (``to_value``
    not ``"absent"``), the query is (reference image, modification text), the
    target is the triplet's target, and the ground truth is the target's mask
    of that criterion.  The target-side attribution is scored with
    :func:`localisation_score`.

    Parameters
    ----------
    retriever : Retriever
        The model.
    root : path
        A DermSynth folder (:func:`dermretr.data.synth.generate`).
    method, which, **options
        As in :func:`explain_pairs`.
    n : int or None
        Triplets sampled (``seed``); None for all.
    tolerance : int, optional
        Pointing-game tolerance in pixels (default: input side / 16).
    top_fraction : float, optional
        See :func:`localisation_score`.
    split : str, optional
        Only triplets whose target is in this split (``"test"``...).
    batch_size : int
        Pairs attributed at once.

    Returns
    -------
    DataFrame
        One row per triplet: ``reference_case_id, target_case_id, criterion,
        to_value, modification_text, score`` and the :func:`localisation_score`
        columns; ``attrs["summary"]`` holds :func:`localisation_summary`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data.synth import generate
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=30, image_size=64,
    ...                 modification_rate=0.6, workers=1, progress=False)
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> table = dermsynth_localisation(r, root, n=3)
    >>> len(table) <= 3, set(table.attrs["summary"]) >= {"pointing", "pointing_baseline"}
    (True, True)
    """
    from ..data import load
    from ..data.synth import load_masks

    root = Path(root).expanduser()
    mods_file = root / "meta" / "modifications.csv"
    if not mods_file.is_file():
        raise DermretrError(f"{root} has no meta/modifications.csv: not a DermSynth folder with modification "
                            "triplets (generate one with `dermretr synth --out DIR`)")
    mods = pd.read_csv(mods_file, dtype=str, keep_default_na=False)
    need = {"reference_case_id", "target_case_id", "modification_text", "criterion", "to_value"}
    if not need <= set(mods.columns):
        raise DermretrError(f"{mods_file} lacks columns {sorted(need - set(mods.columns))}")
    cases = load("synthetic", root).set_index("case_id", drop=False)
    mods = mods[(mods["to_value"] != "absent") & mods["target_case_id"].isin(cases.index)
                & mods["reference_case_id"].isin(cases.index)]
    if split is not None:
        mods = mods[cases.loc[mods["target_case_id"], "split"].astype(str).to_numpy() == split]
    if n is not None:
        if int(n) < 1:
            raise DermretrError(f"n must be at least 1 (or None for all triplets), got {n}")
        mods = mods.sample(n=min(int(n), len(mods)), random_state=int(seed)) if len(mods) else mods
    size = int(retriever.backbone.image_size)
    tolerance = max(1, size // 16) if tolerance is None else int(tolerance)
    rows, pairs, masks = [], [], []
    for _, mod in mods.iterrows():
        target = cases.loc[mod["target_case_id"]]
        if "mask" not in target or not isinstance(target["mask"], str):
            continue
        gt = load_masks(target["mask"]).get(mod["criterion"])
        if gt is None:
            continue
        gt = align_mask(gt, size)
        if not gt.any():
            continue  # rendered too small to survive the resize
        pairs.append((cases.loc[mod["reference_case_id"], "image_path"], mod["modification_text"],
                      target["image_path"]))
        masks.append(gt)
        rows.append({k: mod[k] for k in ("reference_case_id", "target_case_id", "criterion", "to_value",
                                         "modification_text")})
    if not pairs:
        raise DermretrError(f"no usable modification triplets in {root} (none adds a criterion with a "
                            "non-empty ground-truth mask); generate more cases or a higher modification_rate")
    return _localise(retriever, pairs, masks, rows, ["reference_case_id", "target_case_id", "criterion", "to_value",
                                                     "modification_text"],
                     side="target", labels=[r["target_case_id"] for r in rows], method=method, which=which,
                     tolerance=tolerance, top_fraction=top_fraction, batch_size=batch_size, **options)


#: The scores of one pair in a localisation table (after its id columns).
LOCALISATION_COLUMNS = ["score", "hit", "hit_baseline", "iou", "iou_baseline", "energy", "energy_baseline",
                         "mask_fraction"]


def _localise(retriever, pairs: list, masks: list, rows: list[dict], id_columns: list[str], side: str,
              labels: list, method: str, which: str, tolerance: int, top_fraction: float | None,
              batch_size: int, **options: Any) -> pd.DataFrame:
    """Attribute ``pairs`` to ``side`` and score each heatmap against its aligned mask (one row per pair)."""
    attrs = explain_pairs(retriever, pairs, method=method, which=which, side=side, labels=labels,
                          batch_size=batch_size, **options)
    for row, att, gt in zip(rows, attrs, masks):
        row["score"] = att.score
        row.update(localisation_score(att.heatmap, gt, tolerance=tolerance, top_fraction=top_fraction))
    table = pd.DataFrame(rows, columns=[*id_columns, *LOCALISATION_COLUMNS])
    table.attrs["summary"] = localisation_summary(table)
    table.attrs["method"], table.attrs["which"], table.attrs["tolerance"] = method, which, tolerance
    return table


def mask_localisation(retriever, cases: pd.DataFrame, pairs: pd.DataFrame, mask_column: str = "lesion_mask",
                      method: str = "gradcam", which: str = "score", side: str = "target",
                      mask_bit: int | None = None, tolerance: int | None = None, top_fraction: float | None = None,
                      batch_size: int = 8, **options: Any) -> pd.DataFrame:
    """Localisation against a binary mask column of a case table (e.g. PH2's ``lesion_mask``).

    The same check as :func:`dermsynth_localisation` for any data with
    region masks: each (reference case, text, target case) pair is attributed
    to ``side`` with :func:`explain_pairs`, the attributed case's mask is
    brought into the model's frame with :func:`align_mask`, and the heatmap is
    scored with :func:`localisation_score` (pointing game, IoU of the top
    attributed area, attribution energy inside the mask, each with its
    uniform-map baseline: for the energy, the mask's area fraction).

    Parameters
    ----------
    retriever : Retriever
        The model.
    cases : DataFrame
        Case table with ``case_id``, ``image_path`` and ``mask_column``.
    pairs : DataFrame
        One row per pair: ``reference_case_id``, ``target_case_id`` and the
        query text as ``text`` (or ``modification_text``, as in DermSynth's
        triplets).  For case retrieval the reference is the query case and
        the target a retrieved case.
    mask_column : str
        Column of mask file paths, read with
        :func:`dermretr.data.images.load_mask`: non-zero pixels are the region
        (PH2's ``lesion_mask``); for DermSynth's ``mask`` column the lesion bit
        (0) is read unless ``mask_bit`` says otherwise.
    method, which, **options
        As in :func:`explain_pairs`.
    side : {"target", "reference"}
        The attributed image, and so whose mask is used.
    mask_bit : int, optional
        Read this bit of the mask's raw values as the region.
    tolerance : int, optional
        Pointing-game tolerance in pixels (default: input side / 16).
    top_fraction : float, optional
        See :func:`localisation_score`.
    batch_size : int
        Pairs attributed at once.

    Returns
    -------
    DataFrame
        One row per pair: ``reference_case_id, target_case_id, text, score``
        and the :func:`localisation_score` columns; ``attrs["summary"]``
        (:func:`localisation_summary`), ``attrs["method"]``, ``"which"``,
        ``"side"``, ``"tolerance"``, ``"mask_column"`` and ``attrs["skipped"]``
        (pairs whose mask is empty in the model's frame, left out with a
        :class:`~dermretr._errors.DataWarning`).

    Raises
    ------
    DermretrError
        For missing columns, unknown case ids, a case without a mask, a mask
        file that is missing or unreadable, a mask whose aspect ratio is not
        its image's, or when no pair is left.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> img = np.full((64, 64, 3), 200, np.uint8); img[16:48, 16:48] = 60
    >>> Image.fromarray(img).save(d / "a.png")
    >>> mask = np.zeros((64, 64), np.uint8); mask[16:48, 16:48] = 255
    >>> Image.fromarray(mask).save(d / "a_lesion.png")
    >>> cases = pd.DataFrame({"case_id": ["a"], "image_path": [str(d / "a.png")],
    ...                       "lesion_mask": [str(d / "a_lesion.png")]})
    >>> pairs = pd.DataFrame({"reference_case_id": ["a"], "target_case_id": ["a"], "text": ["dark lesion"]})
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> table = mask_localisation(r, cases, pairs)
    >>> len(table), float(table.loc[0, "energy_baseline"])
    (1, 0.25)
    """
    from ..data.images import load_mask

    check_choice("method", method, METHODS)
    check_choice("which", which, WHICH)
    check_choice("side", side, SIDES)
    check_options(method, options)
    for name, frame, need in (("cases", cases, ("case_id", "image_path", mask_column)),
                              ("pairs", pairs, ("reference_case_id", "target_case_id"))):
        if not isinstance(frame, pd.DataFrame):
            raise DermretrError(f"{name} must be a DataFrame, got {type(frame).__name__}")
        lacking = [c for c in need if c not in frame.columns]
        if lacking:
            raise DermretrError(f"{name} lacks the columns {lacking} (it has "
                                f"{', '.join(map(str, list(frame.columns)[:12]))})")
    text_column = "text" if "text" in pairs.columns else "modification_text"
    if text_column not in pairs.columns:
        raise DermretrError("pairs needs the query text as a 'text' (or 'modification_text') column")
    if len(pairs) == 0:
        raise DermretrError("no pairs to localise")
    table = cases.assign(case_id=cases["case_id"].astype(str)).drop_duplicates("case_id").set_index("case_id",
                                                                                                    drop=False)
    for col in ("reference_case_id", "target_case_id"):
        unknown = ~pairs[col].astype(str).isin(table.index)
        if unknown.any():
            raise DermretrError(f"{int(unknown.sum())} pairs have a {col} that is not in the case table (e.g. "
                                f"{pairs[col][unknown].iloc[0]!r})")
    bit = default_mask_bit(mask_column, mask_bit)
    size = int(retriever.backbone.image_size)
    tolerance = max(1, size // 16) if tolerance is None else int(tolerance)
    id_columns = ["reference_case_id", "target_case_id", "text"]
    rows, items, masks, labels, skipped = [], [], [], [], []
    for _, pair in pairs.iterrows():
        ref, tgt = table.loc[str(pair["reference_case_id"])], table.loc[str(pair["target_case_id"])]
        case = tgt if side == "target" else ref
        path = case[mask_column]
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise DermretrError(f"case {case['case_id']} has no mask in column {mask_column!r}; leave its pairs "
                                "out")
        try:
            gt = load_mask(path, bit=bit)
            with Image.open(case["image_path"]) as im:
                w, h = im.size
        except (DermretrError, OSError) as exc:
            raise DermretrError(f"case {case['case_id']}: {exc}") from None
        check_mask_aspect(gt.shape, (w, h), case["case_id"], path)
        gt = align_mask(gt, size)
        if not gt.any():
            skipped.append(str(case["case_id"]))
            continue
        items.append((ref["image_path"], str(pair[text_column]), tgt["image_path"]))
        masks.append(gt)
        labels.append(str(case["case_id"]))
        rows.append({"reference_case_id": str(ref["case_id"]), "target_case_id": str(tgt["case_id"]),
                     "text": str(pair[text_column])})
    if skipped:
        warnings.warn(f"{len(skipped)} pairs left out: the mask of {skipped[0]}{' ...' if len(skipped) > 1 else ''} "
                      "is empty in the model's (centre-cropped) frame", DataWarning, stacklevel=2)
    if not items:
        raise DermretrError("no pair has a non-empty mask in the model's frame")
    out = _localise(retriever, items, masks, rows, id_columns, side=side, labels=labels, method=method,
                    which=which, tolerance=tolerance, top_fraction=top_fraction, batch_size=batch_size, **options)
    out.attrs.update({"side": side, "mask_column": mask_column, "skipped": skipped})
    return out
