"""What the browser tests share: finding Chromium, starting a Jupyter server, driving headless Chromium offline.

Nothing is downloaded: Selenium is given the driver's path (so Selenium Manager never runs - :func:`browser`
makes sure of it), and Chromium runs with background networking off and every host name but 127.0.0.1
unresolvable.  :func:`require` skips a test when Chromium or chromedriver (Debian packages, outside pip's reach)
are missing, except when the environment variable ``CI`` is set: then it fails, so that CI cannot skip a browser
test silently; a missing pip package of the ``[dev]`` extra (selenium, voila, jupyterlab) always fails.
``DERMRETR_CHROMIUM`` and ``DERMRETR_CHROMEDRIVER`` point at other binaries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fixtures import skip_unless_ci

CHROMIUM = os.environ.get("DERMRETR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DERMRETR_CHROMEDRIVER", "/usr/bin/chromedriver")
SERVER_START_S = 120  # the server listening
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
    "--disable-quic", "--no-proxy-server", "--metrics-recording-only", "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def require(ok: bool, reason: str) -> None:
    """Chromium and chromedriver are Debian packages: skipped without them, except under CI (.ci/run installs them)."""
    if not ok:
        skip_unless_ci(reason, ".ci/run installs chromium and chromium-driver")


def executable(path: str, name: str) -> str | None:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return shutil.which(name)


def chromium_and_driver(*modules: str) -> tuple[str, str]:
    """Chromium and chromedriver's paths; skips (fails under CI) when they, selenium or a module is missing."""
    chromium = executable(CHROMIUM, "chromium")
    driver = executable(CHROMEDRIVER, "chromedriver")
    require(chromium is not None, f"Chromium not found ({CHROMIUM}; Debian package chromium)")
    require(driver is not None, f"chromedriver not found ({CHROMEDRIVER}; Debian package chromium-driver)")
    for module in ("selenium", *modules):  # pip packages of the [dev] extra: required, never skipped
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed; pip install -e '.[dev]' brings it")
    assert chromium is not None and driver is not None
    return chromium, driver


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def server_env(tmp: Path) -> dict[str, str]:
    """This environment without proxies, with every Jupyter and IPython folder under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost",
               JUPYTER_CONFIG_DIR=str(tmp / "jconfig"), JUPYTER_RUNTIME_DIR=str(tmp / "jruntime"),
               JUPYTER_DATA_DIR=str(tmp / "jdata"),
               IPYTHONDIR=str(tmp / "ipython"))
    return env


@contextlib.contextmanager
def serving(name: str, argv: Sequence[str], port: int, cwd: Path, env: dict[str, str], log: Path,
            start_s: float = SERVER_START_S) -> Iterator[subprocess.Popen]:
    """Run a server (``argv``) in its own session until it listens on ``port``; end that process group at the end."""
    with open(log, "wb") as out:
        server = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + start_s
        while not listening(port):
            if server.poll() is not None:
                pytest.fail(f"{name} exited with code {server.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not listen on port {port} within {start_s} s:\n{tail(log)}")
            time.sleep(0.5)
        yield server
    finally:
        # the server and its kernels run in their own session: end that process group (only it), then wait
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


def browser(info: dict, monkeypatch, page_load_s: float, window: str = "1400,1600"):
    """Headless Chromium through ``info["chromedriver"]``, offline but for 127.0.0.1, its profile in ``info["tmp"]``."""
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
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window}", f"--user-data-dir={info['tmp'] / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=info["chromedriver"], log_output=str(info["tmp"] / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(page_load_s)
    return driver
