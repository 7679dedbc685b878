"""A real JupyterLab in headless Chromium: run the embedding-explorer notebook, check that the
widgets and the plotly figure render, change the colour-by dropdown and check that the legend follows.

Needs Chromium (``/usr/bin/chromium`` or ``$WORKBENCH_CHROMIUM``) and the ``playwright`` package;
skipped otherwise. Nothing leaves 127.0.0.1: the server runs with a token in temporary Jupyter
folders, news and update checks are off, and the page aborts any request to another host. The
screenshot goes to the test's tmp folder and, when ``$WORKBENCH_ARTIFACTS`` is set, is copied there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_notebooks import NOTEBOOKS, TINY, kernel_env, with_parameters

from workbench.cli.lab import lab_command

NOTEBOOK = "05_embedding_explorer.ipynb"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    for cand in (os.environ.get("WORKBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file():
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_settings(folder: Path) -> None:
    """User settings that keep JupyterLab quiet and offline (no news, no update check)."""
    p = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    nb = folder / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    nb.parent.mkdir(parents=True, exist_ok=True)
    nb.write_text(json.dumps({"windowingMode": "none"}), encoding="utf-8")  # every cell in the DOM


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("JupyterLab did not start")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a random port and token, serving a copy of the notebook."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed")
    import nbformat

    root = tmp_path / "nb"
    root.mkdir()
    nb = nbformat.read(NOTEBOOKS / NOTEBOOK, as_version=4)
    with_parameters(nb, {"OUT": str(tmp_path / "out"), **TINY, "MAP_METHOD": "pca"})
    nbformat.write(nb, root / NOTEBOOK)
    env = {**os.environ, **kernel_env(tmp_path), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces")}
    lab_settings(tmp_path / "lab-settings")
    port = free_port()
    # the command `workbench lab` runs (token through JUPYTER_TOKEN, never on the command line)
    cmd, lab_env, token = lab_command(root, port=port, token=secrets.token_hex(24))
    cmd.append("--ServerApp.port_retries=0")
    env["JUPYTER_TOKEN"] = lab_env["JUPYTER_TOKEN"]
    log = open(tmp_path / "jupyterlab.log", "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _offline(route) -> None:
    host = urlparse(route.request.url).hostname
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def _accept_dialogs(page) -> None:
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if accept.count():
        accept.first.click()


def _run_all(page, tries: int = 4) -> None:
    """Menu Run → Run All Cells once the kernel is idle; again if nothing started (a request sent while
    the kernel connection was still being set up can be dropped)."""
    for _ in range(tries):
        page.wait_for_function("() => /Idle/.test(document.querySelector('#jp-main-statusbar')?.textContent || '')",
                               timeout=120_000)
        page.wait_for_timeout(1500)
        _accept_dialogs(page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        t0 = time.time()
        while time.time() - t0 < 30:
            _accept_dialogs(page)
            if any(p != "[ ]:" for p in _prompts(page)):
                return
            page.wait_for_timeout(500)
    pytest.fail("Run All Cells did not start the notebook")


def _prompts(page) -> list[str]:
    return [p.strip() for p in page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()]


def _all_cells_done(page) -> bool:
    prompts = _prompts(page)
    return bool(prompts) and all(p not in ("[ ]:", "[*]:", "") for p in prompts)


@pytest.mark.browser
@pytest.mark.slow
def test_jupyterlab_runs_the_explorer_notebook(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("Chromium not found (set WORKBENCH_CHROMIUM or install chromium)")
    base, token = lab
    shot = tmp_path / "jupyterlab-explorer.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.route("**/*", _offline)
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=90_000)
            _run_all(page)
            t0 = time.time()
            while not _all_cells_done(page):
                _accept_dialogs(page)        # e.g. "Select Kernel" when a racing first kernel died
                if time.time() - t0 > 400:
                    page.screenshot(path=str(shot.with_name("timeout.png")))
                    pytest.fail(f"the notebook did not finish: prompts {_prompts(page)}")
                page.wait_for_timeout(1000)
            page.wait_for_selector(".js-plotly-plot .legendtext", timeout=60_000)

            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count()
            stderr = " ".join(page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                              .all_inner_texts())
            assert errors == 0 and "Traceback" not in stderr, stderr[-2000:]
            assert "Error displaying widget" not in page.content()
            assert page.locator(".jupyter-widgets").count() > 5
            assert page.locator(".widget-button").count() >= 1
            assert page.locator(".js-plotly-plot").count() >= 2                   # run map + over training

            explorer = page.locator(".widget-vbox").filter(has=page.locator(".js-plotly-plot")).filter(
                has=page.locator(".widget-dropdown", has_text="Colour")).last
            plot = page.locator(".js-plotly-plot").first
            before = plot.locator(".legendtext").all_text_contents()
            assert "happiness" in before, before
            colour = page.locator(".widget-dropdown", has_text="Colour").first.locator("select")
            colour.select_option(label="identity")
            page.wait_for_function(
                "() => Array.from(document.querySelector('.js-plotly-plot').querySelectorAll('.legendtext'))"
                ".some(e => e.textContent.startsWith('id0'))", timeout=60_000)
            after = plot.locator(".legendtext").all_text_contents()
            assert after != before and all(t.startswith("id") for t in after), after
            assert explorer.count() >= 1
            # hovering a point sends the event back to Python, which shows that face and its labels
            point = plot.locator(".scatterlayer .point").nth(3)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.move(box["x"] - 30, box["y"] - 30)
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=8)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.widget-html-content'))"
                ".some(e => e.textContent.includes('identity:') && e.textContent.includes('path:'))",
                timeout=30_000)
            # a lasso around the first panel sends the selection back to Python: its faces fill the gallery
            plot.evaluate("e => e.scrollIntoView({block: 'center'})")
            page.mouse.move(5, 5)
            page.wait_for_timeout(300)
            drag = plot.locator(".draglayer .nsewdrag").first.bounding_box()
            x0, y0 = drag["x"] + 15, drag["y"] + 15
            x1, y1 = drag["x"] + drag["width"] - 15, drag["y"] + drag["height"] - 15
            page.mouse.move(x0, y0)
            page.mouse.down()
            for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
                page.mouse.move(x, y, steps=10)
            page.mouse.up()
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.widget-html-content'))"
                ".some(e => /\\b(\\d+) selected/.test(e.textContent) && !e.textContent.includes('6 selected'))",
                timeout=30_000)
            colour.evaluate("e => e.closest('.widget-vbox').scrollIntoView({block: 'start'})")
            page.wait_for_timeout(800)
            page.screenshot(path=str(shot), full_page=False)
        except BaseException:
            page.screenshot(path=str(shot.with_name("failure.png")))
            raise
        finally:
            browser.close()
    assert shot.is_file() and shot.stat().st_size > 10_000
    dest = os.environ.get("WORKBENCH_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(dest) / shot.name)
