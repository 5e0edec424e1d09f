"""Closed-form attenuation chi(t) of one symmetrized Lorentzian under FID, spin echo and CPMG-n.

docs/physics.md section 3.2. The spectrum

    S(w) = a [ g / ((w - w0)^2 + g^2) + g / ((w + w0)^2 + g^2) ]        (rad^2/s)

is the Fourier transform of the correlation <xi(tau) xi(0)> = a exp(-g |tau|) cos(w0 tau), so
a is in rad^2/s^2 and w0, g are in rad/s (g >= 0); t is the sequence length in s. With
k = g - i w0 and y the +-1 switching function of the sequence,

    chi(t) = (1/pi) int_0^inf S(w) F(w t) / w^2 dw = (a/2) Re int int y(s1) y(s2) exp(-k|s1 - s2|)
           = a Re J,   J = int_0^t ds1 int_0^s1 ds2 y(s1) y(s2) exp(-k (s1 - s2))   (s^2).

Derivation of the stable form. Cut [0, t] into 2n half-segments of length h = t/2n, x = k h.
CPMG-n is n echo cells of length 2h, cell m carrying the sign (-1)^m. One echo cell gives
h^2 (2 phi(x) - psi(x)^2) = h^2 x m(x); two cells d apart give -(-1)^d h^2 x^2 psi(x)^4
exp(-2x (d-1)); summing the n - d pairs at each distance d (a geometric series in
p = -exp(-2x)):

    FID (n = 0):  J = t^2 phi(k t)
    n >= 1:       J = h^2 [ n x m(x) + x^2 psi(x)^4 G_n(p) ],
                  G_n(p) = sum_{j=0}^{n-2} (n-1-j) p^j = (n (1-p) - (1-p^n)) / (1-p)^2,

    psi(x) = (1 - e^-x)/x,  phi(x) = (e^-x - 1 + x)/x^2,  m(x) = (2x - 3 + 4 e^-x - e^-2x)/x^3.

Each helper is a Taylor series for |x| < 1/2 (no subtraction of O(1) numbers) and the
exponential form above elsewhere; nothing is divided by k^2, so small |k| t and large n cost
no digits. G_n(p) has a 0/0 at p = 1 (w0 h = pi/2 mod pi: the CPMG resonance, where
cos(wt/2n) = 0 in F): with p = exp(-z), z reduced to |Im z| <= pi, for |z| < 1/2 it is
evaluated as G_n = n (n phi(n z) - phi(z)) / psi(z)^2, else as the closed form, which is then
well conditioned (|1 - p| > 0.39, and G_n has no zero in |p| <= 1, Enestrom-Kakeya).
Against a 60-digit evaluation: <= 1e-12 relative where chi > 1e-6 a t^2, <= 3e-15 a t^2
absolute (g t in [1e-6, 1e3], w0 t in [0, 1e3], n <= 256, resonances included).

`attenuation_textbook` keeps the same closed form written over k^2 (FID: (kt - 1 + e^-kt)/k^2),
which cancels catastrophically for |k| t << 1 and large n; it exists for the benchmark.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "attenuation",
    "attenuation_fid",
    "attenuation_echo",
    "attenuation_cpmg",
    "attenuation_torch",
    "attenuation_textbook",
]

_SMALL = 0.5  # |x| below which the helpers use their Taylor series


def _taylor(coeff) -> tuple[float, ...]:
    """Coefficients c_0, c_1, ... of a series, cut where |c_j| _SMALL^j < 2^-60 (float64-exact)."""
    out = []
    j = 0
    while True:
        c = coeff(j)
        out.append(c)
        if abs(c) * _SMALL**j < 2.0**-60 and j > 2:
            return tuple(out)
        j += 1


# Taylor coefficients (ascending powers of x) of psi, phi and m
_PSI = _taylor(lambda j: (-1.0) ** j / math.factorial(j + 1))
_PHI = _taylor(lambda j: (-1.0) ** j / math.factorial(j + 2))
_M = _taylor(lambda j: (-1.0) ** j * (2.0 ** (j + 3) - 4.0) / math.factorial(j + 3))


class _NumpyOps:
    """The few array operations the shared math needs, numpy flavour (flat arrays)."""

    exp = staticmethod(np.exp)
    abs = staticmethod(np.abs)
    round = staticmethod(np.round)
    real = staticmethod(np.real)
    imag = staticmethod(np.imag)

    @staticmethod
    def complex(re: Any, im: Any) -> np.ndarray:
        return re + 1j * im

    @staticmethod
    def merge(mask: np.ndarray, f_true: Any, f_false: Any, *args: np.ndarray) -> np.ndarray:
        """f_true on the entries where mask holds, f_false on the others (each sees only its own)."""
        v_true = f_true(*(v[mask] for v in args))
        v_false = f_false(*(v[~mask] for v in args))
        out = np.empty(mask.shape, dtype=np.result_type(v_true, v_false))
        out[mask] = v_true
        out[~mask] = v_false
        return out


class _TorchOps:
    """The same operations, torch flavour; `merge` gathers and scatters, so autograd never sees
    the branch an entry does not take (no inf * 0 = nan in the backward pass)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.exp = torch.exp
        self.abs = torch.abs
        self.round = torch.round
        self.real = torch.real
        self.imag = torch.imag
        self.complex = torch.complex

    def merge(self, mask: Any, f_true: Any, f_false: Any, *args: Any) -> Any:
        torch = self.torch
        i_true = mask.nonzero().squeeze(-1)
        i_false = (~mask).nonzero().squeeze(-1)
        v_true = f_true(*(v[i_true] for v in args))
        v_false = f_false(*(v[i_false] for v in args))
        out = torch.zeros(mask.shape, dtype=v_true.dtype, device=v_true.device)
        return out.index_put((i_true,), v_true).index_put((i_false,), v_false)


