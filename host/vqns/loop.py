"""The adaptive VQNS loop: measure echo and CPMG-2, fit, propose, request the candidate that adds
the most information per second of measurement, repeat, until no candidate is worth its time or the
budget of curves is spent; the run then ends `completed`.

The loop starts with echo, not the FID: a real Ramsey (FID) curve shows the 14N hyperfine beats and
a static detuning, which the Gaussian-dephasing model of the fit (C = exp(-chi) from a noise
spectrum) cannot describe; echo and CPMG-n refocus both. Only times the rig's pulses can play are
requested (t >= `shortest_time(n, timing)`, the timing of the run's rig config).

A host that reconnects in the middle of a VQNS run adopts it (`VqnsController.adopt`): the loop is
rebuilt from the curves in the run's file and its recorded settings, and goes on (docs/run-files.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvscope.models.vqns.analysis import BAND_WIDTH_PERCENTILE, N_FREQUENCIES, SpectrumAnalysis, analyse_curves
from nvscope.models.vqns.data import CoherenceSet, coherence_set
from nvscope.models.vqns.fit import FitConfig, SpectrumFit
from nvscope.models.vqns.proposal import (DARK_FRACTION, DEFAULT_CANDIDATES, DEFAULT_REPETITIONS, MIN_POINTS,
                                          PROPOSAL_RULE,
                                          CandidatePlan, Proposal, feasible_times, predict_coherence)
from nvscope.proto.messages import Coherence, MeasureCoherence, Message, RunEnd, RunStart, Stop
from nvscope.rt.kernels.pulses import ShotTiming, sequence_name, shortest_time

from .figures import vqns_figure
from ..session import RunPhase
from ..store import VQNS_LIVE, RunStore, read_coherence

log = logging.getLogger(__name__)

ANALYSIS_WAIT_S = 600.0
"""How long the run-end analysis waits for a fit still running (s); then it writes what it has."""


@dataclass(frozen=True)
class VqnsLoopConfig:
    """The loop: times of every curve (s, log-spaced; a sequence is requested at those its pulses can
    play), the first curves, the candidates, the stopping rule, fit settings."""

    t_min: float = 0.1e-6
    t_max: float = 40e-6
    points: int = 40
    first: tuple[int, ...] = (1, 2)
    """Echo and CPMG-2 first, not the FID (the module docstring says why)."""
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES
    max_curves: int = 8
    min_curves: int = 3
    min_information_rate: float = 2.0 / 3600.0
    """Stop when no candidate's expected information gain per second of measurement reaches this (nats/s;
    the default, 2 nats per hour: on the demo's bath the best candidate falls from 6.5e-3 nats/s after
    two curves to 5e-4 after five)."""
    min_points: int = MIN_POINTS
    fit: FitConfig = field(default_factory=FitConfig)
    frequencies: int = N_FREQUENCIES

    @property
    def times(self) -> np.ndarray:
        """The total times (s) of every requested curve (before dropping those the pulses cannot play)."""
        return np.geomspace(self.t_min, self.t_max, self.points)

    def omega_range(self, timing: ShotTiming) -> tuple[float, float]:
        """The fixed frequency range (rad/s) of the band the loop records at every step, from its own
        settings alone (it does not move as curves are added): from pi / (2 t_max) to twice the highest
        filter peak pi n / t among the first curves and candidates at their shortest playable time."""
        peaks = [np.pi * max(n, 1) / max(self.t_min, shortest_time(n, timing))
                 for n in set(self.first) | set(self.candidates) if shortest_time(n, timing) <= self.t_max]
        return 0.5 * np.pi / self.t_max, 2.0 * max(peaks, default=np.pi / self.t_min)

    def frequency_grid(self, timing: ShotTiming) -> np.ndarray:
        """The band's frequencies (rad/s): `frequencies` log-spaced over `omega_range(timing)`."""
        return np.geomspace(*self.omega_range(timing), self.frequencies)

    def plan(self, timing: ShotTiming, repetitions: int, dark_fraction: float) -> CandidatePlan:
        """The candidates as the proposal sees them: the loop's times, the rig's pulse timing, shots per
        point and dark-reference fraction, the loop's fixed frequency grid; measured sequences stay
        candidates (a repeat may be worth most)."""
        return CandidatePlan(tuple(self.candidates), self.times, timing, repetitions, self.min_points, dark_fraction,
                             self.frequency_grid(timing))

    @property
    def stopping_rule(self) -> str:
        """The rule that ends the loop, in words (recorded in the run's file)."""
        return (f"after each fit: stop (run completed) when at least {self.min_curves} curves are measured and no "
                f"candidate's expected information gain per second of measurement reaches "
                f"{self.min_information_rate:g} nats/s (proposal rule), or when {self.max_curves} curves are "
                f"measured, or when no candidate can be played at {self.min_points} of the loop's times; else "
                f"request the best-ranked candidate (a sequence already measured may be measured again)")


