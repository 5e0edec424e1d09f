"""A host that reconnects in the middle of a VQNS run adopts it: the loop is rebuilt from the curves in
the run's file and the settings it records, fitted once, and goes on (or stops) by the stopping rule;
curves the dead host requested are data when they come."""

from __future__ import annotations

import dataclasses
import json
import threading
import typing

import h5py
import numpy as np
import pytest

from nvscope.host.store import RunStore
from nvscope.host.vqns.loop import VqnsController, VqnsLoopConfig, loop_config_from_json
from nvscope.host.vqns.loop import loop_analysis
from nvscope.models.vqns.attenuation import attenuation
from nvscope.models.vqns.data import coherence_set
from nvscope.models.vqns.fit import FitConfig
from nvscope.models.vqns.proposal import feasible_times
from nvscope.proto.messages import Coherence, MeasureCoherence, RunEnd, RunStart, Stop
from nvscope.rt.kernels.pulses import ShotTiming

RUN = "vqns-adopt"
CFG = VqnsLoopConfig(points=16, max_curves=5, min_curves=5, min_information_rate=0.0, candidates=(2, 4, 8),
                     fit=FitConfig(restarts=10, seed=1))
"""The dead host's settings (recorded in the file); they differ from the defaults everywhere that matters."""
TIMING = ShotTiming(pi_s=100e-9, pi_half_s=50e-9)
"""The rig's pulses (its config, recorded in the file): CPMG-8 plays from 1.2 us."""


class InlineProcesses:
    """The daemon's worker processes, in line, counting the jobs (a fit is one `analyse_curves` job)."""

    def __init__(self):
        self.jobs = []

    def run(self, fn, *args):
        self.jobs.append(fn.__name__)
        return fn(*args)


class FakeHost:
    """What the controller needs of a HostDaemon: observers, `processes` and a thread-safe `command`."""

    def __init__(self):
        self.observers, self.sent, self.lock = [], [], threading.Lock()
        self.processes = InlineProcesses()

    def command(self, cls, run_id, **fields):
        with self.lock:
            self.sent.append((cls, fields, threading.current_thread().name))


def curve(n: int, t: np.ndarray, seq: int, seed: int) -> Coherence:
    """A CPMG-n curve of one Lorentzian bath (closed form, Cywinski 2008 filter) with noise of sigma 0.01."""
    c = np.exp(-attenuation(6e10, 0.0, 1.2566e6, t, n))
    c = np.clip(c + 0.01 * np.random.default_rng(seed).standard_normal(t.size), -0.04, 1.04)
    return Coherence(run_id=RUN, seq=seq, n_pulses=n, t=t, coherence=c, sigma=np.full(t.size, 0.01), repetitions=1,
                     pi_s=TIMING.pi_s, pi_half_s=TIMING.pi_half_s)


def run_file(tmp_path, ns: tuple[int, ...], cfg: VqnsLoopConfig | None = CFG, kind: str = "vqns"):
    """A run file as the dead host left it: run_start (seq 1, the rig's config with its pulse timing),
    then the curves `ns` (seq 2, 3, ...), flushed; the loop's settings recorded as the host records
    them (none when `cfg` is None)."""
    attrs = {} if cfg is None else {"vqns_loop_config": json.dumps(dataclasses.asdict(cfg), sort_keys=True)}
    config = {"seed": 9, "coherence": {"repetitions": 10_000_000, "timing": dataclasses.asdict(TIMING)}}
    start = RunStart(run_id=RUN, seq=1, run_kind=kind, config=config)
    store = RunStore.create(tmp_path / f"{RUN}.h5", start, attrs)
    store.add(start)
    curves = [curve(n, feasible_times(n, (cfg or CFG).times, TIMING), seq, seed=seq) for seq, n in enumerate(ns, start=2)]
    for msg in curves:
        store.add(msg)
    store.flush()
    return store, curves


@pytest.fixture
def host():
    return FakeHost()


def adopt(host, store, cfg=VqnsLoopConfig()) -> VqnsController:
    ctl = VqnsController.adopt(host, RUN, store, cfg)
    assert ctl.wait_idle(120)
    return ctl


