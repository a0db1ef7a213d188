"""Clinically plausible priors that let the diagnosis drive DermSynth's criteria.

The tables are deliberately simple and documented (``docs/dermsynth.md`` is
rendered from them by :func:`prior_table_markdown`).  They follow textbook
dermoscopy: melanoma shows an atypical network, irregular streaks, dots and
pigmentation, and more often a blue-whitish veil and regression; nevi a
typical network and regular globules; basal cell carcinoma arborizing vessels
and no network; seborrheic keratosis hairpin (and comma) vessels without a
network; dermatofibroma a delicate peripheral network and dotted vessels;
blue nevus a homogeneous blue pigmentation; Spitz/Reed nevi regular streaks
(starburst); sebaceous-like "miscellaneous" lesions wreath (crown) vessels.

Examples
--------
>>> from dermretr.data.synth.priors import criterion_prior
>>> criterion_prior("basal cell carcinoma", "vascular_structures")["arborizing"]
0.75
"""

from __future__ import annotations

from ..vocab import CRITERIA, DIAGNOSIS_GROUPS

__all__ = [
    "GROUP_WEIGHTS",
    "DIAGNOSIS_WEIGHTS",
    "GROUP_PRIORS",
    "DIAGNOSIS_PRIORS",
    "FITZPATRICK_WEIGHTS",
    "criterion_prior",
    "prior_table_markdown",
]

#: How often each diagnosis group is drawn (more balanced than Derm7pt itself).
GROUP_WEIGHTS: dict[str, float] = {"NEV": 0.35, "MEL": 0.30, "BCC": 0.10, "SK": 0.10, "MISC": 0.15}

#: Relative weight of each diagnosis inside its group (roughly Derm7pt's counts).
DIAGNOSIS_WEIGHTS: dict[str, float] = {
    "basal cell carcinoma": 1.0,
    "blue nevus": 28, "clark nevus": 150, "combined nevus": 13, "congenital nevus": 17,
    "dermal nevus": 33, "recurrent nevus": 6, "reed or spitz nevus": 79,
    "melanoma": 4, "melanoma (in situ)": 64, "melanoma (less than 0.76 mm)": 102,
    "melanoma (0.76 to 1.5 mm)": 53, "melanoma (more than 1.5 mm)": 28, "melanoma metastasis": 4,
    "dermatofibroma": 20, "lentigo": 24, "melanosis": 16, "miscellaneous": 8, "vascular lesion": 29,
    "seborrheic keratosis": 1.0,
}


def _p(criterion: str, *probs: float) -> dict[str, float]:
    values = CRITERIA[criterion]
    assert len(probs) == len(values) and abs(sum(probs) - 1) < 1e-9, (criterion, probs)
    return dict(zip(values, probs))


#: Criterion priors per diagnosis group: group -> criterion -> value -> probability.
GROUP_PRIORS: dict[str, dict[str, dict[str, float]]] = {
    "NEV": {
        "pigment_network": _p("pigment_network", 0.25, 0.60, 0.15),
        "streaks": _p("streaks", 0.82, 0.13, 0.05),
        "pigmentation": _p("pigmentation", 0.35, 0.25, 0.25, 0.05, 0.10),
        "regression_structures": _p("regression_structures", 0.90, 0.05, 0.03, 0.02),
        "dots_and_globules": _p("dots_and_globules", 0.45, 0.45, 0.10),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.93, 0.07),
        "vascular_structures": _p("vascular_structures", 0.80, 0.0, 0.15, 0.0, 0.0, 0.0, 0.05, 0.0),
    },
    "MEL": {
        "pigment_network": _p("pigment_network", 0.25, 0.15, 0.60),
        "streaks": _p("streaks", 0.50, 0.10, 0.40),
        "pigmentation": _p("pigmentation", 0.15, 0.05, 0.05, 0.40, 0.35),
        "regression_structures": _p("regression_structures", 0.45, 0.20, 0.15, 0.20),
        "dots_and_globules": _p("dots_and_globules", 0.35, 0.10, 0.55),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.55, 0.45),
        "vascular_structures": _p("vascular_structures", 0.55, 0.0, 0.02, 0.03, 0.10, 0.0, 0.15, 0.15),
    },
    "BCC": {
        "pigment_network": _p("pigment_network", 0.95, 0.05, 0.0),
        "streaks": _p("streaks", 0.95, 0.03, 0.02),
        "pigmentation": _p("pigmentation", 0.60, 0.05, 0.10, 0.10, 0.15),
        "regression_structures": _p("regression_structures", 0.75, 0.15, 0.05, 0.05),
        "dots_and_globules": _p("dots_and_globules", 0.60, 0.10, 0.30),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.85, 0.15),
        "vascular_structures": _p("vascular_structures", 0.10, 0.75, 0.05, 0.0, 0.0, 0.0, 0.05, 0.05),
    },
    "SK": {
        "pigment_network": _p("pigment_network", 0.80, 0.15, 0.05),
        "streaks": _p("streaks", 0.95, 0.03, 0.02),
        "pigmentation": _p("pigmentation", 0.40, 0.30, 0.20, 0.05, 0.05),
        "regression_structures": _p("regression_structures", 0.90, 0.04, 0.04, 0.02),
        "dots_and_globules": _p("dots_and_globules", 0.70, 0.20, 0.10),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.95, 0.05),
        "vascular_structures": _p("vascular_structures", 0.45, 0.0, 0.05, 0.45, 0.0, 0.0, 0.05, 0.0),
    },
    "MISC": {
        "pigment_network": _p("pigment_network", 0.50, 0.45, 0.05),
        "streaks": _p("streaks", 0.92, 0.05, 0.03),
        "pigmentation": _p("pigmentation", 0.50, 0.20, 0.20, 0.05, 0.05),
        "regression_structures": _p("regression_structures", 0.90, 0.04, 0.04, 0.02),
        "dots_and_globules": _p("dots_and_globules", 0.75, 0.15, 0.10),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.95, 0.05),
        "vascular_structures": _p("vascular_structures", 0.70, 0.0, 0.10, 0.0, 0.0, 0.0, 0.15, 0.05),
    },
}

