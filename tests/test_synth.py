"""DermSynth: layout, determinism, masks, modification triplets, priors, skin, artifacts, bad input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from dermretr._errors import DermretrError, OutputError
from dermretr.color import ita, rgb_to_lab
from dermretr.data import vocab
from dermretr.data.synth import Artifacts, LesionSpec, generate, load_masks, plan_cases, render_case
from dermretr.data.synth.render import ITA_RANGES, skin_lab
from dermretr.data.vocab import CRITERIA, CRITERION_NAMES

DERM7PT_COLUMNS = [
    "case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
    "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
    "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic", "derm",
    "case_id", "notes",
]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- layout


def test_layout_follows_derm7pt(synth_root):
    meta = pd.read_csv(synth_root / "meta" / "meta.csv")
    assert list(meta.columns[: len(DERM7PT_COLUMNS)]) == DERM7PT_COLUMNS
    for extra in ("patient_id", "lesion_id", "variant_of", "fitzpatrick", "ita", "split", "mask"):
        assert extra in meta.columns
    assert len(meta) == 160 and meta["case_id"].is_unique
    for rel in meta["derm"]:
        path = synth_root / "images" / rel
        assert path.suffix == ".jpg" and path.is_file()
    with Image.open(synth_root / "images" / meta["derm"][0]) as img:
        assert img.size == (64, 64) and img.mode == "RGB" and img.format == "JPEG"
    # criteria use Derm7pt's spelling, scores match the vocabulary
    for c in CRITERION_NAMES:
        assert set(meta[c]) <= set(CRITERIA[c])
    scores = [vocab.seven_point_score({c: r[c] for c in CRITERION_NAMES}) for _, r in meta.iterrows()]
    assert meta["seven_point_score"].tolist() == scores


def test_split_index_files_partition_rows_by_patient(synth_root):
    meta = pd.read_csv(synth_root / "meta" / "meta.csv")
    parts = {}
    for name, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        idx = pd.read_csv(synth_root / "meta" / f"{name}_indexes.csv")
        assert list(idx.columns) == ["indexes"]
        parts[split] = set(idx["indexes"])
        assert (meta.loc[sorted(parts[split]), "split"] == split).all()
    assert sorted(parts["train"] | parts["val"] | parts["test"]) == list(range(len(meta)))
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    assert (meta.groupby("patient_id")["split"].nunique() == 1).all()
    share = meta["split"].value_counts(normalize=True)
    assert 0.45 < share["train"] < 0.75 and share["val"] > 0.08 and share["test"] > 0.08


def test_loader_returns_valid_case_table(synth_cases):
    assert synth_cases["source"].eq("synthetic").all()
    assert synth_cases["diagnosis_group"].isin(["BCC", "NEV", "MEL", "MISC", "SK"]).all()
    assert synth_cases["malignant"].eq(synth_cases["diagnosis_group"].isin(["MEL", "BCC"])).all()
    assert synth_cases["fitzpatrick"].between(1, 6).all()
    assert all(Path(p).is_file() for p in synth_cases["image_path"])
    assert all(Path(p).is_file() for p in synth_cases["mask"])


def test_patients_share_skin_type_age_and_sex(synth_cases):
    per_patient = synth_cases.groupby("patient_id")[["fitzpatrick", "age", "sex", "ita"]].nunique()
    assert (per_patient <= 1).all().all()
    assert synth_cases.groupby("patient_id")["lesion_id"].nunique().max() > 1  # some have several lesions


# --------------------------------------------------------------------------- masks


def test_masks_are_non_empty_exactly_for_present_criteria(synth_cases):
    for _, row in synth_cases.head(60).iterrows():
        masks = load_masks(row["mask"])
        assert masks["lesion"].shape == (64, 64) and masks["lesion"].mean() > 0.1
        for c in CRITERION_NAMES:
            present = row[c] != "absent"
            assert bool(masks[c].any()) == present, (row["case_id"], c, row[c])


def test_structure_masks_lie_in_and_around_the_lesion():
    rng = np.random.default_rng(0)
    for i in range(20):
        crit = {c: v[int(rng.integers(1, len(v)))] for c, v in CRITERIA.items()}
        out = render_case(LesionSpec(i, i, i, "melanoma", 1 + i % 6, crit), size=96, artifacts=Artifacts.none())
        lesion = out.masks["lesion"]
        for c in CRITERION_NAMES:
            inside = (out.masks[c] & lesion).sum() / max(1, out.masks[c].sum())
            # streaks and wreath vessels reach past the rim; everything else stays inside
            assert inside > (0.3 if c in ("streaks", "vascular_structures") else 0.9), (c, crit[c], inside)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate(tmp_path / "a", n_cases=70, seed=5, image_size=64, workers=1, progress=False)
    b = generate(tmp_path / "b", n_cases=70, seed=5, image_size=64, workers=2, progress=False)
    c = generate(tmp_path / "c", n_cases=70, seed=6, image_size=64, workers=1, progress=False)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert da.keys() == dc.keys()
    differing = sum(da[k] != dc[k] for k in da)
    assert differing > 0.9 * len(da)


def test_plan_is_deterministic_and_sized():
    r1, m1 = plan_cases(300, seed=2)
    r2, m2 = plan_cases(300, seed=2)
    pd.testing.assert_frame_equal(r1, r2)
    pd.testing.assert_frame_equal(m1, m2)
    assert len(r1) == 300


# --------------------------------------------------------------------------- modifications


def test_modification_triplets_are_exact(synth_root, synth_cases):
    mods = pd.read_csv(synth_root / "meta" / "modifications.csv")
    assert len(mods) > 10
    by_id = synth_cases.set_index("case_id")
    for _, m in mods.iterrows():
        ref, tgt = by_id.loc[m["reference_case_id"]], by_id.loc[m["target_case_id"]]
        assert ref["lesion_id"] == tgt["lesion_id"] and ref["patient_id"] == tgt["patient_id"]
        assert ref["diagnosis"] == tgt["diagnosis"] and ref["split"] == tgt["split"]
        changed = [c for c in CRITERION_NAMES if ref[c] != tgt[c]]
        assert changed == [m["criterion"]]
        assert (ref[m["criterion"]], tgt[m["criterion"]]) == (m["from_value"], m["to_value"])
        # the text says exactly that change
        assert vocab.parse_modification(m["modification_text"]) == {m["criterion"]: m["to_value"]}
        assert synth_cases.index[synth_cases["case_id"] == m["target_case_id"]][0] == m["target_index"]


def test_families_have_several_variants_with_different_changes(synth_root):
    mods = pd.read_csv(synth_root / "meta" / "modifications.csv")
    meta = pd.read_csv(synth_root / "meta" / "meta.csv", keep_default_na=False)
    forward = mods.merge(meta[["case_id", "variant_of"]], left_on="target_case_id", right_on="case_id")
    forward = forward[forward["variant_of"] == forward["reference_case_id"]]
    per_family = forward.groupby("reference_case_id")["criterion"].agg(["count", "nunique"])
    assert (per_family["count"] == per_family["nunique"]).all()
    assert per_family["count"].max() >= 2


def test_variant_differs_from_reference_only_around_the_changed_structure():
    base = {c: "absent" for c in CRITERIA}
    base.update(pigment_network="typical", dots_and_globules="regular", pigmentation="localized regular")
    changes = [("blue_whitish_veil", "present"), ("streaks", "irregular"), ("pigment_network", "atypical"),
               ("vascular_structures", "dotted"), ("regression_structures", "white areas")]
    for criterion, value in changes:
        ref = render_case(LesionSpec(3, 4, 5, "melanoma", 2, base), size=128, artifacts=Artifacts.none())
        tgt = render_case(LesionSpec(3, 4, 5, "melanoma", 2, dict(base, **{criterion: value})), size=128,
                          artifacts=Artifacts.none())
        diff = np.abs(ref.image.astype(int) - tgt.image.astype(int)).max(axis=2)
        zone = ref.masks[criterion] | tgt.masks[criterion]
        grown = np.asarray(Image.fromarray(zone.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(7))) > 0
        assert np.percentile(diff[grown], 90) > 10, criterion  # the change is visible ...
        assert diff[~grown].max() <= 2, criterion         # ... and nothing else moved


# --------------------------------------------------------------------------- priors, skin, artifacts


def test_clinical_priors_drive_the_criteria():
    rows, _ = plan_cases(4000, seed=0)
    by_group = rows.groupby("diagnosis_group")
    atypical = by_group["pigment_network"].apply(lambda s: (s == "atypical").mean())
    veil = by_group["blue_whitish_veil"].apply(lambda s: (s == "present").mean())
    arbor = by_group["vascular_structures"].apply(lambda s: (s == "arborizing").mean())
    assert atypical["MEL"] > 3 * atypical["NEV"]
    assert veil["MEL"] > 3 * veil["NEV"]
    assert arbor["BCC"] > 0.5 and arbor.drop("BCC").max() < 0.05
    assert set(rows["diagnosis"]) <= set(vocab.DIAGNOSES)
    assert rows["diagnosis_group"].value_counts(normalize=True).min() > 0.05


def test_uniform_priors_balance_every_value():
    rows, _ = plan_cases(3000, seed=0, priors="uniform")
    for c, values in CRITERIA.items():
        share = rows[c].value_counts(normalize=True).reindex(values, fill_value=0)
        assert share.min() > 0.5 / len(values), c


@pytest.mark.parametrize("fitz", range(1, 7))
def test_skin_colour_falls_in_the_types_ita_range(fitz):
    lo, hi = ITA_RANGES[fitz]
    for seed in range(20):
        L, a, b = skin_lab(fitz, seed)
        assert lo <= ita(L, b) <= hi


def test_rendered_skin_matches_type_and_contrast_falls_on_darker_skin():
    crit = {"pigmentation": "diffuse regular"}
    contrasts, itas = [], []
    for fitz in range(1, 7):
        out = render_case(LesionSpec(9, 9, 9, "clark nevus", fitz, crit), size=128, artifacts=Artifacts.none())
        lab = rgb_to_lab(out.image / 255.0)
        skin = lab[~out.masks["lesion"]]
        lesion = lab[out.masks["lesion"]]
        contrasts.append(np.median(skin[:, 0]) - np.median(lesion[:, 0]))
        itas.append(float(ita(np.median(skin[:, 0]), np.median(skin[:, 2]))))
    assert all(a > b for a, b in zip(itas, itas[1:])), itas
    assert all(a > b for a, b in zip(contrasts, contrasts[1:])), contrasts
    assert contrasts[-1] > 5  # still visible on type VI


def test_artifacts_are_switchable():
    spec = LesionSpec(1, 2, 3, "clark nevus", 2, {"pigment_network": "typical"})
    clean = render_case(spec, size=96, artifacts=Artifacts.none()).image
    # with every artifact on, some seeds show dark vignette corners, hair etc.; clean never does
    corner_dark = []
    for seed in range(12):
        img = render_case(LesionSpec(1, seed, 3, "clark nevus", 2, {"pigment_network": "typical"}), size=96).image
        corner_dark.append(img[:4, :4].mean() < 30)
    assert any(corner_dark) and not all(corner_dark)
    assert clean[:4, :4].mean() > 100
    only_hair = Artifacts.from_names(["hair"])
    assert only_hair.enabled() == ["hair"]
    with pytest.raises(DermretrError, match="unknown artifact"):
        Artifacts.from_names(["hair", "smudge"])


def test_render_rejects_tiny_images_and_bad_types():
    with pytest.raises(DermretrError, match="at least 64"):
        render_case(LesionSpec(1, 1, 1, "melanoma", 2), size=32)
    with pytest.raises(DermretrError, match="Fitzpatrick"):
        render_case(LesionSpec(1, 1, 1, "melanoma", 7), size=64)
    with pytest.raises(DermretrError, match="wavy"):
        render_case(LesionSpec(1, 1, 1, "melanoma", 2, {"streaks": "wavy"}), size=64)


# --------------------------------------------------------------------------- bad input and atomic output


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_cases": 0}, "positive integer"),
        ({"n_cases": -3}, "positive integer"),
        ({"image_size": 63}, "at least 64"),
        ({"priors": "flat"}, "priors must be one of"),
        ({"modification_rate": 1.5}, "modification rate"),
        ({"modification_rate": "half"}, "modification rate"),
        ({"seed": [1]}, "seed must be"),
        ({"seed": -1}, "seed must be"),
        ({"workers": True}, "workers must be"),
        ({"n_cases": "10"}, "positive integer"),
        ({"artifacts": "none"}, "artifacts must be"),
        ({"out": None}, "must be a path"),
        ({"out": ""}, "must be a path"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, kwargs, message):
    args = dict(out=tmp_path / "out", n_cases=5, image_size=64, workers=1, progress=False) | kwargs
    with pytest.raises(DermretrError, match=message):
        generate(**args)
    assert list(tmp_path.iterdir()) == []


def _gen(out, **kwargs):
    return generate(out, **(dict(n_cases=4, image_size=64, workers=1, progress=False) | kwargs))


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_user_folder_is_refused_even_with_overwrite(tmp_path, overwrite):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    (out / "sub" / "thesis.docx").write_text("years of work")
    before = _digest(out)
    with pytest.raises(OutputError) as err:
        _gen(out, overwrite=overwrite)
    message = str(err.value)
    assert str(out) in message and "keep.txt" in message and "not a DermSynth dataset" in message
    assert "--overwrite" in message and "\n" not in message
    assert _digest(out) == before and sorted(p.name for p in out.iterdir()) == ["keep.txt", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or lock left beside it


@pytest.mark.parametrize("where", [".", "parent"])
def test_the_current_folder_and_its_parents_are_never_replaced(tmp_path, monkeypatch, where):
    cwd = tmp_path / "project" / "work"
    cwd.mkdir(parents=True)
    (cwd / "notes.txt").write_text("mine")
    monkeypatch.chdir(cwd)
    out = Path(".") if where == "." else Path("..")
    before = _digest(tmp_path)
    with pytest.raises(OutputError, match="current folder"):
        _gen(out, overwrite=True)
    assert _digest(tmp_path) == before and Path.cwd() == cwd.resolve()
    # even when the current folder is itself a DermSynth dataset: replacing it would pull it from under the user
    ds = _gen(tmp_path / "ds")
    monkeypatch.chdir(ds)
    before = _digest(ds)
    with pytest.raises(OutputError, match="current folder"):
        _gen(Path("."), overwrite=True)
    assert _digest(ds) == before


def test_an_existing_dermsynth_dataset_needs_overwrite_and_is_then_replaced(tmp_path):
    out = _gen(tmp_path / "ds", seed=1)
    before = _digest(out)
    with pytest.raises(OutputError, match="already holds a DermSynth dataset.*--overwrite"):
        _gen(out, seed=2)
    assert _digest(out) == before
    _gen(out, seed=2, n_cases=5, overwrite=True)
    assert len(pd.read_csv(out / "meta" / "meta.csv")) == 5 and _digest(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folders or lock left


def test_a_dermsynth_dataset_holding_user_files_is_not_replaced(tmp_path):
    out = _gen(tmp_path / "ds")
    (out / "runs").mkdir()
    (out / "runs" / "model.pt").write_text("a trained model")
    (out / "meta" / "my_labels.csv").write_text("a,b\n")
    before = _digest(out)
    with pytest.raises(OutputError, match=r"also holds files it did not write \(meta/my_labels.csv, runs\)"):
        _gen(out, overwrite=True)
    assert _digest(out) == before


def test_a_link_to_a_dermsynth_dataset_replaces_its_target(tmp_path):
    target = _gen(tmp_path / "real", seed=1)
    link = tmp_path / "link"
    link.symlink_to(target)
    _gen(link, seed=2, overwrite=True)
    assert link.is_symlink() and json.loads((target / "meta" / "dermsynth.json").read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_an_empty_folder_is_written(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    _gen(out)
    assert (out / "meta" / "dermsynth.json").is_file()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_output_follows_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        out = _gen(tmp_path / "ds")
    finally:
        os.umask(old)
    dirs = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4 + 4 + 6 and len(dirs) >= 6
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(file_mode)}
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(dir_mode)}


def test_a_second_writer_of_the_same_folder_gets_a_clear_error(tmp_path):
    from dermretr._io import exclusive

    out = tmp_path / "ds"
    with exclusive(out, "--out"):  # as another dermretr process writing it would hold it
        with pytest.raises(OutputError, match="being written by another dermretr process"):
            _gen(out)
    assert not out.exists()


def test_stale_temporaries_of_a_killed_run_are_cleaned(tmp_path):
    from dermretr._io import StaleTemporaryWarning

    stale = tmp_path / ".ds.dermretr-999999999-abcd1234.new"  # a run killed with kill -9
    (stale / "images").mkdir(parents=True)
    with pytest.warns(StaleTemporaryWarning):
        _gen(tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        generate(blocker / "sub", n_cases=3, image_size=64, workers=1, progress=False)
    if os.geteuid() != 0:  # root ignores permissions; the file case above always runs
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputError, match="cannot write"):
            generate(ro / "sub", n_cases=3, image_size=64, workers=1, progress=False)


def test_failure_midway_leaves_previous_dataset_intact(tmp_path, monkeypatch):
    import dermretr.data.synth.dataset as gen

    out = generate(tmp_path / "ds", n_cases=6, image_size=64, workers=1, progress=False)
    before = _digest(out)
    calls = {"n": 0}
    real = gen._render_chunk

    def flaky(task):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("disk on fire")
        return real(task)

    monkeypatch.setattr(gen, "_render_chunk", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate(out, n_cases=40, image_size=64, workers=1, progress=False, overwrite=True)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_docs_hold_the_current_prior_table():
    from dermretr.data.synth.priors import prior_table_markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "dermsynth.md").read_text()
    assert prior_table_markdown() in doc, "regenerate the prior table in docs/dermsynth.md"
