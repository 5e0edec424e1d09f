"""The g2 CNN's inputs, computed the same way in training (torch) and in inference (onnxruntime).

Per histogram, three channels over the 215 bins and four scalars:
- x[0] = n_k / (scale weight_k): the counts in units of the uncorrelated level, scale = base (n_A n_B D / T
  for all pairs) when the singles are known, else N / 215 (N the events in the histogram); weight_k the
  start-stop survival (1 for all pairs; docs/physics.md section 1.2);
- x[1] = v_k: the scan's antibunching kernel K(tau) averaged over bin k (`kernel_bin_averages` of
  the shape fitted to the whole scan): the context that tells the network where to look;
- x[2] = x[0] * x[1]: their product, whose sum is the matched filter of the likelihood's score;
- s = (log10 N / 5, base known (0 or 1), N / (215 base) when known else 0, log10(N) ** 2 / 25).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nvscope.proto.histogram import N_BINS


FEATURES_VERSION = "g2-cnn-features/1"
"""Changes whenever the inputs above change; a model file records the version it was trained with."""
MODEL_FORMAT = "nvscope-g2-cnn/1"
"""The model file's format: inputs x, s (`cnn_inputs`), outputs g2, g2_std; written by `train_cnn`,
read by host/srm/cnn_estimator.py."""
SHIPPED_MODEL = Path(__file__).with_name("g2_cnn.onnx")
"""The trained network shipped with nvscope (written by `train_cnn`)."""
N_CHANNELS = 3
N_SCALARS = 4


def cnn_inputs(hist: np.ndarray, kernel: np.ndarray, base: np.ndarray | None,
               weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x (P, 3, N_BINS), s (P, 4)) float32 for histograms (P, N_BINS) with kernel v_k ((N_BINS,) or
    (P, N_BINS)), base (P,) counts per bin (NaN or None where the singles are unknown) and weight
    ((N_BINS,) or (P, N_BINS), the start-stop survival; None: ones): x[0] = n_k / (base weight_k)."""
    h = np.asarray(hist, dtype=np.float64).reshape(-1, N_BINS)
    P = h.shape[0]
    N = h.sum(axis=1)
    b = np.full(P, np.nan) if base is None else np.broadcast_to(np.asarray(base, dtype=np.float64), (P,))
    known = np.isfinite(b) & (b > 0)
    scale = np.where(known, b, np.maximum(N, 1.0) / N_BINS)
    v = np.broadcast_to(np.asarray(kernel, dtype=np.float64), (P, N_BINS))
    x = np.empty((P, N_CHANNELS, N_BINS), dtype=np.float32)
    u = np.ones((P, N_BINS)) if weight is None else np.broadcast_to(np.asarray(weight, dtype=np.float64), (P, N_BINS))
    x[:, 0] = h / (scale[:, None] * np.where(known[:, None], u, 1.0))
    x[:, 1] = v
    x[:, 2] = x[:, 0] * v
    lg = np.log10(np.maximum(N, 1.0))
    s = np.stack([lg / 5.0, known.astype(np.float64),
                  np.where(known, N / (N_BINS * scale), 0.0), lg * lg / 25.0], axis=1)
    return x, s.astype(np.float32)


__all__ = ["FEATURES_VERSION", "MODEL_FORMAT", "SHIPPED_MODEL", "N_CHANNELS", "N_SCALARS", "cnn_inputs"]
