"""Notebook 03 in JupyterLab 4 under headless Chromium: Run > Run All Cells, then the query builder, as a student.

Most students meet the app in JupyterLab (or Colab), not in Voila.  This test copies notebook 03 into its tmp
folder with the parameters cell set to fast mode (DermSynth and the trained models under tmp), serves that folder
with JupyterLab on 127.0.0.1, opens the notebook in Chromium, runs every cell through the Run menu, then picks
another reference case in the builder's "reference case" dropdown and changes the blue-whitish veil dropdown,
checking each time that the result grid (and the query text) change.  No cell may end in an error.

Needs what the Voila test needs (``test_browser.py``; the shared tools are in ``browser_helpers.py``): Debian's
``chromium`` and ``chromium-driver`` packages, ``selenium`` (the ``[dev]`` extra) and ``jupyterlab`` (a
dependency).  Nothing is downloaded, JupyterLab's news and update checks are off, and every Jupyter and IPython
folder lies in tmp.  The screenshot is saved as ``jupyterlab_query_builder.png`` in the test's tmp folder.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from browser_helpers import browser, chromium_and_driver, free_port, server_env, serving, tail

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_composed_queries.ipynb"
LAB_READY_S = 300  # JupyterLab's page, the notebook and its kernel, on a busy 2-core machine
RUN_ALL_S = 1200  # every cell in fast mode: DermSynth generated and a tiny model trained (or a shipped one loaded)
UPDATE_S = 120  # a change in the builder reaching the grid
#: JupyterLab user settings, as a student would set them: no news or update check (both would go online);
#: every cell kept in the page (the default, pinned) so that the test can read each cell's prompt.
USER_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "contentVisibility"},
}
DONE = re.compile(r"^\[\d+\]:$")  # the prompt of a code cell that has run ("[*]:" while queued or running)

pytestmark = pytest.mark.slow


def _set_parameters(source: str, values: dict[str, object]) -> str:
    """The parameters cell's ``source`` with the assignments to the names in ``values`` replaced (others kept)."""
    lines, found = source.splitlines(), set()
    for node in reversed(ast.parse(source).body):  # bottom up, so that line numbers above stay right
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in values):
            name = node.targets[0].id
            lines[node.lineno - 1:node.end_lineno] = [f"{name} = {values[name]!r}"]
            found.add(name)
    missing = sorted(set(values) - found)
    assert not missing, f"the parameters cell of {NOTEBOOK.name} does not set {missing}"
    return "\n".join(lines) + "\n"


