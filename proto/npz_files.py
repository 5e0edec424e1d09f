"""Reading and writing the .npz files of the off-line commands (rt's and host's), with one-line errors."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .command_line import InputError, one_line


def load_npz(path: str, keys) -> dict[str, np.ndarray]:
    """The arrays among `keys` that IN.npz holds (no pickle); InputError for anything unreadable."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
    except OSError as exc:  # a folder, no permission, ...
        raise InputError(f"{path}: cannot read: {exc.strerror or one_line(exc)}") from None
    except (ValueError, EOFError, zipfile.BadZipFile):  # numpy says "pickled data" for any unknown format
        raise InputError(f"{path}: not an .npz archive") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: not an .npz archive (a single .npy array)")
    out = {}
    with z:
        for key in keys:
            if key not in z.files:
                continue
            try:
                out[key] = z[key]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise InputError(f"{path}: `{key}` cannot be read without pickle ({one_line(exc)})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged member
                raise InputError(f"{path}: `{key}` cannot be read ({one_line(exc)})") from None
    return out


def check_out(out: str) -> None:
    """Refuse, before any work, an output that cannot be written."""
    parent = Path(out).resolve().parent
    if Path(out).is_dir():
        raise InputError(f"{out}: is a folder, not an output file")
    if not parent.is_dir():
        raise InputError(f"{out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{out}: folder {parent} is not writable")


def write_npz(out: str, arrays: dict) -> None:
    """Write atomically (a temporary file in the same folder, then renamed); the name is kept as given."""
    target = Path(out)
    tmp = target.resolve().parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def software_version() -> str:
    """The version string written into every output (imported late: it may run git)."""
    from .version import software_version as version

    return version()
