"""The three-level-emitter g2(tau) model and its exact bin integrals (docs/physics.md sections 1.4 and 1.6).

    g2(tau) = 1 - (1 - g0) [(1 + a) exp(-|tau|/t1) - a exp(-|tau|/t2)]

is the paper's Eq. 3 (ml-antibunching-srm, `1 - a1 exp(-|tau|/t1) + a2 exp(-|tau|/t2)`)
written with a1 = (1 - g0)(1 + a), a2 = (1 - g0) a, so that g2(0) = g0 exactly. The
shape (t1, t2, a) is the emitter's; the mixing of emitters and background only scales
the antibunching kernel K(tau) = (1 + a) exp(-|tau|/t1) - a exp(-|tau|/t2) by (1 - g0).

The expected count in histogram bin k is `base * c_k(g0)` with

    c_k(g0) = (1/D) * integral over bin k of g2(tau) dtau = w_k - (1 - g0) v_k,
    v_k     = (1/D) * integral over bin k of K(tau) dtau,    w_k = width_k / D (= 1),

and `base = n_A n_B D / T` for all pairs. Both integrals are in closed form; the bin
that straddles tau = 0 is split there. c_k is linear in g0 with derivative v_k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nvscope.proto.histogram import BIN_WIDTH_S, HISTOGRAM_MODES, N_BINS, bin_edges_s

_EDGES_S = bin_edges_s()
_EDGES_S.flags.writeable = False


@dataclass(frozen=True)
class EmitterShape:
    """The emitter's g2 shape, shared by every pixel of a scan.

    t1: antibunching time in s (about 1/(k12 + k21) for an NV, 10-20 ns).
    t2: bunching (shelving) time in s (about 1/k31 and longer, 100 ns - 1 us).
    a: dimensionless bunching amplitude, >= 0.
    """

    t1: float
    t2: float
    a: float

    def __post_init__(self) -> None:
        for name in ("t1", "t2"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"EmitterShape.{name} must be a positive finite time in s, got {v!r}")
        if not np.isfinite(self.a):
            raise ValueError(f"EmitterShape.a must be finite, got {self.a!r}")


NV_DEFAULT_SHAPE = EmitterShape(t1=12.94e-9, t2=148.6e-9, a=0.7475)
"""The shape of the NV-like default rates of docs/physics.md section 1.3 (firmware_sim's ThreeLevelRates() defaults):
the context an on-line estimate uses before the scan has enough events to fit its own."""


def g2_model(tau: np.ndarray | float, shape: EmitterShape, g0: float) -> np.ndarray:
    """g2(tau) at delays tau (s) for an emitter of this shape with g2(0) = g0 (paper Eq. 3)."""
    t = np.abs(np.asarray(tau, dtype=float))
    kernel = (1.0 + shape.a) * np.exp(-t / shape.t1) - shape.a * np.exp(-t / shape.t2)
    return 1.0 - (1.0 - g0) * kernel


def _exp_integrals(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integral of exp(-|tau|/t) over [lo, hi) (s) for times t (any shape; result t.shape + lo.shape)."""
    t = np.asarray(t, dtype=float)[..., None]
    width = hi - lo
    near = np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0))
    out = t * np.exp(-near / t) * -np.expm1(-width / t)
    straddle = (lo < 0) & (hi > 0)
    if np.any(straddle):
        both = t * (-np.expm1(lo[straddle] / t) - np.expm1(-hi[straddle] / t))
        out[..., straddle] = both
    return out


def exp_bin_integrals(t: float, edges: np.ndarray | None = None, offset_s: float = 0.0) -> np.ndarray:
    """Integral over each bin of exp(-|tau - offset_s|/t) dtau, in s (t, offset_s in s; edges default: the histogram's).

    `offset_s` is the histogram's zero-delay offset: the emitter's tau = 0 lies at delay offset_s.
    Each same-sign bin is t exp(-|near edge|/t) (1 - exp(-width/t)), written with expm1 so that far
    bins of a short t keep their full relative precision; a bin straddling 0 is the sum of its two
    halves. t may also be an array: the result is then t.shape + (bins,).
    """
    e = (_EDGES_S if edges is None else np.asarray(edges, dtype=float)) - float(offset_s)
    return _exp_integrals(t, e[:-1], e[1:])


