"""Which pulse sequence to measure next: the one that adds the most information per second of measurement.

PROPOSAL_RULE (also written into every output file): every candidate CPMG-n (a sequence already
measured included: a repeat adds what its noise still hides) is played only at the times its pulses
allow (t >= `shortest_time(n, timing)`, `rt.kernels.pulses`); one with fewer than `min_points` such
times is not proposed. Its score is its expected information gain over those times,

    EIG = 1/2 ln det(I + Sigma^-1/2 Cov Sigma^-1/2)    (nats),

Cov (T, T) the covariance across the band's population of spectra of the coherence it predicts
(`SpectrumFit.population_predictions`; computed through the population's (B, T) deviations, so the
determinant costs an SVD of rank min(B, T)), Sigma the predicted noise of each point (sigma^2 =
s0 + s1 C + s2 C^2, non-negative least squares on the measured curves' errors, so the readout noise
that grows with the contrast weights where a candidate's spread lies), divided by its measurement
time: repetitions x the sum over its points of the compiled shot's length, plus the interleaved dark
reference shots (`dark_fraction` per shot; `coherence_shot`, `reference_shot`), s. This is the Gaussian (linearized) mutual
information between the band's spectra and the candidate's outcome; highest per second first.

`sensitivity` (K, F) splits each candidate over frequency: the linearized spread of its predicted
coherence caused by the band's width at w, C(t) F(w t) / (pi w^2) (S_hi - S_lo) / 2 dw, in units of
each point's predicted noise, root-sum-square over its playable times (the paper's filter-function
sensitivity weighted where the band is wide; 0 for a candidate not proposed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from nvscope.rt.kernels.pulses import ShotTiming, coherence_shot, cpmg_pulse_times, reference_shot, shortest_time

from .data import CoherenceSet
from .filters import filter_function
from .fit import SpectrumFit
from .kernel import chi_values

PROPOSAL_RULE = ("score each candidate CPMG-n (repeats of measured sequences allowed) over the times its pulses can "
                 "play (t >= shortest_time(n, timing); fewer than min_points such times: not proposed) by its expected "
                 "information gain 1/2 ln det(I + Sigma^-1/2 Cov Sigma^-1/2) (nats; Cov: covariance across the band's "
                 "population of its predicted coherence; Sigma: each point's predicted noise, sigma^2 = s0 + s1 C + "
                 "s2 C^2 fitted to the measured errors) per second of measurement (repetitions x shot + dark_repetitions x "
                 "dark reference shot, summed over its points); highest first")
DEFAULT_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
"""Echo and CPMG-n; the FID is none of them (its 14N hyperfine beats are not in the model)."""
MIN_POINTS = 8
"""A candidate with fewer playable times than this is not proposed (too few points to pin a decay)."""
DARK_FRACTION = 0.33
"""Dark-reference shots interleaved per shot of the sequence when the caller does not say (the rig's
default `[coherence] dark_fraction`; rt.coherence plays round(fraction x repetitions), at least one)."""
DEFAULT_REPETITIONS = 10_000_000
"""Shots per point when the caller does not say (the rig's default `[coherence] repetitions`)."""


@dataclass(frozen=True)
class Proposal:
    """Candidates (K,) with their scores (expected information per second of measurement, nats/s;
    NaN where not proposed), the ranking (best first; only proposed ones), the sensitivity (K, F),
    the loop's times (s), and per candidate the information (nats), measurement time (s) and
    number of playable times."""

    candidates: np.ndarray
    scores: np.ndarray
    ranked: np.ndarray
    sensitivity: np.ndarray
    times: np.ndarray
    information: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rule: str = PROPOSAL_RULE

    @property
    def best_rate(self) -> float:
        """The best candidate's expected information per second (nats/s); 0 when none is proposed."""
        return float(np.nanmax(self.scores)) if len(self.ranked) else 0.0


@dataclass(frozen=True)
class CandidatePlan:
    """What `rank_candidates` needs beyond the pulse numbers: the times every candidate would be
    measured at (s; None: log-spaced over the measured span), the shot's pulse timing, the shots per
    point, the fewest playable times a proposed candidate has. Passed where the pulse numbers go
    (`analyse_curves(data, cfg, plan)`), it carries them all through."""

    pulses: tuple[int, ...]
    times: np.ndarray | None = None
    timing: ShotTiming = field(default_factory=ShotTiming)
    repetitions: int = DEFAULT_REPETITIONS
    min_points: int = MIN_POINTS
    dark_fraction: float = DARK_FRACTION
    omega: np.ndarray | None = None
    """The frequencies (rad/s) of `sensitivity` (a loop's fixed grid); None: those the caller passes."""


@dataclass(frozen=True)
class NoiseModel:
    """Predicted one-sigma error of a coherence point: sigma^2 = s0 + s1 C + s2 C^2 (C clipped to [0, 1])."""

    coefficients: np.ndarray

    def sigma(self, c: np.ndarray) -> np.ndarray:
        """The predicted error (coherence units) at coherence c."""
        c = np.clip(np.asarray(c, dtype=float), 0.0, 1.0)
        s0, s1, s2 = self.coefficients
        return np.sqrt(np.maximum(s0 + s1 * c + s2 * c**2, 1e-12))


def noise_model(data: CoherenceSet, sigma: np.ndarray | None = None) -> NoiseModel:
    """sigma^2 against C over the measured points (non-negative least squares), from `data.sigma`,
    or `sigma` (S, T) where the data have none (the fit's estimate)."""
    s = data.sigma if data.sigma_given or sigma is None else sigma
    use = data.mask & np.isfinite(s) & np.isfinite(data.coherence)
    c = np.clip(data.coherence[use], 0.0, 1.0)
    y = np.asarray(s, dtype=float)[use] ** 2
    if not y.size:
        return NoiseModel(np.array([1e-4, 0.0, 0.0]))
    scale = float(np.median(y)) or 1.0
    coef, _ = nnls(np.stack([np.ones_like(c), c, c**2], axis=1), y / scale)
    if not coef.any():
        coef = np.array([1.0, 0.0, 0.0])
    return NoiseModel(coef * scale)


def feasible_times(n_pulses: int, times: np.ndarray, timing: ShotTiming) -> np.ndarray:
    """The times (s) at which CPMG-n can be played with `timing`: t >= shortest_time(n, timing)."""
    t = np.asarray(times, dtype=float)
    return t[t >= shortest_time(int(n_pulses), timing) * (1.0 + 1e-9)]


def measurement_time(n_pulses: int, times: np.ndarray, timing: ShotTiming, repetitions: int,
                     dark_fraction: float = DARK_FRACTION) -> float:
    """Seconds to measure CPMG-n at `times` (s): per point, repetitions x the compiled shot's length plus
    max(1, round(dark_fraction x repetitions)) dark-reference shots (ValueError for a time the pulses
    cannot play)."""
    dark = reference_shot(dark=True, timing=timing).length_s
    dark_reps = max(1, int(round(dark_fraction * repetitions)))
    shots = sum(coherence_shot(float(t), cpmg_pulse_times(float(t), int(n_pulses)), timing).length_s for t in times)
    return float(repetitions) * shots + float(dark_reps) * dark * len(times)


def predict_coherence(fit: SpectrumFit, n_pulses: int, t: np.ndarray, pi_s: float = 0.0) -> np.ndarray:
    """C(t) (B, T) that CPMG-n would show at times t (s), pi pulses of pi_s (s), under each member of
    the band's population (readout terms included where the fit has them)."""
    t = np.asarray(t, dtype=float)
    if hasattr(fit, "population_predictions"):
        return np.asarray(fit.population_predictions(int(n_pulses), t, pi_s=pi_s))
    # TODO(issue 13): remove once SpectrumFit.population_predictions lands (helper A1)
    a, w0, g = fit.boot_a, fit.boot_w0, fit.boot_g
    chi = chi_values(a[:, :, None], w0[:, :, None], g[:, :, None], t[None, None], n_pulses, pi_s)
    return np.exp(-chi.sum(1))


def expected_information(predictions: np.ndarray, sigma: np.ndarray) -> float:
    """1/2 ln det(I + Sigma^-1/2 Cov Sigma^-1/2) (nats) of an outcome whose mean is spread like the rows
    of `predictions` (B, T), with independent noise `sigma` (T,): from the singular values of the
    population's scaled deviations (B, T), so the determinant is of rank min(B, T)."""
    p = np.asarray(predictions, dtype=float)
    if p.shape[0] < 2 or p.shape[1] == 0:
        return 0.0
    z = (p - p.mean(0)) / (np.asarray(sigma, dtype=float)[None] * np.sqrt(p.shape[0] - 1))
    z = np.nan_to_num(z)
    s = np.linalg.svd(z, compute_uv=False)
    return float(0.5 * np.log1p(s**2).sum())


def candidate_times(data: CoherenceSet, points: int = 40) -> np.ndarray:
    """The times at which a candidate would be measured: log-spaced over the measured span (s)."""
    return np.geomspace(np.nanmin(data.t), np.nanmax(data.t), points)


def rank_candidates(fit: SpectrumFit, data: CoherenceSet, candidates, omega: np.ndarray, *,
                    times: np.ndarray | None = None, timing: ShotTiming | None = None,
                    repetitions: int | None = None, min_points: int | None = None,
                    dark_fraction: float | None = None) -> Proposal:
    """Score, rank and split over frequency every candidate pulse number (module docstring).

    `candidates`: pulse numbers >= 0, or a `CandidatePlan` (its times, timing, repetitions, min_points
    and dark_fraction are used unless given here; its omega, when set, replaces `omega`). Defaults:
    times log-spaced over the measured span, `ShotTiming()` (a real NV's pulses), DEFAULT_REPETITIONS
    shots, MIN_POINTS, DARK_FRACTION."""
    plan = candidates if isinstance(candidates, CandidatePlan) else CandidatePlan(tuple(np.atleast_1d(candidates)))
    cands = np.asarray(plan.pulses)
    if cands.ndim != 1 or cands.size == 0 or cands.dtype.kind not in "iu" or (cands < 0).any():
        raise ValueError(f"candidates must be a non-empty 1-D array of pulse numbers >= 0, got {cands!r}")
    cands = cands.astype(np.int64)
    timing = timing or plan.timing
    reps = int(repetitions or plan.repetitions)
    need = int(min_points or plan.min_points)
    dark_fraction = plan.dark_fraction if dark_fraction is None else dark_fraction
    omega = np.asarray(plan.omega if plan.omega is not None else omega, dtype=float)
    t_all = np.asarray(times if times is not None else plan.times if plan.times is not None
                       else candidate_times(data), dtype=float)
    noise = noise_model(data, fit.sigma_used if getattr(fit, "sigma_used", None) is not None
                        and np.shape(fit.sigma_used) == data.t.shape else None)
    _, s_lo, s_hi = fit.band(omega)
    dw = np.gradient(omega)
    half_width = 0.5 * (s_hi - s_lo) * dw
    k = len(cands)
    scores, info, secs = np.full(k, np.nan), np.zeros(k), np.zeros(k)
    points, sens = np.zeros(k, dtype=np.int64), np.zeros((k, len(omega)))
    for i, n in enumerate(cands):
        t = feasible_times(int(n), t_all, timing)
        points[i] = t.size
        if t.size < min(need, t_all.size):
            continue  # its pulses cannot play enough of the times: not proposed
        c = predict_coherence(fit, int(n), t, pi_s=timing.pi_s)
        sigma = noise.sigma(c.mean(0))
        info[i] = expected_information(c, sigma)
        secs[i] = measurement_time(int(n), t, timing, reps, dark_fraction)
        scores[i] = info[i] / secs[i]
        filt = filter_function(omega[None, :] * t[:, None], int(n)) / (np.pi * omega[None, :] ** 2)
        spread = c.mean(0)[:, None] * filt * half_width[None] / sigma[:, None]
        sens[i] = np.sqrt((spread**2).sum(0))
    proposed = np.flatnonzero(np.isfinite(scores))
    order = proposed[np.argsort(-scores[proposed], kind="stable")]
    return Proposal(cands, scores, cands[order], sens, t_all, info, secs, points)
