"""One VQNS analysis step, written once: fit the curves, put the band on its frequency grid, rank
the candidate sequences. The off-line `nvscope vqns fit` and the host's adaptive loop both call
`analyse_curves` (docs/physics.md, noise spectroscopy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import CoherenceSet
from .fit import FitConfig, SpectrumFit, fit_spectrum
from .proposal import Proposal, rank_candidates

N_FREQUENCIES = 256
"""Points of the band's frequency grid, log-spaced over the range the curves inform (`omega_range`)."""
BAND_WIDTH_PERCENTILE = 90
"""`band_width` is this percentile over the grid of ln(S_hi / S_lo) (the adaptive loop stops on it)."""


@dataclass(frozen=True)
class SpectrumAnalysis:
    """The fit, its band (S_fit, S_lo, S_hi in rad^2/s: the reported spectrum, a fit to the data
    (`SpectrumFit.point`), and the population's 16th/84th percentiles) on `omega` (rad/s), the ranked
    proposal, the band's width (dimensionless, `BAND_WIDTH_PERCENTILE`) and the wall time of it all (s)."""

    fit: SpectrumFit
    omega: np.ndarray
    band: tuple[np.ndarray, np.ndarray, np.ndarray]
    proposal: Proposal
    band_width: float
    seconds: float


def frequency_grid(fit: SpectrumFit, points: int = N_FREQUENCIES) -> np.ndarray:
    """The band's frequencies (rad/s): `points` log-spaced over the range the fitted curves inform."""
    return np.geomspace(*fit.omega_range, points)


def analyse_curves(data: CoherenceSet, cfg: FitConfig, candidates: Sequence[int] | np.ndarray,
                   warm: SpectrumFit | None = None, points: int = N_FREQUENCIES) -> SpectrumAnalysis:
    """Fit (warm from a previous fit when given; M chosen as `cfg.lorentzians` says), band (S_fit,
    S_lo, S_hi) on the frequency grid, candidates ranked (pulse numbers >= 0; ValueError otherwise).
    Never raises for a bad fit: `fit.ok` says."""
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):  # the optimizer probes overflowing steps and rejects them itself
        fit = fit_spectrum(data, cfg, warm=warm)
        omega = frequency_grid(fit, points)
        band = fit.band(omega)
        proposal = rank_candidates(fit, data, candidates, omega)
        width = float(np.percentile(np.log(band[2] / band[1]), BAND_WIDTH_PERCENTILE))
    return SpectrumAnalysis(fit, omega, band, proposal, width, time.perf_counter() - t0)