def exp_bin_integrals_dt(t: float, edges: np.ndarray | None = None) -> np.ndarray:
    """Derivative in t of `exp_bin_integrals`: integral over each bin of (|tau|/t^2) exp(-|tau|/t), in s/s.

    For 0 <= x0 < x1 (in units of t) the antiderivative -(1 + x) exp(-x) gives
    exp(-x0) [-(1 + x0) expm1(-d) - d exp(-d)], d = x1 - x0, kept in that form so that far
    bins keep their relative precision; a bin straddling 0 is the sum of its two halves
    from 0, each 1 - (1 + x) exp(-x) = -expm1(-x) - x exp(-x).
    """
    e = _EDGES_S if edges is None else np.asarray(edges, dtype=float)
    lo, hi = e[:-1], e[1:]
    x0 = np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0)) / t
    d = (hi - lo) / t
    out = np.exp(-x0) * (-(1.0 + x0) * np.expm1(-d) - d * np.exp(-d))
    straddle = (lo < 0) & (hi > 0)
    xs = np.concatenate([-lo[straddle], hi[straddle]]) / t
    halves = -np.expm1(-xs) - xs * np.exp(-xs)
    out[straddle] = halves[: straddle.sum()] + halves[straddle.sum():]
    return out


def kernel_bin_averages(shape: EmitterShape, offset_s: float = 0.0) -> np.ndarray:
    """v_k = (1/D) * integral over bin k of K(tau - offset_s) dtau, shape (N_BINS,); equals d c_k / d g0
    (offset_s: the histogram's zero-delay offset in s)."""
    return shape_kernels(shape.t1, shape.t2, shape.a, offset_s)[0]


def shape_kernels(t1, t2, a, offset_s: float = 0.0) -> np.ndarray:
    """Kernels v_pk of per-pixel shapes (t1, t2 in s, a; scalars or (P,) arrays), float (P, N_BINS)."""
    t1, t2, a = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=float)) for x in (t1, t2, a)))
    if not (np.all(np.isfinite(t1) & (t1 > 0)) and np.all(np.isfinite(t2) & (t2 > 0)) and np.all(np.isfinite(a))):
        raise ValueError("shape_kernels: t1, t2 must be positive finite times in s and a finite")
    return ((1.0 + a)[:, None] * exp_bin_integrals(t1, offset_s=offset_s)
            - a[:, None] * exp_bin_integrals(t2, offset_s=offset_s)) / BIN_WIDTH_S


def bin_widths() -> np.ndarray:
    """w_k = width_k / D, shape (N_BINS,): 1 up to rounding of the edges."""
    return np.diff(_EDGES_S) / BIN_WIDTH_S


def bin_integrals(shape: EmitterShape, g0: float | np.ndarray) -> np.ndarray:
    """c_k(g0) = (1/D) * integral over bin k of g2(tau) dtau, dimensionless.

    g0 may be a scalar (result (N_BINS,)) or an array (result g0.shape + (N_BINS,)).
    c_k is linear in g0; its derivative is `bin_integrals_dg0(shape)`.
    """
    g0 = np.asarray(g0, dtype=float)[..., None]
    return bin_widths() - (1.0 - g0) * kernel_bin_averages(shape)


def bin_integrals_dg0(shape: EmitterShape) -> np.ndarray:
    """d c_k / d g0 = v_k, shape (N_BINS,), independent of g0."""
    return kernel_bin_averages(shape)


def singles_base(n_a: float | np.ndarray, n_b: float | np.ndarray, t_acq: float | np.ndarray) -> np.ndarray:
    """base = n_A n_B D / T: the all-pairs count per bin of uncorrelated light (counts, T in s)."""
    return np.asarray(n_a, dtype=float) * np.asarray(n_b, dtype=float) * BIN_WIDTH_S / np.asarray(t_acq, dtype=float)


def pixel_base(n_a, n_b, t_acq, n_pixels: int) -> np.ndarray:
    """Each pixel's normalization base = n_A n_B D / T (counts per bin), float (n_pixels,), computed once
    where the singles enter. NaN (unknown: the base is fitted, or the pixel is refused where the singles
    are required) for every pixel when any of n_a, n_b, t_acq is None, and where they fix nothing (a
    negative or non-finite count, t_acq <= 0 s); 0 where a detector saw no photon."""
    if n_a is None or n_b is None or t_acq is None:
        return np.full(n_pixels, np.nan)
    a, b, t = (np.broadcast_to(np.asarray(x, dtype=float), (n_pixels,)) for x in (n_a, n_b, t_acq))
    good = np.isfinite(a) & np.isfinite(b) & np.isfinite(t) & (a >= 0) & (b >= 0) & (t > 0)
    base = singles_base(a, b, np.where(good, t, 1.0))
    return np.where(good, base, np.nan)


