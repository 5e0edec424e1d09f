"""The host's latencies with analysis beside the I/O path (issue 10, "Numbers to reach"), in one run:

(1) The demo's field (a window around its two close emitters, or all of it with --full) scanned by
    `nvscope rig --sim` in its own process, paced in real time (`[sim] pace = 1`), with fixed and
    with adaptive dwell, the host using the shipped CNN:
    - pixel arrival -> stored on-line g2 (the file's pixels/g2_latency_s): median, p99, and the ten
      pixels after the shape context first holds MIN_CONTEXT_EVENTS events (the first shape fit);
    - adaptive dwell partial_pixel -> partial_g2, host side (received -> sent): p99;
    - wall time of each scan (run_start to run_end at the host) against its photon time (sum of dwell);
    - the first pixel after the rig printed `bound` (from the start command) against the tenth, and
      split: the run's start (start command -> run_start at the host) and each pixel's overhead
      (time between arrivals minus its dwell) for the first pixel against the median of pixels 2-10.
    Baselines: the targets, and the CNN's bare inference time per pixel measured here.
(2) A fake rig in its own process (no GIL shared with the host) measures the acknowledgement and
    partial_g2 round trips of a streaming run while the host runs (a) the run-end SRM analysis of a
    600-pixel run and (b) a VQNS fit (`analyse_curves` in the host's worker processes, as the VQNS
    controller runs it; `--fit-in-thread`: on a thread of the host, as before issue 10's second pass);
    baseline: the same round trips with nothing else running, in the same process.

Run: .venv/bin/python benchmarks/bench_latency.py [--full] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

TARGETS = {"g2_median_s": 5e-3, "g2_p99_s": 20e-3, "answer_p99_s": 5e-3, "adaptive_wall_over_photons": 1.05,
           "ack_p99_s": 20e-3}
WINDOW = {"nx": 9, "ny": 5, "x0": -0.28e-6, "y0": -0.14e-6}
"""The part of the demo's field scanned by default: the two emitters 300 nm apart (45 pixels)."""
FIXED_DWELL_S = 0.3


def pct(x, q: float) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else float("nan")


def ms(x: float) -> str:
    return f"{1e3 * x:7.2f} ms"


# ---------------------------------------------------------------------------------------- (1) paced scans
def paced_scan(out: Path, adaptive: bool, scan: dict, estimator) -> dict:
    """One SRM run of the demo's rig (its own process, pace 1); host-side timings and the file."""
    from nvscope.host.daemon import HostDaemon
    from nvscope.host.demo import running_rig, write_rig_config
    from nvscope.host.run_kinds import host_analyses, new_run_id
    from nvscope.proto.messages import Pixel, RunEnd, RunStart

    name = "adaptive" if adaptive else "fixed"
    cfg = write_rig_config(out / f"rig-{name}.toml", out / f"spool-{name}", adaptive, pace=1.0, scan=scan)
    t_bound = time.monotonic()
    with running_rig(cfg, out / f"rig-{name}.log") as (rig, endpoint):
        t_bound = time.monotonic()
        host = HostDaemon(endpoint, out, host_analyses(estimator), g2_estimator=estimator)
        arrivals: dict[str, list[float]] = {"pixel": [], "run_start": [], "run_end": []}

        def observe(msg):
            if isinstance(msg, (Pixel, RunStart, RunEnd)):
                arrivals[msg.kind].append(time.monotonic())
        host.observers.append(observe)
        run_id = new_run_id("srm")
        try:
            t_start = time.monotonic()
            host.start_run(run_id, "srm")
            deadline = time.monotonic() + 1200
            while not host.stats.finished and time.monotonic() < deadline:
                host.step(100)
                if rig.poll() is not None:
                    raise RuntimeError(f"rig exited {rig.returncode}; see {out}/rig-{name}.log")
        finally:
            host.close()
    with h5py.File(out / f"{run_id}.h5", "r") as f:
        latency = f["pixels/g2_latency_s"][()]
        n_events = f["pixels/n_events"][()]
        photons_s = float(f.attrs["total_dwell_s"])
        dwell = f["pixels/dwell_s"][()]
        attrs = {k: f.attrs[k] for k in ("g2_model_sha256", "g2_model_commit") if k in f.attrs}
    from nvscope.host.srm.online_g2 import MIN_CONTEXT_EVENTS
    first_fit = int(np.searchsorted(np.cumsum(n_events), MIN_CONTEXT_EVENTS))
    px = np.array(arrivals["pixel"])
    per_pixel = np.diff(np.r_[t_start, px])
    overhead = np.diff(np.r_[arrivals["run_start"][0], px[:10]]) - dwell[:10]
    return {"name": name, "n": len(latency), "latency": latency, "after_first_fit": latency[first_fit:first_fit + 10],
            "first_fit_row": first_fit, "answers": np.array(host.stats.answer_latency_s),
            "acks": np.array(host.stats.ack_latency_s),
            "wall_s": arrivals["run_end"][0] - arrivals["run_start"][0], "photons_s": photons_s,
            "first_pixel_s": per_pixel[0], "tenth_pixel_s": per_pixel[9], "dwell_first": dwell[0],
            "dwell_tenth": dwell[9], "bound_to_start_s": t_start - t_bound, "attrs": attrs,
            "start_s": arrivals["run_start"][0] - t_start, "overhead_first_s": overhead[0],
            "overhead_rest_s": float(np.median(overhead[1:]))}


