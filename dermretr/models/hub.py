"""Hugging Face conventions: share a :class:`~dermretr.models.retriever.Retriever` as a model repository folder.

A model folder holds

* ``model.safetensors`` - the retriever's state dict (float32, or float16 at half the size), read
  back with ``safetensors`` (no pickle, nothing is executed);
* ``config.json`` - the retriever config exactly as a checkpoint stores it (``"config"``), the
  checkpoint ``"format"``, the ``"dermretr_version"`` that wrote it and the ``"sha256"`` of
  ``model.safetensors``, checked on every load;
* ``README.md`` - the model card: YAML front matter (``library_name: dermretr``, ``license``,
  ``tags``) and its intended use (education and research, **not for diagnosis**), training data
  and licences, metrics with their intervals and floors (as given, "not measured" otherwise) and
  limitations, skin-tone coverage included.

:func:`save_pretrained` writes one atomically (a temporary sibling folder, then a rename), into a
new or empty folder or over a model folder dermretr wrote (``overwrite=True``), never over a folder
of the user's.  :func:`from_pretrained` reads a local folder, ``"hf-hub:ORG/NAME"`` (downloaded
once with ``huggingface_hub``, offline from its cache) or a model shipped with dermretr,
``"dermretr/NAME"`` (:func:`shipped_models`).  :func:`push_to_hub` uploads a model.

Examples
--------
>>> import tempfile, pathlib, torch
>>> from dermretr.models import Retriever, create
>>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
>>> folder = r.save_pretrained(pathlib.Path(tempfile.mkdtemp()) / "my-model")
>>> sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
['README.md', 'config.json', 'model.safetensors']
>>> again = Retriever.from_pretrained(folder, device="cpu")
>>> x = torch.rand(1, 3, 64, 64)
>>> bool((again.encode_targets(x).global_vectors == r.encode_targets(x).global_vectors).all())
True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._checks import check_choice, show
from .._errors import DermretrError, OutputError
from .._io import OWNER_FILE, atomic_dir, exclusive, os_error, owner_kind, umask
from ._card import CARD_KEYS, DTYPES, WEIGHTS_FILE, check_card, model_card
from ._released import RELEASED
from ._tokens import prune_tokens, restore_tokens
from .retriever import CHECKPOINT_FORMAT, Retriever, from_checkpoint

__all__ = ["save_pretrained", "from_pretrained", "push_to_hub", "model_card", "shipped_models", "RELEASED",
           "pretrained_metrics", "WEIGHTS_FILE",
           "CONFIG_FILE", "CARD_FILE", "PRETRAINED_DIR", "DTYPES", "CARD_KEYS"]

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
_MODEL_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE)
#: The ``kind`` of the ownership marker of a model folder (see :func:`dermretr._io.claim_dir`).
_KIND = "model"
#: Where the models shipped with dermretr live: ``dermretr/NAME`` is the folder ``PRETRAINED_DIR / NAME``.
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
_HUB = "hf-hub:"
_SHIPPED = "dermretr/"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_EXPECTED = "a dermretr model folder (written by Retriever.save_pretrained)"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- save


def _check_output(directory: Any, overwrite: bool) -> Path:
    """The absolute folder :func:`save_pretrained` may write; an OutputError (nothing changed) otherwise."""
    if not isinstance(directory, (str, os.PathLike)) or not str(directory).strip():
        raise OutputError(f"the model folder must be a path (str or pathlib.Path), got {show(directory)}")
    path = Path(directory).expanduser().absolute()
    if path.is_symlink():
        path = path.resolve()
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is a file, not a folder; choose another folder")
            break
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder; choose a new or empty folder (nothing was changed)")
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:  # the folder is replaced: not under our feet
        raise OutputError(f"{path} is the current folder (or holds it); choose a new folder (nothing was changed)")
    try:
        content = sorted(p.name for p in path.iterdir())
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if not content:
        return path
    kind = owner_kind(path)
    foreign = [n for n in content if n not in (*_MODEL_FILES, OWNER_FILE)]
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if kind is not None and kind != _KIND:
        raise OutputError(f"{path} is a dermretr {kind} folder, not a model folder; choose a new or empty folder "
                          "(nothing was changed)")
    if kind is None:
        shown = shown or ", ".join(content[:3])
        raise OutputError(f"{path} is not empty and is not a model folder dermretr wrote (it holds {shown}); choose "
                          "a new or empty folder (nothing was changed)")
    if foreign:
        raise OutputError(f"{path} is a dermretr model folder but also holds files it did not write ({shown}); move "
                          "them out or choose another folder (nothing was changed)")
    if not overwrite:
        raise OutputError(f"{path} already holds a dermretr model; pass overwrite=True to replace it "
                          "(nothing was changed)")
    return path


def _weights(model: Retriever, dtype: str) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, floats in ``dtype``, each tensor its own contiguous copy (safetensors shares none)."""
    target = DTYPES[dtype]
    out = {}
    for key, value in model.state_dict().items():
        t = value.detach().to("cpu")
        t = t.to(target) if t.is_floating_point() and t.dtype != target else t.clone()
        if t.is_floating_point() and bool((torch.isfinite(value.cpu()) & ~torch.isfinite(t)).any()):
            raise DermretrError(f"weight {key} exceeds the range of {dtype}; save with dtype='float32'")
        out[key] = t.contiguous()
    return out


