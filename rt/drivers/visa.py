"""A VISA instrument declared as settings (PyMeasure-style `control(...)` properties), and the one place
where VISA failures become `rt.hal.DeviceError` / `DeviceTimeout` (docs/architecture.md section 6).

A driver is a short class: each setting is one `control(get_cmd, set_cmd, doc, validator, cast)`;
setting it validates the value (SI units) against the instrument's constraints before anything is
sent, writes the command, then reads the instrument's error queue (`error_query`) so that a refused
command is an error here, not a silent no-op. Every failure is one line naming the instrument by its
`[devices]` name and resource, e.g. "microwave (TCPIP::192.168.1.5::INSTR): no reply within 2 s to
':FREQ?'". pyvisa is imported only when an instrument is opened (the rig stays lean otherwise).

PyMeasure itself is not used: it pulls pandas (and pint) into the rig for what is ~100 lines here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

from ..hal import DeviceError, DeviceTimeout

log = logging.getLogger(__name__)

Validator = Callable[[Any, Any], None]
"""validator(instrument, value): raises ValueError (one line, without the instrument's name) when the value is refused."""


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (its class name when it has none), at most 200 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def in_range(bounds: str | Callable[[Any], tuple[float, float]], unit: str) -> Validator:
    """A validator: the value must be a finite number inside `bounds`, the name of a (min, max) field of
    the instrument's `constraints` or a function of the instrument giving (min, max), in `unit`."""

    def check(instrument: Any, value: Any) -> None:
        lo, hi = getattr(instrument.constraints, bounds) if isinstance(bounds, str) else bounds(instrument)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number of {unit}")
        if not lo <= value <= hi:
            raise ValueError(f"{value!r} {unit} is outside [{lo:.6g}, {hi:.6g}] {unit}")

    return check


def to_bool(reply: str) -> bool:
    """A SCPI boolean reply ('1', '0', 'ON', 'OFF') as a bool."""
    word = reply.strip().upper()
    if word in ("1", "ON"):
        return True
    if word in ("0", "OFF"):
        return False
    raise ValueError(f"not a boolean: {reply!r}")


class control:  # noqa: N801 (a descriptor, named like PyMeasure's)
    """One declared setting of a `VisaInstrument`.

    get_cmd: the query whose reply `cast` turns into the value (None: write-only); set_cmd: a
    `str.format` template the value fills (None: read-only); validator(instrument, value): runs before
    anything is sent; scale: instrument units per SI unit (1e6 for a controller that speaks um).
    """

    def __init__(self, get_cmd: str | None, set_cmd: str | None, doc: str, validator: Validator | None = None,
                 cast: Callable[[str], Any] = float, scale: float = 1.0):
        self.get_cmd, self.set_cmd, self.validator, self.cast, self.scale = get_cmd, set_cmd, validator, cast, scale
        self.__doc__ = doc
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def validate(self, instrument: VisaInstrument, value: Any) -> None:
        """DeviceError naming the instrument and the setting when `validator` refuses `value`."""
        if self.validator is not None:
            try:
                self.validator(instrument, value)
            except ValueError as exc:
                raise DeviceError(f"{instrument.where}: {self.name} = {exc} (not sent)") from None

    def __get__(self, instrument: VisaInstrument | None, owner: type) -> Any:
        if instrument is None:
            return self
        if self.get_cmd is None:
            raise AttributeError(f"{self.name} is write-only")
        reply = instrument.ask(self.get_cmd)
        try:
            value = self.cast(reply)
        except (TypeError, ValueError):
            raise DeviceError(f"{instrument.where}: cannot read {self.name} from the reply {reply!r} "
                              f"to {self.get_cmd!r}") from None
        return value / self.scale if self.scale != 1.0 else value

    def __set__(self, instrument: VisaInstrument, value: Any) -> None:
        if self.set_cmd is None:
            raise AttributeError(f"{self.name} is read-only")
        self.validate(instrument, value)
        instrument.write(self.set_cmd.format(value * self.scale if self.scale != 1.0 else value))


class VisaInstrument:
    """A message-based VISA instrument: `write` (then its error queue is read), `ask`, `close`.

    resource_name: the VISA resource (e.g. "TCPIP::192.168.1.5::INSTR"); name: its `[devices]` name;
    timeout_s: how long a reply may take (s); rm: a pyvisa ResourceManager to open it with (None: one
    for `visa_library`, "" for pyvisa's default backend, "path/to/file.yaml@sim" for pyvisa-sim).
    """

    error_query: str | None = ":SYST:ERR?"
    """The query that pops one entry of the instrument's error queue (None: the instrument has none)."""
    read_termination = "\n"
    write_termination = "\n"

    def __init__(self, resource_name: str, name: str, timeout_s: float = 2.0, rm: Any = None,
                 visa_library: str = ""):
        self.name, self.resource_name, self.timeout_s = name, resource_name, float(timeout_s)
        self.where = f"{name} ({resource_name})"
        self._stale = False
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise DeviceError(f"{self.where}: timeout_s must be > 0 s, got {timeout_s!r}")
        try:
            import pyvisa  # only a rig with VISA instruments loads it

            self._errors = pyvisa.errors
            self._timeout_code = pyvisa.constants.StatusCode.error_timeout
            rm = rm if rm is not None else pyvisa.ResourceManager(visa_library)
            self.resource = rm.open_resource(resource_name, read_termination=self.read_termination,
                                             write_termination=self.write_termination,
                                             timeout=round(self.timeout_s * 1000))
        except Exception as exc:  # noqa: BLE001 (a missing backend, a bad name, a refused connection: one line)
            raise DeviceError(f"{self.where}: cannot open ({one_line(exc)})") from exc
        try:
            self.drain_errors()
            self.setup()
        except BaseException:
            self.close()
            raise

    def setup(self) -> None:
        """What the instrument needs once opened (its error queue already emptied); nothing here."""

    def _io(self, cmd: str, query: bool) -> str:
        try:
            if query:
                return self.resource.query(cmd)
            self.resource.write(cmd)
            return ""
        except self._errors.VisaIOError as exc:
            if exc.error_code == self._timeout_code:
                self._stale = True  # a late reply or its error may still come: cleared before the next set
                what = "no reply" if query else "could not send"
                raise DeviceTimeout(f"{self.where}: {what} within {self.timeout_s:g} s to {cmd!r}") from exc
            raise DeviceError(f"{self.where}: {cmd!r} failed ({one_line(exc)})") from exc
        except (self._errors.Error, OSError, ValueError, UnicodeDecodeError) as exc:
            raise DeviceError(f"{self.where}: {cmd!r} failed ({one_line(exc)})") from exc

    def ask(self, cmd: str) -> str:
        """The instrument's reply to the query `cmd`, stripped; DeviceTimeout when none comes in time."""
        if self._stale:
            self.drain_errors()
        return self._io(cmd, True).strip()

    def write(self, cmd: str) -> None:
        """Send `cmd`, then read the error queue: DeviceError with the instrument's error text if it refused."""
        if self._stale:
            self.drain_errors()
        self._io(cmd, False)
        self.check_errors(cmd)

    def parse_error(self, reply: str) -> str | None:
        """The error in one reply to `error_query` (SCPI: '<code>,"<text>"', code 0: none), or None;
        ValueError when the reply is not one."""
        return None if int(reply.split(",", 1)[0]) == 0 else reply

    def _error(self) -> str | None:
        reply = self.ask(self.error_query)
        try:
            return self.parse_error(reply)
        except ValueError:
            raise DeviceError(f"{self.where}: the reply {reply!r} to {self.error_query!r} is not an error "
                              "code (another instrument at this resource?)") from None

    def check_errors(self, after: str) -> None:
        """DeviceError naming `after` (the command just sent) and the instrument's error, if it reports one."""
        if self.error_query is None:
            return
        error = self._error()
        if error is not None:
            self.drain_errors()
            raise DeviceError(f"{self.where}: refused {after!r}: {error}")

    def drain_errors(self, most: int = 20) -> None:
        """Empty the error queue (errors left from before, or from a query that timed out), logging them."""
        self._stale = False
        try:
            self.resource.clear()  # device clear: drops a late reply still in the buffers
        except Exception:  # noqa: BLE001 (not every interface or backend has one)
            pass
        if self.error_query is None:
            return
        old = []
        for _ in range(most):
            error = self._error()
            if error is None:
                break
            old.append(error)
        if old:
            log.warning("%s: cleared %d earlier error(s) from its queue: %s", self.where, len(old), "; ".join(old))

    def close(self) -> None:
        """Close the VISA session (idempotent)."""
        resource, self.resource = getattr(self, "resource", None), None
        if resource is not None:
            try:
                resource.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: close failed (%s)", self.where, one_line(exc))




def check_visa_fields(cfg: Any, where: str, ranges: tuple[str, ...]) -> None:
    """The `[devices]` fields every VISA driver takes, and its (min, max) ranges: ConfigError naming the field."""
    from ..config import ConfigError

    if not cfg.resource.strip():
        raise ConfigError(f"{where}.resource: empty (a VISA resource such as \"TCPIP::192.168.1.5::INSTR\")")
    if not (math.isfinite(cfg.timeout_s) and cfg.timeout_s > 0):
        raise ConfigError(f"{where}.timeout_s: must be > 0 s, got {cfg.timeout_s!r}")
    path, sep, backend = cfg.visa_library.rpartition("@")
    if sep and backend == "sim" and path and not Path(path).is_file():
        raise ConfigError(f"{where}.visa_library: no pyvisa-sim file {path}")
    for name in ranges:
        r = getattr(cfg, name)
        if len(r) != 2 or not all(math.isfinite(v) for v in r) or r[0] > r[1]:
            raise ConfigError(f"{where}.{name}: must be a finite [min, max], got {list(r)}")


__all__ = ["Validator", "one_line", "in_range", "to_bool", "control", "VisaInstrument", "check_visa_fields"]
