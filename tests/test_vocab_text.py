"""Tests of the descriptor text of the 7-point vocabulary: phrase tables, rendering and parsing, modification texts,
case text views (dermretr.data.vocab._phrases, dermretr.data.vocab._text)."""

from __future__ import annotations

import itertools
import random

import pytest

from dermretr._errors import VocabularyError
from dermretr.data.vocab import (
    ABSENT,
    CRITERIA,
    NEGATIONS,
    NO_FINDINGS,
    PHRASES,
    TEXT_STYLES,
    TEXT_VIEWS,
    case_text,
    mentioned_criteria,
    modification_text,
    parse_modification,
    parse_text,
    render_text,
)

ALL_COMBOS = [dict(zip(CRITERIA, vals)) for vals in itertools.product(*CRITERIA.values())]


def _only(criterion: str, value: str | None, default: str | None = None) -> dict:
    return {c: (value if c == criterion else default) for c in CRITERIA}


# --------------------------------------------------------------------------- vocabulary


def test_all_combinations_counted():
    assert len(ALL_COMBOS) == 3 * 3 * 5 * 4 * 3 * 2 * 8 == 8640


def test_phrase_tables_cover_every_value():
    for c, values in CRITERIA.items():
        assert values[0] == ABSENT
        assert set(PHRASES[c]) == set(values[1:]), c
        assert all(len(p) >= 1 for p in PHRASES[c].values())
        assert NEGATIONS[c][0].startswith("no ")
    assert PHRASES["pigment_network"]["atypical"][0] == "atypical pigment network"
    assert PHRASES["blue_whitish_veil"]["present"][0] == "blue-whitish veil"


def test_every_phrase_parses_alone_to_its_value():
    for c, values in PHRASES.items():
        for v, phrases in values.items():
            for p in phrases:
                assert parse_text(p, default=None) == _only(c, v), p
                assert parse_text(p.upper(), default=None) == _only(c, v), p
        for p in NEGATIONS[c]:
            assert parse_text(p, default=None) == _only(c, ABSENT), p


def test_no_two_phrases_are_confusable_in_pairs():
    # any two findings of different criteria, side by side, are read as exactly those two
    items = [(c, v, p) for c, vals in PHRASES.items() for v, ps in vals.items() for p in ps]
    items += [(c, ABSENT, p) for c, ps in NEGATIONS.items() for p in ps]
    for (c1, v1, p1), (c2, v2, p2) in itertools.product(items, repeat=2):
        if c1 == c2:
            continue
        for joiner in (" ", ", ", " and "):
            got = parse_text(p1 + joiner + p2, default=None)
            want = {c: {c1: v1, c2: v2}.get(c) for c in CRITERIA}
            assert got == want, (p1, joiner, p2)


@pytest.mark.parametrize(
    "text, criterion, value",
    [
        ("irregular streaks", "streaks", "irregular"),
        ("regular streaks", "streaks", "regular"),
        ("an irregular pigment network", "pigment_network", "atypical"),
        ("a regular pigment network", "pigment_network", "typical"),
        ("linear irregular vessels", "vascular_structures", "linear irregular"),
        ("vessels within regression", "vascular_structures", "within regression"),
        ("blue-whitish veil", "blue_whitish_veil", "present"),
        ("a veil", "blue_whitish_veil", "present"),
        ("blue-grey and white regression areas", "regression_structures", "combinations"),
        ("peppering", "regression_structures", "blue areas"),
        ("white scar-like regression areas", "regression_structures", "white areas"),
        ("irregular dots and globules", "dots_and_globules", "irregular"),
        ("dotted vessels", "vascular_structures", "dotted"),
        ("localized irregular pigmentation", "pigmentation", "localized irregular"),
    ],
)
def test_overlapping_words_are_not_double_counted(text, criterion, value):
    assert parse_text(text, default=None) == _only(criterion, value)


# --------------------------------------------------------------------------- render/parse


@pytest.mark.parametrize("style", TEXT_STYLES)
def test_render_parse_identity_on_every_combination(style):
    for crit in ALL_COMBOS:
        for seed in (None, 0, 7):
            text = render_text(crit, style, seed)
            assert parse_text(text) == crit, (style, seed, text)


@pytest.mark.parametrize("style", TEXT_STYLES)
def test_render_parse_identity_with_absent_mentioned(style):
    rng = random.Random(1234)
    for crit in rng.sample(ALL_COMBOS, 600):
        for seed in (None, 3, 11):
            text = render_text(crit, style, seed, mention_absent=True)
            # every criterion is stated, so nothing is left to the default
            assert parse_text(text, default=None) == crit, (style, seed, text)
            for c, v in crit.items():
                if v == ABSENT:
                    assert "no " in text.lower()


