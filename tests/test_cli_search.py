"""`dermretr search` output a person can read: the query's own case left out, the text's findings per hit.

The index holds 20 DermSynth cases encoded by a tiny untrained model saved with ``save_pretrained``
(case 1's image is a byte-for-byte copy of case 0's, under another name), so that searches take a
fraction of a second; what is tested is what the command says, not how good the model is.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from dermretr.cli import main
from dermretr.cli._search import model_line
from dermretr.data.vocab import compare_findings, query_findings
from dermretr.index import CaseIndex, same_image_cases


@pytest.fixture(scope="module")
def setup(model, synth_cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-search")
    folder = model.save_pretrained(root / "tiny-model")
    cases = synth_cases.head(20).reset_index(drop=True).copy()
    twin = root / "elsewhere" / "twin.jpg"  # case 1: the same bytes as case 0, another path
    twin.parent.mkdir()
    shutil.copy(cases.loc[0, "image_path"], twin)
    cases["image_path"] = cases["image_path"].astype(object)
    cases.loc[1, "image_path"] = str(twin)
    CaseIndex.build(str(folder), cases, device="cpu").save(root / "index")
    opened = CaseIndex.open(root / "index", device="cpu")
    return {"root": root, "folder": folder, "cases": cases, "index": str(root / "index"), "opened": opened}


@pytest.fixture(autouse=True)
def open_once(setup, monkeypatch):
    """Every search here opens the test index as loaded once (loading the model is most of a search's time)."""
    real = CaseIndex.open.__func__

    def open_(cls, path, device="auto", mmap=True):
        return setup["opened"] if str(path) == setup["index"] else real(cls, path, device, mmap)

    monkeypatch.setattr(CaseIndex, "open", classmethod(open_))


def search(setup, capsys, image, *extra):
    """``dermretr search`` on the test index: (exit code, stdout, stderr)."""
    code = main(["search", "--index", setup["index"], "--image", str(image), "--device", "cpu", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> list[str]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank "))
    return [line for line in lines[header + 1:] if re.match(r"\s*\d+\s", line)]


def records(setup, capsys, image, *extra) -> tuple[list[dict], str]:
    code, out, err = search(setup, capsys, image, "--json", *extra)
    assert code == 0, err
    return json.loads(out), err


# ---------------------------------------------------------------------------- the query's own case


def test_search_leaves_out_the_query_images_own_case(setup, capsys):
    cases = setup["cases"]
    one, two = cases.loc[0, "case_id"], cases.loc[1, "case_id"]  # case 1 holds a copy of case 0's image
    code, out, err = search(setup, capsys, cases.loc[0, "image_path"], "-k", "5")
    assert code == 0, err
    assert f"left out cases {one}, {two}: they hold the query image itself; --keep-self keeps them" in out
    rows = table_rows(out)
    assert len(rows) == 5 and not any(one in r or two in r for r in rows)
    found, _ = records(setup, capsys, cases.loc[0, "image_path"], "-k", "5")
    assert [r["rank"] for r in found] == [1, 2, 3, 4, 5]
    assert not {one, two} & {r["case_id"] for r in found}
    # what a search excluding them by id returns
    index = CaseIndex.open(setup["index"], device="cpu")
    assert [r["case_id"] for r in found] == index.search(cases.loc[0, "image_path"], "", k=5,
                                                         exclude=[one, two])["case_id"].tolist()


def test_a_copy_of_the_query_image_at_another_path_is_found_by_its_content(setup, capsys, tmp_path):
    cases = setup["cases"]
    upload = shutil.copy(cases.loc[5, "image_path"], tmp_path / "my upload.jpg")
    found, err = records(setup, capsys, upload, "--text", "blue-whitish veil", "-k", "4")
    assert cases.loc[5, "case_id"] not in {r["case_id"] for r in found} and len(found) == 4
    assert f"left out case {cases.loc[5, 'case_id']}: it is the query image itself" in err
    other = tmp_path / "another.jpg"  # an image of no case: nothing is left out
    from PIL import Image

    Image.open(upload).rotate(90).save(other)
    code, out, _ = search(setup, capsys, other, "-k", "4")
    assert code == 0 and "left out" not in out and len(table_rows(out)) == 4


def test_keep_self_keeps_the_query_case_and_marks_it(setup, capsys):
    cases = setup["cases"]
    one, two = cases.loc[0, "case_id"], cases.loc[1, "case_id"]
    code, out, err = search(setup, capsys, cases.loc[0, "image_path"], "-k", "4", "--keep-self")
    assert code == 0, err
    assert "left out" not in out and f"cases {one}, {two}: the query image itself (kept by --keep-self" in out
    rows = table_rows(out)
    assert {rows[0].split()[1], rows[1].split()[1]} == {one, two}  # an image is its own best match
    assert all("(query image)" in r for r in rows[:2]) and not any("(query image)" in r for r in rows[2:])
    found, _ = records(setup, capsys, cases.loc[0, "image_path"], "-k", "4", "--keep-self")
    assert [r["case_id"] for r in found if r["query_image"]] == [r["case_id"] for r in found[:2]]


def test_same_image_cases_reads_only_candidates_as_large_as_the_query(setup, monkeypatch):
    from dermretr.index import _same_image

    cases = setup["cases"]
    hashed = []
    real = _same_image.file_sha256
    monkeypatch.setattr(_same_image, "file_sha256", lambda p: hashed.append(str(p)) or real(p))
    query = cases.loc[0, "image_path"]
    ids = cases["case_id"].tolist()
    assert same_image_cases(cases, query, ids[:6] + ["no-such-case"]) == ids[:2]
    # the query (once) and its copy: the query's own file is recognised without reading it, and other
    # candidates only when they are as large
    from pathlib import Path

    size = Path(query).stat().st_size
    same_size = [p for p in cases["image_path"].iloc[2:6] if Path(p).stat().st_size == size]
    assert sorted(hashed) == sorted([query, cases.loc[1, "image_path"], *same_size])
    hashed.clear()
    assert same_image_cases(cases, query, []) == [] and hashed == []
    from PIL import Image

    assert same_image_cases(cases, Image.open(query)) == []  # an image in memory is no file
    assert same_image_cases(cases.assign(image_path="/nowhere/x.jpg"), query) == []


# ---------------------------------------------------------------------------- the text's findings per hit


def test_the_table_shows_the_texts_findings_that_each_hit_matches_or_contradicts(setup, capsys):
    cases = setup["cases"]
    text = "blue-whitish veil, atypical pigment network"
    code, out, err = search(setup, capsys, cases.loc[3, "image_path"], "--text", text, "-k", "6")
    assert code == 0, err
    lines = out.splitlines()
    assert f"model: {setup['folder'].resolve()}" in lines[0]
    assert lines[1] == "text: recognised atypical pigment network, blue-whitish veil"
    header = next(line for line in lines if line.startswith("rank "))
    assert header.split() == ["rank", "case", "score", "s_global", "s_local", "diagnosis", "skin", "matches",
                              "contradicts", "image"]
    found, _ = records(setup, capsys, cases.loc[3, "image_path"], "--text", text, "-k", "6")
    wanted = query_findings(text)
    by_id = cases.set_index("case_id", drop=False)
    veil = network = 0
    for r in found:
        case = by_id.loc[r["case_id"]]
        assert (r["matches"], r["contradicts"]) == compare_findings(wanted, case)
        has_veil = case["blue_whitish_veil"] == "present"
        assert ("blue-whitish veil" in r["matches"]) == has_veil
        assert ("no blue-whitish veil" in r["contradicts"]) == (not has_veil)
        veil += has_veil
        network += case["pigment_network"] == "atypical"
    for r, row in zip(found, table_rows(out)):  # the table shows the same, with the skin type and the image
        assert r["case_id"] in row and (", ".join(r["matches"]) or "-") in row and ", ".join(r["contradicts"]) in row
        assert row.rstrip().endswith(r["image_path"].rsplit("/", 1)[-1])
    assert lines[-1] == (f"results showing the text's findings: atypical pigment network {network} of 6, "
                         f"blue-whitish veil {veil} of 6")


def test_a_skin_type_in_the_text_is_compared_with_each_hits(setup, capsys):
    cases = setup["cases"]
    found, err = records(setup, capsys, cases.loc[3, "image_path"], "--text", "irregular streaks on darker skin",
                         "-k", "8")
    assert "text: recognised irregular streaks, skin type V-VI" in err
    for r in found:
        dark = f"skin type {'V-VI' if r['fitzpatrick'] >= 5 else 'III-IV' if r['fitzpatrick'] >= 3 else 'I-II'}"
        assert dark in (r["matches"] if r["fitzpatrick"] >= 5 else r["contradicts"])


def test_a_text_naming_no_finding_says_so_and_what_it_changed(setup, capsys):
    image = setup["cases"].loc[3, "image_path"]
    code, out, err = search(setup, capsys, image, "--text", "the quick brown fox", "-k", "6")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("text: "))
    assert line.startswith("text: names no finding dermretr knows (no 7-point descriptor, no skin type), so "
                           "nothing below is compared with it; the model still reads it as free text; ")
    alone, _ = records(setup, capsys, image, "-k", "6")
    fox, _ = records(setup, capsys, image, "--text", "the quick brown fox", "-k", "6")
    shared = len({r["case_id"] for r in alone} & {r["case_id"] for r in fox})
    assert line.endswith(f"free text; results shared with the image alone (no text): {shared} of 6")
    header = next(line for line in out.splitlines() if line.startswith("rank "))
    assert "matches" not in header and "contradicts" not in header and "results showing" not in out
    _, out, _ = search(setup, capsys, image, "-k", "3")
    assert "text: none; the results rank by the image alone" in out


def test_a_text_whose_findings_conflict_says_what_is_not_compared(setup, capsys):
    image = setup["cases"].loc[3, "image_path"]
    code, out, _ = search(setup, capsys, image, "--text", "regular streaks and irregular streaks", "-k", "3")
    assert code == 0
    assert "text: no finding compared (streaks: conflicting mentions 'regular streaks' (regular) and " in out
    _, out, _ = search(setup, capsys, image, "--text", "regular streaks, irregular streaks, on dark skin", "-k", "3")
    assert "text: recognised skin type V-VI (not compared: streaks: conflicting mentions" in out


def test_errors_stay_one_line_with_exit_code_2(setup, capsys, tmp_path):
    code, out, err = search(setup, capsys, tmp_path / "missing.jpg", "--keep-self")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("dermretr: error: query image: image file not found")


# ---------------------------------------------------------------------------- which model answers


def test_the_model_line_names_the_model_that_answers(tmp_path):
    config = {"kind": "full", "backbone": "dermretr-tiny", "image_size": 96}
    released = {"model": {"pretrained": "dermretr/dermsynth-tiny", "config": dict(config, image_size=128)}}
    assert model_line(released) == ("dermretr/dermsynth-tiny, the released model, trained on DermSynth only "
                                    "(full, dermretr-tiny, 128 px)")
    ckpt = tmp_path / "demo" / "runs" / "full" / "checkpoints" / "best.pt"
    manifest = {"model": {"pretrained": None, "checkpoint_path": str(ckpt), "config": config}}
    assert model_line(manifest) == f"checkpoint {ckpt} (full, dermretr-tiny, 96 px)"
    ckpt.parent.mkdir(parents=True)
    (ckpt.parent.parent / "config.json").write_text(json.dumps({"epochs": 12, "data": "synthetic:demo/dermsynth"}))
    assert model_line(manifest).endswith("(full, dermretr-tiny, 96 px); trained 12 epochs on synthetic:demo/dermsynth")
    assert model_line({"model": None}) == "not recorded in the index (built from vectors)"


# ---------------------------------------------------------------------------- README's example


@pytest.mark.slow
def test_readmes_search_example_prints_what_readme_shows(tmp_path, monkeypatch, capsys):
    """The README's `dermretr search` example, run as written: the same lines (scores within 0.002)."""
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    part = readme[readme.index("**Reading a search.**"):]
    commands = re.search(r"```bash\n(.*?)```", part, re.S).group(1).replace("\\\n", " ")
    shown = re.search(r"```text\n(.*?)```", part, re.S).group(1).strip().splitlines()
    monkeypatch.chdir(tmp_path)
    out = ""
    for line in commands.strip().splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "dermretr"
        assert main([*argv[1:], *(["--no-progress"] if argv[1] == "index" else [])]) == 0
        out = capsys.readouterr().out
    printed = out.strip().splitlines()
    number = re.compile(r"\d+\.\d{4}")
    assert [number.sub("#", line) for line in printed] == [number.sub("#", line) for line in shown]
    got = [float(v) for line in printed for v in number.findall(line)]
    want = [float(v) for line in shown for v in number.findall(line)]
    assert got == pytest.approx(want, abs=2e-3)
