"""A histogram's normalization, the one place it is computed: the base and per-bin weight of each pixel's
model (docs/physics.md sections 1.2 and 1.6), expected counts base_p * weight_pk * c_k(g0).

- allpairs: base = n_A n_B D / T (`model.pixel_base`), weight 1.
- startstop (a time-to-amplitude converter, `rt/kernels/binning.py`): an accepted start at s waits for
  the first delayed stop; a stop at delay tau ends the conversion if no stop came in delays
  [-250 ns, tau). For stops of rate r_B (Poisson) that survival is exp(-r_B (tau + 250 ns)), so

      E[n_k] = (accepted starts) x r_B x integral_bin_k g2(tau) exp(-r_B (tau + 250 ns)) dtau

  i.e. base = (accepted starts) r_B D and weight_k = the survival averaged over bin k.
  The accepted starts are counted by the binner (`n_starts`) or, when not counted, follow from the
  converter's renewal cycle for Poisson starts (rate r_A) and stops: wait for a start (1 / r_A), armed
  until the first stop or the window's end (E min(X, T_w) = p / r_B, p = 1 - exp(-r_B T_w) the chance
  a stop comes), then dead for tac_dead after a stop (p tac_dead):

      accepted starts = T / (1 / r_A + p / r_B + p tac_dead).

  The survival above takes the stops as Poisson. Light from an emitter is not: the chance that no stop
  came before delay tau is exp(-r_B integral_{-250 ns}^{tau} g2), and at 500 kcps per detector the
  bunching of an NV moves g2(0) by +0.08 if it is left out. `refine_startstop` redoes the weights with
  a pixel's own g2 (its estimate), which estimation.estimate_pixels iterates.

  With tac_dead = 0 the pairs, accepted starts x p, are p / (T_w (r_B + r_A p)) times the all-pairs
  count r_A r_B T T_w, the ratio of binning.py's docstring.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nvscope.proto.histogram import BIN_WIDTH_S, FULL_RANGE_PS, HALF_RANGE_PS, N_BINS, bin_edges_s

from .model import PixelModels, bin_widths, pixel_base

WINDOW_S = FULL_RANGE_PS * 1e-12
"""The converter's window T_w (s): 500 ns."""
STOP_DELAY_S = HALF_RANGE_PS * 1e-12
"""The delay of the stop channel (s): 250 ns, so a stop at delay tau is tau + 250 ns into the window."""

_EDGES_S = bin_edges_s()


def _per_pixel(x, P: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, dtype=float), (P,))


def accepted_starts(n_a, n_b, t_acq, tac_dead_s=0.0) -> np.ndarray:
    """Expected starts a converter accepts in T = t_acq s from Poisson singles n_a, n_b (renewal model of
    the module docstring), float; tac_dead_s: dead time after a stop, s."""
    a, b, t, dead = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (n_a, n_b, t_acq, tac_dead_s)))
    with np.errstate(divide="ignore", invalid="ignore"):
        r_a, r_b = a / t, b / t
        p = -np.expm1(-r_b * WINDOW_S)
        armed = np.where(r_b > 0, p / r_b, WINDOW_S)          # E min(first stop, T_w), s
        cycle = 1.0 / r_a + armed + p * dead
        return np.where(r_a > 0, t / cycle, 0.0)


def startstop_weight(r_b) -> np.ndarray:
    """weight_pk: the survival exp(-r_B (tau + 250 ns)) averaged over each bin, (P, N_BINS), r_b (P,) in 1/s."""
    r = np.atleast_1d(np.asarray(r_b, dtype=float))[:, None]
    lo, width = _EDGES_S[:-1] + STOP_DELAY_S, np.diff(_EDGES_S)
    x = r * width
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(x > 0, -np.expm1(-x) / x, 1.0)
    return np.exp(-r * lo) * avg


