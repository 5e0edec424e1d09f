"""The web view's timings on loopback (issue 15), in one run, with Debian's Chromium driven by Playwright:

(1) First paint of the page (the browser's `first-contentful-paint`) and the time to the first map drawn
    (Plotly.js loaded from the app, the snapshot received, the heatmaps drawn), from navigation start,
    over a data folder holding a completed SRM run; median of a few fresh page loads. Target < 1 s.
(2) Per-pixel update latency: a run file written by the host's own writer (host/store.py RunStore, SWMR,
    flushed and fsynced per pixel as the host does) in another process at 100 pixels/s; for each pixel,
    the time from its flush (the row appears in the file) to the page receiving its delta event and to
    the page having drawn it. Target < 50 ms.
    Baseline, measured in the same run on a second file: the page fetches the whole run
    (/api/runs/<id>, what a view without deltas would do) every 100 ms and notes when each pixel first
    appears in a fetch; the ratio is the delta path's latency to the baseline's, and the bytes per update.

Run: .venv/bin/python benchmarks/bench_web.py [--pixels N] [--rate HZ] [--loads K]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from nvscope.host.web.app import PLOTLY_JS, WebConfig, WebView, create_app
from nvscope.host.web import TAIL_INTERVAL_S

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGETS = {"first_paint_s": 1.0, "pixel_latency_s": 0.050}

WRITER = r'''
import json, sys, time, numpy as np
from pathlib import Path
from nvscope.host.store import RunStore
from nvscope.proto.messages import Pixel, RunEnd, RunStart
path, nx, ny, rate, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
start = RunStart(run_id=path.stem, seq=0, n_pixels=nx * ny, grid_shape=np.array([ny, nx]))
store = RunStore.create(path, start)
store.add(start)
store.flush()
rng = np.random.default_rng(1)
print("ready", flush=True)
sys.stdin.readline()
times, t0 = [], time.monotonic()
for i in range(n):
    hist = rng.poisson(2.0, 215).astype(np.int64)
    store.add(Pixel(run_id=path.stem, seq=i + 1, index=i, ix=i % nx, iy=i // nx, dwell_s=0.01, n_a=int(rng.poisson(500)),
                    n_b=int(rng.poisson(500)), n_events=int(hist.sum()), hist=hist))
    store.flush()  # flushed and fsynced: now a reader can see the row
    times.append(time.time())
    time.sleep(max(t0 + (i + 1) / rate - time.monotonic(), 0))
store.finalize(RunEnd(run_id=path.stem, seq=n + 1, exit_status="completed", n_pixels=n),
               {"maps/pl_cps": np.ones((ny, nx))}, {})
store.close()
print(json.dumps(times), flush=True)
'''


def serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def start_writer(path: Path, nx: int, ny: int, rate: float, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(nx), str(ny), str(rate), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish_writer(proc: subprocess.Popen) -> np.ndarray:
    times = json.loads(proc.stdout.readline())
    assert proc.wait(timeout=30) == 0
    return np.array(times)


def first_paint(browser, url: str, loads: int, warm: bool = False) -> tuple[list[float], list[float], list[float]]:
    """(first-contentful-paint s, Plotly.js loaded s, first map drawn s) of `loads` page loads, each in a fresh
    browser context (nothing cached), or, `warm`, each the second load in its context (Plotly.js cached)."""
    fcp, fmap, plotly = [], [], []
    for _ in range(loads):
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(url)
        if warm:
            page.wait_for_function("nvscope.firstMap !== null", timeout=20000)
            page.wait_for_timeout(500)
            page.reload()
        page.wait_for_function("nvscope.firstMap !== null", timeout=20000)
        paint, first, loaded = page.evaluate(
            "[performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint').startTime, "
            "nvscope.firstMap - performance.timeOrigin, nvscope.plotlyAt - performance.timeOrigin]")
        fcp.append(paint / 1e3)
        plotly.append(loaded / 1e3)
        fmap.append(first / 1e3)
        ctx.close()
    return fcp, plotly, fmap


POLL_JS = """(runId) => {  // the baseline: fetch the whole run every 100 ms, note when each pixel first shows
  window.polled = {seen: {}, bytes: [], stop: false};
  const tick = async () => {
    if (window.polled.stop) return;
    const r = await fetch('/api/runs/' + runId); const text = await r.text(); const t = performance.timeOrigin + performance.now();
    window.polled.bytes.push(text.length);
    const d = JSON.parse(text); for (const i of (d.columns.index || [])) if (!(i in window.polled.seen)) window.polled.seen[i] = t;
    setTimeout(tick, 100);
  };
  tick();
}"""


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=400, help="pixels per live run (default 400)")
    ap.add_argument("--rate", type=float, default=100.0, help="pixels per second (default 100)")
    ap.add_argument("--loads", type=int, default=5, help="page loads for the first paint (default 5)")
    ap.add_argument("--tail-interval", type=float, default=TAIL_INTERVAL_S,
                    help=f"the view's tail interval, s (default {TAIL_INTERVAL_S:g}, the view's own)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    nx = 20
    ny = -(-args.pixels // nx)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        done = start_writer(data / "srm-00000000-000000-000000.h5", 20, 15, 1e4, 300)  # a completed run to show
        done.stdin.write("go\n")
        done.stdin.flush()
        finish_writer(done)
        view = WebView(WebConfig(data, tail_interval_s=args.tail_interval), status_source=lambda: None)
        published: dict[tuple[str, int], float] = {}  # (run, first row) -> when the delta was published
        publish = view.ring.publish

        def timed_publish(type_, data_):
            if type_ == "pixels":
                published[(data_["run_id"], data_["first"])] = time.time()
            return publish(type_, data_)

        view.ring.publish = timed_publish
        url, server, thread = serve(create_app(view))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            fcp, plotly_loaded, fmap = first_paint(browser, url, args.loads)
            _, warm_plotly, warm_map = first_paint(browser, url, args.loads, warm=True)

            results = {}
            for mode in ("deltas", "polling"):
                run_id = f"srm-99999999-00000{1 if mode == 'deltas' else 2}-{mode[:6]}"
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("nvscope.firstMap !== null", timeout=20000)
                writer = start_writer(data / f"{run_id}.h5", nx, ny, args.rate, args.pixels)
                page.wait_for_function(f"nvscope.runs['{run_id}'] !== undefined", timeout=20000)
                if mode == "polling":
                    page.evaluate("document.getElementById('follow').checked = false")
                    page.evaluate(POLL_JS, run_id)
                writer.stdin.write("go\n")
                writer.stdin.flush()
                flushed = finish_writer(writer)
                if mode == "deltas":
                    page.wait_for_function(f"nvscope.runs['{run_id}'].status === 'completed'", timeout=30000)
                    page.wait_for_timeout(300)
                    log = page.evaluate(f"nvscope.log.filter(e => e.run === '{run_id}' && e.type === 'pixels')")
                    recv = np.full(args.pixels, np.nan)
                    drawn = np.full(args.pixels, np.nan)
                    for e in log:
                        recv[e["first"]:e["first"] + e["n"]] = e["recv"] / 1e3
                        drawn[e["first"]:e["first"] + e["n"]] = (e["drawn"] or np.nan) / 1e3
                    pub = np.full(args.pixels, np.nan)
                    for e in log:
                        pub[e["first"]:e["first"] + e["n"]] = published[(run_id, e["first"])]
                    results["published"] = pub - flushed
                    results["recv"] = recv - flushed
                    results["drawn"] = drawn - flushed
                    results["events"] = len(log)
                else:
                    page.wait_for_function(f"Object.keys(window.polled.seen).length >= {args.pixels}", timeout=30000)
                    seen = page.evaluate("window.polled.seen")
                    polled = np.array([seen[str(i)] / 1e3 for i in range(args.pixels)])
                    results["polled"] = polled - flushed
                    results["poll_bytes"] = np.mean(page.evaluate("window.polled.bytes"))
                    page.evaluate("window.polled.stop = true")
                page.close()
            delta_bytes = np.mean([len(e.sse()) for e in view.ring.since(view.ring.oldest_seq - 1) or []
                                   if e.type == "pixels"])
            browser.close()
        server.should_exit = True
        thread.join(timeout=10)

    recv, drawn, polled = results["recv"], results["drawn"], results["polled"]
    print(f"web view on loopback, {args.pixels} pixels at {args.rate:g} pixels/s, tail interval "
          f"{args.tail_interval * 1e3:g} ms, Chromium headless")
    print(f"first contentful paint     median {np.median(fcp) * 1e3:7.1f} ms  (max {max(fcp) * 1e3:.1f}, "
          f"{args.loads} loads; target < {TARGETS['first_paint_s'] * 1e3:.0f} ms)")
    print(f"Plotly.js ({PLOTLY_JS.stat().st_size / 1e6:.1f} MB) loaded  median {np.median(plotly_loaded) * 1e3:7.1f} ms")
    print(f"first map drawn            median {np.median(fmap) * 1e3:7.1f} ms  (max {max(fmap) * 1e3:.1f})")
    print(f"  reload (Plotly.js cached): Plotly.js loaded {np.median(warm_plotly) * 1e3:.1f} ms, first map "
          f"{np.median(warm_map) * 1e3:.1f} ms (median)")
    for name, lat in (("pixel flushed -> published", results["published"]), ("pixel flushed -> received", recv), ("pixel flushed -> drawn", drawn),
                      ("baseline: whole run polled", polled)):
        ok = lat[np.isfinite(lat)]
        print(f"{name:27s}median {np.median(ok) * 1e3:7.1f} ms  p95 {pct(ok, 95) * 1e3:7.1f} ms  "
              f"p99 {pct(ok, 99) * 1e3:7.1f} ms  ({len(ok)} of {len(lat)} pixels)")
    print(f"delta events: {results['events']} for {args.pixels} pixels, {delta_bytes:.0f} bytes each; baseline fetch "
          f"{results['poll_bytes']:.0f} bytes on average (grows with the run)")
    r = np.nanmedian(drawn) / np.nanmedian(polled)
    print(f"ratio drawn/baseline (median): {r:.2f}; target per-pixel latency < {TARGETS['pixel_latency_s'] * 1e3:.0f} ms: "
          f"{'met' if np.nanmedian(drawn) < TARGETS['pixel_latency_s'] else 'NOT met'} (median drawn), "
          f"first paint {'met' if np.median(fcp) < TARGETS['first_paint_s'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
