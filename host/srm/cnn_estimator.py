"""The shipped g2 CNN run by onnxruntime: g2(0) and g2_std of histograms, in batches.

The model file is checked when it is loaded (at host start, not at the first pixel): it must be an
ONNX file that onnxruntime can run, written in MODEL_FORMAT with the features version this code
computes (`models.g2.features`); anything else is a `ModelFileError` with one line that says why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvscope.models.g2.features import FEATURES_VERSION, MODEL_FORMAT, SHIPPED_MODEL, cnn_inputs
from nvscope.models.g2.model import EmitterShape, kernel_bin_averages
from nvscope.proto.command_line import InputError


class ModelFileError(InputError):
    """A g2 model file that cannot be used; the message says which file and why, in one line."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_session(path: Path, threads: int):
    """An onnxruntime CPU session on `threads` intra-op threads; ModelFileError if it cannot run the file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise ModelFileError(f"{path}: not a model onnxruntime can run ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


@dataclass
class CnnEstimator:
    """g2(0) and g2_std by the CNN in `path` (default: the model shipped with nvscope); a
    `models.g2.estimation.G2Estimator`. It pickles as its file (a worker process loads the model again)."""

    path: Path = SHIPPED_MODEL
    threads: int = 1
    name: str = "cnn"
    uses_shape: bool = field(default=True, init=False)
    metadata: dict[str, str] = field(init=False)
    min_events: int = field(init=False)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: g2 model file not found")
        self.sha256 = file_sha256(self.path)
        self._sess = onnx_session(self.path, self.threads)
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        fmt = self.metadata.get("format")
        if fmt != MODEL_FORMAT:
            raise ModelFileError(f"{self.path}: model format {fmt!r}, this nvscope reads {MODEL_FORMAT!r}")
        feats = self.metadata.get("features_version")
        if feats != FEATURES_VERSION:
            raise ModelFileError(f"{self.path}: model trained on features {feats!r}, this nvscope computes "
                                 f"{FEATURES_VERSION!r} (model from another version: retrain it)")
        self.min_events = int(json.loads(self.metadata["n_events_range"])[0])

    def provenance(self) -> dict[str, str]:
        """Where the model comes from, for a run file: the file (absolute path), its sha256 when it was
        loaded and the git commit it was trained at (from the .onnx metadata; '' when absent)."""
        return {"model_file": str(self.path.resolve()), "model_sha256": self.sha256,
                "model_commit": str(self.metadata.get("git_commit", ""))}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_sess"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sess = onnx_session(self.path, self.threads)

    def run(self, x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on prepared inputs (`features.cnn_inputs`): (g2, g2_std) float64."""
        g2, std = self._sess.run(["g2", "g2_std"], {"x": x, "s": s})
        return g2.astype(np.float64), std.astype(np.float64)

    def estimate(self, hist, shape: EmitterShape, base=None) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) of (P, N_BINS) histograms with the scan's shape; base (P,) counts per bin
        (`models.g2.model.pixel_base`; NaN or None where the singles are unknown)."""
        x, s = cnn_inputs(hist, kernel_bin_averages(shape), base)
        return self.run(x, s)


__all__ = ["ModelFileError", "CnnEstimator", "file_sha256"]
