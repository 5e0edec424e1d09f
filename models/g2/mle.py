"""Poisson maximum-likelihood g2(0): per-pixel estimates, the shared emitter shape, the Cramer-Rao bound.

The counts n_k of a pixel's histogram are independent Poisson with mean base * c_k(g0)
(`model.py`: c_k = w_k - (1 - g0) v_k, linear in g0). With the shape fixed:

- base known from the singles (base = n_A n_B D / T):
      L(g0) = sum_k n_k log c_k(g0) - base S(g0),      S(g0) = sum_k c_k(g0),
  concave in g0.
- base free: its MLE for fixed g0 is N / S(g0) (N = sum_k n_k), and the profile
      L_p(g0) = sum_k n_k log c_k(g0) - N log S(g0)
  is the multinomial likelihood of p_k = c_k / S. Each p_k is linear in theta = 1 / S(g0),
  which is monotone in g0, so L_p is concave in theta and unimodal in g0.
Either way the score has one sign change (+ then -) and a bracketed, safeguarded Newton
iteration (Numerical Recipes' rtsafe, run on all pixels at once) finds the maximum.

g0 is not clipped to the physical [0, 1]: clipping piles low-count estimates onto the
limits and biases them. It is searched in G0_BOUNDS = [-1, 2], and the likelihood is
extended to the unphysical g0 < 0 in the usual way: a bin with no counts contributes
-base c_k even where c_k < 0; only bins with counts must keep c_k > 0 (their log), and
with base free S(g0) > 0. At low counts the estimate can then go below 0 (the centre bins
are empty), which is what keeps it unbiased; an estimate on a bound means the maximum
lies beyond it.

g2_std is 1/sqrt of the expected Fisher information for g0 (base free: the marginal
variance from the 2x2 information of (g0, base)), evaluated at the estimate moved into
the physical range [0, 1] (the information is undefined where some c_k <= 0), with
base = N / S(g0) there when it is free. It is the Cramer-Rao bound at the estimate:
good coverage from a few hundred events on, optimistic below (docs/physics.md section 1.8).

No-estimate rule (NaN for g2 and g2_std; `reasons.pixel_reasons`, the rule every g2 estimate
follows): a pixel with no events; with base free also a pixel with a single event (its one
count only fixes the normalization: the profile likelihood is then monotone and its maximum
sits on a bound); with base known a pixel whose singles give base <= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS

from .model import (
    EmitterShape,
    bin_widths,
    exp_bin_integrals,
    exp_bin_integrals_dt,
    kernel_bin_averages,
)
from .reasons import MIN_EVENTS_FREE_BASE, REASON_OK, pixel_reasons

G0_BOUNDS: tuple[float, float] = (-1.0, 2.0)
"""The range searched for g0 (not clipped to the physical [0, 1]; see the module docstring)."""

_TOL = 1e-10  # convergence of g0 (absolute)
_MAX_ITER = 100


def _as_histograms(hist) -> np.ndarray:
    """float64 (..., N_BINS) copy of `hist`, or ValueError."""
    h = np.asarray(hist)
    if h.ndim == 0 or h.shape[-1] != N_BINS:
        raise ValueError(
            f"histograms must have {N_BINS} bins on the last axis, shape (P, {N_BINS}); got shape {h.shape}")
    if not (np.issubdtype(h.dtype, np.integer) or np.issubdtype(h.dtype, np.floating)):
        raise ValueError(f"histogram counts must be integers or floats, got dtype {h.dtype}")
    h = h.astype(np.float64)
    if not np.all(np.isfinite(h)):
        raise ValueError("histogram counts must be finite; got NaN or inf")
    if np.any(h < 0):
        raise ValueError(f"histogram counts must be >= 0; got {int(np.sum(h < 0))} negative bin(s), "
                         f"smallest {h.min()}")
    return h


# ---------------------------------------------------------------------------- per-pixel g0


def _score(g, n, N, w, v, W, V, base):
    """Score dL/dg0 and its derivative for pixels (rows of n) at g (P,); base None = profiled."""
    c = w - (1.0 - g)[:, None] * v
    counted = n > 0
    r = np.divide(n, c, out=np.zeros_like(n), where=counted)          # n_k / c_k
    f = r @ v
    fp = -(np.divide(r, c, out=np.zeros_like(n), where=counted) @ (v * v))
    if base is None:
        S = W - (1.0 - g) * V
        f = f - N * V / S
        fp = fp + N * V * V / (S * S)
    else:
        f = f - base * V
    return f, fp


def _solve_g0(n: np.ndarray, v: np.ndarray, w: np.ndarray, base: np.ndarray | None) -> np.ndarray:
    """MLE of g0 for each row of n (P, N_BINS), in G0_BOUNDS; base (P,) or None (profiled)."""
    P = n.shape[0]
    N = n.sum(axis=1)
    W, V = float(w.sum()), float(v.sum())
    counted = n > 0
    # The domain: c_k(g) > 0 for bins with counts (an interval around g = 1, where c = w > 0).
    with np.errstate(divide="ignore"):
        edge = 1.0 - w / v                       # where c_k = 0
    lo_dom = np.where(counted & (v > 0), edge, -np.inf).max(axis=1)
    hi_dom = np.where(counted & (v < 0), edge, np.inf).min(axis=1)
    if base is None and V != 0.0:                # S(g) > 0
        s_edge = 1.0 - W / V
        if V < 0:
            hi_dom = np.minimum(hi_dom, s_edge)
        else:
            lo_dom = np.maximum(lo_dom, s_edge)
    # Step a hair inside a domain edge (the score is infinite on it); the bounds are kept exactly.
    lo, hi = np.full(P, G0_BOUNDS[0]), np.full(P, G0_BOUNDS[1])
    fin = np.isfinite(lo_dom)
    lo[fin] = np.maximum(lo[fin], lo_dom[fin] + 1e-12 * np.maximum(1.0, np.abs(lo_dom[fin])))
    fin = np.isfinite(hi_dom)
    hi[fin] = np.minimum(hi[fin], hi_dom[fin] - 1e-12 * np.maximum(1.0, np.abs(hi_dom[fin])))

    f_lo, _ = _score(lo, n, N, w, v, W, V, base)
    f_hi, _ = _score(hi, n, N, w, v, W, V, base)
    g = np.where(f_lo <= 0, lo, np.where(f_hi >= 0, hi, np.nan))
    act = np.flatnonzero(np.isnan(g))            # root strictly inside (lo, hi)
    if act.size == 0:
        return g
    lo, hi = lo[act], hi[act]
    x = np.clip(0.5, lo, hi)
    x = np.where((x <= lo) | (x >= hi), 0.5 * (lo + hi), x)
    dx_old = hi - lo
    dx = dx_old.copy()
    na, Na = n[act], N[act]
    ba = None if base is None else base[act]
    for _ in range(_MAX_ITER):
        f, fp = _score(x, na, Na, w, v, W, V, ba)
        lo = np.where(f > 0, x, lo)
        hi = np.where(f < 0, x, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x - f / fp
        use_newton = (fp < 0) & (newton > lo) & (newton < hi) & (np.abs(f / fp) < 0.5 * np.abs(dx_old))
        x_new = np.where(use_newton, newton, 0.5 * (lo + hi))
        x_new = np.where(f == 0, x, x_new)
        dx_old, dx = dx, x_new - x
        x = x_new
        done = (np.abs(dx) < _TOL) | (hi - lo < _TOL)
        if np.any(done):
            g[act[done]] = x[done]
            keep = ~done
            act = act[keep]
            x, lo, hi, dx, dx_old = x[keep], lo[keep], hi[keep], dx[keep], dx_old[keep]
            na, Na = na[keep], Na[keep]
            ba = None if ba is None else ba[keep]
        if act.size == 0:
            break
    if act.size:                                 # not converged in _MAX_ITER (not seen): best bracket
        g[act] = x
    return g


def _fisher(g_info, v, w, base, profiled: bool):
    """Expected Fisher information for g0 at g_info (in [0, 1]); marginal over base when profiled."""
    c = w - (1.0 - g_info)[:, None] * v
    J = (v * v / c).sum(axis=1)
    if not profiled:
        return base * J
    S = c.sum(axis=1)
    V = v.sum()
    return base * (J - V * V / S)


def _as_bases(base, lead: tuple) -> np.ndarray:
    """`base` (None, a scalar or shape `lead`; counts per bin, NaN: fitted) as float (P,), or ValueError."""
    P = int(np.prod(lead, dtype=np.int64))
    if base is None:
        return np.full(P, np.nan)
    b = np.asarray(base, dtype=float)
    if b.ndim and b.shape != lead and b.size != 1:
        raise ValueError(f"base must be a scalar or have shape {lead}, got {b.shape}")
    if np.any(np.isinf(b)) or np.any(b < 0):
        raise ValueError("base must be >= 0 counts per bin and finite (NaN: fitted with g2(0))")
    return np.broadcast_to(b, lead).reshape(P).astype(float)


def estimate_g2(hist, shape: EmitterShape, base=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel Poisson MLE of g2(0) with the emitter shape fixed, and its Fisher std.

    hist: (P, N_BINS) counts (any leading shape works; the results have it).
    shape: the scan's `EmitterShape` (e.g. from `fit_shape` on the summed histograms).
    base: each pixel's normalization n_a n_b D / t_acq in counts per bin (`model.pixel_base`), a
    scalar or of shape hist.shape[:-1]; NaN (or None: all) where it is unknown, and it is then fitted
    with g0 (profiled out). Negative or infinite values are a ValueError.
    Returns (g2, g2_std), float64 arrays of shape hist.shape[:-1]. g2 is searched in
    G0_BOUNDS, not clipped to [0, 1]; NaN per the no-estimate rule of the module docstring
    (`reasons.pixel_reasons`).
    """
    h = _as_histograms(hist)
    lead = h.shape[:-1]
    n = h.reshape(-1, N_BINS)
    P = n.shape[0]
    v = kernel_bin_averages(shape)
    w = bin_widths()
    N = n.sum(axis=1)
    base = _as_bases(base, lead)
    ok = pixel_reasons(N, base) == REASON_OK
    free = np.isnan(base)
    g2 = np.full(P, np.nan)
    std = np.full(P, np.nan)
    for rows, profiled in ((ok & ~free, False), (ok & free, True)):
        if not np.any(rows):
            continue
        nk = n[rows]
        bk = None if profiled else base[rows]
        g = _solve_g0(nk, v, w, bk)
        g_info = np.clip(g, 0.0, 1.0)
        if profiled:
            bk = N[rows] / (w.sum() - (1.0 - g_info) * v.sum())
        info = _fisher(g_info, v, w, bk, profiled)
        g2[rows] = g
        std[rows] = 1.0 / np.sqrt(info)
    return g2.reshape(lead), std.reshape(lead)