@dataclass
class VqnsStep:
    """One pass of the loop: the curves so far, the fit, its band on the loop's fixed frequency grid
    (rad/s; rad^2/s) and the band's width there (`BAND_WIDTH_PERCENTILE` of ln S_hi/S_lo), the proposal."""

    n_curves: int
    fit: SpectrumFit
    omega: np.ndarray
    band: tuple[np.ndarray, np.ndarray, np.ndarray]
    proposal: Proposal
    band_width: float
    fit_s: float

    @classmethod
    def of(cls, n_curves: int, a: SpectrumAnalysis) -> VqnsStep:
        """The step made of one analysis of `n_curves` curves."""
        return cls(n_curves, a.fit, a.omega, a.band, a.proposal, a.band_width, a.seconds)

    @property
    def lorentzians(self) -> int:
        """The number of Lorentzians the fit used (M)."""
        return int(getattr(self.fit, "lorentzians", self.fit.a.shape[1]))


def loop_analysis(data: CoherenceSet, fit_cfg: FitConfig, plan: CandidatePlan, warm: SpectrumFit | None,
                  omega: np.ndarray) -> SpectrumAnalysis:
    """One step of the loop (any process): `analyse_curves` with the loop's candidate plan, its band
    and width put on the loop's fixed frequency grid `omega` (rad/s)."""
    a = analyse_curves(data, fit_cfg, plan, warm, len(omega))
    band = a.fit.band(omega)
    with np.errstate(all="ignore"):
        width = float(np.percentile(np.log(band[2] / band[1]), BAND_WIDTH_PERCENTILE))
    return dataclasses.replace(a, omega=omega, band=band, band_width=width)


@dataclass(frozen=True)
class RigReadout:
    """What the proposal needs of the rig's `[coherence]` table: the pulse timing, sequence shots and
    dark-reference shots per sequence shot of each point, and where they came from (in words)."""

    timing: ShotTiming = field(default_factory=ShotTiming)
    repetitions: int = DEFAULT_REPETITIONS
    dark_fraction: float = DARK_FRACTION
    source: str = "ShotTiming() defaults (no run_start seen)"


def run_timing(config: dict) -> RigReadout:
    """The rig's readout settings from a run's config (RunStart.config, the file's `config` attribute):
    its `coherence` table; ShotTiming() and the rig's defaults where it has none."""
    table = config.get("coherence") if isinstance(config, dict) else None
    table = table if isinstance(table, dict) else {}
    reps = table.get("repetitions")
    reps = int(reps) if type(reps) is int and reps >= 1 else DEFAULT_REPETITIONS
    dark = table.get("dark_fraction")
    dark = float(dark) if type(dark) in (int, float) and dark > 0 else DARK_FRACTION
    recorded = table.get("timing")
    if not isinstance(recorded, dict):
        return RigReadout(ShotTiming(), reps, dark, "ShotTiming() defaults (the run's config has no coherence.timing)")
    known = {f.name for f in dataclasses.fields(ShotTiming)}
    try:
        return RigReadout(ShotTiming(**{k: float(v) for k, v in recorded.items() if k in known}), reps, dark,
                          "the run's config")
    except (TypeError, ValueError) as exc:
        return RigReadout(ShotTiming(), reps, dark,
                          f"ShotTiming() defaults (the run's coherence.timing is unusable: {exc})")


