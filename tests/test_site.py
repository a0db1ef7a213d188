"""The course website (``site/``): it builds offline, has a page for every source, and no internal link is broken.

Sphinx with MyST-NB and the Sphinx Book Theme (the ``[docs]`` extra, part of ``[dev]``) renders the README,
the tutorials, the notebooks (never executed) and the docs into a tmp folder, with warnings as errors (a
Markdown link to a missing page or anchor is a MyST warning).  Then every ``href``/``src`` in the built HTML
that is not a URL elsewhere must name a file inside the site, and its ``#anchor`` an ``id`` on that page.
The toolchain comes with ``pip install -e ".[dev]"``, so without it the build test fails (never skips) and says
how to install it.  The link checker itself is tested on a hand-made tree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE_CONFIG = ROOT / "site"
TOOLCHAIN = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
             "sphinx_external_toc": "sphinx-external-toc"}
BUILD_TIMEOUT_S = 600
# every source of the site: the landing page, the course, the notebooks and the reference pages
SOURCES = ("README.md", "CONTRIBUTING.md", "tutorials/*.md", "notebooks/*.ipynb", "docs/*.md")
LINK_ATTRIBUTES = {"a": "href", "link": "href", "area": "href", "img": "src", "script": "src", "iframe": "src",
                   "source": "src"}


class _PageScan(HTMLParser):
    """The ids (``id=``, and ``name=`` of anchors) and the link targets (with their line) of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.ids.add(values["name"])
        attribute = LINK_ATTRIBUTES.get(tag)
        if attribute and attribute in values:
            self.links.append((self.getpos()[0], values[attribute]))


def _scan(page: Path) -> _PageScan:
    scan = _PageScan()
    scan.feed(page.read_text(encoding="utf-8"))
    scan.close()
    return scan


def broken_links(site: Path) -> list[str]:
    """``page:line: link (why)`` for every internal link of the HTML pages under ``site`` that does not resolve.

    A link with a scheme or a host (``https:``, ``mailto:``, ``//cdn...``) is external and not checked.  Any
    other is resolved against its page: it must stay inside ``site``, name an existing file (a folder means its
    ``index.html``), and its ``#fragment``, on an HTML page, must be an id of that page.  The HTML files under
    ``_static/`` are the theme's templates, not pages: links to them are checked, links in them are not.
    """
    site = site.resolve()
    # the theme's Jinja fragments copied into _static/ are not pages
    pages = [page for page in sorted(site.rglob("*.html")) if "_static" not in page.relative_to(site).parts]
    scans = {page: _scan(page) for page in pages}
    problems = []
    for page, scan in scans.items():
        where = page.relative_to(site).as_posix()
        for line, link in scan.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue
            path, fragment = unquote(parts.path), unquote(parts.fragment)
            if path.startswith("/"):
                problems.append(f"{where}:{line}: {link} (absolute path: breaks when the site is not at the root)")
                continue
            target = page if not path else page.parent / PurePosixPath(path)
            target = Path(os.path.normpath(target))
            if not target.is_relative_to(site):
                problems.append(f"{where}:{line}: {link} (leaves the site)")
                continue
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}:{line}: {link} (no such file)")
                continue
            if fragment and target.suffix == ".html":
                ids = (scans.get(target) or _scan(target)).ids
                if fragment not in ids:
                    problems.append(f"{where}:{line}: {link} (no id {fragment!r} on that page)")
    return problems


def _page_of(source: Path) -> str:
    return source.relative_to(ROOT).with_suffix(".html").as_posix()


def test_link_checker_finds_broken_links(tmp_path):
    """The checker on a tiny tree: good links pass, each kind of broken link is reported once."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text('<h1 id="top">Sub</h1><a name="old">old</a>')
    (tmp_path / "style.css").write_text("")
    (tmp_path / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="style.css?v=1"></head><body>\n'
        '<h1 id="intro">Intro</h1>\n'
        '<a href="#intro">ok</a> <a href="#">top</a> <a href="sub/">dir</a> <a href="sub/index.html#top">ok</a>\n'
        '<a href="sub/index.html#old">named</a> <a href="https://example.org/x.html">external</a>\n'
        '<a href="mailto:a@b.c">mail</a> <script src="//cdn.example.org/x.js"></script>\n'
        '<a href="missing.html">1</a>\n'
        '<a href="sub/index.html#nowhere">2</a>\n'
        '<a href="#nowhere">3</a>\n'
        '<a href="../outside.html">4</a>\n'
        '<img src="/style.css">\n'
        '</body></html>\n')
    assert broken_links(tmp_path) == [
        "index.html:6: missing.html (no such file)",
        "index.html:7: sub/index.html#nowhere (no id 'nowhere' on that page)",
        "index.html:8: #nowhere (no id 'nowhere' on that page)",
        "index.html:9: ../outside.html (leaves the site)",
        "index.html:10: /style.css (absolute path: breaks when the site is not at the root)",
    ]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site built from the working tree into a tmp folder (warnings are errors); its HTML folder."""
    missing = [package for module, package in TOOLCHAIN.items() if importlib.util.find_spec(module) is None]
    if missing:  # pip packages of the [dev] extra (through [docs]): required, never skipped
        pytest.fail(f"the site's toolchain is not installed ({', '.join(missing)}); pip install -e '.[dev]' "
                    "(or '.[docs]') brings it")
    out = tmp_path_factory.mktemp("site")
    before = sorted(p.name for p in SITE_CONFIG.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-j", "1",
         "-c", str(SITE_CONFIG), "-d", str(out / "doctrees"), str(ROOT), str(out / "html")],
        cwd=out, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"the site build failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    assert sorted(p.name for p in SITE_CONFIG.iterdir()) == before, "the build wrote into site/"
    return out / "html"


@pytest.mark.slow
def test_every_source_has_its_page(built_site):
    sources = sorted(path for pattern in SOURCES for path in ROOT.glob(pattern))
    assert len([s for s in sources if s.parent.name == "notebooks"]) >= 5, "the notebooks are not where expected"
    missing = [_page_of(s) for s in sources if not (built_site / _page_of(s)).is_file()]
    assert not missing, f"sources without a page: {missing}"
    # the landing page leads to the README's page
    assert "README.html" in (built_site / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_notebooks_are_rendered_not_executed(built_site):
    """Every notebook's page shows its code cells, and outputs only when the notebook is stored with some."""
    for notebook in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        stored_outputs = any(cell.get("outputs") for cell in cells)
        page = (built_site / _page_of(notebook)).read_text(encoding="utf-8")
        assert "cell_input" in page, f"{notebook.name}: no code cells on its page"
        assert ("cell_output" in page) == stored_outputs, f"{notebook.name}: was it executed by the build?"
    assert not (built_site.parent / ".jupyter_cache").exists(), "the build used an execution cache"


@pytest.mark.slow
def test_no_internal_link_is_broken(built_site):
    problems = broken_links(built_site)
    assert not problems, "broken links in the built site:\n" + "\n".join(problems)
