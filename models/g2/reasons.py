"""Why a pixel has no g2(0): the reason codes every g2 estimate carries, and the one rule that sets them.

A pixel's normalization `base` (counts per bin of uncorrelated light, n_A n_B D / T; see
`model.pixel_base` and docs/physics.md section 1) is NaN where the singles are unknown, which
means "fit it with g2(0)" (the base is free); a number <= 0 means the singles are known and give
no normalization. The rule, first match wins:

- no events -> REASON_NO_EVENTS;
- fewer events than the estimator works from (its `min_events`), or, with the base free, fewer
  than MIN_EVENTS_FREE_BASE (one event only fixes the normalization) -> REASON_FEW_EVENTS;
- singles known but base <= 0 or infinite, or the base free where the caller requires the singles
  (the on-line path) -> REASON_NO_NORMALIZATION.

After the estimator has run, an estimate it could not find is REASON_NO_ESTIMATE and a g2(0)
without a std (a singular fit covariance) is REASON_NO_STD.
"""

from __future__ import annotations

import numpy as np

REASON_OK, REASON_NO_EVENTS, REASON_FEW_EVENTS, REASON_NO_NORMALIZATION = 0, 1, 2, 3
REASON_NO_ESTIMATE, REASON_NO_STD = 4, 5
G2_REASONS: tuple[str, ...] = ("", "no events", "fewer events than the estimator works from",
                               "no singles normalization", "no estimate found", "std undefined")
"""Why a pixel's g2 (or its g2_std) is NaN, by reason code (0: it is not). Codes are only appended."""
NOTE_NONE, NOTE_EVENTS_ABOVE_RANGE, NOTE_RATE_OUTSIDE_RANGE, NOTE_STARTSTOP, NOTE_DEFAULT_SHAPE = 0, 1, 2, 3, 4
G2_NOTES: tuple[str, ...] = (
    "",
    "more events than the estimator serves well: MLE",
    "singles rate outside the estimator's training: MLE",
    "start-stop histogram the estimator was not trained on: MLE",
    "no antibunching seen in the scan: default emitter shape",
)
"""Notes on a pixel's g2 (by code; 0: none) that has a number: an input outside the estimator's range, sent
to the MLE fallback (codes 1-3), or an estimate made with the default shape (4). Codes are only appended."""
MIN_EVENTS_FREE_BASE: int = 2
"""Fewest events for an estimate with the normalization free (one event only fixes base)."""


def pixel_reasons(n_events: np.ndarray, base: np.ndarray, min_events: int = 1,
                  require_base: bool = False) -> np.ndarray:
    """Reason code (int8, `G2_REASONS`) of each pixel before estimation, from its events and its base
    (counts per bin, NaN: free); REASON_OK where it can be estimated."""
    n = np.asarray(n_events)
    b = np.broadcast_to(np.asarray(base, dtype=float), n.shape)
    free = np.isnan(b)
    reason = np.full(n.shape, REASON_OK, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        reason[(~free & ~(np.isfinite(b) & (b > 0))) | (free & require_base)] = REASON_NO_NORMALIZATION
    reason[(n < min_events) | (free & (n < MIN_EVENTS_FREE_BASE))] = REASON_FEW_EVENTS
    reason[n == 0] = REASON_NO_EVENTS
    return reason


__all__ = ["G2_NOTES", "NOTE_NONE", "NOTE_EVENTS_ABOVE_RANGE", "NOTE_RATE_OUTSIDE_RANGE", "NOTE_STARTSTOP",
           "NOTE_DEFAULT_SHAPE", "REASON_OK", "REASON_NO_EVENTS", "REASON_FEW_EVENTS", "REASON_NO_NORMALIZATION", "REASON_NO_ESTIMATE",
           "REASON_NO_STD", "G2_REASONS", "MIN_EVENTS_FREE_BASE", "pixel_reasons"]
