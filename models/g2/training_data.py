"""Sparse photon-correlation histograms simulated event by event with `firmware_sim`, for the g2 CNN.

One *emitter* is a three-level emitter with random rates (t1 in T1_RANGE_S) seen as the pixels of
a scan across it (`simulate_emitter`): at N_LEVELS pump levels u (the centre, u = 1, and others
lower), each with its own exact photon stream from `rates.pumped(u)` collected with efficiency
eta0 * u (excitation and collection PSFs of the same width, docs/physics.md section 1.3, so the
emitter's signal at a pixel is S(u) = eta0 u E(u), E the emission rate), plus the scan's
uncorrelated background B, the same at every pixel. So an emitter's pixels differ in shape
(a, t1, t2 follow k12) and in g2(0) = 1 - (S(u) / (S(u) + B + dark))^2 (docs/physics.md section
1.4), as a scan's do. The centre's g2(0) is drawn with density 2.5 (1 - g)^1.5 and the other levels'
uniformly between it and that of pump PUMP_RANGE[0] (which fixes their pumps), which makes g2(0)
over all the windows uniform in G2_RANGE within +-20 %. A few % of the windows (UNCORRELATED_FRACTION) are pure uncorrelated light (g2(0) = 1, a
laser check or a field pixel). Each window's light goes through a 50/50 beam splitter and two
fresh detectors (dead time, jitter, dark counts) as `SimTimeTagger` does, and is histogrammed by
the rig's own kernel (`rt.kernels.binning.histogram_tags`, all pairs within +-250 ns, the bin rule
of docs/physics.md), with its singles n_a, n_b and duration T. Its expected event count is
log-uniform in N_RANGE, capped where the window would take more than MAX_WINDOW_PHOTONS photons
(the dim pixels of a scan have few events).

The truth of each histogram is the exact g2(0) of its window (docs/physics.md section 1.4, dark
counts in B) and its true local shape. The context of each window is the shape the host gives its
pixel: the local shapes fitted to all of the emitter's pixels (`local_shape.fit_local_shapes`, from
each pixel's PL rate), or the shape fitted to their sum (`estimation.fit_scan_shape`) when that
fit returns None. The windows of one emitter share its photons and its context fit, so data sets
are split by emitter (`split_by_emitter`), never by histogram.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from nvscope.firmware_sim.detectors import Detector, DetectorParams, beam_splitter
from nvscope.firmware_sim.emitter import (
    RenewalStream,
    ThreeLevelRates,
    emission_rate,
    g2_parameters,
    photon_intervals,
    poisson_intervals,
    uniform_draws,
)
from nvscope.proto.histogram import HALF_RANGE_PS, N_BINS
from nvscope.rt.kernels.binning import histogram_tags
from nvscope.rt.kernels.three_level import g2_shape_from_rates

from .estimation import fit_scan_shape, scan_shape
from .local_shape import fit_local_shapes
from .model import pixel_base

G2_RANGE = (0.0, 1.0)
"""True g2(0) of the training histograms (uniform): the whole physical range, wider than the paper's
0.1-0.9, because the bright pixels of a good single emitter lie below 0.1 and a network trained on
0.1-0.9 pulls them up towards its prior (a bias of about one std at a few hundred events)."""
T1_RANGE_S = (3e-9, 60e-9)
"""Antibunching time t1 of the training emitters (log-uniform), the paper's range."""
N_RANGE = (20, 100_000)
"""Expected events per histogram (log-uniform), the paper's range."""
RATE_RANGE_CPS = (2e5, 1e6)
"""Detected rate (signal + background, both detectors; log-uniform) with the spot on the emitter, and
of the uncorrelated windows: high enough to simulate quickly, low enough that dead time (22 ns) stays
a percent-level effect."""

def draw_rates(rng: np.random.Generator) -> ThreeLevelRates:
    """Random three-level rates (1/s) whose antibunching time t1 lies in T1_RANGE_S."""
    while True:
        t1 = np.exp(rng.uniform(*np.log(T1_RANGE_S)))
        tau_decay = np.exp(rng.uniform(np.log(max(1.1 * t1, 8e-9)), np.log(max(1.3 * t1, 80e-9))))
        k_decay = 1.0 / tau_decay
        k23 = k_decay * rng.uniform(0.05, 0.4)
        k31 = np.exp(rng.uniform(np.log(1e6), np.log(1e7)))
        rates = ThreeLevelRates(k12=1.0 / t1 - k_decay, k21=k_decay - k23, k23=k23, k31=k31)
        try:
            _, t1_true, _ = g2_parameters(rates)
        except ValueError:
            continue
        if T1_RANGE_S[0] <= t1_true <= T1_RANGE_S[1]:
            return rates


