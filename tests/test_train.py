"""Training: run folder contents, validation, resume after interruption, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from fixtures import train_config

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.models.retriever import Retriever
from dermretr.train import TrainConfig, fit


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from dermretr.data.synth import generate

    root = generate(tmp_path_factory.mktemp("train") / "ds", n_cases=60, seed=4, image_size=64,
                    modification_rate=0.5, workers=1, progress=False)
    return f"synthetic:{root}"


def _cfg(data, out, **kw):
    return train_config(data, out, **kw)


def test_fit_writes_the_run_folder(small_data, tmp_path):
    result = fit(_cfg(small_data, tmp_path / "run", patient_weight=0.5, word_region_weight=0.5))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["model"] == "full"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    for key in ("loss", "combined", "global", "local", "modification", "patient", "word_region", "recall@1",
                "map@10", "alpha"):
        assert key in lines[0], key
    assert 0 <= lines[-1]["recall@1"] <= 1
    assert (run / "training_curve.png").stat().st_size > 1000
    best = Retriever.load(run / "checkpoints" / "best.pt", device="cpu")
    assert best.kind == "full" and best.n_masks == 2
    assert result.best["epoch"] in (1, 2)
    torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.parametrize("kind", ["image", "text", "late_fusion", "clip4cir", "global"])
def test_baselines_train_too(small_data, tmp_path, kind):
    result = fit(_cfg(small_data, tmp_path / kind, model=kind, epochs=1))
    assert result.retriever.kind == kind and "recall@1" in result.history[0]


def test_interrupted_run_resumes_to_the_same_weights(small_data, tmp_path):
    straight = fit(_cfg(small_data, tmp_path / "a", epochs=2))

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(small_data, tmp_path / "b", epochs=2), on_epoch_end=stop)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = fit(_cfg(small_data, tmp_path / "b", epochs=2, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a, b = straight.retriever.state_dict(), resumed.retriever.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_refuses_a_different_config(small_data, tmp_path):
    fit(_cfg(small_data, tmp_path / "run", epochs=1))
    with pytest.raises(DermretrError, match=r"config differs \(lr: run has 0.0005, you asked 0.001\)"):
        fit(_cfg(small_data, tmp_path / "run", epochs=2, lr=1e-3, resume=True))
    with pytest.raises(DermretrError, match="already holds a run; pass --resume"):
        fit(_cfg(small_data, tmp_path / "run", epochs=2))
    with pytest.raises(DermretrError, match="cannot resume.*config.json not found"):
        fit(_cfg(small_data, tmp_path / "new", resume=True))


def test_a_run_of_an_older_dermretr_resumes_without_the_text_skip_and_tone_triplets(small_data, tmp_path):
    """Runs written before checkpoint format 4 have no "text_skip" nor "tone_triplets" in config.json: they had
    neither (and tone triplets are off by default)."""
    cfg = _cfg(small_data, tmp_path / "old", epochs=2, model="global", text_skip=False, tone_triplets=False)
    fit(replace(cfg, epochs=1))
    config = tmp_path / "old" / "config.json"
    saved = json.loads(config.read_text())
    del saved["text_skip"], saved["tone_triplets"]
    config.write_text(json.dumps(saved))
    with pytest.raises(DermretrError, match=r"config differs \(text_skip: run has False, you asked True\).*"
                                            r"resume it with --no-text-skip\)$"):
        fit(replace(cfg, text_skip=True, resume=True))  # today's default
    resumed = fit(replace(cfg, resume=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2] and resumed.retriever.combiner.text_weight is None


def test_bad_training_input(small_data, tmp_path):
    with pytest.raises(DermretrError, match="batch size 500 is larger than the training set"):
        fit(_cfg(small_data, tmp_path / "r1", batch_size=500))
    with pytest.raises(DermretrError, match="unknown model 'bert'"):
        fit(_cfg(small_data, tmp_path / "r2", model="bert"))
    with pytest.raises(DermretrError, match="not divisible by the patch size"):
        fit(_cfg(small_data, tmp_path / "r3", image_size=72))
    with pytest.raises(DermretrError, match="select_metric"):
        fit(replace(_cfg(small_data, tmp_path / "r4"), select_metric="accuracy"))


def test_cli_train_and_its_errors(small_data, tmp_path, capsys):
    out = tmp_path / "cli_run"
    args = ["train", "--data", small_data, "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--image-size", "64", "--n-masks", "2", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert "best epoch 1" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["text_skip"] is True
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["tone_triplets"] is False
    assert main([*args[:4], str(tmp_path / "ablation"), *args[5:], "--no-text-skip", "--tone-triplets"]) == 0
    saved = json.loads((tmp_path / "ablation" / "config.json").read_text())
    assert saved["text_skip"] is False and saved["tone_triplets"] is True and saved["modifications"] is True
    capsys.readouterr()
    assert main(["train", "--data", small_data, "--out", str(tmp_path / "x"), "--backbone", "dermretr-tyni",
                 "--batch-size", "8", "--no-progress"]) == 2
    assert "did you mean dermretr-tiny" in capsys.readouterr().err


def test_hair_augment_draws_thin_dark_curves_reproducibly_and_only_on_training_views():
    import numpy as np
    from PIL import Image

    from dermretr.models.backbones import create
    from dermretr.train._data import HairAugment, transforms

    skin = Image.new("RGB", (128, 96), (200, 150, 130))
    hair = HairAugment(p=1.0)

    def drawn(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return np.asarray(hair(skin))

    a, b, c = drawn(4), drawn(4), drawn(5)  # (a hair may also miss the image: seed 3 draws one outside)
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # the same seed, the same hairs
    changed = (a != np.asarray(skin)).any(axis=-1)
    assert 0 < changed.mean() < 0.2 and a[changed].max() < 100  # thin, dark
    assert np.asarray(skin).min() == 130  # the cached image itself is left alone
    torch.manual_seed(0)
    assert HairAugment(p=0.0)(skin) is skin
    torch.manual_seed(0)
    hits = sum(HairAugment(p=0.3)(skin) is not skin for _ in range(400))
    assert 90 < hits < 150  # about 30% of the views
    with pytest.raises(DermretrError, match="p in \\[0, 1\\]"):
        HairAugment(p=1.5)
    backbone = create("dermretr-tiny", device="cpu", image_size=64)
    base, aug = transforms(backbone, 64, augment=True, hair=0.6)
    assert isinstance(aug.transforms[0], HairAugment) and aug.transforms[0].p == 0.6
    assert not any(isinstance(t, HairAugment) for t in base.transforms)
    assert not any(isinstance(t, HairAugment) for t in transforms(backbone, 64, augment=True)[1].transforms)


def test_optimizer_groups_and_balanced_sampling_weights():
    import pandas as pd

    from dermretr.models.backbones import create
    from dermretr.train._data import balance_weights
    from dermretr.train._loop import param_groups

    model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    cfg = TrainConfig(data="synthetic:x", out="x", lr=1e-3, alpha_lr_mult=20.0)
    groups, params = param_groups(model, cfg)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.alpha_logit)]["lr"] == pytest.approx(0.02)
    assert by_id[id(model.logit_scale)]["weight_decay"] == 0.0
    assert by_id[id(model.masks.prototypes)]["weight_decay"] == 0.0
    assert "weight_decay" not in by_id[id(model.masks.value.weight)]  # matrices take the default decay
    assert len(params) == sum(p.requires_grad for p in model.parameters())

    cases = pd.DataFrame({"diagnosis_group": ["MEL", "MEL", "MEL", "NEV"], "fitzpatrick": [1, 1, 6, pd.NA]})
    w = balance_weights(cases, "diagnosis_group").numpy()
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])  # each group's weights sum to 1
    w2 = balance_weights(cases, "diagnosis_group, fitzpatrick").numpy()
    assert w2.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])  # unknown skin type is its own stratum
    with pytest.raises(DermretrError, match="balance_by 'skin'.*not in the case table"):
        balance_weights(cases, "skin")


def test_fit_takes_a_case_table_with_its_own_splits(synth_root, tmp_path):
    """A benchmark's own folds: the table given replaces the one loaded from config.data."""
    from dermretr._errors import DermretrError
    from dermretr.data import load
    from dermretr.train import TrainConfig, fit

    cases = load("synthetic", synth_root)
    cases["split"] = cases["split"].astype(str).replace({"val": "train"})  # no validation split at all
    cfg = TrainConfig(data=f"synthetic:{synth_root}", out=str(tmp_path / "run"), epochs=1, batch_size=8,
                      image_size=64, progress=False)
    result = fit(cfg, cases=cases)
    assert result.best["metric"] == "-loss" and "recall@1" not in result.history[0]
    with pytest.raises(DermretrError, match="case table"):
        fit(TrainConfig(data=cfg.data, out=str(tmp_path / "run2"), epochs=1, batch_size=8, image_size=64,
                        progress=False), cases=[1, 2])
    assert not (tmp_path / "run2").exists()


