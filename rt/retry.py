"""Instruments that time out: the call is retried after a pause, and each retry is reported for the
run's record (`[retry]` of the rig's configuration); nothing half-acquired becomes data."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .config import RetryConfig
from .hal import DeviceTimeout

log = logging.getLogger(__name__)

Report = Callable[[str, str, int], None]
"""report(device name, one line, retry number): called before each retry."""


class Retrying:
    """`device` with every method call that raises `DeviceTimeout` retried `cfg.attempts` times,
    `cfg.pause_s` apart (a device's calls are idempotent settings and reads); attributes pass through.
    The last timeout is raised (the run fails saying so)."""

    def __init__(self, name: str, device: object, cfg: RetryConfig, report: Report, sleep=time.sleep):
        self._name, self._device, self._cfg, self._report, self._sleep = name, device, cfg, report, sleep

    def __getattr__(self, attr: str):
        value = getattr(self._device, attr)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            for attempt in range(self._cfg.attempts + 1):
                try:
                    return value(*args, **kwargs)
                except DeviceTimeout as exc:
                    if attempt == self._cfg.attempts:
                        raise
                    line = (f"{exc}; paused, retry {attempt + 1} of {self._cfg.attempts} in {self._cfg.pause_s:g} s")
                    log.warning("%s: %s", self._name, line)
                    self._report(self._name, line, attempt + 1)
                    self._sleep(self._cfg.pause_s)
            raise AssertionError("unreachable")  # pragma: no cover

        call.__name__ = attr
        return call

    def __repr__(self) -> str:
        return f"Retrying({self._name}, {self._device!r})"
