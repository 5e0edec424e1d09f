"""DEER physics the rig's simulator and the NV-MRI analysis share, defined once (docs/physics.md
section 2.5): the dark spin's line-averaged Rabi flip probability and the secular dipolar coupling.

Pure numpy (no scipy: rt stays lean). Large arrays of detunings go through `FlipTable`, a fine table of
p(|Delta|) with 4-point (cubic) Lagrange interpolation, which agrees with direct quadrature to ~1e-7.
SI units: Hz, s, m.
"""

from __future__ import annotations

import numpy as np

from .spin_constants import NU_DD_HZ_M3

LINES = ("lorentzian", "gaussian")

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)
_DIRECT_MAX = 4096  # above this many detunings, flip_probability tabulates p(|detuning|) and interpolates
_TAIL_NODES = 40_000  # the table's tail nodes at most; farther detunings are integrated directly


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


def _lagrange4(x0: float, h: float, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cubic (4-point Lagrange) interpolation of `values` on the uniform nodes x0 + i h at x."""
    u = (x - x0) / h
    i = np.clip(np.floor(u).astype(np.int64), 1, values.size - 3)
    s = u - i
    v0, v1, v2, v3 = values[i - 1], values[i], values[i + 1], values[i + 2]
    return (-s * (s - 1) * (s - 2) / 6 * v0 + (s + 1) * (s - 1) * (s - 2) / 2 * v1
            - (s + 1) * s * (s - 2) / 2 * v2 + (s + 1) * s * (s - 1) / 6 * v3)


class FlipTable:
    """p(|Delta|) of `flip_probability` tabulated up to |Delta| = max_detuning_hz (Hz): steps of
    Omega/100 up to 30 (Omega + width), then 1/(16 t_pi) (16 nodes per period of the Rabi tail), at most
    40000 tail nodes; call it on detunings (Hz), farther ones are integrated directly. Build once, call
    often (the NV-MRI fits)."""

    def __init__(self, t_pi_s: float, t2star_s: float, line: str = "lorentzian", max_detuning_hz: float = 0.0):
        _check(t_pi_s, t2star_s)
        self.t_pi_s, self.t2star_s, self.line = float(t_pi_s), float(t2star_s), line
        self.width = line_width(t2star_s, line)
        omega = 0.5 / t_pi_s
        self.bare = bool(np.isinf(t2star_s) or self.width == 0.0)
        if self.bare:
            return
        self.h_core = omega / 100.0
        self.core = 30.0 * (omega + self.width)
        x = np.arange(-3, int(self.core / self.h_core) + 4) * self.h_core
        self.p_core = _direct(x, t_pi_s, self.width, line)  # p is even: the nodes below 0 mirror
        self.h_tail = 1.0 / (16.0 * t_pi_s)
        top = min(max(float(max_detuning_hz), self.core), self.core + _TAIL_NODES * self.h_tail)
        self.tail_x0 = self.core - 3.0 * self.h_tail
        n = int(np.ceil((top - self.tail_x0) / self.h_tail)) + 4
        self.p_tail = _direct(self.tail_x0 + np.arange(n) * self.h_tail, t_pi_s, self.width, line)
        self.top = self.tail_x0 + (n - 3) * self.h_tail

    def __call__(self, detuning_hz: np.ndarray) -> np.ndarray:
        """Flip probability (0-1) at the detunings (Hz), any shape."""
        d = np.asarray(detuning_hz, dtype=np.float64)
        if self.bare:
            return rabi_probability(d, self.t_pi_s)
        a = np.abs(d).ravel()
        out = np.empty(a.size)
        core = a < self.core
        out[core] = _lagrange4(-3 * self.h_core, self.h_core, self.p_core, a[core])
        tail = ~core & (a <= self.top)
        out[tail] = _lagrange4(self.tail_x0, self.h_tail, self.p_tail, a[tail])
        far = a > self.top
        if far.any():
            out[far] = _direct(a[far], self.t_pi_s, self.width, self.line)
        return np.clip(out, 0.0, 1.0).reshape(d.shape)


def _check(t_pi_s: float, t2star_s: float) -> None:
    if not (np.isfinite(t_pi_s) and t_pi_s > 0 and t2star_s > 0):
        raise ValueError(f"flip probability needs t_pi > 0 s and T2* > 0 s, got {t_pi_s}, {t2star_s}")


def flip_probability(detuning_hz: np.ndarray, t_pi_s: float, t2star_s: float,
                     line: str = "lorentzian") -> np.ndarray:
    """Probability (0-1) that an RF pi pulse of t_pi_s (s) at detuning (Hz) from a dark spin's line
    centre flips it: the Rabi formula averaged over the line of T2* = t2star_s (s; inf: the bare
    formula), Lorentzian (HWHM 1/(2 pi T2*)) or Gaussian (sigma sqrt(2)/(2 pi T2*))."""
    _check(t_pi_s, t2star_s)
    width = line_width(t2star_s, line)
    d = np.asarray(detuning_hz, dtype=np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError("flip probability: the detunings (Hz) must be finite")
    if np.isinf(t2star_s) or width == 0.0:
        return rabi_probability(d, t_pi_s)
    flat = d.ravel()
    if flat.size <= _DIRECT_MAX:
        return np.clip(_direct(flat, t_pi_s, width, line), 0.0, 1.0).reshape(d.shape)
    return FlipTable(t_pi_s, t2star_s, line, float(np.abs(flat).max()))(d)


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
    return NU_DD_HZ_M3 * (dot(n_nv, n_d) - 3.0 * dot(n_nv, u) * dot(n_d, u)) / dist**3


def echo_weight(j_hz: np.ndarray, tau_s: float) -> np.ndarray:
    """A flipped dark spin's weight 1 - cos(pi J tau) (0-2) in the echo of total time tau_s (s), J in Hz:
    the spin multiplies the DEER signal by 1 - p * weight."""
    return 1.0 - np.cos(np.pi * np.asarray(j_hz, dtype=np.float64) * tau_s)


__all__ = ["LINES", "rabi_probability", "line_width", "FlipTable", "flip_probability", "secular_coupling",
           "echo_weight"]
