"""The course: five notebooks and six lessons.

Structure (fast): every notebook has its Colab badge, an install cell that acts
only on Colab, a papermill ``parameters`` cell, learning objectives, exercises
with folded solutions, and is committed without outputs; every lesson has
objectives, a duration, exercises and instructor notes, and its links resolve.

Execution (slow): every notebook runs top to bottom on a fresh kernel of *this*
interpreter in fast mode, with its exercise solutions run right after their
exercise, so that the solutions stay correct as the library changes.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TUTORIALS = ROOT / "tutorials"
REPO = "dermretr/dermretr"
EXPECTED = (
    "01_data_tour",
    "02_training",
    "03_composed_queries",
    "04_retrieval_visualisation",
    "05_fairness_fitzpatrick",
)
LESSONS = (
    "01_composed_retrieval",
    "02_seven_point_checklist",
    "03_evaluating_retrieval",
    "04_reading_attribution_maps",
    "05_skin_tone_fairness",
    "06_real_data_and_pretrained_backbones",
)
#: Per-cell timeout in fast mode: a guard against hangs, far above normal (speed is measured in benchmarks/).
FAST_LIMIT_S = 600

_DETAILS = re.compile(r"<details>\s*<summary>\s*Solutions?\s*</summary>(.*?)</details>", re.S | re.I)
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_ANCHOR = re.compile(r"""<a\s+id=["']([^"']+)["']""")
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _anchors(nb: nbformat.NotebookNode) -> set[str]:
    return {a for cell in nb.cells if cell.cell_type == "markdown" for a in _ANCHOR.findall(cell.source)}


def _solutions(markdown: str) -> list[str]:
    """The ```python blocks inside the folded solutions of a markdown cell."""
    return [block for details in _DETAILS.findall(markdown) for block in _PYTHON_BLOCK.findall(details)]


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _mentions_colab(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == "google.colab" for n in ast.walk(node))


def _pip_calls_outside_colab_branch(tree: ast.AST) -> list[int]:
    """Line numbers of statements mentioning pip that are not inside an ``if "google.colab" in ...`` block."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _mentions_colab(node.test):
            for inner in node.body:
                guarded.update(n.lineno for n in ast.walk(inner) if hasattr(n, "lineno"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value == "pip":
            if node.lineno not in guarded:
                bad.append(node.lineno)
    return bad


# ----------------------------------------------------------------------------- structure


def test_exactly_the_five_course_notebooks():
    assert tuple(sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{name}: cells {dirty} have outputs or execution counts; clear them before committing"
    assert not {"papermill", "widgets"} & set(nb.metadata), f"{name}: notebook metadata holds execution state"
    timed = [i for i, c in enumerate(nb.cells) if {"execution", "papermill"} & set(c.metadata)]
    assert not timed, f"{name}: cells {timed} hold execution metadata"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_has_badge_objectives_install_and_parameters(name):
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    badge = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb"
    assert "colab-badge.svg" in first.source and badge in first.source, f"{name}: no Colab badge pointing at itself"
    assert "## Learning objectives" in first.source, f"{name}: the first cell must state the learning objectives"
    for anchor in re.findall(r"\]\(#([^)]+)\)", first.source):  # the table of contents
        assert anchor in _anchors(nb), f"{name}: the contents link to #{anchor}, which no cell defines"

    code = _code_cells(nb)
    install, params = code[0], code[1]
    tree = ast.parse(install.source)  # plain Python: no magics, so it runs anywhere
    assert _mentions_colab(tree) and "pip" in install.source, f"{name}: the first code cell must install on Colab"
    assert not _pip_calls_outside_colab_branch(tree), f"{name}: the install cell must act only on Colab"

    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [params], f"{name}: the second code cell, and only it, must be tagged 'parameters'"
    assigned = {t.id for node in ast.parse(params.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert {"DATA", "FAST", "SEED"} <= assigned, f"{name}: parameters must set DATA, FAST and SEED"
    assert re.search(r"^FAST = False\b", params.source, re.M), f"{name}: notebooks default to the full course sizes"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_has_exercises_with_folded_solutions(name):
    nb = _read(name)
    exercises = [c for c in nb.cells if c.cell_type == "markdown" and "**Exercise" in c.source]
    assert exercises, f"{name}: no exercise"
    for cell in exercises:
        assert _DETAILS.search(cell.source), f"{name}: exercise without a folded solution: {cell.source[:60]!r}"
        for block in _solutions(cell.source):
            ast.parse(block)  # the execution test runs them


def _lesson_text(name: str) -> str:
    return (TUTORIALS / f"{name}.md").read_text(encoding="utf-8")


def test_exactly_the_six_lessons():
    assert tuple(sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.md"))) == LESSONS


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_has_objectives_duration_exercises_and_instructor_notes(name):
    text = _lesson_text(name)
    assert text.startswith("---\n") and "\ntitle:" in text.split("---")[1], f"{name}: MyST front matter with a title"
    for heading in ("## Learning objectives", "## Exercises", "## Instructor notes"):
        assert f"\n{heading}\n" in text, f"{name}: no '{heading}' section"
    minutes = re.search(r"\*\*Duration:\*\*\s*(\d+)\s*min", text)
    assert minutes and 20 <= int(minutes.group(1)) <= 40, f"{name}: the duration must be 20-40 min"
    exercises = text.split("## Exercises", 1)[1].split("## Instructor notes", 1)[0]
    assert "<details>" in exercises and "</details>" in exercises, f"{name}: exercises need folded solutions"
    assert "../notebooks/" in text, f"{name}: a lesson links to its notebook sections"


@pytest.mark.parametrize("name", [*LESSONS, "README"])
def test_lesson_links_resolve(name):
    path = TUTORIALS / f"{name}.md"
    for link in _MD_LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+://", link) or link.startswith("#"):
            continue
        target, _, fragment = link.partition("#")
        file = (path.parent / target).resolve()
        assert file.is_file(), f"{name}: link {link} points at a missing file"
        if fragment and file.suffix == ".ipynb":
            nb = nbformat.read(file, as_version=4)
            assert fragment in _anchors(nb), f"{name}: link {link}: no section #{fragment} in {file.name}"


def test_readme_links_the_course():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "mybinder.org/badge_logo.svg" in readme and "colab-badge.svg" in readme
    for badge in re.findall(rf"colab\.research\.google\.com/github/{REPO}/blob/main/([^)\s]+)", readme):
        assert (ROOT / badge).is_file(), f"README's Colab badge points at a missing {badge}"
    for name in EXPECTED:
        assert f"notebooks/{name}.ipynb" in readme, f"README does not link notebook {name}"
    for name in LESSONS:
        assert f"tutorials/{name}.md" in readme, f"README does not link lesson {name}"


# ----------------------------------------------------------------------------- execution


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec that runs *this* interpreter (the one running pytest), found first on JUPYTER_PATH."""
    pytest.importorskip("ipykernel")
    name = "dermretr-course-test"
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (dermretr tests)",
        "language": "python",
    }))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    yield name
    mp.undo()


def _with_solutions(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with each exercise's solution code as a code cell right after the exercise."""
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type == "markdown":
            cells.extend(nbformat.v4.new_code_cell(block) for block in _solutions(cell.source))
    out = nbformat.from_dict(json.loads(json.dumps(nb)))
    out.cells = cells
    for i, cell in enumerate(out.cells):
        cell["id"] = f"cell-{i}"
    return out


def _run_fast(name, kernel_name, tmp_path, cwd=None, **parameters):
    """Notebook ``name`` with its solutions, executed in fast mode in ``cwd`` (default ``tmp_path``)."""
    papermill = pytest.importorskip("papermill")
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec(kernel_name).argv[0] == sys.executable
    cwd = tmp_path if cwd is None else cwd
    source = tmp_path / f"{name}.ipynb"
    nbformat.write(_with_solutions(_read(name)), source)
    executed = papermill.execute_notebook(
        str(source), str(tmp_path / f"{name}.out.ipynb"),
        parameters={"FAST": True, "DATA": f"synthetic:{cwd / 'dermsynth'}", "SEED": 0, **parameters},
        kernel_name=kernel_name, cwd=str(cwd), progress_bar=False, log_output=False,
        start_timeout=300, execution_timeout=FAST_LIMIT_S,
    )
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    return executed


def _app_text_after_run_all(executed: nbformat.NotebookNode) -> str:
    """The query text notebook 03's app shows after *Run All*: its text box in the saved widget state."""
    state = executed.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    boxes = [m["state"].get("value", "") for m in state.values() if m.get("model_name") == "TextareaModel"
             and str(m["state"].get("placeholder", "")).startswith("descriptor or modification text")]
    assert len(boxes) == 1, f"expected the app's one query-text box in the saved widget state, found {len(boxes)}"
    return boxes[0]


def _check_app_narrative(executed: nbformat.NotebookNode) -> None:
    """Notebook 03 after *Run All*: a query text printed below the app is the one the app shows, or says it is
    the app's first query (the cells further down change the app, which then shows their modification)."""
    code = [c for c in executed.cells if c.cell_type == "code"]
    app_cell = next(i for i, c in enumerate(code) if re.search(r"^app$", c.source, re.M))
    shown = _app_text_after_run_all(executed)
    printed = [m.groups() for c in code[app_cell + 1:] for o in c.get("outputs", []) if o.get("output_type") == "stream"
               for m in [re.match(r"^(.*?):\s+'(.*)'$", line) for line in o["text"].splitlines()] if m]
    assert printed, "the cells after the app print no query text"
    wrong = [(label, text) for label, text in printed if "first" not in label and text != shown]
    assert not wrong, f"printed as the app's query, but after Run All the app shows {shown!r}: {wrong}"
    first = [text for label, text in printed if "first" in label]
    assert first and first[0] != shown, ("expected the app's first query printed (labelled 'first') and the app "
                                         "showing the modification made further down")


#: Checks of an executed notebook, beyond running without an error.
AFTER_RUN = {"03_composed_queries": _check_app_narrative}


#: The five notebooks in one folder, in the order they run, with their parameters beyond fast mode.  Notebook 03
#: searches with a model trained in the notebook (``MODEL = None``: the path a class on its own data takes), which
#: notebook 02 then finds and reuses; notebook 03 with its default, the released model, runs in JupyterLab in
#: ``test_browser_lab.py`` (and notebooks 04 and 05 load the released model by default).
COURSE_RUN = (
    ("01_data_tour", {}),
    ("03_composed_queries", {"MODEL": None}),
    ("02_training", {}),
    ("04_retrieval_visualisation", {}),
    ("05_fairness_fitzpatrick", {}),
)


def test_the_course_run_covers_every_notebook_and_notebook_03_defaults_to_the_released_model():
    assert sorted(name for name, _ in COURSE_RUN) == list(EXPECTED)
    params = next(c for c in _read("03_composed_queries").cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r'^MODEL = "dermretr/dermsynth-tiny"', params.source, re.M)  # the default: the released model


@pytest.fixture(scope="module")
def course_folder(tmp_path_factory):
    """One folder for the five notebooks, as a class runs them: the data the first generates and the models trained
    in one notebook are reused by the later ones (``Course`` keeps them in the folder)."""
    return tmp_path_factory.mktemp("course")


@pytest.mark.slow
@pytest.mark.parametrize("name, parameters", COURSE_RUN, ids=[name for name, _ in COURSE_RUN])
def test_notebook_runs_in_fast_mode(name, parameters, kernel_name, tmp_path, course_folder):
    model = course_folder / "dermretr-course" / "fast" / "full" / "checkpoints" / "best.pt"
    trains = "MODEL" in parameters and parameters["MODEL"] is None
    assert not (trains and model.exists()), "the notebook with MODEL = None must train its model: it is there already"
    executed = _run_fast(name, kernel_name, tmp_path, cwd=course_folder, **parameters)
    AFTER_RUN.get(name, lambda nb: None)(executed)
    if trains:  # with MODEL = None the notebook trained the model it searches with, into the course folder
        assert model.is_file()
