"""The model card (``README.md``) of a model folder written by :func:`dermretr.models.hub.save_pretrained`.

:func:`model_card` renders it from the retriever and a dict of facts (:data:`CARD_KEYS`): YAML
front matter for the Hugging Face Hub, intended use (education and research, **not for
diagnosis**), training data and licences, metrics with their intervals and floors as a markdown
table, and limitations, skin-tone coverage included.  Nothing is made up: what the dict does not
give reads "not stated" or "not measured".

Examples
--------
>>> from dermretr.models import Retriever, create
>>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image")
>>> text = model_card(r)
>>> text.splitlines()[:2], "Retrieval metrics: not measured." in text
(['---', 'library_name: dermretr'], True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._checks import check_choice, check_level, is_int, is_real, show
from .._errors import DermretrError
from .retriever import CHECKPOINT_FORMAT, Retriever

__all__ = ["model_card", "check_card", "CARD_KEYS", "DTYPES", "WEIGHTS_FILE"]

WEIGHTS_FILE = "model.safetensors"
#: The dtypes weights can be saved in.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
#: The keys a model card dict may have (see :func:`model_card`).
CARD_KEYS = ("model_name", "description", "license", "tags", "pipeline_tag", "training_data", "metrics",
             "ci_level", "skin_tone", "limitations", "authors", "citation", "repo_id", "load_as")
_TAGS = ("dermretr", "dermatology", "dermoscopy", "composed-image-retrieval", "image-text-retrieval",
         "medical-education")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DermretrError(f"card[{name!r}] must be a non-empty string, got {show(value)}")
    return " ".join(value.split())


def _texts(value: Any, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, (bytes, Mapping)):
        raise DermretrError(f"card[{name!r}] must be a string or a list of strings, got {show(value)}")
    return [_text(v, name) for v in items]


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _number(record: Mapping, key: str, i: int) -> float | None:
    value = record.get(key)
    if value is not None and not is_real(value):
        raise DermretrError(f"card['metrics'][{i}][{key!r}] must be a number or None, got {show(value)}")
    return None if value is None else float(value)


def _read_metrics(value: Any) -> list[Mapping]:
    """The metric records of ``card["metrics"]``: a list of records, or the path of a ``metrics.json``."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise DermretrError(f"cannot read card['metrics'] {path}: {_first_line(exc)}; give a metrics.json "
                                "written by `dermretr evaluate` or a list of records") from None
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or \
            not all(isinstance(r, Mapping) for r in value):
        raise DermretrError(f"card['metrics'] must be a list of metric records (dicts with 'metric' and 'value', as "
                            f"in metrics.json) or the path of a metrics.json, got {show(value)}")
    for i, r in enumerate(value):
        if not isinstance(r.get("metric"), str) or not r["metric"]:
            raise DermretrError(f"card['metrics'][{i}] has no metric name ('metric': 'recall', k: 10...)")
        for key in ("value", "ci_low", "ci_high"):
            _number(r, key, i)
        for key in ("k", "n_queries"):
            if r.get(key) is not None and not is_int(r[key]):
                raise DermretrError(f"card['metrics'][{i}][{key!r}] must be an integer or None, got {show(r[key])}")
    return list(value)


def check_card(card: Any) -> dict:
    """``card`` checked (a dict of :data:`CARD_KEYS`), its metrics read; a one-line DermretrError otherwise."""
    if card is None:
        return {}
    if not isinstance(card, Mapping):
        raise DermretrError(f"card must be a dict (keys: {', '.join(CARD_KEYS)}), got {show(card)}")
    unknown = [str(k) for k in card if k not in CARD_KEYS]
    if unknown:
        raise DermretrError(f"unknown model card key(s) {', '.join(map(repr, unknown))}; known: {', '.join(CARD_KEYS)}")
    out = {k: v for k, v in card.items() if v is not None}
    for key in ("model_name", "description", "license", "pipeline_tag", "authors", "citation", "repo_id", "load_as"):
        if key in out:
            out[key] = _text(out[key], key)
    for key in ("tags", "limitations"):
        if key in out:
            out[key] = _texts(out[key], key)
    if "metrics" in out:
        out["metrics"] = _read_metrics(out["metrics"])
    if "ci_level" in out:
        out["ci_level"] = check_level(out["ci_level"])
    data = out.get("training_data")
    if data is not None and not isinstance(data, str):
        items = [data] if isinstance(data, Mapping) else data
        if not isinstance(items, Sequence) or not all(isinstance(d, (str, Mapping)) for d in items) or \
                not all(isinstance(d, str) or isinstance(d.get("name"), str) for d in items):
            raise DermretrError("card['training_data'] must be a string or a list of dicts with 'name' (and "
                                f"'license', 'url', 'cases'), got {show(data)}")
        out["training_data"] = list(items)
    tone = out.get("skin_tone")
    if tone is not None and not isinstance(tone, str) and not (
            isinstance(tone, Mapping) and all(is_int(n) or is_real(n) for n in tone.values())):
        raise DermretrError(f"card['skin_tone'] must be a string or a dict of counts per skin-tone range "
                            f"({{'I-II': 812, 'III-IV': 140, 'V-VI': 9}}), got {show(tone)}")
    return out


