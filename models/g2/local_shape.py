"""Each pixel's g2 shape from the emitter's three-level rates and the pixel's PL (docs/physics.md section 1.3).

The shape (t1, t2, a) of an emitter's g2 follows its pump k12, i.e. the excitation intensity at the
pixel: one shape fitted to a scan's summed histogram is right at no pixel in particular, and with the
singles normalization it biases g2(0) by far more than its error away from the brightest pixels
(0.34 for a true 0.086 at 200 nm from an emitter under a 360 nm spot). This module fits, on the
scan, the rates the shape depends on and how the pump follows the PL, and gives every pixel the
shape at its own pump:

- the pixels are sorted by PL (counts/s) and cut into up to MAX_BINS bins of at least
  MIN_BIN_EVENTS events each; each bin's histograms are summed (the model of the sum is the sum of
  the pixels' models: base_p weight_pk (w_k - (1 - g0) v_k), with the bin's kernel v at its
  event-weighted mean PL);
- one joint Poisson likelihood over the bins, each bin's g0 profiled out (its MLE given the kernel,
  the normalization known from the singles), is maximized over the shared rates k21, k23, k31 and the
  saturation model that gives each PL its pump:

      PL - B = C k12^(1 + gamma) / (k21 + k23 + k12 (1 + k23 / k31))

  i.e. the collected emission eta(x) k21 p2(k12) of a three-level emitter, p2 its excited population,
  with the collection following the excitation as eta ~ k12^gamma (Gaussian PSFs: gamma =
  (FWHM_exc / FWHM_coll)^2) and B the uncorrelated light (background, dark counts). C is written
  through the pump `ref_k12` at the brightest bin's PL `ref_pl_cps`;
- a pixel's pump is the k12 that solves the model at its PL (monotone: one root), and its shape is
  `rt.kernels.three_level.g2_shape_from_rates` at that pump.

With too few events for two bins, or where the local model does not beat the scan's one shape by
MIN_LOCAL_GAIN in twice the log-likelihood over the PL bins (the shape does not follow the PL beyond the
noise), it is the scan's one shape fitted to the summed histogram (`mle.fit_shape_full`). Where several emitters share a spot the model is an effective
one: the pump of a single emitter with that PL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, newton

from nvscope.proto.histogram import BIN_WIDTH_S, N_BINS
from nvscope.rt.kernels.three_level import g2_shape_from_rates, two_exponential, g2_shape_jacobian

from .mle import ShapeFit, fit_shape_full
from .model import EmitterShape, bin_widths, exp_bin_integrals, exp_bin_integrals_dt, kernel_bin_averages, shape_kernels

MIN_BIN_EVENTS: float = 2000.0
"""Fewest events in a PL bin's summed histogram; below 2 x this in all the scan keeps one shape."""
MAX_BINS: int = 16
"""Most PL bins the scan is cut into (each then has at least 1/16 of the events)."""

MIN_LOCAL_GAIN: float = 16.0
"""Twice the log-likelihood the local model must gain over the one scan shape, over the PL bins, to be
used (it has three more parameters; 16 is beyond the 0.1 % point of chi^2 with 3 degrees of freedom)."""
MAX_LOCAL_A: float = 50.0
MIN_T2_OVER_T1: float = 1.2
"""A pixel's three-level shape is trusted while a <= MAX_LOCAL_A and t2 >= MIN_T2_OVER_T1 t1 (well-separated
eigenvalues; the CNN's training emitters reach a = 35 and t2 = 1.35 t1); beyond, the scan's one shape."""
MIN_PUMP_EVENTS: float = 1000.0
"""Fewest events in a pixel for `LocalShapes.fit_pumps` to fit its own pump."""
PUMP_GRID: int = 96
"""Pumps (log-spaced) `LocalShapes.fit_pumps` tries."""

_RATE_BOUNDS = (1e5, 1e10)        # 1/s, every fitted rate
_GAMMA_BOUNDS = (0.3, 3.0)
_RATE_STARTS = ((5e7, 1e7, 4e6, 2e7), (8e7, 3e7, 1e7, 5e7), (3e7, 3e6, 2e6, 1e7), (1e8, 1e7, 1e6, 1e8))
"""(k21, k23, k31, ref_k12) in 1/s to start from: NV-like, faster, slower, well above saturation."""
_N_REFINED = 1
_G0_ITER = 100                    # most safeguarded Newton steps on a bin's g0 score
_G0_TOL = 1e-13                   # a bin's g0 is converged when its step is below this
_PUMP_CHUNK = 2_000_000           # most (pixel, pump, bin) values `fit_pumps` holds at once


