"""NV-MRI localization: dark spins (k = 1..3, product model, k by BIC) or a dense layer (Richardson-Lucy)
from a DEER map and the PSF stack (docs/physics.md section 2.6); the `nvscope mri localize` result.

model="auto": fit the spin model first (k = 0..3); if the BIC wants all three spins and even they leave
the map unexplained (chi^2 AUTO_LAYER_SIGMAS standard deviations above its degrees of freedom: more
resonant structure than three spins make) and the map is one lateral plane, the layer model is used.
Spin positions are relative to the NV (+z out of the diamond).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layer import fit_layer
from .scan_data import MriInputError, MriScan
from .spins import NM, SpinProblem, choose_k, fit_spins

MODELS = ("auto", "spins", "layer")
K_MAX = 3
AUTO_LAYER_SIGMAS = 5.0
"""model="auto" picks the layer when the BIC wants all K_MAX spins and still their chi^2 exceeds its degrees
of freedom by this many standard deviations sqrt(2 dof) of the chi^2 distribution. Calibrated on simulated
scans (seeds 300-303, not used by tests or benchmark): single spins and pairs, on the rig's grid and on
0.5 nm pixels, 0.7-2.5 sigma; a 0.5 spins/nm^2 layer on 61 x 61 pixels 14-20 sigma. (The former rule,
reduced chi^2 > 2, called those layers spins: their best 3-spin fit has reduced chi^2 1.3-1.5.)"""


def excess_sigmas(fit) -> float:
    """How many standard deviations the fit's chi^2 lies above its degrees of freedom."""
    dof = max(fit.n - 4 * fit.k, 1)
    return (fit.chi2 - dof) / np.sqrt(2.0 * dof)


@dataclass(frozen=True)
class SpinEstimate:
    """One dark spin: position (3,) m from the NV and its 1-sigma uncertainty (3,) m."""

    position_m: np.ndarray
    sigma_m: np.ndarray


@dataclass(frozen=True)
class LayerEstimate:
    """A layer of dark spins: height (m) above the NV and areal density (spins/m^2), with 1-sigma."""

    height_m: float
    height_sigma_m: float
    density_per_m2: float
    density_sigma_per_m2: float


@dataclass(frozen=True)
class Localization:
    """The result: model ("spins" | "layer"), spins, layer (or None), reduced chi^2 of the model against
    the DEER map, the model map (shape of scan.deer) and warnings (one line each)."""

    model: str
    spins: list[SpinEstimate]
    layer: LayerEstimate | None
    chi2_reduced: float
    deer_model: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The OUT contract of `nvscope mri localize` (SI units)."""
        return {
            "model": self.model,
            "spins": [{"position_m": [float(v) for v in s.position_m], "sigma_m": [float(v) for v in s.sigma_m]}
                      for s in self.spins],
            "layer": None if self.layer is None else {
                "height_m": self.layer.height_m, "height_sigma_m": self.layer.height_sigma_m,
                "density_per_m2": self.layer.density_per_m2,
                "density_sigma_per_m2": self.layer.density_sigma_per_m2},
            "chi2_reduced": float(self.chi2_reduced),
        }


def _coverage(problem: SpinProblem, positions_m: np.ndarray, fit_model: np.ndarray) -> None:
    """MriInputError when a spin's resonant pixels, shifted by its position, fall off the PSF grid (only
    for spins the BIC kept: a fit to noise is reported as no spin, never refused)."""
    for r in positions_m:
        shifted = problem.tips - r
        inside = problem.slice.spline.inside(shifted, margin=0.0)
        p = problem.flip(r / NM)
        lit = p > 0.1 * max(p.max(), 1e-12)
        if lit.any() and np.mean(~inside[lit]) > 0.05:
            raise MriInputError(
                f"`deer` lies outside the PSF grid for the spin at ({r[0] / NM:.2f}, {r[1] / NM:.2f}, {r[2] / NM:.2f}) "
                f"nm: {100 * np.mean(~inside[lit]):.0f} % of its resonant pixels need the PSF beyond `psf_tip`")


def localize(scan: MriScan, model: str = "auto") -> Localization:
    """Localize the dark spins of `scan` (model "auto" | "spins" | "layer"); MriInputError (one line)
    when the data cannot give a right answer (e.g. a DEER map the PSF grid does not cover)."""
    if model not in MODELS:
        raise MriInputError(f"model must be one of {MODELS}, got {model!r}")
    problem = SpinProblem(scan)
    warnings = list(scan.warnings)
    if model in ("auto", "spins"):
        fits = fit_spins(problem, K_MAX)
        best = choose_k(fits)
        layer_like = best.k == K_MAX and excess_sigmas(best) > AUTO_LAYER_SIGMAS
        if model == "spins" or not layer_like or scan.deer_tip.ndim != 3:
            if best.k == 0:
                gain = fits[0].chi2 - fits[1].chi2
                warnings.append(f"no dark spin detected: the best single spin lowers chi^2 by only {gain:.1f}, "
                                f"less than the {fits[1].bic - fits[1].chi2:.1f} its four parameters cost (BIC); "
                                "the DEER map is noise at this tau and shot count")
            _coverage(problem, best.positions_m, best.model)
            if best.at_bound:
                warnings.append("a spin's depth sits at the edge of the depths the PSF stack covers "
                                f"({problem.z_lo:.2f}..{problem.z_hi:.2f} nm from the NV): extend `psf_tip` in z")
            spins = [SpinEstimate(p.copy(), s.copy()) for p, s in zip(best.positions_m, best.sigmas_m)]
            return Localization("spins", spins, None, best.chi2_reduced, best.model.reshape(scan.deer.shape),
                                warnings)
    lf = fit_layer(problem)
    layer = LayerEstimate(lf.height_m, lf.height_sigma_m, lf.density_per_m2, lf.density_sigma_per_m2)
    return Localization("layer", [], layer, lf.chi2_reduced, lf.model.reshape(scan.deer.shape), warnings)


__all__ = ["MODELS", "K_MAX", "AUTO_LAYER_SIGMAS", "excess_sigmas", "SpinEstimate", "LayerEstimate", "Localization", "localize"]
