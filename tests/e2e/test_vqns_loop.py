"""The adaptive VQNS loop in closed loop: a rig process with a simulated qubit, the host asking for
echo and CPMG-2 at the times the rig's pulses can play, fitting, proposing, requesting, stopping by
its rule (the run ends `completed`); everything lands in the run's file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from nvscope.host.daemon import HostDaemon
from nvscope.host.demo import summarize_vqns
from nvscope.host.srm.online_g2 import MleEstimator
from nvscope.host.run_kinds import host_analyses
from nvscope.host.vqns import figures as loop_figures
from nvscope.host.vqns.loop import VqnsController, VqnsLoopConfig, vqns_results
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.fit import FitConfig
from nvscope.proto.messages import Coherence, MeasureCoherence, RunStart, Stop
from nvscope.rt.kernels.pulses import ShotTiming, sequence_name, shortest_time

RIG_TOML = """\
seed = 9
[link]
spool_dir = "{spool}"
[coherence]
repetitions = 10_000_000
[[sim.noise]]
kind = "lorentzian"
a = 6e10
w0 = 0.0
g = 1.2566e6
"""


def test_adaptive_loop_ends_completed_by_its_rule_and_stores_everything(tmp_path):
    cfg_path = tmp_path / "rig.toml"
    cfg_path.write_text(RIG_TOML.format(spool=(tmp_path / "spool").as_posix()))
    rig = subprocess.Popen([sys.executable, "-m", "nvscope.rt.rig_main", "--sim", "--bind", "tcp://127.0.0.1:*",
                            "--config", str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint = rig.stdout.readline().split()[1]
    host = HostDaemon(endpoint, tmp_path / "data", host_analyses(MleEstimator()))
    # the information threshold is high: once min_curves are in, no candidate is worth its time
    loop_cfg = VqnsLoopConfig(points=20, max_curves=5, min_curves=3, min_information_rate=1.0,
                              candidates=(1, 2, 4, 8, 64), fit=FitConfig(restarts=20, seed=1))
    ctl = VqnsController(host, "vqns-test", loop_cfg)
    host.analyses["vqns"] = ctl.analysis
    try:
        host.start_run("vqns-test", "vqns", ctl.run_attributes())
        ctl.begin()  # the first requests wait for run_start (the rig's pulse timing)
        deadline = time.monotonic() + 120
        live = []  # the loop's steps as a reader sees them in the file while the run goes
        while not host.stats.finished and time.monotonic() < deadline:
            host.step(100)
            if not live and ctl.steps:
                with h5py.File(tmp_path / "data" / "vqns-test.h5", "r", libver="latest", swmr=True) as f:
                    if f.attrs["exit_status"] == "running" and f["vqns_live/n_curves"].shape[0]:
                        live = [f["vqns_live/n_curves"][0], f["vqns_live/S_fit"][0], f["vqns_live/ranked"][0]]
    finally:
        ctl.close()
        host.close()
        rig.send_signal(signal.SIGTERM)
        assert rig.wait(timeout=20) == 0
    assert host.stats.finished == [("vqns-test", "completed")]
    assert "no candidate is worth its time" in ctl.stop_reason
    timing = ShotTiming()  # the rig's config has no [coherence.timing]: its defaults, a real NV's pulses
    assert ctl.timing == timing and ctl.timing_source == "the run's config"
    with h5py.File(tmp_path / "data" / "vqns-test.h5", "r") as f:
        n = f["coherence/n_pulses"][()].tolist()
        assert n[:2] == [1, 2] and len(n) == 3 and n[2] in (1, 2, 4, 8, 64)
        assert n[2] == ctl.steps[0].proposal.ranked[0]  # what was measured is what was proposed
        t, c = f["coherence/t"][()], f["coherence/coherence"][()]
        for k, row in zip(n, t):  # only the times the pulses can play were requested, and played
            played = row[np.isfinite(row)]
            np.testing.assert_array_equal(played, loop_cfg.times[loop_cfg.times >= shortest_time(k, timing)])
        assert np.isfinite(c[0, :20]).all()
        assert np.allclose(f["coherence/pi_s"][()], timing.pi_s)
        assert json.loads(f.attrs["vqns_readout"]) == {"repetitions": 10_000_000, "dark_fraction": 0.33}  # the rig's
        assert f["vqns/steps/n_curves"][()].tolist() == [2, 3]
        assert f["vqns_live/n_curves"][()].tolist() == [2, 3]  # each step was in the file as it happened
        assert live and live[0] == 2, "the first step was not readable while the run went"
        np.testing.assert_array_equal(live[1][np.isfinite(live[1])], f["vqns/steps/0/S_fit"][()])
        np.testing.assert_array_equal(live[2][np.isfinite(live[2])], f["vqns/steps/0/ranked"][()])
        assert f["vqns/steps/information_rate"][-1] < 1.0
        s_lo, s_hi = f["vqns/S_lo"][()], f["vqns/S_hi"][()]
        assert (s_lo <= s_hi).all() and "vqns/S_fit" in f
        # the band is recorded on the loop's fixed frequency range at every step
        np.testing.assert_allclose(f["vqns/omega"][[0, -1]], loop_cfg.omega_range(timing))
        np.testing.assert_array_equal(f["vqns/steps/0/omega"][()], f["vqns/steps/1/omega"][()])
        assert "bootstrap" in f.attrs["band_method"] and "information" in f.attrs["proposal_rule"]
        assert f.attrs["exit_status"] == "completed"
        assert json.loads(f.attrs["vqns_loop_config"])["max_curves"] == 5  # the loop's settings and rule
        assert "nats/s" in f.attrs["vqns_stopping_rule"]
        assert json.loads(f.attrs["sequence_names"])[:2] == ["echo", "CPMG-2"]
        assert f.attrs["vqns_fits"].startswith("2 fits of 3 curves")
        assert "spectrum_estimate" in f.attrs and int(f.attrs["lorentzians_chosen"]) >= 1
    assert (tmp_path / "data" / "vqns-test.png").exists()
    text = summarize_vqns(tmp_path / "data" / "vqns-test.h5", ctl)  # the demo's text names them the same way
    assert f"measured echo, CPMG-2, {sequence_name(n[2])};" in text and "2 fits of 3 curves" in text
    assert "completed: no candidate is worth its time" in text


class FakeHost:
    """What the controller needs of a HostDaemon: observers and a thread-safe `command`."""

    def __init__(self):
        self.observers, self.sent, self.lock = [], [], threading.Lock()

    def command(self, cls, run_id, **fields):
        with self.lock:
            self.sent.append((cls, fields, threading.current_thread().name))


def _curve(n: int, t: np.ndarray, seq: int) -> Coherence:
    """A noiseless-enough CPMG-n curve of one Lorentzian bath (closed form), sigma 0.01."""
    c = np.exp(-attenuation(6e10, 0.0, 1.2566e6, t, n))
    return Coherence(run_id="vqns-unit", seq=seq, n_pulses=n, t=t, coherence=c, sigma=np.full(t.size, 0.01),
                     repetitions=1)


def _run_start(timing: dict | None) -> RunStart:
    """The run's run_start as the rig sends it: its config's coherence table (no timing when None)."""
    table = {"repetitions": 1000, "dark_fraction": 0.5, **({} if timing is None else {"timing": timing})}
    return RunStart(run_id="vqns-unit", seq=0, run_kind="vqns", config={"coherence": table})


def test_controller_fits_on_its_own_thread_and_the_analysis_waits_for_it():
    """The observer call only queues (the daemon's I/O thread is not held by the fit); the worker
    fits, then requests the next curve from its own thread; the analysis waits for a fit in flight."""
    host = FakeHost()
    cfg = VqnsLoopConfig(points=16, max_curves=3, min_curves=3, min_information_rate=0.0, candidates=(2, 4),
                         fit=FitConfig(restarts=10, seed=1))
    ctl = VqnsController(host, "vqns-unit", cfg)
    try:
        ctl.begin()
        assert host.sent == []  # the first curves wait for the run's pulse timing (its run_start)
        host.observers[0](_run_start({"pi_s": 40e-9, "pi_half_s": 20e-9}))
        assert [(c, f["n_pulses"]) for c, f, _ in host.sent] == [(MeasureCoherence, 1), (MeasureCoherence, 2)]
        assert ctl.repetitions == 1000 and ctl.dark_fraction == 0.5 and ctl.timing.pi_s == 40e-9
        calls = []
        for seq, n in enumerate((1, 2), start=1):
            t0 = time.perf_counter()
            host.observers[0](_curve(n, host.sent[seq - 1][1]["t"], seq))
            calls.append(time.perf_counter() - t0)
        assert max(calls) < 0.05  # a fit takes seconds; queuing takes microseconds
        assert ctl.wait_idle(120)
        assert len(ctl.steps) == 1 and ctl.steps[0].n_curves == 2
        cls, fields, thread = host.sent[2]
        assert cls is MeasureCoherence and fields["n_pulses"] in (2, 4) and thread == "vqns-vqns-unit"
        host.observers[0](_curve(int(fields["n_pulses"]), fields["t"], 3))
        results, attrs = ctl.analysis(_NoFile())  # waits for the third fit, then fails on the missing file
    except _NoFileError:
        pass
    finally:
        ctl.close()
    assert len(ctl.steps) == 2 and ctl.steps[1].n_curves == 3  # the fit in flight was waited for
    # the run had ended (its analysis began): the last fit neither requests nor stops anything
    assert len(host.sent) == 3 and not any(c is Stop for c, _, _ in host.sent) and ctl.stop_reason == ""
    assert not ctl._thread.is_alive() and host.observers == []
    # the band of every step lies on the loop's fixed frequency range, not the fit's moving one
    np.testing.assert_array_equal(ctl.steps[0].omega, ctl.steps[1].omega)
    np.testing.assert_allclose(ctl.steps[0].omega[[0, -1]], cfg.omega_range(ctl.timing))
    assert ctl.steps[0].fit.omega_range != ctl.steps[1].fit.omega_range  # (which did move)


def test_only_playable_times_are_requested_and_the_loop_stops_completed_when_nothing_is_worth_it(tmp_path,
                                                                                                  monkeypatch):
    """Long pi pulses (1 us): CPMG-16 cannot play the short times (the first pass asked for CPMG-n down
    to 0.1 us whatever n); the stop by the information rule says `completed=True`; a config without
    timing falls back to ShotTiming() and says so."""
    host = FakeHost()
    cfg = VqnsLoopConfig(points=16, max_curves=6, min_curves=2, min_information_rate=1e9, first=(1, 16),
                         candidates=(1, 2, 4, 16), fit=FitConfig(restarts=10, seed=1))
    ctl = VqnsController(host, "vqns-unit", cfg)
    timing = ShotTiming(pi_s=1e-6, pi_half_s=0.5e-6, lead_s=1e-6)
    try:
        host.observers[0](_run_start({"pi_s": 1e-6, "pi_half_s": 0.5e-6, "lead_s": 1e-6}))
        ctl.begin()  # run_start came first: the requests go at once
        (_, echo, _), (_, cpmg, _) = host.sent
        assert cpmg["n_pulses"] == 16 and cpmg["t"].min() >= shortest_time(16, timing) > cfg.t_min
        assert len(cpmg["t"]) < len(echo["t"]) and echo["t"].min() >= shortest_time(1, timing)
        for seq, (_, fields, _) in enumerate(host.sent[:2], start=1):
            host.observers[0](_curve(int(fields["n_pulses"]), fields["t"], seq))
        assert ctl.wait_idle(120)
    finally:
        ctl.close()
    cls, fields, _ = host.sent[-1]
    assert cls is Stop and fields["completed"] is True and "no candidate is worth its time" in fields["reason"]
    # and the proposal never counted a time the pulses cannot play
    p = ctl.steps[0].proposal
    for n, pts in zip(p.candidates, p.points):
        assert pts == (cfg.times >= shortest_time(int(n), timing)).sum()
    # the figure's legend names the curves as the file does (sequence_name)
    curves = {"n_pulses": np.array([f["n_pulses"] for _, f, _ in host.sent[:2]])}
    width = max(len(f["t"]) for _, f, _ in host.sent[:2])
    for name in ("t", "coherence", "sigma"):
        curves[name] = np.full((2, width), np.nan)
    for i, (_, f, _) in enumerate(host.sent[:2]):
        c = _curve(int(f["n_pulses"]), f["t"], i)
        curves["t"][i, : len(f["t"])], curves["coherence"][i, : len(f["t"])] = c.t, c.coherence
        curves["sigma"][i, : len(f["t"])] = c.sigma
    figures = []
    monkeypatch.setattr(loop_figures.plt, "close", figures.append)
    _, attrs = vqns_results(ctl.steps, curves, {}, tmp_path / "v.png")
    legend = [t.get_text() for t in figures[0].axes[1].get_legend().get_texts()]
    assert legend == json.loads(attrs["sequence_names"]) == ["echo", "CPMG-16"]
    ctl2 = VqnsController(FakeHost(), "vqns-unit", cfg)
    try:
        ctl2.host.observers[0](_run_start(None))
    finally:
        ctl2.close()
    assert ctl2.timing == ShotTiming() and "defaults" in ctl2.timing_source


class _NoFileError(Exception):
    pass


class _NoFile:
    """A store whose file the analysis reaches only after waiting for the fit."""

    @property
    def f(self):
        raise _NoFileError
