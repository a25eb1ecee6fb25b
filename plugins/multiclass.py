"""Multiclass classification (e.g. JetClass): C logits, weighted softmax cross-entropy.

    loss = Σ_i w_i · CE(softmax(f(x_i)), y_i) / Σ_i w_i,   y ∈ {0, …, C−1}

Metrics: accuracy (argmax), macro one-vs-rest ROC AUC (the primary metric: the mean over
classes of the AUC of class c's probability for c against the rest, scikit-learn's
``roc_auc_score(multi_class="ovr", average="macro")``) and the loss.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.metrics import roc_auc_score

from symfw.core.errors import DataError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import Options, Task


class Multiclass(Task):
    """C classes: C logits, weighted softmax cross-entropy; accuracy, macro one-vs-rest AUC."""

    name = "multiclass"
    primary = "auc"
    direction = "max"
    columns = (("auc", "macro AUC"), ("accuracy", "acc"))

    class Options(Options):
        classes: int = Field(3, ge=2, description="Number of classes C: labels 0 … C−1.")

    def out_features(self) -> int:
        return self.options.classes

    def targets(self, data) -> np.ndarray:
        label = np.asarray(data.label)
        C = self.options.classes
        if label.min() < 0 or label.max() >= C:
            raise DataError(f"task multiclass: labels must be 0 … {C - 1} (classes = {C}), found {label.min()} … {label.max()}")
        return label.astype(np.int64)

    def loss(self, output, target, weight):
        per_event = F.cross_entropy(output, target, reduction="none")
        return (per_event * weight).sum(-1) / weight.sum(-1).clamp_min(1e-30)

    def combine(self, outputs):
        """Log of the members' mean class probabilities (logits of the mean softmax)."""
        z = torch.as_tensor(np.asarray(outputs, np.float64))
        return (torch.logsumexp(torch.log_softmax(z, -1), 0) - math.log(z.shape[0])).numpy()

    def metrics(self, output, target, weight) -> dict[str, float]:
        output, target, weight = np.asarray(output, np.float64), np.asarray(target), np.asarray(weight, np.float64)
        total = weight.sum()
        loss = float(self.loss(torch.as_tensor(output), torch.as_tensor(target), torch.as_tensor(weight)))
        accuracy = float((weight * (output.argmax(-1) == target)).sum() / total) if total > 0 else math.nan
        present = np.unique(target)
        if len(present) < 2:
            auc = math.nan
        else:
            prob = torch.softmax(torch.as_tensor(output), -1).numpy()
            # AUC over the classes present (a class absent from a small split has no ROC curve)
            aucs = [roc_auc_score(target == c, prob[:, c], sample_weight=weight) for c in present]
            auc = float(np.mean(aucs))
        return {"auc": auc, "accuracy": accuracy, "loss": loss}


@hookimpl
def register_tasks(register):
    register(Multiclass)
