"""The NV-MRI magnetic tip: a uniformly magnetized sphere, whose field outside it is exactly that of
a point dipole at its centre (docs/physics.md section 2.2).

Geometry (docs/physics.md section 2.1): the diamond surface is z = 0, +z points out of the diamond
towards the tip, a tip position is the position of its apex, and the sphere's centre is
apex + R z^. SI units: positions in m, fields in T, gradients in T/m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nvscope.rt.kernels.dipole import dipole_field


@dataclass(frozen=True)
class TipParams:
    """A uniformly magnetized sphere: radius (m), mu0 Ms (T) and the magnetization's direction
    (a unit vector, +z by default)."""

    radius_m: float = 20e-9
    mu0_ms_t: float = 0.425
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"tip radius_m must be > 0 m, got {self.radius_m!r}")
        if not math.isfinite(self.mu0_ms_t):
            raise ValueError(f"tip mu0_ms_t must be finite (T), got {self.mu0_ms_t!r}")
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape != (3,) or not np.all(np.isfinite(d)) or abs(np.linalg.norm(d) - 1.0) > 1e-9:
            raise ValueError(f"tip direction must be a unit 3-vector, got {self.direction!r}")

    @property
    def moment_t_m3(self) -> np.ndarray:
        """mu0 m / 4 pi in T m^3 (a 3-vector): mu0 Ms R^3 / 3 along `direction`, with m = (4/3) pi R^3 Ms."""
        return self.mu0_ms_t * self.radius_m**3 / 3.0 * np.asarray(self.direction, dtype=np.float64)

    def centre_m(self, apex_m: np.ndarray) -> np.ndarray:
        """The sphere's centre (m), apex + R z^, for apex positions (..., 3) in m."""
        return np.asarray(apex_m, dtype=np.float64) + np.array([0.0, 0.0, self.radius_m])


def _offsets(points_m: np.ndarray, apex_m: np.ndarray, tip: TipParams) -> tuple[np.ndarray, np.ndarray]:
    """r - r_c (..., 3) in m and |r - r_c| (..., 1); ValueError for a point inside the sphere or a bad shape."""
    p = np.asarray(points_m, dtype=np.float64)
    a = np.asarray(apex_m, dtype=np.float64)
    if p.shape[-1:] != (3,) or a.shape[-1:] != (3,):
        raise ValueError(f"points_m and apex_m must have shape (..., 3), got {p.shape} and {a.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(a))):
        raise ValueError("points_m and apex_m must be finite (m)")
    r = p - tip.centre_m(a)
    n = np.linalg.norm(r, axis=-1, keepdims=True)
    if np.any(n < tip.radius_m * (1.0 - 1e-12)):
        raise ValueError(f"a point lies inside the tip's sphere (radius {tip.radius_m:.3g} m): "
                         "the dipole field holds only outside it")
    return r, n


def tip_field(points_m: np.ndarray, apex_m: np.ndarray, tip: TipParams = TipParams()) -> np.ndarray:
    """B (..., 3) in T at `points_m` (..., 3) in m of the tip with its apex at `apex_m` (..., 3) in m
    (broadcast against each other): (mu0 / 4 pi) [3 (m . u) u - m] / |r - r_c|^3."""
    r, _ = _offsets(points_m, apex_m, tip)
    return dipole_field(r, tip.moment_t_m3)


def tip_field_gradient(points_m: np.ndarray, apex_m: np.ndarray, tip: TipParams = TipParams()) -> np.ndarray:
    """dB_i / dx_j (..., 3, 3) in T/m at `points_m` (..., 3) in m for the apex at `apex_m` (..., 3) in m:
    (mu0 / 4 pi) [3 (m_j r_i + m_i r_j + (m . r) delta_ij) / r^5 - 15 (m . r) r_i r_j / r^7]
    (symmetric and traceless: curl B = 0, div B = 0)."""
    r, n = _offsets(points_m, apex_m, tip)
    k = tip.moment_t_m3
    n = n[..., None]  # (..., 1, 1)
    kr = (r @ k)[..., None, None]
    ri = r[..., :, None]
    rj = r[..., None, :]
    return (3.0 * (k[None, :] * ri + k[:, None] * rj + kr * np.eye(3)) / n**5
            - 15.0 * kr * ri * rj / n**7)


__all__ = ["TipParams", "tip_field", "tip_field_gradient"]