N_LEVELS = 4
"""Pump levels an emitter is seen at (the pixels of a scan across it): the centre and N_LEVELS - 1 others."""
PUMP_RANGE = (0.08, 1.0)
"""Relative pump u of the levels (1: the centre): down to the pixels at 8 % of the peak intensity,
where the signal is about 1 % of the centre's."""
UNCORRELATED_FRACTION = 0.04
"""Fraction of the windows that are pure uncorrelated light (g2(0) = 1)."""
MAX_WINDOW_PHOTONS = 2_000_000
"""Most photons a window's simulation takes: its expected events are capped at what this many give at
its rate (the dim pixels of a scan have few events), which bounds the simulation's cost."""
MAX_WINDOW_EVENTS = N_RANGE[1]


def _signal(rates: ThreeLevelRates, eta0: float, u: float) -> float:
    """Detected signal (counts/s) at relative pump u: collection eta0 * u, pump k12 * u."""
    return eta0 * u * emission_rate(rates.pumped(u))


def _pair_rate(total: np.ndarray | float) -> np.ndarray | float:
    """All-pairs events/s of uncorrelated light at `total` counts/s split 50/50."""
    return (np.asarray(total) / 2) ** 2 * 2 * HALF_RANGE_PS * 1e-12


@dataclass
class EmitterHistograms:
    """The windows of one emitter: histograms (W, N_BINS), singles, durations (s), truths and contexts.

    shape_true, context: (W, 3) of (t1 s, t2 s, a): each window's true local shape (the emitter's shape at
    its pump; the centre's for uncorrelated windows, whose g2 does not depend on it) and the shape the host
    gives its pixel. pump: (W,) relative pump of each window (0: uncorrelated light).
    """

    hist: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    t_acq: np.ndarray
    g2_true: np.ndarray
    shape_true: np.ndarray
    context: np.ndarray
    pump: np.ndarray
    tags: list[tuple[np.ndarray, np.ndarray]] | None = None  # each window's (t_a, t_b) ps, with keep_tags
    rates: ThreeLevelRates | None = None  # the emitter's rates at the centre (1/s)
    eta0: float = float("nan")  # its collection efficiency at the centre
    background_cps: float = float("nan")  # the scan's uncorrelated light besides the dark counts (counts/s)


def _draw_scan(rng: np.random.Generator, dark: float):
    """A random emitter and its scan: (rates, eta0, background B counts/s, pump levels u (N_LEVELS,),
    their interval laws); redrawn until every level has a phase-type interval law."""
    while True:
        rates = draw_rates(rng)
        pl_centre = np.exp(rng.uniform(*np.log(RATE_RANGE_CPS)))
        g_centre = 1.0 - (1.0 - rng.uniform()) ** 0.4  # density 2.5 (1 - g)^1.5: with the levels below, ~uniform
        uncorrelated = max((1.0 - np.sqrt(1.0 - g_centre)) * pl_centre, dark)  # B + dark
        s0 = pl_centre - uncorrelated
        eta0 = s0 / emission_rate(rates)
        if not 0.0 < eta0 <= 1.0:
            continue
        s_dim = _signal(rates, eta0, PUMP_RANGE[0])
        g_of = lambda s: 1.0 - (s / (s + uncorrelated)) ** 2  # noqa: E731  (docs/physics.md section 1.4)
        g_lo, g_hi = g_of(s0), g_of(s_dim)
        rho = np.sqrt(1.0 - rng.uniform(g_lo, g_hi, size=N_LEVELS - 1))
        targets = np.clip(uncorrelated * rho / (1.0 - rho), s_dim, s0)
        pumps = [1.0] + [brentq(lambda u, s=s: _signal(rates, eta0, u) - s, PUMP_RANGE[0], PUMP_RANGE[1],
                                xtol=1e-9) for s in targets]
        try:
            laws = [photon_intervals(rates.pumped(u), eta0 * u) for u in pumps]
        except ValueError:
            continue
        return rates, eta0, uncorrelated - dark, np.array(pumps), laws


