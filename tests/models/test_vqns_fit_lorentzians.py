"""How many Lorentzians (issue 13 items 3-5): continuation makes a larger M never worse; the Ohmic
bath is fitted; "auto" picks M by BIC; without sigma, `ok` is judged by something that can fail."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.qubit import OhmicNoise, chi_quadrature
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.data import coherence_set
from nvscope.models.vqns.fit import MAX_LORENTZIANS, FitConfig, fit_spectrum

T = np.geomspace(0.05e-6, 30e-6, 40)
SIGMA = 0.012


def measured(c: np.ndarray, ns: np.ndarray, sigma_given: bool = True, seed: int = 5):
    rng = np.random.default_rng(seed)
    noisy = c + SIGMA * rng.standard_normal(c.shape)
    return coherence_set(ns, np.tile(T, (len(ns), 1)), noisy, np.full(c.shape, SIGMA) if sigma_given else None)


def lorentzian_curves(parts, ns) -> np.ndarray:
    """exp(-sum chi) of Lorentzians (a, w0, g) by the closed form, (S, T)."""
    return np.array([np.exp(-sum(attenuation(a, w0, g, T, int(n)) for a, w0, g in parts)) for n in ns])


OHMIC = OhmicNoise(eta=0.5, w_c=2 * np.pi * 1e6)


@pytest.fixture(scope="module")
def ohmic_fit():
    """The Ohmic bath eta |w| exp(-|w|/w_c) (SimQubit's quadrature), FID to CPMG-6, paper-like noise,
    fitted with M = 20 by continuation (1, 2, 3, 4, 6, 8, 12, 16, 20)."""
    ns = np.arange(7)
    c = np.array([np.exp(-chi_quadrature(OHMIC, T, int(n))) for n in ns])
    return fit_spectrum(measured(c, ns), FitConfig(lorentzians=20, restarts=20, seed=0))


@pytest.mark.slow
def test_ohmic_bath_is_fitted_and_more_lorentzians_are_never_worse(ohmic_fit):
    """The chi^2 never rises with M (the issue: 12 did worse than 6) and the fit reaches reduced
    chi^2 <= 1.5 (the first pass: 9.1 with 6)."""
    fit = ohmic_fit
    chi2 = np.array(list(fit.rungs.values()))
    assert list(fit.rungs) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert (np.diff(chi2) <= 1e-6 * chi2[:-1]).all(), fit.rungs
    assert fit.ok and fit.chi2[fit.best] / fit.dof <= 1.5, fit.message


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="Ohmic bath, M = 20 fitted to FID..CPMG-6: the best fit is a comb of "
                   "narrow Lorentzians that the measured filters average over and the narrower CPMG-8/12 "
                   "filters resolve; predictions are off by 0.017/0.03 RMS against sigma 0.012 (auto's M does "
                   "no better). Needs a smoothness prior or a linewidth floor tied to the filters' resolution")
def test_ohmic_fit_predicts_unmeasured_cpmg_within_the_noise(ohmic_fit):
    for n in (8, 12):
        truth = np.exp(-chi_quadrature(OHMIC, T, n))
        assert np.sqrt(np.mean((ohmic_fit.predict(n, T) - truth) ** 2)) <= SIGMA


def test_auto_picks_few_lorentzians_for_one_and_at_least_three_for_three():
    ns = np.array([0, 1, 2, 3, 8, 16, 32])
    one = measured(lorentzian_curves([(2e11, 0.0, 3e5)], ns), ns)
    fit1 = fit_spectrum(one, FitConfig(restarts=30, seed=0))
    assert fit1.lorentzians <= 2 and fit1.selection.startswith("auto"), fit1.selection
    three = measured(lorentzian_curves([(4e10, 2 * np.pi * 5e4, 1e5), (2e11, 2 * np.pi * 2e6, 3e5),
                                        (1e10, 2 * np.pi * 0.5e6, 5e4)], ns), ns)
    fit3 = fit_spectrum(three, FitConfig(restarts=30, seed=0))
    assert fit3.lorentzians >= 3 and "(chosen)" in fit3.selection, fit3.selection
    assert fit3.ok, fit3.message
    # incremental: the previous M and its neighbours, not the whole ladder
    more = measured(lorentzian_curves([(4e10, 2 * np.pi * 5e4, 1e5), (2e11, 2 * np.pi * 2e6, 3e5),
                                       (1e10, 2 * np.pi * 0.5e6, 5e4)], np.array([5])), np.array([5]), seed=9)
    data4 = three.append(5, T, more.coherence[0], more.sigma[0])
    warm = fit_spectrum(data4, FitConfig(restarts=30, seed=1), warm=fit3)
    assert "warm" in warm.selection and len(warm.rungs) <= 3 and warm.lorentzians >= 3, warm.selection


def test_without_sigma_ok_can_fail():
    """No sigma given: the reduced chi^2 is 1 by construction, so `ok` comes from the residuals'
    autocorrelation: one Lorentzian on a clearly two-component bath fails, two pass."""
    ns = np.array([0, 1, 2, 3, 8, 16, 32])
    data = measured(lorentzian_curves([(2e11, 0.0, 3e5), (3e10, 2 * np.pi * 1e6, 3e4)], ns), ns, sigma_given=False)
    bad = fit_spectrum(data, FitConfig(lorentzians=1, restarts=20, seed=0))
    assert not bad.ok and "sigma not given" in bad.message and "structure" in bad.message, bad.message
    good = fit_spectrum(data, FitConfig(lorentzians=2, restarts=20, seed=0))
    assert good.ok, good.message


@pytest.mark.parametrize("m", [0, MAX_LORENTZIANS + 1, "many", 2.5])
def test_lorentzians_setting_is_checked(m):
    with pytest.raises(ValueError, match="lorentzians"):
        FitConfig(lorentzians=m)
