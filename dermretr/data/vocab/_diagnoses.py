"""The twenty Derm7pt diagnoses, their five groups, which groups are malignant, and the diagnosis synonyms."""

from __future__ import annotations

from ..._errors import VocabularyError

__all__ = [
    "DIAGNOSIS_GROUPS",
    "GROUP_NAMES",
    "DIAGNOSES",
    "GROUP_OF_DIAGNOSIS",
    "MALIGNANT_GROUPS",
    "DIAGNOSIS_SYNONYMS",
    "diagnosis_group",
    "is_malignant",
]

#: The five Derm7pt diagnosis groups and their member diagnoses, as the
#: official derm7pt code groups them.
DIAGNOSIS_GROUPS: dict[str, tuple[str, ...]] = {
    "BCC": ("basal cell carcinoma",),
    "NEV": (
        "blue nevus",
        "clark nevus",
        "combined nevus",
        "congenital nevus",
        "dermal nevus",
        "recurrent nevus",
        "reed or spitz nevus",
    ),
    "MEL": (
        "melanoma",
        "melanoma (in situ)",
        "melanoma (less than 0.76 mm)",
        "melanoma (0.76 to 1.5 mm)",
        "melanoma (more than 1.5 mm)",
        "melanoma metastasis",
    ),
    "MISC": ("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion"),
    "SK": ("seborrheic keratosis",),
}
GROUP_NAMES: tuple[str, ...] = tuple(DIAGNOSIS_GROUPS)
#: The 20 Derm7pt diagnosis strings, sorted.
DIAGNOSES: tuple[str, ...] = tuple(sorted(d for ds in DIAGNOSIS_GROUPS.values() for d in ds))
GROUP_OF_DIAGNOSIS: dict[str, str] = {d: g for g, ds in DIAGNOSIS_GROUPS.items() for d in ds}
#: Groups whose members are malignant (melanoma and basal cell carcinoma).
MALIGNANT_GROUPS: frozenset[str] = frozenset({"MEL", "BCC"})
#: Words that tell a diagnosis, its kind or its outcome without being any dataset's
#: label (plurals, spelling variants, benign/malignant).  Query texts must not hold
#: them, nor any label: see :func:`dermretr.evaluate.check_query_text`.
DIAGNOSIS_SYNONYMS: tuple[str, ...] = (
    "nevi", "naevus", "naevi", "mole", "moles", "melanomas", "carcinoma", "carcinomas", "cancer", "cancers",
    "cancerous", "keratosis", "keratoses", "benign", "malignant", "malignancy", "neoplastic", "non-neoplastic",
    "metastasis", "metastatic",
)


def diagnosis_group(diagnosis: str) -> str:
    """Return the Derm7pt group (BCC, NEV, MEL, MISC, SK) of a Derm7pt diagnosis.

    >>> diagnosis_group("Clark_nevus")
    'NEV'
    """
    key = " ".join(str(diagnosis).replace("_", " ").strip().lower().split())
    try:
        return GROUP_OF_DIAGNOSIS[key]
    except KeyError:
        raise VocabularyError(
            f"unknown diagnosis {diagnosis!r}; Derm7pt diagnoses are: {', '.join(DIAGNOSES)}"
        ) from None


def is_malignant(diagnosis: str) -> bool:
    """Whether a Derm7pt diagnosis is malignant (its group is MEL or BCC).

    >>> is_malignant("basal cell carcinoma"), is_malignant("lentigo")
    (True, False)
    """
    return diagnosis_group(diagnosis) in MALIGNANT_GROUPS
