"""Regression of per-event targets, e.g. a four-momentum (PELICAN's W reconstruction).

The data carry ``target`` (n_events, K). Targets are standardised with the training split's
weighted mean μ and standard deviation σ: the model's plain head predicts (t − μ)/σ and its
output layer maps back to physical units (an equivariant four-vector head predicts in GeV
directly); either way the loss compares r = (pred − t)/σ:

    MSE:    loss = Σ_i w_i · mean_k r_ik² / Σ_i w_i
    Huber:  loss = Σ_i w_i · mean_k huber_δ(r_ik) / Σ_i w_i

Metrics (:func:`symfw.core.metrics.regression_metrics`): the loss (primary, smaller is better),
MSE, MAE and bias per component; for four-vector targets (K = 4, (E, px, py, pz)) the
resolutions PELICAN reports (:func:`~symfw.core.metrics.four_vector_resolutions`): ΔpT/pT and
Δm/m as half the 16–84 % inter-quantile range, ΔR and the 3-D angle ΔΨ as 68 % quantiles — and,
on the test split, the same in bins of the true pT (plot ``resolution_vs_pt.png``) — each next to
the reference a model must beat, the plain sum of the event's four-vectors (``sum_of_inputs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from symfw.core import metrics as M
from symfw.core.errors import DataError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Options, Task

RESOLUTIONS = (("pt", "ΔpT/pT"), ("mass", "Δm/m"), ("dR", "ΔR"), ("dPsi", "ΔΨ"))
PT_BINS = 6


class Regression(Task):
    """K targets per event: MSE or Huber loss on standardised targets; per-component errors, resolutions."""

    name = "regression"
    primary = "loss"
    direction = "min"

    class Options(Options):
        targets: int = Field(4, ge=1, description="K, the width of the data's target array (4: a four-momentum).")
        loss: Literal["mse", "huber"] = Field("mse", description="Loss on standardised residuals.")
        delta: float = Field(1.0, gt=0, description="Huber threshold, in units of σ.")

    def __init__(self, options=None):
        super().__init__(options)
        self.scale: torch.Tensor | None = None

    @property
    def four_vector(self) -> bool:
        return self.options.targets == 4

    @property
    def columns(self):
        return (("loss", "loss"), *(RESOLUTIONS if self.four_vector else (("mae", "MAE"),)))

    def out_features(self) -> int:
        return self.options.targets

    def targets(self, data) -> np.ndarray:
        target = getattr(data, "target", None)
        if target is None:
            raise DataError("task regression: the data have no 'target' array (see docs/data.md)")
        if target.shape[1] != self.options.targets:
            raise DataError(
                f"task regression: the data's target has {target.shape[1]} columns, the task expects "
                f"{self.options.targets} (task.options.targets)"
            )
        return target.astype(np.float64)

    def prepare(self, target, weight):
        w = (weight / weight.sum()).unsqueeze(-1)
        mean = (w * target).sum(0)
        std = ((w * (target - mean) ** 2).sum(0)).sqrt()
        self.scale = torch.where(std > 0, std, torch.ones_like(std))
        return mean, self.scale

    def loss(self, output, target, weight):
        if self.options.targets == 1:  # a one-output model gives (…, B), the targets are (B, 1)
            output = output.unsqueeze(-1)
        scale = self.scale.to(output) if self.scale is not None else 1.0
        r = (output - target) / scale
        per = r**2 if self.options.loss == "mse" else F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=self.options.delta)
        per_event = per.mean(-1)
        return (per_event * weight).sum(-1) / weight.sum(-1).clamp_min(1e-30)

    def metrics(self, output, target, weight) -> dict[str, float]:
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        out = {"loss": float(self.loss(as_t(output), as_t(target), as_t(weight)))}
        out.update(M.regression_metrics(output, target, weight))
        if self.four_vector:
            out.update(M.four_vector_resolutions(output, target, weight))
        return out

    def report(self, output, target, weight, data):
        """Resolutions vs true pT per member, and the reference a model must beat: the plain sum of
        the event's four-vectors (the jet's, or the dimuon's, own four-momentum)."""
        if not self.four_vector:
            return {}
        pt_true = np.hypot(target[:, 1], target[:, 2])
        curves = [M.resolution_vs(member, target, pt_true, bins=PT_BINS, weight=weight) for member in output]
        total = np.concatenate([(c.p4 * c.mask[..., None]).sum(1) for c in data.chunks(names=("p4", "mask"))])
        return {"resolution_vs_pt": curves, "sum_of_inputs": M.four_vector_resolutions(total, target, weight),
                "sum_of_inputs_vs_pt": M.resolution_vs(total, target, pt_true, bins=PT_BINS, weight=weight)}

    def plots(self, results, out: Path, names):
        from symfw.core.plots import plot_resolution_vs_pt

        path = plot_resolution_vs_pt(results, Path(out) / "resolution_vs_pt.png", names, RESOLUTIONS)
        return [path] if path is not None else []


@hookimpl
def register_tasks(register):
    register(Regression)
