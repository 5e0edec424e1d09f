"""Which pulse sequence to measure next: the one whose outcome the current band predicts worst.

PROPOSAL_RULE (also written into every output file): each candidate CPMG-n is scored by the
spread (standard deviation across the band's population of spectra) of its predicted coherence,
in units of the measurement noise, averaged over its times; candidates are ranked by that score,
highest first. `sensitivity` (K, F) splits each score over frequency: the linearized spread of the
predicted coherence caused by the band's width at w, C(t) F(w t) / (pi w^2) (S_hi - S_lo) / 2 dw,
averaged over t, per unit of noise (the paper's filter-function sensitivity weighted where the
band is wide).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import CoherenceSet
from .filters import filter_function
from .fit import SpectrumFit
from .kernel import chi_values

PROPOSAL_RULE = ("rank candidates by the std across the band population of their predicted coherence, "
                 "in units of the measurement noise, averaged over their times; highest first")
DEFAULT_CANDIDATES = (2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class Proposal:
    """Candidates (K,) with their scores, the ranking (best first) and the sensitivity (K, F)."""

    candidates: np.ndarray
    scores: np.ndarray
    ranked: np.ndarray
    sensitivity: np.ndarray
    times: np.ndarray
    rule: str = PROPOSAL_RULE


def predict_coherence(fit: SpectrumFit, n_pulses: int, t: np.ndarray) -> np.ndarray:
    """C(t) (B, T) that CPMG-n would show at times t (s) under each spectrum of the band population."""
    a, w0, g = fit.boot_a, fit.boot_w0, fit.boot_g
    chi = chi_values(a[:, :, None], w0[:, :, None], g[:, :, None], np.asarray(t)[None, None], n_pulses)
    return np.exp(-chi.sum(1))


def candidate_times(data: CoherenceSet, points: int = 40) -> np.ndarray:
    """The times at which a candidate would be measured: log-spaced over the measured span (s)."""
    return np.geomspace(np.nanmin(data.t), np.nanmax(data.t), points)


def rank_candidates(fit: SpectrumFit, data: CoherenceSet, candidates, omega: np.ndarray) -> Proposal:
    """Score, rank and split over frequency every candidate pulse number (module docstring)."""
    cands = np.asarray(candidates, dtype=np.int64)
    if cands.ndim != 1 or cands.size == 0 or (cands < 0).any():
        raise ValueError(f"candidates must be a non-empty 1-D array of pulse numbers >= 0, got {cands!r}")
    t = candidate_times(data)
    noise = float(np.nanmedian(fit.sigma_used[data.mask])) if data.mask.any() else 0.01
    _, s_lo, s_hi = fit.band(omega)
    dw = np.gradient(omega)
    scores, sens = [], []
    for n in cands:
        c = predict_coherence(fit, int(n), t)
        scores.append(float(c.std(0).mean() / noise))
        filt = filter_function(omega[None, :] * t[:, None], int(n)) / (np.pi * omega[None, :] ** 2)
        sens.append((c.mean(0)[:, None] * filt * (0.5 * (s_hi - s_lo) * dw)[None]).mean(0) / noise)
    scores = np.array(scores)
    order = np.argsort(-scores, kind="stable")
    return Proposal(cands, scores, cands[order], np.array(sens), t)