def _fast_copy(folder: Path, values: dict[str, object]) -> Path:
    """Notebook 03 in ``folder`` with its ``parameters`` cell set to ``values``."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{NOTEBOOK.name}: one code cell must be tagged 'parameters'"
    tagged[0].source = _set_parameters(tagged[0].source, values)
    folder.mkdir(parents=True)
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


@pytest.fixture
def served_lab(tmp_path):
    """Notebook 03 in fast mode, alone in a folder served by JupyterLab on 127.0.0.1 (no token)."""
    chromium, driver = chromium_and_driver("jupyterlab")
    notebook = _fast_copy(tmp_path / "lab", {"DATA": f"synthetic:{tmp_path / 'dermsynth'}", "FAST": True,
                                             "SEED": 0, "OUT": str(tmp_path / "dermretr-course")})
    env = server_env(tmp_path)
    for plugin, values in USER_SETTINGS.items():
        folder, name = plugin.split(":")
        settings = Path(env["JUPYTER_CONFIG_DIR"], "lab", "user-settings", folder, f"{name}.jupyterlab-settings")
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values))

    port = free_port()
    log = tmp_path / "jupyterlab.log"
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", "--IdentityProvider.token=", f"--ServerApp.root_dir={notebook.parent}",
            "--ServerApp.allow_root=True",  # CI containers run as root; JupyterLab refuses to otherwise
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]  # "pypi" would query PyPI
    with serving("jupyterlab", argv, port, cwd=tmp_path, env=env, log=log):
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/{notebook.name}", "notebook": notebook, "log": log,
               "chromium": chromium, "chromedriver": driver, "tmp": tmp_path}


def test_notebook_03_in_jupyterlab_run_all_then_the_query_builder(served_lab, monkeypatch):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    info = served_lab
    driver = browser(info, monkeypatch, LAB_READY_S)
    shot = info["tmp"] / "jupyterlab_query_builder.png"
    n_code = sum(c.cell_type == "code" for c in nbformat.read(info["notebook"], as_version=4).cells)

    def css(selector: str) -> list:
        return driver.find_elements(By.CSS_SELECTOR, selector)

    def prompts() -> list[str]:
        return [e.get_attribute("textContent").strip() for e in css(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")]

    def captions() -> list[str]:
        return [e.text for e in css(".dermretr-grid .dermretr-caption")]

    def query_text() -> str:
        return driver.find_element(By.CSS_SELECTOR, ".dermretr-text textarea").get_attribute("value")

    def tracebacks() -> list[str]:
        return [text for e in css('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
                if "Traceback" in (text := e.get_attribute("textContent"))]

    def explain(what: str) -> str:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
        msg = css(".dermretr-message")
        dialogs = [d.text for d in css(".jp-Dialog")]
        return (f"{what}; cell prompts: {prompts()}; app message: {msg[0].text if msg else '(none)'}; "
                f"dialogs: {dialogs or '(none)'}; tracebacks: {[t[-300:] for t in tracebacks()] or '(none)'}; "
                f"screenshot {shot}\njupyterlab log:\n{tail(info['log'])}")

    def wait(seconds: float, what: str, until) -> None:
        try:
            # an element found while JupyterLab re-renders can be gone before it is read: poll again
            WebDriverWait(driver, seconds, poll_frequency=0.5,
                          ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: until())
        except TimeoutException:
            pytest.fail(explain(f"{what} within {seconds} s"))

    def menu(name: str, command: str) -> None:
        """Open the menu bar's ``name`` menu and press its item running ``command``, as a student would."""
        bar = [e for e in css(".lm-MenuBar-item") if e.text.strip() == name]
        assert bar, explain(f"no {name} menu in the menu bar")
        bar[0].click()
        wait(30, f"no menu item {command} under {name}",
             lambda: any(e.is_displayed() for e in css(f'.lm-Menu-item[data-command="{command}"]')))
        next(e for e in css(f'.lm-Menu-item[data-command="{command}"]') if e.is_displayed()).click()

    try:
        driver.get(info["url"])
        wait(LAB_READY_S, f"the notebook did not open with its {n_code} code cells",
             lambda: len(prompts()) == n_code)
        wait(LAB_READY_S, "the kernel was not idle",
             lambda: [e.get_attribute("data-status") for e in css(".jp-Notebook-ExecutionIndicator")] == ["idle"])
        assert not css(".jp-Dialog"), explain("a dialog is open")

        menu("Run", "runmenu:run-all")
        wait(60, "Run All Cells did not start", lambda: any(p != "[ ]:" for p in prompts()))
        # every cell queued at once shows "[*]:" until it has run; a failing cell ends the run, unqueuing the rest
        wait(RUN_ALL_S, "the cells did not finish running", lambda: "[*]:" not in prompts())
        assert not tracebacks(), explain("a cell failed")
        assert all(DONE.match(p) for p in prompts()), explain("the run stopped before the last cell")
        wait(UPDATE_S, "no result thumbnails of the query builder",
             lambda: bool(css(".dermretr-grid img.dermretr-result")))
        thumbs = css(".dermretr-grid img.dermretr-result")
        k = len(thumbs)
        assert k >= 2 and all(driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs)

        # 1. another reference case, from the "reference case" dropdown
        picker = Select(driver.find_element(By.CSS_SELECTOR, ".dermretr-case-picker select"))
        current = picker.first_selected_option.text
        other = next(o.text for o in picker.options if o.text != current)
        preview = driver.find_element(By.CSS_SELECTOR, ".dermretr-preview")
        before, text_before, preview_before = captions(), query_text(), preview.get_attribute("src")
        picker.select_by_visible_text(other)
        wait(UPDATE_S, f"the grid did not change after picking reference {other!r}",
             lambda: captions() != before and len(captions()) == k)
        assert preview.get_attribute("src") != preview_before, "the reference preview did not follow the pick"
        assert query_text() != text_before, "the query text did not follow the new reference's descriptors"
        reference = other.split(" · ")[0]  # the labels read "case id · diagnosis · FST ..."
        assert reference not in " ".join(c.split("\n")[0] for c in captions())  # the reference is left out

        # 2. a descriptor: the blue-whitish veil, set against the new reference's own value
        veil = Select(driver.find_element(By.CSS_SELECTOR, ".dermretr-criterion-blue_whitish_veil select"))
        wanted = "absent" if veil.first_selected_option.text == "present" else "present"
        before, text_before = captions(), query_text()
        veil.select_by_visible_text(wanted)
        wait(UPDATE_S, f"the grid did not change after setting the veil to {wanted}",
             lambda: captions() != before and len(captions()) == k)
        text = query_text()
        assert text != text_before and text.startswith("same lesion but with"), text
        message = driver.find_element(By.CSS_SELECTOR, ".dermretr-message").text
        assert f"{k} results for" in message and "error" not in message.lower(), message

        driver.execute_script("arguments[0].scrollIntoView()", driver.find_element(By.CSS_SELECTOR, ".dermretr-app"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert not tracebacks(), explain("a traceback appeared")

        # 3. File > Save Notebook: the saved notebook has every code cell run and no error output
        menu("File", "docmanager:save")

        def saved() -> list:
            with contextlib.suppress(Exception):
                cells = nbformat.read(info["notebook"], as_version=4).cells
                code = [c for c in cells if c.cell_type == "code"]
                if all(c.execution_count for c in code):
                    return code
            return []

        wait(UPDATE_S, "the notebook was not saved with every cell run", lambda: bool(saved()))
        errors = [o for c in saved() for o in c.outputs if o.get("output_type") == "error"]
        assert not errors, f"{errors[0].get('ename')}: {errors[0].get('evalue')} (screenshot {shot})"
    finally:
        driver.quit()
