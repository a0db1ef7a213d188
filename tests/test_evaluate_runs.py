"""Evaluating run folders (evaluate_run) and the `dermretr evaluate` command line."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from fixtures import write_dataset

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.data.vocab import CRITERIA
from dermretr.evaluate import RECORD_KEYS, derive_triplets, evaluate_run, paired_difference
from dermretr.floors import MODIFY_FLOORS, available_floors

# ----------------------------------------------------------------------------- helpers


def _fake_run(path, kind):
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind=kind, n_masks=2)
    model.save(path / "checkpoints" / "best.pt")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two untrained run folders (composed and image-only) with a best.pt each."""
    import torch

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("runs")
    return [_fake_run(base / "composed", "full"), _fake_run(base / "image-only", "image")]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and err.count("\n") == 1, err
    return err


def test_protocols_refuse_unusable_data(synth_cases, runs):
    no_criteria = synth_cases.copy()
    for c in CRITERIA:
        no_criteria[c] = pd.Categorical([pd.NA] * len(no_criteria), categories=list(CRITERIA[c]))
    with pytest.raises(DermretrError, match="needs modification triplets .* or cases with known 7-point criteria"):
        derive_triplets(no_criteria)
    with pytest.raises(DermretrError, match="needs modification triplets"):
        evaluate_run(runs[0], no_criteria, "modify")
    no_test = synth_cases.copy()
    no_test["split"] = no_test["split"].astype(str).replace("test", "val")
    for protocol in ("case", "modify"):
        with pytest.raises(DermretrError, match=r"no cases in split 'test' .*train \d+, val \d+"):
            evaluate_run(runs[0], no_test, protocol)
    with pytest.raises(DermretrError, match="unknown protocol 'retrieval'; protocols: case, modify"):
        evaluate_run(runs[0], synth_cases, "retrieval")
    with pytest.raises(DermretrError, match="relevant must be"):
        evaluate_run(runs[0], synth_cases, relevant="malignant")
    with pytest.raises(DermretrError, match="has no checkpoint"):
        evaluate_run(runs[0].parent, synth_cases)
    bad = derive_triplets(synth_cases, split="test", seed=1).head(2).assign(criterion="veil")
    with pytest.raises(DermretrError, match=r"criteria \['veil'\] that are not 7-point criteria"):
        evaluate_run(runs[0], synth_cases, "modify", triplets=bad)


# ----------------------------------------------------------------------------- run folders and the CLI


def test_evaluate_run_returns_per_query_and_records(synth_root, synth_cases, runs):
    pq, recs = evaluate_run(runs[0], f"synthetic:{synth_root}", "case", n_boot=100)
    n_test = int((synth_cases["split"].astype(str) == "test").sum())
    assert len(pq) == n_test and set(pq["run"]) == {"composed"} and set(pq["method"]) == {"full"}
    assert {"case_id", "diagnosis_group", "fitzpatrick", "monk", "ita"} <= set(pq.columns)
    assert {r["metric"] for r in recs} == {"recall", "precision", "map", "ndcg", "mrr"}
    assert all(r["protocol"] == "case" and r["n_queries"] == n_test for r in recs)
    assert [r["average"] for r in recs] == ["micro"] * 13 + ["macro"] * 13
    _, again = evaluate_run(runs[0], synth_cases, "case", n_boot=100)
    assert again == recs


