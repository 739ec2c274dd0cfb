"""The explorer in a real browser (issue 12, point 3): Debian's Chromium driven by Playwright against a
JupyterLab server started here on 127.0.0.1 with a random port and a token, on a small run built in the test's
temporary folder. The notebook is opened with the clab kernel, all cells run, the frame slider moves (the
image must change), the degradation changes (the detections must be recomputed), a t-SNE point is clicked (its
frame must show), a video row is clicked (its worst frames are listed), no output is an error, and
screenshots of each step are written under the temporary folder (``screens/``).

Skipped, with the reason, only where Chromium or Playwright is not installed (``.ci/run`` installs Chromium
with apt; Playwright's Python package comes with the test extras; its own browser download is not used).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage"]
KERNEL_DISPLAY_NAME = "Python (clab)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_for(run_dir: Path, folder: Path, score_thr: float = 0.0) -> Path:
    """notebooks/06_explore.ipynb copied into ``folder`` with its parameters cell set to open ``run_dir``."""
    nb = json.loads((REPO_ROOT / "notebooks" / "06_explore.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = (f"RUN_DIR = {str(run_dir)!r}\nRUN_NAME = 'demo'\nRESULTS_DIR = 'results'\nDEVICE = 'cpu'\n"
                      f"SCORE_THR = {score_thr!r}\nEXPLORE_VIDEO = ''")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "06_explore.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    return path


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 (random free port, random token) serving ``root``, with its config,
    runtime and workspace folders under ``home``; stopped (its whole process group) by :meth:`stop`."""

    def __init__(self, root: Path, home: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1"}
        self.log = open(home / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", f"--port={self.port}",
             "--port-retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
             "--ServerApp.terminals_enabled=False", "--allow-root"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def launch_browser(playwright, profile: Path):
    """A headless Chromium (the Debian package) with a fresh profile folder and no background networking."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1500, "height": 1000})


# JavaScript run in the page (JupyterLab exposes its application as window.jupyterapp with the flag above)
_OUTPUT_TYPES = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const outputs = cell.toJSON().outputs || [];
    out.push({count: cell.toJSON().execution_count, types: outputs.map(o => o.output_type),
              errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)});
  }
  return out;
}"""


def open_and_run(page, lab: JupyterLab, name: str, timeout_ms: int = 240_000) -> None:
    """Open notebook ``name``, check its kernel is the clab one, run all cells and wait for the frame image."""
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}", wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=120_000)
    kernel = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayName")
    if kernel != KERNEL_DISPLAY_NAME:   # select the clab kernel explicitly
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.changeKernel({name: 'clab'})")
    page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayName "
                           f"=== {KERNEL_DISPLAY_NAME!r}", timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator("img.clab-frame-image").wait_for(state="visible", timeout=timeout_ms)
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.sessionContext.session.kernel "
                           "|| window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=timeout_ms)


def image_source(page) -> str:
    return page.locator("img.clab-frame-image").get_attribute("src") or ""


def status_text(page) -> str:
    return page.locator(".clab-status").inner_text()


@pytest.fixture(scope="module")
def browser_tools():
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[test]')")
    return sync_playwright


@pytest.mark.slow
def test_explorer_in_chromium(browser_tools, tmp_path):
    from test_explore import build_small_run

    params = build_small_run(tmp_path / "run")
    run_dir = Path(params["RESULTS_DIR"]) / params["RUN_NAME"]
    notebook_for(run_dir, tmp_path / "lab")
    screens = tmp_path / "screens"
    screens.mkdir()
    lab = JupyterLab(tmp_path / "lab", tmp_path)
    try:
        lab.wait()
        with browser_tools() as p:
            context = launch_browser(p, tmp_path / "chromium-profile")
            try:
                page = context.new_page()
                open_and_run(page, lab, "06_explore.ipynb")
                page.screenshot(path=str(screens / "1_all_cells_run.png"), full_page=True)
                outputs = page.evaluate(_OUTPUT_TYPES)
                assert outputs and all(o["count"] for o in outputs), outputs          # every cell ran
                assert not [e for o in outputs for e in o["errors"]], outputs
                assert "display_data" in outputs[-1]["types"] or "execute_result" in outputs[-1]["types"]
                body = page.locator("body").inner_text()
                assert "Error displaying widget" not in body and "Traceback" not in body

                # the frame slider: one step to the right (keyboard on its handle) -> another picture
                before = image_source(page)
                handle = page.locator(".clab-frame .noUi-handle")
                handle.focus()
                handle.press("ArrowRight")
                page.wait_for_function("(src) => document.querySelector('img.clab-frame-image').src !== src",
                                       arg=before, timeout=60_000)
                assert page.locator(".clab-frame .widget-readout").inner_text().strip() == "1"
                page.locator("img.clab-frame-image").screenshot(path=str(screens / "2_frame_1.png"))

                # the degradation: motion blur -> detections recomputed on demand for both models
                clean_status = status_text(page)
                assert clean_status.count("(saved)") == 2, clean_status     # clean frames: the run's own test
                page.select_option(".clab-kind select", "motion_blur")
                page.wait_for_function("() => document.querySelector('.clab-status').innerText.includes('computed')",
                                       timeout=120_000)
                degraded_status = status_text(page)
                assert degraded_status.count("computed in") == 2, degraded_status
                assert degraded_status != clean_status
                page.locator("img.clab-frame-image").screenshot(path=str(screens / "3_motion_blur.png"))

                # a click on a t-SNE point shows its frame beside the plot and in the viewer
                page.locator(".clab-tsne").scroll_into_view_if_needed()   # outputs render when in view
                points = page.locator(".clab-tsne .scatterlayer path.point")
                points.first.wait_for(state="attached", timeout=60_000)
                caption = page.locator(".clab-tsne .widget-html").last.inner_text()
                before = image_source(page)
                points.nth(points.count() // 2).click(force=True)
                page.wait_for_function("(src) => document.querySelector('img.clab-frame-image').src !== src",
                                       arg=before, timeout=60_000)
                assert page.locator(".clab-tsne .widget-html").last.inner_text() != caption
                page.locator(".clab-tsne").screenshot(path=str(screens / "4_tsne_click.png"))

                # a row of the per-video table jumps to that video's worst frames
                page.locator(".clab-video-table .clab-row").last.click()
                page.locator(".clab-worst-frames button").first.wait_for(timeout=60_000)
                page.screenshot(path=str(screens / "5_worst_frames.png"), full_page=True)
                assert not [e for o in page.evaluate(_OUTPUT_TYPES) for e in o["errors"]]
            finally:
                context.close()
    finally:
        lab.stop()
    for shot in ("1_all_cells_run.png", "2_frame_1.png", "3_motion_blur.png", "4_tsne_click.png",
                 "5_worst_frames.png"):
        assert (screens / shot).stat().st_size > 10_000, shot
