"""The adaptive VQNS loop: measure FID and echo, fit, propose, request the best CPMG-n, repeat,
until the band is narrow enough over the probed frequencies or the budget of curves is spent."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from nvscope.models.vqns.data import CoherenceSet, coherence_set
from nvscope.models.vqns.fit import FitConfig, SpectrumFit, fit_spectrum
from nvscope.models.vqns.proposal import DEFAULT_CANDIDATES, PROPOSAL_RULE, Proposal, predict_coherence, rank_candidates
from nvscope.proto.messages import Coherence, MeasureCoherence, Message, Stop

from .figures import vqns_figure
from ..store import RunStore, read_coherence

log = logging.getLogger(__name__)


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
    frequencies: int = 256

    @property
    def times(self) -> np.ndarray:
        """The total times (s) of every requested curve."""
        return np.geomspace(self.t_min, self.t_max, self.points)


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


class VqnsController:
    """Drives one VQNS run through a HostDaemon: requests curves, fits as they arrive, stops."""

    def __init__(self, host, run_id: str, cfg: VqnsLoopConfig = VqnsLoopConfig()):
        self.host = host
        self.run_id = run_id
        self.cfg = cfg
        self.data: CoherenceSet | None = None
        self.steps: list[VqnsStep] = []
        self.pending = 0
        self.done = False
        self.stop_reason = ""
        host.observers.append(self.on_message)

    def request(self, n_pulses: int) -> None:
        """Ask the rig for one CPMG-n curve."""
        self.pending += 1
        self.host.command(MeasureCoherence, self.run_id, n_pulses=int(n_pulses), t=self.cfg.times)

    def begin(self) -> None:
        """Request the first curves (FID and echo)."""
        for n in self.cfg.first:
            self.request(n)

    def on_message(self, msg: Message) -> None:
        """A stored message: a coherence curve of this run updates the fit when none is pending."""
        if not isinstance(msg, Coherence) or msg.run_id != self.run_id or self.done:
            return
        self.pending -= 1
        try:
            if self.data is None:
                self.data = coherence_set(np.array([msg.n_pulses]), msg.t[None], msg.coherence[None], msg.sigma[None])
            else:
                self.data = self.data.append(msg.n_pulses, msg.t, msg.coherence, msg.sigma)
            if self.pending == 0:
                self.update()
        except ValueError as exc:  # curves that cannot be fitted end the run, saying why; data are stored
            log.error("VQNS run %s: %s", self.run_id, exc)
            self.finish(f"failed: CPMG-{msg.n_pulses} curve seq {msg.seq}: {exc}")

    def update(self) -> None:
        """Fit (warm after the first), rank the candidates, then request the best or stop."""
        t0 = time.perf_counter()
        warm = self.steps[-1].fit if self.steps else None
        fit = fit_spectrum(self.data, self.cfg.fit, warm=warm)
        omega = np.geomspace(*fit.omega_range, self.cfg.frequencies)
        band = fit.band(omega)
        measured = set(int(n) for n in self.data.n_pulses)
        candidates = [n for n in self.cfg.candidates if n not in measured] or list(self.cfg.candidates)
        proposal = rank_candidates(fit, self.data, candidates, omega)
        width = float(np.percentile(np.log(band[2] / band[1]), 90))
        step = VqnsStep(len(self.data.n_pulses), fit, omega, band, proposal, width, time.perf_counter() - t0)
        self.steps.append(step)
        log.info("VQNS %d curves: %s; band width %.3f; next %s (fit %.1f s)", step.n_curves, fit.message,
                 width, proposal.ranked[:3].tolist(), step.fit_s)
        if width < self.cfg.target_band and step.n_curves >= self.cfg.min_curves:
            self.finish(f"band narrower than {self.cfg.target_band} (90th percentile of ln S_hi/S_lo = {width:.3f})")
        elif step.n_curves >= self.cfg.max_curves:
            self.finish(f"budget of {self.cfg.max_curves} curves spent (band width {width:.3f})")
        else:
            self.request(int(proposal.ranked[0]))

    def finish(self, reason: str) -> None:
        """Stop the run (the rig answers with run_end; the analysis then writes the results)."""
        self.done, self.stop_reason = True, reason
        self.host.command(Stop, self.run_id, reason=reason)

    def analysis(self, store: RunStore) -> tuple[dict, dict]:
        """At run end: every step's band and proposal into the file, and the PNG."""
        if not self.steps:
            return {}, {"analysis_note": "no coherence curve was fitted"}
        last = self.steps[-1]
        res = {
            "vqns/omega": last.omega,
            "vqns/S_mean": last.band[0], "vqns/S_lo": last.band[1], "vqns/S_hi": last.band[2],
            "vqns/steps/n_curves": np.array([s.n_curves for s in self.steps]),
            "vqns/steps/band_width": np.array([s.band_width for s in self.steps]),
            "vqns/steps/fit_s": np.array([s.fit_s for s in self.steps]),
            "vqns/steps/chi2_red_best": np.array([s.fit.chi2[s.fit.best] / s.fit.dof for s in self.steps]),
            "vqns/steps/successes": np.array([int(s.fit.success.sum()) for s in self.steps]),
            "vqns/restarts/a": last.fit.a, "vqns/restarts/w0": last.fit.w0, "vqns/restarts/g": last.fit.g,
            "vqns/restarts/chi2": last.fit.chi2, "vqns/restarts/success": last.fit.success,
        }
        for i, s in enumerate(self.steps):
            res[f"vqns/steps/{i}/omega"] = s.omega
            res[f"vqns/steps/{i}/S_mean"], res[f"vqns/steps/{i}/S_lo"], res[f"vqns/steps/{i}/S_hi"] = s.band
            res[f"vqns/steps/{i}/candidates"] = s.proposal.candidates
            res[f"vqns/steps/{i}/scores"] = s.proposal.scores
            res[f"vqns/steps/{i}/ranked"] = s.proposal.ranked
            res[f"vqns/steps/{i}/sensitivity"] = s.proposal.sensitivity
        curves = read_coherence(store.f)
        fits = [predict_coherence(last.fit, int(n), t[np.isfinite(t)]).mean(0)
                for n, t in zip(curves["n_pulses"], curves["t"])]
        truth = json.loads(store.f.attrs["config"]).get("sim_truth", {})
        png = store.path.with_suffix(".png")
        vqns_figure(png, self.steps, curves, fits, truth)
        attrs = {"band_method": last.fit.band_method, "proposal_rule": PROPOSAL_RULE,
                 "stop_reason": self.stop_reason, "fit_message": last.fit.message, "figure": png.name,
                 "fit_config": json.dumps(self.cfg.fit.__dict__)}
        return res, attrs