def test_cli_evaluate_two_runs_writes_metrics_and_prints_a_table(synth_root, synth_cases, runs, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    per_query = tmp_path / "pq.csv"
    rc = main(["evaluate", "--run", str(runs[0]), str(runs[1]), "--data", f"synthetic:{synth_root}",
               "--protocol", "case", "--out", str(out), "--n-boot", "200", "--per-query", str(per_query),
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "composed" in text and "image-only" in text and "recall@1" in text and "mrr" in text
    assert "[" in text and "Protocol case" in text and "\nmrr " in text
    # the floors (no model) are rows of the same table, and every metric has its macro average
    floors = available_floors(synth_cases)
    assert "random (floor)" in text and "majority (floor)" in text and "\nrecall@1 (macro) " in text
    recs = json.loads(out.read_text())
    assert all(list(r) == list(RECORD_KEYS) for r in recs)
    assert {r["metric"] for r in recs} == {"recall", "precision", "map", "ndcg", "mrr"}
    assert {(r["run"], r["method"]) for r in recs} == {("composed", "full"), ("image-only", "image")} | {
        (f"floor:{f}", f) for f in floors}
    assert {r["k"] for r in recs} == {1, 5, 10, None} and {r["average"] for r in recs} == {"micro", "macro"}
    assert len(recs) == (2 + len(floors)) * 13 * 2
    for r in recs:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
    n_test = int((synth_cases["split"].astype(str) == "test").sum())
    table = pd.read_csv(per_query)
    assert len(table) == (2 + len(floors)) * n_test
    assert {"run", "fitzpatrick", "ita", "recall@1"} <= set(table.columns)
    # a floor's per-query rows pair with a run's (same queries, same relevant cases)
    run, floor = (table[table["run"] == name].drop(columns="run") for name in ("composed", "floor:random"))
    assert paired_difference(run, floor, n_boot=0, average="macro")["n_queries"].min() > 0

    rc = main(["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{synth_root}", "--protocol", "modify",
               "--out", str(out), "--n-boot", "50", "--k", "1", "5", "--device", "cpu", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "exact target" in text and "with the reference's findings after the requested change" in text
    assert "criteria_match (floor)" in text
    recs = json.loads(out.read_text())
    assert {r["protocol"] for r in recs} == {"modify"} and {r["k"] for r in recs} == {1, 5, None}
    assert {r["run"] for r in recs} == {runs[0].name} | {f"floor:{f}" for f in MODIFY_FLOORS}


def test_cli_evaluate_bad_input(synth_root, runs, tmp_path, capsys):
    data = f"synthetic:{synth_root}"
    base = ["--data", data, "--out", str(tmp_path / "m.json"), "--no-progress", "--device", "cpu"]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["evaluate", "--run", str(runs[0]), str(empty), *base]) == 2
    assert "has no checkpoint" in _one_line_error(capsys)
    assert main(["evaluate", "--run", str(tmp_path / "missing"), *base]) == 2
    assert "run folder" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(runs[0]), *base, "--protocol", "retrieval"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dermretr evaluate: error: argument --protocol: invalid choice: 'retrieval'")
    assert err.count("\n") == 1
    assert main(["evaluate", "--run", str(runs[0]), "--data", data, "--out", str(tmp_path), "--no-progress"]) == 2
    assert "is a folder" in _one_line_error(capsys)
    assert not (tmp_path / "m.json").exists()

    # a dataset without a test split
    no_test = tmp_path / "no_test"
    shutil.copytree(synth_root, no_test)
    meta = no_test / "meta"
    moved = pd.concat([pd.read_csv(meta / "valid_indexes.csv"), pd.read_csv(meta / "test_indexes.csv")])
    moved.to_csv(meta / "valid_indexes.csv", index=False)
    pd.DataFrame({"indexes": []}).to_csv(meta / "test_indexes.csv", index=False)
    assert main(["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{no_test}",
                 "--out", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "no cases in split 'test'" in _one_line_error(capsys)

    # modify protocol on data with neither criteria nor triplets (a DDI folder)
    ddi = tmp_path / "ddi"
    rows = [{"DDI_ID": str(i + 1), "DDI_file": f"{i + 1:06d}.png", "skin_tone": ["12", "34", "56"][i % 3],
             "malignant": str(i % 2 == 0), "disease": ["melanoma", "verruca-vulgaris"][i % 2]} for i in range(20)]
    write_dataset(ddi / "ddi_metadata.csv", rows, image=lambda i, row: ddi / row["DDI_file"])
    assert main(["evaluate", "--run", str(runs[0]), "--data", f"ddi:{ddi}", "--protocol", "modify",
                 "--out", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "needs modification triplets" in _one_line_error(capsys)
    assert not (tmp_path / "m.json").exists()


def test_cli_evaluate_floors_option(synth_root, runs, tmp_path, capsys):
    out = tmp_path / "m.json"
    base = ["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{synth_root}", "--out", str(out),
            "--n-boot", "0", "--device", "cpu", "--no-progress"]
    assert main([*base, "--floors", "none"]) == 0
    assert "(floor)" not in capsys.readouterr().out
    assert {r["run"] for r in json.loads(out.read_text())} == {"composed"}
    assert main([*base, "--floors", "majority"]) == 0
    text = capsys.readouterr().out
    assert "majority (floor)" in text and "random (floor)" not in text
    assert {r["run"] for r in json.loads(out.read_text())} == {"composed", "floor:majority"}
    with pytest.raises(SystemExit):
        main([*base, "--floors", "oracle"])
    assert "invalid choice" in capsys.readouterr().err