#: Per-diagnosis overrides of :data:`GROUP_PRIORS` (only the criteria that differ).
DIAGNOSIS_PRIORS: dict[str, dict[str, dict[str, float]]] = {
    "blue nevus": {
        "pigment_network": _p("pigment_network", 0.90, 0.10, 0.0),
        "pigmentation": _p("pigmentation", 0.10, 0.80, 0.10, 0.0, 0.0),
        "blue_whitish_veil": _p("blue_whitish_veil", 0.50, 0.50),
    },
    "dermal nevus": {
        "pigment_network": _p("pigment_network", 0.60, 0.35, 0.05),
        "vascular_structures": _p("vascular_structures", 0.50, 0.0, 0.45, 0.0, 0.0, 0.0, 0.05, 0.0),
    },
    "reed or spitz nevus": {
        "streaks": _p("streaks", 0.35, 0.55, 0.10),
        "dots_and_globules": _p("dots_and_globules", 0.40, 0.45, 0.15),
    },
    "dermatofibroma": {
        "pigment_network": _p("pigment_network", 0.30, 0.65, 0.05),
        "vascular_structures": _p("vascular_structures", 0.60, 0.0, 0.05, 0.0, 0.0, 0.0, 0.35, 0.0),
    },
    "lentigo": {"pigment_network": _p("pigment_network", 0.20, 0.75, 0.05)},
    "melanosis": {"pigment_network": _p("pigment_network", 0.30, 0.65, 0.05)},
    "vascular lesion": {
        "pigment_network": _p("pigment_network", 0.95, 0.05, 0.0),
        "vascular_structures": _p("vascular_structures", 0.30, 0.0, 0.15, 0.0, 0.0, 0.0, 0.40, 0.15),
    },
    "miscellaneous": {
        "vascular_structures": _p("vascular_structures", 0.50, 0.05, 0.05, 0.05, 0.0, 0.30, 0.05, 0.0),
    },
}

#: How often each Fitzpatrick type I..VI is drawn: every type well represented,
#: lighter types somewhat more, as in dermoscopy collections.
FITZPATRICK_WEIGHTS: tuple[float, ...] = (0.18, 0.22, 0.20, 0.16, 0.13, 0.11)


def criterion_prior(diagnosis: str, criterion: str) -> dict[str, float]:
    """The value distribution of ``criterion`` for a Derm7pt ``diagnosis``.

    >>> criterion_prior("melanoma", "blue_whitish_veil")
    {'absent': 0.55, 'present': 0.45}
    """
    from ..vocab import diagnosis_group

    over = DIAGNOSIS_PRIORS.get(diagnosis, {})
    return dict(over.get(criterion) or GROUP_PRIORS[diagnosis_group(diagnosis)][criterion])


def prior_table_markdown() -> str:
    """The prior tables as Markdown (used for ``docs/dermsynth.md``).

    >>> "| MEL |" in prior_table_markdown()
    True
    """
    lines = ["### Criterion priors per diagnosis group", ""]
    for criterion, values in CRITERIA.items():
        lines += [f"**{criterion}**", "", "| group | " + " | ".join(values) + " |",
                  "|---|" + "---|" * len(values)]
        for group in DIAGNOSIS_GROUPS:
            probs = GROUP_PRIORS[group][criterion]
            lines.append(f"| {group} | " + " | ".join(f"{probs[v]:.2f}" for v in values) + " |")
        lines.append("")
    lines += ["### Per-diagnosis overrides", "", "| diagnosis | criterion | distribution |", "|---|---|---|"]
    for diagnosis, table in DIAGNOSIS_PRIORS.items():
        for criterion, probs in table.items():
            dist = ", ".join(f"{v} {p:.2f}" for v, p in probs.items() if p > 0)
            lines.append(f"| {diagnosis} | {criterion} | {dist} |")
    lines += ["", "### Diagnosis groups drawn", "", "| group | weight |", "|---|---|"]
    lines += [f"| {g} | {w:.2f} |" for g, w in GROUP_WEIGHTS.items()]
    return "\n".join(lines) + "\n"
