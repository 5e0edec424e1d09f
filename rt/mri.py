"""The NV-MRI run's plan (a `Plan` of rt/run_loop.py): the frequency-locked tip scan and DEER
(docs/physics.md section 2; the `[mri]` config, rt/config.py `MriConfig`).

The steps, one per tip position, each sending one `lock` (and a DEER pixel a `deer` after it, with
the same `index`):
1. the tip-retracted reference (scan 0, index 0): the off-resonance count with the microwave off,
   a sweep over [search_lo_hz, search_hi_hz] (`sweep_minimum`), the lock there; B0 and the dark
   spins' RF frequency f_rf = dark_rf_frequency(f_retracted, rf_offset_hz) follow from it;
2. the PSF stack (scan 1, plane = index into psf_gaps): the lock at every pixel;
3. the DEER planes, then the vertical sections (scan 2, plane = index into deer_gaps, then
   len(deer_gaps) + k for sections[k]): the lock, then `deer_shots` echoes with the RF pi pulse and
   as many without, the NV microwave at the locked frequency.

The lock at one tip position (rt/kernels/lock.py does the arithmetic): start from the prediction
(feedforward of the previous pixels of the line in scan order, reset at each line's fly-back, where
the same column's previous lines predict; with feedforward off, the last locked frequency); the
first pixel of each plane and section, and the pixel after a lost one, start from a sweep over the
search range instead; with one point to extrapolate from, the step the line (or plane) before made
between the same pixels is added, and with none a local sweep of +-5 linewidths is made (`_predict`). `cycles` dither cycles: per cycle the microwave's centre is set, the pulse
generator plays the dither (`dither_cycle`: the source's external FM at +-delta), the counter's
two gates give (I+, I-), and `lock_step` moves the centre. Then `lock_pixel` gives the pixel's
frequency and its shot-noise error, and `lock_lost` compares the dither points' mean count with the
off-resonance count: a pixel whose points are not in the dip is recovered by a sweep over +-5
linewidths around the prediction (`recovery_sweep`) and locked again (state `recovered`), or
reported `lost` (f_sigma = inf). Python per cycle makes only the device calls.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from nvscope.proto.messages import LOCK_STATES, MRI_SCANS, Deer, Lock, MeasureCoherence, Message

from .config import MriConfig
from .hal import DeviceError, RigDevices, ScannerConstraints
from .kernels.lock import (RECOVERY_HALF_SPAN_FWHM, dither_delta, feedforward, lock_lost, lock_pixel,
                           lock_step, lorentzian_error_slope, recovery_sweep, sweep_minimum)
from .kernels.pulses import ShotTiming, coherence_shot, deer_pulse_times, dither_cycle
from .kernels.spin_constants import D_HZ, GAMMA_NV_HZ_PER_T, dark_rf_frequency
from .kernels.tip_stepping import TipPath, concat, section_path, stack_path
from .state import StateError

log = logging.getLogger(__name__)

RETRACTED, PSF, DEER = (MRI_SCANS.index(s) for s in ("retracted", "psf", "deer"))
LOCKED, RECOVERED, LOST = (LOCK_STATES.index(s) for s in ("locked", "recovered", "lost"))

DITHER_HALF_PERIOD_S: float = 50e-6
"""The dither's half period (s): the FM toggles at 10 kHz; a cycle's gate_s is counted over
gate_s / DITHER_HALF_PERIOD_S repetitions of the dither sequence (1 when gate_s is shorter)."""

SWEEP_STEP_FWHM: float = 0.25
"""The spacing of a sweep's frequencies, in linewidths (FWHM)."""

RECOVERY_POINTS: int = int(round(2 * RECOVERY_HALF_SPAN_FWHM / SWEEP_STEP_FWHM)) + 1
"""Frequencies of a recovery sweep over +-5 linewidths (41)."""

SWEEP_CYCLES: int = 4
"""Dither cycles' time counted at each frequency of a sweep (FM off): 4 x 2 gate_s."""


MIN_PHOTONS_PER_GATE: float = 1.0
"""Fewer photons per dither gate than this with the tip retracted cannot lock (the run fails at its start)."""

NEAR_ANTICROSSING_T: float = 0.05
"""A retracted line that puts B0 within this (T) of the ground-state level anticrossing is warned about."""


