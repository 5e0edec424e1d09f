"""Measured coherence curves, validated once: what every VQNS fit and proposal takes as input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COHERENCE_RANGE = (-0.05, 1.05)
"""Coherence outside this range cannot come from C = exp(-chi) plus a little readout bias."""
NOISE_SIGMAS = 5.0
"""A point with an error bar is judged in units of it: only beyond COHERENCE_RANGE by more than this many
of its sigma is it not noise (a noisy curve's points legitimately fall outside [0, 1])."""


class CoherenceDataError(ValueError):
    """Curves that cannot be fitted; the message says which array and row."""


@dataclass(frozen=True)
class CoherenceSet:
    """S coherence curves: `n_pulses` (S,) int (0 FID, 1 echo, n CPMG-n), `t` (S, T) s padded with NaN,
    `coherence` (S, T), `sigma` (S, T) one-standard-deviation errors (NaN where t is NaN), `pi_s` (S,)
    the pi-pulse duration each curve was played with (s; 0: ideal zero-length pulses)."""

    n_pulses: np.ndarray
    t: np.ndarray
    coherence: np.ndarray
    sigma: np.ndarray
    sigma_given: bool
    pi_s: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pi_s is None:
            object.__setattr__(self, "pi_s", np.zeros(len(self.n_pulses)))

    @property
    def mask(self) -> np.ndarray:
        """True where a point was measured."""
        return np.isfinite(self.t)

    @property
    def n_points(self) -> int:
        """Number of measured points."""
        return int(self.mask.sum())

    def with_sigma(self, sigma: float) -> CoherenceSet:
        """The same curves with a uniform error (used when none was given)."""
        s = np.where(self.mask, sigma, np.nan)
        return CoherenceSet(self.n_pulses, self.t, self.coherence, s, False, self.pi_s)

    def rows(self, keep: np.ndarray) -> CoherenceSet:
        """The curves selected by `keep` (a boolean mask or indices over the S curves)."""
        return CoherenceSet(self.n_pulses[keep], self.t[keep], self.coherence[keep], self.sigma[keep],
                            self.sigma_given, self.pi_s[keep])

    def append(self, n_pulses: int, t: np.ndarray, coherence: np.ndarray, sigma: np.ndarray,
               pi_s: float = 0.0) -> CoherenceSet:
        """These curves plus one more (rows padded with NaN to a common length)."""
        width = max(self.t.shape[1], len(t))

        def pad(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
            out = np.full((rows.shape[0] + 1, width), np.nan)
            out[:-1, : rows.shape[1]] = rows
            out[-1, : len(row)] = row
            return out

        return coherence_set(np.append(self.n_pulses, n_pulses), pad(self.t, t), pad(self.coherence, coherence),
                             pad(self.sigma, sigma) if self.sigma_given else None, np.append(self.pi_s, pi_s))


def coherence_set(n_pulses, t, coherence, sigma=None, pi_s=None) -> CoherenceSet:
    """Validate and pack curves (`pi_s`: pi-pulse duration in s, one for all curves or one per curve;
    default 0, ideal pulses); raises CoherenceDataError with one clear line for bad input."""
    n = np.asarray(n_pulses)
    t = np.atleast_2d(np.asarray(t, dtype=float))
    c = np.atleast_2d(np.asarray(coherence, dtype=float))
    if n.ndim != 1 or n.dtype.kind not in "iu":
        raise CoherenceDataError(f"n_pulses must be a 1-D integer array, got {n.dtype} with shape {n.shape}")
    if (n < 0).any():
        raise CoherenceDataError(f"n_pulses must be >= 0, got {n[n < 0][0]} in row {np.flatnonzero(n < 0)[0]}")
    if t.shape != c.shape or t.shape[0] != n.shape[0]:
        raise CoherenceDataError(f"shapes differ: n_pulses {n.shape}, t {t.shape}, coherence {c.shape}")
    if sigma is not None:
        s = np.atleast_2d(np.asarray(sigma, dtype=float))
        if s.shape != t.shape:
            raise CoherenceDataError(f"sigma has shape {s.shape}, t has {t.shape}")
    mask = np.isfinite(t) & np.isfinite(c)
    for i in range(t.shape[0]):
        row = t[i][mask[i]]
        if row.size == 0:
            raise CoherenceDataError(f"row {i} (n_pulses={n[i]}) has no finite (t, coherence) point")
        if (row <= 0).any():
            raise CoherenceDataError(f"row {i}: times must be > 0 s, got {row[row <= 0][0]}")
        if (np.diff(row) <= 0).any():
            raise CoherenceDataError(f"row {i}: times are not strictly increasing")
    if sigma is not None:
        s = np.where(mask, s, np.nan)
        if (s[mask] <= 0).any() or not np.isfinite(s[mask]).all():
            raise CoherenceDataError("sigma must be finite and > 0 wherever a point was measured")
    lo, hi = COHERENCE_RANGE
    slack = NOISE_SIGMAS * np.where(mask, s, 0.0) if sigma is not None else np.zeros_like(c)
    bad = mask & ((c < lo - slack) | (c > hi + slack))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        beyond = "" if sigma is None else (f" by {(max(lo - c[i, j], c[i, j] - hi)) / s[i, j]:.1f} sigma "
                                           f"(sigma {s[i, j]:.2g}; noise reaches {NOISE_SIGMAS:g} sigma at most)")
        raise CoherenceDataError(f"coherence[{i}, {j}] = {c[i, j]:.3g} is outside [{lo}, {hi}]{beyond}")
    tp = np.asarray(0.0 if pi_s is None else pi_s, dtype=float)
    if tp.ndim > 1 or tp.size not in (1, n.size) or not np.isfinite(tp).all() or (tp < 0).any():
        raise CoherenceDataError(f"pi_s must be one duration >= 0 s or one per curve ({n.size}), got {pi_s!r}")
    tp = np.broadcast_to(tp.reshape(-1), n.shape).copy()
    crowded = mask & (n[:, None] * tp[:, None] > t * (1.0 + 1e-9))
    if crowded.any():
        i, j = np.argwhere(crowded)[0]
        raise CoherenceDataError(f"row {i}: CPMG-{n[i]} at t = {t[i, j]:.4g} s cannot hold {n[i]} pi pulses of "
                                 f"{tp[i]:.3g} s (pi_s); no rig plays that point")
    t = np.where(mask, t, np.nan)
    c = np.where(mask, c, np.nan)
    if sigma is None:
        return CoherenceSet(n.astype(np.int64), t, c, np.where(mask, np.nan, np.nan), False, tp)
    return CoherenceSet(n.astype(np.int64), t, c, s, True, tp)
