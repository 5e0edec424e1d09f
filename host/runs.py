"""What the host does with each kind of run, and how runs are named."""

from __future__ import annotations

import secrets
import time

from .daemon import Analysis
from .srm import srm_analysis

ANALYSES: dict[str, Analysis] = {"srm": srm_analysis}


def new_run_id(kind: str) -> str:
    """A unique, sortable run id: '<kind>-YYYYmmdd-HHMMSS-<random>'."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