def simulate_emitter(seed: int, windows: int, events: int = MAX_WINDOW_EVENTS,
                     n_target: float | np.ndarray | None = None, keep_tags: bool = False,
                     uncorrelated: float = UNCORRELATED_FRACTION, fit_context: bool = True) -> EmitterHistograms:
    """One random emitter (from `seed`) seen through `windows` acquisitions at its N_LEVELS pump levels.

    See the module docstring. Expected events per window: log-uniform from N_RANGE[0] to the least of
    `events`, N_RANGE[1] and what MAX_WINDOW_PHOTONS give at the window's rate; or `n_target` (a number,
    or one per window), each then at a level where it takes at most MAX_WINDOW_PHOTONS photons (the
    centre when none does). With `keep_tags` the result also holds each window's detector tags. A
    fraction `uncorrelated` of the windows is uncorrelated light. With `fit_context` False the context is
    the true local shape (tests that do not look at it: the local-shape fit is most of the cost).
    """
    rng = np.random.default_rng(seed)
    det = DetectorParams()
    dark = 2 * det.dark_count_rate
    rates, eta0, background, pumps, laws = _draw_scan(rng, dark)
    signal_levels = np.array([law.rate for law in laws])
    flat = rng.uniform(size=windows) < uncorrelated
    level = rng.integers(N_LEVELS, size=windows)
    flat_rate = np.exp(rng.uniform(*np.log(RATE_RANGE_CPS), size=windows))  # a laser check's rate
    events_cap = lambda total: MAX_WINDOW_PHOTONS * _pair_rate(total) / total  # noqa: E731
    if n_target is None:
        total = np.where(flat, flat_rate, signal_levels[level] + background + dark)
        n_hi = np.maximum(np.minimum(events_cap(total), min(events, N_RANGE[1])), N_RANGE[0])
        n_win = np.exp(rng.uniform(np.log(N_RANGE[0]), np.log(n_hi)))
    else:
        n_win = np.broadcast_to(np.asarray(n_target, dtype=float), (windows,)).copy()
        for w in np.flatnonzero(~flat):
            fits = np.flatnonzero(n_win[w] <= events_cap(signal_levels + background + dark))
            level[w] = rng.choice(fits) if fits.size else 0
        total = np.where(flat, flat_rate, signal_levels[level] + background + dark)
    signal = np.where(flat, 0.0, signal_levels[level])
    bg_rate = total - signal - dark  # the window's uncorrelated light besides the dark counts
    g2_true = 1.0 - (signal / total) ** 2  # docs/physics.md section 1.4, the dark counts in B
    t_win = np.rint(n_win / _pair_rate(total) * 1e12).astype(np.int64)  # ps
    streams = {}
    for k in np.unique(level[~flat]):
        t_stream = int(t_win[~flat & (level == k)].max()) + 1
        streams[k] = (RenewalStream(rng, laws[k], 0).arrivals(t_stream), t_stream)
    hist = np.empty((windows, N_BINS), dtype=np.int32)
    n_a = np.empty(windows, dtype=np.int64)
    n_b = np.empty(windows, dtype=np.int64)
    split = uniform_draws(rng)
    kept = [] if keep_tags else None
    for w in range(windows):
        if flat[w]:
            sig = np.empty(0, dtype=np.int64)
        else:
            photons, t_stream = streams[level[w]]
            t0 = int(rng.uniform() * (t_stream - t_win[w]))
            i, j = np.searchsorted(photons, [t0, t0 + t_win[w]])
            sig = photons[i:j] - t0
        bg = RenewalStream(rng, poisson_intervals(bg_rate[w]), 0).arrivals(int(t_win[w]))
        light = np.sort(np.concatenate([sig, bg]))
        to_a, to_b = beam_splitter(light, split.take(light.size), 0.5)
        t_a = Detector(det, rng).tags(to_a, int(t_win[w]))
        t_b = Detector(det, rng).tags(to_b, int(t_win[w]))
        hist[w], n_a[w], n_b[w] = histogram_tags(t_a, t_b, "allpairs")
        if kept is not None:
            kept.append((t_a, t_b))
    t_acq = t_win * 1e-12
    a, t1, t2 = g2_shape_from_rates(rates.k12 * pumps, rates.k21, rates.k23, rates.k31)
    level_shapes = np.stack([t1, t2, a], axis=1)
    shape_true = level_shapes[np.where(flat, 0, level)]
    context = pixel_contexts(hist, n_a, n_b, t_acq, flat) if fit_context else shape_true.copy()
    pump = np.where(flat, 0.0, pumps[level])
    return EmitterHistograms(hist, n_a, n_b, t_acq, g2_true, shape_true, context, pump, kept, rates, eta0, background)