def _front_matter(card: dict) -> list[str]:
    tags = list(dict.fromkeys([*_TAGS, *card.get("tags", [])]))
    lines = ["---", "library_name: dermretr", f"license: {json.dumps(card.get('license', 'unknown'))}", "tags:"]
    lines += [f"- {json.dumps(t)}" for t in tags]
    if "pipeline_tag" in card:
        lines.append(f"pipeline_tag: {json.dumps(card['pipeline_tag'])}")
    return [*lines, "---", ""]


def _training_data(card: dict) -> list[str]:
    data = card.get("training_data")
    if data is None:
        lines = ["Not stated: ask the authors which data (and which licences) the weights come from."]
    elif isinstance(data, str):
        lines = [" ".join(data.split())]
    else:
        lines = []
        for d in data:
            if isinstance(d, str):
                lines.append(f"- {_cell(d)}")
                continue
            licence = d.get("license", d.get("licence"))
            parts = [f"licence: {_cell(licence) if licence else 'not stated'}"]
            parts += [f"{_cell(d['cases'])} cases"] if d.get("cases") is not None else []
            parts += [f"<{d['url']}>"] if d.get("url") else []
            lines.append(f"- **{_cell(d['name'])}** ({'; '.join(parts)})")
    return ["## Training data", "", *lines, "",
            "The weights carry the terms of the data they were trained on: respect each dataset's licence and "
            "consent terms (several allow non-commercial research only).", ""]


