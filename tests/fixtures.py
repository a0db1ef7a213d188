"""Helpers the loader tests use to write tiny datasets in the publishers' own layouts."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermretr._errors import DataWarning, DermretrError
from dermretr.data.cases import CASE_COLUMNS, validate_cases
from dermretr.data.vocab import CRITERION_NAMES


def write_image(path: Path, size: int = 24, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Write a small random image in ``mode`` (RGB, L, LA, P, RGBA, CMYK, I;16) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size, size), dtype=np.uint16))
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = rgb.convert(mode)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "PNG")
    img.save(path, format=fmt)
    return path


def write_csv(path: Path, rows: Sequence[dict] | pd.DataFrame, bom: bool = False, crlf: bool = False,
              trailing_blank_lines: int = 0) -> Path:
    """Write a CSV as publishers do (optionally with a UTF-8 BOM, CRLF endings, blank lines at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    text = df.to_csv(index=False, lineterminator="\r\n" if crlf else "\n")
    text += ("\r\n" if crlf else "\n") * trailing_blank_lines
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def corrupt_files(folder: Path) -> dict[str, Path]:
    """Write a truncated JPEG, a zero-byte .jpg and a text file named .jpg into ``folder``."""
    folder = Path(folder)
    good = write_image(folder / "_good.jpg", size=64)
    data = good.read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("this is not an image\n")
    good.unlink()
    return {"truncated": truncated, "empty": empty, "text": text}


def write_dataset(csv_path: Path, rows: Sequence[dict] | pd.DataFrame, columns: Sequence[str] | None = None,
                  image: Callable[[int, dict], Path | Sequence[Path] | None] | None = None,
                  image_rows: Collection[int] | None = None, **csv_options) -> None:
    """Write a metadata CSV and tiny images for its rows, as a publisher's folder has them.

    ``columns`` orders (and limits) the CSV columns; ``image(i, row)`` gives the
    image path(s) of row ``i`` (None: no image); ``image_rows``, when given, are
    the only rows whose images are written (the others are "missing").
    ``csv_options`` go to :func:`write_csv`.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    write_csv(csv_path, df, **csv_options)
    if image is None:
        return
    for i, row in enumerate(df.to_dict("records")):
        if image_rows is not None and i not in image_rows:
            continue
        paths = image(i, row)
        for k, path in enumerate([paths] if isinstance(paths, Path) else paths or []):
            write_image(path, size=8, seed=10 * i + k)


def load_quietly(load: Callable[..., pd.DataFrame], *args, **kwargs) -> pd.DataFrame:
    """Call a loader, failing the test on any DataWarning (nothing dropped, repaired or guessed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        return load(*args, **kwargs)


def load_with_one_warning(load: Callable[..., pd.DataFrame], *args, match: str | None = None,
                          **kwargs) -> tuple[pd.DataFrame, str]:
    """Call a loader that must emit exactly one DataWarning (matching ``match``); return the table and message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load(*args, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1, f"expected one DataWarning, got {messages}"
    if match is not None:
        assert re.search(match, messages[0]), f"{match!r} not in {messages[0]!r}"
    return result, messages[0]


def error_message(load: Callable[..., object], *args, **kwargs) -> str:
    """The message of the DermretrError the call must raise."""
    with pytest.raises(DermretrError) as err:
        load(*args, **kwargs)
    return str(err.value)


def bad_value_error(load: Callable[..., object], write: Callable[[list[dict]], Path], rows: Sequence[dict],
                    column: str, value: str, at: Sequence[int]) -> str:
    """The loader's error for ``value`` put in ``column`` at rows ``at``; it must name the column and their lines.

    ``write(rows)`` writes the dataset, its CSV with one line per row under a
    header line (as :func:`write_csv` does: row ``i`` is on line ``i + 2``),
    and returns its folder; the returned message is for further checks (the
    allowed values, the file...).
    """
    rows = [dict(r) for r in rows]
    for i in at:
        rows[i][column] = value
    message = error_message(load, write(rows))
    lines = ", ".join(f"{i + 2} ({value!r})" for i in at)
    assert_mentions(message, repr(column), f"at line{'s' if len(at) > 1 else ''} {lines}")
    return message


def assert_mentions(message: str, *parts: str) -> None:
    """Every one of ``parts`` appears in ``message``."""
    missing = [p for p in parts if p not in message]
    assert not missing, f"{missing} not in message {message!r}"


def assert_case_table(cases: pd.DataFrame, source: str, n: int, images_exist: bool = True,
                      criteria: Collection[str] = ()) -> None:
    """A validated case table of ``n`` rows from ``source`` (schema columns first, validation a no-op).

    Most publisher datasets carry no 7-point criteria, so those columns are NA
    except the ``criteria`` the source grades (PH2); with ``images_exist``
    every image path is absolute and an existing file.
    """
    assert len(cases) == n
    assert list(cases.columns[: len(CASE_COLUMNS)]) == list(CASE_COLUMNS)
    pd.testing.assert_frame_equal(validate_cases(cases), cases)
    assert cases["source"].eq(source).all()
    for c in CRITERION_NAMES:
        assert cases[c].notna().any() if c in criteria else cases[c].isna().all(), c
    if images_exist:
        bad = [p for p in cases["image_path"] if not (Path(p).is_absolute() and Path(p).is_file())]
        assert not bad, f"image paths not absolute existing files: {bad[:3]}"


def train_config(data: str, out, **changes):
    """A TrainConfig small enough for a test: 64 px, batch 16, two masks, CPU, no progress bars (2 epochs)."""
    from dermretr.train import TrainConfig

    base = dict(data=data, out=str(out), epochs=2, batch_size=16, image_size=64, n_masks=2, progress=False,
                device="cpu")
    return TrainConfig(**{**base, **changes})


# ----------------------------------------------------------------------------- faults of the machine


def skip_unless_ci(reason: str, ci_has: str) -> None:
    """Skip for a machine that lacks something outside pip's reach (a system package, root); fail under CI.

    ``ci_has`` says why CI has it (``.ci/run`` installs it, CI runs as root...), so a CI run can never
    skip the test silently.  The one place this rule lives: what ``pip install -e ".[dev]"`` brings
    is required outright, never skipped.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this test may not be skipped ({ci_has})")
    pytest.skip(reason)


def _cannot(reason: str) -> None:
    skip_unless_ci(reason, "CI runs as root, which can mount")


@contextlib.contextmanager
def tmpfs(mount: Path, options: str, why: str):
    """A tmpfs mounted at ``mount`` for the block (skipped where this machine does not allow it, never in CI)."""
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                              text=True)
    except FileNotFoundError:
        _cannot(f"cannot mount a tmpfs here {why} (no mount command)")
    if proc.returncode != 0:
        _cannot(f"cannot mount a tmpfs here {why} ({proc.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(tmp_path: Path):
    """A folder nobody may write to: a read-only tmpfs for root (who ignores permission bits), else mode 0555."""
    if os.geteuid() == 0:
        with tmpfs(tmp_path / "ro", "size=1m,ro", "read-only") as mount:
            yield mount
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def assert_self_contained(page: str) -> list[bytes]:
    """An HTML page whose every image is embedded (a PNG data URI; no file, no URL); returns the decoded PNGs."""
    import base64

    sources = re.findall(r"""<img[^>]*\ssrc=["']([^"']*)["']""", page)
    assert sources and len(sources) == page.count("<img"), "an image without a readable src"
    for src in sources:
        assert src.startswith("data:image/png;base64,"), f"an image refers to {src[:80]!r}"
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "the page refers to an outside file"
    assert "<link" not in page and "<script" not in page
    images = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    assert all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    return images