def _horner(x: Any, coeffs: tuple[float, ...]) -> Any:
    acc = x * coeffs[-1] + coeffs[-2]
    for c in coeffs[-3::-1]:
        acc = acc * x + c
    return acc


# Each helper: Taylor series for |x| < _SMALL, the exponential form elsewhere. For |x| >= 1/2,
# exp(-x) - 1 is as good as expm1 (near its other zeros x = 2 pi i k both are limited by the
# rounding of x itself), and the closed forms lose at most ~40 eps (m at |x| = 1/2).


def _psi(B: Any, x: Any) -> Any:
    """(1 - e^-x) / x."""
    return B.merge(B.abs(x) < _SMALL, lambda z: _horner(z, _PSI), lambda z: (1.0 - B.exp(-z)) / z, x)


def _phi(B: Any, x: Any) -> Any:
    """(e^-x - 1 + x) / x^2."""

    def direct(z: Any) -> Any:
        return (B.exp(-z) - 1.0 + z) / z / z

    return B.merge(B.abs(x) < _SMALL, lambda z: _horner(z, _PHI), direct, x)


def _cells_series(x: Any, n: Any, gn: Any) -> Any:
    """n x m(x) + x^2 psi(x)^4 G_n, |x| < _SMALL."""
    ps = _horner(x, _PSI)
    ps2 = ps * ps
    return n * x * _horner(x, _M) + x * x * ps2 * ps2 * gn


def _cells_direct(B: Any, x: Any, n: Any, gn: Any) -> Any:
    """n x m(x) + x^2 psi(x)^4 G_n from e^-x, |x| >= _SMALL."""
    em1 = B.exp(-x) - 1.0  # e^-x - 1
    e2m1 = em1 * (em1 + 2.0)  # e^-2x - 1
    r = em1 * em1 / x  # x psi(x)^2
    return n * (2.0 + (4.0 * em1 - e2m1) / x) / x + r * r * gn


def _g_near(B: Any, n: Any, z: Any) -> Any:
    """G_n at p = exp(-z), |z| small: n (n phi(n z) - phi(z)) / psi(z)^2 (no 0/0 at z = 0)."""
    ps = _psi(B, z)
    return n * (n * _phi(B, n * z) - _phi(B, z)) / (ps * ps)