def save_pretrained(model: Retriever, directory: str | os.PathLike, *, card: Mapping | None = None,
                    overwrite: bool = False, dtype: str = "float32", vocabulary: Iterable[str] | None = None
                    ) -> Path:
    """Write ``model`` as a Hugging Face style model folder; see the module docstring.

    Parameters
    ----------
    model : Retriever
    directory : str or Path
        The folder: new, empty, or (with ``overwrite``) a model folder dermretr wrote (it carries
        dermretr's ownership marker ``.dermretr.json``).  A folder of the user's is refused, never
        emptied.
    card : dict, optional
        The model card's facts and metrics; see :func:`model_card`.
    overwrite : bool
        Replace a model folder dermretr wrote before: all of it, its ``README.md`` model card too (edit
        the card through ``card``, not by hand, or keep a copy); a folder with any other file is refused.
    dtype : {"float32", "float16"}
        Of the saved weights: float16 halves the file; encodings then agree to about 1e-3.
    vocabulary : list of str, optional
        For a model trained on a closed vocabulary (DermSynth's findings): the texts it was
        trained on and the phrases its users will type.  Only the token-embedding rows of their
        words are kept (the other rows never received a gradient); every other word then reads
        as one shared "unknown word" row, their mean.  The tiny backbone's file shrinks about
        three times; texts of the kept words encode exactly as before.  ``config.json``
        records it (``"token_rows"``) and the card says how many tokens were kept.

    Returns
    -------
    Path
        The absolute folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.models import Retriever, create
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image")
    >>> mine = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (mine / "thesis.docx").write_text("...")
    >>> save_pretrained(r, mine, overwrite=True)
    Traceback (most recent call last):
    ...
    dermretr._errors.OutputError: ... is not empty and is not a model folder dermretr wrote (it holds thesis.docx); ...
    """
    if not isinstance(model, Retriever):
        raise DermretrError(f"model must be a dermretr Retriever, got {show(model)}")
    if not isinstance(overwrite, bool):
        raise DermretrError(f"overwrite must be True or False, got {show(overwrite)}")
    # everything that can be wrong is said before the weights are copied and anything is written
    check_choice("dtype", dtype, tuple(DTYPES))
    card = check_card(card)
    weights, token_rows = _weights(model, dtype), None
    if vocabulary is not None:
        weights, token_rows = prune_tokens(model, weights, vocabulary)
    text = model_card(model, card, dtype=dtype, kept_tokens=None if token_rows is None else
                      (token_rows["kept"], token_rows["vocab_size"]))
    path = _check_output(directory, overwrite)
    from safetensors.torch import save_file

    with exclusive(path, "model folder"):
        _check_output(path, overwrite)  # again: another process may have written it meanwhile
        with atomic_dir(path) as tmp:
            try:
                # one metadata key: safetensors writes several in no fixed order, and the same model
                # should give the same bytes (and sha256) every time
                save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
                os.chmod(tmp / WEIGHTS_FILE, 0o666 & ~umask())  # safetensors writes 0600; outputs follow the umask
            except OSError as exc:
                raise os_error(exc, path) from None
            except Exception as exc:  # safetensors reports I/O failures (a full disk...) as its own error
                if isinstance(exc, DermretrError) or "IoError" not in str(exc):
                    raise
                raise OutputError(f"cannot write {path}: {_first_line(exc)}; free some disk space or choose a "
                                  "folder you can write to") from None
            config = {"library_name": "dermretr", "format": CHECKPOINT_FORMAT, "dermretr_version": __version__,
                      "config": model.config(), "dtype": dtype,
                      "sha256": {WEIGHTS_FILE: _sha256(tmp / WEIGHTS_FILE)}}
            if token_rows is not None:
                config["token_rows"] = token_rows
            if card.get("metrics"):  # the card's numbers, machine-readable (pretrained_metrics)
                config["metrics"] = [dict(r) for r in card["metrics"]]
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            (tmp / CARD_FILE).write_text(text, encoding="utf-8")
            (tmp / OWNER_FILE).write_text(json.dumps({"kind": _KIND, "written_by": f"dermretr {__version__}"}) + "\n")
    return path


