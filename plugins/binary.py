"""Binary classification (the hybrid paper's task): one logit, weighted binary cross-entropy.

    loss = Σ_i w_i · BCE(f(x_i), y_i) / Σ_i w_i,   y ∈ {0, 1}

Metrics: weighted ROC AUC (the primary metric, larger is better), accuracy at logit 0, and the
background rejection 1/ε_B at signal efficiencies 0.3 and 0.5 (:mod:`symfw.core.metrics`).
An ensemble votes with its members' mean probability.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from symfw.core import metrics as M
from symfw.core.errors import DataError
from symfw.core.hookspecs import hookimpl
from symfw.core.interfaces import NoOptions, Task


class Binary(Task):
    """Signal (1) vs background (0): one logit, weighted BCE; AUC, accuracy, 1/ε_B."""

    name = "binary"
    Options = NoOptions
    primary = "auc"
    direction = "max"
    columns = (("auc", "AUC"), ("accuracy", "acc"), ("rej30", "1/εB @ εS=0.3"), ("rej50", "1/εB @ εS=0.5"))

    def out_features(self) -> int:
        return 1

    def targets(self, data) -> np.ndarray:
        classes = np.unique(data.label)
        if len(classes) < 2:
            raise DataError(f"task binary: the labels hold one class only ({classes[0]}); need signal and background")
        if not set(classes.tolist()) <= {0, 1}:
            raise DataError(
                f"task binary: labels must be 0 or 1, found {len(classes)} classes "
                f"({', '.join(str(c) for c in classes[:6])}); use the multiclass task"
            )
        return data.label.astype(np.float64)

    def loss(self, output, target, weight):
        return M.weighted_bce_with_logits(output, target, weight)

    def combine(self, outputs):
        """The logit of the members' mean probability: log p̄ − log(1 − p̄), p̄ = mean σ(z_m)."""
        z = torch.as_tensor(np.asarray(outputs, np.float64))
        log_m = math.log(z.shape[0])
        log_p = torch.logsumexp(F.logsigmoid(z), 0) - log_m
        log_q = torch.logsumexp(F.logsigmoid(-z), 0) - log_m
        return (log_p - log_q).numpy()

    def metrics(self, output, target, weight) -> dict[str, float]:
        out = M.evaluate(target, output, weight)
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        out["loss"] = float(M.weighted_bce_with_logits(as_t(output), as_t(target), as_t(weight)))
        return out


@hookimpl
def register_tasks(register):
    register(Binary)