class VqnsController:
    """Drives one VQNS run through a HostDaemon: requests curves, fits as they arrive, stops.

    The daemon calls `on_message` on its I/O thread with every stored message; it only queues the
    run's coherence curves (microseconds), and takes the pulse timing and shots per point from the
    run's `run_start` (its rig config's `coherence` table; `begin` waits for it). The controller's own worker thread has each fit, band and
    ranking (`analyse_curves`) computed in the daemon's worker processes (`host.processes`, so that
    the seconds of fitting never hold the daemon's GIL; in line when the host has none), and sends
    the next `measure_coherence` or `stop` with `host.command`, which posts from any thread (the
    daemon's I/O thread alone touches the socket). `analysis`, the run-end analysis, may be called from
    any thread: it waits for a fit in flight, then writes every step's band and proposal.
    """

    def __init__(self, host, run_id: str, cfg: VqnsLoopConfig = VqnsLoopConfig()):
        self._setup(host, run_id, cfg)
        self._listen()

    def _setup(self, host, run_id: str, cfg: VqnsLoopConfig) -> None:
        """The state of a loop that has measured nothing (nothing runs or listens yet)."""
        self.host = host
        self.run_id = run_id
        self.cfg = cfg
        self.data: CoherenceSet | None = None
        self.steps: list[VqnsStep] = []
        self.pending = 0  # curves requested and not yet arrived: len(self._asked)
        self._asked: list[int] = []  # the pulse numbers requested and not yet arrived
        self.done = False
        self.stop_reason = ""
        self._inbox: deque[Message] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._ended = False  # the run ended (its analysis began): nothing more is requested
        self._closed = False
        self.timing: ShotTiming | None = None  # the rig's pulse timing, from run_start (or the file)
        self.repetitions = DEFAULT_REPETITIONS  # shots per point, from the same place
        self.dark_fraction = DARK_FRACTION  # dark-reference shots per sequence shot, from the same place
        self.timing_source = ""
        self._begun = False  # begin() was called: the first curves go out once the timing is known
        self._first_sent = False
        self.adopted = ""  # adopted from a run's file: "<n> curves from the file"; else ""
        self._adopted_seq = -1  # adopted: the file's last stored seq (curves up to it are in `data`)
        self._refit = False  # adopted: the worker fits the curves from the file first
        self._file: dict[str, np.ndarray] | None = None  # adopted: the file's curves, until taken into `data`
        self._not_restored: list[str] = []  # adopted: what the file could not give back
        self._thread = threading.Thread(target=self._work, name=f"vqns-{run_id}", daemon=True)

    def _listen(self) -> None:
        """Start the worker and take the daemon's stored messages."""
        self._thread.start()
        self.host.observers.append(self.on_message)

    @classmethod
    def adopt(cls, host, run_id: str, store: RunStore, cfg: VqnsLoopConfig = VqnsLoopConfig()) -> VqnsController:
        """The loop of a VQNS run that another host began (and died driving), rebuilt from its file.

        The curves stored in `store` (in seq order) are fitted on the worker, as `update` does, which
        then requests the next curve or stops the run by the stopping rule. The settings recorded in
        the file (`vqns_loop_config`) are used; `cfg` only for a file that records none. Curves the
        dead host requested may still arrive: they are taken as data (and fitted as usual). Call it
        on the thread that stores the run's messages (the daemon's I/O thread), between its steps.
        Raises ValueError (one line) for a run that is not VQNS or has ended.
        """
        f = store.f
        kind = f.attrs.get("run_kind", "")
        if kind != "vqns":
            raise ValueError(f"run {run_id}: cannot adopt a {kind or 'unknown'} run as VQNS ({store.path.name})")
        if store.finished:
            raise ValueError(f"run {run_id}: already ended ({f.attrs['exit_status']}), nothing to adopt")
        recorded = f.attrs.get("vqns_loop_config")
        lost: list[str] = []
        if recorded is not None:
            cfg, lost = loop_config_from_json(recorded)
        else:
            lost = ["the loop's settings (the file records none; this host's are used)"]
        curves = read_coherence(f)
        order = np.argsort(curves["seq"], kind="stable")
        curves = {name: column[order] for name, column in curves.items()}
        n = len(order)
        ctl = cls.__new__(cls)
        ctl._setup(host, run_id, cfg)
        ctl.adopted = f"{n} curves from the file"
        ctl._adopted_seq = max(store.last_seq, int(curves["seq"].max()) if n else -1)
        ctl._not_restored = lost + [f"the steps fitted before adoption (the dead host's): vqns/steps begins at {n} "
                                    "curves, with a cold fit"]
        ctl._file, ctl._refit = curves, True
        try:
            config = json.loads(f.attrs.get("config", "{}"))
        except ValueError:
            config = {}
        ctl._set_timing(config)
        ctl._begun = ctl._first_sent = True
        for what in lost:
            log.warning("VQNS run %s adopted: not restorable: %s", run_id, what)
        log.info("VQNS run %s adopted with %d curves from %s", run_id, n, store.path.name)
        ctl._listen()
        return ctl

    def run_attributes(self) -> dict[str, str]:
        """The loop's settings and stopping rule, for the run's file (JSON and words); an adopted
        loop adds `vqns_adopted` ("<n> curves from the file") and what it could not restore."""
        attrs = {"vqns_loop_config": json.dumps(dataclasses.asdict(self.cfg), sort_keys=True, default=str),
                 "vqns_stopping_rule": self.cfg.stopping_rule}
        if self.adopted:
            attrs["vqns_adopted"] = self.adopted
            attrs["vqns_adopted_not_restored"] = "; ".join(self._not_restored)
        return attrs

    def _set_timing(self, config: dict) -> None:
        """The pulse timing and shots per point from the run's config (a warning when it has none)."""
        rig = run_timing(config)
        self.timing, self.repetitions, self.dark_fraction, self.timing_source = (
            rig.timing, rig.repetitions, rig.dark_fraction, rig.source)
        if self.timing_source != "the run's config":
            log.warning("VQNS run %s: pulse timing from %s", self.run_id, self.timing_source)

    def request(self, n_pulses: int) -> None:
        """Ask the rig for one CPMG-n curve at the loop's times its pulses can play (from any thread)."""
        t = feasible_times(int(n_pulses), self.cfg.times, self.timing or ShotTiming())
        with self._cond:
            self._asked.append(int(n_pulses))
            self.pending = len(self._asked)
        log.info("VQNS run %s: requesting %s at %d times", self.run_id, sequence_name(int(n_pulses)), t.size)
        self.host.command(MeasureCoherence, self.run_id, n_pulses=int(n_pulses), t=t)

    def begin(self) -> None:
        """Request the first curves (`cfg.first`: echo and CPMG-2) once the run's pulse timing is known:
        now when its run_start has arrived, else as soon as it does."""
        with self._cond:
            self._begun = True
            go = self.timing is not None and not self._first_sent
            self._first_sent |= go
        if go:
            for n in self.cfg.first:
                self.request(n)

    def on_message(self, msg: Message) -> None:
        """(daemon's I/O thread) A stored message: this run's coherence curves are queued for the worker;
        its run_start gives the pulse timing (and the first requests, when `begin` was called)."""
        if msg.run_id != self.run_id or not isinstance(msg, (Coherence, RunEnd, RunStart)):
            return
        if isinstance(msg, RunStart):
            if self.timing is None:
                self._set_timing(msg.config)
                self.begin() if self._begun else None
            return
        if isinstance(msg, Coherence) and msg.seq <= self._adopted_seq:
            return  # adopted: already read from the file
        with self._cond:
            if isinstance(msg, RunEnd):
                self._ended = True
            elif not self._ended and not self.done:
                self._inbox.append(msg)
                self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued curve is fitted; False when `timeout` (s) ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inbox and not self._busy and not self._refit, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop listening and end the worker thread (a fit in flight is finished first)."""
        if self.on_message in self.host.observers:
            self.host.observers.remove(self.on_message)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _work(self) -> None:
        """The worker: take the queued curves, fit when none is pending any more, repeat."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._inbox or self._refit or self._closed)
                if not self._inbox and not self._refit:
                    return  # closed
                curves = list(self._inbox)
                self._inbox.clear()
                refit, self._refit = self._refit, False
                self._busy = True
            try:
                if refit:
                    self._fit_file()
                for msg in curves:
                    self._take(msg)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self, msg: Coherence) -> None:
        """(worker) One curve: append it; fit once no requested curve is outstanding."""
        if self.done:
            return
        with self._cond:
            if msg.n_pulses in self._asked:
                self._asked.remove(msg.n_pulses)
            # else: a curve not asked for (one the dead host of an adopted run requested): data; pending stays
            pending = self.pending = len(self._asked)
        try:
            if self.data is None:
                self.data = coherence_set(np.array([msg.n_pulses]), msg.t[None], msg.coherence[None], msg.sigma[None],
                                          pi_s=msg.pi_s)
            else:
                self.data = self.data.append(msg.n_pulses, msg.t, msg.coherence, msg.sigma, pi_s=msg.pi_s)
            if pending == 0:
                self.update()
        except ValueError as exc:  # curves that cannot be fitted end the run, saying why; data are stored
            log.error("VQNS run %s: %s", self.run_id, exc)
            self.finish(f"failed: {sequence_name(msg.n_pulses)} curve seq {msg.seq}: {exc}", completed=False)
        except Exception as exc:  # the worker must not die silently: the run would never end
            log.exception("VQNS run %s: fit failed", self.run_id)
            self.finish(f"failed: fit of {len(self.data.n_pulses) if self.data else 0} curves: "
                        f"{type(exc).__name__}: {exc}", completed=False)

    def _file_curves(self) -> None:
        """The adopted file's curves into `data`, as they arrived (NaN padding dropped)."""
        curves, self._file = self._file, None
        pi_s = curves.get("pi_s", np.zeros(len(curves["n_pulses"])))
        for n, t, c, s, p in zip(curves["n_pulses"], curves["t"], curves["coherence"], curves["sigma"], pi_s):
            keep = np.isfinite(t)
            if self.data is None:
                self.data = coherence_set(np.array([n]), t[keep][None], c[keep][None], s[keep][None], pi_s=float(p))
            else:
                self.data = self.data.append(int(n), t[keep], c[keep], s[keep], pi_s=float(p))

    def _fit_file(self) -> None:
        """(worker) Adopted: fit the curves from the file, then request the next or stop; while the
        first curves (`cfg.first`) are not all in, request the missing ones instead (no fit)."""
        if self.done:
            return
        n = len(self._file["seq"])
        missing = [k for k in self.cfg.first if k not in set(int(m) for m in self._file["n_pulses"])]
        try:
            self._file_curves()
            if missing:  # those the dead host had in flight may come too: they are data
                for k in missing:
                    self.request(k)
            else:
                self.update()
        except ValueError as exc:
            log.error("VQNS run %s: %s", self.run_id, exc)
            self.finish(f"failed: the {n} curves from the file: {exc}", completed=False)
        except Exception as exc:
            log.exception("VQNS run %s: fit failed", self.run_id)
            self.finish(f"failed: fit of the {n} curves from the file: {type(exc).__name__}: {exc}", completed=False)

    def plan(self) -> CandidatePlan:
        """The candidates as the proposal sees them: the loop's times, the rig's timing and shots, the
        loop's fixed frequency grid; measured sequences stay candidates (a repeat may be worth most)."""
        return self.cfg.plan(self.timing or ShotTiming(), self.repetitions, self.dark_fraction)

    def update(self) -> None:
        """(worker) Fit (warm after the first), rank the candidates, then request the best or stop."""
        warm = self.steps[-1].fit if self.steps else None
        plan = self.plan()
        processes = getattr(self.host, "processes", None)
        args = (self.data, self.cfg.fit, plan, warm, plan.omega)
        a = loop_analysis(*args) if processes is None else processes.run(loop_analysis, *args)
        step = VqnsStep.of(len(self.data.n_pulses), a)
        with self._cond:
            self.steps.append(step)
            ended = self._ended
        self._record(step)
        p = step.proposal
        log.info("VQNS %d curves: %s; M = %d; band width %.3f; next %s (%.3g nats/s; fit %.1f s)", step.n_curves,
                 a.fit.message, step.lorentzians, step.band_width,
                 ", ".join(sequence_name(int(n)) for n in p.ranked[:3]), p.best_rate, step.fit_s)
        if ended:  # the run ended meanwhile (stopped by someone else, or failed): nothing to ask
            return
        if not len(p.ranked):
            self.finish(f"no candidate can be played at {self.cfg.min_points} of the loop's times")
        elif step.n_curves >= self.cfg.min_curves and p.best_rate < self.cfg.min_information_rate:
            best = int(p.ranked[0])
            k = int(np.flatnonzero(p.candidates == best)[0])
            self.finish(f"no candidate is worth its time: the best, {sequence_name(best)}, adds "
                        f"{p.information[k]:.3g} nats in {p.seconds[k]:.3g} s = {p.best_rate:.3g} nats/s "
                        f"< {self.cfg.min_information_rate:g} nats/s ({step.n_curves} curves)")
        elif step.n_curves >= self.cfg.max_curves:
            self.finish(f"budget of {self.cfg.max_curves} curves spent (best candidate {p.best_rate:.3g} nats/s)")
        else:
            self.request(int(p.ranked[0]))

    def _record(self, step: VqnsStep) -> None:
        """Hand the step to the daemon's I/O thread, which alone writes the run's file while it streams: one
        row of `vqns_live/` (the spectrum, band and ranking after these curves), flushed for readers such
        as `nvscope web`; nothing where the host has no I/O lane (a test's fake host)."""
        on_io, sessions = getattr(getattr(self.host, "lanes", None), "on_io", None), getattr(self.host, "sessions", None)
        if on_io is None or sessions is None:
            return
        s_fit, s_lo, s_hi = step.band
        row = {"n_curves": step.n_curves, "lorentzians": step.lorentzians, "best_rate": step.proposal.best_rate,
               "omega": step.omega, "S_fit": s_fit, "S_lo": s_lo, "S_hi": s_hi, "ranked": step.proposal.ranked}

        def write() -> None:
            session = sessions.get(self.run_id)
            if session is None or session.phase not in (RunPhase.STREAMING, RunPhase.ENDING):
                return  # the file belongs to the run-end analysis now, which writes every step
            if VQNS_LIVE in session.store.f:
                session.store.add_vqns_step(row)
                session.store.flush(durable=False)  # derived rows: the run end writes them all again

        on_io(write)

    def finish(self, reason: str, completed: bool = True) -> None:
        """Stop the run (the rig answers with run_end; the analysis then writes the results): a stop by
        the loop's rule ends the run `completed`; one for data or a fit that failed, `stopped`."""
        self.done, self.stop_reason = True, reason
        self.host.command(Stop, self.run_id, reason=reason, completed=completed)

    def analysis(self, store: RunStore) -> tuple[dict, dict]:
        """At run end (any thread; the daemon's analysis worker): wait for a fit in flight, then every
        step's band and proposal into the file, and the PNG."""
        with self._cond:
            self._ended = True  # a fit still running records its step but requests nothing more
        settled = self.wait_idle(ANALYSIS_WAIT_S)
        with self._cond:
            steps = list(self.steps)
        attrs = {**self.run_attributes(), "stop_reason": self.stop_reason,
                 "vqns_timing": json.dumps(dataclasses.asdict(self.timing or ShotTiming()), sort_keys=True),
                 "vqns_timing_source": self.timing_source or "ShotTiming() defaults (no run_start seen)",
                 "vqns_readout": json.dumps({"repetitions": self.repetitions, "dark_fraction": self.dark_fraction})}
        if not settled:
            attrs["analysis_note"] = f"a fit was still running after {ANALYSIS_WAIT_S:.0f} s; not included"
        if not steps:
            return {}, {**attrs, "analysis_note": attrs.get("analysis_note", "no coherence curve was fitted")}
        curves = read_coherence(store.f)
        truth = json.loads(store.f.attrs["config"]).get("sim_truth", {})
        args = (steps, curves, truth, store.path.with_suffix(".png"))
        processes = getattr(self.host, "processes", None)  # the figure holds the GIL for tens of ms
        res, result_attrs = vqns_results(*args) if processes is None else processes.run(vqns_results, *args)
        attrs.update(result_attrs)
        attrs["fit_config"] = json.dumps(self.cfg.fit.__dict__)
        attrs["vqns_fits"] = f"{len(steps)} fits of {steps[-1].n_curves} curves (a fit when no requested curve is pending)"
        return res, attrs