def _g_far(B: Any, n: Any, z: Any) -> Any:
    """G_n at p = exp(-z), |1 - p| > 0.39: (n (1-p) - (1-p^n)) / (1-p)^2."""
    q = 1.0 - B.exp(-z)  # 1 - p
    return (n * q + B.exp(-n * z) - 1.0) / (q * q)


def _geometric_g(B: Any, n: Any, x: Any) -> Any:
    """G_n(p) = sum_{j=0}^{n-2} (n-1-j) p^j at p = -exp(-2x), n >= 1 (real array of integers)."""
    # p = exp(-z) with z = 2x + i pi (mod 2 pi i), reduced to Im z in [-pi, pi]
    im = B.imag(x) * 2.0 + math.pi
    im = im - (2.0 * math.pi) * B.round(im / (2.0 * math.pi))
    z = B.complex(B.real(x) * 2.0, im)
    near = B.abs(z) < _SMALL
    return B.merge(near, lambda nn, zz: _g_near(B, nn, zz), lambda nn, zz: _g_far(B, nn, zz), n, z)


def _chi_cpmg(B: Any, w0: Any, g: Any, t: Any, n: Any) -> Any:
    """chi / a for n >= 1: h^2 Re[n x m(x) + x^2 psi(x)^4 G_n(-e^-2x)], x = k h, h = t/2n."""
    # VQNS paper, App. A, Eq. (9) with the CPMG filter of Eq. (11) (Cywinski et al., PRB 77,
    # 174509 (2008)) for the Lorentzian of Eq. (4), done in the time domain as derived above.
    h = t / (2.0 * n)
    x = B.complex(g * h, -w0 * h)
    gn = _geometric_g(B, n, x)
    cells = B.merge(B.abs(x) < _SMALL, _cells_series, lambda *v: _cells_direct(B, *v), x, n, gn)
    return (h * h) * B.real(cells)


def _chi_fid(B: Any, w0: Any, g: Any, t: Any, n: Any) -> Any:
    """chi / a for the FID: t^2 Re phi(k t)."""
    return (t * t) * B.real(_phi(B, B.complex(g * t, -w0 * t)))


def _chi_over_a(B: Any, w0: Any, g: Any, t: Any, n: Any) -> Any:
    """chi / a = Re J (s^2); flat arrays of one length, n real integers >= 0."""
    return B.merge(n == 0, lambda *v: _chi_fid(B, *v), lambda *v: _chi_cpmg(B, *v), w0, g, t, n)


def _check_numpy_args(
    a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n_pulses: ArrayLike
) -> tuple[np.ndarray, ...]:
    a, w0, g, t = (np.asarray(v, dtype=np.float64) for v in (a, w0, g, t))
    n = np.asarray(n_pulses)
    if n.dtype.kind not in "iub" and np.any(n != np.round(n)):
        raise ValueError("n_pulses must be integers")
    n = n.astype(np.float64)
    if np.any(n < 0):
        raise ValueError("n_pulses must be >= 0")
    if np.any(g < 0):
        raise ValueError("the Lorentzian width g must be >= 0")
    return a, w0, g, t, n


def attenuation(
    a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n_pulses: ArrayLike
) -> np.ndarray:
    """chi(t) of one symmetrized Lorentzian per element, float64 numpy (dimensionless).

    a: amplitude, rad^2/s^2 (the correlation is a exp(-g|tau|) cos(w0 tau));
    w0: centre, rad/s; g: half width, rad/s (>= 0); t: sequence length, s;
    n_pulses: 0 = FID, 1 = spin echo, n = CPMG-n (int or int array).
    All five broadcast against each other (numpy rules); the result has the broadcast shape.
    A sum of Lorentzians is the sum of their chi (coherence C = exp(-sum chi)).
    Accuracy: ~1e-15 relative typically, <= 1e-12 where chi > 1e-6 a t^2 (phase rounding near
    CPMG resonances), <= 3e-15 a t^2 absolute.
    """
    a, w0, g, t, n = np.broadcast_arrays(*_check_numpy_args(a, w0, g, t, n_pulses))
    flat = [v.ravel() for v in (w0, g, t, n)]
    return a * _chi_over_a(_NumpyOps, *flat).reshape(a.shape)