def anticrossing_warning(f_retracted_hz: float) -> str | None:
    """A one-line explanation (None when far) for a tip-retracted NV line (Hz) that puts B0 within
    NEAR_ANTICROSSING_T of the level anticrossing: there |gamma_NV B0 - D| = f, so B0 is f / gamma_NV from it."""
    distance_t = f_retracted_hz / GAMMA_NV_HZ_PER_T
    if distance_t >= NEAR_ANTICROSSING_T:
        return None
    return (f"the NV line with the tip retracted at {f_retracted_hz / 1e6:.1f} MHz puts B0 only "
            f"{distance_t * 1e3:.1f} mT from the ground-state level anticrossing ({D_HZ / GAMMA_NV_HZ_PER_T:.4f} T): "
            "the tip's field mixes ms = 0 and -1 there, the locked line is weak and far from the aligned-field "
            "formula, and B0 = (f + D) / gamma_NV behind f_rf and the analysis may be wrong (it assumes B0 above "
            "the anticrossing); NV-MRI wants B0 well above it (0.30 T: the line near 5.54 GHz), docs/physics.md "
            "section 2.3")


class MriPath(NamedTuple):
    """Every tip position of an NV-MRI run in order: scan (n,) index into MRI_SCANS, and the path."""

    scan: np.ndarray
    path: TipPath

    def __len__(self) -> int:
        return int(self.scan.shape[0])


def mri_path(mri: MriConfig) -> MriPath:
    """The run's tip positions in order: the retracted reference (0, 0, retract_z), the PSF stack, the
    DEER planes and the vertical sections (rt/kernels/tip_stepping.py)."""
    retracted = TipPath(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                        np.array([[0.0, 0.0, mri.retract_z]]), np.ones(1, bool))
    psf = stack_path(mri.nx, mri.ny, mri.x0, mri.y0, mri.step, mri.psf_gaps, mri.serpentine)
    deer = [stack_path(mri.nx, mri.ny, mri.x0, mri.y0, mri.step, mri.deer_gaps, mri.serpentine)]
    deer += [section_path(mri.nx, mri.x0, mri.step, s.y, s.gaps, mri.serpentine, len(mri.deer_gaps) + k)
             for k, s in enumerate(mri.sections)]
    deer_path = concat(deer)
    scan = np.concatenate([[RETRACTED], np.full(len(psf), PSF), np.full(len(deer_path), DEER)]).astype(np.int64)
    return MriPath(scan, concat([retracted, psf, deer_path]))


def _fields_of(mri: MriConfig, path: MriPath, i: int, axis: int) -> str:
    """The [mri] fields that put tip position i where it is along axis (0 x, 1 y, 2 z)."""
    scan, plane, iy = int(path.scan[i]), int(path.path.plane[i]), int(path.path.iy[i])
    n_deer = len(mri.deer_gaps)
    section = scan == DEER and plane >= n_deer
    if scan == RETRACTED:
        return "mri.retract_z"
    if axis == 0:
        return "mri.x0, mri.nx, mri.step"
    if axis == 1:
        return f"mri.sections[{plane - n_deer}].y" if section else "mri.y0, mri.ny, mri.step"
    if section:
        return f"mri.sections[{plane - n_deer}].gaps[{iy}]"
    return f"mri.psf_gaps[{plane}]" if scan == PSF else f"mri.deer_gaps[{plane}]"


def check_path(path: MriPath, travel: ScannerConstraints, mri: MriConfig | None = None) -> None:
    """ValueError (one line) for the first tip position at a gap <= 0 (the tip would touch the surface)
    or outside the scanner's travel: checked before anything moves (and when the rig's file loads).
    With `mri` (the config the path came from) the line names the fields that put it there."""
    xyz = path.path.xyz
    bad = np.flatnonzero(~(xyz[:, 2] > 0))
    if bad.size:
        i = int(bad[0])
        where = f" (set by {_fields_of(mri, path, i, 2)})" if mri is not None else ""
        raise ValueError(f"mri: tip position {i} at gap {xyz[i, 2]:.4g} m would be driven into the surface "
                         f"(every gap must be > 0 m){where}")
    for axis, (lo, hi) in enumerate((travel.x_range, travel.y_range, travel.z_range)):
        out = np.flatnonzero((xyz[:, axis] < lo) | (xyz[:, axis] > hi))
        if out.size:
            i = int(out[0])
            where = f"; set by {_fields_of(mri, path, i, axis)}" if mri is not None else ""
            raise ValueError(f"mri: tip position {i} ({', '.join(f'{v:.4g}' for v in xyz[i])}) m is outside the "
                             f"scanner's travel in {'xyz'[axis]} [{lo:.4g}, {hi:.4g}] m ({out.size} positions{where})")


