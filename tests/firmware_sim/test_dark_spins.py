"""Dark spins and DEER against independent calculations: the Rabi formula in angular units, a
Monte-Carlo average over the line, the dipolar coupling written out by hand, and Poisson statistics
of the simulated counts (docs/physics.md section 2, "Dark spins and DEER" and its pitfalls)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.dark_spins import (GAMMA_DARK, DarkSpins, count_ratio, dark_resonance, deer_counts,
                                             deer_signal, signal_from_counts)
from nvscope.rt.kernels.deer import flip_probability, secular_coupling

T_PI = 150e-9
T2STAR = 150e-9
NM = 1e-9


def rabi_angular(delta_hz, t):
    """Rabi's formula in rad/s: W^2/(W^2 + D^2) sin^2(sqrt(W^2 + D^2) t / 2), W = pi / t_pi (a pi pulse)."""
    w = np.pi / T_PI
    d = 2 * np.pi * np.asarray(delta_hz)
    return w**2 / (w**2 + d**2) * np.sin(np.sqrt(w**2 + d**2) * t / 2) ** 2


DETUNINGS = np.array([0.0, 0.7e6, 2.5e6, 6e6, 15e6, 80e6])


@pytest.mark.parametrize("t2star", [np.inf, 1.0])
@pytest.mark.parametrize("line", ["lorentzian", "gaussian"])
def test_flip_probability_is_bare_rabi_without_dephasing(line, t2star):
    np.testing.assert_allclose(flip_probability(DETUNINGS, T_PI, t2star, line), rabi_angular(DETUNINGS, T_PI),
                               rtol=0, atol=1e-6)
    assert flip_probability(0.0, T_PI, t2star, line) == pytest.approx(1.0, abs=1e-6)


def test_flip_probability_at_resonance_matches_physics_md():
    p_l = flip_probability(0.0, T_PI, T2STAR, "lorentzian")
    p_g = flip_probability(0.0, T_PI, T2STAR, "gaussian")
    assert round(float(p_l), 2) == 0.72 and round(float(p_g), 2) == 0.84
    # a dense trapezoid over +-1 GHz of the Lorentzian (HWHM 1/(2 pi T2*)) as a second reference
    y = np.linspace(-1e9, 1e9, 2_000_001)
    g = 1 / (2 * np.pi * T2STAR)
    ref = np.trapezoid(g / np.pi / (y**2 + g**2) * rabi_angular(y, T_PI), y)
    assert float(p_l) == pytest.approx(ref, abs=2e-5)


@pytest.mark.parametrize("line", ["lorentzian", "gaussian"])
def test_flip_probability_against_monte_carlo_over_the_line(line):
    rng = np.random.default_rng(7)
    n = 400_000
    if line == "lorentzian":
        offsets = rng.standard_cauchy(n) / (2 * np.pi * T2STAR)
    else:
        offsets = rng.normal(0.0, np.sqrt(2) / (2 * np.pi * T2STAR), n)
    p = flip_probability(DETUNINGS, T_PI, T2STAR, line)
    for d, pk in zip(DETUNINGS, p):
        samples = rabi_angular(d + offsets, T_PI)
        assert abs(pk - samples.mean()) < 4 * samples.std() / np.sqrt(n) + 1e-6, (line, d)
    # the line narrows the response at resonance, and the far wing is not the bare formula's
    assert p[0] < 0.9 and p[-1] != pytest.approx(rabi_angular(DETUNINGS[-1], T_PI), rel=0.1)


def test_flip_probability_large_arrays_agree_with_small_calls():
    d = np.random.default_rng(1).uniform(-3e9, 3e9, 6000)
    d[:200] = np.linspace(-40e6, 40e6, 200)
    big = flip_probability(d, T_PI, T2STAR)  # > 4096 values: tabulated and interpolated
    small = np.concatenate([flip_probability(c, T_PI, T2STAR) for c in np.array_split(d, 3)])
    np.testing.assert_allclose(big, small, rtol=0, atol=1e-6)


def test_flip_probability_refuses_bad_input():
    with pytest.raises(ValueError, match="line"):
        flip_probability(0.0, T_PI, T2STAR, "voigt")
    with pytest.raises(ValueError, match="t_pi"):
        flip_probability(0.0, 0.0, T2STAR)
    with pytest.raises(ValueError, match="finite"):
        flip_probability(np.nan, T_PI, T2STAR)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_coupling_written_out_and_invariant_under_rotation():
    # on the NV axis, both spins along it: J = nu_dd (1 - 3) / r^3 = -2 x 52 MHz nm^3 / 125 nm^3
    assert secular_coupling([0, 0, 5 * NM], [0, 0, 1], [0, 0, 1]) == pytest.approx(-2 * 52.0e6 / 125, rel=1e-12)
    rng = np.random.default_rng(3)
    r = rng.normal(size=(20, 3)) * 4 * NM
    n_nv = np.array([0.3, -0.2, 1.0])
    n_d = rng.normal(size=(20, 3))
    j = secular_coupling(r, n_nv, n_d)
    for _ in range(5):
        rot = random_rotation(rng)
        np.testing.assert_allclose(secular_coupling(r @ rot.T, rot @ n_nv, n_d @ rot.T), j, rtol=1e-10)


