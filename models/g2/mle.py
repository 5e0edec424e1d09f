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
    PixelModels,
    bin_widths,
    pixel_models,
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
    """Score dL/dg0 and its derivative for pixels (rows of n) at g (P,); w, v (P, N_BINS) the rows'
    weighted bin widths and kernels, W, V (P,) their sums; base None = profiled."""
    c = w - (1.0 - g)[:, None] * v
    counted = n > 0
    r = np.divide(n, c, out=np.zeros_like(n), where=counted)          # n_k / c_k
    f = np.einsum("pk,pk->p", r, v)
    fp = -np.einsum("pk,pk->p", np.divide(r, c, out=np.zeros_like(n), where=counted), v * v)
    if base is None:
        S = W - (1.0 - g) * V
        f = f - N * V / S
        fp = fp + N * V * V / (S * S)
    else:
        f = f - base * V
    return f, fp


def _solve_g0(n: np.ndarray, v: np.ndarray, w: np.ndarray, base: np.ndarray | None) -> np.ndarray:
    """MLE of g0 for each row of n (P, N_BINS), in G0_BOUNDS; w, v (P, N_BINS) each row's weight * bin
    width and weight * kernel (the model c_pk = w_pk - (1 - g0) v_pk); base (P,) or None (profiled)."""
    P = n.shape[0]
    N = n.sum(axis=1)
    W, V = w.sum(axis=1), v.sum(axis=1)
    counted = n > 0
    # The domain: c_k(g) > 0 for bins with counts (an interval around g = 1, where c = w > 0).
    with np.errstate(divide="ignore"):
        edge = 1.0 - w / v                       # where c_k = 0
    lo_dom = np.where(counted & (v > 0), edge, -np.inf).max(axis=1)
    hi_dom = np.where(counted & (v < 0), edge, np.inf).min(axis=1)
    if base is None:                             # S(g) > 0
        with np.errstate(divide="ignore"):
            s_edge = 1.0 - W / V
        hi_dom = np.where(V < 0, np.minimum(hi_dom, s_edge), hi_dom)
        lo_dom = np.where(V > 0, np.maximum(lo_dom, s_edge), lo_dom)
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
    na, Na, wa, va, Wa, Va = n[act], N[act], w[act], v[act], W[act], V[act]
    ba = None if base is None else base[act]
    for _ in range(_MAX_ITER):
        f, fp = _score(x, na, Na, wa, va, Wa, Va, ba)
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
            na, Na, wa, va, Wa, Va = na[keep], Na[keep], wa[keep], va[keep], Wa[keep], Va[keep]
            ba = None if ba is None else ba[keep]
        if act.size == 0:
            break
    if act.size:                                 # not converged in _MAX_ITER (not seen): best bracket
        g[act] = x
    return g


def _fisher(g_info, v, w, base, profiled: bool):
    """Expected Fisher information for g0 at g_info (in [0, 1]); w, v (P, N_BINS) as `_solve_g0`;
    marginal over base when profiled."""
    c = w - (1.0 - g_info)[:, None] * v
    J = (v * v / c).sum(axis=1)
    if not profiled:
        return base * J
    S = c.sum(axis=1)
    V = v.sum(axis=1)
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


def _models_for(models, base, P: int, lead: tuple) -> PixelModels:
    """`PixelModels` for P pixels from PixelModels, or from an EmitterShape and a base (the allpairs model)."""
    if isinstance(models, PixelModels):
        if base is not None:
            raise ValueError("estimate_g2: give the base inside PixelModels, not beside it")
        if len(models) != P:
            raise ValueError(f"PixelModels hold {len(models)} pixels, the histograms {P}")
        b = models.base
        if np.any(np.isinf(b)) or np.any(b < 0):
            raise ValueError("base must be >= 0 counts per bin and finite (NaN: fitted with g2(0))")
        if not (np.all(np.isfinite(models.weight)) and np.all(models.weight > 0)
                and np.all(np.isfinite(models.kernel))):
            raise ValueError("PixelModels: weights must be finite and > 0, kernels finite")
        return models
    if not isinstance(models, EmitterShape):
        raise TypeError(f"estimate_g2 takes PixelModels or an EmitterShape, got {type(models).__name__}")
    return pixel_models(_as_bases(base, lead), kernel_bin_averages(models), n_pixels=P)


