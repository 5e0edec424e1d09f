"""What the command lines of rt and host share: one-line errors and exit code 2 for bad input."""

from __future__ import annotations

import argparse

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A problem a person can fix in the command or the input file; the message is one line."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (and exit code 2), not usage plus error."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")