def test_coupling_vanishes_at_the_magic_angle_and_follows_a_tilted_dark_axis():
    magic = np.arccos(1 / np.sqrt(3))
    r = 6 * NM * np.array([np.sin(magic), 0.0, np.cos(magic)])
    z = np.array([0.0, 0.0, 1.0])
    assert abs(secular_coupling(r, z, z)) < 1e-9 * 52.0e6 / 216
    # tilt the dark spin's axis by 20 degrees in the xz plane (the tip's transverse field): J = 0 no more
    a = np.radians(20)
    n_d = np.array([np.sin(a), 0.0, np.cos(a)])
    u = r / np.linalg.norm(r)
    hand = 52.0e6 / 216 * (np.cos(a) - 3 * u[2] * (u[0] * np.sin(a) + u[2] * np.cos(a)))
    assert secular_coupling(r, z, n_d) == pytest.approx(hand, rel=1e-12)
    assert abs(hand) > 1e4


def test_dark_spin_drive_near_8p4_ghz_at_0p30_t():
    f = dark_resonance(np.array([0.0, 0.0, 0.30]))
    assert f == pytest.approx(8.406e9, rel=1e-9)
    assert 8.3e9 < f < 8.5e9
    assert 28.03e9 * 0.30 - f == pytest.approx(3e6, rel=1e-6)  # gamma_NV would put it 3 MHz off
    assert dark_resonance(np.array([[0.3, 0.0, 0.0], [0.0, 0.18, 0.24]])) == pytest.approx([f, f], rel=1e-12)


NV = np.array([0.0, 0.0, -10 * NM])
N_NV = np.array([0.0, 0.0, 1.0])
B0 = 0.30


def gradient_field(tips):
    """B0 z plus a tilted field growing with z above the NV, one field per tip offset (T, 3) m."""
    def field_at(points):
        rel = points[None, :, :] - tips[:, None, :]
        bz = B0 + 1.2e6 * rel[..., 2] + 0.4e6 * rel[..., 0]  # T/m: 12 G/nm
        bx = 0.02 + 0.3e6 * rel[..., 1]
        return np.stack([bx, np.zeros_like(bz), bz], axis=-1)
    return field_at


def test_one_spin_deer_against_the_analytic_factor():
    r = np.array([2 * NM, -1 * NM, 0.0])
    tips = np.array([[0.0, 0.0, 0.0], [0.5 * NM, 0.0, 0.0], [0.0, 2 * NM, 1 * NM], [10 * NM, 10 * NM, 0.0]])
    field_at = gradient_field(tips)
    b = field_at(r[None, :])[:, 0, :]
    f_rf = GAMMA_DARK * np.linalg.norm(b[0]) + 1.0e6  # 1 MHz off the first pixel's resonance
    tau = 2e-6
    s = deer_signal(DarkSpins.single(r), field_at, NV, N_NV, f_rf, tau, T_PI, np.inf)
    for k in range(len(tips)):
        mod = np.sqrt(b[k] @ b[k])
        delta = f_rf - 28.02e9 * mod
        p = rabi_angular(delta, T_PI)
        d = r - NV
        dist = np.sqrt(d @ d)
        n_d = b[k] / mod
        j = 52.0e6 * 1e-27 * (n_d[2] - 3 * (d[2] / dist) * (n_d @ d / dist)) / dist**3
        assert s[k] == pytest.approx(1 - p * (1 - np.cos(np.pi * j * tau)), abs=1e-12)
    assert s[0] < 0.9 and s[-1] > 0.999  # on the slice, then far off it


