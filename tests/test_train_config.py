"""TrainConfig: its checks, reading it back from a run's config.json, and its docstring (the CLI's help)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from dermretr._errors import DermretrError
from dermretr.train import TrainConfig, config_from_dict, read_run_config
from dermretr.train._config import plain


def _plain_message(exc_info, *parts: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    assert "weights_only" not in message and "Traceback" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def test_config_from_dict_checks_the_values(tmp_path):
    good = asdict(TrainConfig(data="synthetic:x", out="x"))
    assert config_from_dict(good) == TrainConfig(data="synthetic:x", out="x")
    with pytest.raises(DermretrError, match=r"^run/config.json: batch_size must be an integer, got '8'$"):
        config_from_dict(dict(good, batch_size="8"), source="run/config.json")
    with pytest.raises(DermretrError, match="training options must be a dict, got list"):
        config_from_dict([1])  # type: ignore[arg-type]
    (tmp_path / "config.json").write_text("{\n  'lr': 1\n}\n")
    with pytest.raises(DermretrError, match=r"config.json is not valid JSON \(Expecting property name .*line 2\)"):
        read_run_config(tmp_path / "config.json")


# --------------------------------------------------------------------------- TrainConfig.check


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, says", [
    ("epochs", "3", "epochs must be an integer, got '3'"),
    ("epochs", 0, "epochs must be a positive integer, got 0"),
    ("epochs", 2.0, "epochs must be an integer, got 2.0"),
    ("batch_size", True, "batch_size must be an integer, got True"),
    ("batch_size", 1, "batch_size must be at least 2"),
    ("image_size", -64, "image_size must be a positive integer"),
    ("n_masks", False, "n_masks must be an integer, got False"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("seed", 2**40, "seed must be below 2**32"),
    ("num_workers", -2, "num_workers must be an integer >= 0"),
    ("lr", NAN, "lr must be a finite number > 0, got nan"),
    ("lr", INF, "lr must be a finite number > 0, got inf"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("lr", "1e-3", "lr must be a number, got '1e-3'"),
    ("weight_decay", -0.1, "weight_decay must be a finite number >= 0"),
    ("weight_decay", NAN, "weight_decay must be a finite number >= 0, got nan"),
    ("alpha", 1.5, "alpha must be a finite number in [0, 1], got 1.5"),
    ("alpha", NAN, "alpha must be a finite number in [0, 1], got nan"),
    ("alpha", -INF, "alpha must be a finite number in [0, 1], got -inf"),
    ("alpha", True, "alpha must be a number, got True"),
    ("alpha_lr_mult", 0, "alpha_lr_mult must be a finite number > 0"),
    ("alpha_lr_mult", INF, "alpha_lr_mult must be a finite number > 0, got inf"),
    ("patient_weight", -1, "patient_weight must be a finite number >= 0"),
    ("patient_weight", NAN, "patient_weight must be a finite number >= 0, got nan"),
    ("word_region_weight", INF, "word_region_weight must be a finite number >= 0, got inf"),
    ("select_metric", "map@abc", "select_metric 'map@abc' is not a retrieval metric"),
    ("select_metric", "map@0", "select_metric 'map@0' is not a retrieval metric"),
    ("select_metric", "map@", "select_metric 'map@' is not a retrieval metric"),
    ("select_metric", "mrr@5", "select_metric 'mrr@5' is not a retrieval metric"),
    ("select_metric", "accuracy", "select_metric 'accuracy' is not a retrieval metric"),
    ("select_metric", 10, "select_metric must be a non-empty string, got 10"),
    ("model", None, "model must be a non-empty string, got None"),
    ("model", "bert", "unknown model 'bert'"),
    ("backbone", 3, "backbone must be a non-empty string, got 3"),
    ("data", "", "data must be a non-empty string, got ''"),
    ("out", " ", "out must be a non-empty string"),
    ("out", Path("run"), "out must be a non-empty string, got PosixPath('run')"),
    ("balance_by", ["diagnosis_group"], "balance_by must be a non-empty string"),
    ("device", "tpu", "device 'tpu' is not one of auto, cpu, cuda, cuda:N or mps"),
    ("device", "cuda:x", "device 'cuda:x' is not one of"),
    ("pretrained", 3, "pretrained must be a pretrained tag or the path of a weights file"),
    ("resume", "yes", "resume must be True or False, got 'yes'"),
    ("augment", 1, "augment must be True or False, got 1"),
    ("hair_augment", 1.5, "hair_augment must be a finite number in [0, 1], got 1.5"),
    ("hair_augment", -0.1, "hair_augment must be a finite number in [0, 1], got -0.1"),
    ("hair_augment", "0.5", "hair_augment must be a number, got '0.5'"),
    ("extra", [1], "extra must be a dict"),
    ("extra", {"f": object()}, "extra must hold JSON values only"),
])
def test_bad_training_options_are_rejected(field, value, says):
    cfg = TrainConfig(data="synthetic:x", out="x")
    setattr(cfg, field, value)
    with pytest.raises(DermretrError) as err:
        cfg.check()
    _plain_message(err, says)


def test_hair_augment_needs_augment():
    cfg = TrainConfig(data="synthetic:x", out="x", hair_augment=0.6, augment=False)
    with pytest.raises(DermretrError) as err:
        cfg.check()
    _plain_message(err, "hair_augment=0.6 draws hairs on augmented training views: turn augment on")
    TrainConfig(data="synthetic:x", out="x", hair_augment=0.0, augment=False).check()
    TrainConfig(data="synthetic:x", out="x", hair_augment=1.0).check()


def test_good_training_options_pass_the_check():
    for kw in (dict(select_metric="mrr"), dict(select_metric="ndcg@7"), dict(select_metric="recall@100"),
               dict(alpha=0), dict(alpha=1), dict(weight_decay=0), dict(device="cuda:1"), dict(pretrained=None),
               dict(epochs=np.int64(3), lr=np.float32(1e-3), augment=np.bool_(True))):
        cfg = TrainConfig(data="synthetic:x", out="x", **kw)
        cfg.check()
        json.loads(json.dumps(asdict(cfg), default=plain))  # numpy values are saved as plain JSON


def test_train_package_face_and_config_defaults():
    import dermretr.train as train
    from dermretr.models.embeddings import DEFAULT_ALPHA
    from dermretr.train import field_docs
    from dermretr.train._config import DEFAULT_ALPHA as WRITTEN_OUT

    assert TrainConfig(data="d", out="o").alpha == DEFAULT_ALPHA == WRITTEN_OUT
    for name in train.__all__:
        assert getattr(train, name) is not None, name
    docs = field_docs()
    from dataclasses import fields

    assert [f.name for f in fields(TrainConfig)] == list(docs)  # one docstring entry per field, in order
    assert all(text and "``" not in text and ":func:" not in text for text in docs.values())