def test_canonical_rendering_examples():
    case = {"pigment_network": "atypical", "blue_whitish_veil": "present"}
    assert render_text(case, "terse", None) == "atypical pigment network, blue-whitish veil"
    assert (
        render_text(case, "sentence", None)
        == "Dermoscopy shows an atypical pigment network and a blue-whitish veil."
    )
    assert (
        render_text(case, "note", None)
        == "Dermoscopic findings: atypical pigment network; blue-whitish veil. 7-point score 4."
    )
    assert render_text({"streaks": "irregular"}, "terse", None, mention_absent=True) == (
        "irregular streaks, no pigment network, no blotches, no regression structures, "
        "no dots and globules, no blue-whitish veil, no vascular structures"
    )


@pytest.mark.parametrize("style", TEXT_STYLES)
def test_nothing_present(style):
    text = render_text({}, style, seed=5)
    assert NO_FINDINGS in text
    assert parse_text(text) == {c: ABSENT for c in CRITERIA}
    # the "no structures" phrase sets every unmentioned criterion absent, even with default None
    assert parse_text(text, default=None) == {c: ABSENT for c in CRITERIA}


def test_only_present_findings_mentioned_by_default():
    text = render_text({"streaks": "irregular"}, "sentence", seed=None)
    assert text == "Dermoscopy shows irregular streaks."
    assert parse_text(text, default=None) == _only("streaks", "irregular")


def test_determinism_by_seed():
    crit = ALL_COMBOS[-1]
    for style in TEXT_STYLES:
        for seed in range(5):
            assert render_text(crit, style, seed) == render_text(crit, style, seed)
        assert render_text(crit, style, None) == render_text(crit, style, None)
        texts = {render_text(crit, style, seed) for seed in range(10)}
        assert len(texts) >= 5, style
    before, after = ALL_COMBOS[0], ALL_COMBOS[-1]
    assert modification_text(before, after, 3) == modification_text(before, after, 3)
    assert len({modification_text(before, after, s) for s in range(10)}) >= 5


def test_seed_shuffles_order_of_findings():
    crit = ALL_COMBOS[-1]
    canonical = render_text(crit, "terse", None).split(", ")
    assert canonical[0] == PHRASES["pigment_network"]["atypical"][0]
    firsts = set()
    for seed in range(20):
        first = render_text(crit, "terse", seed).split(", ")[0]
        firsts.add(next(c for c in CRITERIA if parse_text(first, default=None)[c] is not None))
    assert len(firsts) >= 4


def test_matches_inside_words_are_ignored():
    for text in ("semiregular streaks", "piano streaks", "regular streaksx", "xdotted vessels"):
        assert parse_text(text, default=None) == {c: None for c in CRITERIA}, text


def test_rendering_leaves_global_random_state_alone():
    random.seed(99)
    state = random.getstate()
    render_text(ALL_COMBOS[-1], "sentence", 4)
    modification_text(ALL_COMBOS[0], ALL_COMBOS[-1], 4)
    assert random.getstate() == state


def test_underscores_case_and_whitespace_accepted():
    crit = {"pigmentation": "Diffuse_Irregular", "vascular_structures": "linear_irregular"}
    text = render_text(crit, "terse", None)
    assert text == "diffuse irregular pigmentation, linear irregular vessels"
    got = parse_text(
        "BLUE_WHITISH_VEIL,  Diffuse-Irregular\n  Pigmentation, linear_irregular   vessels"
    )
    assert got["blue_whitish_veil"] == "present"
    assert got["pigmentation"] == "diffuse irregular"
    assert got["vascular_structures"] == "linear irregular"
    assert got["streaks"] == ABSENT
    assert parse_text("has_blue_whitish_veil")["blue_whitish_veil"] == "present"


def test_unknown_criterion_or_value_raises():
    with pytest.raises(VocabularyError) as err:
        render_text({"streaks": "wavy"})
    assert "wavy" in str(err.value) and "absent, regular, irregular" in str(err.value)
    with pytest.raises(VocabularyError) as err:
        render_text({"pigment_netwrk": "typical"})
    assert "pigment_netwrk" in str(err.value) and "pigment_network" in str(err.value)
    with pytest.raises(VocabularyError) as err:
        modification_text({}, {"vascular_structures": "spiral"})
    assert "spiral" in str(err.value) and "arborizing" in str(err.value)
    with pytest.raises(VocabularyError) as err:
        render_text({}, style="poem")
    assert "poem" in str(err.value) and "sentence" in str(err.value)


