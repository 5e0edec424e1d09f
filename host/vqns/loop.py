"""The adaptive VQNS loop: measure FID and echo, fit, propose, request the best CPMG-n, repeat,
until the band is narrow enough over the probed frequencies or the budget of curves is spent.

A host that reconnects in the middle of a VQNS run adopts it (`VqnsController.adopt`): the loop is
rebuilt from the curves in the run's file and its recorded settings, and goes on (docs/run-files.md)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvscope.models.vqns.analysis import BAND_WIDTH_PERCENTILE, N_FREQUENCIES, SpectrumAnalysis, analyse_curves
from nvscope.models.vqns.data import CoherenceSet, coherence_set
from nvscope.models.vqns.fit import FitConfig, SpectrumFit
from nvscope.models.vqns.proposal import DEFAULT_CANDIDATES, PROPOSAL_RULE, Proposal, predict_coherence
from nvscope.proto.messages import Coherence, MeasureCoherence, Message, RunEnd, Stop

from .figures import vqns_figure
from ..store import RunStore, read_coherence

log = logging.getLogger(__name__)

ANALYSIS_WAIT_S = 600.0
"""How long the run-end analysis waits for a fit still running (s); then it writes what it has."""


@dataclass(frozen=True)
class VqnsLoopConfig:
    """The loop: times of every curve (s, log-spaced), candidates, stop rule, fit settings."""

    t_min: float = 0.1e-6
    t_max: float = 40e-6
    points: int = 40
    first: tuple[int, ...] = (0, 1)
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES
    max_curves: int = 6
    min_curves: int = 4
    target_band: float = 0.5
    """Stop when the 90th percentile of ln(S_hi / S_lo) over the probed band falls below this."""
    fit: FitConfig = field(default_factory=FitConfig)
    frequencies: int = N_FREQUENCIES

    @property
    def times(self) -> np.ndarray:
        """The total times (s) of every requested curve."""
        return np.geomspace(self.t_min, self.t_max, self.points)

    @property
    def stopping_rule(self) -> str:
        """The rule that ends the loop, in words (recorded in the run's file)."""
        return (f"after each fit: stop when the {BAND_WIDTH_PERCENTILE}th percentile of ln(S_hi / S_lo) over "
                f"the band's {self.frequencies} frequencies is below {self.target_band} and at least "
                f"{self.min_curves} curves are measured, or when {self.max_curves} curves are measured; "
                f"else request the best-ranked candidate not yet measured")


@dataclass
class VqnsStep:
    """One pass of the loop: the curves so far, the fit, its band and the proposal."""

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


class VqnsController:
    """Drives one VQNS run through a HostDaemon: requests curves, fits as they arrive, stops.

    The daemon calls `on_message` on its I/O thread with every stored message; it only queues the
    run's coherence curves (microseconds). The controller's own worker thread has each fit, band and
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

    def request(self, n_pulses: int) -> None:
        """Ask the rig for one CPMG-n curve (from any thread)."""
        with self._cond:
            self._asked.append(int(n_pulses))
            self.pending = len(self._asked)
        self.host.command(MeasureCoherence, self.run_id, n_pulses=int(n_pulses), t=self.cfg.times)

    def begin(self) -> None:
        """Request the first curves (FID and echo)."""
        for n in self.cfg.first:
            self.request(n)

    def on_message(self, msg: Message) -> None:
        """(daemon's I/O thread) A stored message: this run's coherence curves are queued for the worker."""
        if msg.run_id != self.run_id or not isinstance(msg, (Coherence, RunEnd)):
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
                self.data = coherence_set(np.array([msg.n_pulses]), msg.t[None], msg.coherence[None], msg.sigma[None])
            else:
                self.data = self.data.append(msg.n_pulses, msg.t, msg.coherence, msg.sigma)
            if pending == 0:
                self.update()
        except ValueError as exc:  # curves that cannot be fitted end the run, saying why; data are stored
            log.error("VQNS run %s: %s", self.run_id, exc)
            self.finish(f"failed: CPMG-{msg.n_pulses} curve seq {msg.seq}: {exc}")
        except Exception as exc:  # the worker must not die silently: the run would never end
            log.exception("VQNS run %s: fit failed", self.run_id)
            self.finish(f"failed: fit of {len(self.data.n_pulses) if self.data else 0} curves: "
                        f"{type(exc).__name__}: {exc}")

    def _file_curves(self) -> None:
        """The adopted file's curves into `data`, as they arrived (NaN padding dropped)."""
        curves, self._file = self._file, None
        for n, t, c, s in zip(curves["n_pulses"], curves["t"], curves["coherence"], curves["sigma"]):
            keep = np.isfinite(t)
            if self.data is None:
                self.data = coherence_set(np.array([n]), t[keep][None], c[keep][None], s[keep][None])
            else:
                self.data = self.data.append(int(n), t[keep], c[keep], s[keep])

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
            self.finish(f"failed: the {n} curves from the file: {exc}")
        except Exception as exc:
            log.exception("VQNS run %s: fit failed", self.run_id)
            self.finish(f"failed: fit of the {n} curves from the file: {type(exc).__name__}: {exc}")

    def update(self) -> None:
        """(worker) Fit (warm after the first), rank the candidates, then request the best or stop."""
        warm = self.steps[-1].fit if self.steps else None
        measured = set(int(n) for n in self.data.n_pulses)
        candidates = [n for n in self.cfg.candidates if n not in measured] or list(self.cfg.candidates)
        processes = getattr(self.host, "processes", None)
        args = (self.data, self.cfg.fit, candidates, warm, self.cfg.frequencies)
        a = analyse_curves(*args) if processes is None else processes.run(analyse_curves, *args)
        step = VqnsStep.of(len(self.data.n_pulses), a)
        with self._cond:
            self.steps.append(step)
            ended = self._ended
        log.info("VQNS %d curves: %s; band width %.3f; next %s (fit %.1f s)", step.n_curves, a.fit.message,
                 step.band_width, step.proposal.ranked[:3].tolist(), step.fit_s)
        width = step.band_width
        if ended:  # the run ended meanwhile (stopped by someone else, or failed): nothing to ask
            return
        if width < self.cfg.target_band and step.n_curves >= self.cfg.min_curves:
            self.finish(f"band narrower than {self.cfg.target_band} (90th percentile of ln S_hi/S_lo = {width:.3f})")
        elif step.n_curves >= self.cfg.max_curves:
            self.finish(f"budget of {self.cfg.max_curves} curves spent (band width {width:.3f})")
        else:
            self.request(int(step.proposal.ranked[0]))

    def finish(self, reason: str) -> None:
        """Stop the run (the rig answers with run_end; the analysis then writes the results)."""
        self.done, self.stop_reason = True, reason
        self.host.command(Stop, self.run_id, reason=reason)

    def analysis(self, store: RunStore) -> tuple[dict, dict]:
        """At run end (any thread; the daemon's analysis worker): wait for a fit in flight, then every
        step's band and proposal into the file, and the PNG."""
        with self._cond:
            self._ended = True  # a fit still running records its step but requests nothing more
        settled = self.wait_idle(ANALYSIS_WAIT_S)
        with self._cond:
            steps = list(self.steps)
        attrs = {**self.run_attributes(), "stop_reason": self.stop_reason}
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
    """The fields of dataclass `kind` in `recorded`, cast to their defaults' types; the names not restored."""
    defaults = kind()
    names = {f.name for f in dataclasses.fields(kind) if f.name != "fit"}
    kw, lost = {}, [prefix + k for k in sorted(recorded) if k not in names]
    for name in names & set(recorded):
        default, value = getattr(defaults, name), recorded[name]
        if isinstance(default, tuple) and isinstance(value, list) and all(type(v) is int for v in value):
            kw[name] = tuple(value)
        elif type(default) is int and type(value) is int:
            kw[name] = value
        elif type(default) is float and type(value) in (int, float):
            kw[name] = float(value)
        else:
            lost.append(f"{prefix}{name} = {value!r}")
    return kw, lost


def vqns_results(steps: list[VqnsStep], curves: dict[str, np.ndarray], truth: dict,
                 png: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A VQNS run's result datasets (every step's band and proposal, the last fit's restarts) and
    attributes, and its figure written to `png`; a pure function of its arguments (any process)."""
    last = steps[-1]
    res = {
        "vqns/omega": last.omega,
        "vqns/S_mean": last.band[0], "vqns/S_lo": last.band[1], "vqns/S_hi": last.band[2],
        "vqns/steps/n_curves": np.array([s.n_curves for s in steps]),
        "vqns/steps/band_width": np.array([s.band_width for s in steps]),
        "vqns/steps/fit_s": np.array([s.fit_s for s in steps]),
        "vqns/steps/chi2_red_best": np.array([s.fit.chi2[s.fit.best] / s.fit.dof for s in steps]),
        "vqns/steps/successes": np.array([int(s.fit.success.sum()) for s in steps]),
        "vqns/restarts/a": last.fit.a, "vqns/restarts/w0": last.fit.w0, "vqns/restarts/g": last.fit.g,
        "vqns/restarts/chi2": last.fit.chi2, "vqns/restarts/success": last.fit.success,
    }
    for i, s in enumerate(steps):
        res[f"vqns/steps/{i}/omega"] = s.omega
        res[f"vqns/steps/{i}/S_mean"], res[f"vqns/steps/{i}/S_lo"], res[f"vqns/steps/{i}/S_hi"] = s.band
        res[f"vqns/steps/{i}/candidates"] = s.proposal.candidates
        res[f"vqns/steps/{i}/scores"] = s.proposal.scores
        res[f"vqns/steps/{i}/ranked"] = s.proposal.ranked
        res[f"vqns/steps/{i}/sensitivity"] = s.proposal.sensitivity
    fits = [predict_coherence(last.fit, int(n), t[np.isfinite(t)]).mean(0)
            for n, t in zip(curves["n_pulses"], curves["t"])]
    vqns_figure(png, steps, curves, fits, truth)
    return res, {"band_method": last.fit.band_method, "proposal_rule": PROPOSAL_RULE,
                 "fit_message": last.fit.message, "figure": png.name}