def startstop_base_weight(n_a, n_b, t_acq, tac_dead_s: float = 0.0, n_starts=None) -> tuple[np.ndarray, np.ndarray]:
    """(base (P,), weight (P, N_BINS)) of start-stop histograms: base = (accepted starts) r_B D counts per
    bin, weight the bin-averaged survival exp(-r_B (tau + 250 ns)); r_B = n_b / t_acq. Accepted starts:
    n_starts where counted (>= 0), else the renewal model (`accepted_starts`) with the converter's
    dead time tac_dead_s (s). NaN base (weight 1) where the singles fix nothing."""
    P = int(np.broadcast(np.asarray(n_a), np.asarray(n_b), np.asarray(t_acq)).size)
    a, b, t = (_per_pixel(x, P) for x in (n_a, n_b, t_acq))
    good = np.isfinite(a) & np.isfinite(b) & np.isfinite(t) & (a >= 0) & (b >= 0) & (t > 0)
    t_ok = np.where(good, t, 1.0)
    r_b = np.where(good, b / t_ok, 0.0)
    starts = accepted_starts(np.where(good, a, 0.0), np.where(good, b, 0.0), t_ok, _per_pixel(tac_dead_s, P))
    if n_starts is not None:
        counted = _per_pixel(n_starts, P)
        starts = np.where(counted >= 0, counted, starts)
    base = np.where(good, starts * r_b * BIN_WIDTH_S, np.nan)
    return base, startstop_weight(r_b)


def refine_startstop(models: PixelModels, g0) -> PixelModels:
    """The start-stop models with each pixel's survival exp(-r_B integral_{-250 ns}^{tau} g2) from its own
    g2 (g0 (P,), clipped to [0, 2]; NaN: g2 = 1) instead of g2 = 1; allpairs models are returned as
    they are. The cumulative integral is taken to the bin's centre."""
    if models.mode != "startstop" or models.stop_rate is None:
        return models
    g = np.clip(np.nan_to_num(np.asarray(g0, dtype=float), nan=1.0), 0.0, 2.0)
    c = bin_widths()[None, :] - (1.0 - g)[:, None] * models.kernel       # bin averages of g2 (per D)
    cum = np.cumsum(c, axis=1) - 0.5 * c
    weight = np.exp(-models.stop_rate[:, None] * cum * BIN_WIDTH_S)
    return replace(models, weight=weight)


def stop_rates(n_b, t_acq, n_pixels: int) -> np.ndarray:
    """Each pixel's stop rate r_B = n_b / t_acq (1/s), (P,); 0 where the singles fix nothing."""
    b, t = _per_pixel(n_b, n_pixels), _per_pixel(t_acq, n_pixels)
    good = np.isfinite(b) & np.isfinite(t) & (b >= 0) & (t > 0)
    return np.where(good, b / np.where(good, t, 1.0), 0.0)


def histogram_normalization(mode: str, n_a, n_b, t_acq, n_pixels: int, tac_dead_s=0.0,
                            n_starts=None) -> tuple[np.ndarray, np.ndarray]:
    """(base (P,), weight (P, N_BINS)) of histograms acquired in `mode` ("allpairs" or "startstop"):
    allpairs (`model.pixel_base`, ones), startstop (`startstop_base_weight`). NaN base (weight 1) for
    every pixel when any of n_a, n_b, t_acq is None (the base is then fitted)."""
    if mode not in ("allpairs", "startstop"):
        raise ValueError(f"histogram mode must be 'allpairs' or 'startstop', got {mode!r}")
    if mode == "allpairs" or n_a is None or n_b is None or t_acq is None:
        return pixel_base(n_a, n_b, t_acq, n_pixels), np.ones((n_pixels, N_BINS))
    base, weight = startstop_base_weight(_per_pixel(n_a, n_pixels), _per_pixel(n_b, n_pixels),
                                         _per_pixel(t_acq, n_pixels), tac_dead_s, n_starts)
    return base, np.broadcast_to(weight, (n_pixels, N_BINS)).copy()


__all__ = ["WINDOW_S", "STOP_DELAY_S", "accepted_starts", "refine_startstop", "stop_rates", "startstop_weight", "startstop_base_weight",
           "histogram_normalization"]