def estimate_g2(hist, models, base=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel Poisson MLE of g2(0) with each pixel's model fixed, and its Fisher std.

    hist: (P, N_BINS) counts (any leading shape works; the results have it).
    models: the pixels' `PixelModels` (base, kernel, weight: docs/physics.md section 1.6 and 1.2); or,
    as before, the scan's `EmitterShape` with `base` (each pixel's n_a n_b D / t_acq in counts per bin,
    a scalar or of shape hist.shape[:-1]; NaN or None: fitted), the allpairs model.
    A base that is NaN is fitted with g0 (profiled out); negative or infinite is a ValueError.
    Returns (g2, g2_std), float64 arrays of shape hist.shape[:-1]. g2 is searched in
    G0_BOUNDS, not clipped to [0, 1]; NaN per the no-estimate rule of the module docstring
    (`reasons.pixel_reasons`). With weights the model is base * weight_k * c_k(g0): w and v of the
    module docstring become weight * w and weight * kernel, row by row.
    """
    h = _as_histograms(hist)
    lead = h.shape[:-1]
    n = h.reshape(-1, N_BINS)
    P = n.shape[0]
    m = _models_for(models, base, P, lead)
    w_all = m.weight * bin_widths()
    v_all = m.weight * m.kernel
    N = n.sum(axis=1)
    base = m.base
    ok = pixel_reasons(N, base) == REASON_OK
    free = np.isnan(base)
    g2 = np.full(P, np.nan)
    std = np.full(P, np.nan)
    for rows, profiled in ((ok & ~free, False), (ok & free, True)):
        if not np.any(rows):
            continue
        nk, w, v = n[rows], w_all[rows], v_all[rows]
        bk = None if profiled else base[rows]
        g = _solve_g0(nk, v, w, bk)
        g_info = np.clip(g, 0.0, 1.0)
        if profiled:
            bk = N[rows] / (w.sum(axis=1) - (1.0 - g_info) * v.sum(axis=1))
        info = _fisher(g_info, v, w, bk, profiled)
        g2[rows] = g
        std[rows] = 1.0 / np.sqrt(info)
    return g2.reshape(lead), std.reshape(lead)


@dataclass(frozen=True)
class MleEstimator:
    """`estimate_g2` as a g2 estimator (`estimation.G2Estimator`): (hist, PixelModels) -> (g2, g2_std)."""

    name: str = "mle"
    min_events: int = 1

    def estimate(self, hist, models: PixelModels, base=None) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) by the Poisson MLE with each pixel's model fixed (base NaN: fitted); or, as before,
        a scan-wide EmitterShape and base (`estimate_g2`)."""
        return estimate_g2(hist, models, base)

    def notes(self, hist, models: PixelModels) -> np.ndarray:
        """The MLE serves every pixel its model describes: no notes (int8 zeros)."""
        return np.zeros(len(models), dtype=np.int8)


def cramer_rao_models(g0, models: PixelModels) -> np.ndarray:
    """Cramer-Rao bound on std(g0) (P,) at each pixel's model with its base known: 1 / sqrt(base
    sum_k weight_k v_k^2 / (w_k - (1 - g0) v_k)); NaN where the base is unknown or <= 0, or some
    c_k(g0) <= 0. g0: a scalar or (P,)."""
    g = np.broadcast_to(np.asarray(g0, dtype=float), (len(models),))
    c = bin_widths() - (1.0 - g)[:, None] * models.kernel
    valid = np.all(c > 0, axis=1) & np.isfinite(models.base) & (models.base > 0)
    c = np.where(valid[:, None], c, 1.0)
    info = models.base * (models.weight * models.kernel**2 / c).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, 1.0 / np.sqrt(info), np.nan)


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
    g0_std: float = float("nan")
    """Std of the fitted g0 with the shape fitted too (the 4-parameter Fisher information; marginal over
    the base when it was free)."""
    determined: bool = True
    """Whether the scan shows antibunching beyond its noise (1 - g0 > SIGNIFICANCE * g0_std and the
    likelihood ratio against g2 = 1 above LR_THRESHOLD). False for uncorrelated light: the fitted shape
    is then noise, and callers use NV_DEFAULT_SHAPE (and note it)."""


SIGNIFICANCE = 3.0
"""Antibunching is taken as seen when 1 - g0 exceeds this many g0_std (`ShapeFit.determined`)."""
LR_THRESHOLD = 16.0
"""... and twice the log-likelihood ratio of the fit over g2 = 1 exceeds this (about p = 0.003 for 4 free
parameters; the shape is not identified under g2 = 1, so the chi^2 law is only a guide)."""


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
    c, dc = _model_and_jacobian(x, w)
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
        nll = -(n @ logc - np.sum(base * c)) / N
        r = (n * dlogc - base) / N
    return nll, -(dc @ r)


