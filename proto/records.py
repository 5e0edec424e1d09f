"""The table row that a stored message becomes, derived from its declaration in `messages.py`.

A stored message kind is a table in the run file (docs/run-files.md section 3): one column per field but
`run_id` (the file is the run), one row per message. A scalar field is a column of one value per
row; a fixed-shape array a column of that shape per row; a variable-length array (-1 in its
declared shape) a row of any width, padded with NaN to the widest row so far (float fields only).
"""

from __future__ import annotations

import numpy as np

from .messages import Array, Message, field_specs

SCALAR_DTYPES: dict[type, str] = {int: "<i8", float: "<f8", bool: "|b1", str: "|S256"}
"""Column dtype of each scalar field type (dict fields have no column); a str is stored as UTF-8, cut
at 256 bytes (a fixed width: SWMR appends no variable-length data)."""


def record_fields(cls: type[Message]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Column name -> (dtype, shape of one row; -1: any width) of a message kind's table."""
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, spec in field_specs(cls).items():
        if name == "run_id":
            continue
        if isinstance(spec, Array):
            if -1 in spec.shape and (spec.shape != (-1,) or np.dtype(spec.dtype).kind != "f"):
                raise TypeError(f"{cls.__name__}.{name}: {spec} cannot be a NaN-padded row "
                                "(only 1-d float arrays of any length)")
            out[name] = (spec.dtype, spec.shape)
        elif spec in SCALAR_DTYPES:
            out[name] = (SCALAR_DTYPES[spec], ())
        else:
            raise TypeError(f"{cls.__name__}.{name}: a {getattr(spec, '__name__', spec)} field has no column type")
    return out
