"""Dark spins localized from a DEER map: a product model over k spins fitted by least squares, started
from an FFT cross-correlation with the predicted map over a grid of depths (docs/physics.md section 2.6).

Model: dip(t) = a [1 - prod_k (1 - p(Delta_k(t)) W_k)], a = the dip per unit of 1 - S (readout contrast),
p the line-averaged flip probability (rt.kernels.deer) and Delta_k the spin's detuning from the PSF shifted
by its position. W_k = 1 - cos(pi J_k tau) is free per spin (0..2): J depends on |r|^-3 and on the dark
spin's axis, so a fixed J(r) would tie the position to the echo's phase pi J tau, which a small error in
the NV axis or tau wraps; a free W keeps the position from the slice alone. Parameters are in nm inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares

from nvscope.rt.kernels.deer import FlipTable

from .psf import RATIO, SliceModel
from .scan_data import MriInputError, MriScan

NM = 1e-9
W_MAX = 2.0
SURFACE_MARGIN_NM = 2.0
"""Spins are sought at most this far (nm) above the diamond surface: a DEER map whose PSF stack covers
only greater heights is outside the PSF grid."""
BLUR_T2STAR = (1 / 8, 1.0)
"""The continuation of every fit: first with the dark line 8x broader (a slice wide enough for 0.5 nm
pixels to sample smoothly), then with the true T2*."""


@dataclass(frozen=True)
class SpinFit:
    """A k-spin fit: positions (k, 3) m from the NV, their sigmas (k, 3) m, weights W (k,), chi^2, the
    number of pixels and the model dip map (flat)."""

    positions_m: np.ndarray
    sigmas_m: np.ndarray
    weights: np.ndarray
    chi2: float
    n: int
    model: np.ndarray
    at_bound: bool

    @property
    def k(self) -> int:
        return self.positions_m.shape[0]

    @property
    def bic(self) -> float:
        """chi^2 + (4 k) ln n: the Bayesian information criterion for Gaussian errors."""
        return self.chi2 + 4 * self.k * np.log(self.n)

    @property
    def chi2_reduced(self) -> float:
        return self.chi2 / max(self.n - 4 * self.k, 1)


def noise_estimate(dip: np.ndarray) -> float:
    """The pixel noise of a map from its neighbour differences (MAD / 0.6745 / sqrt 2, robust to rings)."""
    d = np.diff(dip, axis=-1).ravel() if dip.ndim > 1 and dip.shape[-1] > 1 else np.diff(dip.ravel())
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2.0))


class SpinProblem:
    """The DEER data and the forward model shared by every fit of one scan."""

    def __init__(self, scan: MriScan, slice_model: SliceModel | None = None):
        self.scan = scan
        self.slice = slice_model or SliceModel(scan)
        self.tips = scan.deer_tip.reshape(-1, 3)
        self.y = scan.deer.ravel()
        self.sigma_given = scan.deer_sigma is not None
        self.sigma = scan.deer_sigma.ravel() if self.sigma_given else np.full(self.y.size, max(noise_estimate(scan.deer), 1e-12))
        self.a = scan.dip_per_signal
        if scan.detuning_sigma is not None:
            self.detuning_sigma = scan.detuning_sigma.ravel()
        else:  # the lock noise as the tip-dipole fit's residual (or none without a dipole)
            rms = self.slice.dipole.rms_hz if self.slice.dipole is not None else 0.0
            self.detuning_sigma = np.full(scan.detuning.size, rms)
        top = abs(self.slice.offset) + 1.1 * float(np.max(np.abs(scan.detuning))) + 100e6  # the largest |Delta| (Hz)
        t2 = scan.t2star_dark if np.isfinite(scan.t2star_dark) else 40 * scan.t_pi_rf
        self.tables = [FlipTable(scan.t_pi_rf, t2 * f if f < 1 else scan.t2star_dark, "lorentzian", top)
                       for f in BLUR_T2STAR]
        # the depths the PSF stack covers for every DEER pixel: t_z - r_z within the stack's z range
        _, _, z = scan.grid_axes
        tz = self.tips[:, 2]
        self.z_lo = (tz.max() - z[-1]) / NM  # r_z (nm) from the NV
        self.z_hi = (tz.min() - z[0]) / NM
        if self.z_lo >= self.z_hi:
            raise MriInputError(f"`deer_tip` heights ({tz.min():.3g}..{tz.max():.3g} m) span more than the PSF "
                                f"stack's ({z[0]:.3g}..{z[-1]:.3g} m): no spin depth is covered at every DEER pixel")
        surface = scan.depth / NM + SURFACE_MARGIN_NM
        if self.z_lo > surface:
            raise MriInputError(
                f"`deer_tip` lies outside the PSF grid in depth: at DEER heights up to {tz.max():.3g} m the PSF stack "
                f"({z[0]:.3g}..{z[-1]:.3g} m) covers only spins {self.z_lo - scan.depth / NM:.2f} nm or more above "
                "the surface; the stack must reach down to the DEER height minus the NV depth")
        x, y = self.tips[:, 0] / NM, self.tips[:, 1] / NM
        self.xy_lo, self.xy_hi = np.array([x.min(), y.min()]), np.array([x.max(), y.max()])

    def flip(self, r_nm: np.ndarray, stage: int = -1, tips: np.ndarray | None = None) -> np.ndarray:
        """p (N,) at every DEER pixel for a spin at r (3,) nm."""
        t = self.tips if tips is None else tips
        return self.tables[stage](self.slice.detuning(t, np.asarray(r_nm) * NM))

    def dip(self, params: np.ndarray, stage: int = -1) -> np.ndarray:
        """The model dip (N,) for params (k, 4): x, y, z in nm and W."""
        prod = np.ones(self.y.size)
        for x, y, z, w in np.reshape(params, (-1, 4)):
            prod *= 1.0 - self.flip(np.array([x, y, z]), stage) * w
        return self.a * (1.0 - prod)

    def dip_psf_map(self, params: np.ndarray) -> list[tuple[np.ndarray, sparse.csr_matrix]]:
        """d dip / d detuning, the model dip's linear response to the PSF stack's pixels, per spin: (the DEER
        pixels it reaches, their rows (n, Nz Ny Nx)), through the spin's shifted spline
        (Delta = ... - (gamma_d/gamma_NV) PSF(t - r)); the dip at a pixel is the sum over spins."""
        q = np.reshape(params, (-1, 4))
        table = self.tables[-1]
        h = 0.02 * 0.5 / self.scan.t_pi_rf  # Omega / 50 (Hz): the flip line is wider than Omega
        deltas = [self.slice.detuning(self.tips, np.array([x, y, z]) * NM) for x, y, z, _ in q]
        factors = [1.0 - table(d) * w for d, (_, _, _, w) in zip(deltas, q)]
        out = []
        for k, (x, y, z, w) in enumerate(q):
            dp = (table(deltas[k] + h) - table(deltas[k] - h)) / (2 * h)
            other = np.prod([f for j, f in enumerate(factors) if j != k], axis=0) if len(q) > 1 else 1.0
            coef = self.a * w * dp * other * (-RATIO)  # d dip / d Delta_k times d Delta_k / d PSF
            lit = np.nonzero(np.abs(coef) > 1e-6 * max(np.abs(coef).max(), 1e-300))[0]
            g = self.slice.spline.linear_map(self.tips[lit] - np.array([x, y, z]) * NM)
            out.append((lit, sparse.diags(coef[lit]) @ g))
        return out

    def psf_covariance(self, params: np.ndarray, jac: np.ndarray, h_inv: np.ndarray) -> np.ndarray:
        """The parameters' covariance from the PSF stack's noise (detuning_sigma), propagated linearly
        through the fit: dp = -(J^T J)^-1 J^T diag(1/sigma) G d(detuning), G = dip_psf_map."""
        js = jac / self.sigma[:, None]
        u = sum((g.T @ js[lit]).T for lit, g in self.dip_psf_map(params))  # (P, Nz Ny Nx)
        a = h_inv @ u
        return (a * self.detuning_sigma**2) @ a.T

    def bounds(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        margin = 0.05
        lo = np.tile([self.xy_lo[0], self.xy_lo[1], self.z_lo + margin, 0.0], k)
        hi = np.tile([self.xy_hi[0], self.xy_hi[1], self.z_hi - margin, W_MAX], k)
        return lo, hi

    def fit(self, start: np.ndarray, stages=(0, 1), max_nfev: int | None = None) -> tuple[np.ndarray, object]:
        """Least squares from start (k, 4) through the continuation stages; returns (params, result)."""
        p = np.asarray(start, dtype=np.float64).ravel()
        lo, hi = self.bounds(p.size // 4)
        p = np.clip(p, lo + 1e-9, hi - 1e-9)
        sol = None
        for stage in stages:
            sol = least_squares(lambda q: (self.dip(q, stage) - self.y) / self.sigma, p, bounds=(lo, hi),
                                x_scale=np.tile([0.1, 0.1, 0.3, 0.1], p.size // 4), diff_step=1e-4,
                                max_nfev=max_nfev)
            p = sol.x
        return p, sol

    def result(self, p: np.ndarray, sol) -> SpinFit:
        """The SpinFit of a converged least-squares solution (sigmas from (J^T J)^-1, scaled by the
        reduced chi^2 when the pixel noise was estimated rather than given)."""
        k = p.size // 4
        chi2 = float(np.sum(sol.fun**2))
        jac = sol.jac
        try:
            cov = np.linalg.pinv(jac.T @ jac)
        except np.linalg.LinAlgError:
            cov = np.full((p.size, p.size), np.inf)
        if not self.sigma_given:
            cov = cov * chi2 / max(self.y.size - p.size, 1)
        if np.all(np.isfinite(cov)) and np.any(self.detuning_sigma > 0):
            cov = cov + self.psf_covariance(p, jac, np.linalg.pinv(jac.T @ jac))
        sig = np.sqrt(np.abs(np.diag(cov))).reshape(k, 4)
        q = p.reshape(k, 4)
        lo, hi = self.bounds(k)
        at_bound = bool(np.any(np.isclose(p, lo, atol=1e-6)[np.tile([0, 0, 1, 0], k).astype(bool)]) or
                        np.any(np.isclose(p, hi, atol=1e-6)[np.tile([0, 0, 1, 0], k).astype(bool)]))
        return SpinFit(q[:, :3] * NM, sig[:, :3] * NM, q[:, 3].copy(), chi2, self.y.size, self.dip(p), at_bound)


def _planes(tips: np.ndarray):
    """The DEER map as regular lateral planes: a list of (index array (ny, nx) into the flat pixels, z),
    or None when it is not (a vertical section)."""
    shape = tips.shape[:-1]
    if len(shape) < 2:
        return None
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    planes = idx.reshape(-1, shape[-2], shape[-1])
    flat = tips.reshape(-1, 3)
    out = []
    for pl in planes:
        t = flat[pl]
        if np.ptp(t[..., 2]) > 1e-12 or np.ptp(t[:, :, 1], axis=1).max() > 1e-12 or np.ptp(t[:, :, 0], axis=0).max() > 1e-12:
            return None
        out.append((pl, float(t[0, 0, 2])))
    return out


def xcorr_starts(problem: SpinProblem, residual: np.ndarray, n_best: int = 1, stage: int = 0) -> list[np.ndarray]:
    """Starts (x, y, z nm, W) from the FFT cross-correlation of `residual` (N,) with the predicted one-spin
    map over a grid of depths (lateral shift from the correlation peak, depth from the best peak);
    for maps that are not lateral planes, a coarse 3-D grid search."""
    planes = _planes(problem.scan.deer_tip)
    zs = np.arange(problem.z_lo + 0.1, problem.z_hi - 0.1 + 1e-9, 0.5)
    if zs.size == 0:
        zs = np.array([(problem.z_lo + problem.z_hi) / 2])
    cands = []
    w_res = residual / problem.sigma**2 * problem.sigma.mean() ** 2
    if planes is not None:
        flat = problem.tips
        for z in zs:
            score_sum = None
            for pl, _ in planes:
                t = flat[pl]
                cx, cy = t[0, t.shape[1] // 2, 0], t[t.shape[0] // 2, 0, 1]
                m = problem.a * problem.flip(np.array([cx / NM, cy / NM, z]), stage, tips=t.reshape(-1, 3)).reshape(t.shape[:2])
                d = w_res[pl]
                shp = (2 * d.shape[0], 2 * d.shape[1])
                c = np.fft.irfft2(np.fft.rfft2(d, shp) * np.conj(np.fft.rfft2(m, shp)), shp)
                score_sum = c if score_sum is None else score_sum + c
                norm = float(np.sum(m * m))
            score = score_sum / np.sqrt(max(norm, 1e-30))
            for _ in range(n_best):
                iy, ix = np.unravel_index(np.argmax(score), score.shape)
                sy = iy if iy < shp[0] // 2 else iy - shp[0]
                sx = ix if ix < shp[1] // 2 else ix - shp[1]
                step_x = (t[0, 1, 0] - t[0, 0, 0]) / NM
                step_y = (t[1, 0, 1] - t[0, 0, 1]) / NM
                w = float(score[iy, ix] / np.sqrt(max(norm, 1e-30)))
                cands.append((float(score[iy, ix]), np.array([cx / NM + sx * step_x, cy / NM + sy * step_y, z,
                                                               np.clip(w, 0.05, W_MAX)])))
                score[max(iy - 2, 0):iy + 3, max(ix - 2, 0):ix + 3] = -np.inf
    else:  # a vertical section or scattered pixels: brute force on a coarse grid
        xs = np.linspace(problem.xy_lo[0], problem.xy_hi[0], 25)
        ys = np.linspace(problem.xy_lo[1], problem.xy_hi[1], 25) if problem.xy_hi[1] > problem.xy_lo[1] else [problem.xy_lo[1]]
        for z in zs[::2]:
            for x in xs:
                for y in ys:
                    m = problem.a * problem.flip(np.array([x, y, z]), stage)
                    norm = float(m @ m)
                    if norm <= 0:
                        continue
                    c = float(w_res @ m)
                    cands.append((c / np.sqrt(norm), np.array([x, y, z, np.clip(c / norm, 0.05, W_MAX)])))
    cands.sort(key=lambda c: -c[0])
    out = []
    for _, p in cands:
        if all(np.linalg.norm(p[:3] - q[:3]) > 0.75 for q in out):
            out.append(p)
        if len(out) >= n_best:
            break
    return out


N_STARTS = 6
"""Single-spin starts: the best cross-correlation peaks over the depth grid, each fitted briefly; the
FULL_FITS best of them are fitted to convergence and the lowest chi^2 kept (a noisy map's best peak
can be a side lobe, and a fit started there stops in a local minimum)."""
FULL_FITS = 3


def no_spin(problem: SpinProblem) -> SpinFit:
    """The k = 0 model (no dark spin: dip 0 everywhere), against which the one-spin fit must pay its BIC."""
    chi2 = float(np.sum((problem.y / problem.sigma) ** 2))
    return SpinFit(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), chi2, problem.y.size, np.zeros(problem.y.size),
                   False)


def _best_of(problem: SpinProblem, starts: list[np.ndarray], stages_short, stages_full, n_full: int):
    short = []
    for c in starts:
        p, sol = problem.fit(c, stages=stages_short, max_nfev=8)
        short.append((sol.cost, p))
    short.sort(key=lambda s: s[0])
    best = None
    for _, p in short[:n_full]:
        p2, sol = problem.fit(p.reshape(-1, 4), stages=stages_full)
        if best is None or sol.cost < best[1].cost:
            best = (p2, sol)
    return best


def fit_spins(problem: SpinProblem, k_max: int = 3) -> list[SpinFit]:
    """The best fits with k = 0..k_max spins: k = 1 from the best of several cross-correlation peaks
    (N_STARTS, FULL_FITS); each further spin from the previous fit's residual (cross-correlation) and from
    splitting a spin in two along x, y, z."""
    fits: list[SpinFit] = [no_spin(problem)]
    starts = [s[None, :] for s in xcorr_starts(problem, problem.y, n_best=N_STARTS)]
    fits.append(problem.result(*_best_of(problem, starts, (0,), (0, 1), FULL_FITS)))
    for k in range(2, k_max + 1):
        prev = np.column_stack([fits[-1].positions_m / NM, fits[-1].weights])
        cands = []
        for new in xcorr_starts(problem, problem.y - fits[-1].model, n_best=2, stage=1):
            cands.append(np.vstack([prev, new]))
        d = 0.4
        for i in range(prev.shape[0]):
            for e in ((d, 0, 0), (0, d, 0), (d / 1.4, d / 1.4, 0), (d / 1.4, -d / 1.4, 0), (0, 0, 2 * d)):
                e = np.array(e + (0.0,))
                a, b = prev[i] + e, prev[i] - e
                a[3] = b[3] = prev[i, 3] / 2 + 0.05
                cands.append(np.vstack([np.delete(prev, i, axis=0), a, b]))
        # a short fit of every start, then the two best to convergence
        fits.append(problem.result(*_best_of(problem, cands, (1,), (1,), 2)))
    return fits


def choose_k(fits: list[SpinFit]) -> SpinFit:
    """The fit with the smallest BIC (chi^2 + 4 k ln n; k = 0 when no spin pays its parameters); the chi^2
    is the sigma-weighted one."""
    return min(fits, key=lambda f: f.bic)


__all__ = ["SpinFit", "SpinProblem", "fit_spins", "no_spin", "N_STARTS", "choose_k", "xcorr_starts", "noise_estimate"]
