"""Rig configuration: dataclasses read from a TOML file, every field validated, errors name the field."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from nvscope.proto.endpoints import PEER_TIMEOUT_S
from nvscope.proto.histogram import HISTOGRAM_MODES

from .kernels.pulses import ShotTiming


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field (e.g. 'scan.dwell_s')."""


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: object, where: str) -> T:
    """Build dataclass `cls` from a dict, checking every key and type; `where` names the section."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    absent = [n for n in required if n not in data]
    if absent:
        raise ConfigError(f"{where}.{absent[0]}: missing (required: {', '.join(required)})")
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:  # missing fields, or a dataclass's own range check
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def _convert(hint: object, value: object, where: str) -> object:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)[:1]
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return value
    raise ConfigError(f"{where}: unsupported field type {hint!r}")  # pragma: no cover


def require(cond: bool, where: str, what: str) -> None:
    """Raise ConfigError('where: what') unless cond."""
    if not cond:
        raise ConfigError(f"{where}: {what}")


MAX_GRID_SIDE = 4096
"""The most pixels along one side of a raster (a 4096 x 4096 scan at 0.2 s a pixel takes 39 days)."""
MAX_CHANNEL_DELAY_S = 100e-9
"""The largest channel delay (s) a scan config accepts: well inside the +-250 ns histogram window."""


@dataclass(frozen=True)
class ScanConfig:
    """A 2D raster: nx x ny pixels of `step` m from (x0, y0) m at height z m, `dwell_s` s per pixel.

    Adaptive dwell (`adaptive_g2_std` > 0): each pixel is acquired in slices of `slice_s` s. After
    each slice but the last, the pixel so far goes to the host as a `partial_pixel` and the next
    slice starts at once; the host's answers are taken as they arrive. An answer to any slice of the
    pixel counts (an earlier one had fewer photons, so its error is only larger). The rig decides on
    each answer's `predicted_std`, the g2(0) error predicted from the pixel's singles and the scan's
    model, never from the pixel's own estimate (a rule on that biases the stopped pixels low): the
    pixel ends at the first slice boundary by which an answer says it is below `adaptive_g2_std`
    (reached), or by which `predicted_std * sqrt(dwell / max_dwell_s)` is above it (it cannot reach
    the target within `max_dwell_s` at its rate: given up), or at `max_dwell_s`; an answer without a
    prediction (NaN) keeps it acquiring. A host that answers within a slice is never waited for: the pixel ends one
    slice after the slice whose answer first said enough. The rig stays at most one slice ahead of
    the answers: when the answer to the slice before the one just sent has not come, it waits for
    it, at most `reply_timeout_s` s per pixel in all, and then acquires on without waiting at that
    pixel (warned once per run). `dwell_s` is not used (a pixel gets at least one slice).

    Zero delay (docs/physics.md section 1.10): `delay_a_s`, `delay_b_s` are the cable and electronic
    delays of detector A's and B's channel in s (default 0, finite, |d| < 100 ns). The rig subtracts
    them from the tags before binning, so a pair's delay is tau = (t_B - delay_b_s) - (t_A - delay_a_s);
    only their difference matters. Measure them once (`models.g2.zero_delay.fit_zero_delay` on a
    bright scan's summed histogram gives delay_b_s - delay_a_s).
    """

    nx: int = 12
    ny: int = 12
    x0: float = -0.6e-6
    y0: float = -0.6e-6
    step: float = 100e-9
    z: float = 0.0
    dwell_s: float = 0.2
    slice_s: float = 0.05
    histogram_mode: str = "allpairs"
    tac_dead_s: float = 0.0
    adaptive_g2_std: float = 0.0
    """Target g2(0) error of adaptive dwell (0: off, every pixel gets `dwell_s`)."""
    max_dwell_s: float = 0.0
    """The longest a pixel is acquired with adaptive dwell on (s)."""
    reply_timeout_s: float = 0.5
    """The most rt waits per pixel for a host more than a slice behind in its answers (s)."""
    delay_a_s: float = 0.0
    """Delay of detector A's channel (cable, electronics) in s, subtracted from its tags before binning."""
    delay_b_s: float = 0.0
    """Delay of detector B's channel in s, subtracted from its tags before binning."""

    @property
    def adaptive(self) -> bool:
        """True when adaptive dwell is on."""
        return self.adaptive_g2_std > 0

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(1 <= self.nx <= MAX_GRID_SIDE, f"{where}.nx", f"must be in [1, {MAX_GRID_SIDE}], got {self.nx}")
        require(1 <= self.ny <= MAX_GRID_SIDE, f"{where}.ny", f"must be in [1, {MAX_GRID_SIDE}], got {self.ny}")
        for name in ("x0", "y0", "z"):
            require(math.isfinite(getattr(self, name)), f"{where}.{name}", f"must be finite (m), got {getattr(self, name)}")
        require(math.isfinite(self.step) and self.step > 0, f"{where}.step", f"must be finite and > 0 m, got {self.step}")
        require(math.isfinite(self.dwell_s) and self.dwell_s > 0, f"{where}.dwell_s",
                f"must be finite and > 0 s, got {self.dwell_s}")
        require(math.isfinite(self.slice_s) and 0 < self.slice_s, f"{where}.slice_s",
                f"must be finite and > 0 s, got {self.slice_s}")
        require(self.histogram_mode in HISTOGRAM_MODES, f"{where}.histogram_mode",
                f"must be {' or '.join(map(repr, HISTOGRAM_MODES))}, got {self.histogram_mode!r}")
        require(math.isfinite(self.tac_dead_s) and self.tac_dead_s >= 0, f"{where}.tac_dead_s",
                f"must be finite and >= 0 s, got {self.tac_dead_s}")
        for name in ("delay_a_s", "delay_b_s"):
            d = getattr(self, name)
            require(math.isfinite(d) and abs(d) < MAX_CHANNEL_DELAY_S, f"{where}.{name}",
                    f"must be a finite channel delay within +-{MAX_CHANNEL_DELAY_S:g} s, got {d}")
        self.check_adaptive(where)

    def check_adaptive(self, where: str) -> None:
        """Validate the adaptive-dwell fields; raise ConfigError naming the field."""
        require(math.isfinite(self.adaptive_g2_std) and self.adaptive_g2_std >= 0, f"{where}.adaptive_g2_std",
                f"must be a finite g2(0) error >= 0 (0: off), got {self.adaptive_g2_std}")
        require(math.isfinite(self.max_dwell_s) and self.max_dwell_s >= 0, f"{where}.max_dwell_s",
                f"must be >= 0 s, got {self.max_dwell_s}")
        require(math.isfinite(self.reply_timeout_s) and self.reply_timeout_s > 0, f"{where}.reply_timeout_s",
                f"must be > 0 s, got {self.reply_timeout_s}")
        if self.adaptive:
            require(self.max_dwell_s >= self.slice_s, f"{where}.max_dwell_s",
                    f"must be >= slice_s ({self.slice_s} s) with adaptive_g2_std on, got {self.max_dwell_s}")


@dataclass(frozen=True)
class LinkConfig:
    """The rt side of the link: unacknowledged messages kept on disk, at most `window` of them."""

    spool_dir: str = ""
    """The journal's folder (default: one per rig, named after its bind endpoint; rt/rig_main.py)."""
    window: int = 2000
    resend_after_s: float = 2.0
    heartbeat_s: float = 1.0
    peer_timeout_s: float = PEER_TIMEOUT_S
    """A host silent this long is reported, and another host may take over the rig."""
    key_file: str = ""
    """The rig's CurveZMQ secret key file (`nvscope keys init`); with `allowed_hosts`, the link is
    encrypted and only the listed hosts connect (required to bind beyond loopback)."""
    allowed_hosts: str = ""
    """A host public key file (.key), or a folder of them: the hosts allowed to connect."""

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(self.window >= 1, f"{where}.window", f"must be >= 1, got {self.window}")
        require(math.isfinite(self.resend_after_s) and self.resend_after_s > 0, f"{where}.resend_after_s",
                f"must be finite and > 0 s, got {self.resend_after_s}")
        require(math.isfinite(self.heartbeat_s) and self.heartbeat_s > 0, f"{where}.heartbeat_s",
                f"must be finite and > 0 s, got {self.heartbeat_s}")
        require(math.isfinite(self.peer_timeout_s) and self.peer_timeout_s >= max(2.0, 2 * self.heartbeat_s),
                f"{where}.peer_timeout_s", f"must be finite and >= 2 s and twice heartbeat_s (the host heartbeats "
                f"every second), got {self.peer_timeout_s}")
        require(bool(self.key_file) == bool(self.allowed_hosts), f"{where}.{'allowed_hosts' if self.key_file else 'key_file'}",
                "missing: CurveZMQ needs both key_file (the rig's secret key) and allowed_hosts (the hosts' public keys)")


@dataclass(frozen=True)
class RetryConfig:
    """`[retry]`: an instrument call that times out is retried `attempts` times, `pause_s` apart, each
    retry recorded in the run (/notices); after that the run fails saying so."""

    attempts: int = 3
    pause_s: float = 1.0

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(0 <= self.attempts <= 100, f"{where}.attempts", f"must be in [0, 100], got {self.attempts}")
        require(math.isfinite(self.pause_s) and 0 <= self.pause_s <= 600, f"{where}.pause_s",
                f"must be in [0, 600] s, got {self.pause_s}")


DARK_FRACTION = 0.33
"""Dark-reference shots per sequence shot of a coherence point (the error per unit of measurement time
is within 1.33x of the best fraction for every C in [0.05, 0.95] and t in [0.1, 300] us at 0.03 photons
per shot and 25 % contrast; the best lies between 0.05 at C near 1 and short t and 2 at low C and long t)."""
BLOCK_S = 1.0
"""Longest block (s of sequence time) of one kind of shot before the other kind is interleaved."""


def dark_repetitions_for(repetitions: int, dark_fraction: float = DARK_FRACTION) -> int:
    """Dark-reference shots per point for `repetitions` sequence shots: round(fraction x repetitions), >= 1."""
    return max(1, int(round(dark_fraction * repetitions)))


@dataclass(frozen=True)
class CoherenceConfig:
    """Coherence curves: optical readout shots averaged per point (at ~0.03 photons per shot and
    25 % contrast, 1e7 shots give a coherence error of about 0.014), each point's shots interleaved
    with `dark_fraction` x as many dark-reference shots (one pi pulse) in blocks of at most `block_s`
    s of sequence time (rt/coherence.py); a point costs repetitions x the shot's length plus
    dark_repetitions x the dark shot's (4.1 us with the default timing)."""

    repetitions: int = 10_000_000
    timing: ShotTiming = field(default_factory=ShotTiming)
    """`[coherence.timing]`: pulse durations of a shot in s (pi_s, pi_half_s: 0 is the ideal pulse;
    min_gap_s: the shortest free time between microwave pulses)."""
    dark_fraction: float = DARK_FRACTION
    block_s: float = BLOCK_S

    @property
    def dark_repetitions(self) -> int:
        """Dark-reference shots per point."""
        return dark_repetitions_for(self.repetitions, self.dark_fraction)

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(self.repetitions >= 1, f"{where}.repetitions", f"must be >= 1, got {self.repetitions}")
        require(math.isfinite(self.dark_fraction) and 0 < self.dark_fraction <= 10, f"{where}.dark_fraction",
                f"must be in (0, 10] dark-reference shots per sequence shot, got {self.dark_fraction}")
        require(math.isfinite(self.block_s) and self.block_s > 0, f"{where}.block_s",
                f"must be > 0 s, got {self.block_s}")


@dataclass(frozen=True)
class MriLockConfig:
    """`[mri.lock]`: the NV frequency lock (docs/physics.md section 2.4; rt/kernels/lock.py).

    fwhm_hz, contrast: the CW ODMR dip the lock assumes (Hz, 0-1); gain: fraction of the estimated
    offset corrected per cycle; gate_s: photon-counting time per dither point and cycle (s; a cycle
    is 2 gate_s: f + delta, then f - delta); cycles: dither cycles per tip position; n_settle: the
    first cycles of a pixel left out of its estimate; feedforward: start each pixel from the
    extrapolation of the previous ones in its line (reset at each line's fly-back; off: from the
    last locked frequency); search_lo_hz, search_hi_hz: where the line may be anywhere in the run
    (Hz): swept with the tip retracted, and at the first pixel of every plane and section.
    """

    fwhm_hz: float = 8e6
    contrast: float = 0.15
    gain: float = 0.3
    gate_s: float = 1e-3
    cycles: int = 40
    n_settle: int = 10
    feedforward: bool = True
    search_lo_hz: float = 5.50e9
    search_hi_hz: float = 6.40e9

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(math.isfinite(self.fwhm_hz) and self.fwhm_hz > 0, f"{where}.fwhm_hz", f"must be > 0 Hz, got {self.fwhm_hz}")
        require(0 < self.contrast < 1, f"{where}.contrast", f"must be in (0, 1), got {self.contrast}")
        require(0 < self.gain <= 1, f"{where}.gain", f"must be in (0, 1], got {self.gain}")
        require(math.isfinite(self.gate_s) and self.gate_s > 0, f"{where}.gate_s", f"must be > 0 s, got {self.gate_s}")
        require(self.cycles >= 1, f"{where}.cycles", f"must be >= 1, got {self.cycles}")
        require(0 <= self.n_settle < self.cycles, f"{where}.n_settle",
                f"must be in [0, cycles = {self.cycles}), got {self.n_settle}")
        require(math.isfinite(self.search_lo_hz) and self.search_lo_hz > 0, f"{where}.search_lo_hz",
                f"must be > 0 Hz, got {self.search_lo_hz}")
        require(math.isfinite(self.search_hi_hz) and self.search_hi_hz > self.search_lo_hz + 2 * self.fwhm_hz,
                f"{where}.search_hi_hz", f"must exceed search_lo_hz by more than 2 fwhm_hz, got {self.search_hi_hz}")


@dataclass(frozen=True)
class MriSection:
    """A vertical DEER section along x (the grid's nx, x0, step) at `y` (m), one line per apex height in
    `gaps` (m)."""

    y: float
    gaps: tuple[float, ...]


def _gaps_positive(gaps: tuple[float, ...], where: str) -> None:
    for i, g in enumerate(gaps):
        require(math.isfinite(g) and g > 0, f"{where}[{i}]",
                f"must be > 0 m (a tip at gap {g} m would be driven into the surface)")


@dataclass(frozen=True)
class MriConfig:
    """`[mri]`: an NV-MRI run (docs/physics.md section 2; rt/mri.py), SI units.

    nx, ny, x0, y0, step: the lateral grid (m; x, y from the NV's lateral position) of every plane,
    PSF and DEER alike. psf_gaps: apex heights above the surface (m), increasing and evenly spaced:
    the PSF stack (a locked-frequency map per gap). deer_gaps: apex heights (m) of the DEER planes.
    sections: vertical DEER sections ({y (m), gaps (m)}) along x. serpentine: scan every other line
    in -x (else every line in +x, with a fly-back). retract_z: the apex height (m) of the
    tip-retracted reference. rf_offset_hz: f_rf = gamma_dark B0 + rf_offset_hz, B0 from the retracted
    line (rt.kernels.spin_constants.dark_rf_frequency). tau_s: the DEER echo's total time (s);
    deer_shots: shots per DEER pixel, with RF and as many without. nv_depth_m, t2star_dark_s: what the
    analysis assumes of the sample (m, s). `[mri.lock]`: the lock.
    """

    nx: int = 21
    ny: int = 21
    x0: float = -10e-9
    y0: float = -10e-9
    step: float = 1e-9
    psf_gaps: tuple[float, ...] = (14e-9, 17e-9, 20e-9, 23e-9)
    deer_gaps: tuple[float, ...] = (20e-9,)
    sections: tuple[MriSection, ...] = ()
    serpentine: bool = True
    retract_z: float = 2e-6
    rf_offset_hz: float = 630e6
    tau_s: float = 2e-6
    deer_shots: int = 1_000_000
    nv_depth_m: float = 10e-9
    t2star_dark_s: float = 150e-9
    lock: MriLockConfig = field(default_factory=MriLockConfig)

    def check(self, where: str) -> None:
        """Validate ranges (every gap > 0, psf_gaps increasing and evenly spaced); ConfigError naming the field."""
        require(self.nx >= 1, f"{where}.nx", f"must be >= 1, got {self.nx}")
        require(self.ny >= 1, f"{where}.ny", f"must be >= 1, got {self.ny}")
        for name in ("x0", "y0"):
            require(math.isfinite(getattr(self, name)), f"{where}.{name}", "must be finite (m)")
        require(math.isfinite(self.step) and self.step > 0, f"{where}.step", f"must be > 0 m, got {self.step}")
        require(len(self.psf_gaps) >= 1, f"{where}.psf_gaps", "must list at least one apex height (m)")
        _gaps_positive(self.psf_gaps, f"{where}.psf_gaps")
        _gaps_positive(self.deer_gaps, f"{where}.deer_gaps")
        d = [b - a for a, b in zip(self.psf_gaps, self.psf_gaps[1:])]
        require(all(x > 0 for x in d), f"{where}.psf_gaps", f"must be increasing, got {list(self.psf_gaps)}")
        require(all(abs(x - d[0]) <= 1e-6 * d[0] for x in d), f"{where}.psf_gaps",
                f"must be evenly spaced, got steps of {', '.join(f'{x:.4g}' for x in d)} m")
        for k, sec in enumerate(self.sections):
            require(math.isfinite(sec.y), f"{where}.sections[{k}].y", "must be finite (m)")
            require(len(sec.gaps) >= 1, f"{where}.sections[{k}].gaps", "must list at least one apex height (m)")
            _gaps_positive(sec.gaps, f"{where}.sections[{k}].gaps")
        require(math.isfinite(self.retract_z) and self.retract_z > 0, f"{where}.retract_z",
                f"must be > 0 m, got {self.retract_z}")
        require(math.isfinite(self.rf_offset_hz), f"{where}.rf_offset_hz", "must be finite (Hz)")
        require(math.isfinite(self.tau_s) and self.tau_s > 0, f"{where}.tau_s", f"must be > 0 s, got {self.tau_s}")
        require(self.deer_shots >= 1, f"{where}.deer_shots", f"must be >= 1, got {self.deer_shots}")
        require(math.isfinite(self.nv_depth_m) and self.nv_depth_m > 0, f"{where}.nv_depth_m",
                f"must be > 0 m, got {self.nv_depth_m}")
        require(self.t2star_dark_s > 0, f"{where}.t2star_dark_s", f"must be > 0 s, got {self.t2star_dark_s}")


DEVICE_KINDS: tuple[str, ...] = ("sim", "visa_microwave", "visa_piezo", "swabian")
"""The drivers a `[devices]` entry may name (`kind`); VISA drivers come with the headless rig."""


@dataclass(frozen=True)
class DevicesConfig:
    """`[devices]`: one table per instrument, e.g. `tagger = {kind = "sim"}`; an absent (empty) entry
    means the rig has no such device (scanner and tagger are required)."""

    scanner: dict = field(default_factory=dict)
    tagger: dict = field(default_factory=dict)
    microwave: dict = field(default_factory=dict)
    counter: dict = field(default_factory=dict)
    pulser: dict = field(default_factory=dict)
    rf: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        """Every entry names a known driver; a "sim" entry takes only kind (a driver's own fields are
        checked by rt/devices.py against its config dataclass); raise ConfigError naming the field."""
        for name in (f.name for f in dataclasses.fields(self)):
            table = getattr(self, name)
            if not table:
                continue
            kind = table.get("kind")
            require(kind is not None, f"{where}.{name}.kind", f"missing (known: {', '.join(DEVICE_KINDS)})")
            require(kind in DEVICE_KINDS, f"{where}.{name}.kind",
                    f"no driver {kind!r} (known: {', '.join(DEVICE_KINDS)})")
            extra = sorted(set(table) - {"kind"})
            require(kind != "sim" or not extra, f"{where}.{name}.{extra[0] if extra else ''}",
                    "unknown field (a 'sim' device takes only kind; the simulation is set in [sim])")

    @property
    def configured(self) -> bool:
        """True when the table names at least one device."""
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class RigConfig:
    """Everything the rig needs: the scan, the link, the seed, its devices, the NV-MRI run (`mri`) and
    the simulated sample (`sim`)."""

    seed: int = 1
    scan: ScanConfig = field(default_factory=ScanConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    coherence: CoherenceConfig = field(default_factory=CoherenceConfig)
    mri: MriConfig = field(default_factory=MriConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    sim: dict = field(default_factory=dict)

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(0 <= self.seed < 2**63, f"{where}.seed", f"must be an integer in [0, 2^63), got {self.seed}")


def load_rig_config(path: str | Path | None) -> RigConfig:
    """Read a rig TOML file (None: the defaults); raises ConfigError with the file and field named."""
    if path is None:
        return RigConfig()
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return from_dict(RigConfig, data, str(Path(path).name))
