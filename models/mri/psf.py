"""The NV-MRI point-spread function: a cubic spline through the measured locked-detuning stack, and the
dark spin's detuning it predicts (docs/physics.md sections 2.4-2.6).

The field at a dark spin at r (from the NV) with the tip's apex at t equals the field at the NV with the
apex at t - r, so to first order Delta_dark(t) = f_rf - gamma_dark b0 - (gamma_dark / gamma_NV) PSF(t - r).
That is exact only for the axial field: the dark spin follows |B0 + B_tip|, the NV its axial projection
plus a second-order shift from the transverse field (up to ~20 MHz at a 10 nm gap). `TipDipole` fits a
point dipole to the whole stack and supplies that second-order difference; the first-order term stays
the measured, model-free spline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.optimize import least_squares

from nvscope.rt.kernels.dipole import dipole_field
from nvscope.rt.kernels.spin_constants import D_HZ, GAMMA_DARK_HZ_PER_T, GAMMA_NV_HZ_PER_T

from .scan_data import MriScan

RATIO = GAMMA_DARK_HZ_PER_T / GAMMA_NV_HZ_PER_T


class PsfSpline:
    """Cubic B-spline interpolation of the detuning stack (Hz), or of `values` on the same grid, on its
    regular grid (scipy.ndimage)."""

    def __init__(self, scan: MriScan, values: np.ndarray | None = None):
        x, y, z = scan.grid_axes
        self.origin = np.array([x[0], y[0], z[0]])
        self.step = np.array([x[1] - x[0], y[1] - y[0], z[1] - z[0]])
        self.upper = np.array([x[-1], y[-1], z[-1]])
        v = scan.detuning if values is None else values
        self.shape = v.shape  # (Nz, Ny, Nx)
        self.coeffs = ndimage.spline_filter(np.ascontiguousarray(v, dtype=np.float64), order=3, mode="nearest")

    def __call__(self, apex_m: np.ndarray) -> np.ndarray:
        """The locked detuning (Hz) with the apex at (..., 3) m (clamped to the grid outside it)."""
        a = np.asarray(apex_m, dtype=np.float64)
        idx = (a - self.origin) / self.step  # (..., 3) in x, y, z order; the stack is (z, y, x)
        coords = np.stack([idx[..., 2].ravel(), idx[..., 1].ravel(), idx[..., 0].ravel()])
        out = ndimage.map_coordinates(self.coeffs, coords, order=3, mode="nearest", prefilter=False)
        return out.reshape(a.shape[:-1])

    def linear_map(self, apex_m: np.ndarray, reach: int = 4) -> sparse.csr_matrix:
        """The interpolation as a matrix G (N, Nz Ny Nx): spline(apex) = G @ values.ravel() for apex (N, 3) m.
        The cubic spline is a tensor product of 1-D splines, each linear in the grid values; each point keeps
        the 2 reach nodes per axis around it (the spline filter's response falls 3.7x per node, so the
        dropped weights are < 1e-3)."""
        a = np.asarray(apex_m, dtype=np.float64).reshape(-1, 3)
        idx = (a - self.origin) / self.step
        per_axis = []
        for ax, n in zip((2, 1, 0), self.shape):  # z, y, x: the stack's axes
            u = idx[:, ax]
            m = min(2 * reach, n)
            j0 = np.clip(np.floor(np.clip(u, 0.0, n - 1.0)).astype(np.int64) - reach + 1, 0, n - m)
            cols = j0[:, None] + np.arange(m)
            w = np.empty(cols.shape)
            for j in range(n):  # the interpolated impulse at node j, at every u
                hit = (cols == j)
                rows = np.nonzero(hit.any(axis=1))[0]
                if rows.size == 0:
                    continue
                imp = ndimage.spline_filter1d(np.eye(n)[j], order=3, mode="nearest")
                w[hit] = ndimage.map_coordinates(imp, u[rows][None, :], order=3, mode="nearest", prefilter=False)
            per_axis.append((cols, w))
        (cz, wz), (cy, wy), (cx, wx) = per_axis
        ny, nx = self.shape[1], self.shape[2]
        col = (cz[:, :, None, None] * ny + cy[:, None, :, None]) * nx + cx[:, None, None, :]
        val = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]
        n_pts = a.shape[0]
        rows = np.repeat(np.arange(n_pts), col[0].size)
        return sparse.csr_matrix((val.ravel(), (rows, col.ravel())), shape=(n_pts, int(np.prod(self.shape))))

    def inside(self, apex_m: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether each apex position (..., 3) m lies inside the grid (bool)."""
        a = np.asarray(apex_m, dtype=np.float64)
        tol = 1e-9 * self.step + margin
        return np.all((a >= self.origin - tol) & (a <= self.upper + tol), axis=-1)


def nv_shift(b_tip_t: np.ndarray, b0_t: float) -> np.ndarray:
    """The NV line's shift (Hz) from a tip field (..., 3) T (NV frame, z the NV axis) on top of b0 along z:
    gamma B_z plus the transverse second order gamma^2 B_perp^2 [1/(gamma B - D) - 1/(2 (gamma B + D))]
    (perturbation theory of H = D Sz^2 + gamma B.S above the anticrossing, docs/physics.md 2.3)."""
    g = GAMMA_NV_HZ_PER_T
    bz = b0_t + b_tip_t[..., 2]
    bp2 = b_tip_t[..., 0] ** 2 + b_tip_t[..., 1] ** 2
    return g * b_tip_t[..., 2] + g * g * bp2 * (1.0 / (g * bz - D_HZ) - 0.5 / (g * bz + D_HZ))


