"""NV-MRI maps from a run's lock and deer rows: pixels placed by their indices (a serpentine scan arrives
out of order), missing pixels NaN and counted, lost locks left out and counted, the DEER dip and its
Poisson error, the scalars of the localization's input; the rows are synthetic messages with the
simulator's physics (firmware_sim), stored and read back through the run file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nvscope.firmware_sim.dark_spins import DarkSpins, count_ratio, deer_counts, deer_signal
from nvscope.firmware_sim.magnetic_tip import TipParams, tip_field
from nvscope.firmware_sim.nv_center import NvParams, nv_resonance
from nvscope.host.mri.maps import MriMapError, build_maps, deer_dip
from nvscope.host.store import RunStore, read_deer, read_lock, run_path
from nvscope.proto.messages import Deer, Lock, RunStart
from nvscope.rt.kernels.spin_constants import bias_from_nv_frequency, dark_rf_frequency

NV, TIP = NvParams(depth_m=10e-9, b0_t=0.30), TipParams()
F_SIGMA = 30e3


def mri_config(nx=9, ny=7, step=1e-9, psf_gaps=(18e-9, 20e-9, 22e-9), deer_gaps=(20e-9,), sections=(),
               rf_offset_hz=790e6, spins=((2e-9, -1e-9, -2e-9),)) -> dict:
    """A run's effective config as the rig sends it (the [mri] table of the contract), with sim_truth."""
    return {"mri": {"nx": nx, "ny": ny, "x0": -(nx // 2) * step, "y0": -(ny // 2) * step, "step": step,
                    "psf_gaps": list(psf_gaps), "deer_gaps": list(deer_gaps), "sections": list(sections),
                    "serpentine": True, "retract_z": 1e-6, "rf_offset_hz": rf_offset_hz, "tau_s": 2e-6,
                    "deer_shots": 2_000_000, "nv_depth_m": NV.depth_m, "t2star_dark_s": 150e-9},
            "coherence": {"timing": {"rf_pi_s": 150e-9}},
            "sim_truth": {"nv_depth_m": NV.depth_m, "b0_t": NV.b0_t, "dark_spins_m": [list(s) for s in spins]}}


def true_signal(config: dict, tip: np.ndarray) -> np.ndarray:
    """The simulator's DEER signal (0-1) at tip apex positions (..., 2-d grid, 3) m for `config`'s spins."""
    m = config["mri"]
    f_rf = dark_rf_frequency(float(nv_resonance(None, NV, TIP)), m["rf_offset_hz"])
    field_at = lambda pts: NV.bias_t + tip_field(pts[None, None], tip[:, :, None], TIP)  # noqa: E731
    return deer_signal(DarkSpins(np.asarray(config["sim_truth"]["dark_spins_m"])), field_at, NV.position_m,
                       np.array([0.0, 0.0, 1.0]), f_rf, m["tau_s"], config["coherence"]["timing"]["rf_pi_s"],
                       m["t2star_dark_s"])


def _serpentine(ny: int, nx: int):
    for iy in range(ny):
        for ix in (range(nx) if iy % 2 == 0 else range(nx - 1, -1, -1)):
            yield iy, ix


def synthetic_run(config: dict, seed: int = 1, lost: frozenset = frozenset(), recovered: frozenset = frozenset(),
                  skip: frozenset = frozenset(), stop_after: int | None = None) -> list:
    """The lock and deer messages an `mri` run of `config` sends, in serpentine order, with Poisson-free
    lock noise of F_SIGMA and Poisson DEER counts; `lost`, `recovered`, `skip`: (scan, plane, iy, ix)
    whose lock is lost, recovered, or that never arrive; `stop_after`: messages kept (a stopped run)."""
    rng = np.random.default_rng(seed)
    m = config["mri"]
    f0 = float(nv_resonance(None, NV, TIP))
    f_rf = dark_rf_frequency(f0, m["rf_offset_hz"])
    x = m["x0"] + m["step"] * np.arange(m["nx"])
    y = m["y0"] + m["step"] * np.arange(m["ny"])
    msgs, index = [Lock(run_id="r", seq=1, index=0, scan=0, position=np.array([0.0, 0.0, m["retract_z"]]),
                        f_lock_hz=f0 + rng.normal(0, F_SIGMA), f_sigma_hz=F_SIGMA, cycles=50, photons=10_000)], 1

    def lock(scan, plane, iy, ix, pos):
        nonlocal index
        key = (scan, plane, iy, ix)
        state = 2 if key in lost else 1 if key in recovered else 0
        f = float(nv_resonance(pos, NV, TIP)) + rng.normal(0, F_SIGMA)
        return Lock(run_id="r", seq=0, index=index, scan=scan, plane=plane, ix=ix, iy=iy, position=pos,
                    f_lock_hz=f + (50e6 if state == 2 else 0.0), f_sigma_hz=float("inf") if state == 2 else F_SIGMA,
                    state=state, cycles=50, photons=10_000)

    for plane, gap in enumerate(m["psf_gaps"]):
        for iy, ix in _serpentine(m["ny"], m["nx"]):
            if (1, plane, iy, ix) not in skip:
                msgs.append(lock(1, plane, iy, ix, np.array([x[ix], y[iy], gap])))
            index += 1
    planes = [np.stack(np.broadcast_arrays(x[None, :], y[:, None], gap), -1) for gap in m["deer_gaps"]]
    planes += [np.stack(np.broadcast_arrays(x[None, :], s["y"], np.asarray(s["gaps"])[:, None]), -1)
               for s in m["sections"]]
    for plane, tip in enumerate(planes):
        n_rf, n_ref = deer_counts(true_signal(config, tip), m["deer_shots"], rng)
        for iy, ix in _serpentine(*tip.shape[:2]):
            if (2, plane, iy, ix) not in skip:
                msgs.append(lock(2, plane, iy, ix, tip[iy, ix]))
                msgs.append(Deer(run_id="r", seq=0, index=index, scan=2, plane=plane, ix=ix, iy=iy, position=tip[iy, ix],
                                 f_rf_hz=f_rf, tau_s=m["tau_s"], shots=m["deer_shots"], n_rf=int(n_rf[iy, ix]),
                                 n_ref=int(n_ref[iy, ix])))
            index += 1
    msgs = msgs[:stop_after]
    return [type(msg)(**{**msg.__dict__, "seq": i + 1}) for i, msg in enumerate(msgs)]


def store_run(path, config: dict, msgs: list, run_id: str = "r") -> RunStore:
    """A run file holding `msgs` (as the daemon stores them), open."""
    start = RunStart(run_id=run_id, seq=0, run_kind="mri", config=config, n_pixels=0, grid_shape=np.array([0, 0]))
    store = RunStore.create(run_path(path, run_id), start)
    store.add(start)
    for msg in msgs:
        store.add(msg)
    store.flush()
    return store


@pytest.fixture
def stored(tmp_path):
    stores = []

    def make(config, msgs):
        stores.append(store_run(tmp_path, config, msgs))
        return stores[-1]
    yield make
    for s in stores:
        s.close()


def _maps(store: RunStore):
    return build_maps(read_lock(store.f), read_deer(store.f), json.loads(store.f.attrs["config"]))


def test_maps_place_serpentine_pixels_by_index_and_report_missing_and_lost(stored):
    config = mri_config(sections=({"y": 0.0, "gaps": [19e-9, 21e-9]},))
    lost = frozenset({(1, 1, 2, 3), (2, 0, 4, 4)})
    skip = frozenset({(1, 2, 6, 0), (2, 1, 1, 5)})
    msgs = synthetic_run(config, lost=lost, recovered=frozenset({(1, 0, 0, 8)}), skip=skip)
    maps = _maps(stored(config, msgs))
    g = config["mri"]
    assert maps.detuning.shape == (3, 7, 9) and maps.psf_tip.shape == (3, 7, 9, 3)
    # every measured pixel holds its own tip position's frequency, whatever the arrival order
    f0 = msgs[0].f_lock_hz
    expected = nv_resonance(maps.psf_tip, NV, TIP) - f0
    ok = np.isfinite(maps.detuning)
    assert ok.sum() == 3 * 63 - 2  # one lost, one missing
    assert np.max(np.abs(maps.detuning[ok] - expected[ok])) < 6 * F_SIGMA * np.sqrt(2)
    assert np.ptp(expected) > 100 * F_SIGMA  # the check could fail: the detuning varies over the stack
    assert np.allclose(maps.psf_tip[1, 2, 3], [g["x0"] + 3e-9, g["y0"] + 2e-9, 20e-9])
    # missing: NaN everywhere and counted; lost: NaN but its lock state kept, counted
    assert np.isnan(maps.lock_state[2, 6, 0]) and np.isnan(maps.detuning[2, 6, 0])
    assert maps.lock_state[1, 2, 3] == 2 and np.isnan(maps.detuning[1, 2, 3]) and np.isnan(maps.f_sigma[1, 2, 3])
    assert maps.lock_state[0, 0, 8] == 1 and np.isfinite(maps.detuning[0, 0, 8])
    assert maps.missing["psf"] == 1 and maps.lost["psf"] == 1 and maps.recovered["psf"] == 1
    assert np.nanmax(maps.f_sigma) == F_SIGMA
    # the DEER plane and the section: dip and sigma from the counts of that very pixel
    plane, section = maps.deer
    assert (plane.name, section.name) == ("plane_0", "section_0")
    assert plane.deer.shape == (7, 9) and section.deer.shape == (2, 9) and section.tip.shape == (2, 9, 3)
    assert np.allclose(section.tip[1, 5], [g["x0"] + 5e-9, 0.0, 21e-9])
    deer_rows = {(m.plane, m.iy, m.ix): m for m in msgs if isinstance(m, Deer)}
    r = deer_rows[(0, 3, 2)]
    assert plane.deer[3, 2] == pytest.approx(1 - r.n_rf / r.n_ref)
    assert plane.deer_sigma[3, 2] == pytest.approx(r.n_rf / r.n_ref * np.sqrt(1 / r.n_rf + 1 / r.n_ref))
    assert np.isnan(plane.deer[4, 4]) and plane.lock_state[4, 4] == 2 and np.isfinite(plane.n_rf[4, 4])
    assert np.isnan(section.deer[1, 5]) and np.isnan(section.lock_state[1, 5])
    assert maps.lost == {"psf": 1, "deer/plane_0": 1, "deer/section_0": 0}
    assert maps.missing == {"psf": 1, "deer/plane_0": 0, "deer/section_0": 1}
    text = " ".join(maps.notes)
    assert "psf: 1 pixels never measured" in text and "deer/plane_0: 1 pixels lost their lock" in text
    # scalars of the localization's input
    s = maps.scalars
    assert s["b0"] == pytest.approx(bias_from_nv_frequency(f0)) and abs(s["b0"] - 0.30) < 1e-5
    assert s["f_rf"] == r.f_rf_hz and s["tau"] == 2e-6 and s["t_pi_rf"] == 150e-9
    assert s["depth"] == 10e-9 and s["t2star_dark"] == 150e-9


def test_the_deer_map_shows_the_spin_where_the_simulator_put_its_slice(stored):
    config = mri_config(nx=15, ny=15)
    maps = _maps(stored(config, synthetic_run(config)))
    d = maps.deer[0]
    assert np.all(np.isfinite(d.deer)) and np.all(d.deer_sigma > 0)
    expected = 1.0 - count_ratio(true_signal(config, d.tip))  # the dip the counts' means give
    assert expected.max() > 5 * np.median(d.deer_sigma)  # the slice crosses the plane, above the noise
    assert np.std((d.deer - expected) / d.deer_sigma) == pytest.approx(1.0, abs=0.15)


def test_a_stopped_run_gives_nan_for_every_pixel_never_measured(stored):
    config = mri_config()
    msgs = synthetic_run(config, stop_after=1 + 63 + 20)  # the first PSF plane and 20 pixels of the second
    maps = _maps(stored(config, msgs))
    assert np.isfinite(maps.detuning[0]).all() and np.isfinite(maps.detuning[1]).sum() == 20
    assert np.isnan(maps.detuning[2]).all() and np.isnan(maps.deer[0].deer).all()
    assert maps.missing == {"psf": 63 - 20 + 63, "deer/plane_0": 63}
    assert np.isnan(maps.scalars["f_rf"])  # no DEER row: no RF frequency


def test_deer_dip_error_matches_the_scatter_of_poisson_counts():
    rng = np.random.default_rng(3)
    n_rf, n_ref = rng.poisson(4000, 20000), rng.poisson(5000, 20000)
    dip, sigma = deer_dip(n_rf, n_ref)
    assert np.std(dip) == pytest.approx(np.median(sigma), rel=0.03)
    assert np.mean(dip) == pytest.approx(0.2, abs=2e-3)
    assert np.isnan(deer_dip(np.array([3]), np.array([0]))[0][0])


@pytest.mark.parametrize("change, message", [
    (lambda c, m: c.pop("mri"), "no [mri] table"),
    (lambda c, m: c["mri"].pop("step"), "config.mri: no 'step'"),
    (lambda c, m: m.pop(0), "no tip-retracted reference"),
])
def test_what_gives_no_maps_is_one_line(stored, change, message):
    config = mri_config(nx=3, ny=3)
    msgs = synthetic_run(config)
    change(config, msgs)
    store = stored(config, msgs)
    with pytest.raises(MriMapError, match=message.replace("[", r"\[").replace("]", r"\]")) as exc:
        _maps(store)
    assert "\n" not in str(exc.value)


def test_a_lost_retracted_reference_gives_no_detuning(stored):
    config = mri_config(nx=3, ny=3)
    msgs = synthetic_run(config)
    msgs[0] = Lock(**{**msgs[0].__dict__, "state": 2, "f_sigma_hz": float("inf")})
    with pytest.raises(MriMapError, match="retracted reference lost its lock"):
        _maps(stored(config, msgs))
