"""rt.mri: the NV-MRI plan on the simulated instrument (no sockets): every pixel locked at the line of
the full Hamiltonian within a few of its reported sigmas, sigma matching the scatter, DEER after the
lock at every DEER pixel, a 30 MHz jump recovered within one pixel, what feedforward off costs on a
steep raster, refusals of a tip driven into the surface or out of the scanner's travel, and the run
through the rig's run loop (docs/physics.md section 2.4)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from nvscope.firmware_sim import SimScanner
from nvscope.firmware_sim.nv_center import nv_resonance
from nvscope.proto.messages import Deer, Lock, RunEnd, RunStart, Start
from nvscope.rt.config import ConfigError, MriConfig, RigConfig, from_dict
from nvscope.rt.devices import DEFAULT_SIM, compose_devices
from nvscope.rt.hal import ScannerConstraints
from nvscope.rt.kernels.spin_constants import dark_rf_frequency
from nvscope.rt.mri import DEER, LOCKED, LOST, PSF, RECOVERED, RETRACTED, MriPlan, mri_path
from nvscope.rt.rig import Rig
from nvscope.rt.spool import Spool
from nvscope.rt.state import RunState

NM = 1e-9
SMALL = {"nx": 7, "ny": 5, "x0": -3 * NM, "y0": -2 * NM, "step": NM, "psf_gaps": [18 * NM, 20 * NM],
         "deer_gaps": [20 * NM], "deer_shots": 200_000}


def config(seed: int = 4, **mri) -> RigConfig:
    return from_dict(RigConfig, {"seed": seed, "sim": DEFAULT_SIM, "mri": {**SMALL, **mri}}, "rig")


def truth(m: Lock, devices) -> float:
    """The NV line (Hz) at the message's tip position, by the simulator's diagonalization."""
    return float(nv_resonance(m.position)) + devices.pulser.sample.line_offset_hz


def run_plan(cfg: RigConfig, devices=None, before=None) -> tuple[MriPlan, list, object]:
    devices = devices or compose_devices(cfg, sim=True)
    plan = MriPlan("r", cfg.mri, devices, cfg.coherence.timing)
    sent = []
    while plan.ready:
        if before is not None:
            before(plan, devices)
        sent += plan.step(len(sent) + 1)
    return plan, sent, devices


def test_every_pixel_locks_on_the_line_with_a_sigma_that_matches_the_scatter():
    plan, sent, devices = run_plan(config(seed=5))
    locks = [m for m in sent if isinstance(m, Lock)]
    assert len(locks) == len(mri_path(config().mri)) == 1 + 3 * 35
    assert [m.index for m in locks] == list(range(len(locks)))
    assert {m.state for m in locks} == {LOCKED}, plan.stats
    z = np.array([(m.f_lock_hz - truth(m, devices)) / m.f_sigma_hz for m in locks])
    assert np.abs(z).max() < 5
    assert 0.75 < z.std() < 1.3  # the reported sigma is the shot-noise scatter (106 pixels: +-7 %)
    sig = np.array([m.f_sigma_hz for m in locks])
    assert 2e5 < np.median(sig) < 1e6  # ~0.5 MHz from ~7500 photons at 0.027 / MHz
    assert locks[0].scan == RETRACTED and locks[0].position[2] == 2e-6
    assert [m.scan for m in locks[1:71]] == [PSF] * 70 and [m.scan for m in locks[71:]] == [DEER] * 35
    # each DEER pixel: its lock, then its deer with the same index and the next seq
    for k, m in enumerate(sent):
        if isinstance(m, Deer):
            before = sent[k - 1]
            assert isinstance(before, Lock) and (before.index, before.seq + 1) == (m.index, m.seq)
            assert m.f_rf_hz == pytest.approx(dark_rf_frequency(locks[0].f_lock_hz, config().mri.rf_offset_hz))
            assert m.shots == 200_000 and m.tau_s == 2e-6
            assert abs(m.n_rf - m.n_ref) < 0.2 * m.n_ref  # both ~6000 photons (0.03 per shot)
    assert [m.seq for m in sent] == list(range(1, len(sent) + 1))
    assert devices.rf.output_on and devices.rf.frequency_hz == pytest.approx(sent[-1].f_rf_hz)


def test_a_30_mhz_jump_between_two_pixels_is_recovered_within_one_pixel():
    jump_at = 20  # the 20th PSF pixel, mid-line

    def jump(plan, devices):
        if plan.next == jump_at:
            devices.pulser.sample.line_offset_hz = 30e6

    plan, sent, devices = run_plan(config(psf_gaps=[20 * NM], deer_gaps=[]), before=jump)
    locks = {m.index: m for m in sent}
    assert locks[jump_at - 1].state == LOCKED
    hit = locks[jump_at]
    assert hit.state == RECOVERED  # detected and recovered at the very pixel of the jump
    assert abs(hit.f_lock_hz - truth(hit, devices)) < 5 * hit.f_sigma_hz
    assert locks[jump_at + 1].state == LOCKED
    assert all(m.state != LOST for m in sent)
    assert abs(locks[jump_at + 1].f_lock_hz - truth(locks[jump_at + 1], devices)) < 5 * locks[jump_at + 1].f_sigma_hz


def test_feedforward_off_costs_recoveries_and_lost_pixels_on_a_steep_raster():
    # 10 nm gap, 1 nm pixels over x in [0, 20] nm: the line moves up to ~32 MHz per pixel (8 HWHM)
    steep = dict(nx=21, ny=3, x0=0.0, y0=-NM, psf_gaps=[10 * NM], deer_gaps=[])
    stats = {}
    for ff in (True, False):
        for serpentine in (True, False):
            cfg = config(serpentine=serpentine, lock={"feedforward": ff, "search_hi_hz": 6.7e9}, **steep)
            stats[ff, serpentine] = run_plan(cfg)[0].stats
    for serpentine in (True, False):
        assert stats[True, serpentine]["recoveries"] == 0 and stats[True, serpentine]["lost"] == 0
    # off: most pixels start beyond the dip and need a recovery sweep; the raster's fly-back (~300 MHz)
    # lies beyond the +-5 linewidths a recovery covers, so pixels are lost
    assert stats[False, True]["recoveries"] > 30
    assert stats[False, False]["lost"] > 10


def test_a_tip_driven_into_the_surface_is_refused_at_load_and_at_run_start():
    for field, value, where in (("psf_gaps", [0.0, 2 * NM], "rig.mri.psf_gaps[0]"),
                                ("deer_gaps", [-NM], "rig.mri.deer_gaps[0]"),
                                ("sections", [{"y": 0.0, "gaps": [20 * NM, 0.0]}], "rig.mri.sections[0].gaps[1]")):
        with pytest.raises(ConfigError, match="^" + re.escape(f"{where}: must be > 0 m")):
            config(**{field: value})
    with pytest.raises(ConfigError, match="evenly spaced"):
        config(psf_gaps=[10 * NM, 12 * NM, 15 * NM])
    with pytest.raises(ConfigError, match="increasing"):
        config(psf_gaps=[12 * NM, 10 * NM])
    cfg = config()
    devices = compose_devices(cfg, sim=True)
    moves = devices.scanner.moves
    bad = dataclasses.replace(cfg.mri, deer_gaps=(20 * NM, 0.0))  # built past the config's check
    with pytest.raises(ValueError, match=r"^mri: tip position 106 at gap 0 m would be driven into the surface "
                                         r"\(every gap must be > 0 m\) \(set by mri.deer_gaps\[1\]\)$"):
        MriPlan("r", bad, devices)
    assert devices.scanner.moves == moves


def test_positions_outside_the_scanners_travel_are_refused_before_anything_moves():
    cfg = config()
    devices = compose_devices(cfg, sim=True)
    devices.scanner = SimScanner(ScannerConstraints((-2.5e-9, 50e-6), (-50e-6, 50e-6), (-10e-6, 10e-6)))
    with pytest.raises(ValueError, match=r"^mri: tip position 1 \(-3e-09, -2e-09, 1.8e-08\) m is outside the "
                                         r"scanner's travel in x \[-2.5e-09, 5e-05\] m \(15 positions; set by mri.x0, mri.nx, "
                                         r"mri.step\)$"):
        MriPlan("r", cfg.mri, devices)
    assert devices.scanner.moves == 0


class Link:
    """Every message is taken at once; no host commands."""

    def __init__(self, directory: Path):
        self.sent = []
        self.spool = Spool(directory / "journal", 100)  # nothing is put: every message is taken at once

    def send(self, msg, serve) -> None:
        self.sent.append(msg)

    def poll(self, timeout_ms: int) -> list:
        return []

    def heartbeat(self, run_id: str, state: str, *progress) -> None:
        pass


def rig_run(tmp_path: Path, cfg: RigConfig, devices=None) -> list:
    link = Link(tmp_path)
    rig = Rig(cfg, devices or compose_devices(cfg, sim=True), link)
    rig._run(rig._apply(Start(run_id="m1", seq=1, run_kind="mri")))
    assert rig.state is RunState.IDLE
    return link.sent


def test_an_mri_run_through_the_rig_sends_run_start_locks_deers_and_run_end(tmp_path):
    cfg = config(nx=3, ny=2, psf_gaps=[18 * NM, 20 * NM], deer_gaps=[20 * NM],
                 sections=[{"y": 0.0, "gaps": [19 * NM, 21 * NM]}])
    sent = rig_run(tmp_path, cfg)
    start, end = sent[0], sent[-1]
    n = 1 + 2 * 6 + 6 + 2 * 3
    assert isinstance(start, RunStart) and start.run_kind == "mri" and start.n_pixels == n
    assert start.grid_shape.tolist() == [2, 3]
    assert start.config["mri"]["psf_gaps"] == (18 * NM, 20 * NM)
    t = start.config["sim_truth"]
    assert t["nv_depth_m"] == 10e-9 and t["b0_t"] == 0.30 and np.shape(t["dark_spins_m"]) == (1, 3)
    assert isinstance(end, RunEnd) and (end.exit_status, end.n_pixels) == ("completed", n)
    locks = [m for m in sent if isinstance(m, Lock)]
    deers = [m for m in sent if isinstance(m, Deer)]
    assert len(locks) == n and len(deers) == 12 and {m.state for m in locks} == {LOCKED}
    sec = [m for m in locks if m.scan == DEER and m.plane == 1]
    assert [(m.ix, m.iy) for m in sec] == [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (0, 1)]
    np.testing.assert_allclose([m.position[2] for m in sec], [19 * NM] * 3 + [21 * NM] * 3)
    assert [m.seq for m in sent] == list(range(len(sent)))


def test_a_run_refused_at_start_fails_with_one_line_and_moves_nothing(tmp_path):
    cfg = config()
    devices = compose_devices(cfg, sim=True)
    devices.scanner = SimScanner(ScannerConstraints((-50e-6, 50e-6), (-50e-6, 50e-6), (-10e-6, 1e-6)))
    devices.tagger.scanner = devices.scanner
    sent = rig_run(tmp_path, cfg, devices)
    assert [type(m) for m in sent] == [RunStart, RunEnd]
    assert sent[-1].exit_status == "failed" and "outside the scanner's travel in z" in sent[-1].reason
    assert devices.scanner.moves == 0


def test_the_default_mri_config_is_a_small_fast_scan():
    m = MriConfig()
    assert (m.nx, m.ny, m.step) == (21, 21, 1e-9) and len(mri_path(m)) == 1 + 5 * 441
    assert RigConfig().mri == m


def _rig_config(tmp_path: Path, text: str) -> RigConfig:
    from nvscope.rt.config import load_rig_config

    path = tmp_path / "rig.toml"
    path.write_text(text)
    return load_rig_config(path)


@pytest.mark.parametrize("text, line", [
    ("[mri]\nretract_z = 20e-6\n", r"^mri: tip position 0 \(0, 0, 2e-05\) m is outside the scanner's travel in z "
                                    r"\[-1e-05, 1e-05\] m \(1 positions; set by mri.retract_z\)$"),
    ("[[mri.sections]]\ny = 60e-6\ngaps = [2e-8]\n", r"set by mri.sections\[0\].y\)$"),
    ("[mri.lock]\nfwhm_hz = 200e6\nsearch_hi_hz = 7e9\n", r"^mri.lock.fwhm_hz: the dither of 5.774e\+07 Hz"),
    ("[mri.lock]\nsearch_lo_hz = 1e6\nsearch_hi_hz = 1.5e9\n", r"^mri.lock.search_lo_hz: the search range .* leave the "
                                                             r"microwave's range \[9000, 2e\+10\] Hz$"),
])
def test_an_mri_scan_the_rig_cannot_run_is_refused_when_its_file_loads(tmp_path, text, line):
    cfg = _rig_config(tmp_path, text)  # valid on its own: only the devices can refuse it
    with pytest.raises(ConfigError, match=line):
        compose_devices(cfg, sim=True)


@pytest.mark.parametrize("text, line", [
    ("[sim.mri]\nb0_t = 0.0\n", r"^sim.mri: b0_t must be a bias along the NV axis above the level anticrossing"),
    ("[sim.mri]\nb0_t = 0.09\n", r"^sim.mri: b0_t must be .* got 0.09$"),
    ("[sim.mri]\ndark_spins = [[0.0, 0.0, 5e-9]]\n", r"^sim.mri: dark_spins\[0\] at z = 5e-09 m lies above the "
                                                     r"diamond surface"),
    ("[sim.mri]\ndark_spins = [[0.0, 0.0, 30e-9]]\n", r"above the diamond surface"),  # where the tip would be
    ("[sim.mri]\ndark_spins = [[0.0, 0.0, -10e-9]]\n", r"^sim.mri: dark_spins\[0\] .* sits on the NV"),
    ("[sim.mri]\nnv_depth_m = -1e-9\n", r"^sim.mri: nv_depth_m must be > 0 m"),
    ("[sim.mri.layer]\ndensity_per_m2 = 1e17\nheight_m = 3e-9\n", r"^sim.mri.layer: height_m must be <= 0 m"),
])
def test_a_sim_mri_sample_that_cannot_be_is_refused_in_one_line(tmp_path, text, line):
    cfg = _rig_config(tmp_path, text)
    with pytest.raises(ConfigError, match=line):
        compose_devices(cfg, sim=True)


def test_a_bias_near_the_anticrossing_is_warned_about_at_load_and_at_run_start(tmp_path, caplog):
    from nvscope.firmware_sim.mri_sample import B_ANTICROSSING_T
    from nvscope.rt.mri import anticrossing_warning

    assert B_ANTICROSSING_T == pytest.approx(0.10239, abs=1e-5)  # D / gamma_NV
    cfg = _rig_config(tmp_path, "[sim.mri]\nb0_t = 0.1024\n")
    with caplog.at_level("WARNING"):
        compose_devices(cfg, sim=True)
    assert "within 50 mT of the ground-state level anticrossing" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        compose_devices(_rig_config(tmp_path, "[sim.mri]\nb0_t = 0.30\n"), sim=True)
    assert "anticrossing" not in caplog.text
    # the rig's own check, from the retracted line: |gamma B0 - D| = f puts B0 f / gamma from it
    assert anticrossing_warning(5.539e9) is None and anticrossing_warning(1.5e9) is None
    assert "1.0 mT from the ground-state level anticrossing" in anticrossing_warning(28.03e6)


def test_a_gate_too_short_to_count_a_photon_fails_the_run_at_its_start_naming_gate_s(tmp_path):
    cfg = config(lock={"gate_s": 1e-12})
    devices = compose_devices(cfg, sim=True)
    sent = rig_run(tmp_path, cfg, devices)
    assert [type(m) for m in sent] == [RunStart, RunEnd] and sent[-1].exit_status == "failed"
    assert "mri.lock.gate_s = 1e-12 s" in sent[-1].reason and "\n" not in sent[-1].reason


def test_a_search_range_that_misses_the_line_fails_the_run_at_its_start_naming_the_range(tmp_path):
    cfg = config(lock={"search_lo_hz": 6.0e9, "search_hi_hz": 6.4e9})
    sent = rig_run(tmp_path, cfg)
    assert [type(m) for m in sent] == [RunStart, RunEnd] and sent[-1].exit_status == "failed"
    assert "no ODMR line found with the tip retracted in mri.lock.search_lo_hz" in sent[-1].reason


def test_a_planes_second_line_without_a_plane_before_starts_from_a_local_sweep_not_a_search():
    """docs/physics.md section 2.4: a lock starts from its prediction; with one point to go on (the line
    before, no plane before) a sweep of +-5 linewidths around it, not the whole search range (451 points)."""
    cfg = config()
    devices = compose_devices(cfg, sim=True)
    lo = cfg.mri.lock.search_lo_hz
    set_frequency, searches = devices.microwave.set_frequency, []

    def counting(f: float) -> None:
        if f == lo:  # the first frequency of a sweep over the search range
            searches.append(f)
        set_frequency(f)

    devices.microwave.set_frequency = counting
    plan, sent, _ = run_plan(cfg, devices)
    # the retracted reference and the first pixel of each plane (2 PSF, 1 DEER) search; nothing else
    assert len(searches) == 4, plan.stats
    assert {m.state for m in sent if isinstance(m, Lock)} == {LOCKED}
