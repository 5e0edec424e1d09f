"""Dark electron spins (g = 2.0023, S = 1/2) seen by the NV through DEER (docs/physics.md section 2,
"Dark spins and DEER").

A spin echo on the NV with an RF pi pulse on the dark spins at f_RF flips, with probability p, each
dark spin whose resonance gamma_dark |B0 + B_tip(r)| lies in the resonant slice; a flipped spin's
dipolar field is then not refocused and multiplies the echo by 1 - p (1 - cos(pi J tau)), J the
secular dipolar coupling. Over any set of spins the DEER signal (echo with RF over echo without RF)
is the product of these factors. p is the Rabi formula averaged over the dark spin's own line
(T2*), by quadrature: no closed form is assumed.

The field is not computed here: `deer_signal` is handed `field_at(points) -> B`, the total field
(bias + tip) in T, so the tip model lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.interpolate import CubicSpline

from nvscope.rt.kernels.spin_constants import G_DARK, NU_DD_HZ_M3 as NU_DD
from nvscope.rt.kernels.spin_constants import GAMMA_DARK_HZ_PER_T as GAMMA_DARK
LINES = ("lorentzian", "gaussian")

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)
_DIRECT_MAX = 4096  # above this many detunings, flip_probability tabulates p(|detuning|) and interpolates


@dataclass(frozen=True)
class DarkSpins:
    """Positions (K, 3) in m of dark electron spins (diamond surface z = 0, +z towards the tip)."""

    positions: np.ndarray

    def __post_init__(self) -> None:
        p = np.asarray(self.positions, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
            raise ValueError(f"dark spin positions must be a finite (K, 3) array in m, got shape {p.shape}")
        p.setflags(write=False)
        object.__setattr__(self, "positions", p)

    def __len__(self) -> int:
        return self.positions.shape[0]

    @classmethod
    def single(cls, r: np.ndarray) -> "DarkSpins":
        """One dark spin at r (3,) m."""
        return cls(np.asarray(r, dtype=np.float64).reshape(1, 3))

    @classmethod
    def pair(cls, r1: np.ndarray, r2: np.ndarray) -> "DarkSpins":
        """Two dark spins at r1 and r2 (3,) m."""
        return cls(np.stack([np.asarray(r1, dtype=np.float64), np.asarray(r2, dtype=np.float64)]))

    @classmethod
    def surface_layer(cls, density_per_m2: float, height_m: float, extent_m: float,
                      rng: np.random.Generator) -> "DarkSpins":
        """A random layer (a Poisson point process of density spins/m^2) in the plane z = height_m (m),
        over the square |x|, |y| <= extent_m / 2 (m) centred on the z axis."""
        if not (np.isfinite(density_per_m2) and density_per_m2 >= 0 and np.isfinite(height_m)
                and np.isfinite(extent_m) and extent_m > 0):
            raise ValueError("a surface layer needs density >= 0 spins/m^2, a finite height (m) and extent > 0 m, "
                             f"got {density_per_m2}, {height_m}, {extent_m}")
        n = rng.poisson(density_per_m2 * extent_m**2)
        xy = rng.uniform(-0.5 * extent_m, 0.5 * extent_m, size=(n, 2))
        return cls(np.column_stack([xy, np.full(n, float(height_m))]))


def dark_resonance(b_total: np.ndarray) -> np.ndarray:
    """Dark-spin resonance gamma_dark |B| in Hz of the total field B (..., 3) in T."""
    return GAMMA_DARK * np.linalg.norm(np.asarray(b_total, dtype=np.float64), axis=-1)


def rabi_probability(detuning_hz: np.ndarray, t_pi_s: float) -> np.ndarray:
    """Bare Rabi flip probability of a pulse of length t_pi_s (s) at detuning (Hz):
    Omega^2/(Omega^2 + Delta^2) sin^2(pi sqrt(Omega^2 + Delta^2) t_pi), Omega = 1/(2 t_pi) in Hz."""
    omega = 0.5 / t_pi_s  # Rabi frequency in Hz (cycles/s): Omega t_pi = 1/2 is a pi pulse
    e2 = omega**2 + np.asarray(detuning_hz, dtype=np.float64) ** 2
    return omega**2 / e2 * np.sin(np.pi * np.sqrt(e2) * t_pi_s) ** 2


def line_width(t2star_s: float, line: str) -> float:
    """The dark spin's line width in Hz: HWHM 1/(2 pi T2*) (Lorentzian, exp(-t/T2*) decay) or sigma
    sqrt(2)/(2 pi T2*) (Gaussian, exp(-(t/T2*)^2) decay)."""
    if line == "lorentzian":
        return 1.0 / (2.0 * np.pi * t2star_s)
    if line == "gaussian":
        return np.sqrt(2.0) / (2.0 * np.pi * t2star_s)
    raise ValueError(f"line must be one of {LINES}, got {line!r}")


def _line_density(y: np.ndarray, width: float, line: str) -> np.ndarray:
    if line == "lorentzian":
        return width / np.pi / (y * y + width * width)
    return np.exp(-0.5 * (y / width) ** 2) / (width * np.sqrt(2.0 * np.pi))


def _line_average(detuning: np.ndarray, t_pi_s: float, width: float, line: str) -> np.ndarray:
    """p(Delta) = P(Delta) + int_0^inf 2 line(y) [(P(Delta + y) + P(Delta - y))/2 - P(Delta)] dy for 1-D
    Delta (Hz): the subtracted integrand has no peak of the line's width (T2* -> inf leaves the bare P).
    A partition of unity splits it into a part at y = 0 and one at the Rabi peak y = |Delta| (both on
    the scale Omega), each integrated by Gauss-Legendre on y = c + Omega tan(theta)."""
    omega = 0.5 / t_pi_s
    d = np.abs(detuning)[:, None]
    p0 = rabi_probability(d, t_pi_s)
    out = p0[:, 0].copy()
    for k, centre in enumerate((0.0 * d, d)):
        lo = np.arctan(-centre / omega)  # y = 0
        theta = lo + (0.5 * np.pi - lo) * (_NODES + 1.0) / 2.0
        wt = (0.5 * np.pi - lo) / 2.0 * _WEIGHTS
        t = np.tan(theta)
        y = centre + omega * t
        h0 = 1.0 / (1.0 + (y / omega) ** 2)
        h1 = 1.0 / (1.0 + ((y - d) / omega) ** 2)
        share = (h1 if k else h0) / (h0 + h1)
        f = 0.5 * (rabi_probability(d + y, t_pi_s) + rabi_probability(d - y, t_pi_s)) - p0
        out += (wt * omega * (1.0 + t * t) * 2.0 * _line_density(y, width, line) * f * share).sum(axis=1)
    return out


def _direct(detuning: np.ndarray, t_pi_s: float, width: float, line: str) -> np.ndarray:
    out = np.empty(detuning.size)
    for i in range(0, detuning.size, 2048):
        out[i:i + 2048] = _line_average(detuning[i:i + 2048], t_pi_s, width, line)
    return out


def _tabulated(detuning: np.ndarray, t_pi_s: float, width: float, line: str) -> np.ndarray:
    """p(|Delta|) on a table (steps of Omega/50 up to 30 (Omega + width), then 1/(8 t_pi), which
    resolves the Rabi tail's oscillation) and a cubic spline; beyond 40000 nodes, direct quadrature."""
    omega = 0.5 / t_pi_s
    a = np.abs(detuning)
    core = 30.0 * (omega + width)
    top = min(a.max(), core + 40_000 / (8.0 * t_pi_s))
    x = np.arange(0.0, core, omega / 50.0)
    if top >= core:
        x = np.concatenate([x, np.arange(core, top + 4.0 / (8.0 * t_pi_s), 1.0 / (8.0 * t_pi_s))])
    px = _direct(x, t_pi_s, width, line)
    table = CubicSpline(np.concatenate([-x[3:0:-1], x]), np.concatenate([px[3:0:-1], px]))  # p is even
    out = table(a)
    far = a > x[-1]
    if far.any():
        out[far] = _direct(a[far], t_pi_s, width, line)
    return out


def flip_probability(detuning_hz: np.ndarray, t_pi_s: float, t2star_s: float,
                     line: str = "lorentzian") -> np.ndarray:
    """Probability (0-1) that an RF pi pulse of t_pi_s (s) at detuning (Hz) from a dark spin's line
    centre flips it: the Rabi formula averaged over the line of T2* = t2star_s (s; inf: the bare
    formula), Lorentzian (HWHM 1/(2 pi T2*)) or Gaussian (sigma sqrt(2)/(2 pi T2*))."""
    if not (np.isfinite(t_pi_s) and t_pi_s > 0 and t2star_s > 0):
        raise ValueError(f"flip probability needs t_pi > 0 s and T2* > 0 s, got {t_pi_s}, {t2star_s}")
    width = line_width(t2star_s, line)
    d = np.asarray(detuning_hz, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError("flip probability: the detunings (Hz) must be finite")
    if np.isinf(t2star_s) or width == 0.0:
        return rabi_probability(d, t_pi_s)
    flat = d.ravel()
    p = (_direct if flat.size <= _DIRECT_MAX else _tabulated)(flat, t_pi_s, width, line)
    return np.clip(p, 0.0, 1.0).reshape(d.shape)


def secular_coupling(r_nv_to_dark: np.ndarray, n_nv: np.ndarray, n_dark: np.ndarray) -> np.ndarray:
    """Secular dipolar coupling J in Hz between the NV (axis n_nv) and a dark spin at r (..., 3) m from
    it, quantized along n_dark (..., 3): nu_dd [n_nv.n_d - 3 (n_nv.r^)(n_d.r^)] / |r|^3."""
    r = np.asarray(r_nv_to_dark, dtype=np.float64)
    n_nv = np.asarray(n_nv, dtype=np.float64)
    n_d = np.asarray(n_dark, dtype=np.float64)
    n_nv = n_nv / np.linalg.norm(n_nv, axis=-1, keepdims=True)
    n_d = n_d / np.linalg.norm(n_d, axis=-1, keepdims=True)
    dist = np.linalg.norm(r, axis=-1)
    if np.any(dist == 0):
        raise ValueError("secular coupling: a dark spin sits on the NV (|r| = 0 m)")
    u = r / dist[..., None]
    dot = lambda a, b: np.sum(a * b, axis=-1)  # noqa: E731
    return NU_DD * (dot(n_nv, n_d) - 3.0 * dot(n_nv, u) * dot(n_d, u)) / dist**3


def deer_signal(spins: DarkSpins, field_at: Callable[[np.ndarray], np.ndarray], nv_position: np.ndarray,
                n_nv: np.ndarray, f_rf: float, tau: float, t_pi_rf: float, t2star: float,
                line: str = "lorentzian") -> np.ndarray:
    """DEER signal (echo with RF / echo without RF, 0-1) = prod_k [1 - p_k (1 - cos(pi J_k tau))].

    field_at(points (K, 3) m) -> total field (..., K, 3) T at the spins (bias + tip; leading axes,
    e.g. one per tip position, give the signal's shape); nv_position (3,) m; n_nv the NV axis;
    f_rf (Hz), tau the echo's total evolution time (s), t_pi_rf the RF pi pulse (s), t2star the
    dark spins' T2* (s)."""
    if len(spins) == 0:
        b = np.asarray(field_at(np.zeros((1, 3))))
        return np.ones(b.shape[:-2])
    b = np.asarray(field_at(spins.positions), dtype=np.float64)
    if b.ndim < 2 or b.shape[-2:] != (len(spins), 3):
        raise ValueError(f"field_at must return (..., {len(spins)}, 3) T for {len(spins)} spins, got {b.shape}")
    mod = np.linalg.norm(b, axis=-1)
    if np.any(mod == 0):
        raise ValueError("deer_signal: zero total field at a dark spin (no quantization axis)")
    r = spins.positions - np.asarray(nv_position, dtype=np.float64)
    j = secular_coupling(r, n_nv, b / mod[..., None])
    p = flip_probability(f_rf - GAMMA_DARK * mod, t_pi_rf, t2star, line)
    return np.prod(1.0 - p * (1.0 - np.cos(np.pi * j * tau)), axis=-1)


def count_ratio(signal: np.ndarray, contrast: float = 0.25, coherence: float = 1.0) -> np.ndarray:
    """Expected n_rf / n_ref of the pulsed readout for a DEER signal (0-1): a shot ends in ms=0 with
    probability (1 + C S)/2 (C the echo's own coherence), and ms=-1 gives `contrast` fewer photons."""
    s = np.asarray(signal, dtype=np.float64)
    return (1.0 - contrast * (1.0 - coherence * s) / 2.0) / (1.0 - contrast * (1.0 - coherence) / 2.0)


def signal_from_counts(n_rf: np.ndarray, n_ref: np.ndarray, contrast: float = 0.25,
                       coherence: float = 1.0) -> np.ndarray:
    """The DEER signal (0-1) estimated from the counts with and without RF (inverse of count_ratio)."""
    ratio = np.asarray(n_rf, dtype=np.float64) / np.asarray(n_ref, dtype=np.float64)
    ref = 1.0 - contrast * (1.0 - coherence) / 2.0
    return (1.0 - 2.0 * (1.0 - ratio * ref) / contrast) / coherence


def deer_counts(signal: np.ndarray, shots: int, rng: np.random.Generator, photons_per_shot: float = 0.03,
                contrast: float = 0.25, coherence: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson photon counts (n_rf, n_ref) of `shots` pulsed readouts of the echo with RF (DEER signal
    S) and of the reference echo without RF: means shots x photons_per_shot x (1 - contrast (1 - C S)/2)
    with C = coherence, and C in place of C S for the reference."""
    s = np.asarray(signal, dtype=np.float64)
    if not (shots >= 0 and photons_per_shot >= 0 and 0 <= contrast <= 1 and 0 <= coherence <= 1):
        raise ValueError("deer counts need shots >= 0, photons_per_shot >= 0, 0 <= contrast <= 1 and "
                         f"0 <= coherence <= 1, got {shots}, {photons_per_shot}, {contrast}, {coherence}")
    if not np.all((s >= 0) & (s <= 1)):
        raise ValueError("deer counts: the DEER signal must lie in [0, 1]")
    lam = shots * photons_per_shot
    n_rf = rng.poisson(lam * (1.0 - contrast * (1.0 - coherence * s) / 2.0))
    n_ref = rng.poisson(np.broadcast_to(lam * (1.0 - contrast * (1.0 - coherence) / 2.0), s.shape))
    return n_rf, n_ref


__all__ = ["G_DARK", "GAMMA_DARK", "NU_DD", "DarkSpins", "dark_resonance", "rabi_probability", "line_width",
           "flip_probability", "secular_coupling", "deer_signal", "count_ratio", "signal_from_counts",
           "deer_counts"]