def _metrics(card: dict) -> list[str]:
    records = card.get("metrics")
    head = ["## Evaluation", ""]
    if not records:
        return [*head, "Retrieval metrics: not measured.", "",
                "Floors (non-learned rankings of the same queries): not measured.", ""]
    level = card.get("ci_level")
    ci = f"{level:.0%} CI" if level is not None else "CI"
    lines = [*head, f"| run | method | protocol | average | metric | value | {ci} | queries |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(records):
        value, low, high = (_number(r, key, i) for key in ("value", "ci_low", "ci_high"))
        metric = r["metric"] if r.get("k") is None else f"{r['metric']}@{r['k']}"
        interval = "not measured" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
        cells = [r.get("run"), r.get("method"), r.get("protocol"), r.get("average"), metric,
                 "not measured" if value is None else f"{value:.3f}", interval, r.get("n_queries")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    floors = any(str(r.get("run", "")).startswith("floor:") for r in records)
    lines += ["", "Rows whose run is `floor:NAME` are non-learned rankings of the same queries (dermretr.floors): "
              "the model is shown better than one only where the paired difference over the same queries has a "
              "confidence interval above 0 (intervals that merely overlap show nothing either way)." if floors else
              "Floors (non-learned rankings of the same queries, dermretr.floors): not measured; without them these "
              "numbers cannot show that the model beats chance or the majority class.", ""]
    return lines


def _limitations(card: dict) -> list[str]:
    tone = card.get("skin_tone")
    if tone is None:
        coverage = ("not measured. Public dermoscopy collections hold mostly light skin, so expect worse retrieval on "
                    "darker skin until it is measured (`dermretr fairness`, lesson 5).")
    elif isinstance(tone, str):
        coverage = " ".join(tone.split())
    else:
        coverage = "training cases per range: " + ", ".join(f"{_cell(k)}: {_cell(v)}" for k, v in tone.items()) + \
                   " (ranges with few cases are where retrieval is least reliable)."
    lines = ["## Limitations", "", f"- Skin-tone coverage: {coverage}",
             "- The numbers above hold for the data and protocol they were measured on; images from other devices, "
             "clinics, body sites or populations may be ranked worse.",
             "- Similar-looking retrieved cases are not a diagnosis, and their labels can be wrong."]
    return [*lines, *(f"- {t}" for t in card.get("limitations", [])), ""]


def model_card(model: Retriever, card: Mapping | None = None, *, dtype: str = "float32",
               kept_tokens: tuple[int, int] | None = None) -> str:
    """The model card (``README.md``) :func:`save_pretrained` writes for ``model``.

    Parameters
    ----------
    model : Retriever
    card : dict, optional
        Facts about the model, each optional (:data:`CARD_KEYS`): ``model_name``, ``description``,
        ``license`` (a Hugging Face licence id of the weights; default ``"unknown"``), ``tags``,
        ``pipeline_tag`` (absent by default: no Hugging Face pipeline does composed retrieval),
        ``training_data`` (a string or a list of ``{"name", "license", "url", "cases"}``),
        ``metrics`` (the records of ``metrics.json`` -- ``metric, k, value, ci_low, ci_high,
        n_queries``, floors as ``run="floor:NAME"`` -- or the file's path), ``ci_level``,
        ``skin_tone`` (a string, or training cases per skin-tone range), ``limitations``,
        ``authors``, ``citation``, ``repo_id`` (``"ORG/NAME"``, for the loading example) and
        ``load_as`` (the name the loading example uses instead, e.g. a shipped ``"dermretr/NAME"``).
        Nothing is made up: what is missing reads "not stated" or "not measured".
    dtype : str
        The dtype of the saved weights, shown in the card.
    kept_tokens : (int, int), optional
        Token-embedding rows kept of the tokenizer's vocabulary, when the weights were saved with a
        closed vocabulary (``save_pretrained(..., vocabulary=...)``); shown in the card.

    Examples
    --------
    >>> from dermretr.models import Retriever, create
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image")
    >>> text = model_card(r, {"metrics": [{"run": "a", "metric": "recall", "k": 10, "value": 0.41,
    ...                                    "ci_low": 0.35, "ci_high": 0.47, "n_queries": 120}]})
    >>> "**Not for diagnosis.**" in text, "| a |  |  |  | recall@10 | 0.410 | [0.350, 0.470] | 120 |" in text
    (True, True)
    """
    if not isinstance(model, Retriever):
        raise DermretrError(f"model must be a dermretr Retriever, got {show(model)}")
    card = check_card(card)
    cfg = model.config()
    check_choice("dtype", dtype, tuple(DTYPES))
    title = card.get("model_name") or f"dermretr {cfg['kind']} retriever ({cfg['backbone']})"
    name = card.get("load_as") or (f"hf-hub:{card['repo_id']}" if "repo_id" in card else "path/to/this/folder")
    details = [("backbone", f"`{cfg['backbone']}` ({cfg.get('image_size')} px)"), ("kind", f"`{cfg['kind']}`"),
               ("spatial masks", cfg["n_masks"] if model.uses_local else "none"),
               ("weight of local evidence (alpha)", f"{model.alpha:.3f}"), ("weights", f"{WEIGHTS_FILE}, {dtype}"),
               ("checkpoint format", CHECKPOINT_FORMAT), ("written by", f"dermretr {__version__}")]
    if kept_tokens is not None:
        details.insert(5, ("text vocabulary", f"{kept_tokens[0]:,} of {kept_tokens[1]:,} tokens kept (the words of "
                           "its training texts); any other word reads as one shared unknown-word vector"))
    lines = [*_front_matter(card), f"# {title}", "",
             card.get("description") or "A dermretr composed image+text retriever: a reference skin-lesion image "
             "plus a text (dermoscopic findings, or a change to them) ranks the cases of a database by similarity.",
             "", "## Intended use", "",
             "- Education and research: teaching dermoscopic criteria, exploring composed retrieval and its "
             "explanations, reproducing experiments.",
             "- **Not for diagnosis.** This model is not a medical device and has not been clinically validated: "
             "do not use it to diagnose, triage or choose a treatment for any patient.", "",
             "## How to use", "", "```python", "from dermretr.models import Retriever",
             f"model = Retriever.from_pretrained({json.dumps(name)})",
             'queries = model.encode_queries(query_images, ["blue-whitish veil"])',
             "targets = model.encode_targets(database_images)", "```", "",
             "## Model details", "", "| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in details), "",
             *_training_data(card), *_metrics(card), *_limitations(card)]
    if "authors" in card:
        lines += ["## Authors", "", card["authors"], ""]
    if "citation" in card:
        lines += ["## Citation", "", "```", card["citation"], "```", ""]
    return "\n".join(lines)