def test_pair_is_the_product_of_single_spins_and_a_layer_of_all():
    tips = np.stack(np.meshgrid(np.linspace(-4, 4, 41) * NM, np.linspace(-4, 4, 41) * NM, [0.0]), -1).reshape(-1, 3)
    field_at = gradient_field(tips)
    r1, r2 = np.array([1 * NM, 0.5 * NM, 0.0]), np.array([-1.5 * NM, 1 * NM, 0.0])
    f_rf = GAMMA_DARK * np.linalg.norm(field_at(r1[None, :])[tips.shape[0] // 2, 0])
    args = (field_at, NV, N_NV, f_rf, 1.5e-6, T_PI, T2STAR)
    s1 = deer_signal(DarkSpins.single(r1), *args)
    s2 = deer_signal(DarkSpins.single(r2), *args)
    pair = deer_signal(DarkSpins.pair(r1, r2), *args)
    assert s1.shape == (tips.shape[0],) and s1.min() < 0.95 and s1.max() > 0.999
    np.testing.assert_allclose(pair, s1 * s2, rtol=0, atol=1e-6)
    assert np.max(np.abs(pair - s1)) > 0.03
    args = (gradient_field(tips[::4]),) + args[1:]  # 421 pixels x ~32 spins > 4096 detunings: tabulated p
    layer = DarkSpins.surface_layer(0.5e18, 0.0, 8 * NM, np.random.default_rng(5))
    assert len(layer) > 10
    prod = np.prod([deer_signal(DarkSpins.single(p), *args) for p in layer.positions], axis=0)
    np.testing.assert_allclose(deer_signal(layer, *args), prod, rtol=0, atol=1e-5)


def test_surface_layer_is_a_poisson_layer_at_its_height():
    rng = np.random.default_rng(11)
    counts = [len(DarkSpins.surface_layer(0.5e18, 1 * NM, 20 * NM, rng)) for _ in range(300)]
    assert np.mean(counts) == pytest.approx(200, abs=4 * np.sqrt(200 / 300))
    assert np.var(counts) == pytest.approx(200, rel=0.3)
    layer = DarkSpins.surface_layer(0.5e18, 1 * NM, 20 * NM, rng)
    assert np.all(layer.positions[:, 2] == 1 * NM) and np.all(np.abs(layer.positions[:, :2]) <= 10 * NM)
    with pytest.raises(ValueError, match="density"):
        DarkSpins.surface_layer(-1.0, 0.0, 1e-8, rng)
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        DarkSpins(np.zeros((2, 2)))


@pytest.mark.parametrize("coherence", [1.0, 0.6])
def test_deer_counts_are_poisson_and_estimate_the_signal(coherence):
    rng = np.random.default_rng(2)
    signal = np.full(4000, 0.8)
    shots, r0, c = 20_000, 0.03, 0.25
    n_rf, n_ref = deer_counts(signal, shots, rng, photons_per_shot=r0, contrast=c, coherence=coherence)
    lam_rf = shots * r0 * (1 - c * (1 - coherence * 0.8) / 2)  # P(ms=0) = (1 + C S)/2, ms=-1 is c darker
    lam_ref = shots * r0 * (1 - c * (1 - coherence) / 2)
    for n, lam in ((n_rf, lam_rf), (n_ref, lam_ref)):
        assert n.mean() == pytest.approx(lam, abs=4 * np.sqrt(lam / n.size))
        assert n.var() == pytest.approx(lam, rel=4 * np.sqrt(2 / n.size))
    assert np.mean(n_rf / n_ref) == pytest.approx(lam_rf / lam_ref, abs=4 * np.std(n_rf / n_ref) / np.sqrt(4000))
    assert count_ratio(0.8, c, coherence) == pytest.approx(lam_rf / lam_ref, rel=1e-12)
    # one pixel: the signal estimated from its two counts lies within its shot noise of the truth
    est = signal_from_counts(n_rf, n_ref, c, coherence)
    sigma = 2 / (c * coherence) * np.sqrt(lam_rf / lam_ref**2 + lam_rf**2 / lam_ref**3)
    assert np.std(est) == pytest.approx(sigma, rel=0.1)
    assert abs(np.mean(est) - 0.8) < 4 * sigma / np.sqrt(4000)
    assert np.mean(np.abs(est - 0.8) < 2 * sigma) == pytest.approx(0.954, abs=0.02)


def test_deer_counts_refuse_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        deer_counts(np.array([1.2]), 100, rng)
    with pytest.raises(ValueError):
        deer_counts(np.array([-1.2]), 100, rng)
    with pytest.raises(ValueError, match="contrast"):
        deer_counts(np.array([0.5]), 100, rng, contrast=1.5)


def test_a_spin_at_pi_j_tau_near_pi_inverts_the_echo_and_its_counts_follow():
    """One flipped spin (p = 1) with pi J tau = pi multiplies the echo by 1 - 2 = -1: fewer photons with
    RF than without, as count_ratio says (the counts must not refuse a negative signal)."""
    s = np.array([1.0 - 1.0 * (1.0 - np.cos(np.pi))])
    assert s[0] == pytest.approx(-1.0)
    n_rf, n_ref = deer_counts(s, 2_000_000, np.random.default_rng(3), photons_per_shot=0.03, contrast=0.25)
    assert n_rf[0] / n_ref[0] == pytest.approx(count_ratio(s)[0], abs=5 * np.sqrt(2 / n_ref[0]))
    assert count_ratio(s)[0] == pytest.approx(0.75)
