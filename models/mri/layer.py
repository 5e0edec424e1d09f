"""A dense layer of dark spins from a DEER plane: Richardson-Lucy deconvolution (scikit-image) of -ln S,
which adds over spins, with the one-spin slice as kernel; the layer's height is the kernel height whose
deconvolution explains the map best, its areal density the deconvolved weight divided by the per-spin
weight 1 - cos(pi J tau) (docs/physics.md section 2.6).

Linearized: a spin of weight w flipped with probability p adds -ln(1 - p w) ~ p w to -ln S (w ~ 0.05 for
a layer 10 nm from the NV at tau = 1 us, so the error is ~ p w / 2 ~ 2 % of a spin's share).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve
from skimage.restoration import richardson_lucy

from nvscope.rt.kernels.deer import echo_weight, secular_coupling

from .scan_data import MriInputError
from .spins import NM, SpinProblem

RL_ITERATIONS = 40
KERNEL_STAGE = 0  # the height scan deconvolves with the broadened slice (smooth on the pixel grid)
S_FLOOR = 0.02  # -ln S of a pixel is capped at -ln 0.02 (a noisy pixel near S = 0)


@dataclass(frozen=True)
class LayerFit:
    """Height (m, from the NV, +z out of the diamond) and areal density (spins/m^2) with sigmas, the
    reduced chi^2 of the re-convolved map and its model dip (flat), and the chi^2 over the heights tried."""

    height_m: float
    height_sigma_m: float
    density_per_m2: float
    density_sigma_per_m2: float
    chi2_reduced: float
    model: np.ndarray
    heights_m: np.ndarray
    chi2: np.ndarray


def _plane(problem: SpinProblem):
    tips = problem.scan.deer_tip
    if tips.ndim != 3 or np.ptp(tips[..., 2]) > 1e-12:
        raise MriInputError("the layer model needs one lateral DEER plane (deer_tip (Ny, Nx, 3) at one height)")
    return tips


def _kernel(problem: SpinProblem, tips: np.ndarray, h_nm: float, stage: int = -1) -> np.ndarray:
    """p of a spin at (0, 0, h) on the DEER grid, centred on the grid's middle pixel (odd size)."""
    ny, nx = tips.shape[:2]
    dx, dy = tips[0, 1, 0] - tips[0, 0, 0], tips[1, 0, 1] - tips[0, 0, 1]
    ky, kx = ny | 1, nx | 1
    y, x = np.meshgrid((np.arange(ky) - ky // 2) * dy, (np.arange(kx) - kx // 2) * dx, indexing="ij")
    t = np.stack([x, y, np.full(x.shape, tips[0, 0, 2])], axis=-1)
    return problem.flip(np.array([0.0, 0.0, h_nm]), stage, tips=t.reshape(-1, 3)).reshape(ky, kx)


def _weights(tips: np.ndarray, h_m: float, tau: float) -> np.ndarray:
    """The per-spin weight 1 - cos(pi J tau) of a spin at each pixel's lateral position and height h_m
    (NV axis and dark spins along z)."""
    r = np.stack([tips[..., 0], tips[..., 1], np.full(tips.shape[:2], h_m)], axis=-1)
    z = np.array([0.0, 0.0, 1.0])
    return echo_weight(secular_coupling(r, z, z), tau)


def fit_layer(problem: SpinProblem, n_heights: int = 13) -> LayerFit:
    """Deconvolve -ln S with the slice kernel at a grid of heights, keep the best-explained height
    (parabola through the chi^2 minimum) and turn the deconvolved weight into an areal density."""
    tips = _plane(problem)
    shape = tips.shape[:2]
    a = problem.a
    s = 1.0 - problem.y.reshape(shape) / a
    lns = -np.log(np.clip(s, S_FLOOR, None))
    sig = (problem.sigma / a / np.clip(s.ravel(), S_FLOOR, None)).reshape(shape)
    image = np.clip(lns, 0.0, None)
    def scan_heights(hs):
        out = []
        for h in hs:
            k = _kernel(problem, tips, h, KERNEL_STAGE)
            ksum = float(k.sum())
            if ksum <= 0:
                out.append(np.inf)
                continue
            kn = k / ksum
            u = richardson_lucy(image, kn, num_iter=RL_ITERATIONS, clip=False)
            out.append(float(np.sum(((lns - fftconvolve(u, kn, mode="same")) / sig) ** 2)))
        return np.asarray(out)

    coarse = np.linspace(problem.z_lo + 0.2, problem.z_hi - 0.2, n_heights)
    c_chi2 = scan_heights(coarse)
    i = int(np.argmin(c_chi2))
    step = coarse[1] - coarse[0]
    hs = np.linspace(max(coarse[i] - step, coarse[0]), min(coarse[i] + step, coarse[-1]), 11)
    chi2 = scan_heights(hs)
    i = int(np.argmin(chi2))
    h_best, h_sig = hs[i], float(hs[1] - hs[0])
    lo, hi = max(i - 2, 0), min(i + 3, hs.size)
    if hi - lo >= 3:  # a parabola through the minimum and its neighbours
        c2, c1, c0 = np.polyfit(hs[lo:hi], chi2[lo:hi], 2)
        if c2 > 0 and hs[0] <= -c1 / (2 * c2) <= hs[-1]:
            h_best = -c1 / (2 * c2)
            h_sig = max(float(np.sqrt(1.0 / c2)), float(hs[1] - hs[0]))  # chi^2(h) is rugged: a grid step at least
    hs, chi2 = np.concatenate([coarse, hs]), np.concatenate([c_chi2, chi2])
    order = np.argsort(hs)
    hs, chi2 = hs[order], chi2[order]
    k = _kernel(problem, tips, h_best)
    ksum = float(k.sum())
    u = richardson_lucy(image, k / ksum, num_iter=RL_ITERATIONS, clip=False)
    pred = fftconvolve(u, k / ksum, mode="same")
    # u = density * w * pixel area * sum(k): density = sum u / (sum(k) * pixel area * sum w) over the pixels
    # whose whole slice ring lies inside the map
    dx, dy = abs(tips[0, 1, 0] - tips[0, 0, 0]), abs(tips[1, 0, 1] - tips[0, 0, 1])
    w = _weights(tips, h_best * NM, problem.scan.tau)
    ky, kx = np.nonzero(k > 0.05 * k.max())
    ry, rx = np.abs(ky - k.shape[0] // 2).max(), np.abs(kx - k.shape[1] // 2).max()
    region = np.zeros(shape, bool)
    region[min(ry, shape[0] // 2 - 1):shape[0] - min(ry, shape[0] // 2 - 1),
           min(rx, shape[1] // 2 - 1):shape[1] - min(rx, shape[1] // 2 - 1)] = True
    area = dx * dy
    sw, sw2 = float(w[region].sum()), float((w[region] ** 2).sum())
    density = float(u[region].sum() / (ksum * area * sw)) if sw > 0 else 0.0
    n_eff = density * area * sw**2 / sw2 if sw2 > 0 else 0.0  # spins that carry the estimate
    flux_rel = float(np.sqrt(np.sum(sig[region] ** 2)) / max(lns[region].sum(), 1e-30))
    rel = np.sqrt(1.0 / max(n_eff, 1e-30) + flux_rel**2)
    model = a * (1.0 - np.exp(-pred))
    chi2_red = float(np.sum(((model.ravel() - problem.y) / problem.sigma) ** 2) / max(problem.y.size - 2, 1))
    return LayerFit(float(h_best * NM), float(h_sig * NM), density, float(density * rel), chi2_red,
                    model.ravel(), hs * NM, chi2)


__all__ = ["LayerFit", "fit_layer"]