# ---------------------------------------------------------------------------- load


def shipped_models() -> list[str]:
    """The names ``NAME`` of the models shipped inside dermretr, loadable as ``"dermretr/NAME"``.

    >>> shipped_models()  # the released DermSynth model
    ['dermsynth-tiny']
    """
    try:
        return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())
    except OSError:
        return []


def pretrained_metrics(name_or_path: str | os.PathLike) -> list[dict]:
    """The metric records a model folder's card was written with (``[]`` when it was written without).

    The same records as the card's evaluation table (``metrics.json`` records: ``run``,
    ``method``, ``protocol``, ``average``, ``metric``, ``k``, ``value``, ``ci_low``,
    ``ci_high``, ``n_queries``), read from ``config.json``.

    >>> pretrained_metrics("dermretr/no-such-model")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: no model 'dermretr/no-such-model' ships with dermretr (shipped: ...
    """
    records = _read_config(_resolve(name_or_path, None, None)).get("metrics") or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DermretrError(f"the metrics in {name_or_path}'s {CONFIG_FILE} are not a list of records; copy or "
                            "download the model folder again")
    return records


def _shipped_text() -> str:
    names = shipped_models()
    return ", ".join(f"{_SHIPPED}{n}" for n in names) if names else "none shipped yet"


def _offline() -> bool:
    """Whether the Hugging Face Hub is off limits (``HF_HUB_OFFLINE``, read now, not when huggingface_hub loaded)."""
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE"))
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache() -> str | None:
    """The hub cache folder the environment names now (``HF_HUB_CACHE``, ``HF_HOME``), or None for the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _hub_error(name: str, exc: BaseException, action: str, offline: bool, revision: str | None = None
               ) -> DermretrError:
    kinds = {c.__name__ for c in type(exc).__mro__}
    status = getattr(getattr(exc, "response", None), "status_code", None)
    repo = name[len(_HUB):]
    if "HFValidationError" in kinds:
        return DermretrError(f"{name!r} is not a Hugging Face model name; write hf-hub:ORG/NAME")
    if kinds & {"RepositoryNotFoundError", "GatedRepoError"} or status in (401, 403):
        return DermretrError(f"cannot {action} {name}: no such model on the Hugging Face Hub, or it is private or "
                             "gated and you are not allowed (log in with `hf auth login` or pass token=...)")
    if "RevisionNotFoundError" in kinds:
        return DermretrError(f"cannot {action} {name}: it has no revision {revision!r}")
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline else f"the Hub cannot be reached ({_first_line(exc, 120)})"
    if action != "fetch":
        return DermretrError(f"cannot {action} {name}: {why}; save the model with save_pretrained(FOLDER) and "
                             "upload that folder where there is internet")
    return DermretrError(f"cannot fetch {name}: {why} and it is not in the local Hugging Face cache; download it "
                         f"where there is internet (`hf download {repo} --local-dir FOLDER`), copy FOLDER here and "
                         "load it with Retriever.from_pretrained('FOLDER')")


def _download(name: str, revision: str | None, token: str | None) -> Path:
    """The snapshot folder of ``hf-hub:ORG/NAME`` (from the cache when offline)."""
    repo = name[len(_HUB):]
    if not _REPO_ID.fullmatch(repo):
        raise DermretrError(f"{name!r} is not a Hugging Face model name; write hf-hub:ORG/NAME")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DermretrError(f"loading {name} needs the huggingface_hub package (pip install huggingface_hub); or "
                            "give a local model folder") from None
    offline = _offline()
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=_hub_cache(), local_files_only=offline,
                                   token=token, allow_patterns=list(_MODEL_FILES), library_name="dermretr",
                                   library_version=__version__)
    except Exception as exc:  # connection, offline, missing repository...: one line saying what to do
        raise _hub_error(name, exc, "fetch", offline, revision) from None
    return Path(folder)


def _resolve(name_or_path: Any, revision: str | None, token: str | None) -> Path:
    """The local folder of a model name or path."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise DermretrError(f"name_or_path must be a model folder, 'hf-hub:ORG/NAME' or 'dermretr/NAME', got "
                            f"{show(name_or_path)}")
    name = name_or_path.strip()
    if name.startswith(_HUB):
        return _download(name, revision, token)
    if revision is not None:
        raise DermretrError(f"revision={revision!r} only applies to 'hf-hub:ORG/NAME' models, not {name!r}")
    local = Path(name).expanduser()
    if local.is_dir():  # a folder of the user's wins over a shipped name
        return local
    if name.startswith(_SHIPPED) and name.count("/") == 1:
        if name[len(_SHIPPED):] not in shipped_models():
            raise DermretrError(f"no model {name!r} ships with dermretr (shipped: {_shipped_text()}); give a folder "
                                "written by save_pretrained or 'hf-hub:ORG/NAME'")
        return PRETRAINED_DIR / name[len(_SHIPPED):]
    if local.exists():
        raise DermretrError(f"{local} is a file, not a model folder: give a folder written by save_pretrained, "
                            f"'hf-hub:ORG/NAME' or a shipped 'dermretr/NAME'; a run of `dermretr train` is given "
                            "as --run RUN_DIR (in Python, a checkpoint file loads with Retriever.load)")
    hint = f"; for the Hugging Face Hub write 'hf-hub:{name}'" if _REPO_ID.fullmatch(name) else ""
    raise DermretrError(f"model folder not found: {local} (give a folder written by save_pretrained, "
                        f"'hf-hub:ORG/NAME' or a shipped 'dermretr/NAME': {_shipped_text()}){hint}")


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        other = " (an open_clip backbone folder: create('local-dir:...') reads it)" \
            if (folder / "open_clip_config.json").is_file() else ""
        raise DermretrError(f"{folder} is not a dermretr model folder: it has no {CONFIG_FILE}{other}; expected "
                            f"{_EXPECTED}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DermretrError(f"cannot read {path}: {_first_line(exc)}; copy or download the model folder again"
                            ) from None
    if not isinstance(meta, dict) or meta.get("library_name") != "dermretr" or not isinstance(meta.get("config"), dict):
        raise DermretrError(f"{path} is not a dermretr model config (no library_name 'dermretr' and config); "
                            f"expected {_EXPECTED}")
    return meta