def cnn_inference_s(estimator) -> tuple[float, float]:
    """The CNN's bare time (s) per pixel for one pixel and per pixel in a batch of 64 (features included)."""
    from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, singles_base
    rng = np.random.default_rng(0)
    base = singles_base(5e4, 5e4, 1.0)
    h = rng.poisson(expected_histogram(NV_DEFAULT_SHAPE, 0.3, base), size=(64, 215))
    one = lambda: estimator.estimate(h[:1], NV_DEFAULT_SHAPE, np.full(1, base))  # noqa
    many = lambda: estimator.estimate(h, NV_DEFAULT_SHAPE, np.full(64, base))  # noqa
    for f in (one, many):
        f()
    t0 = time.perf_counter()
    for _ in range(200):
        one()
    t1 = time.perf_counter()
    for _ in range(20):
        many()
    t2 = time.perf_counter()
    return (t1 - t0) / 200, (t2 - t1) / (20 * 64)


# ---------------------------------------------------------------------------------------- (2) the probe
def probe(n_big: int) -> None:
    """The fake rig (its own process): bind, print the endpoint, wait for hello; run A (n_big pixels,
    run_end) then stream run B, timing each ack and partial_g2 until run A's run_end is acknowledged
    (its analysis written) and for as long again after; then stream run C until the host stops it (its
    VQNS-like fit ended). Prints one JSON line of round trips (s) by phase."""
    import zmq

    from nvscope.models.g2.model import NV_DEFAULT_SHAPE, expected_histogram, singles_base
    from nvscope.proto import decode, encode
    from nvscope.proto.endpoints import rig_socket
    from nvscope.proto.messages import Ack, PartialG2, PartialPixel, Pixel, RunEnd, RunStart, Stop

    ctx = zmq.Context()
    sock = rig_socket(ctx, "tcp://127.0.0.1:*")
    print(sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    peer = sock.recv_multipart()[0]
    rng = np.random.default_rng(1)
    mean = expected_histogram(NV_DEFAULT_SHAPE, 0.3, singles_base(3e4, 3e4, 0.3))

    def pixel(run, seq, partial=False):
        hist = rng.poisson(mean).astype(np.int64)
        f = dict(run_id=run, seq=seq, index=seq - 1, dwell_s=0.3, n_a=30000, n_b=30000, n_events=int(hist.sum()),
                 hist=hist)
        return PartialPixel(**f) if partial else Pixel(ix=(seq - 1) % 30, iy=(seq - 1) // 30, **f)

    inbox: list = []

    def send(msg):
        sock.send_multipart([peer, *encode(msg)])

    def wait(pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in inbox:
                if pred(m):
                    inbox.remove(m)
                    return m
            if sock.poll(max(1, int(1000 * (deadline - time.monotonic())))):
                inbox.append(decode(sock.recv_multipart()[1:]))
        raise TimeoutError("no reply")

    def seen(pred):
        while sock.poll(0):
            inbox.append(decode(sock.recv_multipart()[1:]))
        return any(pred(m) for m in inbox)

    def stream(run, seq, until, rtt):
        while not until():
            t0 = time.monotonic()
            send(pixel(run, seq))
            wait(lambda m, s=seq: isinstance(m, Ack) and m.run_id == run and m.seq == s)
            rtt["ack"].append(time.monotonic() - t0)
            t0 = time.monotonic()
            send(pixel(run, seq + 1, partial=True))
            wait(lambda m, s=seq: isinstance(m, PartialG2) and m.run_id == run and m.seq == s + 1)
            rtt["answer"].append(time.monotonic() - t0)
            seq += 1
            time.sleep(0.005)
        return seq

    grid = np.array([(n_big + 29) // 30, 30])
    send(RunStart(run_id="srm-probe-a", seq=0, run_kind="srm", n_pixels=n_big, grid_shape=grid))
    for s in range(1, n_big + 1):
        send(pixel("srm-probe-a", s))
    wait(lambda m: isinstance(m, Ack) and m.run_id == "srm-probe-a" and m.seq == n_big, 60)
    t_end = time.monotonic()
    send(RunEnd(run_id="srm-probe-a", seq=n_big + 1, n_pixels=n_big))
    send(RunStart(run_id="srm-probe-b", seq=0, run_kind="srm", n_pixels=10000, grid_shape=np.array([100, 100])))
    during = {"ack": [], "answer": []}
    a_done = lambda m: isinstance(m, Ack) and m.run_id == "srm-probe-a" and m.seq == n_big + 1  # noqa: E731
    seq = stream("srm-probe-b", 1, lambda: seen(a_done), during)
    analysis_s = time.monotonic() - t_end
    idle = {"ack": [], "answer": []}
    t_idle = time.monotonic()
    seq = stream("srm-probe-b", seq, lambda: time.monotonic() - t_idle > max(1.0, analysis_s), idle)
    send(RunStart(run_id="srm-probe-c", seq=0, run_kind="srm", n_pixels=10000, grid_shape=np.array([100, 100])))
    fit = {"ack": [], "answer": []}
    t_fit = time.monotonic()
    stream("srm-probe-c", 1, lambda: seen(lambda m: isinstance(m, Stop) and m.run_id == "srm-probe-c"), fit)
    print(json.dumps({"during_analysis": during, "idle": idle, "during_fit": fit, "analysis_s": analysis_s,
                      "fit_s": time.monotonic() - t_fit}), flush=True)
    sock.close()
    ctx.term()


def fit_then_stop(host, run_id: str, in_thread: bool = False) -> None:
    """One VQNS analysis step (`analyse_curves`) of FID, echo, CPMG-4 curves of the demo's noise, in
    the host's worker processes as the VQNS controller runs it (`in_thread`: on the calling thread),
    then post Stop."""
    from nvscope.firmware_sim.qubit import LorentzianNoise, NoiseSpectrum, shot_noise_coherence
    from nvscope.models.vqns.analysis import analyse_curves
    from nvscope.models.vqns.data import coherence_set
    from nvscope.models.vqns.fit import FitConfig
    from nvscope.proto.messages import Stop

    spectrum = NoiseSpectrum((LorentzianNoise(a=6e10, w0=0.0, g=1.2566e6),
                              LorentzianNoise(a=1.5e10, w0=7.5398e6, g=1.885e5)))
    t = np.geomspace(0.1e-6, 40e-6, 40)
    rng = np.random.default_rng(2)
    ns = [0, 1, 4]
    curves = [shot_noise_coherence(spectrum, n, t, 10_000_000, rng) for n in ns]
    data = coherence_set(np.array(ns), np.tile(t, (3, 1)), np.array([c for c, _ in curves]),
                         np.array([s for _, s in curves]))
    t0 = time.perf_counter()
    args = (data, FitConfig(), [2, 8, 16])
    analyse_curves(*args) if in_thread else host.processes.run(analyse_curves, *args)
    host.fit_s = time.perf_counter() - t0
    host.command(Stop, run_id, reason="fit done")  # from this thread: through post


def probe_run(out: Path, estimator, n_big: int, fit_in_thread: bool = False) -> dict:
    """(2): the probe process against a host in this process; its JSON result."""
    from nvscope.host.daemon import HostDaemon
    from nvscope.host.run_kinds import host_analyses
    from nvscope.proto.messages import RunStart

    proc = subprocess.Popen([sys.executable, __file__, "--probe", str(n_big)], stdout=subprocess.PIPE, text=True)
    endpoint = proc.stdout.readline().strip()
    host = HostDaemon(endpoint, out / "probe", host_analyses(estimator), g2_estimator=estimator)
    host.fit_s = float("nan")

    def on_start(msg):
        if isinstance(msg, RunStart) and msg.run_id == "srm-probe-c":
            threading.Thread(target=fit_then_stop, args=(host, msg.run_id, fit_in_thread), daemon=True).start()
    host.observers.append(on_start)
    result = None
    try:
        while proc.poll() is None:
            host.step(5)
        result = json.loads(proc.stdout.readline())
    finally:
        host.close()
    result["host_fit_s"] = host.fit_s
    return result


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the demo's whole field (about 10 min in real time)")
    ap.add_argument("--out", help="folder for the run files (default: a temporary one)")
    ap.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--switch", type=float, help="sys.setswitchinterval for the host (s)")
    ap.add_argument("--skip-scans", action="store_true", help="only the probe (part 2)")
    ap.add_argument("--fit-in-thread", action="store_true",
                    help="run the probe's VQNS fit on a host thread instead of its worker processes")
    args = ap.parse_args()
    if args.probe:
        probe(args.probe)
        return
    from nvscope.host.run_kinds import default_g2_estimator

    out = Path(args.out or tempfile.mkdtemp(prefix="bench-latency-"))
    out.mkdir(parents=True, exist_ok=True)
    estimator = default_g2_estimator()
    one, batched = cnn_inference_s(estimator)
    print(f"bench_latency -> {out}")
    print(f"baseline: CNN bare inference {1e6 * one:.0f} us for one pixel, {1e6 * batched:.0f} us per pixel in 64")
    if not args.skip_scans:
        scan = {} if args.full else {**WINDOW, "dwell_s": FIXED_DWELL_S}
        for adaptive in (False, True):
            r = paced_scan(out, adaptive, scan, estimator)
            lat = r["latency"]
            print(f"({r['name']} dwell, {r['n']} pixels, pace 1)")
            print(f"  arrival -> stored g2: median {ms(pct(lat, 50))} ({pct(lat, 50) / TARGETS['g2_median_s']:.2f} x "
                  f"target 5 ms; {pct(lat, 50) / one:.0f} x one bare inference), p99 {ms(pct(lat, 99))} "
                  f"({pct(lat, 99) / TARGETS['g2_p99_s']:.2f} x target 20 ms), max {ms(np.nanmax(lat))}")
            after = r["after_first_fit"]
            print(f"  the 10 pixels from row {r['first_fit_row']} (first shape fit due): median {ms(pct(after, 50))}, "
                  f"max {ms(np.nanmax(after)) if len(after) else 'n/a'}")
            print(f"  acks (host side, received -> sent): median {ms(pct(r['acks'], 50))}, "
                  f"p99 {ms(pct(r['acks'], 99))}")
            print(f"  wall {r['wall_s']:.2f} s vs photon time {r['photons_s']:.2f} s: ratio "
                  f"{r['wall_s'] / r['photons_s']:.3f} (target <= 1.05 for adaptive)")
            print(f"  first pixel after bound {r['first_pixel_s']:.3f} s (dwell {r['dwell_first']:.2f} s) vs the tenth "
                  f"{r['tenth_pixel_s']:.3f} s (dwell {r['dwell_tenth']:.2f} s): ratio "
                  f"{r['first_pixel_s'] / r['tenth_pixel_s']:.2f} (rig started {r['bound_to_start_s']:.2f} s before)")
            print(f"    of which: start command -> run_start {ms(r['start_s'])}; overhead beyond the dwell: first "
                  f"pixel {ms(r['overhead_first_s'])}, pixels 2-10 (median) {ms(r['overhead_rest_s'])}")
            if len(r["answers"]):
                a = r["answers"]
                print(f"  partial_pixel -> partial_g2 (host side, {len(a)} answers): median {ms(pct(a, 50))}, "
                      f"p99 {ms(pct(a, 99))} ({pct(a, 99) / TARGETS['answer_p99_s']:.2f} x target 5 ms), "
                      f"max {ms(a.max())}")
            print(f"  run file: g2 model sha256 {str(r['attrs'].get('g2_model_sha256', '?'))[:12]}..., "
                  f"trained at {r['attrs'].get('g2_model_commit', '?')}")
    if args.switch:
        sys.setswitchinterval(args.switch)
    p = probe_run(out, estimator, 600, args.fit_in_thread)
    print("(fake rig in its own process: round trips of a streaming run; baseline: nothing else running)")
    for phase, label in (("idle", "idle (baseline)"),
                         ("during_analysis",
                          f"during the run-end SRM analysis of 600 pixels ({p['analysis_s']:.2f} s)"),
                         ("during_fit", f"during a VQNS fit ({p['host_fit_s']:.2f} s, "
                                        f"{'on a host thread' if args.fit_in_thread else 'worker process'})")):
        ack, ans = np.array(p[phase]["ack"]), np.array(p[phase]["answer"])
        base_ack, base_ans = pct(p["idle"]["ack"], 99), pct(p["idle"]["answer"], 99)
        print(f"  {label}: {len(ack)} acks p50 {ms(pct(ack, 50))} p99 {ms(pct(ack, 99))} "
              f"({pct(ack, 99) / base_ack:.1f} x idle, {pct(ack, 99) / TARGETS['ack_p99_s']:.2f} x target 20 ms); "
              f"partial_g2 p50 {ms(pct(ans, 50))} p99 {ms(pct(ans, 99))} ({pct(ans, 99) / base_ans:.1f} x idle)")


if __name__ == "__main__":
    main()
