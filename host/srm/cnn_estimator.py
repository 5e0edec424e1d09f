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
from nvscope.models.g2.model import EmitterShape, PixelModels, kernel_bin_averages, pixel_models
from nvscope.models.g2.reasons import NOTE_EVENTS_ABOVE_RANGE, NOTE_RATE_OUTSIDE_RANGE, NOTE_STARTSTOP
from nvscope.proto.command_line import InputError
from nvscope.proto.histogram import N_BINS


STARTSTOP_WEIGHT_TOLERANCE = 0.05
"""A start-stop pixel whose survival weight departs from 1 by more than this goes to the MLE (the CNN was
trained on all-pairs histograms)."""
RATE_BEYOND_TRAINING = 10.0
"""A pixel whose stop-detector rate exceeds this many times the training's highest goes to the MLE."""
TRAINING_RATE_CPS = (1e5, 5e5)
"""Per-detector rates of the shipped model's training at full spot rate (models.g2.training_data's
RATE_RANGE_CPS, both detectors, halved), used when a model file does not record `rate_range_cps`."""


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
        events = json.loads(self.metadata["n_events_range"])
        self.min_events = int(events[0])
        self.max_events = int(events[1])
        self.mle_above_events = int(self.metadata.get("mle_above_events", self.max_events))
        rates = self.metadata.get("rate_range_cps")
        self.rate_range_cps = tuple(float(r) for r in json.loads(rates)) if rates else TRAINING_RATE_CPS

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

    def estimate(self, hist, models, base=None) -> tuple[np.ndarray, np.ndarray]:
        """(g2, g2_std) of (P, N_BINS) histograms with each pixel's model (`PixelModels`); or, as before,
        the scan's `EmitterShape` and base (P,) counts per bin (NaN or None where the singles are unknown)."""
        if isinstance(models, EmitterShape):
            models = pixel_models(base, kernel_bin_averages(models), n_pixels=len(np.asarray(hist).reshape(-1, N_BINS)))
        x, s = cnn_inputs(hist, models.kernel, models.base, models.weight)
        return self.run(x, s)

    def notes(self, hist, models: PixelModels) -> np.ndarray:
        """int8 (P,) `G2_NOTES` codes of the pixels the CNN does not serve (they go to the MLE): more events
        than its training range's top or than `mle_above_events` (where the MLE is better), a start-stop
        survival that departs from 1 by more than STARTSTOP_WEIGHT_TOLERANCE, a stop rate more than
        RATE_BEYOND_TRAINING times the training's highest; 0 elsewhere."""
        n = np.asarray(hist, dtype=np.float64).reshape(len(models), -1).sum(axis=1)
        note = np.zeros(len(models), dtype=np.int8)
        if models.stop_rate is not None:
            note[models.stop_rate > RATE_BEYOND_TRAINING * self.rate_range_cps[1]] = NOTE_RATE_OUTSIDE_RANGE
        if models.mode == "startstop":
            note[np.abs(models.weight - 1.0).max(axis=1) > STARTSTOP_WEIGHT_TOLERANCE] = NOTE_STARTSTOP
        note[n > min(self.max_events, self.mle_above_events)] = NOTE_EVENTS_ABOVE_RANGE
        return note


__all__ = ["ModelFileError", "CnnEstimator", "file_sha256"]