@dataclass(frozen=True)
class TipDipole:
    """A point dipole fitted to the PSF stack: moment (3,) as mu0 m / 4 pi in T m^3 at apex + offset (3,) m;
    rms_hz the stack's residual (an estimate of the lock noise when the tip is a dipole)."""

    moment_t_m3: np.ndarray
    offset_m: np.ndarray
    depth_m: float
    b0_t: float
    rms_hz: float

    def field_at_nv(self, apex_m: np.ndarray) -> np.ndarray:
        """The tip's field (..., 3) T at the NV with the apex at (..., 3) m."""
        nv = np.array([0.0, 0.0, -self.depth_m])
        return dipole_field(nv - (np.asarray(apex_m) + self.offset_m), self.moment_t_m3)

    def second_order_hz(self, apex_m: np.ndarray) -> np.ndarray:
        """What the first-order slice misses (Hz): (gamma_d/gamma_NV) nv_shift - gamma_d (|B0 + B| - B0),
        added to f_rf - gamma_d b0 - (gamma_d/gamma_NV) PSF it gives f_rf - gamma_d |B0 + B|."""
        b = self.field_at_nv(apex_m)
        total = np.sqrt(b[..., 0] ** 2 + b[..., 1] ** 2 + (self.b0_t + b[..., 2]) ** 2)
        return RATIO * nv_shift(b, self.b0_t) - GAMMA_DARK_HZ_PER_T * (total - self.b0_t)


def fit_tip_dipole(scan: MriScan, max_points: int = 20_000) -> TipDipole:
    """The point dipole whose NV shift best fits the detuning stack (least squares over up to max_points
    pixels), started from the on-axis peak of the lowest plane (a 20 nm sphere along +z)."""
    tips = scan.psf_tip.reshape(-1, 3)
    det = scan.detuning.ravel()
    if det.size > max_points:
        pick = np.random.default_rng(0).choice(det.size, max_points, replace=False)
        tips, det = tips[pick], det[pick]
    low = scan.detuning[0]
    iy, ix = np.unravel_index(np.argmax(np.abs(low)), low.shape)
    gap = scan.psf_tip[0, 0, 0, 2]
    r0 = 20e-9
    dist = gap + scan.depth + r0
    mz = scan.detuning[0, iy, ix] / GAMMA_NV_HZ_PER_T * dist**3 / 2.0
    x0 = np.array([0.0, 0.0, mz * 1e27, scan.psf_tip[0, iy, ix, 0] * 1e9, scan.psf_tip[0, iy, ix, 1] * 1e9, r0 * 1e9])
    nv = np.array([0.0, 0.0, -scan.depth])

    def resid(p):
        rel = nv - (tips + p[3:] * 1e-9)
        return (nv_shift(dipole_field(rel, p[:3] * 1e-27), scan.b0) - det) * 1e-6

    lo = [-np.inf] * 3 + [-np.inf, -np.inf, 1e-3]
    hi = [np.inf] * 3 + [np.inf, np.inf, np.inf]
    x0[5] = max(x0[5], 1.0)
    sol = least_squares(resid, x0, bounds=(lo, hi), x_scale="jac")
    rms = float(np.sqrt(np.mean(sol.fun**2))) * 1e6
    return TipDipole(sol.x[:3] * 1e-27, sol.x[3:] * 1e-9, scan.depth, scan.b0, rms)


class SliceModel:
    """The dark spin's detuning f_rf - gamma_d |B0 + B_tip| (Hz) at DEER tip positions for a spin at r
    (from the NV): the measured PSF shifted by r, PSF(t - r).

    second_order=True (the default): the stack is split into the fitted dipole's NV shift plus the
    measured remainder (the spline interpolates only the remainder, so the lock noise and any departure
    of the tip from a dipole stay measured, and the interpolation error of the steep 1/r^3 field goes),
    and the dipole supplies the second-order difference between |B| (dark spin) and the NV's shift:
    Delta = f_rf - gamma_d b0 - (gamma_d/gamma_NV) PSF + TipDipole.second_order_hz.
    second_order=False: the first-order slice of a plain spline of the stack."""

    def __init__(self, scan: MriScan, second_order: bool = True):
        self.offset = scan.f_rf - GAMMA_DARK_HZ_PER_T * scan.b0
        self.dipole = fit_tip_dipole(scan) if second_order else None
        if self.dipole is None:
            self.spline = PsfSpline(scan)
        else:
            self.spline = PsfSpline(scan, scan.detuning - nv_shift(self.dipole.field_at_nv(scan.psf_tip), scan.b0))

    def detuning(self, tips_m: np.ndarray, r_m: np.ndarray) -> np.ndarray:
        """Delta_dark (Hz) for tips (..., 3) m and a spin at r (3,) m from the NV."""
        s = tips_m - r_m
        out = self.offset - RATIO * self.spline(s)
        if self.dipole is not None:
            b = self.dipole.field_at_nv(s)
            total = np.sqrt(b[..., 0] ** 2 + b[..., 1] ** 2 + (self.dipole.b0_t + b[..., 2]) ** 2)
            out = out - GAMMA_DARK_HZ_PER_T * (total - self.dipole.b0_t)
        return out

    def psf(self, apex_m: np.ndarray) -> np.ndarray:
        """The interpolated locked detuning (Hz) at apex positions (..., 3) m."""
        if self.dipole is None:
            return self.spline(apex_m)
        return self.spline(apex_m) + nv_shift(self.dipole.field_at_nv(apex_m), self.dipole.b0_t)


__all__ = ["PsfSpline", "TipDipole", "fit_tip_dipole", "nv_shift", "SliceModel", "RATIO"]