def expected_histogram(shape: EmitterShape, g0: float | np.ndarray, base: float | np.ndarray) -> np.ndarray:
    """Expected counts per bin, base * c_k(g0), shape broadcast(g0, base).shape + (N_BINS,)."""
    return np.asarray(base, dtype=float)[..., None] * bin_integrals(shape, g0)


@dataclass(frozen=True)
class PixelModels:
    """The one per-pixel model every g2 estimator uses (docs/physics.md sections 1.2 and 1.6):

        expected counts in bin k of pixel p = base_p * weight_pk * (w_k - (1 - g0_p) * kernel_pk)

    base: (P,) counts per bin of uncorrelated light where weight = 1 (allpairs: n_A n_B D / T); NaN:
    unknown (fitted with g0); <= 0: the singles are known and give no normalization.
    kernel: (P, N_BINS) v_pk, the bin-averaged antibunching kernel of each pixel's shape.
    weight: (P, N_BINS) the start-stop survival averaged over each bin; ones for allpairs.
    mode: "allpairs" or "startstop".
    """

    base: np.ndarray
    kernel: np.ndarray
    weight: np.ndarray
    mode: str = "allpairs"
    stop_rate: np.ndarray | None = None
    """Each pixel's stop-detector (B) singles rate r_B (1/s) when known (None: not known): start-stop
    models redo the survival with the pixel's own g2 from it (`normalization.refine_startstop`), and an
    estimator can tell rates it was not trained on."""

    def __post_init__(self) -> None:
        if self.mode not in HISTOGRAM_MODES:
            raise ValueError(f"PixelModels.mode must be one of {HISTOGRAM_MODES}, got {self.mode!r}")
        P = self.base.shape[0] if self.base.ndim == 1 else -1
        if P < 0 or self.kernel.shape != (P, N_BINS) or self.weight.shape != (P, N_BINS):
            raise ValueError(f"PixelModels: base (P,), kernel and weight (P, {N_BINS}); got {self.base.shape}, "
                             f"{self.kernel.shape}, {self.weight.shape}")

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def take(self, rows) -> PixelModels:
        """The models of some pixels (an index array or a boolean mask over the P pixels)."""
        return PixelModels(self.base[rows], self.kernel[rows], self.weight[rows], self.mode,
                           None if self.stop_rate is None else self.stop_rate[rows])


def pixel_models(base, kernel, weight=None, mode: str = "allpairs", n_pixels: int | None = None,
                 stop_rate=None) -> PixelModels:
    """`PixelModels` from a base (scalar or (P,), counts per bin; None: all unknown), a kernel ((N_BINS,) or
    (P, N_BINS)) and a weight ((N_BINS,), (P, N_BINS) or None: ones); P from n_pixels or the arrays."""
    shapes = [np.shape(x)[:1] for x, d in ((base, 1), (kernel, 2), (weight, 2))
              if x is not None and np.ndim(x) == d]
    P = n_pixels if n_pixels is not None else (shapes[0][0] if shapes else 1)
    b = np.full(P, np.nan) if base is None else np.broadcast_to(np.asarray(base, dtype=float), (P,)).copy()
    v = np.broadcast_to(np.asarray(kernel, dtype=float), (P, N_BINS)).copy()
    w = np.ones((P, N_BINS)) if weight is None else np.broadcast_to(np.asarray(weight, dtype=float), (P, N_BINS)).copy()
    r = None if stop_rate is None else np.broadcast_to(np.asarray(stop_rate, dtype=float), (P,)).copy()
    return PixelModels(b, v, w, mode, r)


def concat_models(parts: list[PixelModels]) -> PixelModels:
    """The models of several groups of pixels of one mode, in order."""
    if len({m.mode for m in parts}) != 1:
        raise ValueError(f"cannot join pixel models of modes {sorted({m.mode for m in parts})}")
    rates = [m.stop_rate for m in parts]
    rate = None if any(r is None for r in rates) else np.concatenate(rates)
    return PixelModels(np.concatenate([m.base for m in parts]), np.concatenate([m.kernel for m in parts]),
                       np.concatenate([m.weight for m in parts]), parts[0].mode, rate)


__all__ = [
    "PixelModels", "pixel_models", "concat_models", "shape_kernels",
    "N_BINS", "EmitterShape", "NV_DEFAULT_SHAPE", "g2_model", "exp_bin_integrals", "exp_bin_integrals_dt",
    "kernel_bin_averages", "bin_widths", "bin_integrals", "bin_integrals_dg0",
    "singles_base", "pixel_base", "expected_histogram",
]
