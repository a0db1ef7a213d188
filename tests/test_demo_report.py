"""The demo's report and narration: self-contained, findings in words that follow the numbers, a measured time."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pandas as pd
import pytest
from fixtures import assert_self_contained
from matplotlib.figure import Figure

from dermretr import demo
from dermretr._errors import DermretrError
from dermretr._io import save_figure
from dermretr.cli import build_parser
from dermretr.demo_report import (
    adjusted_gap_sentences,
    figure_uri,
    floors_line,
    full_table,
    gap_direction,
    headline_table,
    mitigation_findings,
    mitigation_sentence,
    overall_finding,
    paired_findings,
    search_command,
    verdict,
    write_report,
)
from dermretr.evaluate import results_table
from dermretr.fairness import adjusted_gap, compare_runs

ROOT = Path(__file__).resolve().parents[1]


def _record(run, protocol, average, metric, k, value, half=0.05):
    method = run.removeprefix("floor:")
    low, high = (None, None) if run == "floor:random" else (value - half, value + half)
    return {"run": run, "method": method, "protocol": protocol, "average": average, "metric": metric, "k": k,
            "value": value, "ci_low": low, "ci_high": high, "n_queries": 40}


def _records():
    out = []
    for run, base in (("full", 0.6), ("global", 0.5), ("floor:random", 0.2), ("floor:criteria_match", 0.55)):
        for protocol in ("case", "modify"):
            if protocol == "modify" and run == "floor:criteria_match":
                base = 0.3
            for average, shift in (("micro", 0.0), ("macro", -0.05)):
                for metric, k in (("recall", 1), ("map", 10), ("recall", 5)):
                    out.append(_record(run, protocol, average, metric, k, base + shift - (0.1 if k == 10 else 0)))
    return out


def _paired(rows):
    """``(run, metric, difference, ci_low, ci_high)`` rows as :func:`dermretr.demo.paired_table` gives them."""
    return pd.DataFrame([{"full minus": r, "metric": f"{m} (macro)", "difference": d, "ci_low": lo, "ci_high": hi,
                          "p_value": 0.5, "verdict": ""} for r, m, d, lo, hi in rows])


def _per_query(levels: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for fitz, values in levels.items():
        for v in values:
            rows.append({"case_id": f"q{len(rows)}", "patient_id": f"p{len(rows)}", "fitzpatrick": fitz,
                         "n_relevant": 1, "recall@1": float(v), "map@10": float(v) / 2})
    out = pd.DataFrame(rows)
    out["fitzpatrick"] = out["fitzpatrick"].astype("Int64")
    return out


def _ones(n_one: int, n: int = 60) -> list[int]:
    return [1] * n_one + [0] * (n - n_one)


# a narrow gap (I-II 0.60, III-IV 0.55, V-VI 0.50) and a wide one (0.90, 0.50, 0.40) on the same queries
NARROW = _per_query({1: _ones(36), 3: _ones(33), 6: _ones(30)})
WIDE = _per_query({1: _ones(54), 3: _ones(30), 6: _ones(24)})


# ----------------------------------------------------------------------------- findings in words


def test_verdicts_follow_the_interval():
    assert verdict(0.01, 0.2) == "better" and verdict(-0.2, -0.01) == "worse"
    assert verdict(-0.01, 0.2) == verdict(0.0, 0.1) == verdict(float("nan"), float("nan")) == \
        "no detectable difference"
    sentences = paired_findings(_paired([("clip4cir", "recall@1", 0.08, 0.02, 0.14),
                                         ("clip4cir", "map@10", 0.05, 0.01, 0.09),
                                         ("floor:criteria_match", "recall@1", -0.06, -0.10, -0.02),
                                         ("floor:criteria_match", "map@10", 0.01, -0.03, 0.05)]))
    assert sentences == [
        "Against CLIP4Cir, the composed model is better on Recall@1 (+0.080, 95% CI [0.020, 0.140]) and on mAP@10 "
        "(+0.050, 95% CI [0.010, 0.090]).",
        "Against the criteria-match floor, the composed model is worse on Recall@1 (-0.060, 95% CI [-0.100, -0.020]) "
        "and shows no detectable difference on mAP@10 (+0.010, 95% CI [-0.030, 0.050])."]


def test_overall_finding_says_plainly_when_the_composed_model_does_not_win():
    wins = _paired([("global", "recall@1", 0.1, 0.05, 0.15), ("floor:random", "map@10", 0.3, 0.2, 0.4)])
    assert overall_finding(wins).startswith("The composed model is better than every baseline and floor")
    for rows in ([("global", "recall@1", 0.1, 0.05, 0.15), ("image", "map@10", 0.02, -0.01, 0.05)],
                 [("floor:criteria_match", "map@10", -0.05, -0.09, -0.01)]):
        text = overall_finding(_paired(rows))
        assert text.startswith("The composed model does not beat every baseline and floor in this run")
        assert "benchmarks/bench_models.py" in text and "benchmarks/bench_real.py" in text
    assert "worse than the criteria-match floor (Recall@1 and mAP@10)" in overall_finding(
        _paired([("floor:criteria_match", "recall@1", -0.05, -0.09, -0.01),
                 ("floor:criteria_match", "map@10", -0.05, -0.09, -0.01)]))
    text = overall_finding(_paired([("image", "map@10", 0.02, -0.01, 0.05), ("text", "recall@1", -0.1, -0.2, -1e-17)]))
    assert "not detectably different from image-only (mAP@10), text-only (Recall@1)" in text  # -1e-17: rounding
    assert overall_finding(pd.DataFrame()) == "" and paired_findings(pd.DataFrame()) == []


@pytest.mark.parametrize("change,low,high,p,expected", [
    (0.226, 0.05, 0.40, 0.031, "widened"), (-0.226, -0.40, -0.05, 0.031, "narrowed"),
    (0.10, -0.02, 0.22, 0.20, "unchanged within noise"), (-0.10, -0.22, 0.02, 0.20, "unchanged within noise"),
    (-0.10, -0.20, -0.01, float("nan"), "narrowed"), (0.10, -0.01, 0.20, float("nan"), "unchanged within noise"),
    (0.10, float("nan"), float("nan"), float("nan"), "not judged")])
def test_gap_direction_follows_the_sign_and_the_uncertainty(change, low, high, p, expected):
    assert gap_direction(change, low, high, p) == expected


def test_mitigation_sentence_matches_the_sign_of_the_change():
    groups = {"I-II": 0.216, "III-IV": -0.115, "V-VI": -0.043}
    widened = mitigation_sentence("recall@1", 0.090, 0.316, 0.226, 0.05, 0.40, 0.031, groups)
    assert widened.startswith("Skin-type-balanced training widened the Recall@1 gap between Fitzpatrick groups from "
                              "0.090 to 0.316 (change +0.226, 95% CI [0.050, 0.400], p = 0.031; per group I-II "
                              "+0.216, III-IV -0.115, V-VI -0.043)")
    assert "must not be presented as a fix" in widened and "narrowed" not in widened
    narrowed = mitigation_sentence("map@10", 0.316, 0.090, -0.226, -0.40, -0.05, 0.031,
                                   worst=("V-VI", 0.10, 0.03, 0.17))
    assert narrowed.startswith("Skin-type-balanced training narrowed the mAP@10 gap") and "widened" not in narrowed
    assert "not yet a fix" in narrowed and "not a gain" not in narrowed
    levelled = mitigation_sentence("map@10", 0.316, 0.090, -0.226, -0.40, -0.05, 0.031,
                                   worst=("V-VI", 0.01, -0.04, 0.06))
    assert "worst served before (V-VI) did not improve detectably" in levelled
    for sign in (1, -1):
        noise = mitigation_sentence("recall@1", 0.2, 0.2 + sign * 0.1, sign * 0.1, -0.05, 0.25, 0.2)
        assert "did not change the Recall@1 gap between Fitzpatrick groups detectably" in noise
        assert "cannot be presented as a fix" in noise and "widened" not in noise and "narrowed" not in noise
    assert "could not be computed" in mitigation_sentence("recall@1", float("nan"), 0.2, float("nan"), 0, 0, 0.5)
    assert "cannot be judged" in mitigation_sentence("recall@1", 0.1, 0.2, 0.1, float("nan"), float("nan"),
                                                     float("nan"))


def test_mitigation_findings_read_a_compare_runs_table_both_ways():
    widened = compare_runs(NARROW, WIDE, by="fitzpatrick_pairs", n_boot=400, min_group=5, seed=0)
    gap = widened[(widened["kind"] == "gap") & (widened["metric"] == "recall@1")].iloc[0]
    assert gap["difference"] > 0 and gap["p_value"] < 0.05  # the numbers the sentence must follow
    sentences = mitigation_findings(widened)
    assert len(sentences) == 2 and all("widened" in s for s in sentences)
    assert "from 0.100 to 0.500" in sentences[0] and "I-II +0.300, III-IV -0.050, V-VI -0.100" in sentences[0]
    narrowed = mitigation_findings(compare_runs(WIDE, NARROW, by="fitzpatrick_pairs", n_boot=400, min_group=5,
                                                seed=0))
    assert all(s.startswith("Skin-type-balanced training narrowed") for s in narrowed)
    same = mitigation_findings(compare_runs(NARROW, NARROW, by="fitzpatrick_pairs", n_boot=200, min_group=5))
    assert all("did not change" in s for s in same)


# ----------------------------------------------------------------------------- tables


def test_headline_table_and_floors_line_are_compact():
    records = _records()
    head = headline_table(records)
    assert list(head.index) == ["full", "global"]  # trained methods only: the floors are a line below
    assert list(head.columns) == [(p, m) for p in ("case", "modify")
                                  for m in ("Recall@1", "Recall@1 (macro)", "mAP@10", "mAP@10 (macro)")]
    assert head.loc["full", ("case", "Recall@1")] == "0.600 [0.55, 0.65]"
    line = floors_line(records)
    assert line.startswith("<p><b>Floors</b> (no model; micro / macro): case search: <i>random</i> Recall@1 "
                           "0.200 / 0.150, mAP@10 0.100 / 0.050")
    # each protocol has its own section: the modify floors' numbers are not mixed into the case ones
    assert ("<i>criteria_match</i> Recall@1 0.550 [0.50, 0.60] / 0.500 [0.45, 0.55], mAP@10 0.450 [0.40, 0.50] / "
            "0.400 [0.35, 0.45]; modify: <i>random</i>") in line  # with their CIs, where they have one
    assert line.endswith("<i>criteria_match</i> Recall@1 0.300 [0.25, 0.35] / 0.250 [0.20, 0.30], mAP@10 0.200 "
                         "[0.15, 0.25] / 0.150 [0.10, 0.20].</p>")
    assert "recall@5" not in line.lower()
    full = full_table(results_table(records))
    assert full.index.names == ["run", "protocol"]  # the method is the run's name: not a second column
    assert "random (floor)" in full.index.get_level_values("run") and "recall@5" in full.columns


def test_search_command_is_a_command_line_the_cli_parses(tmp_path):
    image = tmp_path / "my images" / "case 1.png"
    command = search_command(tmp_path / "index", image, "blue-whitish veil, on V-VI skin")
    argv = shlex.split(command)
    assert argv[:2] == ["dermretr", "search"]
    args = build_parser().parse_args(argv[1:])
    assert (args.index, args.image, args.text) == (str(tmp_path / "index"), str(image),
                                                  "blue-whitish veil, on V-VI skin")


# ----------------------------------------------------------------------------- the page


def test_figure_uri_embeds_a_figure_or_a_png_file(tmp_path):
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    uri = figure_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG")
    path = save_figure(fig, tmp_path / "f.png")
    assert base64.b64decode(figure_uri(path).split(",", 1)[1]) == path.read_bytes()
    (tmp_path / "not.png").write_text("<svg/>")
    with pytest.raises(DermretrError, match="not a PNG"):
        figure_uri(tmp_path / "not.png")


def test_report_is_self_contained_and_says_what_the_numbers_say(tmp_path):
    figures = {}
    for name in ("contact_sheet", "results", "example", "curves", "slices", "mitigation"):
        fig = Figure(figsize=(2, 1))
        fig.subplots().set_title(name)
        figures[name] = save_figure(fig, tmp_path / f"{name}.png")
    records = _records()
    paired = _paired([("global", "recall@1", 0.1, 0.05, 0.15), ("global", "map@10", 0.02, -0.01, 0.05)])
    comparison = compare_runs(NARROW, WIDE, by="fitzpatrick_pairs", n_boot=200, min_group=5)
    summary = {"diagnosis": pd.DataFrame({"total": [3]}, index=["MEL"]),
               "fitzpatrick": pd.DataFrame({"total": [3]}, index=["I"])}
    fairness = {"slices": pd.DataFrame({"recall@1": ["0.6"]}, index=["I-II"]), "comparison": comparison,
                **{key: adjusted_gap(pq.assign(diagnosis_group=["NEV", "MEL", "NEV"] * 60), by="fitzpatrick_pairs",
                                     n_boot=200, min_group=5)
                   for key, pq in (("adjusted", NARROW), ("adjusted_after", WIDE))}}
    command = search_command(tmp_path / "index", tmp_path / "a.png", "blue-whitish veil")
    path = write_report(tmp_path / "report.html", demo.demo_settings(fast=True), records, results_table(records),
                        figures, "with a blue-whitish veil", "c1", {"training": 12.0}, summary, fairness, paired,
                        command)
    page = path.read_text()
    images = assert_self_contained(page)
    assert len(images) == 6
    for f in figures.values():
        f.unlink()  # the page does not need its figures' files
    assert_self_contained(path.read_text())
    # the headline first, the full tables folded, the run and method columns not both
    assert page.index("<h2>Results") < page.index("<details>")
    assert "<th>method</th>" not in page and "Floors</b> (no model" in page
    assert "Against global-only, the composed model is better on Recall@1" in page
    assert "does not beat every baseline and floor in this run" in page
    assert "Skin-type-balanced training widened the Recall@1 gap" in page
    # each model's gap beside the gap at a common diagnosis mix, in words and as a folded table
    for model, table in (("The composed model", fairness["adjusted"]),
                         ("With skin-type-balanced training", fairness["adjusted_after"])):
        row = table[(table["kind"] == "difference") & (table["metric"] == "recall@1")].iloc[0]
        assert (f"{model}, Recall@1: gap between skin-type groups {row['raw']:.3f} as measured, "
                f"{row['adjusted']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] at a common diagnosis mix") in page
    assert "The case-mix-adjusted gap (table)" in page and "not a comparison" in page
    assert "dermretr search --index" in page


def test_adjusted_gap_sentences_say_whether_a_gap_remains_at_a_common_mix():
    # quality depends on the diagnosis only and the groups' mixes differ: a raw gap, none at an equal mix
    dx = ["NEV"] * 12 + ["MEL"] * 4 + ["NEV"] * 4 + ["MEL"] * 12
    hit = [1, 1, 1, 0] * 3 + [1, 0, 0, 0] + [1, 1, 1, 0] + [1, 0, 0, 0] * 3
    pq = pd.DataFrame({"case_id": [f"q{i}" for i in range(32)], "n_relevant": 1, "fitzpatrick": [1] * 16 + [6] * 16,
                       "diagnosis_group": dx, "recall@1": hit})
    mixed = adjusted_gap_sentences(adjusted_gap(pq, metrics=["recall@1"], n_boot=200, min_group=10))
    # groups I (12 NEV, 4 MEL) and VI (4 NEV, 12 MEL) are each 0.25 from the pooled mix (half and half)
    assert len(mixed) == 1 and "0.250 as measured, 0.000 [" in mixed[0]
    assert mixed[0].endswith(": no gap shown at a common mix (the furthest group's diagnosis mix is 0.25 from the "
                             "pooled mix, in total variation).")
    # skin tone itself matters: every type-VI query misses, whatever its diagnosis
    tone = pq.assign(**{"recall@1": [1] * 16 + [0] * 16})
    real = adjusted_gap_sentences(adjusted_gap(tone, metrics=["recall@1"], n_boot=200, min_group=10))
    assert "1.000 as measured, 1.000 [" in real[0] and "max I, min VI): a gap remains at a common mix" in real[0]
    unresampled = adjusted_gap_sentences(adjusted_gap(tone, metrics=["recall@1"], n_boot=0, min_group=10))
    assert "1.000 at a common diagnosis mix (max I, min VI): no interval (no resampling)" in unresampled[0]
    # an interval above 0 with a permutation p above alpha: said to disagree, not called a gap
    row = adjusted_gap(tone, metrics=["recall@1"], n_boot=200, min_group=10)
    row.loc[row["kind"] == "difference", "p_value"] = 0.2
    assert "the interval and the permutation test disagree: not clearly a skin-tone gap" in \
        adjusted_gap_sentences(row)[0]


# ----------------------------------------------------------------------------- narration and time


def test_demo_plan_announces_every_model_it_trains():
    for s in (demo.demo_settings(), demo.demo_settings(fast=True), demo.demo_settings(n_cases=300, epochs=2)):
        models = demo.trained_models(s)
        plan = demo.demo_plan(s)
        assert models[-1] == demo.BALANCED_RUN and len(models) == len(s.kinds) + 1
        assert plan.startswith(f"Training {len(models)} models, {s.epochs} epochs each ({len(models) * s.epochs} "
                               "epochs): ")
        assert all(m in plan for m in models) and "skin type" in plan
    assert demo.demo_plan(demo.demo_settings(epochs=1)).startswith("Training 7 models, 1 epoch each (7 epochs): ")
    released = demo.demo_settings(released=True)
    assert demo.trained_models(released) == [] and demo.demo_plan(released).startswith("Training nothing")


def test_demo_time_is_a_measured_range_with_its_source():
    assert set(demo.MEASURED_SECONDS) == {"default", "fast", "released"}
    for mode, entry in demo.MEASURED_SECONDS.items():
        low, high = entry["range_s"]
        assert 0 < low <= high and entry["sources"] and all(entry["sources"]), mode
        assert demo.time_range(mode) in demo.demo_plan(demo.demo_settings(fast=mode == "fast",
                                                                          released=mode == "released"))
    assert demo.time_range("default").startswith("12 min to 92 min on 2 CPU cores: 715 s measured on an idle ")
    custom = demo.demo_plan(demo.demo_settings(epochs=2))
    assert "not measured at these sizes" in custom and demo.time_range("default") in custom
    assert {demo.demo_mode(demo.demo_settings(**k)) for k in ({}, {"fast": True}, {"released": True})} == \
        {"default", "fast", "released"}
    # the benchmark that measures these ranges exists and checks a run against them
    bench = (ROOT / "benchmarks" / "bench_demo.py").read_text()
    assert "MEASURED_SECONDS" in bench and "json.dumps" in bench and "getrusage" in bench

