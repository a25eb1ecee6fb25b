"""Small network building blocks shared by the built-in encoders, combiners and the head.

As in the hybrid paper's Appendix B, every hidden Linear layer is followed by BatchNorm and
ReLU; output layers are plain Linear. Modules that own hidden layers carry ``hidden_sizes``
so the model can count its hidden neurons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
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
                layers.append(BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.hidden_sizes = list(hidden)


class SharedStatistics:
    """Batch norm that can hand its batch statistics from one pass to the next.

    ``stats_mode`` is set by :func:`shared_batch_statistics`: ``"record"`` keeps the statistics
    of a training-mode pass in ``recorded``; ``"reuse"`` normalises a later training-mode pass
    with them (the running statistics as fallback) and moves no running statistic. ``None``:
    ordinary batch norm.
    """

    stats_mode: str | None = None
    recorded: tuple[torch.Tensor, torch.Tensor] | None = None

    def _reused(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recorded if self.recorded is not None else (self.running_mean, self.running_var)

    def _record(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        if self.stats_mode == "record":
            self.recorded = (mean, var)

    def local_statistics(self) -> bool:
        """Whether the batch statistics are this batch's own (not, e.g., every rank's): torch's
        fused batch norm may then do the pass."""
        return True


def _update_running(norm: nn.Module, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
    """Move the running averages as ``torch.nn.BatchNorm1d`` does (unbiased running variance)."""
    with torch.no_grad():
        factor = norm.momentum
        if hasattr(norm, "num_batches_tracked"):
            norm.num_batches_tracked.add_(1)
            factor = factor if factor is not None else 1.0 / float(norm.num_batches_tracked)
        unbiased = var * count / (count - 1).clamp_min(1.0)
        norm.running_mean.mul_(1 - factor).add_(factor * mean)
        norm.running_var.mul_(1 - factor).add_(factor * unbiased)


class BatchNorm1d(SharedStatistics, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on (B, C) or (B, C, L) inputs that can share its batch statistics
    (:class:`SharedStatistics`); otherwise exactly torch's.

    With this batch's own statistics (:meth:`local_statistics`) the pass is torch's fused batch
    norm; recording adds the mean and biased variance it normalised with (differentiable, so a
    penalty pass reusing them sends its gradient through them as well).
    """

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, biased variance and count per channel of the batch."""
        flat = x if x.dim() == 2 else x.transpose(1, 2).reshape(-1, x.shape[1])
        count = torch.tensor(float(flat.shape[0]), dtype=x.dtype, device=x.device)
        mean = flat.mean(0)
        return mean, (flat - mean).square().mean(0), count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stats_mode != "reuse" and self.local_statistics():
            if self.training and self.stats_mode == "record":
                self._record(*self.moments(x)[:2])
            return super().forward(x)
        if self.stats_mode == "reuse":
            mean, var = self._reused()
        else:
            mean, var, count = self.moments(x)
            if self.track_running_stats:
                _update_running(self, mean, var, count)
            self._record(mean, var)
        shape = (1, -1) + (1,) * (x.dim() - 2)  # the channel axis is 1
        out = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return torch.addcmul(self.bias.reshape(shape), out, self.weight.reshape(shape)) if self.affine else out


def share_statistics(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.BatchNorm1d`` of ``module`` (in place) by symfw's
    :class:`BatchNorm1d` — a subclass with the same parameters, buffers and outputs — so that a
    plugin's batch norm shares its statistics with penalty passes too."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm1d:
                new = BatchNorm1d(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                                  track_running_stats=child.track_running_stats)
                state = child.state_dict()
                floats = [v for v in state.values() if v.is_floating_point()]
                if floats:  # before loading: no rounding
                    new.to(device=floats[0].device, dtype=floats[0].dtype)
                new.load_state_dict(state)
                new.train(child.training)
                setattr(parent, name, new)
    return module


class MaskedBatchNorm(SharedStatistics, nn.Module):
    """BatchNorm over the real particles of (B, N, F) inputs; padded entries are ignored.

    Running statistics follow ``torch.nn.BatchNorm1d`` (momentum 0.1, unbiased running var);
    as there, setting ``track_running_stats = False`` normalises with the batch statistics
    without updating the running ones. Shares its statistics as :class:`SharedStatistics`.

    A training pass on a batch whose particles are all real is torch's fused batch norm over the
    B·N rows — the same statistics — when that can be seen without waiting for a device: on the
    CPU, outside ``vmap`` and compilation (:meth:`all_real`).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.track_running_stats = True
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def moments(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, biased variance and count over the real particles (``m`` = mask as 0/1, (B, N, 1))."""
        return self._moments(x, m)[:3]

    @staticmethod
    def _moments(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`moments` and the centred input (x − mean)·m."""
        count = m.sum((0, 1)).clamp_min(1.0)
        mean = (x * m).sum((0, 1)) / count
        centred = (x - mean) * m
        return mean, (centred * centred).sum((0, 1)) / count, count, centred

    def all_real(self, mask: torch.Tensor) -> bool:
        """Whether this pass may normalise as torch's batch norm: every particle real, seen on the
        CPU outside vmap and compilation, and the statistics this batch's own."""
        if mask.device.type != "cpu" or not self.local_statistics():
            return False
        if torch.compiler.is_compiling():
            return False
        try:
            return bool(mask.all())
        except RuntimeError:  # under vmap a tensor cannot steer Python
            return False

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training and self.stats_mode != "reuse" and self.all_real(mask):
            flat = x.reshape(-1, x.shape[-1])
            if self.stats_mode == "record":
                mean = flat.mean(0)
                self._record(mean, (flat - mean).square().mean(0))
            track = self.track_running_stats
            return F.batch_norm(flat, self.running_mean if track else None, self.running_var if track else None,
                                self.weight, self.bias, True, self.momentum, self.eps).view_as(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        if self.training and self.stats_mode == "reuse":
            mean, var = self._reused()
            centred = (x - mean) * m
        elif self.training or not self.track_running_stats:
            if self.local_statistics():
                mean, var, count, centred = self._moments(x, m)
            else:  # a subclass's statistics (data-parallel: over every rank's particles)
                mean, var, count = self.moments(x, m)
                centred = (x - mean) * m
            if self.training and self.track_running_stats:
                _update_running(self, mean, var, count)
            self._record(mean, var)
        else:
            mean, var = self.running_mean, self.running_var
            centred = (x - mean) * m
        # ((x − mean)/√(var + ε)·w + b)·m, in as few passes over (B, N, F) as the arithmetic allows
        return torch.addcmul(self.bias, centred, torch.rsqrt(var + self.eps) * self.weight) * m


class SharedBatchStatistics:
    """What :func:`shared_batch_statistics` yields: ``reusing()`` for the penalty passes, and
    ``exact`` — whether every batch norm of the module shares its statistics, so that a pass on
    the training batch inside ``reusing()`` reproduces the training pass's output exactly."""

    def __init__(self, module: nn.Module):
        self.shared = [m for m in module.modules() if isinstance(m, SharedStatistics)]
        self.foreign = [
            m for m in module.modules()
            if not isinstance(m, SharedStatistics) and hasattr(m, "running_mean") and hasattr(m, "track_running_stats")
        ]
        self.exact = not self.foreign

    @contextlib.contextmanager
    def reusing(self) -> Iterator[None]:
        """Passes normalise with the recorded statistics (other norms: their running ones)."""
        modes = [m.stats_mode for m in self.shared]
        training = [m.training for m in self.foreign]
        for m in self.shared:
            m.stats_mode = "reuse"
        for m in self.foreign:
            m.training = False
        try:
            yield
        finally:
            for m, mode in zip(self.shared, modes):
                m.stats_mode = mode
            for m, flag in zip(self.foreign, training):
                m.training = flag


@contextlib.contextmanager
def shared_batch_statistics(module: nn.Module) -> Iterator[SharedBatchStatistics]:
    """Let later passes of ``module`` normalise exactly as its training pass did.

    Inside the block, every training-mode pass records its batch-norm statistics; passes made
    inside the yielded object's ``reusing()`` normalise with the last recorded ones and move no
    running statistic. This is how the trainer evaluates penalties: f(Λx) is normalised with the
    statistics of the clean batch x (as f(x) itself), so transformed events never shape the
    normalisation — a model cannot learn to go flat when a batch looks boosted — and a penalty may
    reuse the training pass's logits. :func:`~symfw.core.model.build_model` gives every model
    symfw's batch norms (:func:`share_statistics`); other norm layers (e.g. a plugin's
    ``BatchNorm2d``) use their running statistics inside ``reusing()``, and the yielded ``exact``
    is then false. Recorded statistics are dropped on leaving the block.
    """
    shared = SharedBatchStatistics(module)
    for m in shared.shared:
        m.stats_mode = "record"
    try:
        yield shared
    finally:
        for m in shared.shared:
            m.stats_mode = None
            m.recorded = None


class ParticleMLP(nn.Module):
    """The same MLP applied to every particle of (B, N, F) inputs, masked batch norm; padded
    particles give zeros.

    When some particles are padded and that can be seen without waiting for a device (on the
    CPU, outside vmap and compilation: :meth:`real_rows`), only the real particles are computed:
    they are packed into one batch of rows, whose batch norm is torch's fused one, and the
    results put back in place — the same function, at the cost of the real particles alone.
    """

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

    @staticmethod
    def real_rows(mask: torch.Tensor) -> torch.Tensor | None:
        """The indices of the real particles in the flattened (B·N) batch, when some are padded
        (at least two real) and the mask is on the CPU outside vmap and compilation; else None."""
        if mask.device.type != "cpu" or torch.compiler.is_compiling():
            return None
        flat = mask.reshape(-1)
        try:
            real = int(flat.sum())
        except RuntimeError:  # under vmap a tensor cannot steer Python
            return None
        if real < 2 or real == flat.numel():
            return None
        return flat.nonzero().squeeze(1)

    def _layers(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = linear(x)
            x = norm(x, mask) if isinstance(norm, MaskedBatchNorm) else x
            x = torch.relu(x)
        return self.out(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = self.real_rows(mask)
        if rows is None:
            return self._layers(x, mask) * mask.unsqueeze(-1).to(x.dtype)
        b, n = mask.shape
        packed = x.reshape(b * n, -1).index_select(0, rows).unsqueeze(0)  # (1, R, F): the real particles
        out = self._layers(packed, mask.new_ones(1, rows.numel())).squeeze(0)
        return out.new_zeros(b * n, out.shape[-1]).index_copy(0, rows, out).view(b, n, -1)


def hidden_neurons(module: nn.Module) -> int:
    """Total hidden-layer width of every block in ``module`` that declares ``hidden_sizes``."""
    return sum(sum(m.hidden_sizes) for m in module.modules() if hasattr(m, "hidden_sizes"))


def n_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