def from_pretrained(name_or_path: str | os.PathLike, device: str = "auto", *, revision: str | None = None,
                    token: str | None = None, model_class: type[Retriever] | None = None) -> Retriever:
    """Load a retriever from a model folder, the Hugging Face Hub or the models shipped with dermretr.

    Parameters
    ----------
    name_or_path : str or Path
        A folder written by :func:`save_pretrained` (a folder that exists always wins);
        ``"hf-hub:ORG/NAME"``, downloaded once into the Hugging Face cache (``HF_HOME``) and read
        from it offline (``HF_HUB_OFFLINE=1``); or ``"dermretr/NAME"``, a model shipped with
        dermretr (:func:`shipped_models`).
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    revision : str, optional
        A branch, tag or commit of a ``hf-hub:`` model.
    token : str, optional
        For a private ``hf-hub:`` model (default: the login of ``hf auth login``).
    model_class : type, optional
        The class to build (a subclass of :class:`Retriever`).

    Returns
    -------
    Retriever

    Notes
    -----
    The sha256 of ``model.safetensors`` recorded in ``config.json`` is checked before the weights
    are read with ``safetensors`` (no pickle).  Every problem -- a damaged file, a folder that is
    not a model, offline without a cached copy -- is a one-line :class:`~dermretr.DermretrError`
    saying what to do.

    Examples
    --------
    >>> model = from_pretrained("dermretr/dermsynth-tiny", device="cpu")  # the released model, shipped
    >>> model.config()["kind"], model.config()["image_size"]
    ('full', 128)
    >>> from_pretrained("dermretr/no-such-model")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: no model 'dermretr/no-such-model' ships with dermretr (shipped: dermretr/...
    """
    folder = _resolve(name_or_path, revision, token)
    meta = _read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise DermretrError(f"{folder} has no {WEIGHTS_FILE}; copy or download the whole model folder again")
    recorded = meta.get("sha256")
    recorded = recorded.get(WEIGHTS_FILE) if isinstance(recorded, dict) else None
    if not isinstance(recorded, str) or not _SHA.fullmatch(recorded):
        raise DermretrError(f"{folder / CONFIG_FILE} records no sha256 of {WEIGHTS_FILE}; save the model again "
                            "with save_pretrained")
    if _sha256(weights) != recorded:
        raise DermretrError(f"{weights} does not match the sha256 recorded in {CONFIG_FILE} (a damaged, incomplete "
                            "or altered file); copy or download the model folder again")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # SafetensorError and friends
        raise DermretrError(f"cannot load {weights}: not a readable safetensors file ({_first_line(exc)}); copy or "
                            "download the model folder again") from None
    if meta.get("token_rows") is not None:
        state = restore_tokens(state, meta["token_rows"])
    payload = {"format": meta.get("format", 0), "config": meta["config"], "state_dict": state}
    return from_checkpoint(payload, folder, device, expected=_EXPECTED, model_class=model_class)