def test_adopt_fits_the_file_once_and_requests_the_next_curve(tmp_path, host):
    store, curves = run_file(tmp_path, (1, 2))
    ctl = adopt(host, store)  # default cfg given: the file's settings win
    try:
        assert ctl.cfg == CFG
        assert host.processes.jobs == ["loop_analysis"]  # exactly one fit, in the worker processes
        assert len(ctl.steps) == 1 and ctl.steps[0].n_curves == 2
        assert len(host.sent) == 1
        cls, fields, thread = host.sent[0]
        assert cls is MeasureCoherence and thread == f"vqns-{RUN}"
        assert fields["n_pulses"] in CFG.candidates
        assert ctl.timing == TIMING and ctl.timing_source == "the run's config"  # from the file's run_start
        np.testing.assert_array_equal(fields["t"], feasible_times(fields["n_pulses"], CFG.times, TIMING))
        assert ctl.pending == 1 and not ctl.done
        # the data are the file's curves, as the dead host had them
        assert ctl.data.n_pulses.tolist() == [1, 2]
        # what a host that never died would have proposed from these curves (its cold fit; same seed)
        first, second = curves
        data = coherence_set([1], first.t[None], first.coherence[None], first.sigma[None], pi_s=TIMING.pi_s)
        data = data.append(2, second.t, second.coherence, second.sigma, pi_s=TIMING.pi_s)
        np.testing.assert_array_equal(ctl.data.coherence, data.coherence)  # rows padded with NaN
        np.testing.assert_array_equal(ctl.data.pi_s, [TIMING.pi_s] * 2)
        plan = ctl.plan()
        expected = loop_analysis(data, CFG.fit, plan, None, plan.omega)
        assert fields["n_pulses"] == expected.proposal.ranked[0]
        np.testing.assert_allclose(ctl.steps[0].band[1], expected.band[1])
        assert ctl.run_attributes()["vqns_adopted"] == "2 curves from the file"
        assert json.loads(ctl.run_attributes()["vqns_loop_config"]) == json.loads(store.f.attrs["vqns_loop_config"])
    finally:
        ctl.close()
        store.close()
    assert host.observers == []


def test_adopt_stops_a_run_whose_file_meets_the_stopping_rule(tmp_path, host):
    cfg = VqnsLoopConfig(points=16, max_curves=3, min_curves=3, min_information_rate=0.0, candidates=(2, 4),
                         fit=FitConfig(restarts=10, seed=1))
    store, _ = run_file(tmp_path, (1, 2, 4), cfg)
    ctl = adopt(host, store)
    try:
        assert [c for c, _, _ in host.sent] == [Stop]  # stopped, nothing requested
        assert host.sent[0][1]["reason"] == ctl.stop_reason and "budget of 3 curves" in ctl.stop_reason
        assert ctl.done and ctl.pending == 0
        assert host.processes.jobs == ["loop_analysis"]  # fitted once (the results need it)
    finally:
        ctl.close()
        store.close()


def test_late_curves_of_the_dead_host_are_data_and_the_analysis_records_the_adoption(tmp_path, host):
    store, curves = run_file(tmp_path, (1, 2))
    ctl = adopt(host, store)
    try:
        (_, asked, _), = host.sent
        mine = int(asked["n_pulses"])
        deliver = _deliverer(ctl, store, host)
        deliver(curves[1])  # a replay of a curve already in the file (seq <= the file's) is not taken twice
        assert ctl.data.n_pulses.tolist() == [1, 2] and len(ctl.steps) == 1
        # the curve the dead host had requested (its own warm fit proposed another) arrives: data, no fit;
        # this host's request is still outstanding
        theirs = next(n for n in CFG.candidates if n != mine)
        deliver(curve(theirs, feasible_times(theirs, CFG.times, TIMING), seq=4, seed=4))
        assert ctl.data.n_pulses.tolist() == [1, 2, theirs] and len(ctl.steps) == 1
        assert ctl.pending == 1 and len(host.sent) == 1
        # this host's curve comes: fitted with all four, the next is requested
        deliver(curve(mine, asked["t"], seq=5, seed=5))
        assert [s.n_curves for s in ctl.steps] == [2, 4] and ctl.pending == 1
        cls, fields, _ = host.sent[-1]
        assert cls is MeasureCoherence and len(host.sent) == 2
        last = int(fields["n_pulses"])
        assert last in CFG.candidates  # (a sequence already measured may be measured again)
        deliver(curve(last, fields["t"], seq=6, seed=6))
        assert [s.n_curves for s in ctl.steps] == [2, 4, 5] and ctl.pending == 0
        assert host.sent[-1][0] is Stop and "budget of 5 curves" in ctl.stop_reason
        assert host.sent[-1][1]["completed"] is True  # a stop by the loop's rule ends the run completed
        end = RunEnd(run_id=RUN, seq=7, exit_status="completed", reason=ctl.stop_reason)
        store.add(end)
        host.observers[0](end)
        results, attrs = ctl.analysis(store)
        store.finalize(end, results, attrs)
    finally:
        ctl.close()
        store.close()
    with h5py.File(tmp_path / f"{RUN}.h5", "r") as f:
        assert f.attrs["vqns_adopted"] == "2 curves from the file"
        assert "vqns/steps begins at 2 curves" in f.attrs["vqns_adopted_not_restored"]
        assert f["vqns/steps/n_curves"][()].tolist() == [2, 4, 5]
        assert f["coherence/n_pulses"][()].tolist() == [1, 2, theirs, mine, last]
        assert f.attrs["exit_status"] == "completed" and "budget of 5" in f.attrs["stop_reason"]
        assert json.loads(f.attrs["vqns_loop_config"])["max_curves"] == 5
    assert (tmp_path / f"{RUN}.png").exists()