class MriSequences(NamedTuple):
    """What an NV-MRI run plays, compiled and checked against the rig's devices (`check_mri`): the tip
    path, the dither's half-step delta (Hz), its repetitions per cycle and the dither cycle, and the DEER
    shot with the RF pi pulse and the echo without it (None without DEER positions)."""

    path: MriPath
    delta: float
    reps: int
    cycle: object
    deer_shot: object | None
    echo_shot: object | None


def check_mri(mri: MriConfig, devices: RigDevices, timing: ShotTiming = ShotTiming()) -> MriSequences:
    """Everything an NV-MRI run on `devices` can be refused for before it moves anything: the devices
    it needs, every tip position inside the scanner's travel and above the surface, the dither within
    the microwave's FM deviation, the dither cycle and DEER shots playable by the pulse generator.
    ValueError (one line, naming the [mri] field) otherwise; the rig calls it when its file loads
    (rt/devices.py) and again at run start (`MriPlan`)."""
    missing = [n for n in ("microwave", "counter", "pulser") if getattr(devices, n) is None]
    path = mri_path(mri)
    has_deer = bool((path.scan == DEER).any())
    if has_deer and devices.rf is None:
        missing.append("rf")
    if missing:
        raise ValueError(f"mri: this rig has no {', '.join(missing)} (an NV-MRI run needs them)")
    check_path(path, devices.scanner.constraints, mri)
    lk = mri.lock
    delta = dither_delta(lk.fwhm_hz)
    if delta > devices.microwave.constraints.max_fm_deviation_hz:
        raise ValueError(f"mri.lock.fwhm_hz: the dither of {delta:.4g} Hz it sets exceeds the microwave's FM "
                         f"deviation ({devices.microwave.constraints.max_fm_deviation_hz:.4g} Hz)")
    margin = RECOVERY_HALF_SPAN_FWHM * lk.fwhm_hz + delta  # a recovery sweep and the dither beyond the range
    f_lo, f_hi = devices.microwave.constraints.frequency_range
    if lk.search_lo_hz - margin < f_lo or lk.search_hi_hz + margin > f_hi:
        name = "mri.lock.search_lo_hz" if lk.search_lo_hz - margin < f_lo else "mri.lock.search_hi_hz"
        raise ValueError(f"{name}: the search range [{lk.search_lo_hz:.6g}, {lk.search_hi_hz:.6g}] Hz and the "
                         f"+-{margin:.4g} Hz a lock may sweep beyond it leave the microwave's range "
                         f"[{f_lo:.6g}, {f_hi:.6g}] Hz")
    reps = max(1, round(lk.gate_s / DITHER_HALF_PERIOD_S))
    cycle = dither_cycle(lk.gate_s / reps)
    shots = [("mri.lock.gate_s", cycle)]
    deer_shot = echo_shot = None
    if has_deer:
        nv, rf = deer_pulse_times(mri.tau_s)
        deer_shot = coherence_shot(mri.tau_s, nv, timing, rf_times=rf)
        echo_shot = coherence_shot(mri.tau_s, nv, timing)
        shots += [("mri.tau_s", deer_shot), ("mri.tau_s", echo_shot)]
    pulser = devices.pulser.constraints
    for name, shot in shots:  # a sequence the generator cannot play is refused before anything moves
        try:
            pulser.check(shot)
        except DeviceError as exc:
            raise ValueError(f"{name}: {exc}") from None
    for name, n in (("mri.lock.gate_s", reps * max(lk.cycles, SWEEP_CYCLES)), ("mri.deer_shots", mri.deer_shots)):
        if n > pulser.max_repetitions:
            raise ValueError(f"{name}: {n} repetitions in one play exceed the pulse generator's "
                             f"{pulser.max_repetitions}")
    return MriSequences(path, delta, reps, cycle, deer_shot, echo_shot)


