"""What the host does with each kind of run, and how runs are named."""

from __future__ import annotations

import secrets
import time

from .daemon import Analysis
from .g2_online import G2Estimator, MleEstimator
from .srm import srm_analysis

ANALYSES: dict[str, Analysis] = {"srm": srm_analysis}


def default_g2_estimator() -> G2Estimator:
    """The per-pixel g2(0) estimator of the host daemons that `nvscope host` and `nvscope demo` start."""
    return MleEstimator()


def new_run_id(kind: str) -> str:
    """A unique, sortable run id: '<kind>-YYYYmmdd-HHMMSS-<random>'."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
