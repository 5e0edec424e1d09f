"""The g2 CNN (paper: ml-antibunching-srm, "CNN structure"): 1D convolutions over the histogram, the
event count (and the rest of `features.cnn_inputs`' scalars) joined after the feature part, dense
layers, and two outputs: the mean of g2(0) and its standard deviation, trained by Gaussian negative
log-likelihood so that g2_std means what it says.

`PAPER_ARCH` is the paper's network (3 conv layers of 260 filters, kernel 4, max pooling, dropout,
3 dense layers), kept as the reference; `SHIPPED_ARCH` is the light one shipped in the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from nvscope.proto.histogram import N_BINS

from .features import N_CHANNELS, N_SCALARS

MIN_STD = 3e-3
"""Floor of the predicted g2_std (dimensionless): below the Cramer-Rao bound at 10^5 events (~0.014),
and it keeps the likelihood of an outlier finite while training."""


@dataclass(frozen=True)
class CnnArch:
    """Convolution filters per layer (kernel `kernel`, no padding), max pooling `pool`, then dense layers."""

    filters: tuple[int, ...]
    kernel: int = 4
    pool: int = 2
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1

    def as_dict(self) -> dict:
        """Plain dict (for the model file's metadata)."""
        return asdict(self)


PAPER_ARCH = CnnArch(filters=(260, 260, 260))
SHIPPED_ARCH = CnnArch(filters=(16, 16, 16))


def _feature_length(arch: CnnArch) -> int:
    length = N_BINS - len(arch.filters) * (arch.kernel - 1)
    return length // arch.pool


class G2Net(nn.Module):
    """x (P, 3, N_BINS), s (P, 4) -> (g2 mean (P,), g2 std (P,))."""

    def __init__(self, arch: CnnArch):
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        c_in = N_CHANNELS
        for c_out in arch.filters:
            layers += [nn.Conv1d(c_in, c_out, arch.kernel), nn.ReLU()]
            c_in = c_out
        layers += [nn.MaxPool1d(arch.pool), nn.Dropout(arch.dropout), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = []
        d_in = c_in * _feature_length(arch) + N_SCALARS
        for d_out in arch.hidden:
            dense += [nn.Linear(d_in, d_out), nn.ReLU()]
            d_in = d_out
        dense.append(nn.Linear(d_in, 2))
        self.head = nn.Sequential(*dense)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(torch.cat([self.features(x), s], dim=1))
        mean = 0.5 + out[:, 0]
        std = nn.functional.softplus(out[:, 1] - 2.0) + MIN_STD
        return mean, std


def forward_flops(arch: CnnArch) -> int:
    """Multiply-adds x 2 of one histogram through the network (convolutions and dense layers)."""
    flops = 0
    length, c_in = N_BINS, N_CHANNELS
    for c_out in arch.filters:
        length -= arch.kernel - 1
        flops += 2 * length * c_in * c_out * arch.kernel
        c_in = c_out
    d_in = c_in * _feature_length(arch) + N_SCALARS
    for d_out in (*arch.hidden, 2):
        flops += 2 * d_in * d_out
        d_in = d_out
    return flops


def gaussian_nll(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood of `target` (constants dropped)."""
    return (torch.log(std) + 0.5 * ((target - mean) / std) ** 2).mean()


__all__ = ["MIN_STD", "CnnArch", "PAPER_ARCH", "SHIPPED_ARCH", "G2Net", "forward_flops", "gaussian_nll"]