def test_fit_or_load_trains_once_then_reuses_resumes_and_refuses_other_settings(small_data, tmp_path, monkeypatch):
    from dermretr.train import _loop, fit_or_load

    run = tmp_path / "run"
    first = fit_or_load(_cfg(small_data, run, epochs=1, resume=True))  # resume is decided by fit_or_load
    assert [h["epoch"] for h in first.history] == [1] and first.run_dir == run
    stamp = (run / "checkpoints" / "last.pt").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run with the same settings was trained again")

    monkeypatch.setattr(_loop, "load", no_training)
    again = fit_or_load(_cfg(small_data, run, epochs=1, progress=True))  # progress may differ
    monkeypatch.undo()
    assert again.history == first.history and again.best == first.best
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp  # nothing written
    a, b = first.retriever.state_dict(), again.retriever.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)

    longer = fit_or_load(_cfg(small_data, run, epochs=2))  # more epochs: the run continues
    assert [h["epoch"] for h in longer.history] == [1, 2]
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    with pytest.raises(DermretrError, match=r"holds a run trained with other settings \(lr: run has 0.0005, "
                                            r"asked 0.001\).*nothing was changed"):
        fit_or_load(_cfg(small_data, run, epochs=2, lr=1e-3))
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before


def test_fit_or_load_refuses_a_folder_of_the_users(small_data, tmp_path):
    from dermretr.train import fit_or_load

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("keep")
    with pytest.raises(DermretrError, match="thesis.docx"):
        fit_or_load(_cfg(small_data, mine))
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


