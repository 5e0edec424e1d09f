"""`nvscope demo`: a simulated rig and a host on loopback, a scan end to end, files and figures.

The antibunching field is scanned twice, with a fixed dwell and with adaptive dwell (a second rig
process whose configuration differs only in the adaptive lines), to compare total time and g2 errors.
The NV-MRI scan runs on two simulated samples (one dark spin, a pair), a rig process each: the
simulated dark spins are part of the rig's configuration.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np


from nvscope.models.g2.reasons import G2_REASONS
from nvscope.rt.kernels.pulses import sequence_name

from .daemon import HostDaemon
from .srm.dwell_figure import dwell_figure
from .run_kinds import default_g2_estimator, host_analyses, new_run_id
from .vqns.loop import VqnsController, VqnsLoopConfig

log = logging.getLogger(__name__)

DEMO_RIG_TOML = """\
# The demo's simulated rig: three NV-like emitters, two of them 300 nm apart, on a weak background.
seed = 20261123

[scan]
{scan}
{adaptive}
[link]
spool_dir = "{spool}"

[coherence]
repetitions = 10_000_000

[sim]
pace = {pace}

# The qubit's noise: a broad low-frequency bath and a narrow line at 1.2 MHz that echo and CPMG-2
# hardly see (it changes them by < 0.004) but CPMG-n near n = 2 x 1.2 MHz x t sees strongly.
[[sim.noise]]
kind = "lorentzian"
a = 6e10
w0 = 0.0
g = 1.2566e6
[[sim.noise]]
kind = "lorentzian"
a = 1.5e10
w0 = 7.5398e6
g = 1.885e5

[sim.sample]
background_rate = 3000.0
emitters = [
    {{ x = -0.15e-6, y = 0.0 }},
    {{ x = 0.15e-6, y = 0.0 }},
    {{ x = 0.45e-6, y = -0.35e-6 }},
]
"""

DEMO_SCAN: dict[str, object] = {"nx": 21, "ny": 15, "x0": -0.70e-6, "y0": -0.56e-6, "step": 70e-9, "dwell_s": 1.0,
                                "slice_s": 0.1, "histogram_mode": "allpairs"}
"""The demo's [scan] table: a 21 x 15 raster, 70 nm steps, 1 s per pixel in 0.1 s slices."""

ADAPTIVE_TARGET = 0.2
ADAPTIVE_MAX_DWELL_S = 1.0
DEMO_ADAPTIVE_SCAN = f"""\
# adaptive dwell: each pixel until its g2(0) error is below the target, at most the fixed scan's dwell
adaptive_g2_std = {ADAPTIVE_TARGET}
max_dwell_s = {ADAPTIVE_MAX_DWELL_S}
reply_timeout_s = 0.25
"""
"""The adaptive scan's lines in [scan]: a pixel ends when the g2(0) error predicted from its rate
reaches the target, or as soon as that error predicted at the maximum dwell is above it (background
and dim pixels), else at the maximum, the fixed scan's dwell."""


DEMO_MRI_TOML = """\
# The demo's simulated NV-MRI rig: the NV 10 nm deep under a magnetic tip, the [mri] scan at its
# defaults (a 21 x 21 grid at 1 nm, the PSF at four gaps, a DEER plane at 20 nm), and {what}.
seed = 20261124

[link]
spool_dir = "{spool}"

[mri]
# The echo's weight 1 - cos(pi J tau) of a spin 4.5 nm above the NV (J about -1 MHz) is ~2 at 1 us
# (the default 2 us would put pi J tau near 2 pi, where the spin all but vanishes from the map).
tau_s = 1e-6

[sim]
pace = 0.0

[sim.mri]
dark_spins = {spins}
"""

DEMO_MRI_SAMPLES: dict[str, list[list[float]]] = {
    "one dark spin": [[1.0e-9, -0.5e-9, -5.5e-9]],
    "a pair 1 nm apart": [[-0.5e-9, 0.5e-9, -5.5e-9], [0.5e-9, 0.5e-9, -5.5e-9]],
}
"""The demo's NV-MRI samples: dark spins (m, lab frame: surface z = 0, the NV at z = -10 nm), one rig each."""