# ---------------------------------------------------------------------------- upload


def push_to_hub(model: Retriever, repo_id: str, *, card: Mapping | None = None, token: str | None = None,
                private: bool = False, commit_message: str = "Upload dermretr model", dtype: str = "float32") -> Any:
    """Upload ``model`` to the Hugging Face Hub as the model repository ``repo_id``.

    The model is written with :func:`save_pretrained` into a temporary folder (removed after)
    and uploaded with ``huggingface_hub.HfApi().upload_folder`` in one commit; the repository is
    created first when missing.  Loading it back: ``Retriever.from_pretrained("hf-hub:ORG/NAME")``.

    Parameters
    ----------
    model : Retriever
    repo_id : str
        ``"ORG/NAME"`` (or ``"hf-hub:ORG/NAME"``); ORG is your user name or an organisation.
    card : dict, optional
        The model card's facts (:func:`model_card`); ``repo_id`` is filled in.
    token : str, optional
        A Hugging Face write token (default: the login of ``hf auth login`` or ``HF_TOKEN``).
    private : bool
        Create the repository private (an existing one keeps its visibility).
    commit_message : str
    dtype : {"float32", "float16"}

    Returns
    -------
    huggingface_hub.CommitInfo
        What ``upload_folder`` returns (``.commit_url``...).

    Examples
    --------
    >>> push_to_hub(None, "my-lab/dermretr-derm7pt")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: model must be a dermretr Retriever, got None
    """
    if not isinstance(model, Retriever):
        raise DermretrError(f"model must be a dermretr Retriever, got {show(model)}")
    repo = repo_id[len(_HUB):] if isinstance(repo_id, str) and repo_id.startswith(_HUB) else repo_id
    if not isinstance(repo, str) or not _REPO_ID.fullmatch(repo):
        raise DermretrError(f"repo_id must be 'ORG/NAME' (a Hugging Face user or organisation and a model name), got "
                            f"{show(repo_id)}")
    if not isinstance(private, bool):
        raise DermretrError(f"private must be True or False, got {show(private)}")
    if not isinstance(commit_message, str) or not commit_message.strip():
        raise DermretrError(f"commit_message must be a non-empty string, got {show(commit_message)}")
    card = {**check_card(card), "repo_id": repo}
    check_choice("dtype", dtype, tuple(DTYPES))
    from huggingface_hub import HfApi

    name = f"{_HUB}{repo}"
    if _offline():
        raise _hub_error(name, ConnectionError("offline"), "upload to", True)
    with tempfile.TemporaryDirectory(prefix="dermretr-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", card=card, dtype=dtype)
        api = HfApi(token=token)
        try:
            api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
            return api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                     commit_message=commit_message, ignore_patterns=[OWNER_FILE])
        except Exception as exc:  # no login, no network, no right to the repository...: one line
            raise _hub_error(name, exc, "upload to", False) from None
