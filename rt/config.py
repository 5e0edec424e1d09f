"""Rig configuration: dataclasses read from a TOML file, every field validated, errors name the field."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class ScanConfig:
    """A 2D raster: nx x ny pixels of `step` m from (x0, y0) m at height z m, `dwell_s` s per pixel.

    Adaptive dwell (`adaptive_g2_std` > 0): each pixel is acquired in slices of `slice_s` s. After
    each slice but the last, the pixel so far goes to the host as a `partial_pixel` and the next
    slice starts at once; the host's answers are taken as they arrive. An answer to any slice of the
    pixel counts (an earlier one had fewer photons, so its error is only larger). The pixel ends at
    the first slice boundary by which an answer says its g2(0) error is below `adaptive_g2_std`, or
    at `max_dwell_s`. A host that answers within a slice is never waited for: the pixel ends one
    slice after the slice whose answer first said enough. The rig stays at most one slice ahead of
    the answers: when the answer to the slice before the one just sent has not come, it waits for
    it, at most `reply_timeout_s` s per pixel in all, and then acquires on without waiting at that
    pixel (warned once per run). `dwell_s` is not used (a pixel gets at least one slice).
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

    @property
    def adaptive(self) -> bool:
        """True when adaptive dwell is on."""
        return self.adaptive_g2_std > 0

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(self.nx >= 1, f"{where}.nx", f"must be >= 1, got {self.nx}")
        require(self.ny >= 1, f"{where}.ny", f"must be >= 1, got {self.ny}")
        require(self.step > 0, f"{where}.step", f"must be > 0 m, got {self.step}")
        require(self.dwell_s > 0, f"{where}.dwell_s", f"must be > 0 s, got {self.dwell_s}")
        require(0 < self.slice_s, f"{where}.slice_s", f"must be > 0 s, got {self.slice_s}")
        require(self.histogram_mode in HISTOGRAM_MODES, f"{where}.histogram_mode",
                f"must be {' or '.join(map(repr, HISTOGRAM_MODES))}, got {self.histogram_mode!r}")
        require(self.tac_dead_s >= 0, f"{where}.tac_dead_s", f"must be >= 0 s, got {self.tac_dead_s}")
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
    window: int = 2000
    resend_after_s: float = 2.0
    heartbeat_s: float = 1.0

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(self.window >= 1, f"{where}.window", f"must be >= 1, got {self.window}")
        require(self.resend_after_s > 0, f"{where}.resend_after_s", "must be > 0 s")
        require(self.heartbeat_s > 0, f"{where}.heartbeat_s", "must be > 0 s")


@dataclass(frozen=True)
class CoherenceConfig:
    """Coherence curves: optical readout shots averaged per point (at ~0.03 photons per shot and
    25 % contrast, 1e7 shots give a coherence error of about 0.014)."""

    repetitions: int = 10_000_000
    timing: ShotTiming = field(default_factory=ShotTiming)
    """`[coherence.timing]`: pulse durations of a shot in s (pi_s, pi_half_s: 0 is the ideal pulse)."""

    def check(self, where: str) -> None:
        """Validate ranges; raise ConfigError naming the field."""
        require(self.repetitions >= 1, f"{where}.repetitions", f"must be >= 1, got {self.repetitions}")


DEVICE_KINDS: tuple[str, ...] = ("sim",)
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

    def check(self, where: str) -> None:
        """Every entry names a known driver and nothing else; raise ConfigError naming the field."""
        for name in ("scanner", "tagger", "microwave", "counter", "pulser"):
            table = getattr(self, name)
            if not table:
                continue
            kind = table.get("kind")
            require(kind is not None, f"{where}.{name}.kind", f"missing (known: {', '.join(DEVICE_KINDS)})")
            require(kind in DEVICE_KINDS, f"{where}.{name}.kind",
                    f"no driver {kind!r} yet (known: {', '.join(DEVICE_KINDS)})")
            extra = sorted(set(table) - {"kind"})
            require(not extra, f"{where}.{name}.{extra[0] if extra else ''}",
                    f"unknown field (a {kind!r} device takes only kind; the simulation is set in [sim])")

    @property
    def configured(self) -> bool:
        """True when the table names at least one device."""
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class RigConfig:
    """Everything the rig needs: the scan, the link, the seed, its devices and the simulated sample (`sim`)."""

    seed: int = 1
    scan: ScanConfig = field(default_factory=ScanConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    coherence: CoherenceConfig = field(default_factory=CoherenceConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
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
