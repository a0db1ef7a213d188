"""Evaluating run folders (evaluate_run) and the `dermretr evaluate` command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
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


# ----------------------------------------------------------------------------- the findings fusion (RUN+findings)


def test_evaluate_run_findings_weight_is_the_hybrid_of_the_same_scores(synth_cases, runs):
    from dermretr.evaluate import (
        FINDINGS_WEIGHTS,
        case_scores,
        choose_findings_weight,
        hybrid_scores,
        scores_search,
    )
    from dermretr.models.retriever import Retriever

    plain, _ = evaluate_run(runs[0], synth_cases, "case", n_boot=0)
    pq, recs = evaluate_run(runs[0], synth_cases, "case", n_boot=0, findings_weight=2.0, name="composed+findings")
    assert set(pq["method"]) == {"full+findings"} and {r["run"] for r in recs} == {"composed+findings"}
    assert pq.attrs["findings_weight"] == 2.0 and len(pq) == len(plain)
    # by hand: the model's scores plus twice the findings agreement, ties pessimistic as evaluate_run's
    model = Retriever.load(runs[0] / "checkpoints" / "best.pt", device="cpu")
    q, g, s, exclude = case_scores(model, synth_cases, "test", ("train", "val"))
    by_hand = scores_search(q, g, hybrid_scores(q, g, s, 2.0), exclude, ks=(1, 5, 10), ties="pessimistic")
    pd.testing.assert_frame_equal(pq.drop(columns=["run", "method", "protocol"]), by_hand, check_like=True)
    assert not by_hand["map@10"].equals(plain["map@10"])  # the findings moved the ranking of this untrained model
    # "val": the weight choose_findings_weight picks on the val cases, then the same hybrid
    chosen, _ = evaluate_run(runs[0], synth_cases, "case", n_boot=0, findings_weight="val")
    expected, values = choose_findings_weight(model, synth_cases)
    assert chosen.attrs["findings_weight"] == expected and expected in FINDINGS_WEIGHTS and len(values) == 7


def test_evaluate_run_findings_weight_on_the_tone_protocol(synth_cases, runs, monkeypatch):
    from dermretr.evaluate import (
        choose_findings_weight,
        hybrid_scores,
        summarize_metrics,
        tone_queries,
        tone_scores,
        tone_scores_search,
    )
    from dermretr.models.retriever import Retriever

    plain, _ = evaluate_run(runs[0], synth_cases, "tone", n_boot=0)
    pq, recs = evaluate_run(runs[0], synth_cases, "tone", n_boot=0, findings_weight=2.0)
    assert set(pq["method"]) == {"full+findings"} and set(pq["protocol"]) == {"tone"}
    macro = {(r["metric"], r["k"]): r["value"] for r in recs if r["average"] == "macro"}
    assert macro[("map", 10)] == pytest.approx(summarize_metrics(pq, "macro", by="target_range")["map@10"])
    model = Retriever.load(runs[0] / "checkpoints" / "best.pt", device="cpu")
    tq = tone_queries(synth_cases)
    by_hand = tone_scores_search(tq, hybrid_scores(tq.rows, tq.gallery, tone_scores(model, tq), 2.0),
                                 ks=(1, 5, 10), ties="pessimistic")
    pd.testing.assert_frame_equal(pq.drop(columns=["run", "method", "protocol"]), by_hand, check_like=True)
    assert pq[["case_id", "target_range"]].equals(plain[["case_id", "target_range"]])  # the same queries
    assert not pq["map@10"].equals(plain["map@10"])  # the findings moved the ranking of this untrained model
    import dermretr.evaluate._runs as runs_module

    asked = []

    def spy(retriever, cases, query_split, gallery_splits, **kwargs):
        asked.append((query_split, tuple(gallery_splits), kwargs["protocol"], kwargs["tone_scale"]))
        return choose_findings_weight(retriever, cases, query_split, gallery_splits, **kwargs)

    monkeypatch.setattr(runs_module, "choose_findings_weight", spy)
    chosen, _ = evaluate_run(runs[0], synth_cases, "tone", n_boot=0, findings_weight="val")
    expected, _ = choose_findings_weight(model, synth_cases, protocol="tone")
    assert chosen.attrs["findings_weight"] == expected
    assert asked == [("val", ("train",), "tone", "fitzpatrick")]  # chosen on the val cases' tone queries only
    # no val tone queries: refused before the model is loaded, with what to do
    untoned = synth_cases.assign(fitzpatrick=synth_cases["fitzpatrick"].where(synth_cases["split"] != "val"))
    with pytest.raises(DermretrError, match="chosen on the val cases' tone queries and this data has none .*; "
                                            "give a number"):
        evaluate_run("no/such/run", untoned, "tone", findings_weight="val", retriever=object())


def test_findings_weight_refuses_what_it_cannot_do(synth_cases, runs):
    no_findings = synth_cases.drop(columns=list(CRITERIA))
    cases = {"modify": synth_cases, "no findings": no_findings}
    for why, kwargs, message in (
            ("modify", {"protocol": "modify", "findings_weight": 1.0}, "for the case and tone protocols, not 'modify'"),
            ("no findings", {"findings_weight": 1.0}, "needs cases with annotated 7-point findings"),
            ("modify", {"findings_weight": "val", "split": "val"}, "so the queries cannot be 'val'"),
            ("modify", {"findings_weight": "best"}, "a number >= 0 or 'val', got 'best'"),
            ("modify", {"findings_weight": -2.0}, "a finite number >= 0, got -2.0")):
        with pytest.raises(DermretrError, match=message):
            evaluate_run(runs[0], cases[why], **kwargs)
    no_val = synth_cases.assign(split=synth_cases["split"].astype(str).replace("val", "train"))
    with pytest.raises(DermretrError, match="chosen on the val cases and this data has none; give a number"):
        evaluate_run(runs[0], no_val, findings_weight="val")


def test_cli_evaluate_findings_weight(synth_root, runs, tmp_path, capsys):
    out = tmp_path / "m.json"
    base = ["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{synth_root}", "--out", str(out),
            "--n-boot", "0", "--device", "cpu", "--no-progress", "--floors", "none"]
    assert main([*base, "--findings-weight", "val"]) == 0
    text = capsys.readouterr().out
    assert "composed+findings (full+findings)" in text
    assert "RUN+findings = the run's scores plus W x the findings agreement of criteria_match (W chosen on the " \
           "val cases by macro mAP@10: composed " in text
    assert {(r["run"], r["method"]) for r in json.loads(out.read_text())} == {
        ("composed", "full"), ("composed+findings", "full+findings")}
    out.unlink()
    assert main([*base, "--findings-weight", "0.5", "--protocol", "tone"]) == 0  # the tone protocol's queries
    text = capsys.readouterr().out
    assert "Protocol tone" in text and "(W given: composed 0.5)" in text
    assert {(r["run"], r["protocol"]) for r in json.loads(out.read_text())} == {
        ("composed", "tone"), ("composed+findings", "tone")}
    with pytest.raises(SystemExit) as exc:
        main([*base, "--findings-weight", "lots"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid findings weight 'lots': give a number >= 0 such as 1, or val" in err and err.count("\n") == 1
    out.unlink()
    assert main([*base, "--findings-weight", "1", "--protocol", "modify"]) == 2  # refused before any encoding
    assert "a findings weight is for the case and tone protocols, not 'modify'" in _one_line_error(capsys)
    assert not out.exists()


def test_findings_weight_val_encodes_each_image_once(synth_cases):
    class Counting:
        kind = "full"

        def __init__(self):
            self.seen = []

        def encode_targets(self, paths, **_):
            self.seen += list(paths)
            return self.encode_queries(paths, paths)

        def encode_queries(self, paths, texts, **_):
            return {"global": np.array([[float(len(p)), 1.0] for p in paths]), "local": None}

    model = Counting()
    evaluate_run("stand-in", synth_cases, "case", n_boot=0, findings_weight="val", retriever=model)
    gallery = synth_cases[synth_cases["split"].astype(str).isin(["train", "val"])]["image_path"]
    # the val search (gallery: train) and the test search (gallery: train + val) share the training images
    assert sorted(model.seen) == sorted(gallery.tolist())
