"""Sparse photon-correlation histograms simulated event by event with `firmware_sim`, for the g2 CNN.

One *emitter* is a three-level emitter with random rates (t1 in T1_RANGE_S) under a confocal spot.
Its collected photons are simulated once; each acquisition *window* thins a stretch of them, adds
uncorrelated background, and sends the light through a beam splitter to two detectors with dead
time, jitter and dark counts (`simulate_emitter`). So the windows of one emitter share its shape
(t1, t2, a) but each has its own g2(0), uniform in G2_RANGE, like the pixels of a scan, and its
own expected event count, log-uniform in N_RANGE. Each window's histogram is made from its tags by
the rig's own kernel (`rt.kernels.binning.histogram_tags`, all pairs within +-250 ns, the bin rule
of docs/physics.md), with its singles n_a, n_b and duration T. The context of every window is the
shape fitted to the sum of its emitter's windows with the singles normalization
(`estimation.fit_scan_shape`), as the host fits it to the sum of a scan.

The truth of each histogram is the exact g2(0) of its window (docs/physics.md section 1.4: 1 - (S / (S + B))^2 with
the dark counts in B). The windows of one emitter share its photons and its context, so data sets
are split by emitter (`split_by_emitter`), never by histogram.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

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

from .estimation import fit_scan_shape
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
"""Detected rate at the spot, both detectors (log-uniform): high enough to simulate quickly, low
enough that dead time (22 ns) stays a percent-level effect."""
EVENTS_PER_EMITTER = 200_000
"""All-pairs events (at the emitter's full rate) that its simulated photon stream holds: the longest
window (N_RANGE[1] events) is a stretch of it."""


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


@dataclass
class EmitterHistograms:
    """The windows of one emitter: histograms (W, N_BINS), singles, durations (s), truths and context."""

    hist: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    t_acq: np.ndarray
    g2_true: np.ndarray
    shape_true: tuple[float, float, float]  # the emitter's own (t1 s, t2 s, a)
    context: tuple[float, float, float]  # fitted (t1 s, t2 s, a) from the sum of its windows
    tags: list[tuple[np.ndarray, np.ndarray]] | None = None  # each window's (t_a, t_b) ps, with keep_tags


def simulate_emitter(seed: int, windows: int, events: int = EVENTS_PER_EMITTER,
                     n_target: float | np.ndarray | None = None, keep_tags: bool = False) -> EmitterHistograms:
    """One random emitter (from `seed`) seen through `windows` acquisitions, each with its own g2(0).

    The emitter's photons are simulated once, collected at the spot's full rate R (log-uniform in
    RATE_RANGE_CPS), as long as `events` all-pairs events take. Each window takes a random stretch
    of that stream and thins it to a signal rate S (independent loss of photons is exactly a lower
    collection efficiency), adds uncorrelated background B so that S / (S + B + dark) = sqrt(1 - g0)
    with g0 uniform in G2_RANGE, and sends the light through a 50/50 beam splitter and two fresh
    detectors (dead time, jitter, dark counts) as `SimTimeTagger` does. So all windows of an
    emitter share its shape and differ in g2(0), as the pixels of a scan do. Expected events per
    window: log-uniform in N_RANGE, or `n_target` (a number, or one per window). With `keep_tags`
    the result also holds each window's detector tags (for tests).
    """
    rng = np.random.default_rng(seed)
    while True:  # some rates at a high collection efficiency have no phase-type interval law: redraw
        rates = draw_rates(rng)
        rate = np.exp(rng.uniform(*np.log(RATE_RANGE_CPS)))
        eta = rate / emission_rate(rates)
        try:
            law = photon_intervals(rates, eta) if eta <= 1.0 else None
        except ValueError:
            law = None
        if law is not None:
            break
    det = DetectorParams()
    dark = 2 * det.dark_count_rate
    stream = RenewalStream(rng, law, 0)
    pair_rate = (rate / 2) ** 2 * 2 * HALF_RANGE_PS * 1e-12  # all-pairs events/s at rate R
    t_stream = int(events / pair_rate * 1e12)
    photons = stream.arrivals(t_stream)
    n_target = (np.exp(rng.uniform(*np.log(N_RANGE), size=windows)) if n_target is None
                else np.broadcast_to(np.asarray(n_target, dtype=float), (windows,)))
    g0 = rng.uniform(*G2_RANGE, size=windows)
    rho = np.sqrt(1.0 - g0)  # g2(0) = 1 - rho^2, rho the signal fraction (docs/physics.md section 1.4)
    total = rate * rng.uniform(0.3, 1.0, size=windows)  # the window's detected rate S + B + dark
    signal = rho * total
    background = np.maximum((1.0 - rho) * total - dark, 0.0)
    g2_true = 1.0 - (signal / (signal + background + dark)) ** 2
    hist = np.empty((windows, N_BINS), dtype=np.int32)
    n_a = np.empty(windows, dtype=np.int64)
    n_b = np.empty(windows, dtype=np.int64)
    t_acq = np.empty(windows)
    split = uniform_draws(rng)
    kept = [] if keep_tags else None
    for w in range(windows):
        t_win = int(min(n_target[w] / ((total[w] / 2) ** 2 * 2 * HALF_RANGE_PS * 1e-12) * 1e12,
                        0.999 * t_stream))
        t0 = int(rng.uniform() * (t_stream - t_win))
        i, j = np.searchsorted(photons, [t0, t0 + t_win])
        sig = photons[i:j][rng.uniform(size=j - i) < signal[w] / rate] - t0
        bg = RenewalStream(rng, poisson_intervals(background[w]), 0).arrivals(t_win)
        light = np.sort(np.concatenate([sig, bg]))
        to_a, to_b = beam_splitter(light, split.take(light.size), 0.5)
        t_a = Detector(det, rng).tags(to_a, t_win)
        t_b = Detector(det, rng).tags(to_b, t_win)
        hist[w], n_a[w], n_b[w] = histogram_tags(t_a, t_b, "allpairs")
        t_acq[w] = t_win * 1e-12
        if kept is not None:
            kept.append((t_a, t_b))
    # The emitter's context is the shape fitted to the sum of its windows, as the host fits a scan.
    shape = fit_scan_shape(hist, pixel_base(n_a, n_b, t_acq, windows)).shape
    a, t1, t2 = g2_parameters(rates)
    return EmitterHistograms(hist, n_a, n_b, t_acq, g2_true, (t1, t2, a), (shape.t1, shape.t2, shape.a), kept)


def _simulate(args: tuple) -> EmitterHistograms:
    return simulate_emitter(*args)


def simulate_dataset(n_emitters: int, windows: int, seed: int, events: int = EVENTS_PER_EMITTER,
                     workers: int | None = None, n_target: float | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Histograms of `n_emitters` random emitters, `windows` each, as flat arrays with `emitter` ids
    (expected events per histogram log-uniform in N_RANGE, or `n_target`, a number or one per window)."""
    seeds = np.random.SeedSequence(seed).generate_state(n_emitters, dtype=np.uint64)
    jobs = [(int(s), windows, events, n_target) for s in seeds]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_simulate, jobs, chunksize=4))
    else:
        results = [_simulate(j) for j in jobs]
    rep = np.repeat
    return {
        "hist": np.concatenate([r.hist for r in results]),
        "n_a": np.concatenate([r.n_a for r in results]),
        "n_b": np.concatenate([r.n_b for r in results]),
        "t_acq": np.concatenate([r.t_acq for r in results]),
        "g2_true": np.concatenate([r.g2_true for r in results]),
        "shape_true": rep(np.array([r.shape_true for r in results]), windows, axis=0),
        "context": rep(np.array([r.context for r in results]), windows, axis=0),
        "emitter": rep(np.arange(n_emitters), windows),
    }


def split_by_emitter(emitter: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test sets: every emitter's rows go to one set only."""
    ids = np.unique(emitter)
    ids = np.random.default_rng(seed).permutation(ids)
    n_train = int(round(fractions[0] * ids.size))
    n_val = int(round(fractions[1] * ids.size))
    groups = (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:])
    return tuple(np.flatnonzero(np.isin(emitter, g)) for g in groups)


__all__ = ["G2_RANGE", "T1_RANGE_S", "N_RANGE", "RATE_RANGE_CPS", "EVENTS_PER_EMITTER", "draw_rates",
           "EmitterHistograms", "simulate_emitter", "simulate_dataset", "split_by_emitter"]
