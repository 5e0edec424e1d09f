"""The batched Levenberg-Marquardt against scipy.optimize.least_squares on single problems: the same
minimum, each problem alone and several different ones advanced in one batch."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from nvscope.models.vqns.batched_lm import levenberg_marquardt


def rosenbrock(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals (B, 2) and Jacobian (B, 2, 2) of 0.5 |r|^2 = Rosenbrock, minimum 0 at (1, 1)."""
    x, y = theta[:, 0], theta[:, 1]
    r = np.stack([10.0 * (y - x**2), 1.0 - x], axis=1)
    J = np.zeros((len(theta), 2, 2))
    J[:, 0, 0], J[:, 0, 1], J[:, 1, 0] = -20.0 * x, 10.0, -1.0
    return r, J


T = np.linspace(0.0, 4.0, 25)
NOISE = 0.02 * np.random.default_rng(0).standard_normal((3, T.size))
TRUE = np.array([[2.0, 1.3, 0.5], [1.0, 0.4, -0.2], [0.5, 3.0, 0.1]])  # amplitude, rate, offset
Y = TRUE[:, :1] * np.exp(-TRUE[:, 1:2] * T) + TRUE[:, 2:] + NOISE


def exponential(theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = A exp(-k t) + c against the data row of each problem, with log k as the parameter."""
    a, k, c = theta[:, :1], np.exp(theta[:, 1:2]), theta[:, 2:]
    e = np.exp(-k * T)
    r = a * e + c - Y[rows]
    J = np.stack([e, -a * k * T * e, np.ones_like(e)], axis=2)
    return r, J


def _batched(fun):
    def call(theta, rows, jac):
        r, J = fun(theta, rows)
        return r, (J if jac else None)

    return call


def test_rosenbrock_from_several_starts_matches_scipy() -> None:
    starts = np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 3.0], [-2.0, -2.0]])
    res = levenberg_marquardt(_batched(lambda th, rows: rosenbrock(th)), starts, max_iter=500, ftol=1e-14)
    for i, s in enumerate(starts):
        ref = least_squares(lambda p: rosenbrock(p[None])[0][0], s, jac=lambda p: rosenbrock(p[None])[1][0],
                            method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
        np.testing.assert_allclose(ref.x, [1.0, 1.0], atol=1e-8)
        np.testing.assert_allclose(res.theta[i], ref.x, atol=1e-6)
        assert res.cost[i] <= ref.cost + 1e-12
        assert 0 < res.iterations[i] < 500


def test_exponential_fits_in_one_batch_match_scipy_one_at_a_time() -> None:
    starts = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    res = levenberg_marquardt(_batched(exponential), starts, max_iter=200, ftol=1e-12)
    for i in range(3):
        def fun(p, i=i):
            return exponential(p[None], np.array([i]))[0][0]

        def jac(p, i=i):
            return exponential(p[None], np.array([i]))[1][0]

        ref = least_squares(fun, starts[i], jac=jac, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14)
        np.testing.assert_allclose(res.theta[i], ref.x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.cost[i], ref.cost, rtol=1e-8)
        # and the fit found the curve it was made from (noise 0.02)
        np.testing.assert_allclose(res.theta[i, [0, 2]], TRUE[i, [0, 2]], atol=0.1)
        np.testing.assert_allclose(np.exp(res.theta[i, 1]), TRUE[i, 1], rtol=0.25)  # rate and offset correlate


def test_a_row_that_starts_at_the_minimum_stays_and_others_still_converge() -> None:
    starts = np.array([[1.0, 1.0], [-1.2, 1.0]])
    res = levenberg_marquardt(_batched(lambda th, rows: rosenbrock(th)), starts, max_iter=500, ftol=1e-14)
    np.testing.assert_array_equal(res.theta[0], [1.0, 1.0])
    assert res.cost[0] == 0.0
    np.testing.assert_allclose(res.theta[1], [1.0, 1.0], atol=1e-6)
