"""NV_DEFAULT_SHAPE (models/g2/model.py, a constant: models may not import the simulator) is the shape of
the simulator's default NV emitter: firmware_sim's closed form, and the rate equations propagated by a
matrix exponential (an independent calculation), both give it to the 4 digits it is written with."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from nvscope.firmware_sim.emitter import ThreeLevelRates, g2_parameters, rate_matrix, stationary_populations
from nvscope.firmware_sim.sample import Emitter
from nvscope.models.g2.model import NV_DEFAULT_SHAPE, g2_model

DIGITS_REL = 5e-4
"""NV_DEFAULT_SHAPE is written to 4 significant digits: half a unit of the 4th digit, relative."""


def default_rates() -> ThreeLevelRates:
    """The rates of the simulator's default emitter (a `Sample` emitter with no rates given)."""
    rates = Emitter(0.0, 0.0).rates
    assert rates == ThreeLevelRates()
    return rates


def test_default_shape_is_firmware_sims_default_emitter():
    a, t1, t2 = g2_parameters(default_rates())
    assert NV_DEFAULT_SHAPE.t1 == pytest.approx(t1, rel=DIGITS_REL)
    assert NV_DEFAULT_SHAPE.t2 == pytest.approx(t2, rel=DIGITS_REL)
    assert NV_DEFAULT_SHAPE.a == pytest.approx(a, rel=DIGITS_REL)


def test_default_shape_is_the_rate_equations_g2():
    """g2(tau) = p2(tau | ground at 0) / p2 steady state, by expm of the rate matrix: its two decay times
    are the eigenvalues, and the curve is NV_DEFAULT_SHAPE's g2 with g2(0) = 0 (docs/physics.md section 1)."""
    rates = default_rates()
    m = rate_matrix(rates)
    decay = np.sort(-np.linalg.eigvals(m).real)[1:]  # one eigenvalue is 0 (the steady state)
    assert 1.0 / decay[1] == pytest.approx(NV_DEFAULT_SHAPE.t1, rel=DIGITS_REL)
    assert 1.0 / decay[0] == pytest.approx(NV_DEFAULT_SHAPE.t2, rel=DIGITS_REL)
    p2_ss = stationary_populations(rates)[1]
    tau = np.array([1e-9, 5e-9, 12e-9, 30e-9, 80e-9, 150e-9, 250e-9])
    ground = np.array([1.0, 0.0, 0.0])
    g2 = np.array([(expm(m * t) @ ground)[1] / p2_ss for t in tau])
    np.testing.assert_allclose(g2_model(tau, NV_DEFAULT_SHAPE, 0.0), g2, atol=2e-4)
    assert g2.max() > 1.3  # the bunching the shape must carry (a = 0.75)
