"""Sparse photon-correlation histograms simulated event by event with `firmware_sim`, for the g2 CNN.

One *emitter* is a three-level emitter (random rates: t1 in T1_RANGE_S) behind a confocal spot with
uncorrelated background (its g2(0) in G2_RANGE, set by the signal fraction), at a detected rate in
RATE_RANGE_CPS, seen by two detectors with dead time, jitter and dark counts. Its time tags are
simulated for long enough to hold about EVENTS_PER_EMITTER all-pairs events; every pair within
+-250 ns is listed once with the time of its start tag. An acquisition window [t0, t0 + T) then gives
a histogram exactly as the rt binner would (pairs whose start lies in the window), its singles
n_a, n_b and T; window lengths are drawn so that the expected event count is log-uniform in
N_RANGE. Each emitter's context is the shape fitted (`fit_shape`, singles normalization) to the
histogram of its whole stream, as the host fits it to the sum of a scan.

The truth of each histogram is the emitter's exact g2(0) (physics.md: the expression at tau = 0,
with the dark counts in the background). Histograms of one emitter share its stream and its truth,
so data sets are split by emitter (`split_by_emitter`), never by histogram.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from nvscope.firmware_sim.detectors import DetectorParams
from nvscope.firmware_sim.emitter import ThreeLevelRates, emission_rate, g2_parameters
from nvscope.firmware_sim.sample import Emitter, Sample, SimScanner, SimTimeTagger
from nvscope.proto.histogram import HALF_RANGE_PS, N_BINS

from .mle import fit_shape
from .model import singles_base

G2_RANGE = (0.1, 0.9)
"""True g2(0) of the training emitters (uniform), the paper's range."""
T1_RANGE_S = (3e-9, 60e-9)
"""Antibunching time t1 of the training emitters (log-uniform), the paper's range."""
N_RANGE = (20, 100_000)
"""Expected events per histogram (log-uniform), the paper's range."""
RATE_RANGE_CPS = (2e5, 1e6)
"""Detected rate at the spot, both detectors (log-uniform): high enough to simulate quickly, low
enough that dead time (22 ns) stays a percent-level effect."""
EVENTS_PER_EMITTER = 200_000
"""All-pairs events simulated per emitter (the longest window holds N_RANGE[1])."""


@dataclass(frozen=True)
class EmitterDraw:
    """One training emitter: rates (1/s), detected signal and background rates (counts/s)."""

    rates: ThreeLevelRates
    signal_cps: float
    background_cps: float


def draw_emitter(rng: np.random.Generator) -> EmitterDraw:
    """A random emitter whose t1 lies in T1_RANGE_S and whose g2(0) lies in G2_RANGE."""
    while True:
        t1 = np.exp(rng.uniform(*np.log(T1_RANGE_S)))
        tau_decay = np.exp(rng.uniform(np.log(max(1.1 * t1, 8e-9)), np.log(max(1.3 * t1, 80e-9))))
        k_decay = 1.0 / tau_decay
        k23 = k_decay * rng.uniform(0.05, 0.4)
        k31 = np.exp(rng.uniform(np.log(1e6), np.log(1e7)))
        k12 = 1.0 / t1 - k_decay
        rates = ThreeLevelRates(k12=k12, k21=k_decay - k23, k23=k23, k31=k31)
        try:
            _, t1_true, _ = g2_parameters(rates)
        except ValueError:
            continue
        if T1_RANGE_S[0] <= t1_true <= T1_RANGE_S[1]:
            break
    g0 = rng.uniform(*G2_RANGE)
    rate = np.exp(rng.uniform(*np.log(RATE_RANGE_CPS)))
    rho = np.sqrt(1.0 - g0)  # g2(0) = 1 - rho^2, rho the signal fraction (physics.md)
    return EmitterDraw(rates, rho * rate, (1.0 - rho) * rate)


