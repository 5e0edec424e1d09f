"""The software version and git commit that every run file and message records."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path


@cache
def software_version() -> str:
    """'<package version>+g<commit>' ('+dirty' when the work tree has changes), or the package version."""
    try:
        version = metadata.version("nvscope")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    commit = git_commit()
    return f"{version}+g{commit}" if commit else version


@cache
def git_commit() -> str:
    """The git commit of the source tree ('' when not run from a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
