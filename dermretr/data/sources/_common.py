"""Helpers shared by the dataset loaders.

Every loader imports what it shares with the others from here (and only from
here): option checks, reading the metadata, checking and parsing columns with
errors that name the file, column, lines and values, the text-view phrases
several datasets have in common, finding the images, and the last step of
every loader (split, missing-image policy, validation).  The helpers live in
the private modules :mod:`._reading`, :mod:`._columns`, :mod:`._files` and
:mod:`._assemble`; this module gathers them.
"""

from __future__ import annotations

from ._assemble import (
    add_text_views,
    age_phrases,
    apply_missing,
    finish,
    insert_case_columns,
    join_phrases,
    sex_phrases,
    site_age_sex_phrases,
    site_phrases,
)
from ._columns import (
    FITZPATRICK_SPELLINGS,
    UNKNOWN_TEXT,
    check_unique,
    clean_text,
    group_ids,
    parse_choice,
    parse_fitzpatrick,
    parse_flag,
    parse_number,
    rename_collisions,
    required_text,
    unique_ids,
)
from ._files import (
    FileIndex,
    check_image_names,
    find_by_name,
    locate,
    locate_all,
    resolve_case_insensitive,
    safe_join,
    split_suffix,
    warn_case_mismatches,
)
from ._reading import (
    MISSING,
    bad_values,
    check_missing,
    check_path,
    check_seed,
    check_text,
    dataset_root,
    describe_items,
    describe_lines,
    describe_values,
    empty_values,
    line_unit,
    read_metadata,
    read_table,
    require_columns,
)

__all__ = [
    "MISSING",
    "UNKNOWN_TEXT",
    "check_missing",
    "check_seed",
    "check_path",
    "check_text",
    "dataset_root",
    "read_metadata",
    "read_table",
    "require_columns",
    "describe_items",
    "describe_lines",
    "describe_values",
    "line_unit",
    "bad_values",
    "empty_values",
    "clean_text",
    "required_text",
    "unique_ids",
    "check_unique",
    "group_ids",
    "parse_choice",
    "parse_number",
    "parse_flag",
    "parse_fitzpatrick",
    "FITZPATRICK_SPELLINGS",
    "rename_collisions",
    "join_phrases",
    "add_text_views",
    "age_phrases",
    "sex_phrases",
    "site_phrases",
    "site_age_sex_phrases",
    "safe_join",
    "FileIndex",
    "resolve_case_insensitive",
    "locate",
    "locate_all",
    "check_image_names",
    "split_suffix",
    "find_by_name",
    "warn_case_mismatches",
    "insert_case_columns",
    "apply_missing",
    "finish",
]
