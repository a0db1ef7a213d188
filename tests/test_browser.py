"""The query builder in a real browser: Voila serves a notebook with the app, headless Chromium drives it.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them) plus ``voila`` and
``selenium`` (the ``[dev]`` extra).  Nothing is downloaded: Selenium is given the driver's path (so Selenium
Manager never runs - the test makes sure of it), and Chromium runs with background networking off and every
host name but localhost unresolvable.  Without the browser the test is skipped, except when the environment
variable ``CI`` is set: then it fails, so that CI cannot skip it silently.  ``DERMRETR_CHROMIUM`` and
``DERMRETR_CHROMEDRIVER`` point at other binaries.  The screenshot is saved as ``query_builder.png`` in the
test's tmp folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DERMRETR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DERMRETR_CHROMEDRIVER", "/usr/bin/chromedriver")
SERVER_START_S = 120  # Voila listening
APP_READY_S = 300  # kernel start + torch import + first search, on a busy 2-core machine
UPDATE_S = 120  # a descriptor change reaching the grid
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

pytestmark = pytest.mark.slow


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser test may not be skipped (.ci/run installs chromium and "
                    "chromium-driver; pip install -e '.[dev]' brings voila and selenium)")
    pytest.skip(reason)


def _executable(path: str, name: str) -> str | None:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture
def served_app(tmp_path):
    """A saved tiny index + checkpoint, a notebook building the app on it, served by Voila on 127.0.0.1."""
    chromium = _executable(CHROMIUM, "chromium")
    driver = _executable(CHROMEDRIVER, "chromedriver")
    _require(chromium is not None, f"Chromium not found ({CHROMIUM}; Debian package chromium)")
    _require(driver is not None, f"chromedriver not found ({CHROMEDRIVER}; Debian package chromium-driver)")
    _require(importlib.util.find_spec("selenium") is not None, "selenium is not installed (the [dev] extra)")
    _require(importlib.util.find_spec("voila") is not None, "voila is not installed")

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

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost",
               JUPYTER_CONFIG_DIR=str(tmp_path / "jconfig"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jruntime"),
               JUPYTER_DATA_DIR=str(tmp_path / "jdata"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    log = tmp_path / "voila.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
             "--Voila.port_retries=0", "--Voila.token=", "--show_tracebacks=True"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _listening(port):
            if server.poll() is not None:
                pytest.fail(f"voila exited with code {server.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"voila did not listen on port {port} within {SERVER_START_S} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}/", "log": log, "reference": reference, "chromium": chromium,
               "chromedriver": driver, "tmp": tmp_path}
    finally:
        # voila and its kernel run in their own session: end that process group (only it), then wait
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


def _browser(info: dict, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_manager(*args, **kwargs):  # Selenium Manager would look up (and maybe download) a driver
        raise AssertionError("Selenium Manager was called: the test must use the given chromedriver only")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_manager)
    monkeypatch.setenv("SE_OFFLINE", "true")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    options = webdriver.ChromeOptions()
    options.binary_location = info["chromium"]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
                 "--disable-quic", "--no-proxy-server", "--metrics-recording-only", "--mute-audio",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 "--window-size=1400,1600", f"--user-data-dir={info['tmp'] / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=info["chromedriver"], log_output=str(info["tmp"] / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(APP_READY_S)
    return driver


def test_query_builder_in_voila_with_headless_chromium(served_app, monkeypatch):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    info = served_app
    driver = _browser(info, monkeypatch)
    shot = info["tmp"] / "query_builder.png"

    def captions() -> list[str]:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".dermretr-grid .dermretr-caption")]

    def explain(what: str) -> str:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(shot))
        msg = driver.find_elements(By.CSS_SELECTOR, ".dermretr-message")
        return (f"{what}; app message: {msg[0].text if msg else '(none)'}; screenshot {shot}\n"
                f"voila log:\n{_tail(info['log'])}")

    try:
        driver.get(info["url"])
        try:
            WebDriverWait(driver, APP_READY_S, poll_frequency=1).until(
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
            WebDriverWait(driver, UPDATE_S, poll_frequency=0.5).until(lambda d: captions() != before)
        except TimeoutException:
            pytest.fail(explain(f"the grid did not change within {UPDATE_S} s of setting the veil to {wanted}"))
        text = driver.find_element(By.CSS_SELECTOR, ".dermretr-text textarea").get_attribute("value")
        assert text.startswith("same lesion but with"), text
        WebDriverWait(driver, UPDATE_S, poll_frequency=0.5).until(lambda d: len(captions()) == 6)
        message = driver.find_element(By.CSS_SELECTOR, ".dermretr-message").text
        assert "6 results for" in message and "error" not in message.lower(), message
        # "why?" under the first result: its attribution overlay and mask maps appear below the grid
        driver.find_elements(By.CSS_SELECTOR, ".dermretr-grid .dermretr-why")[0].click()
        try:
            WebDriverWait(driver, UPDATE_S, poll_frequency=0.5).until(
                lambda d: len(d.find_elements(By.CSS_SELECTOR, ".dermretr-detail img")) >= 2)
        except TimeoutException:
            pytest.fail(explain(f"no attribution figures within {UPDATE_S} s of pressing why?"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