def loop_config_from_json(text: str) -> tuple[VqnsLoopConfig, list[str]]:
    """The loop settings recorded in a run's file (`vqns_loop_config`, JSON), and the names of
    those that could not be restored (unknown to this version, or of the wrong kind: defaults used)."""
    try:
        recorded = json.loads(text)
    except ValueError:
        return VqnsLoopConfig(), ["vqns_loop_config (not JSON; defaults used)"]
    if not isinstance(recorded, dict):
        return VqnsLoopConfig(), ["vqns_loop_config (not a table; defaults used)"]
    fit_recorded = recorded.pop("fit", {})
    fit_kw, lost = _fields_from(FitConfig, fit_recorded if isinstance(fit_recorded, dict) else {}, "fit.")
    if not isinstance(fit_recorded, dict):
        lost.append("fit")
    kw, lost_loop = _fields_from(VqnsLoopConfig, recorded, "")
    try:
        return VqnsLoopConfig(**kw, fit=FitConfig(**fit_kw)), lost + lost_loop
    except (TypeError, ValueError) as exc:
        return VqnsLoopConfig(), [f"vqns_loop_config ({exc}; defaults used)"]


def _fields_from(kind: type, recorded: dict, prefix: str) -> tuple[dict, list[str]]:
    """The fields of dataclass `kind` in `recorded`, cast to one of their annotated types (e.g.
    `int | str` for FitConfig.lorentzians, which may be "auto"); the names not restored."""
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind) if f.name != "fit"}
    kw, lost = {}, [prefix + k for k in sorted(recorded) if k not in names]
    for name in names & set(recorded):
        value = _cast(hints[name], recorded[name])
        if value is _LOST:
            lost.append(f"{prefix}{name} = {recorded[name]!r}")
        else:
            kw[name] = value
    return kw, lost