@pytest.mark.parametrize(
    "text, criterion, first, second",
    [
        ("regular streaks and irregular streaks", "streaks", "regular streaks",
         "irregular streaks"),
        ("no streaks, irregular pseudopods", "streaks", "no streaks", "irregular pseudopods"),
        ("typical network; atypical pigment network", "pigment_network", "typical network",
         "atypical pigment network"),
        ("peppering, white regression areas", "regression_structures", "peppering",
         "white regression areas"),
        ("dotted vessels and comma vessels", "vascular_structures", "dotted vessels",
         "comma vessels"),
    ],
)
def test_conflicting_mentions_raise(text, criterion, first, second):
    with pytest.raises(VocabularyError) as err:
        parse_text(text)
    msg = str(err.value)
    assert criterion in msg and repr(first) in msg and repr(second) in msg


def test_same_value_twice_is_fine():
    got = parse_text("irregular streaks ... irregular pseudopods", default=None)
    assert got == _only("streaks", "irregular")


def test_parse_text_default_and_type():
    assert parse_text("", default=None) == {c: None for c in CRITERIA}
    assert parse_text("nothing of note") == {c: ABSENT for c in CRITERIA}
    with pytest.raises(VocabularyError):
        parse_text(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- modifications


def test_modification_examples():
    assert modification_text({}, {"blue_whitish_veil": "present"}, None) == (
        "same lesion but with a blue-whitish veil"
    )
    assert modification_text({"streaks": "regular"}, {}, None) == "same lesion but without streaks"
    before, after = {"pigment_network": "typical"}, {"pigment_network": "atypical"}
    assert modification_text(before, after, None) == (
        "same lesion but with an atypical instead of a typical pigment network"
    )
    assert modification_text(
        {"blue_whitish_veil": "present"}, {"streaks": "irregular"}, None
    ) == "same lesion but with irregular streaks and without a blue-whitish veil"


def test_modification_round_trip_every_single_change():
    base_rng = random.Random(0)
    n = 0
    for c, values in CRITERIA.items():
        for old, new in itertools.permutations(values, 2):
            for seed in (None, 0, 1, 2, 3, 4, 5):
                before = dict(base_rng.choice(ALL_COMBOS))
                before[c] = old
                after = dict(before, **{c: new})
                text = modification_text(before, after, seed)
                assert parse_modification(text) == {c: new}, (text, before, after)
                n += 1
    assert n == 7 * sum(len(v) * (len(v) - 1) for v in CRITERIA.values())


def test_modification_round_trip_random_multi_changes():
    rng = random.Random(42)
    for i in range(3000):
        before, after = rng.choice(ALL_COMBOS), rng.choice(ALL_COMBOS)
        if before == after:
            continue
        seed = None if i % 10 == 0 else i
        text = modification_text(before, after, seed)
        want = {c: after[c] for c in CRITERIA if before[c] != after[c]}
        assert parse_modification(text) == want, (text, before, after)


def test_modification_full_form_with_rather_than():
    text = "same lesion but with dotted vessels rather than comma-shaped vessels, and no veil"
    want = {"vascular_structures": "dotted", "blue_whitish_veil": ABSENT}
    assert parse_modification(text) == want
    assert parse_modification("with white instead of blue-grey regression areas") == {
        "regression_structures": "white areas"
    }
    assert parse_modification("same lesion") == {}


def test_no_change_raises():
    with pytest.raises(VocabularyError):
        modification_text({"streaks": "regular"}, {"streaks": "regular"})
    with pytest.raises(VocabularyError):
        modification_text({}, {c: ABSENT for c in CRITERIA})
    with pytest.raises(VocabularyError):
        modification_text({"streaks": "irregular"}, {"streaks": "Irregular"})


# --------------------------------------------------------------------------- text views


CASE = {"findings": "itching; on the face", "descriptors": "basal cell carcinoma; itching; on the face"}


@pytest.mark.parametrize("style", TEXT_STYLES)
def test_findings_view_is_the_default_and_never_reads_the_caption(style):
    assert TEXT_VIEWS == ("findings", "caption")
    findings = case_text(CASE, style=style)
    assert findings == case_text(CASE, style=style, view="findings")
    assert "itching" in findings and "carcinoma" not in findings
    assert "basal cell carcinoma" in case_text(CASE, style=style, view="caption")


@pytest.mark.parametrize("case", [{"descriptors": "melanoma; on the back"},
                                  {"descriptors": "melanoma", "findings": ""},
                                  {"descriptors": "melanoma", "findings": None},
                                  {"descriptors": "melanoma", "findings": " ; "}])
def test_without_findings_the_findings_view_says_nothing_is_known(case):
    # an older case table without a findings column must not fall back to its caption
    assert case_text(case) == NO_FINDINGS
    assert case_text(case, style="sentence") == NO_FINDINGS[0].upper() + NO_FINDINGS[1:] + "."
    assert "melanoma" in case_text(case, view="caption")


def test_criteria_cases_render_their_criteria_in_both_views():
    case = {"streaks": "irregular", "descriptors": "irregular streaks", "findings": "irregular streaks"}
    for style in TEXT_STYLES:
        for seed in (None, 0, 7):
            text = case_text(case, style=style, seed=seed)
            assert text == case_text(case, style=style, seed=seed, view="caption")
            assert text == render_text({"streaks": "irregular"}, style=style, seed=seed)


def test_unknown_view_is_a_one_line_error():
    with pytest.raises(VocabularyError, match=r"unknown text view 'query'; views: findings .*caption"):
        case_text(CASE, view="query")


# --------------------------------------------------------------------------- the lenient reading of a query


def test_mentioned_criteria_reads_what_a_query_names():
    assert mentioned_criteria("same lesion but with irregular streaks and without a blue-whitish veil") == {
        "streaks": "irregular", "blue_whitish_veil": "absent"}
    assert mentioned_criteria("irregular streaks") == parse_modification("irregular streaks")
    assert mentioned_criteria("itching on the arm") == {}


@pytest.mark.parametrize("text", ["", "   ", None])
def test_mentioned_criteria_of_no_text_is_empty(text):
    assert mentioned_criteria(text) == {}


def test_mentioned_criteria_of_conflicting_mentions_is_none():
    text = "regular streaks and irregular streaks"
    with pytest.raises(VocabularyError):
        parse_text(text)
    assert mentioned_criteria(text) is None


def test_readmes_sentence_example_is_what_render_text_prints():
    """README's "In Python" example shows the first case of `generate("dermsynth", n_cases=500)` in a sentence.

    generate renders the cases that plan_cases plans (same seed, priors and modification rate, in case-id order),
    so the planned first row is the loaded first case without rendering 500 images.
    """
    import inspect
    import re
    from pathlib import Path

    from dermretr.data.synth import generate
    from dermretr.data.synth.dataset import plan_cases

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## In Python"):]
    block = block[block.index("```python\n") + 10:]
    block = block[:block.index("\n```")]
    assert re.search(r'generate\("dermsynth", n_cases=500, image_size=128\)', block), "README's example changed"
    lines = block.splitlines()
    at = next(i for i, line in enumerate(lines) if 'render_text(cases.iloc[0], style="sentence")' in line)
    shown = []
    for line in lines[at + 1:]:
        if not line.startswith("# "):
            break
        shown.append(line[2:])
    assert shown, "README shows no output under its render_text line"
    defaults = {k: v.default for k, v in inspect.signature(generate).parameters.items()}
    rows, _ = plan_cases(500, seed=defaults["seed"], priors=defaults["priors"],
                         modification_rate=defaults["modification_rate"])
    assert rows["case_id"].iloc[0] == min(rows["case_id"])  # load() sorts by case id; the first is the first planned
    assert render_text(rows.iloc[0], style="sentence") == " ".join(shown)


@pytest.mark.parametrize("text, named", [
    ("with streaks", "streaks"), ("some dots", "dots and globules"), ("regression", "regression structures"),
    ("a pigment network", "pigment network"), ("vessels", "vascular structures"), ("pseudopods", "streaks"),
])
def test_a_criterion_named_without_its_kind_is_said_with_phrases_that_name_one(text, named):
    from dermretr.data.vocab import PHRASES, parse_modification, query_findings

    found = query_findings(text)
    assert not found.criteria and len(found.problems) == 1
    assert f"names {named} without its kind; say e.g. " in found.problems[0]
    # every phrase it suggests is one the vocabulary reads
    criterion = named.replace(" ", "_")
    for phrase in [p.strip("' .") for p in found.problems[0].split("say e.g. ")[1].split(" or ")]:
        assert parse_modification(phrase).get(criterion) in PHRASES[criterion]


@pytest.mark.parametrize("text", ["irregular streaks", "no streaks", "vessels within regression",
                                  "white scar-like regression areas", "typical pigment network", "blue-white veil",
                                  "the quick brown fox"])
def test_texts_with_a_value_or_no_criterion_have_no_such_problem(text):
    from dermretr.data.vocab import query_findings

    assert query_findings(text).problems == ()