def write_mri_rig_config(path: Path, spool: Path, what: str, spins: list[list[float]]) -> Path:
    """The demo's NV-MRI rig TOML at `path` with the dark spins `spins` (m, lab frame)."""
    path.write_text(DEMO_MRI_TOML.format(spool=spool.as_posix(), what=what, spins=json.dumps(spins)))
    return path


def write_rig_config(path: Path, spool: Path, adaptive: bool, pace: float = 0.0,
                     scan: dict[str, object] | None = None) -> Path:
    """The demo's rig TOML (fixed or adaptive dwell) at `path`; `pace` 1 acquires in real time (0: as
    fast as the simulator computes); `scan` replaces entries of the demo's [scan] table."""
    table = {**DEMO_SCAN, **(scan or {})}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    path.write_text(DEMO_RIG_TOML.format(spool=spool.as_posix(), scan=lines, pace=float(pace),
                                         adaptive=DEMO_ADAPTIVE_SCAN if adaptive else ""))
    return path


def start_rig(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start `nvscope rig --sim` as its own process on an ephemeral loopback port; return it and its endpoint."""
    cmd = [sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://127.0.0.1:*",
           "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_path.open("w"), text=True)
    line = proc.stdout.readline().strip()  # "bound tcp://127.0.0.1:PORT"
    if not line.startswith("bound "):
        proc.wait(timeout=10)
        raise RuntimeError(f"the rig did not start (exit {proc.returncode}); see {log_path}")
    return proc, line.split(" ", 1)[1]


@contextmanager
def running_rig(config: Path, log_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A rig process for the duration of the block (terminated, or killed, at its end)."""
    rig, endpoint = start_rig(config, log_path)
    try:
        yield rig, endpoint
    finally:
        rig.terminate()
        try:
            rig.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rig.kill()


@contextmanager
def rig_and_host(config: Path, log_path: Path, out: Path, estimator) -> Iterator[tuple[HostDaemon, subprocess.Popen]]:
    """A rig process and a host daemon connected to it, writing into `out`, for the duration of the block."""
    with running_rig(config, log_path) as (rig, endpoint):
        host = HostDaemon(endpoint, out, host_analyses(estimator), g2_estimator=estimator)
        try:
            yield host, rig
        finally:
            host.close()


def run_to_end(host: HostDaemon, run_id: str, kind: str, rig: subprocess.Popen, timeout_s: float,
               then=None, attrs: dict[str, object] | None = None) -> str:
    """Start one run (its file gets `attrs`; then call `then()`), serve the host (on this thread, its
    I/O thread) until the run has ended and been analysed."""
    host.start_run(run_id, kind, attrs)
    if then is not None:
        then()
    deadline = time.monotonic() + timeout_s
    while not any(r == run_id for r, _ in host.stats.finished):
        if rig.poll() is not None:
            raise RuntimeError(f"the rig exited with code {rig.returncode} during run {run_id}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not end within {timeout_s:.0f} s")
        host.step(100)
    return run_id


def summarize_srm(path: Path) -> str:
    """A few lines a person reads in the morning: what was scanned, how fast, what came out."""
    with h5py.File(path, "r") as f:
        n = f["pixels/index"].shape[0]
        dwell = f.attrs["total_dwell_s"]
        g2, std = f["maps/g2"][()], f["maps/g2_std"][()]
        pl = f["maps/pl_cps"][()]
        latency = f["pixels/g2_latency_s"][()]
        method = f.attrs.get("g2_method", "?")
        brightest = np.unravel_index(np.nanargmax(pl), pl.shape)
        bright = pl > 0.5 * np.nanmax(pl)
        return (f"  {path.name}: {n} pixels, {dwell:.1f} s of photons, status {f.attrs['exit_status']}\n"
                f"  PL peak {np.nanmax(pl) / 1e3:.1f} kcps; g2(0) at the brightest pixel "
                f"{g2[brightest]:.3f} +- {std[brightest]:.3f}; median reported g2(0) std over the pixels above half "
                f"the peak PL {np.nanmedian(std[bright]):.3f} (g2 by {method}); on line, arrival to stored g2: "
                f"median {1e3 * np.nanmedian(latency):.0f} ms, max {1e3 * np.nanmax(latency):.0f} ms\n"
                f"  figure: {path.with_suffix('.png')}")


BRIGHT_FRACTIONS = (0.5, 0.1)
"""The demo's g2 errors are over the pixels whose PL (in the fixed scan) is above these fractions of its peak."""


def simulated_truth_g2(path: Path) -> np.ndarray:
    """The simulator's true g2(0) at each pixel row of a finished SRM run (what the histogram over the
    measured singles shows, the detectors included), as the simulated rig recorded it in the run's
    configuration (`sim_truth.srm_true_g2_zero`, by pixel index); NaN where it recorded none."""
    with h5py.File(path, "r") as f:
        truth = json.loads(f.attrs.get("config", "{}")).get("sim_truth", {}).get("srm_true_g2_zero")
        index = f["pixels/index"][()]
    if truth is None:
        return np.full(len(index), np.nan)
    truth = np.asarray(truth, dtype=float)
    ok = (index >= 0) & (index < len(truth))
    return np.where(ok, truth[np.clip(index, 0, len(truth) - 1)], np.nan)


def scan_pixels(path: Path) -> dict[str, np.ndarray]:
    """A finished SRM run's run-end maps per pixel row (PL counts/s, g2, g2_std, dwell s, reason code),
    its positions (m) and its photon time (s)."""
    with h5py.File(path, "r") as f:
        ix, iy = f["pixels/ix"][()], f["pixels/iy"][()]
        px = {name: f[f"maps/{name}"][()][iy, ix] for name in ("pl_cps", "g2", "g2_std", "dwell_s", "g2_reason")}
        px["position"] = f["pixels/position"][()]
        px["photons_s"] = float(f.attrs["total_dwell_s"])
    return px


def g2_errors(px: dict[str, np.ndarray], truth: np.ndarray, rows: np.ndarray) -> str:
    """One scan's g2(0) against the truth over `rows` (bool): RMS and mean error, median reported std,
    mean dwell (s)."""
    err = px["g2"][rows] - truth[rows]
    return (f"RMS {np.sqrt(np.mean(err ** 2)):.3f}, mean {np.mean(err):+.3f}, median reported std "
            f"{np.median(px['g2_std'][rows]):.3f}, mean dwell {px['dwell_s'][rows].mean():.2f} s")


def rig_tally(log_path: Path) -> str:
    """The rig's line on how the adaptive pixels ended (`AdaptiveDwell.tally`), from its log; '' if none."""
    lines = [line for line in log_path.read_text().splitlines() if "adaptive dwell (target" in line]
    return lines[-1].split(": ", 2)[-1] if lines else ""


def summarize_dwell(fixed: Path, adaptive: Path, rig_log: Path, wall_fixed: float,
                    wall_adaptive: float, png: Path) -> str:
    """Fixed versus adaptive dwell on the same field: the photon time of each, how the adaptive pixels
    ended, and the g2(0) errors against the simulator's truth over the pixels above BRIGHT_FRACTIONS of
    the fixed scan's peak PL (over the same pixels in both scans: those with an estimate in both)."""
    f, a = scan_pixels(fixed), scan_pixels(adaptive)
    truth = simulated_truth_g2(fixed)
    peak = np.nanmax(f["pl_cps"])
    lines = [f"  the same field with fixed dwell ({ADAPTIVE_MAX_DWELL_S} s per pixel) and with adaptive dwell "
             f"(target g2(0) error {ADAPTIVE_TARGET}, at most {ADAPTIVE_MAX_DWELL_S} s per pixel):",
             f"    photon time: fixed {f['photons_s']:.1f} s ({wall_fixed:.1f} s wall), adaptive {a['photons_s']:.1f} s "
             f"({wall_adaptive:.1f} s wall): {a['photons_s'] / f['photons_s']:.2f} of the fixed scan's"]
    tally = rig_tally(rig_log)
    if tally:
        lines.append(f"    the rig: {tally.split(': ', 1)[-1]}")
    lines.append(f"    g2(0) error (estimate - the simulator's true g2(0) at the pixel), over the same pixels in "
                 f"both scans (PL peak {peak / 1e3:.0f} kcps in the fixed scan):")
    for fraction in BRIGHT_FRACTIONS:
        above = f["pl_cps"] > fraction * peak
        both = above & np.isfinite(f["g2"]) & np.isfinite(a["g2"])
        lines.append(f"      the {both.sum()} pixels above {fraction:.0%} of the peak PL (true g2(0) "
                     f"{truth[both].min():.2f} to {truth[both].max():.2f}) with an estimate in both scans:")
        lines.append(f"        fixed    {g2_errors(f, truth, both)}")
        lines.append(f"        adaptive {g2_errors(a, truth, both)}")
        for name, px in (("fixed", f), ("adaptive", a)):
            none = above & ~np.isfinite(px["g2"])
            if none.any():
                codes, counts = np.unique(px["g2_reason"][none].astype(int), return_counts=True)
                why = ", ".join(f"{n} {G2_REASONS[c] if 0 < c < len(G2_REASONS) else 'reason unknown'}"
                                for c, n in zip(codes, counts))
                lines.append(f"        left out: {none.sum()} without an estimate in the {name} scan "
                             f"(dwell {px['dwell_s'][none].min():.2f}-{px['dwell_s'][none].max():.2f} s: {why})")
    lines.append(f"  figure: {png}")
    return "\n".join(lines)


def summarize_vqns(path: Path, controller: VqnsController) -> str:
    """The VQNS run in a few lines: which sequences were measured (named as in its file and figure),
    how many fits, the M chosen, why and how it ended, the figure."""
    with h5py.File(path, "r") as f:
        measured = f["coherence/n_pulses"][()].tolist()
        n_fits = f["vqns/steps/n_curves"].shape[0]
        status = f.attrs["exit_status"]
        m = f.attrs.get("lorentzians_chosen", "?")
    names = ", ".join(sequence_name(int(n)) for n in measured)
    return (f"  {path.name}: measured {names}; {n_fits} fits of {len(measured)} curves (a fit once no requested "
            f"curve is pending), {m} Lorentzians; {status}: {controller.stop_reason}\n"
            f"  figure: {path.with_suffix('.png')}")


def summarize_mri(path: Path, what: str, wall_s: float) -> str:
    """An NV-MRI run in a few lines: the scan and its lock, and each localized spin against the
    simulator's truth (nm, relative to the NV, with the reported sigmas)."""
    with h5py.File(path, "r") as f:
        a = f.attrs
        n = f["lock/seq"].shape[0]
        lost, recovered = json.loads(a["mri_lost"]), json.loads(a["mri_recovered"])
        f_sigma = np.nanmedian(f["mri/psf/f_sigma"][()])
        lines = [f"  NV-MRI, {what}: {path.name}: {n} tip positions ({f['mri/psf/detuning'].shape[0]} PSF planes, "
                 f"{len(f['mri/deer'])} DEER map(s)) in {wall_s:.1f} s, status {a['exit_status']}; lock: "
                 f"{sum(recovered.values())} pixels recovered, {sum(lost.values())} lost, median error "
                 f"{f_sigma / 1e3:.0f} kHz; f_rf {a['mri_f_rf_hz'] / 1e9:.6f} GHz, B0 {a['mri_b0_t']:.5f} T"]
        if "mri_localization" not in a:
            lines.append(f"  no localization: {a.get('analysis_error', a.get('analysis_note', '?'))}")
        else:
            loc = json.loads(a["mri_localization"])
            truth = f["mri/truth/spin_positions_m"][()] if "mri/truth/spin_positions_m" in f else np.zeros((0, 3))
            nearest = f["mri/truth/nearest"][()] if "mri/truth/nearest" in f else []
            lines.append(f"    model {loc['model']}, {len(loc['spins'])} spin(s), chi2_red {loc['chi2_reduced']:.2f}"
                         " (nm, relative to the NV):")
            for i, spin in enumerate(loc["spins"]):
                p, e = np.array(spin["position_m"]) * 1e9, np.array(spin["sigma_m"]) * 1e9
                found = ", ".join(f"{c} {v:7.3f} +- {s:.3f}" for c, v, s in zip("xyz", p, e))
                true = truth[nearest[i]] * 1e9 if len(truth) and len(nearest) > i else None
                lines.append(f"      found {found}" + ("" if true is None else
                             f"   truth {', '.join(f'{v:6.2f}' for v in true)}   error "
                             f"{', '.join(f'{d:+.3f}' for d in p - true)} ({', '.join(f'{d / s:+.1f}' for d, s in zip(p - true, e))} sigma)"))
            for w in json.loads(a["mri_warnings"]):
                lines.append(f"    warning: {w}")
        lines.append(f"    figures: {', '.join(json.loads(a['figures']))}" if "figures" in a else "")
    return "\n".join(line for line in lines if line)


def run_mri_demo(out: Path, estimator, timeout_s: float) -> list[str]:
    """The NV-MRI runs of the demo, one rig per sample (DEMO_MRI_SAMPLES); their summaries."""
    summaries = []
    for k, (what, spins) in enumerate(DEMO_MRI_SAMPLES.items()):
        toml = write_mri_rig_config(out / f"demo-rig-mri-{k}.toml", out / f"spool-mri-{k}", what, spins)
        with rig_and_host(toml, out / f"rig-mri-{k}.log", out, estimator) as (host, rig):
            t0 = time.perf_counter()
            run_id = run_to_end(host, new_run_id("mri"), "mri", rig, timeout_s)
            wall = time.perf_counter() - t0
        summaries.append(summarize_mri(out / f"{run_id}.h5", what, wall))
    return summaries


def run_demo(out: Path, timeout_s: float = 600.0) -> int:
    """Run the demo into `out`; print a summary; 0 on success."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    fixed_toml = write_rig_config(out / "demo-rig.toml", out / "spool", adaptive=False)
    adaptive_toml = write_rig_config(out / "demo-rig-adaptive.toml", out / "spool-adaptive", adaptive=True)
    estimator = default_g2_estimator()
    with rig_and_host(fixed_toml, out / "rig.log", out, estimator) as (host, rig):
        t_scan = time.perf_counter()
        run_id = run_to_end(host, new_run_id("srm"), "srm", rig, timeout_s)
        t_scan = time.perf_counter() - t_scan
        t_vqns = time.perf_counter()
        vqns_id = new_run_id("vqns")
        controller = VqnsController(host, vqns_id, VqnsLoopConfig())
        host.analyses["vqns"] = controller.analysis
        run_to_end(host, vqns_id, "vqns", rig, timeout_s, then=controller.begin, attrs=controller.run_attributes())
        controller.close()
        t_vqns = time.perf_counter() - t_vqns
    with rig_and_host(adaptive_toml, out / "rig-adaptive.log", out, estimator) as (host, rig):
        t_adaptive = time.perf_counter()
        adaptive_id = run_to_end(host, new_run_id("srm"), "srm", rig, timeout_s)
        t_adaptive = time.perf_counter() - t_adaptive
    path, adaptive_path = out / f"{run_id}.h5", out / f"{adaptive_id}.h5"
    png = out / f"dwell-{adaptive_id}.png"
    dwell_figure(path, adaptive_path, png, ADAPTIVE_TARGET)
    with h5py.File(path, "r") as f:
        n_pixels = f["pixels/index"].shape[0]
    print(f"nvscope demo: antibunching scan and adaptive noise spectroscopy on the simulated rig -> {out.resolve()}")
    print(summarize_srm(path))
    print(f"  scan + analysis {t_scan:.1f} s ({n_pixels / t_scan:.1f} pixels/s end to end)")
    print(summarize_dwell(path, adaptive_path, out / "rig-adaptive.log", t_scan, t_adaptive, png))
    print(summarize_vqns(out / f"{vqns_id}.h5", controller))
    print(f"  adaptive VQNS run {t_vqns:.1f} s")
    for summary in run_mri_demo(out, estimator, timeout_s):
        print(summary)
    print(f"  demo wall time {time.perf_counter() - t0:.1f} s")
    return 0
