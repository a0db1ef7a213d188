"""The query builder in a real browser: Voila serves a notebook with the app, headless Chromium drives it.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them) plus ``voila`` and
``selenium`` (the ``[dev]`` extra).  Nothing is downloaded (see ``browser_helpers.py``, shared with the
JupyterLab test): Selenium is given the driver's path (so Selenium Manager never runs - the helpers make sure of
it), and Chromium runs with background networking off and every host name but localhost unresolvable.  Without
the browser the test is skipped, except when the environment variable ``CI`` is set: then it fails, so that CI
cannot skip it silently.  ``DERMRETR_CHROMIUM`` and ``DERMRETR_CHROMEDRIVER`` point at other binaries.  The
screenshot is saved as ``query_builder.png`` in the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import sys

import pytest
from browser_helpers import browser, chromium_and_driver, free_port, server_env, serving, tail

APP_READY_S = 300  # kernel start + torch import + first search, on a busy 2-core machine
UPDATE_S = 120  # a descriptor change reaching the grid

pytestmark = pytest.mark.slow


@pytest.fixture
def served_app(tmp_path):
    """A saved tiny index + checkpoint, a notebook building the app on it, served by Voila on 127.0.0.1."""
    chromium, driver = chromium_and_driver("voila")

    import nbformat
    import torch

    from dermretr.data import load
    from dermretr.data.synth import generate
    from dermretr.index import CaseIndex
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    root = generate(tmp_path / "ds", n_cases=24, seed=5, image_size=64, workers=1, progress=False)
    cases = load("synthetic", root)
    torch.manual_seed(0)
    model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    ckpt = model.save(tmp_path / "tiny.pt")
    CaseIndex.build(model, cases, checkpoint=ckpt).save(tmp_path / "index")
    reference = cases.iloc[0]

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from dermretr.index import CaseIndex\n"
        "from dermretr.widgets import QueryBuilder\n"
        f"index = CaseIndex.open({str(tmp_path / 'index')!r}, device='cpu')\n"
        "app = QueryBuilder(index, k=6, debounce=0.2, thumb=80)\n"
        f"app.select_case({str(reference['case_id'])!r})\n"
        "app.search()\n"
        "app")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = tmp_path / "query_builder.ipynb"
    nbformat.write(nb, notebook)

    port = free_port()
    log = tmp_path / "voila.log"
    argv = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0", "--Voila.token=", "--show_tracebacks=True"]
    with serving("voila", argv, port, cwd=tmp_path, env=server_env(tmp_path), log=log):
        yield {"url": f"http://127.0.0.1:{port}/", "log": log, "reference": reference, "chromium": chromium,
               "chromedriver": driver, "tmp": tmp_path}


def test_query_builder_in_voila_with_headless_chromium(served_app, monkeypatch):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    STALE = (StaleElementReferenceException,)  # an element re-rendered between finding and reading it: poll again

    info = served_app
    driver = browser(info, monkeypatch, APP_READY_S)
    shot = info["tmp"] / "query_builder.png"

    def captions() -> list[str]:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".dermretr-grid .dermretr-caption")]

    def explain(what: str) -> str:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
        msg = driver.find_elements(By.CSS_SELECTOR, ".dermretr-message")
        return (f"{what}; app message: {msg[0].text if msg else '(none)'}; screenshot {shot}\n"
                f"voila log:\n{tail(info['log'])}")

    try:
        driver.get(info["url"])
        try:
            WebDriverWait(driver, APP_READY_S, poll_frequency=1, ignored_exceptions=STALE).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".dermretr-grid img.dermretr-result")) >= 6)
        except TimeoutException:
            pytest.fail(explain(f"no 6 result thumbnails within {APP_READY_S} s"))
        thumbs = driver.find_elements(By.CSS_SELECTOR, ".dermretr-grid img.dermretr-result")
        assert len(thumbs) == 6
        assert all(driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs)
        before = captions()
        assert len(before) == 6 and all("score" in c and "s_global" in c for c in before), before
        assert str(info["reference"]["case_id"]) not in " ".join(before)  # the reference itself is left out

        veil = str(info["reference"]["blue_whitish_veil"])
        wanted = "absent" if veil == "present" else "present"
        select = Select(driver.find_element(By.CSS_SELECTOR, ".dermretr-criterion-blue_whitish_veil select"))
        assert select.first_selected_option.text == veil
        select.select_by_visible_text(wanted)
        try:
            WebDriverWait(driver, UPDATE_S, poll_frequency=0.5, ignored_exceptions=STALE).until(
                lambda d: captions() != before)
        except TimeoutException:
            pytest.fail(explain(f"the grid did not change within {UPDATE_S} s of setting the veil to {wanted}"))
        text = driver.find_element(By.CSS_SELECTOR, ".dermretr-text textarea").get_attribute("value")
        assert text.startswith("same lesion but with"), text
        WebDriverWait(driver, UPDATE_S, poll_frequency=0.5, ignored_exceptions=STALE).until(
            lambda d: len(captions()) == 6)
        message = driver.find_element(By.CSS_SELECTOR, ".dermretr-message").text
        assert "6 results for" in message and "error" not in message.lower(), message
        # "why?" under the first result: its attribution overlay and mask maps appear below the grid
        driver.find_elements(By.CSS_SELECTOR, ".dermretr-grid .dermretr-why")[0].click()
        try:
            WebDriverWait(driver, UPDATE_S, poll_frequency=0.5, ignored_exceptions=STALE).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".dermretr-detail img")) >= 2)
        except TimeoutException:
            pytest.fail(explain(f"no attribution figures within {UPDATE_S} s of pressing why?"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
