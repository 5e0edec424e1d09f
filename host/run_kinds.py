"""What the host does with each kind of run, and how runs are named."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from .session import Analysis
from .srm.cnn_estimator import CnnEstimator
from .srm.online_g2 import G2Estimator
from .srm.analysis import SrmAnalysis
from .mri.analysis import MriAnalysis


def default_g2_estimator(model: str | Path | None = None) -> G2Estimator:
    """The per-pixel g2(0) estimator of the host daemons that `nvscope host` and `nvscope demo` start:
    the CNN (shipped, or the file `model`), loaded now so that a missing or foreign model file stops
    the host at start (`ModelFileError`), not at the first pixel."""
    return CnnEstimator() if model is None else CnnEstimator(Path(model))


def host_analyses(estimator: G2Estimator) -> dict[str, Analysis]:
    """The analyses the host runs at run end, by run kind (vqns: added by its controller)."""
    return {"srm": SrmAnalysis(estimator), "mri": MriAnalysis()}


def new_run_id(kind: str) -> str:
    """A unique, sortable run id: '<kind>-YYYYmmdd-HHMMSS-<random>'."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
