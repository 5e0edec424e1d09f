"""What the command lines of rt and host share: one-line errors and exit code 2 for bad input."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A problem a person can fix in the command or the input file; the message is one line."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def writable_folder(path: str, option: str, what: str = "files") -> Path:
    """The folder `path` (absolute), created if missing; InputError naming `option` when `what` cannot be
    written there, found before any work starts."""
    out = Path(path).absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".nvscope-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write {what} there ({exc.strerror or one_line(exc)})") from None
    return out


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (and exit code 2), not usage plus error."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")