@dataclass(frozen=True)
class LocalShapes:
    """The scan's three-level rates and saturation model, giving each pixel its g2 shape from its PL.

    k21, k23, k31: the shared rates in 1/s (NaN when the scan kept one shape).
    background_cps: B, the PL (counts/s) of uncorrelated light (no pump).
    ref_pl_cps, ref_k12: the pump ref_k12 (1/s) where the PL is ref_pl_cps (counts/s).
    gamma: the exponent of the collection efficiency in the pump (dimensionless).
    scan_shape: the one shape of the summed histogram; every pixel's shape when n_bins == 1.
    n_bins: the PL bins the fit used (1: too few events for more; the scan's one shape).
    """

    k21: float
    k23: float
    k31: float
    background_cps: float
    ref_pl_cps: float
    ref_k12: float
    gamma: float
    scan_shape: EmitterShape
    n_bins: int

    @property
    def local(self) -> bool:
        """Whether the shape follows the pump (False: the scan's one shape at every pixel)."""
        return self.n_bins > 1

    def k12(self, pl_cps) -> np.ndarray:
        """Each pixel's pump k12 (1/s) at its PL (counts/s); 0 at or below the background, NaN if not local."""
        pl = np.atleast_1d(np.asarray(pl_cps, dtype=float))
        if not self.local:
            return np.full(pl.shape, np.nan)
        return _pump(pl, self.background_cps, self.ref_pl_cps, self.ref_k12, self.gamma, self.k21, self.k23, self.k31)

    def shapes(self, pl_cps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t1 in s, t2 in s, a), each (P,), of the pixels at PL pl_cps (counts/s, (P,))."""
        pl = np.atleast_1d(np.asarray(pl_cps, dtype=float))
        if not self.local:
            s = self.scan_shape
            return np.full(pl.shape, s.t1), np.full(pl.shape, s.t2), np.full(pl.shape, s.a)
        return self._at_pumps(self.k12(pl))

    def _at_pumps(self, k12: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t1, t2, a) at pumps k12 (1/s); the scan's one shape at a pump where the fitted rates give no
        two-exponential g2 (a pixel far brighter than any the fit saw), near-degenerate eigenvalues (a >
        MAX_LOCAL_A or t2 < MIN_T2_OVER_T1 t1), or that is unknown (NaN)."""
        k = np.asarray(k12, dtype=float)
        ok = np.isfinite(k) & two_exponential(np.where(np.isfinite(k), k, 0.0), self.k21, self.k23, self.k31)
        s = self.scan_shape
        t1, t2, a = np.full(k.shape, s.t1), np.full(k.shape, s.t2), np.full(k.shape, s.a)
        if ok.any():
            a_k, t1_k, t2_k = g2_shape_from_rates(k[ok], self.k21, self.k23, self.k31)
            # near-degenerate eigenvalues give a diverging amplitude (a = 288 seen where t2 = 1.005 t1): that is
            # extrapolation of the fitted rates, not knowledge; such pixels get the scan's shape
            sane = (a_k >= 0) & (a_k <= MAX_LOCAL_A) & (t2_k >= MIN_T2_OVER_T1 * t1_k) & (t1_k > 0)
            rows = np.flatnonzero(ok)[sane]
            a[rows], t1[rows], t2[rows] = a_k[sane], t1_k[sane], t2_k[sane]
        return t1, t2, a

    def kernels(self, pl_cps, offset_s: float = 0.0, k12=None) -> np.ndarray:
        """Kernels v_pk (P, N_BINS) of the pixels at PL pl_cps (counts/s), zero-delay offset offset_s (s);
        with k12 ((P,), 1/s, e.g. from `fit_pumps`) at those pumps instead of the PL's."""
        if k12 is None or not self.local:
            t1, t2, a = self.shapes(pl_cps)
        else:
            t1, t2, a = self._at_pumps(np.asarray(k12, dtype=float))
        return shape_kernels(t1, t2, a, offset_s)

    def fit_pumps(self, hist, base, pl_cps, weight=None) -> np.ndarray:
        """Each pixel's pump k12 (P,) in 1/s fitted on its own histogram (P, N_BINS) with the scan's rates,
        its g0 profiled out (base (P,) counts per bin, weight (P, N_BINS) or None), on a grid of
        PUMP_GRID pumps from the PL map's lowest / 30 to its highest x 3; the PL map's pump where the
        pixel has fewer than MIN_PUMP_EVENTS events or no base. Where several emitters share a spot,
        the PL says too high a pump for each (their PLs add); the histogram says the right one."""
        h = np.asarray(hist, dtype=float).reshape(-1, N_BINS)
        P = len(h)
        pl = np.broadcast_to(np.asarray(pl_cps, dtype=float), (P,))
        k_pl = self.k12(pl)
        if not self.local:
            return k_pl
        b = np.broadcast_to(np.asarray(base, dtype=float), (P,))
        wt = np.ones((P, N_BINS)) if weight is None else np.broadcast_to(np.asarray(weight, dtype=float), (P, N_BINS))
        own = (h.sum(axis=1) >= MIN_PUMP_EVENTS) & np.isfinite(b) & (b > 0) & np.isfinite(k_pl) & (k_pl > 0)
        if not own.any():
            return k_pl
        k_hi = 3.0 * float(k_pl[own].max())
        grid = np.geomspace(float(k_pl[own].min()) / 30.0, k_hi, PUMP_GRID)
        grid = grid[[_real_shapes(self.k21, self.k23, self.k31, k) for k in grid]]
        a, t1, t2 = g2_shape_from_rates(grid, self.k21, self.k23, self.k31)
        v = shape_kernels(t1, t2, a)
        out = k_pl.copy()
        w = bin_widths()
        rows = np.flatnonzero(own)
        step = max(1, _PUMP_CHUNK // (len(grid) * N_BINS))
        for i in range(0, len(rows), step):
            r = rows[i:i + step]
            ll = _profile_g0(h[r, None, :], (b[r, None] * wt[r])[:, None, :], w, v[None])   # (pixels, pumps)
            out[r] = _parabola_peak(np.log(grid), ll)
        return out


def _parabola_peak(u: np.ndarray, ll: np.ndarray) -> np.ndarray:
    """exp of the maximum of each row of ll (pixels, grid) over the grid u (ln k12): the vertex of the
    parabola through the best grid point and its neighbours (the grid's spacing alone would leave the
    pump, and so the shape, a few % off: more than the error at 10^4 events), the best point where it is
    at an end or the three points are not concave."""
    best = np.argmax(ll, axis=1)
    j = np.clip(best, 1, len(u) - 2)
    rows = np.arange(len(ll))
    y0, y1, y2 = ll[rows, j - 1], ll[rows, j], ll[rows, j + 1]
    a, b = u[j] - u[j - 1], u[j + 1] - u[j]               # the grid's steps (a few may be missing)
    # the vertex -p / 2q of y1 + p x + q x^2 through (-a, y0), (0, y1), (b, y2)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ((y0 - y1) / a + (y2 - y1) / b) / (a + b)
        p = (y2 - y1) / b - q * b
        shift = np.where(q < 0, -p / (2.0 * q), 0.0)
    inner = (best == j) & (y1 >= y0) & (y1 >= y2) & np.all(np.isfinite([y0, y1, y2]), axis=0)
    return np.exp(np.where(inner, u[j] + np.clip(shift, -a, b), u[best]))


def _pump(pl, B, ref_pl, ref_k12, gamma, k21, k23, k31) -> np.ndarray:
    """k12 (1/s) that solves PL - B = C k12^(1+gamma) / (kd + s k12), C from (ref_pl, ref_k12)."""
    kd, s = k21 + k23, 1.0 + k23 / k31
    log_c = np.log(ref_pl - B) - (1.0 + gamma) * np.log(ref_k12) + np.log(kd + s * ref_k12)
    above = np.isfinite(pl) & (pl > B)
    y = np.log(pl[above] - B) - log_c
    # h(u) = (1 + gamma) u - ln(kd + s e^u) - y, u = ln k12: increasing and concave, so Newton converges
    # from any start (after at most one step it approaches the root from below).
    u = newton(lambda u: (1.0 + gamma) * u - np.logaddexp(np.log(kd), np.log(s) + u) - y,
               np.full(y.shape, np.log(ref_k12)),
               fprime=lambda u: 1.0 + gamma - 1.0 / (1.0 + kd / (s * np.exp(u))),
               tol=1e-12, maxiter=100) if y.size else y
    out = np.where(np.isfinite(pl), 0.0, np.nan)
    out[above] = np.exp(u)
    return out


def _real_shapes(k21: float, k23: float, k31: float, k12_max: float) -> bool:
    """Whether every pump in [0, k12_max] (1/s) gives a two-exponential g2 (real, distinct eigenvalues)."""
    kd = k21 + k23
    # the discriminant of rt.kernels.three_level, a quadratic in k12 with its minimum at k_min
    k_min = float(np.clip(2.0 * (k23 + k31) - kd - k31, 0.0, k12_max))
    s = k_min + kd + k31
    return bool(s * s - 4.0 * (k_min * (k23 + k31) + kd * k31) > 1e-9 * s * s)


def _pl_bins(events: np.ndarray, pl: np.ndarray) -> np.ndarray:
    """Bin label of each pixel: sorted by PL, a bin closed once it holds max(MIN_BIN_EVENTS, total /
    MAX_BINS) events; a short last bin joins the one before."""
    order = np.argsort(pl, kind="stable")
    target = max(MIN_BIN_EVENTS, events.sum() / MAX_BINS)
    filled = np.cumsum(events[order])
    label = np.empty(len(pl), dtype=int)
    # bin j holds the pixels whose cumulative events, before them, reached j whole targets of the bins before
    lab_sorted = np.zeros(len(pl), dtype=int)
    j, start = 0, 0.0
    for i, f in enumerate(filled):
        lab_sorted[i] = j
        if f - start >= target:
            j, start = j + 1, f
    if j > 0 and filled[-1] - start < target:
        lab_sorted[lab_sorted == j] = j - 1
    label[order] = lab_sorted
    return label


def _profile_g0(n: np.ndarray, b: np.ndarray, w: np.ndarray, v: np.ndarray, dv: bool = False):
    """max over g0 in [-1, 2] of sum_k n_k log c_k - b_k c_k, c_k = w_k - (1 - g0) v_k, for each row (bin)
    (n, b, v broadcast to (..., N_BINS); w: (N_BINS,)); result (...,). With dv, also its derivative in v,
    (..., N_BINS): -(1 - g0) (n_k / c_k - b_k) at the maximizing g0 (envelope theorem).

    The log-likelihood is concave in g0: its score is zeroed by Newton steps, safeguarded by bisection
    of the bracket that the score's sign keeps, on the part of [-1, 2] where every bin with counts has
    c_k > 0 (an end of it where the score does not change sign there).
    """
    n, b, v = np.broadcast_arrays(n, b, v)
    shape = n.shape[:-1]
    n, b, v = (x.reshape(-1, n.shape[-1]) for x in (n, b, v))
    counted = n > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        edge = 1.0 - w / v                                   # where c_k = 0
    lo = np.maximum(-1.0, np.where(counted & (v > 0), edge, -np.inf).max(axis=-1) + 1e-12)
    hi = np.minimum(2.0, np.where(counted & (v < 0), edge, np.inf).min(axis=-1) - 1e-12)
    ok = lo < hi
    bv = (b * v).sum(axis=-1)
    nn = np.where(counted, n, 0.0)

    vc = np.where(counted, v, 0.0)
    wc = np.where(counted, w - v, 1.0)                       # c = wc + g vc where counted, else 1

    def score_slope(g, rows):
        if rows.size < len(vc):
            vr, wr, nr, bvr = vc[rows], wc[rows], nn[rows], bv[rows]
        else:
            vr, wr, nr, bvr = vc, wc, nn, bv
        r = vr / (wr + g[:, None] * vr)
        nr = nr * r
        return nr.sum(axis=-1) - bvr, -(nr * r).sum(axis=-1)   # slope < 0 where counts meet v != 0

    g = np.where(ok, lo, np.nan)
    act = np.flatnonzero(ok)
    s_lo, _ = score_slope(lo[act], act)
    act = act[s_lo > 0]                                      # else the maximum is at lo
    g[act] = hi[act]
    s_hi, _ = score_slope(hi[act], act)
    act = act[s_hi < 0]                                      # else it is at hi
    a, z = lo[act], hi[act]
    x = 0.5 * (a + z)
    for _ in range(_G0_ITER):
        if not act.size:
            break
        score, slope = score_slope(x, act)
        up = score > 0
        a, z = np.where(up, x, a), np.where(up, z, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = x - score / slope
        new = np.where((new >= a) & (new <= z), new, 0.5 * (a + z))
        g[act] = new
        more = (np.abs(new - x) > _G0_TOL) & (z - a > _G0_TOL)
        act, a, z, x = act[more], a[more], z[more], new[more]
    g = g.reshape(shape)
    n, b, v, counted, nn = (y.reshape(*shape, -1) for y in (n, b, v, counted, nn))
    c = w - (1.0 - g)[..., None] * v
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = np.where(counted, nn * np.log(np.where(counted, c, 1.0)), 0.0).sum(axis=-1) - (b * c).sum(axis=-1)
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    if not dv:
        return ll
    with np.errstate(divide="ignore", invalid="ignore"):
        d = -(1.0 - g)[..., None] * (nn / np.where(counted, c, 1.0) - b)
    return ll, d


def fit_local_shapes(hist, base, pl_cps, weight=None) -> LocalShapes | None:
    """The scan's `LocalShapes` from its histograms (P, N_BINS), each pixel's base (P,) (counts per bin of
    uncorrelated light where weight = 1; NaN or <= 0: the pixel is left out of the fit), its PL (P,)
    in counts/s and the start-stop survival weight (P, N_BINS) (None: ones, allpairs). None when there
    is nothing to fit (no events in pixels with a base)."""
    h = np.asarray(hist, dtype=float).reshape(-1, N_BINS)
    P = len(h)
    b = np.broadcast_to(np.asarray(base, dtype=float), (P,))
    pl = np.broadcast_to(np.asarray(pl_cps, dtype=float), (P,))
    wt = np.ones((P, N_BINS)) if weight is None else np.broadcast_to(np.asarray(weight, dtype=float), (P, N_BINS))
    use = np.isfinite(b) & (b > 0) & np.isfinite(pl) & (pl >= 0)
    h, b, pl, wt = h[use], b[use], pl[use], wt[use]
    events = h.sum(axis=1)
    if not events.sum() > 0:
        return None
    base_k = b[:, None] * wt                                  # each pixel's per-bin base
    scan = fit_shape_full(h.sum(axis=0), base_k.sum(axis=0))
    label = _pl_bins(events, pl)
    n_bins = int(label.max()) + 1
    if n_bins < 2:
        return LocalShapes(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, scan.shape, 1)
    n = np.array([h[label == j].sum(axis=0) for j in range(n_bins)])
    bk = np.array([base_k[label == j].sum(axis=0) for j in range(n_bins)])
    pl_bin = np.array([np.average(pl[label == j], weights=events[label == j]) for j in range(n_bins)])
    local, nll = _fit_rates(n, bk, pl_bin, float(pl.min()), scan, n_bins)
    # The local model only where the data ask for it: its likelihood over the PL bins must beat the one
    # scan shape's (each bin's g0 profiled in both) by MIN_LOCAL_GAIN; a scan whose shape does not follow
    # the PL beyond its noise keeps one shape rather than fitting its noise with three more parameters.
    one = -_profile_g0(n, bk, bin_widths(), kernel_bin_averages(scan.shape)[None, :]).sum()
    if not 2.0 * (one - nll) > MIN_LOCAL_GAIN:
        return LocalShapes(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, scan.shape, 1)
    return local


def _fit_rates(n, bk, pl_bin, pl_min, scan: ShapeFit, n_bins: int) -> tuple[LocalShapes, float]:
    """The joint profile-likelihood fit of the rates and the saturation model over the PL bins
    (L-BFGS-B on the exact gradient: `_nll_and_grad`), and its negative log-likelihood (constants dropped)."""
    ref_pl = float(pl_bin[-1])
    b_max = min(pl_min, ref_pl) * (1.0 - 1e-9)
    data = (n, bk, pl_bin, ref_pl, b_max, float(n.sum()), bin_widths())
    log_r = np.log(_RATE_BOUNDS)
    bounds = [tuple(log_r)] * 4 + [_GAMMA_BOUNDS, (0.0, 1.0)]
    starts = [np.array([*np.log(s), 1.0, 0.9]) for s in _RATE_STARTS]
    starts.sort(key=lambda x0: _nll_and_grad(x0, *data, grad=False))
    best = None
    for x0 in starts[:_N_REFINED]:
        res = minimize(_nll_and_grad, x0, args=data, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    k21, k23, k31, ref_k12, gamma, B = _unpack(best.x, b_max)
    return (LocalShapes(float(k21), float(k23), float(k31), float(B), ref_pl, float(ref_k12), gamma, scan.shape, n_bins),
            float(best.fun) * float(n.sum()))


def _unpack(x, b_max: float) -> tuple:
    """(k21, k23, k31, ref_k12 in 1/s, gamma, B in counts/s) from the fit's x = (ln k21, ln k23, ln k31,
    ln ref_k12, gamma, B / b_max)."""
    k21, k23, k31, ref_k12 = np.exp(x[:4])
    return k21, k23, k31, ref_k12, float(x[4]), float(x[5]) * b_max


_PENALTY = 1e3
"""The fit's objective where the rates give no two-exponential shape (its gradient there: zero)."""


def _nll_and_grad(x, n, bk, pl_bin, ref_pl, b_max, n_events, w, grad: bool = True):
    """The joint negative log-likelihood per event over the PL bins (each bin's g0 profiled out) at
    x (see `_unpack`), and its gradient in x when grad.

    The gradient chains d ll / d v (the profile's, `_profile_g0`) through v's derivatives in the shape
    (a, t1, t2) (`exp_bin_integrals`, `exp_bin_integrals_dt`), the shape's in the rates
    (`g2_shape_jacobian`) and the bins' pumps' in x (implicit differentiation of `_pump`'s equation).
    """
    k21, k23, k31, ref_k12, gamma, B = _unpack(x, b_max)
    k12 = _pump(pl_bin, B, ref_pl, ref_k12, gamma, k21, k23, k31)
    flat = (_PENALTY, np.zeros(len(x))) if grad else _PENALTY
    if not _real_shapes(k21, k23, k31, 4.0 * float(k12.max())):
        return flat
    try:
        a, t1, t2 = g2_shape_from_rates(k12, k21, k23, k31)
    except ValueError:                  # complex eigenvalues: not a two-exponential shape
        return flat
    v = shape_kernels(t1, t2, a)
    if not grad:
        ll = _profile_g0(n, bk, w, v)
        return float(-ll.sum() / n_events) if np.all(np.isfinite(ll)) else _PENALTY
    ll, dll_dv = _profile_g0(n, bk, w, v, dv=True)
    if not np.all(np.isfinite(ll)):
        return flat
    # d v / d (a, t1, t2), each (bins, N_BINS)
    e1, e2 = exp_bin_integrals(t1), exp_bin_integrals(t2)
    e1_dt = np.array([exp_bin_integrals_dt(t) for t in t1])
    e2_dt = np.array([exp_bin_integrals_dt(t) for t in t2])
    dv = np.stack([e1 - e2, (1.0 + a)[:, None] * e1_dt, -a[:, None] * e2_dt]) / BIN_WIDTH_S
    dll_dshape = (dll_dv[None] * dv).sum(axis=-1)                        # (3, bins)
    # the pump's equation h(u) = (1 + gamma) u - ln(kd + s e^u) - ln(pl - B) + ln(ref_pl - B)
    #   - (1 + gamma) ln ref_k12 + ln(kd + s ref_k12) = 0, u = ln k12: du/dx = -(dh/dx) / (dh/du)
    kd, sr = k21 + k23, 1.0 + k23 / k31
    d_u, d_r = kd + sr * k12, kd + sr * ref_k12
    h_u = 1.0 + gamma - sr * k12 / d_u
    h_kd = -1.0 / d_u + 1.0 / d_r
    h_sr = -k12 / d_u + ref_k12 / d_r
    h_x = np.stack([k21 * h_kd, k23 * (h_kd + h_sr / k31), -(k23 / k31) * h_sr,
                    np.full(k12.shape, -(1.0 + gamma) + sr * ref_k12 / d_r),
                    np.log(k12 / ref_k12),
                    b_max * (1.0 / (pl_bin - B) - 1.0 / (ref_pl - B))])   # (6, bins)
    dk12 = -k12 * h_x / h_u
    rates_x = np.zeros((4, 6, len(k12)))                                  # d(k12, k21, k23, k31) / dx
    rates_x[0] = dk12
    rates_x[1, 0], rates_x[2, 1], rates_x[3, 2] = k21, k23, k31
    shape_x = np.einsum("crj,rxj->cxj", g2_shape_jacobian(k12, k21, k23, k31), rates_x)
    g = -np.einsum("cj,cxj->x", dll_dshape, shape_x) / n_events
    return float(-ll.sum() / n_events), g


__all__ = ["MIN_BIN_EVENTS", "MAX_BINS", "MIN_LOCAL_GAIN", "MIN_PUMP_EVENTS", "PUMP_GRID", "LocalShapes", "fit_local_shapes"]