def _model_and_jacobian(x, w):
    """c_k of (g0, ln t1/ns, ln t2/ns, a) and its derivatives (4, N_BINS)."""
    g0, lt1, lt2, a = x
    t1, t2 = np.exp(lt1) * _NS, np.exp(lt2) * _NS
    I1, I2 = exp_bin_integrals(t1), exp_bin_integrals(t2)
    v = ((1.0 + a) * I1 - a * I2) / BIN_WIDTH_S
    c = w - (1.0 - g0) * v
    dc = np.empty((4, N_BINS))
    dc[0] = v
    dc[1] = -(1.0 - g0) * (1.0 + a) * exp_bin_integrals_dt(t1) / BIN_WIDTH_S * t1
    dc[2] = (1.0 - g0) * a * exp_bin_integrals_dt(t2) / BIN_WIDTH_S * t2
    dc[3] = -(1.0 - g0) * (I1 - I2) / BIN_WIDTH_S
    return c, dc


def _g0_std(x, w, base, N: float) -> float:
    """Std of g0 from the expected Fisher information of (g0, ln t1, ln t2, a[, ln base]) at x (pseudo-
    inverse: parameters the data do not determine, e.g. the shape at g0 = 1, drop out)."""
    c, dc = _model_and_jacobian(x, w)
    if np.any(c <= 0):
        c = np.maximum(c, 1e-12)
    B = N / c.sum() if base is None else base
    mu = B * c
    d = B * dc
    if base is None:
        d = np.vstack([d, mu])                   # d mu / d ln base
    F = (d / mu) @ d.T
    scale = np.sqrt(np.maximum(np.diag(F), 1e-300))
    cov = np.linalg.pinv(F / np.outer(scale, scale), rcond=1e-10) / np.outer(scale, scale)
    return float(np.sqrt(cov[0, 0])) if cov[0, 0] > 0 else float("nan")


_STARTS = [(t1, t2, a) for t1 in (3.0, 15.0, 60.0, 150.0) for t2 in (30.0, 100.0, 300.0, 1500.0)
           for a in (0.3, 1.0, 3.0)]
_N_REFINED = 8


def fit_shape_full(hist_sum, base: float | np.ndarray | None = None, start: EmitterShape | None = None) -> ShapeFit:
    """Poisson MLE of (g0, t1, t2, a, base) on a summed, high-count histogram.

    hist_sum: (N_BINS,) counts, or (..., N_BINS) which is summed over the leading axes.
    base: the summed histogram's normalization when the singles give it, i.e. the sum over
    pixels of n_a n_b D / t_acq (counts per bin of uncorrelated light); None fits it
    (profiled out: its MLE is N / S); or an (N_BINS,) array, the expected counts of uncorrelated light
    in each bin (start-stop: base * weight summed over pixels). Knowing it matters: with a +-250 ns window the slow
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
        base = np.asarray(base, dtype=float)
        if base.shape not in ((), (N_BINS,)) or not (np.all(np.isfinite(base)) and np.all(base > 0)):
            raise ValueError(f"base must be a positive number of counts per bin (or {N_BINS} of them), got {base!r}")
        base = float(base) if base.ndim == 0 else base
    w = bin_widths()
    level = float(np.mean(base)) if base is not None else wing_level(n)
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
    g0_std = _g0_std(best.x, w, base, N)
    flat = _nll_and_grad(np.array([1.0, lt1, lt2, a]), n, N, w, base)[0]   # g2 = 1: the shape drops out
    lr = 2.0 * N * (flat - float(best.fun))
    determined = bool(np.isfinite(g0_std) and 1.0 - g0 > SIGNIFICANCE * g0_std and lr > LR_THRESHOLD)
    if base is None:
        base = N / float(w.sum() - (1.0 - g0) * kernel_bin_averages(shape).sum())
    base = float(np.mean(base))
    return ShapeFit(shape=shape, g0=float(g0), base=base, n_events=N, nll=float(best.fun),
                    success=bool(best.success), message=str(best.message), g0_std=g0_std, determined=determined)


def fit_shape(hist_sum, base: float | None = None, start: EmitterShape | None = None) -> EmitterShape:
    """The emitter shape (t1, t2 in s, a) from a summed, high-count histogram; see `fit_shape_full`."""
    return fit_shape_full(hist_sum, base, start).shape


__all__ = [
    "G0_BOUNDS", "MIN_EVENTS_FREE_BASE", "ShapeFit", "estimate_g2", "MleEstimator", "cramer_rao_std", "cramer_rao_models",
    "fit_shape", "fit_shape_full",
]
