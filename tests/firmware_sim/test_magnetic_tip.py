"""The magnetic tip: the reference values of docs/physics.md section 2.2 (on-axis field, largest
lateral gradient, transverse field at the steepest point), Maxwell's equations by finite
differences, the analytic gradient against finite differences, and the point dipole against a
sum over the sphere's volume elements (which catches a dipole at the apex or a wrong moment)."""

from __future__ import annotations

import numpy as np
import pytest

from nvscope.firmware_sim.magnetic_tip import TipParams, tip_field, tip_field_gradient

NM = 1e-9
G_PER_NM = 1e-4 / 1e-9  # 1 G/nm in T/m
NV = np.array([0.0, 0.0, -10 * NM])


def fd_gradient(points: np.ndarray, apex: np.ndarray, h: float = 1e-3 * NM) -> np.ndarray:
    """dB_i/dx_j (..., 3, 3) by central differences of tip_field."""
    cols = []
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        cols.append((tip_field(points + e, apex) - tip_field(points - e, apex)) / (2 * h))
    return np.stack(cols, axis=-1)


def test_moment_is_mu0_ms_r3_over_3():
    assert TipParams().moment_t_m3 == pytest.approx([0.0, 0.0, 1133.3e-27], rel=1e-4)


@pytest.mark.parametrize("gap_nm, bz_mt", [(30, 10.5), (10, 35.4)])
def test_on_axis_field_above_the_nv(gap_nm, bz_mt):
    b = tip_field(NV, np.array([0.0, 0.0, gap_nm * NM]))
    assert b[2] * 1e3 == pytest.approx(bz_mt, abs=0.05)
    assert abs(b[0]) < 1e-12 and abs(b[1]) < 1e-12


@pytest.mark.parametrize("gap_nm, grad_g_per_nm, bperp_mt", [(30, 2.40, 4.31), (10, 12.1, 14.5)])
def test_largest_lateral_gradient_over_tip_positions(gap_nm, grad_g_per_nm, bperp_mt):
    x = np.linspace(-60 * NM, 60 * NM, 4801)  # 0.025 nm steps
    apex = np.stack([x, np.zeros_like(x), np.full_like(x, gap_nm * NM)], axis=-1)
    dbz_dx = tip_field_gradient(NV, apex)[:, 2, 0]
    i = np.argmax(np.abs(dbz_dx))
    assert abs(dbz_dx[i]) / G_PER_NM == pytest.approx(grad_g_per_nm, abs=0.01 * grad_g_per_nm)
    # the transverse field at the steepest point (docs/physics.md section 2.7: 14.5 mT at a 10 nm gap)
    assert np.hypot(*tip_field(NV, apex[i])[:2]) * 1e3 == pytest.approx(bperp_mt, abs=0.05)
    # the gradient with respect to the NV's x is minus that with respect to the tip's x
    bz = tip_field(NV, apex)[:, 2]
    np.testing.assert_allclose(-np.gradient(bz, x)[1:-1], dbz_dx[1:-1], rtol=1e-3, atol=1e-4 * G_PER_NM)


def random_points(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Points below the surface and tip apexes above it, all well outside the sphere."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([-30 * NM, -30 * NM, -25 * NM], [30 * NM, 30 * NM, -2 * NM], (n, 3))
    apex = rng.uniform([-30 * NM, -30 * NM, 3 * NM], [30 * NM, 30 * NM, 40 * NM], (n, 3))
    return pts, apex


def test_divergence_and_curl_vanish_by_finite_differences():
    pts, apex = random_points(200)
    g = fd_gradient(pts, apex)
    scale = np.abs(g).max(axis=(-2, -1))
    div = np.trace(g, axis1=-2, axis2=-1)
    curl = np.stack([g[:, 2, 1] - g[:, 1, 2], g[:, 0, 2] - g[:, 2, 0], g[:, 1, 0] - g[:, 0, 1]], axis=-1)
    assert np.all(np.abs(div) < 1e-6 * scale)
    assert np.all(np.abs(curl).max(axis=-1) < 1e-6 * scale)


def test_analytic_gradient_against_central_differences():
    pts, apex = random_points(200, seed=2)
    analytic = tip_field_gradient(pts, apex)
    numeric = fd_gradient(pts, apex)
    scale = np.abs(numeric).max(axis=(-2, -1), keepdims=True)
    assert np.all(np.abs(analytic - numeric) < 1e-6 * scale)
    # and a tilted magnetization, whose gradient has no symmetry about z to hide behind
    tilted = TipParams(direction=tuple(np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])))
    h = 1e-3 * NM
    num = np.stack([(tip_field(pts + e, apex, tilted) - tip_field(pts - e, apex, tilted)) / (2 * h)
                    for e in np.eye(3) * h], axis=-1)
    an = tip_field_gradient(pts, apex, tilted)
    assert np.all(np.abs(an - num) < 1e-6 * np.abs(num).max(axis=(-2, -1), keepdims=True))


def test_point_dipole_equals_the_sum_over_the_magnetized_volume():
    """A uniformly magnetized sphere as the sum of its volume elements' dipoles (mu0 M dV / 4 pi each):
    equal to the point dipole at apex + R z outside the sphere, to the grid's accuracy."""
    tip = TipParams()
    r = tip.radius_m
    n = 24
    c = (np.arange(2 * n) + 0.5) / n - 1.0  # cell centres in units of R
    xyz = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)
    xyz = xyz[np.linalg.norm(xyz, axis=-1) <= 1.0] * r
    dv = (r / n) ** 3
    apex = np.array([2 * NM, -1 * NM, 15 * NM])
    centre = apex + np.array([0.0, 0.0, r])
    m_cell = tip.mu0_ms_t * dv / (4 * np.pi) * np.array([0.0, 0.0, 1.0])  # mu0 m / 4 pi per cell, T m^3
    for p in (NV, np.array([12 * NM, 5 * NM, -3 * NM])):
        d = p - (centre + xyz)
        rn = np.linalg.norm(d, axis=-1, keepdims=True)
        u = d / rn
        b_sum = ((3 * (u @ m_cell)[:, None] * u - m_cell) / rn**3).sum(axis=0)
        np.testing.assert_allclose(tip_field(p, apex, tip), b_sum, rtol=0, atol=5e-3 * np.abs(b_sum).max())


def test_broadcasts_points_against_apexes():
    pts, apex = random_points(6)
    grid = tip_field(pts[:, None, :], apex[None, :, :])
    assert grid.shape == (6, 6, 3)
    assert tip_field_gradient(pts[:, None, :], apex[None, :, :]).shape == (6, 6, 3, 3)
    np.testing.assert_array_equal(grid[2, 4], tip_field(pts[2], apex[4]))


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="inside the tip"):
        tip_field(np.array([0.0, 0.0, 25 * NM]), np.array([0.0, 0.0, 10 * NM]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        tip_field(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        tip_field(np.array([np.nan, 0.0, 0.0]), np.zeros(3))
    with pytest.raises(ValueError, match="unit"):
        TipParams(direction=(0.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="radius"):
        TipParams(radius_m=-1e-9)
