"""nvscope.models.g2: g2(0) of a photon-correlation histogram (physics.md section 1).

`model` holds the emitter's g2(tau) and its exact bin integrals; `mle` the Poisson
maximum-likelihood estimates (per pixel and of the shared shape) and the Cramer-Rao bound.
"""

from .mle import G0_BOUNDS, ShapeFit, cramer_rao_std, estimate_g2, fit_shape, fit_shape_full
from .model import EmitterShape, bin_integrals, bin_integrals_dg0, expected_histogram, g2_model, singles_base

__all__ = [
    "EmitterShape", "g2_model", "bin_integrals", "bin_integrals_dg0", "expected_histogram", "singles_base",
    "G0_BOUNDS", "ShapeFit", "estimate_g2", "fit_shape", "fit_shape_full", "cramer_rao_std",
]