def pixel_contexts(hist: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, t_acq: np.ndarray,
                   flat: np.ndarray) -> np.ndarray:
    """Each window's context (W, 3) of (t1 s, t2 s, a): the shape the host gives its pixel.

    The local shapes (`fit_local_shapes`) fitted to the emitter's scan windows (not the uncorrelated
    ones, whose rate has nothing to do with the scan's saturation curve), evaluated at every window's
    PL (n_a + n_b) / t_acq in counts/s; where that fit returns None (or gives no finite shape), the
    shape fitted to the sum of the windows (`fit_scan_shape`, NV_DEFAULT_SHAPE when it sees no
    antibunching), as the host falls back.
    """
    base = pixel_base(n_a, n_b, t_acq, len(hist))
    pl = (n_a + n_b) / t_acq
    scan = scan_shape(fit_scan_shape(hist, base))[0]
    out = np.tile([scan.t1, scan.t2, scan.a], (len(hist), 1))
    local = fit_local_shapes(hist[~flat], base[~flat], pl[~flat])
    if local is not None:
        shapes = np.stack(local.shapes(pl), axis=1)
        good = np.all(np.isfinite(shapes), axis=1) & (shapes[:, 0] > 0) & (shapes[:, 1] > 0)
        out[good] = shapes[good]
    return out


def _simulate(args: tuple) -> EmitterHistograms:
    return simulate_emitter(*args)


def simulate_dataset(n_emitters: int, windows: int, seed: int, events: int = MAX_WINDOW_EVENTS,
                     workers: int | None = None, n_target: float | np.ndarray | None = None,
                     fit_context: bool = True, client=None) -> dict[str, np.ndarray]:
    """Histograms of `n_emitters` random emitters, `windows` each, as flat arrays with `emitter` ids
    (expected events per histogram as `simulate_emitter` draws them, or `n_target`, a number or one per window;
    `fit_context` as in `simulate_emitter`).

    Each emitter is one job with its own seed, drawn from `seed` by its index, so the arrays are the same
    however the jobs are run: in this process (`workers` 1), in a local process pool (`workers`, default
    one per core), or as one task per emitter on the Dask cluster of `client` (a `distributed.Client`;
    its workers need nvscope installed), which then replaces the pool."""
    seeds = np.random.SeedSequence(seed).generate_state(n_emitters, dtype=np.uint64)
    jobs = [(int(s), windows, events, n_target, False, UNCORRELATED_FRACTION, fit_context) for s in seeds]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if client is not None:
        results = client.gather(client.map(_simulate, jobs, pure=False))  # in the order of `jobs`
    elif workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_simulate, jobs, chunksize=4))
    else:
        results = [_simulate(j) for j in jobs]
    out = {k: np.concatenate([getattr(r, k) for r in results])
           for k in ("hist", "n_a", "n_b", "t_acq", "g2_true", "shape_true", "context", "pump")}
    out["emitter"] = np.repeat(np.arange(n_emitters), windows)
    return out


def split_by_emitter(emitter: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test sets: every emitter's rows go to one set only."""
    ids = np.unique(emitter)
    ids = np.random.default_rng(seed).permutation(ids)
    n_train = int(round(fractions[0] * ids.size))
    n_val = int(round(fractions[1] * ids.size))
    groups = (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:])
    return tuple(np.flatnonzero(np.isin(emitter, g)) for g in groups)


__all__ = ["G2_RANGE", "T1_RANGE_S", "N_RANGE", "RATE_RANGE_CPS", "N_LEVELS", "PUMP_RANGE", "UNCORRELATED_FRACTION",
           "MAX_WINDOW_PHOTONS", "MAX_WINDOW_EVENTS", "draw_rates", "EmitterHistograms", "simulate_emitter",
           "pixel_contexts", "simulate_dataset", "split_by_emitter"]
