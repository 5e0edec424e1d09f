"""A 3-axis piezo scanner controller speaking PI's GCS (E-727-like: axes 1, 2, 3 in um) as an `rt.hal.Scanner`.

A move checks all three targets against the constraints (nothing is sent if one is outside), sends one
`MOV <axis> <um>` per axis (each followed by `ERR?`), polls `ONT? <axis>` until every axis is on target
(DeviceTimeout after `timeout_s`), then waits `settle_s`. Servo control is switched on when opened.
pyvisa-sim file: rt/drivers/sim/piezo.yaml.
"""

from __future__ import annotations

import time
import math
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError
from ..hal import DeviceError, DeviceTimeout, ScannerConstraints
from .visa import VisaInstrument, check_visa_fields, control, in_range

DEFAULT_CONSTRAINTS = ScannerConstraints(x_range=(-50e-6, 50e-6), y_range=(-50e-6, 50e-6), z_range=(-10e-6, 10e-6),
                                         settle_s=0.0)
"""A 100 x 100 x 20 um stage centred on 0; set the stage's own travel and settle time in [devices]."""

UM_PER_M = 1e6

GCS_ERRORS = {1: "parameter syntax error", 2: "unknown command", 5: "move on an axis with servo off or not referenced",
              7: "position out of limits", 10: "controller stopped by command"}
"""The few PI GCS error codes spelled out; others are named by their number (see the controller's manual)."""


@dataclass(frozen=True)
class VisaPiezoConfig:
    """`[devices]` scanner with kind = "visa_piezo": the VISA resource, the reply and on-target timeout (s),
    the pyvisa backend ("" default; "path/to/file.yaml@sim" for pyvisa-sim), the travel per axis (m)
    and the settle time after a move (s)."""

    resource: str
    timeout_s: float = 2.0
    visa_library: str = ""
    x_range: tuple[float, float] = DEFAULT_CONSTRAINTS.x_range
    y_range: tuple[float, float] = DEFAULT_CONSTRAINTS.y_range
    z_range: tuple[float, float] = DEFAULT_CONSTRAINTS.z_range
    settle_s: float = DEFAULT_CONSTRAINTS.settle_s

    def check(self, where: str) -> None:
        """Resource, timeout and ranges usable; ConfigError naming the field."""
        check_visa_fields(self, where, ("x_range", "y_range", "z_range"))
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ConfigError(f"{where}.settle_s: must be >= 0 s, got {self.settle_s!r}")


def gcs_value(reply: str) -> float:
    """The value of a one-axis GCS reply '1=+12.5' as a float."""
    return float(reply.split("=", 1)[1])


def gcs_flag(reply: str) -> bool:
    """A one-axis GCS flag reply '1=1' as a bool."""
    return int(reply.split("=", 1)[1]) != 0


class VisaPiezoScanner(VisaInstrument):
    """A closed-loop 3-axis piezo stage over VISA (PI GCS); positions in m, sent in um."""

    error_query = "ERR?"
    x = control("POS? 1", "MOV 1 {:.6f}", "Axis 1 (x): position read, target set, in m.", in_range("x_range", "m"),
                cast=gcs_value, scale=UM_PER_M)
    y = control("POS? 2", "MOV 2 {:.6f}", "Axis 2 (y): position read, target set, in m.", in_range("y_range", "m"),
                cast=gcs_value, scale=UM_PER_M)
    z = control("POS? 3", "MOV 3 {:.6f}", "Axis 3 (z): position read, target set, in m.", in_range("z_range", "m"),
                cast=gcs_value, scale=UM_PER_M)
    AXES = ("1", "2", "3")

    def __init__(self, resource_name: str, name: str = "scanner", timeout_s: float = 2.0, rm: Any = None,
                 visa_library: str = "", constraints: ScannerConstraints | None = None):
        self.constraints = constraints or DEFAULT_CONSTRAINTS
        super().__init__(resource_name, name, timeout_s, rm, visa_library)

    def setup(self) -> None:
        """Servo control on, on every axis."""
        for axis in self.AXES:
            self.write(f"SVO {axis} 1")

    @classmethod
    def from_config(cls, cfg: VisaPiezoConfig, name: str) -> VisaPiezoScanner:
        """Open the controller a `[devices]` table describes (ValueError on ranges that are not (min, max))."""
        constraints = ScannerConstraints(cfg.x_range, cfg.y_range, cfg.z_range, cfg.settle_s)
        return cls(cfg.resource, name, cfg.timeout_s, visa_library=cfg.visa_library, constraints=constraints)

    def position(self) -> tuple[float, float, float]:
        """The measured position (x, y, z) in m."""
        return self.x, self.y, self.z

    def on_target(self) -> bool:
        """True when every axis reports on target."""
        for axis in self.AXES:
            reply = self.ask(f"ONT? {axis}")
            try:
                if not gcs_flag(reply):
                    return False
            except (IndexError, ValueError):
                raise DeviceError(f"{self.where}: cannot read the reply {reply!r} to 'ONT? {axis}'") from None
        return True

    def move_to(self, x: float, y: float, z: float) -> None:
        """Move to (x, y, z) in m and return once on target and settled; DeviceError outside `constraints`
        (nothing sent) or if refused, DeviceTimeout if not on target within `timeout_s`."""
        axes = type(self)
        for control_, value in ((axes.x, x), (axes.y, y), (axes.z, z)):
            control_.validate(self, value)
        self.x, self.y, self.z = x, y, z
        deadline = time.monotonic() + self.timeout_s
        while not self.on_target():
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"{self.where}: not on target within {self.timeout_s:g} s of moving to "
                                    f"({x:.6g}, {y:.6g}, {z:.6g}) m")
            time.sleep(0.001)
        if self.constraints.settle_s > 0:
            time.sleep(self.constraints.settle_s)

    def parse_error(self, reply: str) -> str | None:
        """The error in a reply to ERR? (an integer code, 0: none), or None; ValueError if not a code."""
        code = int(reply)
        return None if code == 0 else f"error {code} ({GCS_ERRORS.get(code, 'see the controller manual')})"


__all__ = ["DEFAULT_CONSTRAINTS", "VisaPiezoConfig", "VisaPiezoScanner", "gcs_value", "gcs_flag"]
