"""One run end to end: run_fairness, FairnessReport and the `dermretr fairness` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairness_helpers import one_line_error

from dermretr._errors import DataWarning, DermretrError
from dermretr.cli import main
from dermretr.fairness import GROUPINGS, skin_tone_groups, slice_metrics


def test_fairness_refuses_the_tone_protocol_which_is_already_by_skin_tone(tmp_path):
    from dermretr.fairness import run_fairness

    with pytest.raises(DermretrError, match="the tone protocol is already by skin tone: use `dermretr evaluate"):
        run_fairness(tmp_path, "synthetic:nowhere", protocol="tone")
    with pytest.raises(DermretrError, match="unknown skin-tone labels .'light-ish'"):
        skin_tone_groups(pd.DataFrame({"ita_category": ["light", "light-ish"]}), "ita_category")


def _fake_run(path, kind, seed):
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    torch.manual_seed(seed)
    Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind=kind, n_masks=2).save(
        path / "checkpoints" / "best.pt")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fair-runs")
    return _fake_run(base / "after", "full", 0), _fake_run(base / "before", "image", 1)


def test_cli_fairness_end_to_end(synth_root, synth_cases, runs, tmp_path, capsys):
    after, before = runs
    out = tmp_path / "fair"
    rc = main(["fairness", "--run", str(after), "--data", f"synthetic:{synth_root}", "--by", "fitzpatrick",
               "--out", str(out), "--n-boot", "50", "--min-group", "3", "--exposure-k", "5", "--baseline",
               str(before), "--estimate-ita", "--no-progress"])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, printed
    assert "difference (max - min)" in printed and "ratio (min / max)" in printed and "Exposure" in printed
    assert "Estimated vs labelled skin type" in printed and "after vs before" in printed
    assert "Diagnosis mix per group" in printed and "Case-mix-adjusted gap" in printed
    # labelled slices, estimated tone beside them: how sure the gap by the estimated types is, with a warning
    assert "How sure is the gap by Fitzpatrick type (estimated from ITA)?" in printed
    assert "Skin tone estimated from the pixels:" in printed and "confidence below 0.25)" in printed
    warned = [line for line in captured.err.splitlines() if "skin-tone groups are estimated" in line]
    assert len(warned) == 1 and warned[0].startswith("dermretr: warning: ") and "queries" in warned[0]
    for name in ("fairness_fitzpatrick.csv", "fairness_fitzpatrick.png", "per_query.csv", "exposure_fitzpatrick.csv",
                 "exposure_fitzpatrick.png", "ita_confusion.csv", "ita_confusion.png", "skin_tone_estimated.csv",
                 "comparison_fitzpatrick.csv", "comparison_fitzpatrick.png", "case_mix_fitzpatrick.csv",
                 "adjusted_gap_fitzpatrick.csv", "gap_uncertainty_fitzpatrick_estimated.csv",
                 "gap_uncertainty_fitzpatrick_estimated.png"):
        assert (out / name).is_file(), name
    gaps = pd.read_csv(out / "gap_uncertainty_fitzpatrick_estimated.csv")
    assert {"estimated", "propagated", "scenario range"} <= set(gaps["kind"]) and set(gaps["metric"]) == {
        "recall@1", "map@10"}
    assert "ita_confidence" in pd.read_csv(out / "skin_tone_estimated.csv").columns
    table = pd.read_csv(out / "fairness_fitzpatrick.csv")
    n_test = int((synth_cases["split"] == "test").sum())
    overall = table[(table["group"] == "overall") & (table["metric"] == "recall@1")]
    assert 0 < int(overall["n_queries"].iloc[0]) <= n_test
    assert set(table["metric"]) == {"recall@1", "map@10"}
    per_query = pd.read_csv(out / "per_query.csv")
    assert len(per_query) == n_test and set(per_query["run"]) == {"after"}
    # the written per-query table slices again to the same numbers
    with pytest.warns(DataWarning, match="diagnosis_group mix differs"):  # as the command warned (case mix)
        again = slice_metrics(per_query, synth_cases, metrics=["recall@1", "map@10"], n_boot=50, min_group=3)
    assert np.allclose(again["value"].to_numpy(float), table["value"].to_numpy(float), equal_nan=True)
    exp = pd.read_csv(out / "exposure_fitzpatrick.csv").set_index("group")
    assert exp.loc["all queries", "n_retrieved"] == 5 * n_test

    rc = main(["fairness", "--run", str(after), "--data", f"synthetic:{synth_root}", "--by", "ita_category_estimated",
               "--out", str(out), "--n-boot", "0", "--exposure-k", "0", "--no-progress", "--min-confidence", "0.9"])
    captured = capsys.readouterr()
    assert rc == 0 and "ITA category (estimated from pixels)" in captured.out
    head = captured.out.splitlines()
    assert "estimated" not in head[0] and head[2].startswith("ITA category (estimated from pixels); ")  # named once
    assert "confidence below 0.9)" in captured.out and "no draws (--n-boot 0): scenarios only" in captured.out
    assert "with a confidence below 0.9" in captured.err  # estimate_skin_tone's warning: more are unknown now
    warned = [line for line in captured.err.splitlines() if "skin-tone groups are estimated" in line]
    assert len(warned) == 1 and "% of queries unknown" in captured.out
    assert (out / "fairness_ita_category_estimated.csv").is_file()
    assert (out / "gap_uncertainty_ita_category_estimated.csv").is_file()


def test_fairness_checks_its_arguments_before_estimating_skin_tone(synth_root, synth_cases, tmp_path, monkeypatch,
                                                                   capsys):
    from dermretr.fairness import run_fairness

    def no_estimate(*_, **__):
        raise AssertionError("the skin tone was estimated before every argument was checked")

    monkeypatch.setattr("dermretr.fairness._report.estimate_skin_tone", no_estimate)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"not read")  # never loaded: every check comes first
    data, out = f"synthetic:{synth_root}", str(tmp_path / "out")
    # a labelled grouping the data lacks: estimating the tone would not give it
    assert main(["fairness", "--run", str(run), "--data", data, "--by", "monk", "--estimate-ita", "--out", out]) == 2
    assert "no case has a known Monk skin tone" in one_line_error(capsys)
    # the device and the batch size before the data is even loaded (there is none at "nowhere")
    nowhere = f"synthetic:{tmp_path / 'nowhere'}"
    assert main(["fairness", "--run", str(run), "--data", nowhere, "--estimate-ita", "--device", "tpu-9"]) == 2
    assert "unknown device 'tpu-9'" in one_line_error(capsys)
    assert main(["fairness", "--run", str(run), "--data", nowhere, "--estimate-ita", "--batch-size", "0"]) == 2
    assert "batch_size must be a positive integer, got 0" in one_line_error(capsys)
    # ita_category is the *labelled* ITA: without it, the estimate (ita_estimated) cannot stand in
    unlabelled = synth_cases.drop(columns=[c for c in ("ita", "ita_category") if c in synth_cases.columns])
    with pytest.raises(DermretrError, match="cannot group by 'ita_category'.*group by 'ita_category_estimated'"):
        run_fairness(run, unlabelled, by="ita_category", estimate=True, retriever=object())


def test_cli_groupings_are_the_library_ones():
    from dermretr.cli import GROUPINGS as CLI_GROUPINGS

    assert CLI_GROUPINGS == tuple(GROUPINGS)


def test_cli_fairness_bad_input(synth_root, runs, tmp_path, capsys):
    after, _ = runs
    data = f"synthetic:{synth_root}"
    assert main(["fairness", "--run", str(after), "--data", data, "--by", "monk", "--out", str(tmp_path)]) == 2
    assert "no case has a known Monk skin tone" in one_line_error(capsys)
    assert main(["fairness", "--run", str(tmp_path / "nope"), "--data", data]) == 2
    assert "run folder" in one_line_error(capsys)
    assert main(["fairness", "--run", str(after), "--data", data, "--metrics", "recall@0"]) == 2
    assert "unknown metric 'recall@0'" in one_line_error(capsys)
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert main(["fairness", "--run", str(after), "--data", data, "--out", str(file)]) == 2
    assert "is a file" in one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["fairness", "--run", str(after), "--data", data, "--by", "skin"])
    assert exc.value.code == 2 and "invalid choice: 'skin'" in capsys.readouterr().err