def test_a_late_curve_answering_this_hosts_request_counts_for_it(tmp_path, host):
    """The dead host's curve has the pulse number this host asked for: it is the answer (fit, next
    request); this host's own curve of that number, later, is data (no fit while the next is out;
    when the next request is that number again, a repeat, another number stands in for it)."""
    store, _ = run_file(tmp_path, (1, 2))
    ctl = adopt(host, store)
    try:
        mine = int(host.sent[0][1]["n_pulses"])
        deliver = _deliverer(ctl, store, host)
        t_mine = feasible_times(mine, CFG.times, TIMING)
        deliver(curve(mine, t_mine, seq=4, seed=4))
        assert [s.n_curves for s in ctl.steps] == [2, 3] and ctl.pending == 1 and len(host.sent) == 2
        asked = int(host.sent[1][1]["n_pulses"])
        late = mine if asked != mine else next(n for n in CFG.candidates if n != asked)
        deliver(curve(late, feasible_times(late, CFG.times, TIMING), seq=5, seed=5))
        assert [s.n_curves for s in ctl.steps] == [2, 3] and ctl.pending == 1 and len(host.sent) == 2
        assert ctl.data.n_pulses.tolist() == [1, 2, mine, late]
        deliver(curve(asked, host.sent[1][1]["t"], seq=6, seed=6))  # the answer, a repeat or not
        assert [s.n_curves for s in ctl.steps] == [2, 3, 5] and len(host.sent) == 3
    finally:
        ctl.close()
        store.close()


def _deliverer(ctl: VqnsController, store: RunStore, host: FakeHost):
    """deliver(msg): what the daemon does with a curve (store, flush, tell the observers), then wait for the fit."""
    def deliver(msg: Coherence) -> None:
        if msg.seq > store.last_seq:
            store.add(msg)
            store.flush()
        host.observers[0](msg)
        assert ctl.wait_idle(120)
        assert ctl.pending >= 0
    return deliver


def test_adopt_with_the_first_curves_not_all_in_requests_the_missing_ones(tmp_path, host):
    store, _ = run_file(tmp_path, (1,))
    ctl = adopt(host, store)
    try:
        assert host.processes.jobs == []  # the loop fits once echo and CPMG-2 are both in
        assert [(c, f["n_pulses"]) for c, f, _ in host.sent] == [(MeasureCoherence, 2)]
        assert ctl.pending == 1 and ctl.data.n_pulses.tolist() == [1]
    finally:
        ctl.close()
        store.close()


def test_a_file_without_recorded_settings_uses_the_given_ones_and_says_so(tmp_path, host):
    store, _ = run_file(tmp_path, (1, 2), cfg=None)
    cfg = VqnsLoopConfig(points=16, max_curves=2, min_curves=2, candidates=(2,), fit=FitConfig(restarts=10))
    ctl = adopt(host, store, cfg)
    try:
        assert ctl.cfg == cfg and [c for c, _, _ in host.sent] == [Stop]
        assert "records none" in ctl.run_attributes()["vqns_adopted_not_restored"]
    finally:
        ctl.close()
        store.close()


def test_adopt_refuses_a_run_that_is_not_vqns(tmp_path, host):
    store, _ = run_file(tmp_path, (), kind="srm")
    try:
        with pytest.raises(ValueError, match="cannot adopt a srm run"):
            VqnsController.adopt(host, RUN, store)
    finally:
        store.close()
    assert host.observers == [] and host.sent == []


def test_recorded_loop_settings_round_trip_and_unknown_ones_are_named():
    text = json.dumps(dataclasses.asdict(CFG), sort_keys=True)
    assert loop_config_from_json(text) == (CFG, [])
    recorded = json.loads(text)
    recorded["future_knob"] = 3
    recorded["fit"]["restarts"] = "many"
    cfg, lost = loop_config_from_json(json.dumps(recorded))
    assert lost == ["fit.restarts = 'many'", "future_knob"]
    assert cfg.fit.restarts == FitConfig().restarts and cfg.max_curves == CFG.max_curves
    assert loop_config_from_json("{not json")[1] == ["vqns_loop_config (not JSON; defaults used)"]


@pytest.mark.skipif("str" not in str(typing.get_type_hints(FitConfig)["lorentzians"]),
                    reason="FitConfig.lorentzians does not take 'auto' yet (issue 13, the fit's part)")
def test_recorded_auto_lorentzians_are_restored():
    cfg = dataclasses.replace(CFG, fit=FitConfig(lorentzians="auto", restarts=10, seed=1))
    restored, lost = loop_config_from_json(json.dumps(dataclasses.asdict(cfg), sort_keys=True))
    assert lost == [] and restored.fit.lorentzians == "auto" and restored == cfg
    recorded = json.loads(json.dumps(dataclasses.asdict(CFG)))
    recorded["fit"]["lorentzians"] = 7
    assert loop_config_from_json(json.dumps(recorded))[0].fit.lorentzians == 7
