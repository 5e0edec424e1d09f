"""`nvscope web` in a real browser (Debian's Chromium, driven by Playwright) beside a real rig and host
on loopback: the page loads, the map gains pixels while the run goes, the final maps in the page are the
file's, and a run the rig stopped shows as stopped. Screenshots go to tmp_path (and docs/web-view.png
when NVSCOPE_WEB_SCREENSHOT is set)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nvscope.host.web.app import WebConfig, WebView, create_app
from nvscope.host.web.runfiles import open_swmr

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NX, NY = 6, 5
"""The scan: 30 pixels of 0.08 s each in real time (a 2.4 s run, twice)."""
DOCS_SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "web-view.png"

RIG_TOML = """\
seed = 5
[scan]
nx = {nx}
ny = {ny}
x0 = -0.4e-6
y0 = -0.3e-6
step = 150e-9
dwell_s = 0.08
slice_s = 0.05
[link]
spool_dir = "{spool}"
resend_after_s = 0.5
[sim]
pace = 1.0
[sim.sample]
background_rate = 2000.0
emitters = [{{ x = 0.0, y = 0.0 }}, {{ x = 0.3e-6, y = 0.15e-6 }}]
"""


def _browser_or_skip():
    if not CHROMIUM.exists():
        if os.environ.get("NVSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and NVSCOPE_REQUIRE_BROWSER=1")
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    return sync_playwright


def _start_rig(tmp: Path) -> tuple[subprocess.Popen, str]:
    cfg = tmp / "rig.toml"
    cfg.write_text(RIG_TOML.format(nx=NX, ny=NY, spool=(tmp / "spool").as_posix()))
    proc = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "rig", "--sim", "--bind", "tcp://127.0.0.1:*",
                             "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("bound tcp://127.0.0.1:"), line
    return proc, line.split()[1]


def _wait(page, js: str, timeout_s: float = 30.0):
    page.wait_for_function(js, timeout=timeout_s * 1000)
    return page.evaluate(js)


def test_the_page_follows_a_live_srm_run_and_shows_a_stopped_one(tmp_path, serve):
    sync_playwright = _browser_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    rig, endpoint = _start_rig(tmp_path)
    host = subprocess.Popen([sys.executable, "-m", "nvscope.host.cli", "host", "--connect", endpoint, "--out",
                             str(data), "--run", "srm", "--run", "srm"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = serve(create_app(WebView(WebConfig(data, endpoint))))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served.url)
            assert page.title() == "nvscope web"

            # run 1 fills in pixel by pixel
            first = _wait(page, "(() => { const r = Object.values(nvscope.runs).find(r => r.status === 'running'"
                                " && r.n_done >= 2); return r && nvscope.drawn[r.run_id] >= 2 && r.run_id; })()", 60)
            n1 = page.evaluate(f"nvscope.drawn['{first}']")
            time.sleep(0.8)
            n2, status = page.evaluate(f"[nvscope.drawn['{first}'], nvscope.runs['{first}'].status]")
            assert n2 > n1, (n1, n2, status)
            assert page.evaluate(f"nvscope.log.filter(e => e.run === '{first}' && e.type === 'pixels').length") >= 2

            _wait(page, "nvscope.health && nvscope.health.sources.rig.badge !== 'down'"
                        " && nvscope.health.sources.host.badge !== 'down'", 10)  # the rig answers; it has a host

            # the page loses its stream and reconnects: it resumes after the last event it saw, no snapshot
            page.evaluate("nvscope.source.close(); nvscope.connect()")
            n3 = page.evaluate(f"nvscope.drawn['{first}']")
            _wait(page, f"nvscope.drawn['{first}'] > {n3} || nvscope.runs['{first}'].status !== 'running'", 20)
            assert page.evaluate("nvscope.snapshots") == 1
            page.locator("#follow").uncheck()  # stay on run 1 when run 2 starts

            # its end: the page shows the file's run-end maps
            _wait(page, f"nvscope.runs['{first}'].status === 'completed' && nvscope.shownFrom['{first}'] === 'final'"
                        f" && nvscope.drawn['{first}'] === {NX * NY}", 60)  # drawn from the final event, not before
            shown = page.evaluate(f"nvscope.shown['{first}']")
            with open_swmr(data / f"{first}.h5") as f:
                assert f.attrs["exit_status"] == "completed"
                for name in ("pl_cps", "g2", "G2"):
                    stored = f[f"maps/{name}"][()]
                    in_page = np.array([[np.nan if v is None else v for v in row] for row in shown[name]])
                    assert in_page.shape == stored.shape == (NY, NX), name
                    assert np.array_equal(in_page, stored, equal_nan=True), name
                    assert np.isfinite(stored).sum() >= (NX * NY - 5 if name == "pl_cps" else 5), name  # g2: NaN in the dark
            page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / "web-view-completed.png"))
            if os.environ.get("NVSCOPE_WEB_SCREENSHOT"):
                page.screenshot(path=str(DOCS_SCREENSHOT))

            # run 2 starts; the rig is shut down under it: the run ends stopped
            second = _wait(page, f"(() => {{ const r = Object.values(nvscope.runs).find(r => r.run_id !== '{first}'"
                                 f" && r.status === 'running' && r.n_done >= 2); return r && r.run_id; }})()", 60)
            rig.send_signal(signal.SIGTERM)
            _wait(page, f"nvscope.runs['{second}'].status !== 'running'", 30)
            assert page.evaluate(f"nvscope.runs['{second}'].status") == "stopped"
            row = page.locator(f"#runs tr[data-run='{second}'][data-status='stopped']")
            assert row.count() == 1 and "stopped" in row.inner_text()
            assert "shut down" in page.evaluate(f"nvscope.runs['{second}'].reason")
            page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / "web-view.png"))
            assert (tmp_path / "web-view.png").stat().st_size > 10_000
            assert not errors, errors
            browser.close()
    finally:
        for proc in (rig, host):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (rig, host):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