class MriPlan:
    """An NV-MRI run: one step per tip position (module docstring); `stats` counts the lock states,
    the search sweeps and the recovery sweeps."""

    def __init__(self, run_id: str, mri: MriConfig, devices: RigDevices, timing: ShotTiming = ShotTiming()):
        checked = check_mri(mri, devices, timing)
        self.path = checked.path
        self.run_id, self.mri, self.devices, lk = run_id, mri, devices, mri.lock
        self.delta = checked.delta
        self.slope = lorentzian_error_slope(lk.fwhm_hz, lk.contrast, self.delta)
        self.reps, self.cycle = checked.reps, checked.cycle
        self.deer_shot, self.echo_shot = checked.deer_shot, checked.echo_shot
        self.grids = {}  # (scan, plane) -> locked frequencies (lines, nx) Hz, NaN where not (yet) locked
        for scan, plane, iy in zip(self.path.scan, self.path.path.plane, self.path.path.iy):
            key = (int(scan), int(plane))
            self.grids[key] = max(self.grids.get(key, 0), int(iy) + 1)
        self.grids = {k: np.full((n, mri.nx), np.nan) for k, n in self.grids.items()}
        self.counts = np.zeros((lk.cycles, 2), np.int64)
        self.centres = np.zeros(lk.cycles)  # the dither centre (Hz) each cycle was acquired at
        self.line: list[float] = []  # locked frequencies of the line so far (Hz)
        self.grid: np.ndarray | None = None  # of the plane or section being scanned
        self.previous: np.ndarray | None = None  # of the one before it, when of the same kind
        self.kind: tuple | None = None  # (scan, is a section) of the grid being scanned
        self.last_f = math.nan  # the last locked frequency in scan order (Hz)
        self.i0 = math.nan  # off-resonance photons per gate of one cycle
        self.f_retracted = math.nan
        self.f_rf = math.nan
        self.loaded = None
        self.next = 0
        self.stats = {"locked": 0, "recovered": 0, "lost": 0, "searches": 0, "recoveries": 0}

    # ------------------------------------------------------------------ the Plan protocol
    @property
    def ready(self) -> bool:
        """A tip position is left."""
        return self.next < len(self.path)

    @property
    def done(self) -> bool:
        """Every tip position is taken."""
        return not self.ready

    def add(self, cmd: MeasureCoherence) -> None:
        """An NV-MRI run takes no coherence measurements."""
        raise StateError("an mri run takes no measure_coherence")

    def drop(self) -> list:
        """Forget the tip positions not visited (the run ends early); returns their indices."""
        left, self.next = list(range(self.next, len(self.path))), len(self.path)
        return left

    def step(self, seq: int) -> tuple[Message, ...]:
        """Visit the next tip position: its `lock` (numbered `seq`), and for DEER its `deer` (seq + 1)."""
        i = self.next
        self.next += 1
        p = self.path.path
        scan, plane, ix, iy = int(self.path.scan[i]), int(p.plane[i]), int(p.ix[i]), int(p.iy[i])
        xyz = p.xyz[i]
        self.devices.scanner.move_to(float(xyz[0]), float(xyz[1]), float(xyz[2]))
        if scan == RETRACTED:
            f, sigma, state, cycles, photons = self._retracted()
        else:
            if p.line_start[i]:
                self.line = []
            grid = self.grids[(scan, plane)]
            if self.path.scan[i - 1] != scan or p.plane[i - 1] != plane:
                predicted = math.nan  # a plane's or section's first pixel: search
                kind = (scan, scan == DEER and plane >= len(self.mri.deer_gaps))  # a plane or a section
                self.previous = self.grid if kind == self.kind else None
                self.grid, self.kind = grid, kind
            elif not self.mri.lock.feedforward:
                predicted = self.last_f
            else:
                predicted = self._predict(ix, iy, int(p.ix[i - 1]))
            f, sigma, state, cycles, photons = self._lock(predicted)
            found = f if state != LOST else math.nan
            grid[iy, ix] = found
            if state == RECOVERED:  # the line jumped: extrapolate from here, not across the jump
                self.line = []
            self.line.append(found)
            self.last_f = found if state != LOST else self.last_f
        position = np.array(xyz, dtype=np.float64)
        lock = Lock(run_id=self.run_id, seq=seq, index=i, scan=scan, plane=plane, ix=ix, iy=iy, position=position,
                    f_lock_hz=float(f), f_sigma_hz=float(sigma), state=state, cycles=cycles, photons=photons)
        if scan != DEER:
            return (lock,)
        n_rf, n_ref = self._deer(f)
        return lock, Deer(run_id=self.run_id, seq=seq + 1, index=i, scan=scan, plane=plane, ix=ix, iy=iy,
                          position=position, f_rf_hz=self.f_rf, tau_s=self.mri.tau_s, shots=self.mri.deer_shots,
                          n_rf=n_rf, n_ref=n_ref)

    def _predict(self, ix: int, iy: int, ix_before: int) -> float:
        """Feedforward (Hz) for pixel (ix, iy) of the current grid (the lock's start; module docstring):
        a line's first pixel extrapolates its column over the lines before, its second pixel the line
        from its first; with only one point to go on, the step between the same two pixels of the line
        before (or of the previous plane) is added; with none, a local sweep of +-5 linewidths around
        the one point; further on, the line's own extrapolation (`feedforward`, NaN: search)."""
        g, prev = self.grid, self.previous
        if self.line:
            if len(self.line) > 1:
                return feedforward(np.array(self.line), math.nan)
            last = self.line[0]
            ref = g[iy - 1] if iy > 0 else (prev[0] if prev is not None else None)
            step = math.nan if ref is None else ref[ix] - ref[ix_before]
        else:
            if iy > 1:
                return feedforward(np.ascontiguousarray(g[iy - 2:iy, ix]), math.nan)
            last = g[0, ix]
            if prev is not None and prev.shape[0] >= 2:
                step = prev[1, ix] - prev[0, ix]
            elif self.kind[1]:
                return math.nan  # a section's lines are gaps apart: search
            else:
                step = math.nan  # a plane's lines are a step apart: the local sweep below
        if not math.isfinite(last):
            return math.nan
        if math.isfinite(step):
            return last + step
        self.stats["searches"] += 1
        return self._sweep(recovery_sweep(last, self.mri.lock.fwhm_hz, RECOVERY_POINTS))

    # ------------------------------------------------------------------ device work
    def _load(self, sequence) -> None:
        if self.loaded is not sequence:
            self.devices.pulser.load(sequence)
            self.loaded = sequence

    def _retracted(self) -> tuple[float, float, int, int, int]:
        """The tip-retracted reference: off-resonance count (microwave off), search, lock; f_rf from it."""
        mw, counter, pulser, lk = self.devices.microwave, self.devices.counter, self.devices.pulser, self.mri.lock
        mw.set_fm_deviation(0.0)
        mw.set_output(False)
        self._load(self.cycle)
        counter.arm()
        pulser.play(self.reps * lk.cycles)
        g = counter.gated_counts()
        self.i0 = (g.signal + g.reference) / (2.0 * lk.cycles)
        if not self.i0 >= MIN_PHOTONS_PER_GATE:
            raise DeviceError(f"mri: {self.i0 * lk.cycles:.4g} photons in {lk.cycles} gates of mri.lock.gate_s = "
                              f"{lk.gate_s:.4g} s with the tip retracted, under {MIN_PHOTONS_PER_GATE:g} per gate: "
                              "too few for a lock (a longer gate_s; or is the laser or counter off?)")
        mw.set_output(True)
        f, sigma, state, cycles, photons = self._lock(math.nan)
        if state == LOST:
            raise DeviceError(f"mri: no ODMR line found with the tip retracted in mri.lock.search_lo_hz.."
                              f"search_hi_hz [{lk.search_lo_hz:.6g}, {lk.search_hi_hz:.6g}] Hz")
        warning = anticrossing_warning(f)
        if warning:
            log.warning("run %s: %s", self.run_id, warning)
        self.f_retracted = f
        self.f_rf = dark_rf_frequency(f, self.mri.rf_offset_hz)
        if self.devices.rf is not None:
            self.devices.rf.set_frequency(self.f_rf)
            self.devices.rf.set_output(True)
        log.info("run %s: NV line with the tip retracted at %.6f GHz (+- %.3g kHz); f_rf %.6f GHz", self.run_id,
                 f / 1e9, sigma / 1e3, self.f_rf / 1e9)
        return f, sigma, state, cycles, photons

    def _lock(self, predicted: float) -> tuple[float, float, int, int, int]:
        """Lock at this tip position from `predicted` (Hz; NaN: search sweep first): (f_lock Hz,
        f_sigma Hz, state, cycles, photons) over every lock attempt here."""
        fwhm = self.mri.lock.fwhm_hz
        if math.isfinite(predicted):
            start = predicted
        else:
            lo, hi = self.mri.lock.search_lo_hz, self.mri.lock.search_hi_hz
            start = self._sweep(np.arange(lo, hi + 0.5 * SWEEP_STEP_FWHM * fwhm, SWEEP_STEP_FWHM * fwhm))
            self.stats["searches"] += 1
        f, sigma, ok, photons = self._lock_from(start)
        cycles, state = self.mri.lock.cycles, LOCKED
        if not ok:
            self.stats["recoveries"] += 1
            start = self._sweep(recovery_sweep(start, fwhm, RECOVERY_POINTS))
            f, sigma, ok, more = self._lock_from(start)
            cycles, photons = 2 * cycles, photons + more
            state = RECOVERED if ok else LOST
        if state == LOST:
            f, sigma = start, math.inf
        self.stats[LOCK_STATES[state]] += 1
        return f, sigma, state, cycles, photons

    def _sweep(self, freqs: np.ndarray) -> float:
        """The dip's centre (Hz) from CW counts (FM off) at `freqs` (Hz), SWEEP_CYCLES dither cycles' time each."""
        mw, counter, pulser = self.devices.microwave, self.devices.counter, self.devices.pulser
        mw.set_fm_deviation(0.0)
        self._load(self.cycle)
        counts = np.empty(freqs.shape[0], np.float64)
        for j in range(freqs.shape[0]):
            mw.set_frequency(float(freqs[j]))
            counter.arm()
            pulser.play(self.reps * SWEEP_CYCLES)
            g = counter.gated_counts()
            counts[j] = g.signal + g.reference
        return sweep_minimum(freqs, counts, self.mri.lock.fwhm_hz)

    def _lock_from(self, f_start: float) -> tuple[float, float, bool, int]:
        """`cycles` dither cycles from f_start (Hz): (f_lock Hz, f_sigma Hz, held, photons)."""
        mw, counter, pulser, lk = self.devices.microwave, self.devices.counter, self.devices.pulser, self.mri.lock
        mw.set_fm_deviation(self.delta)
        self._load(self.cycle)
        counts, centres, delta, slope, gain, reps = self.counts, self.centres, self.delta, self.slope, lk.gain, self.reps
        f_c = f_start
        for k in range(lk.cycles):
            centres[k] = f_c
            mw.set_frequency(f_c)
            counter.arm()
            pulser.play(reps)
            g = counter.gated_counts()
            counts[k, 0] = g.signal
            counts[k, 1] = g.reference
            f_c = lock_step(f_c, counts[k, 0], counts[k, 1], delta, slope, gain)[0]
        _, f_lock, f_sigma, _ = lock_pixel(f_start, counts, delta, lk.fwhm_hz, lk.contrast, gain, lk.n_settle)
        used, settled = counts[lk.n_settle:], centres[lk.n_settle:]
        # held: the dither points sit in the dip, the centre had converged on the estimate (on average within
        # HWHM / 2, every cycle within 3 HWHM: not wandering in the tails), and the error bar is a real one
        held = not lock_lost(float(used.mean()) / self.i0, lk.contrast) \
            and abs(float(settled.mean()) - f_lock) < 0.25 * lk.fwhm_hz \
            and float(np.abs(settled - f_lock).max()) < 0.75 * lk.fwhm_hz and 0.0 < f_sigma < math.inf
        return float(f_lock), float(f_sigma), held, int(counts.sum())

    def _deer(self, f_lock: float) -> tuple[int, int]:
        """DEER at this tip position: (photons with the RF pi pulse, without) over deer_shots echoes each."""
        mw, counter, pulser = self.devices.microwave, self.devices.counter, self.devices.pulser
        mw.set_fm_deviation(0.0)
        mw.set_frequency(f_lock)
        out = []
        for shot in (self.deer_shot, self.echo_shot):
            self._load(shot)
            counter.arm()
            pulser.play(self.mri.deer_shots)
            out.append(counter.gated_counts().signal)
        return out[0], out[1]


__all__ = ["RETRACTED", "PSF", "DEER", "LOCKED", "RECOVERED", "LOST", "DITHER_HALF_PERIOD_S", "MIN_PHOTONS_PER_GATE",
           "NEAR_ANTICROSSING_T", "MriPath", "mri_path", "check_path", "MriSequences", "check_mri", "MriPlan",
           "anticrossing_warning"]
