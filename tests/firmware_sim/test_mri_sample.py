"""The simulated NV-MRI sample behind the pulsed instrument: DEER counts of one dark spin against
count_ratio x the analytic one-spin factor 1 - p (1 - cos(pi J tau)) (J written out here), RF off or
no spin leaves the echo alone, and the [sim.mri] table's truth (spins, layer) (docs/physics.md 2.5)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.dark_spins import count_ratio, flip_probability
from nvscope.firmware_sim.magnetic_tip import tip_field
from nvscope.rt.config import ConfigError, RigConfig, from_dict
from nvscope.rt.devices import DEFAULT_SIM, compose_devices
from nvscope.rt.kernels.pulses import ShotTiming, coherence_shot, deer_pulse_times
from nvscope.rt.kernels.spin_constants import GAMMA_DARK_HZ_PER_T, NU_DD_HZ_M3

NM = 1e-9


def rig(**mri):
    return compose_devices(from_dict(RigConfig, {"seed": 9, "sim": {**DEFAULT_SIM, "mri": mri}}, "rig"), sim=True)


def one_spin_factor(spin, apex, f_rf, tau, t_pi, t2star):
    """1 - p (1 - cos(pi J tau)) for one spin, with J = nu_dd [n_nv.n_d - 3 (n_nv.u)(n_d.u)] / r^3."""
    b = np.array([0.0, 0.0, 0.30]) + tip_field(spin, apex)
    n_d = b / np.linalg.norm(b)
    r = spin - np.array([0.0, 0.0, -10 * NM])
    u = r / np.linalg.norm(r)
    j = NU_DD_HZ_M3 * (n_d[2] - 3 * u[2] * (n_d @ u)) / np.linalg.norm(r) ** 3
    p = flip_probability(np.array([f_rf - GAMMA_DARK_HZ_PER_T * np.linalg.norm(b)]), t_pi, t2star)[0]
    return 1 - p * (1 - np.cos(np.pi * j * tau)), p


def test_deer_counts_follow_count_ratio_of_the_one_spin_factor():
    spin = np.array([2 * NM, -1 * NM, -6 * NM])
    d = rig(dark_spins=[spin.tolist()])
    apex = np.array([3 * NM, 0.0, 20 * NM])
    d.scanner.move_to(*apex)
    b = np.linalg.norm(np.array([0.0, 0.0, 0.30]) + tip_field(spin, apex))
    f_rf = GAMMA_DARK_HZ_PER_T * b  # the spin right in the slice
    d.rf.set_frequency(f_rf)
    d.rf.set_output(True)
    tau, timing = 2e-6, ShotTiming()
    expected, p = one_spin_factor(spin, apex, f_rf, tau, timing.rf_pi_s, 150e-9)
    assert p > 0.6 and expected < 0.6  # a deep dip: the test can fail
    nv, rf = deer_pulse_times(tau)
    shots = 2_000_000
    counts = {}
    for name, shot in (("rf", coherence_shot(tau, nv, timing, rf_times=rf)), ("ref", coherence_shot(tau, nv, timing))):
        d.pulser.load(shot)
        d.counter.arm()
        d.pulser.play(shots)
        counts[name] = d.counter.gated_counts().signal
    coherence = d.pulser.qubit.coherence(tau, nv)
    assert 0.97 < coherence < 0.99  # the default bath keeps the echo at 2 us (C = 0.978)
    assert d.pulser.sample.deer_factor(tau, timing.rf_pi_s) == pytest.approx(expected, rel=1e-6)
    r0 = 0.03 * shots
    for name, s in (("rf", expected), ("ref", 1.0)):
        lam = r0 * (1 - 0.25 * (1 - coherence * s) / 2)
        assert abs(counts[name] - lam) < 4.5 * np.sqrt(lam)
    ratio = counts["rf"] / counts["ref"]
    sigma = ratio * np.sqrt(1 / counts["rf"] + 1 / counts["ref"])
    assert abs(ratio - count_ratio(expected, 0.25, coherence)) < 4 * sigma
    # RF off: the echo alone
    d.rf.set_output(False)
    assert d.pulser.sample.deer_factor(tau, timing.rf_pi_s) == 1.0


def test_the_sim_mri_table_and_its_truth():
    d = rig(layer={"density_per_m2": 0.5e18, "height_m": 0.0, "extent_m": 40 * NM, "seed": 3},
            dark_spins=[[1 * NM, 0.0, -5 * NM]], nv_depth_m=12 * NM, b0_t=0.25)
    t = d.truth
    assert t["nv_depth_m"] == 12 * NM and t["b0_t"] == 0.25 and t["layer"] == {"height_m": 0.0,
                                                                              "density_per_m2": 0.5e18}
    spins = np.array(t["dark_spins_m"])
    assert spins[0].tolist() == [1 * NM, 0.0, -5 * NM] and 600 < len(spins) < 1000  # 800 expected
    assert np.all(spins[1:, 2] == 0.0) and np.abs(spins[1:, :2]).max() <= 20 * NM
    again = rig(layer={"density_per_m2": 0.5e18, "height_m": 0.0, "extent_m": 40 * NM, "seed": 3},
                dark_spins=[[1 * NM, 0.0, -5 * NM]], nv_depth_m=12 * NM, b0_t=0.25)
    assert again.truth["dark_spins_m"] == t["dark_spins_m"]  # the layer is drawn from its seed
    d.scanner.move_to(0.0, 0.0, 5e-6)  # tip retracted: the bare line at the configured bias
    assert d.pulser.sample.resonance_hz() == pytest.approx(28.03e9 * 0.25 - 2.870e9, abs=1e4)
    assert "noise_S" in t  # the qubit's bath is still recorded


@pytest.mark.parametrize("table, words", [({"dark_spins": [[0.0, 1e-9]]}, "dark_spins[0]"),
                                          ({"layer": {"density_per_m2": -1.0}}, "sim.mri.layer"),
                                          ({"dark_line": "voigt"}, "dark_line"),
                                          ({"nv_depth": 1e-8}, "sim.mri.nv_depth: unknown field")])
def test_a_bad_sim_mri_table_is_one_line_naming_it(table, words):
    with pytest.raises(ConfigError, match="sim.mri") as e:
        rig(**table)
    assert words in str(e.value) and "\n" not in str(e.value)
