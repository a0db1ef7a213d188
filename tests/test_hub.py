"""Hugging Face conventions: save_pretrained / from_pretrained / push_to_hub, the model card, the registry."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dermretr._errors import DermretrError, OutputError
from dermretr._io import OWNER_FILE
from dermretr.models import hub
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever

FILES = {"README.md", "config.json", "model.safetensors"}
METRICS = [
    {"run": "runs/full", "method": "full", "protocol": "case", "average": "micro", "metric": "recall", "k": 10,
     "value": 0.5123, "ci_low": 0.4401, "ci_high": 0.5802, "n_queries": 120},
    {"run": "floor:random", "method": "random", "protocol": "case", "average": "micro", "metric": "recall", "k": 10,
     "value": 0.2107, "ci_low": None, "ci_high": None, "n_queries": 120},
]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    with torch.no_grad():  # move alpha and the scale off their initial values: a fresh model must differ
        r.alpha_logit.fill_(0.3)
        r.logit_scale.fill_(2.5)
    return r


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    return tiny.save_pretrained(tmp_path_factory.mktemp("hub") / "tiny-model")


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 64, 64, generator=g), ["blue-whitish veil", "", "irregular streaks"]


def _encode(model):
    images, texts = _inputs()
    q, t = model.encode_queries(images, texts), model.encode_targets(images)
    return q.global_vectors, q.local_vectors, t.global_vectors, t.local_vectors


def _files(folder):
    return {p.name for p in folder.iterdir()}


def _reload(folder, **kwargs):
    torch.manual_seed(1234)  # a fresh model's own random weights differ from the saved ones
    return Retriever.from_pretrained(folder, device="cpu", **kwargs)


# ----------------------------------------------------------------------------- round trips


def test_round_trip_float32_gives_identical_encodings(tiny, saved):
    assert _files(saved) == FILES | {OWNER_FILE}
    from dermretr._io import umask

    for name in FILES:  # every file follows the umask (safetensors alone would write 0600)
        assert (saved / name).stat().st_mode & 0o777 == 0o666 & ~umask(), name
    assert json.loads((saved / OWNER_FILE).read_text())["kind"] == "model"
    config = json.loads((saved / "config.json").read_text())
    assert config["config"] == tiny.config() and config["format"] == 4 and config["library_name"] == "dermretr"
    assert config["dermretr_version"] and config["dtype"] == "float32"
    assert config["sha256"]["model.safetensors"] == hashlib.sha256((saved / "model.safetensors").read_bytes()
                                                                   ).hexdigest()
    again = _reload(saved)
    assert type(again) is Retriever and again.config() == tiny.config() and again.alpha == tiny.alpha
    for a, b in zip(_encode(tiny), _encode(again)):
        assert np.array_equal(a, b)


def test_round_trip_float16_is_close_and_half_the_size(tiny, saved, tmp_path):
    half = tiny.save_pretrained(tmp_path / "half", dtype="float16")
    ratio = (half / "model.safetensors").stat().st_size / (saved / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
    again = _reload(half)
    assert next(again.parameters()).dtype == torch.float32  # loaded back into the float32 model
    for a, b in zip(_encode(tiny), _encode(again)):
        assert np.allclose(a, b, atol=5e-3) and not np.array_equal(a, b)


def test_a_closed_vocabulary_keeps_its_words_exactly_and_shrinks_the_file(tiny, saved, tmp_path):
    texts = ["blue-whitish veil", "irregular streaks", "atypical pigment network"]
    small = tiny.save_pretrained(tmp_path / "small", vocabulary=texts)
    config = json.loads((small / "config.json").read_text())
    rows = config["token_rows"]
    assert rows["key"] == "encoder.token_embedding.weight" and rows["vocab_size"] == 49408 and 5 < rows["kept"] < 20
    # the 49,408 x 128 table is two thirds of the tiny model: the file shrinks about three times
    ratio = (small / "model.safetensors").stat().st_size / (saved / "model.safetensors").stat().st_size
    assert 0.25 < ratio < 0.4
    assert f"{rows['kept']:,} of 49,408 tokens kept" in (small / "README.md").read_text()
    again = _reload(small)
    images, _ = _inputs()
    for text in (*texts, "irregular streaks blue-whitish veil", ""):  # the kept words encode exactly as before
        a, b = tiny.encode_queries(images, [text] * 3), again.encode_queries(images, [text] * 3)
        assert np.array_equal(a.global_vectors, b.global_vectors) and np.array_equal(a.local_vectors, b.local_vectors)
    assert np.array_equal(_encode(tiny)[2], _encode(again)[2])  # the image side is untouched
    # any other word reads as the one shared unknown-word row: two unknown words give the same query
    unknown = [again.encode_queries(images[:1], [w]).global_vectors for w in ("zebra", "spaceship")]
    assert np.array_equal(unknown[0], unknown[1])
    assert not np.array_equal(tiny.encode_queries(images[:1], ["zebra"]).global_vectors,
                              tiny.encode_queries(images[:1], ["spaceship"]).global_vectors)


def test_a_closed_vocabulary_checks_its_input_and_its_stored_rows(tiny, tmp_path):
    for bad, match in (("blue veil", "vocabulary must be a list of texts, got 'blue veil'"),
                       ([1], r"vocabulary\[0\] must be a string, got 1"),
                       ([" "], "vocabulary holds no word")):
        with pytest.raises(DermretrError, match=match):
            tiny.save_pretrained(tmp_path / "bad", vocabulary=bad)
    assert not (tmp_path / "bad").exists()
    small = tiny.save_pretrained(tmp_path / "small", vocabulary=["veil"])
    config = json.loads((small / "config.json").read_text())
    config["token_rows"]["key"] = "encoder.other.weight"  # config and weights disagree
    (small / "config.json").write_text(json.dumps(config))
    with pytest.raises(DermretrError, match="token-embedding rows are incomplete"):
        _reload(small)


def test_bad_dtype_and_model_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(DermretrError, match="unknown dtype 'bfloat8'; choose one of: float32, float16"):
        tiny.save_pretrained(tmp_path / "m", dtype="bfloat8")
    with pytest.raises(DermretrError, match="must be a dermretr Retriever"):
        hub.save_pretrained("not a model", tmp_path / "m")
    with pytest.raises(DermretrError, match="overwrite must be True or False"):
        tiny.save_pretrained(tmp_path / "m", overwrite="yes")
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- damaged folders


def test_tampered_weights_are_refused_with_what_to_do(saved, tmp_path):
    copy = shutil.copytree(saved, tmp_path / "copy")
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(DermretrError) as err:
        Retriever.from_pretrained(copy, device="cpu")
    message = str(err.value)
    assert "\n" not in message and str(copy / "model.safetensors") in message
    assert "does not match the sha256 recorded in config.json" in message and "download the model folder again" \
        in message


def test_damaged_or_foreign_folders_are_refused(saved, tmp_path):
    copy = shutil.copytree(saved, tmp_path / "copy")
    (copy / "model.safetensors").unlink()
    with pytest.raises(DermretrError, match="has no model.safetensors; copy or download the whole model folder"):
        Retriever.from_pretrained(copy)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(DermretrError, match="is not a dermretr model config"):
        Retriever.from_pretrained(other)
    (other / "config.json").unlink()
    (other / "open_clip_config.json").write_text("{}")
    with pytest.raises(DermretrError, match=r"has no config.json \(an open_clip backbone folder"):
        Retriever.from_pretrained(other)
    newer = shutil.copytree(saved, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps(dict(config, format=99)))
    with pytest.raises(DermretrError, match="written by a newer dermretr"):
        Retriever.from_pretrained(newer)
    (newer / "config.json").write_text(json.dumps(dict(config, config=dict(config["config"], kind="image"))))
    with pytest.raises(DermretrError, match="its weights do not fit its config"):
        Retriever.from_pretrained(newer, device="cpu")


def test_names_that_are_no_model(tmp_path, saved):
    with pytest.raises(DermretrError, match="model folder not found: .*'hf-hub:my-lab/nothing'"):
        Retriever.from_pretrained("my-lab/nothing")
    with pytest.raises(DermretrError, match="is a file, not a model folder: give a folder written by save_pretrained"):
        Retriever.from_pretrained(saved / "config.json")
    with pytest.raises(DermretrError, match="name_or_path must be"):
        Retriever.from_pretrained(3)
    with pytest.raises(DermretrError, match="only applies to 'hf-hub:ORG/NAME'"):
        Retriever.from_pretrained(saved, revision="v1")
    with pytest.raises(DermretrError, match="is not a Hugging Face model name; write hf-hub:ORG/NAME"):
        Retriever.from_pretrained("hf-hub:no slash")


# ----------------------------------------------------------------------------- the model card


def _front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_says_not_for_diagnosis_and_renders_the_metrics(tiny, tmp_path):
    card = {"license": "cc-by-nc-4.0", "metrics": METRICS, "ci_level": 0.95, "repo_id": "my-lab/tiny",
            "training_data": [{"name": "Derm7pt", "license": "research use only", "cases": 1011}],
            "skin_tone": {"I-II": 800, "III-IV": 200, "V-VI": 11}, "tags": ["derm7pt"]}
    folder = tiny.save_pretrained(tmp_path / "m", card=card)
    text = (folder / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "dermretr" and meta["license"] == "cc-by-nc-4.0"
    assert "dermretr" in meta["tags"] and "derm7pt" in meta["tags"] and "pipeline_tag" not in meta
    assert "**Not for diagnosis.**" in text and "Education and research" in text
    assert "| run | method | protocol | average | metric | value | 95% CI | queries |" in text
    assert "| runs/full | full | case | micro | recall@10 | 0.512 | [0.440, 0.580] | 120 |" in text
    assert "| floor:random | random | case | micro | recall@10 | 0.211 | not measured | 120 |" in text
    assert "**Derm7pt** (licence: research use only; 1011 cases)" in text
    assert "Skin-tone coverage: training cases per range: I-II: 800, III-IV: 200, V-VI: 11" in text
    assert 'Retriever.from_pretrained("hf-hub:my-lab/tiny")' in text
    assert "not measured." not in text.split("## Evaluation")[1].split("## Limitations")[0].split("|")[0]


def test_card_without_metrics_says_not_measured_and_invents_nothing(tiny):
    text = hub.model_card(tiny)
    assert _front_matter(text)["license"] == "unknown"
    evaluation = text.split("## Evaluation")[1].split("## Limitations")[0]
    assert "Retrieval metrics: not measured." in evaluation and "Floors" in evaluation
    assert "|" not in evaluation and not any(ch.isdigit() for ch in evaluation)
    assert "Skin-tone coverage: not measured." in text and "Training data\n\nNot stated" in text


def test_card_reads_a_metrics_json_and_says_when_floors_are_missing(tiny, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(METRICS[:1]))
    text = hub.model_card(tiny, {"metrics": str(path)})
    assert "| runs/full | full | case | micro | recall@10 | 0.512 | [0.440, 0.580] | 120 |" in text
    assert "| CI |" in text and "Floors (non-learned rankings of the same queries, dermretr.floors): not measured" \
        in text


@pytest.mark.parametrize("card,match", [
    ({"licence": "mit"}, "unknown model card key"),
    ({"metrics": [{"metric": "recall", "value": "high"}]}, r"card\['metrics'\]\[0\]\['value'\] must be a number"),
    ({"metrics": [{"value": 0.5}]}, "has no metric name"),
    ({"metrics": "/no/such/metrics.json"}, "cannot read card"),
    ({"skin_tone": ["light"]}, "card\\['skin_tone'\\] must be"),
    ("MIT", "card must be a dict"),
])
def test_bad_cards_are_one_line_errors_and_nothing_is_written(tiny, tmp_path, card, match):
    with pytest.raises(DermretrError, match=match) as err:
        tiny.save_pretrained(tmp_path / "m", card=card)
    assert "\n" not in str(err.value) and not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- output folders


def test_a_folder_of_the_users_is_refused_and_left_untouched(tiny, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a model folder dermretr wrote .*thesis.docx.*nothing was changed"):
            tiny.save_pretrained(mine, overwrite=overwrite)
    assert _files(mine) == {"thesis.docx"} and (mine / "thesis.docx").read_text() == "years of work"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / OWNER_FILE).write_text('{"kind": "run"}')
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(OutputError, match="is a dermretr run folder, not a model folder"):
        tiny.save_pretrained(tmp_path / "run", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        tiny.save_pretrained(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "run"]  # no temporaries left


def test_own_folder_needs_overwrite_and_keeps_foreign_files(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    assert tiny.save_pretrained(tmp_path / "empty") == (tmp_path / "empty").absolute()  # an empty folder is fine
    with pytest.raises(OutputError, match="already holds a dermretr model; pass overwrite=True"):
        tiny.save_pretrained(folder)
    before = (folder / "config.json").read_text()
    tiny.save_pretrained(folder, overwrite=True, card={"model_name": "second"})
    assert (folder / "config.json").read_text() == before and "# second" in (folder / "README.md").read_text()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="also holds files it did not write \\(notes.txt\\)"):
        tiny.save_pretrained(folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine" and _files(folder) == FILES | {OWNER_FILE, "notes.txt"}


def test_a_failed_write_leaves_the_previous_folder(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    folder = tiny.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OutputError, match="No space left on device; free some disk space"):
        tiny.save_pretrained(folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ----------------------------------------------------------------------------- the Hugging Face Hub


def _hub_env(monkeypatch, home, offline="1"):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_offline_hf_hub_without_a_cached_copy_says_how_to_use_a_folder(tmp_path, monkeypatch):
    _hub_env(monkeypatch, tmp_path / "hf-home")
    with pytest.raises(DermretrError) as err:
        Retriever.from_pretrained("hf-hub:my-lab/dermretr-tiny", device="cpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot fetch hf-hub:my-lab/dermretr-tiny: offline mode is on")
    assert "hf download my-lab/dermretr-tiny --local-dir FOLDER" in message
    assert "Retriever.from_pretrained('FOLDER')" in message


def test_hf_hub_reads_a_cached_copy_offline(tiny, saved, tmp_path, monkeypatch):
    _hub_env(monkeypatch, tmp_path / "hf-home")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-home" / "hub" / "models--my-lab--dermretr-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in FILES:
        shutil.copy(saved / name, snapshot / name)
    again = Retriever.from_pretrained("hf-hub:my-lab/dermretr-tiny", device="cpu")
    for a, b in zip(_encode(tiny), _encode(again)):
        assert np.array_equal(a, b)


def test_hf_hub_downloads_with_snapshot_download(tiny, saved, monkeypatch):
    import huggingface_hub

    calls = []

    def fake(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(saved)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    again = _reload("hf-hub:my-lab/dermretr-tiny", revision="v1")
    assert calls[0][0] == "my-lab/dermretr-tiny" and calls[0][1]["revision"] == "v1"
    assert calls[0][1]["local_files_only"] is False and set(calls[0][1]["allow_patterns"]) == FILES
    assert np.array_equal(_encode(tiny)[0], _encode(again)[0])


def test_hf_hub_missing_repository(monkeypatch):
    import huggingface_hub

    class RepositoryNotFoundError(Exception):
        pass

    def missing(repo_id, **kwargs):
        raise RepositoryNotFoundError("404 Client Error")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(DermretrError, match="no such model on the Hugging Face Hub, or it is private or gated"):
        Retriever.from_pretrained("hf-hub:my-lab/missing")


# ----------------------------------------------------------------------------- shipped models


def test_the_released_model_ships_and_an_unknown_name_says_what_does():
    assert hub.shipped_models() == ["dermsynth-tiny"] and hub.RELEASED == "dermretr/dermsynth-tiny"
    with pytest.raises(DermretrError) as err:
        Retriever.from_pretrained("dermretr/derm7pt-base")
    assert "no model 'dermretr/derm7pt-base' ships with dermretr (shipped: dermretr/dermsynth-tiny)" in str(err.value)


def test_nothing_ships_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "PRETRAINED_DIR", tmp_path / "none")
    assert hub.shipped_models() == []
    with pytest.raises(DermretrError, match=r"\(shipped: none shipped yet\)"):
        Retriever.from_pretrained("dermretr/dermsynth-tiny")


def test_the_card_metrics_are_in_config_json_too(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "m", card={"metrics": METRICS})
    assert hub.pretrained_metrics(folder) == METRICS
    assert hub.pretrained_metrics(tiny.save_pretrained(tmp_path / "bare")) == []
    config = json.loads((folder / "config.json").read_text())
    config["metrics"] = {"not": "a list"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DermretrError, match="are not a list of records"):
        hub.pretrained_metrics(folder)


def test_shipped_names_map_to_package_folders(tiny, saved, tmp_path, monkeypatch):
    shipped = tmp_path / "pretrained"
    shutil.copytree(saved, shipped / "tiny-demo")
    (shipped / "not-a-model").mkdir()
    monkeypatch.setattr(hub, "PRETRAINED_DIR", shipped)
    assert hub.shipped_models() == ["tiny-demo"]
    again = _reload("dermretr/tiny-demo")
    assert np.array_equal(_encode(tiny)[2], _encode(again)[2])
    with pytest.raises(DermretrError, match=r"no model 'dermretr/other' ships with dermretr \(shipped: "
                                            r"dermretr/tiny-demo\)"):
        Retriever.from_pretrained("dermretr/other")


# ----------------------------------------------------------------------------- push_to_hub


def test_push_to_hub_uploads_the_saved_folder(tiny, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    remote = tmp_path / "remote"
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = (repo_id, folder_path, kwargs)
        shutil.copytree(folder_path, remote, ignore=shutil.ignore_patterns(*kwargs.get("ignore_patterns") or []))
        return "https://huggingface.co/my-lab/tiny/commit/0"

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tiny.push_to_hub("my-lab/tiny", private=True, card={"metrics": METRICS}, commit_message="first")
    assert out == "https://huggingface.co/my-lab/tiny/commit/0"
    assert calls["create"] == ("my-lab/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    repo_id, folder, kwargs = calls["upload"]
    assert repo_id == "my-lab/tiny" and kwargs["commit_message"] == "first" and kwargs["repo_type"] == "model"
    assert _files(remote) == FILES  # the ownership marker stays home
    text = (remote / "README.md").read_text()
    assert 'from_pretrained("hf-hub:my-lab/tiny")' in text and "| recall@10 | 0.512 |" in text
    assert np.array_equal(_encode(tiny)[0], _encode(_reload(remote))[0])
    assert not Path(folder).exists()  # the temporary folder is gone


def test_push_to_hub_offline_and_bad_arguments(tiny, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    def never(*args, **kwargs):
        raise AssertionError("no upload when offline")

    _hub_env(monkeypatch, tmp_path / "hf-home")
    monkeypatch.setattr(HfApi, "upload_folder", never)
    monkeypatch.setattr(HfApi, "create_repo", never)
    with pytest.raises(DermretrError, match="cannot upload to hf-hub:my-lab/tiny: offline mode is on .*save_pretr"):
        tiny.push_to_hub("hf-hub:my-lab/tiny")
    with pytest.raises(DermretrError, match="repo_id must be 'ORG/NAME'"):
        tiny.push_to_hub("tiny")
    with pytest.raises(DermretrError, match="unknown model card key"):
        tiny.push_to_hub("my-lab/tiny", card={"oops": 1})


def test_push_to_hub_without_login_is_one_line(tiny, monkeypatch):
    from huggingface_hub import HfApi

    class Response:
        status_code = 401

    class HfHubHTTPError(Exception):
        response = Response()

    def no_login(self, repo_id, **kwargs):
        raise HfHubHTTPError("401 Unauthorized\nlong details")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "create_repo", no_login)
    with pytest.raises(DermretrError, match="cannot upload to hf-hub:my-lab/tiny: .*log in with `hf auth login`"):
        tiny.push_to_hub("my-lab/tiny")
