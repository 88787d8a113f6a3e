"""The dashboard in a real browser: `harness dashboard` serves the fixture database on a free local port,
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for Python; no browser download)
opens the decision page, waits for the decision, checks that no Streamlit exception is on the page and
saves a full-page screenshot.

CI installs Chromium (.ci/run) and playwright (pyproject's dev extra), so this runs there; elsewhere it is
skipped with the reason. HARNESS_SCREENSHOT_DIR=docs/img saves the screenshot as the README's picture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SCREENSHOT_NAME = "dashboard-decision.png"

try:
    import playwright.sync_api as pw_api
except ImportError:  # pragma: no cover - CI installs it
    pw_api = None

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
    pytest.mark.skipif(pw_api is None, reason="needs the playwright Python package (pip install -e '.[dev]')"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _harness() -> list[str]:
    script = Path(sys.executable).parent / "harness"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from harness.cli import main; main()"]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"harness dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer at {url} within {timeout_s:.0f} s")


@pytest.fixture()
def server(results_db: Path, tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
           "HOME": str(tmp_path / "home")}  # Streamlit and Chromium write nothing in the real home
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*_harness(), "dashboard", "--db", str(results_db), "--port", str(port), "--headless"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher and the Streamlit server it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.mark.timeout(240)
def test_decision_page_in_a_real_browser(server: str, results_db: Path, tmp_path: Path) -> None:
    from harness.store import ResultsStore

    assert pw_api is not None
    decision = ResultsStore(results_db).gate_decisions("rep-1")["decision"].iloc[0]
    shot = tmp_path / SCREENSHOT_NAME
    with pw_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{server}/?run=rep-1&page=Decision", timeout=60_000)
            page.get_by_text(f"Launch decision for pop: {decision}").wait_for(timeout=60_000)
            page.get_by_text("weight ESS · pop").wait_for(timeout=30_000)
            page.wait_for_timeout(1500)  # let the last elements settle
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "Traceback" not in page.inner_text("body")
            height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1280, "height": max(800, int(height))})
            page.wait_for_timeout(500)
            page.screenshot(path=str(shot), full_page=True)
            # another page, picked in the sidebar as a person would
            page.get_by_text("Metrics", exact=True).first.click()
            page.get_by_text("Lifts per metric").wait_for(timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            # st.dataframe draws on a canvas; its cells are in a hidden accessibility table
            page.locator('[data-testid="stDataFrame"] td:has-text("watch_time_s")').first.wait_for(
                state="attached", timeout=30_000)
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    target = os.environ.get("HARNESS_SCREENSHOT_DIR")
    if target:
        _save_small(shot, Path(target) / SCREENSHOT_NAME)


def _save_small(src: Path, dst: Path) -> None:
    """The screenshot as a 128-colour PNG (a few tens of kB), for the README."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    if not dst.exists():  # pragma: no cover
        shutil.copy(src, dst)
