"""The NV transition by diagonalization against independent calculations (the aligned-field formula,
second-order perturbation theory, the two-level anticrossing gap, the Hamiltonian written in the lab
frame), eigenstate labels through the anticrossing near 0.1 T, and CW ODMR on the simulated pulsed
instrument: Poisson counts, dip depth, the dither's gates (the source's FM driven by the pulse
generator) against odmr_rate, the lock's error slope and sign, the resonance following the tip on
the scanner (docs/physics.md sections 2.3, 2.4 and 2.7)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.magnetic_tip import tip_field
from nvscope.firmware_sim.dark_spins import DarkSpins
from nvscope.firmware_sim.magnetic_tip import TipParams
from nvscope.firmware_sim.mri_sample import SimMriSample
from nvscope.firmware_sim.nv_center import (D_HZ, GAMMA_NV_HZ_PER_T, SX, SY, SZ, NvParams, OdmrParams, nv_levels,
                                            nv_resonance, odmr_rate, to_nv_frame, transition_frequency_minus)
from nvscope.firmware_sim.pulsed import SimMicrowaveSource, SimPhotonCounter, SimPulseGenerator
from nvscope.firmware_sim.qubit import NoiseSpectrum, SimQubit
from nvscope.firmware_sim.sample import SimScanner
from nvscope.rt.hal import (DeviceError, MicrowaveConstraints, MicrowaveSource, PhotonCounter, PulseGenerator,
                            check_device)
from nvscope.rt.kernels.pulses import dither_cycle

NM = 1e-9
MHZ = 1e6


def aligned(b_par_t):
    """The aligned-field formula |gamma_NV B_par - D| in Hz (the check, not the simulator)."""
    return np.abs(GAMMA_NV_HZ_PER_T * np.asarray(b_par_t) - D_HZ)


def field(b_par, b_perp=0.0, phi=0.0):
    return np.stack(np.broadcast_arrays(b_perp * np.cos(phi), b_perp * np.sin(phi), b_par), axis=-1)


# --- the transition --------------------------------------------------------------------------------

def test_high_field_transition_is_gamma_b_minus_d_and_rises_with_b_par():
    assert transition_frequency_minus(field(0.30)) == pytest.approx(5.539e9, abs=1.0)
    b = np.concatenate([np.linspace(0.0, 0.09, 10), np.linspace(0.115, 1.0, 30)])
    np.testing.assert_allclose(transition_frequency_minus(field(b)), aligned(b), rtol=1e-12, atol=1e-3)
    # above the anticrossing a stronger field raises the line (D - gamma B would lower it)
    step = transition_frequency_minus(field(0.301)) - transition_frequency_minus(field(0.300))
    assert step == pytest.approx(GAMMA_NV_HZ_PER_T * 1e-3, rel=1e-9)


def test_labels_follow_the_spin_character_through_the_anticrossing():
    """B_par across D / gamma = 0.1024 T with 1 mT transverse: away from the crossing the states
    labelled 0 and -1 are mostly |0> and |-1> (sorted energies would call the lower state ms=0 on
    both sides); E(-1) - E(0) changes sign with D - gamma B_par; the gap never closes."""
    b_perp = 1e-3
    b = np.linspace(0.08, 0.125, 4501)  # 10 uT steps
    e, overlap = nv_levels(field(b, b_perp))
    away = np.abs(b - D_HZ / GAMMA_NV_HZ_PER_T) > 5e-3
    assert np.all(overlap[away] > 0.9)
    below = away & (b < D_HZ / GAMMA_NV_HZ_PER_T)
    above = away & (b > D_HZ / GAMMA_NV_HZ_PER_T)
    assert np.all(e[below, 2] > e[below, 1]) and np.all(e[above, 2] < e[above, 1])
    assert np.all(overlap.sum(axis=-1) > 1.0)  # each label on its own eigenstate, even at 50/50 mixing
    f = transition_frequency_minus(field(b, b_perp))
    # continuous: no jump larger than the aligned line's own change over one step
    assert np.max(np.abs(np.diff(f))) <= 1.01 * GAMMA_NV_HZ_PER_T * (b[1] - b[0])
    # the gap at the anticrossing is the two-level one, 2 |<0|gamma B_perp Sx|-1>| = sqrt(2) gamma B_perp,
    # where the aligned formula goes to zero
    i = np.argmin(f)
    assert f[i] == pytest.approx(np.sqrt(2) * GAMMA_NV_HZ_PER_T * b_perp, rel=0.02)
    assert b[i] == pytest.approx(D_HZ / GAMMA_NV_HZ_PER_T, abs=0.5e-3)
    assert aligned(b[i]) < 2 * MHZ
    # and near 0.1 T the formula is off by many MHz
    assert abs(transition_frequency_minus(field(0.1, b_perp)) - aligned(0.1)) > 10 * MHZ


@pytest.mark.parametrize("b_perp, shift_mhz", [(5e-3, 2.7), (20e-3, 43.0)])
def test_transverse_field_shifts_the_line_at_0_30_t(b_perp, shift_mhz):
    f0 = transition_frequency_minus(field(0.30))
    shift = transition_frequency_minus(field(0.30, b_perp, phi=np.linspace(0, 2 * np.pi, 7))) - f0
    assert np.ptp(shift) < 1.0  # the line does not depend on the transverse field's azimuth
    assert shift[0] / MHZ == pytest.approx(shift_mhz, abs=0.025 * shift_mhz)
    # second-order perturbation theory: |0> couples to |+1> and |-1>, |-1> to |0>, each by gamma B_perp / sqrt 2
    v2 = (GAMMA_NV_HZ_PER_T * b_perp) ** 2 / 2
    e_m, e_p = D_HZ - GAMMA_NV_HZ_PER_T * 0.30, D_HZ + GAMMA_NV_HZ_PER_T * 0.30
    pert = -v2 * (1 / e_p + 2 / e_m)  # d(E(0) - E(-1)) with E(0) = 0
    assert shift[0] == pytest.approx(pert, rel=0.01 if b_perp < 10e-3 else 0.05)


def test_the_nv_sees_the_field_on_its_own_axis():
    """A tilted NV axis: the NV-frame Hamiltonian against D (n.S)^2 + gamma B.S written in the lab frame."""
    n = np.array([1.0, 1.0, 1.0]) / np.sqrt(3)
    nv = NvParams(axis=tuple(n))
    rng = np.random.default_rng(3)
    b_lab = nv.bias_t + rng.normal(0.0, 10e-3, (20, 3))
    f = transition_frequency_minus(to_nv_frame(b_lab, nv.axis))
    ns = n[0] * SX + n[1] * SY + n[2] * SZ
    h_lab = D_HZ * ns @ ns + GAMMA_NV_HZ_PER_T * (b_lab[:, 0, None, None] * SX + b_lab[:, 1, None, None] * SY
                                                  + b_lab[:, 2, None, None] * SZ)
    e = np.linalg.eigvalsh(h_lab)  # far above the anticrossing: ascending = (-1, 0, +1)
    np.testing.assert_allclose(f, e[:, 1] - e[:, 0], rtol=1e-10)
    # the z projection would be wrong by far more than the line width
    assert np.all(np.abs(f - aligned(b_lab[:, 2])) > 100 * MHZ)


def test_tip_above_the_nv_raises_the_line_by_gamma_bz():
    nv = NvParams()
    apex = np.array([0.0, 0.0, 30 * NM])
    bz = tip_field(nv.position_m, apex)[2]
    assert nv_resonance(apex, nv) == pytest.approx(GAMMA_NV_HZ_PER_T * (0.30 + bz) - D_HZ, abs=1.0)
    assert nv_resonance(None, nv) == pytest.approx(5.539e9, abs=1.0)
    grid = np.stack(np.meshgrid(np.linspace(-30, 30, 5) * NM, np.linspace(-30, 30, 4) * NM, [20 * NM],
                                indexing="ij"), axis=-1)[:, :, 0]
    assert nv_resonance(grid, nv).shape == (5, 4)


def test_bad_fields_and_params_are_one_clear_error():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        transition_frequency_minus(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        transition_frequency_minus(np.array([0.0, np.inf, 0.3]))
    with pytest.raises(ValueError, match="unit"):
        NvParams(axis=(0.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="depth"):
        NvParams(depth_m=0.0)
    with pytest.raises(ValueError, match="contrast"):
        OdmrParams(contrast=1.2)


# --- CW ODMR on the simulated pulsed instrument -----------------------------------------------------

class Odmr:
    """The simulated pulsed instrument around the NV-MRI sample (no dark spins, a noiseless qubit)."""

    def __init__(self, seed: int = 0, scanner: SimScanner | None = None):
        self.scanner = scanner or SimScanner(position=(0.0, 0.0, 2e-6))  # tip retracted by default
        self.mw = SimMicrowaveSource()
        self.mw.set_output(True)
        self.sample = SimMriSample(NvParams(), TipParams(), OdmrParams(), DarkSpins(np.zeros((0, 3))), 150e-9,
                                   "lorentzian", self.scanner, self.mw)
        qubit = SimQubit(NoiseSpectrum(()), seed=seed)
        self.counter = SimPhotonCounter(qubit, seed=seed + 1, sample=self.sample)
        self.pulser = SimPulseGenerator(qubit, self.counter, sample=self.sample)

    def gates(self, half_period_s: float, repetitions: int) -> tuple[int, int]:
        """The two gates of `repetitions` dither cycles."""
        self.pulser.load(dither_cycle(half_period_s))
        self.counter.arm()
        self.pulser.play(repetitions)
        return self.counter.gated_counts()


def test_devices_fit_the_hal_protocols():
    d = Odmr()
    assert isinstance(d.mw, MicrowaveSource) and isinstance(d.counter, PhotonCounter)
    assert isinstance(d.pulser, PulseGenerator)
    check_device("microwave", d.mw)
    check_device("rf", SimMicrowaveSource())
    check_device("counter", d.counter)
    check_device("pulser", d.pulser)
    assert d.mw.constraints.max_fm_deviation_hz >= 8e6 / (2 * np.sqrt(3))  # the lock's dither fits


def test_odmr_rate_is_the_lorentzian_dip():
    p = OdmrParams()
    f0 = 5.5e9
    assert odmr_rate(f0, f0) == pytest.approx(150e3 * (1 - 0.15), rel=1e-12)
    assert odmr_rate(f0 + 4 * MHZ, f0) == pytest.approx(150e3 * (1 - 0.15 / 2), rel=1e-12)
    assert odmr_rate(f0 - 4 * MHZ, f0) == pytest.approx(150e3 * (1 - 0.15 / 2), rel=1e-12)
    assert odmr_rate(f0 + 1e4 * p.fwhm_hz, f0) == pytest.approx(150e3, rel=1e-7)


@pytest.mark.parametrize("detuning_mhz", [0.0, 3.0, -6.0, 80.0])
def test_counts_are_poisson_and_the_dip_has_the_contrast(detuning_mhz):
    d = Odmr(seed=int(10 + detuning_mhz))
    d.mw.set_frequency(d.sample.resonance_hz() + detuning_mhz * MHZ)
    t, n = 1e-3, 3000
    c = np.array([d.counter.count(t) for _ in range(n)])
    lam = odmr_rate(d.mw.frequency_hz, d.sample.resonance_hz()) * t
    assert abs(c.mean() - lam) < 4 * np.sqrt(lam / n)
    assert c.var(ddof=1) / lam == pytest.approx(1.0, abs=4 * np.sqrt(2 / n))
    if detuning_mhz == 0.0:  # dip depth = contrast: measured against the output switched off
        d.mw.set_output(False)
        off = np.array([d.counter.count(t) for _ in range(n)])
        assert 1 - c.mean() / off.mean() == pytest.approx(0.15, abs=0.01)


def error_signal(f_c, f_res, delta, p=OdmrParams()):
    i_p, i_m = odmr_rate(f_c + delta, f_res, p), odmr_rate(f_c - delta, f_res, p)
    return (i_p - i_m) / (i_p + i_m)


def test_lock_error_slope_and_sign_at_the_steepest_dither():
    p = OdmrParams()
    delta = p.fwhm_hz / (2 * np.sqrt(3))
    f_res = 5.539e9
    h = 1e3
    slope = (error_signal(f_res + h, f_res, delta) - error_signal(f_res - h, f_res, delta)) / (2 * h)
    assert slope * MHZ == pytest.approx(0.027, abs=0.001)
    # closed form: C HWHM^2 2 delta / (delta^2 + HWHM^2)^2 / (1 - C HWHM^2 / (delta^2 + HWHM^2))
    g, c = p.fwhm_hz / 2, p.contrast
    assert slope == pytest.approx(c * g**2 * 2 * delta / (delta**2 + g**2) ** 2 / (1 - c * g**2 / (delta**2 + g**2)),
                                  rel=1e-6)
    # delta = FWHM / (2 sqrt 3) is the steepest point: any other dither gives a smaller slope without contrast
    # in the denominator (the raw difference I+ - I-)
    raw = lambda d: odmr_rate(f_res + h + d, f_res) - odmr_rate(f_res + h - d, f_res)
    assert raw(delta) > raw(0.8 * delta) and raw(delta) > raw(1.2 * delta)
    # e > 0 when the resonance is below f_c
    assert error_signal(f_res + 2 * MHZ, f_res, delta) > 0 > error_signal(f_res - 2 * MHZ, f_res, delta)


def test_dither_gates_count_odmr_rate_at_f_plus_and_minus_the_fm_deviation():
    d = Odmr(seed=5)
    p = OdmrParams()
    delta = p.fwhm_hz / (2 * np.sqrt(3))
    f_res = d.sample.resonance_hz()
    d.mw.set_fm_deviation(delta)
    errs = []
    for off in (-1 * MHZ, 1 * MHZ):
        d.mw.set_frequency(f_res + off)
        s, r = d.gates(50e-6, 200_000)  # 10 s per gate: ~1.3e6 counts each
        for n, f in ((s, f_res + off + delta), (r, f_res + off - delta)):
            lam = 10.0 * odmr_rate(f, f_res)
            assert abs(n - lam) < 4 * np.sqrt(lam)
        errs.append((s - r) / (s + r))
    # e is +-1/sqrt(N) = 6e-4 per point: the secant slope to 4 sigma, against the analytic one
    slope = (errs[1] - errs[0]) / (2 * MHZ)
    secant = (error_signal(f_res + MHZ, f_res, delta) - error_signal(f_res - MHZ, f_res, delta)) / (2 * MHZ)
    assert abs(slope - secant) * MHZ < 4 * 6.2e-4 / np.sqrt(2)
    assert secant * MHZ == pytest.approx(0.027, abs=0.001)
    assert errs[1] > 0 > errs[0]
    # FM off: both gates count at f itself; microwave off: both at the off-resonance rate
    d.mw.set_fm_deviation(0.0)
    d.mw.set_frequency(f_res)
    s, r = d.gates(50e-6, 20_000)
    lam = odmr_rate(f_res, f_res) * 1.0
    assert abs(s - lam) < 4 * np.sqrt(lam) and abs(r - lam) < 4 * np.sqrt(lam)
    d.mw.set_output(False)
    s, r = d.gates(50e-6, 20_000)
    assert abs(s - 150e3) < 4 * np.sqrt(150e3) and abs(r - 150e3) < 4 * np.sqrt(150e3)


def test_resonance_follows_the_tip_on_the_scanner():
    scanner = SimScanner()
    d = Odmr(scanner=scanner)
    scanner.move_to(0.0, 0.0, 30 * NM)
    expected = GAMMA_NV_HZ_PER_T * (0.30 + tip_field(NvParams().position_m, np.array([0, 0, 30 * NM]))[2]) - D_HZ
    assert d.sample.resonance_hz() == pytest.approx(expected, abs=1.0)
    assert d.sample.resonance_hz() - 5.539e9 == pytest.approx(GAMMA_NV_HZ_PER_T * 10.5e-3, rel=0.01)
    scanner.move_to(15 * NM, 0.0, 10 * NM)
    assert d.sample.resonance_hz() == pytest.approx(float(nv_resonance(np.array(scanner.position))), abs=1.0)
    # the counts follow: at the new line's centre the dip is at its full depth
    d.mw.set_frequency(d.sample.resonance_hz())
    assert d.sample.cw_rate(d.mw.frequency_hz) == pytest.approx(150e3 * 0.85, rel=1e-9)
    scanner.move_to(0.0, 0.0, 5e-6)  # retracted: the bare line at 0.30 T
    assert d.sample.resonance_hz() == pytest.approx(5.539e9, abs=2e3)


def test_same_seed_same_counts():
    a, b = Odmr(seed=7), Odmr(seed=7)
    assert [a.counter.count(1e-3) for _ in range(5)] == [b.counter.count(1e-3) for _ in range(5)]
    assert a.gates(50e-6, 20) == b.gates(50e-6, 20)


def test_devices_refuse_bad_requests_with_one_line():
    d = Odmr()
    with pytest.raises(DeviceError, match="before arm"):
        d.counter.gated_counts()
    with pytest.raises(DeviceError, match="outside"):
        d.counter.count(0.0)
    with pytest.raises(DeviceError, match="outside"):
        d.mw.set_frequency(-1.0)
    with pytest.raises(DeviceError, match="FM deviation"):
        d.mw.set_fm_deviation(-1.0)
    with pytest.raises(DeviceError, match="FM deviation"):
        d.mw.set_fm_deviation(d.mw.constraints.max_fm_deviation_hz * 1.01)
    no_fm = SimMicrowaveSource(MicrowaveConstraints((9e3, 20e9), (-120.0, 25.0)))
    with pytest.raises(DeviceError, match="FM deviation"):
        no_fm.set_fm_deviation(1e6)
    no_fm.set_fm_deviation(0.0)  # off is always allowed
    with pytest.raises(ValueError, match="max_fm_deviation_hz"):
        MicrowaveConstraints((9e3, 20e9), (-120.0, 25.0), -1.0)
    with pytest.raises(DeviceError, match="before load"):
        d.pulser.play(1)
    bare = SimPulseGenerator(SimQubit(NoiseSpectrum(())), d.counter)  # no NV-MRI sample
    with pytest.raises(DeviceError, match=r"\[sim.mri\]"):
        bare.load(dither_cycle(50e-6))
