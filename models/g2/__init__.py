"""nvscope.models.g2: g2(0) of a photon-correlation histogram (docs/physics.md section 1).

`model` holds the emitter's g2(tau), its exact bin integrals and each pixel's normalization
(`pixel_base`); `mle` the Poisson maximum-likelihood estimates (per pixel and of the shared shape)
and the Cramer-Rao bound; `least_squares` the paper's per-pixel fit; `reasons` why a pixel has no
estimate; `estimation` the one path every caller estimates pixels through (`estimate_pixels`); `normalization` each
histogram's base and start-stop weight (`PixelModels`, the per-pixel model every estimator uses).
"""

from .estimation import G2Estimate, G2Estimator, estimate_pixels, fit_scan_shape, histogram_models, scan_shape
from .mle import (G0_BOUNDS, MleEstimator, ShapeFit, cramer_rao_models, cramer_rao_std, estimate_g2, fit_shape,
                  fit_shape_full)
from .model import (EmitterShape, PixelModels, bin_integrals, bin_integrals_dg0, expected_histogram, g2_model,
                    pixel_base, pixel_models, shape_kernels, singles_base)
from .normalization import histogram_normalization, startstop_base_weight
from .reasons import G2_NOTES, G2_REASONS

__all__ = [
    "EmitterShape", "g2_model", "bin_integrals", "bin_integrals_dg0", "expected_histogram", "singles_base",
    "pixel_base", "G0_BOUNDS", "ShapeFit", "estimate_g2", "fit_shape", "fit_shape_full", "cramer_rao_std",
    "MleEstimator", "G2Estimator", "G2Estimate", "estimate_pixels", "fit_scan_shape", "G2_REASONS",
    "PixelModels", "pixel_models", "shape_kernels", "cramer_rao_models", "histogram_models", "scan_shape",
    "histogram_normalization", "startstop_base_weight", "G2_NOTES",
]