_LOST = object()


def _cast(hint, value):
    """`value` (from JSON) as annotated by `hint` (bool, int, float, str, tuple[int, ...], or a union of them);
    _LOST if none fits."""
    for kind in typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,):
        if typing.get_origin(kind) is tuple and isinstance(value, list) and all(type(v) is int for v in value):
            return tuple(value)
        if kind is bool and type(value) is bool:
            return value
        if kind is int and type(value) is int:
            return value
        if kind is float and type(value) in (int, float):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    return _LOST


def vqns_results(steps: list[VqnsStep], curves: dict[str, np.ndarray], truth: dict,
                 png: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A VQNS run's result datasets (every step's band on the loop's fixed frequency grid, its
    proposal and M, the last fit's restarts) and attributes, and its figure written to `png`; a pure
    function of its arguments (any process)."""
    last = steps[-1]
    fit = last.fit
    res = {
        "vqns/omega": last.omega,
        "vqns/S_fit": last.band[0], "vqns/S_lo": last.band[1], "vqns/S_hi": last.band[2],
        "vqns/steps/n_curves": np.array([s.n_curves for s in steps]),
        "vqns/steps/band_width": np.array([s.band_width for s in steps]),
        "vqns/steps/information_rate": np.array([s.proposal.best_rate for s in steps]),
        "vqns/steps/lorentzians": np.array([s.lorentzians for s in steps]),
        "vqns/steps/fit_s": np.array([s.fit_s for s in steps]),
        "vqns/steps/chi2_red_best": np.array([s.fit.chi2[s.fit.best] / s.fit.dof for s in steps]),
        "vqns/steps/successes": np.array([int(s.fit.success.sum()) for s in steps]),
        "vqns/restarts/a": fit.a, "vqns/restarts/w0": fit.w0, "vqns/restarts/g": fit.g,
        "vqns/restarts/chi2": fit.chi2, "vqns/restarts/success": fit.success,
    }
    for i, s in enumerate(steps):
        p = s.proposal
        res[f"vqns/steps/{i}/omega"] = s.omega
        res[f"vqns/steps/{i}/S_fit"], res[f"vqns/steps/{i}/S_lo"], res[f"vqns/steps/{i}/S_hi"] = s.band
        res[f"vqns/steps/{i}/candidates"] = p.candidates
        res[f"vqns/steps/{i}/scores"] = p.scores
        res[f"vqns/steps/{i}/information"] = p.information
        res[f"vqns/steps/{i}/seconds"] = p.seconds
        res[f"vqns/steps/{i}/points"] = p.points
        res[f"vqns/steps/{i}/ranked"] = p.ranked
        res[f"vqns/steps/{i}/sensitivity"] = p.sensitivity
    pi_s = curves.get("pi_s", np.zeros(len(curves["n_pulses"])))
    fits = [predicted_curve(fit, int(n), t[np.isfinite(t)], float(p)) for n, t, p in zip(curves["n_pulses"], curves["t"], pi_s)]
    vqns_figure(png, steps, curves, fits, truth)
    return res, {"band_method": fit.band_method, "proposal_rule": PROPOSAL_RULE, "fit_message": fit.message,
                 "figure": png.name,
                 "spectrum_estimate": getattr(fit, "estimate", "the mean of the band's population"),
                 "lorentzians_chosen": last.lorentzians,
                 "lorentzian_selection": getattr(fit, "selection", "fixed by the fit settings (FitConfig.lorentzians)"),
                 "sequence_names": json.dumps([sequence_name(int(n)) for n in curves["n_pulses"]])}


def predicted_curve(fit: SpectrumFit, n_pulses: int, t: np.ndarray, pi_s: float = 0.0) -> np.ndarray:
    """The coherence (T,) the reported spectrum predicts for CPMG-n at t (s), pi pulses of pi_s (s)."""
    if hasattr(fit, "predict"):
        return np.asarray(fit.predict(n_pulses, t, pi_s=pi_s))
    return predict_coherence(fit, n_pulses, t, pi_s).mean(0)  # TODO(issue 13): until SpectrumFit.predict lands
