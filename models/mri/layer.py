"""A dense layer of dark spins from a DEER plane (docs/physics.md section 2.6).

Height and areal density come from a forward model of a uniform layer: for a layer of density n at height
h the expected -ln S at a tip t is n times the integral over spin positions r of -ln(1 - p(t - r; h) w(r, h))
(exact in expectation for spins scattered at random: -ln S adds over spins), with p the one-spin slice and
w = 1 - cos(pi J tau) the per-spin echo weight. The integral is a sum over a lattice SUBPIXEL times finer
than the pixels that reaches past the map by the slice's half width (spins outside the map whose ring
reaches in are modelled). At each height the density is a one-parameter weighted linear least squares;
the height is the chi^2 minimum (parabola), and the density's sigma carries the DEER noise, the
configuration noise of a random layer and the height's sigma through d(density)/d(height).

The picture is the Richardson-Lucy deconvolution (scikit-image) of -ln S with the slice kernel at the
fitted height, divided by the per-spin weight: a map of areal density (`LayerFit.image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from skimage.restoration import richardson_lucy

from nvscope.rt.kernels.deer import echo_weight, secular_coupling

from .scan_data import MriInputError
from .spins import NM, SpinProblem

SUBPIXEL = 4  # spin lattice points per pixel along x and y (a 0.5 nm pixel: 0.125 nm)
N_TERMS = 3  # -ln(1 - x) = x + x^2 / 2 + x^3 / 3 (p w < 0.1: the rest < 1e-4 of a spin's share)
RL_ITERATIONS = 40
S_FLOOR = 0.02  # -ln S of a pixel is capped at -ln 0.02 (a noisy pixel near S = 0)
FINE_STEPS = 21


@dataclass(frozen=True)
class LayerFit:
    """Height (m, from the NV, +z out of the diamond) and areal density (spins/m^2) with sigmas, the
    reduced chi^2 of the model map, the model dip (flat), the chi^2 over the heights tried and the
    Richardson-Lucy density picture (Ny, Nx) spins/m^2."""

    height_m: float
    height_sigma_m: float
    density_per_m2: float
    density_sigma_per_m2: float
    chi2_reduced: float
    model: np.ndarray
    heights_m: np.ndarray
    chi2: np.ndarray
    image: np.ndarray


def _plane(problem: SpinProblem):
    tips = problem.scan.deer_tip
    if tips.ndim != 3 or np.ptp(tips[..., 2]) > 1e-12:
        raise MriInputError("the layer model needs one lateral DEER plane (deer_tip (Ny, Nx, 3) at one height)")
    return tips


class _LayerModel:
    """The uniform layer's -ln S per unit density on the DEER plane, for any height."""

    def __init__(self, problem: SpinProblem, tips: np.ndarray, n_sub: int = SUBPIXEL):
        self.problem, self.tips, self.n = problem, tips, n_sub
        self.shape = tips.shape[:2]
        self.dx, self.dy = tips[0, 1, 0] - tips[0, 0, 0], tips[1, 0, 1] - tips[0, 0, 1]
        self.ey, self.ex = self.shape[0] // 2, self.shape[1] // 2  # the slice's reach (pixels): the map's half size
        n = n_sub
        # spin lattice: sub-pixel centres of the map's pixels and of ey/ex pixels beyond each edge
        off = ((np.arange(n) + 0.5) / n - 0.5)
        iy = np.arange(-self.ey, self.shape[0] + self.ey)
        ix = np.arange(-self.ex, self.shape[1] + self.ex)
        self.sy = tips[0, 0, 1] + ((iy[:, None] + off[None, :]) * self.dy).ravel()
        self.sx = tips[0, 0, 0] + ((ix[:, None] + off[None, :]) * self.dx).ravel()
        # kernel offsets t - r on the fine grid: tip pixel i, spin fine index f = (j + ey) n + s
        my = np.arange(-(self.ey + 1) * n, (self.ey + 1) * n + 1)
        mx = np.arange(-(self.ex + 1) * n, (self.ex + 1) * n + 1)
        c = (n - 1) / (2 * n)
        y, x = np.meshgrid((my / n + c) * self.dy, (mx / n + c) * self.dx, indexing="ij")
        self.kt = np.stack([x, y, np.full(x.shape, tips[0, 0, 2])], axis=-1).reshape(-1, 3)
        self.kshape = x.shape
        self.area = abs(self.dx * self.dy) / n**2  # m^2 per lattice point

    def kernel(self, h_nm: float) -> np.ndarray:
        return self.problem.flip(np.array([0.0, 0.0, h_nm]), -1, tips=self.kt).reshape(self.kshape)

    def weights(self, h_nm: float) -> np.ndarray:
        """The per-spin weight 1 - cos(pi J tau) on the spin lattice (NV axis and dark spins along z)."""
        y, x = np.meshgrid(self.sy, self.sx, indexing="ij")
        r = np.stack([x, y, np.full(x.shape, h_nm * NM)], axis=-1)
        z = np.array([0.0, 0.0, 1.0])
        return echo_weight(secular_coupling(r, z, z), self.problem.scan.tau)

    def _sample(self, full: np.ndarray) -> np.ndarray:
        """The tips' values from a full convolution on the fine grid."""
        n, ky, kx = self.n, *self.kshape
        q0y, q0x = (ky - 1) // 2 + self.ey * n, (kx - 1) // 2 + self.ex * n
        return full[q0y:q0y + self.shape[0] * n:n, q0x:q0x + self.shape[1] * n:n]

    def per_density(self, h_nm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """F (Ny, Nx): -ln S per unit density (m^2) of a layer at h_nm; and the kernel and weights used."""
        k, w = self.kernel(h_nm), self.weights(h_nm)
        f = sum(self._sample(fftconvolve(w**m, k**m, mode="full")) / m for m in range(1, N_TERMS + 1))
        return f * self.area, k, w

    def spin_share(self, g: np.ndarray, k: np.ndarray, w: np.ndarray) -> np.ndarray:
        """sum_t g(t) (-ln(1 - p(t - r) w(r))) for every lattice spin r (the share of each spin in a
        weighted sum g of the map), to first order in p w."""
        n, ky, kx = self.n, *self.kshape
        up = np.zeros(((self.shape[0] + 2 * self.ey) * n, (self.shape[1] + 2 * self.ex) * n))
        up[self.ey * n:(self.ey + self.shape[0]) * n:n, self.ex * n:(self.ex + self.shape[1]) * n:n] = g
        # correlation: sum_t g(t) k(t - r): shift so that the kernel's index matches _sample's convention
        full = fftconvolve(up, k[::-1, ::-1], mode="full")
        return full[(ky - 1) // 2:(ky - 1) // 2 + up.shape[0], (kx - 1) // 2:(kx - 1) // 2 + up.shape[1]] * w


def fit_layer(problem: SpinProblem, n_heights: int = 13) -> LayerFit:
    """Fit a uniform layer's height and areal density to -ln S of one DEER plane (weighted least squares,
    the density linear at each height, the height by the chi^2 minimum) and deconvolve the picture."""
    tips = _plane(problem)
    shape = tips.shape[:2]
    a = problem.a
    s = 1.0 - problem.y.reshape(shape) / a
    lns = -np.log(np.clip(s, S_FLOOR, None))
    # one weight for every pixel: the dip's sigma (median) over a; a weight from each pixel's own measured S
    # and count-based sigma is correlated with its noise and biased the density low by ~10 %
    sig = float(np.median(problem.sigma)) / a
    iv = np.full(shape, 1.0 / sig**2)
    lm = _LayerModel(problem, tips)

    def solve(h):
        f, k, w = lm.per_density(h)
        ff = float(np.sum(f * f * iv))
        if ff <= 0:
            return np.inf, 0.0, f, ff, k, w
        n = float(np.sum(f * lns * iv)) / ff
        return float(np.sum((lns - n * f) ** 2 * iv)), n, f, ff, k, w

    coarse = np.linspace(problem.z_lo + 0.2, problem.z_hi - 0.2, n_heights)
    c_chi2 = np.array([solve(h)[0] for h in coarse])
    i = int(np.argmin(c_chi2))
    step = coarse[1] - coarse[0]
    hs = np.linspace(max(coarse[i] - step, coarse[0]), min(coarse[i] + step, coarse[-1]), FINE_STEPS)
    fits = [solve(h) for h in hs]
    chi2 = np.array([f[0] for f in fits])
    dens = np.array([f[1] for f in fits])
    i = int(np.argmin(chi2))
    h_best, h_sig = hs[i], float(hs[1] - hs[0])
    lo, hi = max(i - 3, 0), min(i + 4, hs.size)
    if hi - lo >= 3:  # a parabola through the minimum and its neighbours: chi^2 = c2 h^2 + ..., sigma_h^2 = 1 / c2
        c2, c1, _ = np.polyfit(hs[lo:hi], chi2[lo:hi], 2)
        if c2 > 0 and hs[0] <= -c1 / (2 * c2) <= hs[-1]:
            h_best = -c1 / (2 * c2)
            h_sig = float(np.sqrt(1.0 / c2))
    dn_dh = float(np.polyfit(hs[lo:hi], dens[lo:hi], 1)[0]) if hi - lo >= 2 else 0.0
    _, density, f, ff, k, w = solve(h_best)
    # sigma of the density: the DEER noise at fixed height, the layer's own randomness (spins at random:
    # Var = n sum_r share(r)^2 area) and the height's sigma through d(density)/d(height)
    share = lm.spin_share(f * iv / ff, k, w)
    var = 1.0 / ff + max(density, 0.0) * lm.area * float(np.sum(share**2)) + (dn_dh * h_sig) ** 2
    pred = density * f
    model = a * (1.0 - np.exp(-pred))
    chi2_red = float(np.sum(((model.ravel() - problem.y) / problem.sigma) ** 2) / max(problem.y.size - 2, 1))
    # the picture: Richardson-Lucy of -ln S with the pixel-sampled slice at the fitted height, per spin weight
    kc = problem.flip(np.array([0.0, 0.0, h_best]), -1, tips=_centred(tips)).reshape(shape[0] | 1, shape[1] | 1)
    ksum = float(kc.sum())
    image = np.zeros(shape)
    if ksum > 0:
        u = richardson_lucy(np.clip(lns, 0.0, None), kc / ksum, num_iter=RL_ITERATIONS, clip=False)
        wp = echo_weight(secular_coupling(np.concatenate([tips[..., :2], np.full(shape + (1,), h_best * NM)], -1),
                                          np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])), problem.scan.tau)
        image = u / (ksum * abs(lm.dx * lm.dy) * np.maximum(wp, 1e-12))
    hs_all, chi2_all = np.concatenate([coarse, hs]), np.concatenate([c_chi2, chi2])
    order = np.argsort(hs_all)
    return LayerFit(float(h_best * NM), float(h_sig * NM), float(density), float(np.sqrt(var)), chi2_red,
                    model.ravel(), hs_all[order] * NM, chi2_all[order], image)


def _centred(tips: np.ndarray) -> np.ndarray:
    """Tip offsets (odd Ky, Kx, 3 flattened) centred on zero at the plane's height: the pixel-sampled kernel."""
    ny, nx = tips.shape[:2]
    dx, dy = tips[0, 1, 0] - tips[0, 0, 0], tips[1, 0, 1] - tips[0, 0, 1]
    ky, kx = ny | 1, nx | 1
    y, x = np.meshgrid((np.arange(ky) - ky // 2) * dy, (np.arange(kx) - kx // 2) * dx, indexing="ij")
    return np.stack([x, y, np.full(x.shape, tips[0, 0, 2])], axis=-1).reshape(-1, 3)


__all__ = ["LayerFit", "fit_layer"]
