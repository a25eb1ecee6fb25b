"""Small network building blocks shared by the built-in encoders, combiners and the head.

As in the hybrid paper's Appendix B, every hidden Linear layer is followed by BatchNorm and
ReLU; output layers are plain Linear. Modules that own hidden layers carry ``hidden_sizes``
so the model can count its hidden neurons.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """in → [Linear → BatchNorm1d → ReLU] per hidden size → Linear → out."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, batchnorm: bool = True
    ):
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.hidden_sizes = list(hidden)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the real particles of (B, N, F) inputs; padded entries are ignored.

    Running statistics follow ``torch.nn.BatchNorm1d`` (momentum 0.1, unbiased running var);
    as there, setting ``track_running_stats = False`` normalises with the batch statistics
    without updating the running ones (the trainer does so while a penalty evaluates the model).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.track_running_stats = True
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            count = m.sum((0, 1)).clamp_min(1.0)
            mean = (x * m).sum((0, 1)) / count
            var = (((x - mean) ** 2) * m).sum((0, 1)) / count
        if self.training and self.track_running_stats:
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        if not batch_stats:
            mean, var = self.running_mean, self.running_var
        return ((x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias) * m


class ParticleMLP(nn.Module):
    """The same MLP applied to every particle of (B, N, F) inputs, masked batch norm."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, batchnorm: bool = True
    ):
        super().__init__()
        self.hidden_sizes = list(hidden)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for size in hidden:
            self.linears.append(nn.Linear(width, size))
            self.norms.append(MaskedBatchNorm(size) if batchnorm else nn.Identity())
            width = size
        self.out = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = linear(x)
            x = norm(x, mask) if isinstance(norm, MaskedBatchNorm) else x
            x = torch.relu(x)
        return self.out(x) * mask.unsqueeze(-1).to(x.dtype)


def hidden_neurons(module: nn.Module) -> int:
    """Total hidden-layer width of every block in ``module`` that declares ``hidden_sizes``."""
    return sum(sum(m.hidden_sizes) for m in module.modules() if hasattr(m, "hidden_sizes"))


def n_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