# ----------------------------------------------------------------------------- finding triplets


def _finding_table():
    import pandas as pd

    rows = [  # case, patient, group, pigment network, streaks
        ("a", "P1", "MEL", "atypical", "irregular"),
        ("b", "P2", "MEL", "typical", "absent"),
        ("c", "P3", "MEL", "atypical", "absent"),
        ("d", "P1", "MEL", "typical", None),        # a's patient
        ("e", "P4", "NEV", "typical", "absent"),
        ("f", "P5", "NEV", None, None),
    ]
    return pd.DataFrame(rows, columns=["case_id", "patient_id", "diagnosis_group", "pigment_network", "streaks"])


def test_finding_triplets_ask_for_a_finding_that_a_case_of_the_group_has():
    from dermretr.evaluate import derive_triplets
    from dermretr.train import derive_finding_triplets

    cases = _finding_table()
    t = derive_finding_triplets(cases, seed=3, per_case=2)
    by_id = cases.set_index("case_id")
    assert len(t) > 0 and set(t["reference_case_id"]) <= {"a", "b", "c", "d"}  # NEV: e's findings, no other NEV has
    for r in t.itertuples():
        ref, tgt = by_id.loc[r.reference_case_id], by_id.loc[r.target_case_id]
        assert tgt[r.criterion] == r.to_value != ref[r.criterion]  # the target has what the text asks for
        assert tgt["diagnosis_group"] == ref["diagnosis_group"] == r.relevant_value
        assert tgt["patient_id"] != ref["patient_id"]
    # b asks for irregular streaks: only a has them, and d (a's patient) is never a target of a
    asked = t[(t["reference_case_id"] == "b") & (t["criterion"] == "streaks")]
    assert asked["target_case_id"].tolist() == ["a"] and "d" not in t.loc[t["reference_case_id"] == "a",
                                                                              "target_case_id"].tolist()
    # the modify protocol's own texts for the same draws, and the same triplets for the same seed
    texts = derive_triplets(cases.assign(split="train"), split="train", seed=3, max_per_case=2,
                            gallery_splits=("train",))["modification_text"]
    assert t["modification_text"].tolist() == texts.tolist() and t.equals(derive_finding_triplets(cases, 3, per_case=2))
    assert derive_finding_triplets(cases.drop(columns=["pigment_network", "streaks"])).empty


def test_training_triplets_with_findings_and_their_positives():
    import numpy as np
    import pandas as pd

    from dermretr.train._triplets import training_triplets, triplet_positives

    cases = pd.concat([_finding_table()] * 2, ignore_index=True)
    cases["case_id"] = [f"c{i}" for i in range(len(cases))]
    cases["patient_id"] = [f"p{i}" for i in range(len(cases))]
    train_idx = np.arange(8)  # the last four cases are not training cases
    t = training_triplets("derm7pt:/nowhere", cases, train_idx, seed=0, tone_wanted=False, findings_wanted=True)
    assert len(t) > 0 and set(t["ref"]) | set(t["tgt"]) <= set(train_idx.tolist())
    for r in t.itertuples():
        group, ask = r.key.split("|")
        criterion, value = ask.split("=")
        assert cases.at[r.tgt, criterion] == value and cases.at[r.tgt, "diagnosis_group"] == group
        assert r.key in r.target_key.split(";")  # its own target answers it
    # every in-batch target with the group and the finding answers a finding query, whichever triplet brought it
    pos = triplet_positives(t)
    for i, r in enumerate(t.itertuples()):
        answers = [r.key in k.split(";") for k in t["target_key"]]
        assert pos[i].tolist() == [a or tg == r.tgt for a, tg in zip(answers, t["tgt"])]
    assert not training_triplets("derm7pt:/nowhere", cases, train_idx, seed=0, tone_wanted=False).size


def test_fit_with_finding_triplets(small_data, tmp_path):
    result = fit(_cfg(small_data, tmp_path / "run", epochs=1, finding_triplets=True))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["finding_triplets"] is True
    assert "modification" in result.history[0]
    from dermretr.cli import build_parser

    parsed = vars(build_parser().parse_args(["train", "--data", "d", "--out", "o", "--finding-triplets"]))
    assert parsed["finding_triplets"] is True
