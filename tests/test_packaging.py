"""Packaging: pyproject, environment.yml, README's commands and .ci/run stay consistent."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


# conda-forge names of PyPI packages where they differ
CONDA_NAME = {"torch": "pytorch", "open-clip-torch": "open-clip-torch"}


def test_environment_yml_lists_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip |= {_name(p) for p in item["pip"] if not p.startswith("-e")}
        else:
            conda.add(_name(item.split("=")[0]))
    assert "python" in conda and "pip" in conda
    for dep in deps:
        name = _name(dep)
        assert CONDA_NAME.get(name, name) in conda | pip, f"{name} from pyproject.toml is missing in environment.yml"
    extra = (conda | pip) - {"python", "pip"} - {CONDA_NAME.get(_name(d), _name(d)) for d in deps}
    assert not extra, f"environment.yml has packages pyproject.toml does not: {extra}"
    assert any("-e ." in p for item in env["dependencies"] if isinstance(item, dict) for p in item["pip"])
    assert "python=3.11" in env["dependencies"]


def test_open_clip_pinned_to_3x():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "open_clip_torch>=3.0,<4" in deps
    assert not any(d.startswith("torch==") for d in deps)


def test_console_script_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["dermretr"] == "dermretr.cli:main"
    assert project["requires-python"] == ">=3.10"


def test_ci_runs_exactly_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- test-command:start -->\s*```bash\n(.+?)\n```\s*<!-- test-command:end -->", readme, re.S)
    assert block, "README must mark its test command"
    command = block.group(1).strip()
    assert "pytest" in command and "pip install" in command and "python3 -m venv" in command
    assert "ruff check ." in command and "mypy" in command  # style and types fail CI like a test
    extracted = subprocess.run(
        ["awk", '/<!-- test-command:start -->/{on=1; next} /<!-- test-command:end -->/{on=0} on && !/^```/',
         str(ROOT / "README.md")], capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert extracted == command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command:start" in ci and "passed" in ci  # extracts the command and insists tests ran


def test_readme_quickstart_runs_the_demo():
    readme = (ROOT / "README.md").read_text()
    assert "dermretr demo" in readme and "jupyter lab notebooks/" in readme
    assert "mybinder.org" in readme and "colab.research.google.com" in readme


def test_binder_environment_is_the_root_one_without_the_editable_install():
    root = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    binder = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())["dependencies"]

    def strip(deps):
        return [{"pip": [p for p in d["pip"] if not p.startswith("-e")]} if isinstance(d, dict) else d for d in deps]

    assert strip(root) == binder, "binder/environment.yml must list exactly environment.yml's packages"
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps" in post and os.access(ROOT / "binder" / "postBuild", os.X_OK)


def test_package_faces_export_the_main_names_lazily():
    """``import dermretr`` stays light (the command line's --help); its names load on first use."""
    code = ("import sys, dermretr\n"
            "light = not {'torch', 'numpy', 'pandas'} & set(sys.modules)\n"
            "names = {n: getattr(dermretr, n) for n in dermretr.__all__}\n"
            "print(light, sorted(names))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    light, _, names = proc.stdout.strip().partition(" ")
    assert light == "True", "import dermretr must not import torch, numpy or pandas"
    assert set(ast.literal_eval(names)) == {"load", "generate", "create", "Retriever", "fit", "TrainConfig",
                                            "CaseIndex", "QuerySession", "QueryBuilder", "DermretrError",
                                            "__version__"}
    import dermretr
    import dermretr.models as models
    from dermretr.data import load
    from dermretr.index import CaseIndex
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever
    from dermretr.train import TrainConfig, fit

    assert (dermretr.load, dermretr.create, dermretr.Retriever, dermretr.fit, dermretr.TrainConfig,
            dermretr.CaseIndex) == (load, create, Retriever, fit, TrainConfig, CaseIndex)
    assert set(models.__all__) == {"create", "Retriever", "KINDS", "convex_score", "Embeddings"}
    assert models.Retriever is Retriever and models.create is create and "full" in models.KINDS
    from dermretr.models.embeddings import Embeddings, convex_score

    assert models.Embeddings is Embeddings and models.convex_score is convex_score
    with pytest.raises(AttributeError):
        dermretr.no_such_name  # noqa: B018


def test_every_data_file_of_the_package_ships_in_a_wheel():
    """Binder (postBuild) and Colab install without -e: files that are not .py must be package data."""
    import fnmatch

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    # setuptools' globs skip dotfiles (a local .DS_Store, an ownership marker), so must this check; no git
    # needed: a tree unpacked from an archive is checked the same way
    data = [p for p in (ROOT / "dermretr").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.parts[len(ROOT.parts):])]
    assert data, "the package has data files (the model configs)"
    for path in data:
        rel = path.relative_to(ROOT)
        covered = any(
            rel.as_posix().startswith(package.replace(".", "/") + "/")
            and fnmatch.fnmatch(rel.relative_to(package.replace(".", "/")).as_posix(), pattern)
            and not any(part.startswith(".") for part in rel.parts)
            for package, patterns in package_data.items() for pattern in patterns)
        assert covered, f"{rel} is not in [tool.setuptools.package-data]: a wheel would lack it"


def test_licence_and_citation_files():
    """LICENSE matches the licence pyproject declares; CITATION.cff has what CFF 1.2.0 requires."""
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert {"message", "title", "authors", "version"} <= set(cff)
    assert cff["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert any("2603.09108" in str(ref) for ref in cff["references"])  # the method the model follows
    try:
        from cffconvert.cli.create_citation import create_citation  # optional: the full schema check
    except ImportError:
        return
    create_citation(str(ROOT / "CITATION.cff"), None).validate()