def attenuation_fid(a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike) -> np.ndarray:
    """chi(t) under free induction decay; units as `attenuation` (a rad^2/s^2, w0 and g rad/s, t s)."""
    return attenuation(a, w0, g, t, 0)


def attenuation_echo(a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike) -> np.ndarray:
    """chi(t) under a Hahn spin echo (pi pulse at t/2); units as `attenuation`."""
    return attenuation(a, w0, g, t, 1)


def attenuation_cpmg(
    a: ArrayLike, w0: ArrayLike, g: ArrayLike, t: ArrayLike, n: ArrayLike
) -> np.ndarray:
    """chi(t) under CPMG-n (pulses at t(2k-1)/2n), rad/s, s; n = 0 FID, 1 echo; as `attenuation`."""
    return attenuation(a, w0, g, t, n)


def attenuation_torch(a: Any, w0: Any, g: Any, t: Any, n_pulses: Any) -> Any:
    """`attenuation` in torch, same math, differentiable by autograd in a, w0, g and t.

    Arguments are tensors or numbers (same units as `attenuation`) and broadcast by torch rules,
    e.g. (restarts, lorentzians, 1, 1) against (1, 1, sequences, times); n_pulses is an integer
    tensor (or int / array). The float dtype and device are those of the floating-point tensor
    arguments (float64 if there are none). Use float64 for fitting: float32 rounds the phase
    w0 t, which near a CPMG resonance costs ~1e-3 relative at w0 t ~ 1e3. g >= 0 and integer
    n_pulses >= 0 are assumed, not checked (parametrize g, e.g. softplus).
    """
    import torch

    B = _TorchOps()
    floats = [v for v in (a, w0, g, t) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.float64
    for v in floats[1:]:
        dtype = torch.promote_types(dtype, v.dtype)
    device = floats[0].device if floats else None
    args = (torch.as_tensor(v, dtype=dtype, device=device) for v in (a, w0, g, t, n_pulses))
    a, w0, g, t, n = torch.broadcast_tensors(*args)
    flat = [v.reshape(-1) for v in (w0, g, t, n)]
    return a * _chi_over_a(B, *flat).reshape(a.shape)


def attenuation_textbook(
    a: ArrayLike,
    w0: ArrayLike,
    g: ArrayLike,
    t: ArrayLike,
    n_pulses: ArrayLike,
    dtype: Any = np.float64,
) -> np.ndarray:
    """TEXTBOOK closed form, kept only as the benchmark's baseline: do not use it for fitting.

    Same closed form and units as `attenuation`, written over k^2 as usually printed:
        FID:    J = (k t - 1 + e^-kt) / k^2
        n >= 1: J = [ n (2x - 3 + 4 e^-x - e^-2x) + (1 - e^-x)^4 (n - 1 - n p + p^n) / (1-p)^2 ] / k^2,
    x = k t/2n, p = -e^-2x. Its numerators are O(1) terms that cancel to O(x^3): relative error
    ~ eps / (|k| t / 2n)^3. Measured at g t = 1e-3, w0 = 0, n = 32: 9e-2 in float64, 1.0 in
    float32. It is 0/0 at k = 0 and at the CPMG resonance. `dtype` (float64 or float32) sets
    the working precision.
    """
    rdt = np.dtype(dtype)
    cdt = np.result_type(rdt, np.complex64)
    a, w0, g, t, n = _check_numpy_args(a, w0, g, t, n_pulses)
    a, w0, g, t, n = (v.astype(rdt) for v in (a, w0, g, t, n))
    k = (g - 1j * w0).astype(cdt)
    nn = np.where(n == 0, 1, n).astype(rdt)
    x = (k * t / (2 * nn)).astype(cdt)
    e1 = np.exp(-x)
    p = -np.exp(-2 * x)
    with np.errstate(divide="ignore", invalid="ignore"):
        fid = (k * t - 1 + np.exp(-k * t)) / k**2
        cells = nn * (2 * x - 3 + 4 * e1 - e1 * e1)
        pairs = (1 - e1) ** 4 * (nn - 1 - nn * p + p**nn) / (1 - p) ** 2
        cpmg = (cells + pairs) / k**2
    return a * np.real(np.where(n == 0, fid, cpmg))