@dataclass(frozen=True)
class MleEstimator:
    """`estimate_g2` as a g2 estimator (`estimation.G2Estimator`): (hist, shape, base) -> (g2, g2_std)."""

    name: str = "mle"
    min_events: int = 1
    uses_shape: bool = True

    def estimate(self, hist, shape: EmitterShape, base) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) by the Poisson MLE with the shape fixed; base per pixel (NaN: fitted)."""
        return estimate_g2(hist, shape, base)


def cramer_rao_std(g0, n_events, shape: EmitterShape, base_known: bool = False) -> np.ndarray:
    """Cramer-Rao bound on std(g0) for a Poisson histogram of expected total n_events.

    From the expected Fisher information of the bin counts with the shape known, at
    base = n_events / S(g0): 1 / sqrt(base sum_k v_k^2 / c_k) with base known, else the
    marginal 1 / sqrt(base (sum_k v_k^2 / c_k - V^2 / S)). g0 and n_events broadcast;
    NaN where some c_k(g0) <= 0 (the Poisson model has no meaning there) or n_events <= 0.
    """
    g0 = np.asarray(g0, dtype=float)
    n_events = np.asarray(n_events, dtype=float)
    g0b, nb = np.broadcast_arrays(g0, n_events)
    v = kernel_bin_averages(shape)
    w = bin_widths()
    c = w - (1.0 - g0b)[..., None] * v
    valid = np.all(c > 0, axis=-1) & (nb > 0)
    c = np.where(valid[..., None], c, 1.0)
    S = c.sum(axis=-1)
    J = (v * v / c).sum(axis=-1)
    info = J if base_known else J - v.sum() ** 2 / S
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 / np.sqrt(nb / S * info)
    return np.where(valid, out, np.nan)[()]


# ---------------------------------------------------------------------------- shape fit


def wing_level(n: np.ndarray) -> float:
    """Mean counts per bin in the 20 outermost bins on each side, where g2 ~ 1."""
    return float(np.concatenate([n[:20], n[-20:]]).mean())


def g0_start_value(n: np.ndarray, level: float) -> float:
    """A rough g0 to start a fit from: the centre bins over the uncorrelated level, clipped to [0, 0.95]."""
    c0 = n[N_BINS // 2 - 1:N_BINS // 2 + 2].mean()
    return float(np.clip(c0 / level, 0.0, 0.95)) if level > 0 else 0.5


@dataclass(frozen=True)
class ShapeFit:
    """Result of `fit_shape_full`: the shape and the fitted g0, base (counts/bin) of the summed histogram."""

    shape: EmitterShape
    g0: float
    base: float
    n_events: float
    nll: float
    """Minimized negative log-likelihood per event (constants dropped; profiled over base when it was free)."""
    success: bool
    message: str


T1_BOUNDS_S = (1e-9, 200e-9)
T2_BOUNDS_S = (20e-9, 5e-6)
A_BOUNDS = (0.0, 10.0)
G0_FIT_BOUNDS = G0_BOUNDS

_NS = 1e-9


def _nll_and_grad(x, n, N, w, base):
    """Per-event negative log-likelihood of (g0, ln t1/ns, ln t2/ns, a) and its gradient.

    base None: the profile over base (multinomial, sum n log c - N log S); else Poisson
    with that base (sum n log c - base S). Constants are dropped. log c is continued below
    c = eps by its second-order Taylor expansion, so that the objective stays finite and
    smooth when a step leaves the domain.
    """
    g0, lt1, lt2, a = x
    t1, t2 = np.exp(lt1) * _NS, np.exp(lt2) * _NS
    I1, I2 = exp_bin_integrals(t1), exp_bin_integrals(t2)
    v = ((1.0 + a) * I1 - a * I2) / BIN_WIDTH_S
    c = w - (1.0 - g0) * v
    S = c.sum()
    if base is None and S <= 0:
        return 1e3, np.zeros(4)
    eps = 1e-9
    cs = np.maximum(c, eps)
    logc = np.where(c >= eps, np.log(cs), np.log(eps) + (c - eps) / eps - 0.5 * ((c - eps) / eps) ** 2)
    dlogc = np.where(c >= eps, 1.0 / cs, 1.0 / eps - (c - eps) / eps**2)
    if base is None:
        nll = -(n @ logc - N * np.log(S)) / N
        r = (n * dlogc - N / S) / N              # d(-nll)/dc_k
    else:
        nll = -(n @ logc - base * S) / N
        r = (n * dlogc - base) / N
    dc = np.empty((4, N_BINS))
    dc[0] = v
    dc[1] = -(1.0 - g0) * (1.0 + a) * exp_bin_integrals_dt(t1) / BIN_WIDTH_S * t1
    dc[2] = (1.0 - g0) * a * exp_bin_integrals_dt(t2) / BIN_WIDTH_S * t2
    dc[3] = -(1.0 - g0) * (I1 - I2) / BIN_WIDTH_S
    return nll, -(dc @ r)


_STARTS = [(t1, t2, a) for t1 in (3.0, 15.0, 60.0, 150.0) for t2 in (30.0, 100.0, 300.0, 1500.0)
           for a in (0.3, 1.0, 3.0)]
_N_REFINED = 8


def fit_shape_full(hist_sum, base: float | None = None, start: EmitterShape | None = None) -> ShapeFit:
    """Poisson MLE of (g0, t1, t2, a, base) on a summed, high-count histogram.

    hist_sum: (N_BINS,) counts, or (..., N_BINS) which is summed over the leading axes.
    base: the summed histogram's normalization when the singles give it, i.e. the sum over
    pixels of n_a n_b D / t_acq (counts per bin of uncorrelated light); None fits it
    (profiled out: its MLE is N / S). Knowing it matters: with a +-250 ns window the slow
    bunching (t2 ~ 250 ns) looks much like a change of base, and with base free t2 and a
    are only known to tens of % even from 1e6 events (their Cramer-Rao bound), which
    shifts every pixel's g2(0) estimate together.
    (g0, ln t1, ln t2, a) are fitted with L-BFGS-B within G0_FIT_BOUNDS, T1_BOUNDS_S,
    T2_BOUNDS_S, A_BOUNDS, from the _N_REFINED best (by likelihood) of a grid of starts
    (t1 in 3, 15, 60, 150 ns; t2 in 30, 100, 300, 1500 ns; a in 0.3, 1, 3), keeping the best. With g0 near 1 or a near 0
    some shape parameters are not determined by the data; the fit then returns whatever
    the bounds allow. With `start` (a previous fit of a smaller sum, on line) the fit is refined
    from that shape alone. ValueError when there are no events or base is not positive.
    """
    h = _as_histograms(hist_sum)
    n = h.reshape(-1, N_BINS).sum(axis=0)
    N = float(n.sum())
    if N <= 0:
        raise ValueError("fit_shape needs a histogram with events; got an empty one")
    if base is not None:
        base = float(base)
        if not (np.isfinite(base) and base > 0):
            raise ValueError(f"base must be a positive number of counts per bin, got {base!r}")
    w = bin_widths()
    level = base if base is not None else wing_level(n)
    g0_start = g0_start_value(n, level)
    bounds = [G0_FIT_BOUNDS, tuple(np.log(np.array(T1_BOUNDS_S) / _NS)),
              tuple(np.log(np.array(T2_BOUNDS_S) / _NS)), A_BOUNDS]
    if start is None:
        starts = [np.array([g0_start, np.log(t1), np.log(t2), a]) for t1, t2, a in _STARTS]
        starts.sort(key=lambda x0: _nll_and_grad(x0, n, N, w, base)[0])
        starts = starts[:_N_REFINED]
    else:
        a0 = float(np.clip(start.a, *A_BOUNDS))
        starts = [np.array([g0_start, *np.clip(np.log([start.t1 / _NS, start.t2 / _NS]), *np.array(bounds[1:3]).T), a0])]
    best = None
    for x0 in starts:
        res = minimize(_nll_and_grad, x0, args=(n, N, w, base), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    g0, lt1, lt2, a = best.x
    shape = EmitterShape(float(np.exp(lt1) * _NS), float(np.exp(lt2) * _NS), float(a))
    if base is None:
        base = N / float(w.sum() - (1.0 - g0) * kernel_bin_averages(shape).sum())
    return ShapeFit(shape=shape, g0=float(g0), base=float(base), n_events=N, nll=float(best.fun),
                    success=bool(best.success), message=str(best.message))


def fit_shape(hist_sum, base: float | None = None, start: EmitterShape | None = None) -> EmitterShape:
    """The emitter shape (t1, t2 in s, a) from a summed, high-count histogram; see `fit_shape_full`."""
    return fit_shape_full(hist_sum, base, start).shape


__all__ = [
    "G0_BOUNDS", "MIN_EVENTS_FREE_BASE", "ShapeFit", "estimate_g2", "MleEstimator", "cramer_rao_std",
    "fit_shape", "fit_shape_full",
]
