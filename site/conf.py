"""Sphinx configuration of the dermretr course website.

MyST-NB renders the README (the landing page), the tutorials, the notebooks (as stored: never executed) and
the docs with the Sphinx Book Theme; everything it needs is installed by ``pip install -e ".[docs]"``, and
nothing is downloaded at build time.  The source directory is the repository root and this folder holds only
the configuration, so build from the repository root with::

    .venv/bin/sphinx-build -c site . site/_build/html

``tests/test_site.py`` builds it into a tmp folder with warnings as errors and checks every page and link.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.transforms import Transform

project = "dermretr"
author = "the dermretr developers"
copyright = "the dermretr developers (MIT licence)"

extensions = ["myst_nb", "sphinx_external_toc"]
external_toc_path = str(Path(__file__).with_name("_toc.yml"))

# only the site's pages are read: not the package, tests, benchmarks or anything built in the tree; the other
# folders of the source directory (.venv, .git, datasets...) are not even walked (see _skip_other_folders)
CONTENT_FOLDERS = ("tutorials", "notebooks", "docs")
include_patterns = ["README.md", "CONTRIBUTING.md", "tutorials/*.md", "notebooks/*.ipynb", "docs/*.md"]
exclude_patterns = ["**/.ipynb_checkpoints/**"]

# the notebooks are shown as stored, without outputs: the test suite executes them, the site build never does
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath", "html_image"]
myst_heading_anchors = 3  # "## Setup" gets the anchor #setup, as on GitHub

html_theme = "sphinx_book_theme"
html_title = "dermretr"
html_theme_options = {
    "repository_url": "https://github.com/dermretr/dermretr",
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    # each notebook's page gets Binder and Colab buttons (plain links: the site itself runs nothing)
    "launch_buttons": {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
}

_HTML_ANCHOR = re.compile(r'<a\s[^>]*?\b(?:id|name)="([^"]+)"')


class RawHtmlAnchors(Transform):
    """Make ``<a id="x"></a>`` anchors (in the notebooks' Markdown) link targets that MyST resolves.

    ``[text](../notebooks/02_training.ipynb#results)`` and ``[text](#results)`` then link to the anchor without a
    "local id not found" warning; the anchor itself is output as written.  Runs before MyST's own anchor
    resolution (priority 879).
    """

    default_priority = 878

    def apply(self, **kwargs):
        env = getattr(self.document.settings, "env", None)
        slugs = getattr(self.document, "myst_slugs", None)
        if env is None or slugs is None:
            return
        for raw in self.document.findall(nodes.raw):
            if "html" in raw.get("format", "").split():
                for anchor in _HTML_ANCHOR.findall(raw.astext()):
                    slugs.setdefault(anchor, (raw.line, anchor, ""))
        if slugs:
            env.metadata[env.docname]["myst_slugs"] = slugs


def _skip_other_folders(app, config):
    """Excludes every folder of the source directory but the content's (Sphinx walks all it does not exclude)."""
    others = sorted(path.name for path in Path(app.srcdir).iterdir()
                    if path.is_dir() and path.name not in CONTENT_FOLDERS)
    config.exclude_patterns = [*config.exclude_patterns, *others]


def setup(app):
    app.connect("config-inited", _skip_other_folders)
    app.add_transform(RawHtmlAnchors)