def all_pairs(t_a: np.ndarray, t_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (A, B) pair with -250 ns <= tau < 250 ns: (start tag in ps, bin index), by start tag."""
    lo = np.searchsorted(t_b, t_a - HALF_RANGE_PS, side="left")
    hi = np.searchsorted(t_b, t_a + HALF_RANGE_PS, side="left")
    counts = hi - lo
    ia = np.repeat(np.arange(t_a.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    tau = t_b[np.repeat(lo, counts) + offsets] - t_a[ia]
    k = ((tau + HALF_RANGE_PS) * N_BINS) // (2 * HALF_RANGE_PS)  # physics.md's integer rule
    return t_a[ia], k.astype(np.int64)


@dataclass
class EmitterHistograms:
    """The windows of one emitter: histograms (W, N_BINS), singles, durations (s), truth and context."""

    hist: np.ndarray
    n_a: np.ndarray
    n_b: np.ndarray
    t_acq: np.ndarray
    g2_true: float
    shape_true: tuple[float, float, float]  # the emitter's own (t1 s, t2 s, a)
    context: tuple[float, float, float]  # fitted (t1 s, t2 s, a) from the whole stream


def simulate_emitter(seed: int, windows: int, events: int = EVENTS_PER_EMITTER,
                     n_target: float | None = None) -> EmitterHistograms:
    """Simulate one random emitter (from `seed`) and cut `windows` acquisition windows from its tags,
    whose expected event counts are log-uniform in N_RANGE, or all `n_target`."""
    rng = np.random.default_rng(seed)
    d = draw_emitter(rng)
    detectors = DetectorParams()
    dark = 2 * detectors.dark_count_rate
    eta = d.signal_cps / emission_rate(d.rates)
    sample = Sample(emitters=(Emitter(0.0, 0.0, rates=d.rates, collection_efficiency=eta),),
                    background_rate=max(d.background_cps - dark, 0.0))
    tagger = SimTimeTagger(sample, SimScanner(), detectors, seed=int(rng.integers(2**62)))
    total = d.signal_cps + d.background_cps
    pair_rate = (total / 2) ** 2 * 2 * HALF_RANGE_PS * 1e-12
    duration = events / pair_rate
    reads = int(np.ceil(duration / tagger.constraints.max_read_s))
    parts = [tagger.read_tags(duration / reads) for _ in range(reads)]
    t_a = np.concatenate([p[0] for p in parts])
    t_b = np.concatenate([p[1] for p in parts])
    t_end = parts[-1][2]
    start, k = all_pairs(t_a, t_b)
    # The whole stream is the emitter's "scan": its shape is the context of every window.
    full = np.bincount(k, minlength=N_BINS)
    shape = fit_shape(full, base=float(singles_base(t_a.size, t_b.size, t_end * 1e-12)))
    if n_target is None:
        n_target = np.exp(rng.uniform(*np.log(N_RANGE), size=windows))
    t_win = np.minimum(n_target / pair_rate * 1e12, 0.999 * t_end).astype(np.int64)
    t0 = (rng.uniform(size=windows) * (t_end - t_win)).astype(np.int64)
    hist = np.empty((windows, N_BINS), dtype=np.int32)
    n_a = np.empty(windows, dtype=np.int64)
    n_b = np.empty(windows, dtype=np.int64)
    for w in range(windows):
        lo, hi = t0[w], t0[w] + t_win[w]
        i, j = np.searchsorted(start, [lo, hi])
        hist[w] = np.bincount(k[i:j], minlength=N_BINS)
        n_a[w] = np.searchsorted(t_a, hi) - np.searchsorted(t_a, lo)
        n_b[w] = np.searchsorted(t_b, hi) - np.searchsorted(t_b, lo)
    g2_true = float(tagger.expected_g2(0.0))
    a, t1, t2 = g2_parameters(d.rates)
    return EmitterHistograms(hist, n_a, n_b, t_win * 1e-12, g2_true, (t1, t2, a), (shape.t1, shape.t2, shape.a))


def _simulate(args: tuple) -> EmitterHistograms:
    return simulate_emitter(*args)


def simulate_dataset(n_emitters: int, windows: int, seed: int, events: int = EVENTS_PER_EMITTER,
                     workers: int | None = None, n_target: float | None = None) -> dict[str, np.ndarray]:
    """Histograms of `n_emitters` random emitters, `windows` each, as flat arrays with `emitter` ids
    (expected events per histogram log-uniform in N_RANGE, or all `n_target`)."""
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
        "g2_true": rep([r.g2_true for r in results], windows),
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


__all__ = ["G2_RANGE", "T1_RANGE_S", "N_RANGE", "RATE_RANGE_CPS", "EVENTS_PER_EMITTER", "EmitterDraw",
           "draw_emitter", "all_pairs", "EmitterHistograms", "simulate_emitter", "simulate_dataset",
           "split_by_emitter"]
