"""Matched initialisation (Bogatskiy, BOOST 2024): compared models start as the same function.

The spurions talk compares models that "differ only in the input layer": with the same seed,
every weight beyond the input layer is identical, and the input layers are initialised to give
identical outputs — so every model outputs the same on the first batch, and what differs after
training is what the input layer let each model learn.

For specs ``a₀, a₁, …`` (the first is the source of the weights) and one seed:

1. Each model is built as training builds it (``build_model(spec, seed=seed)``).
2. Every parameter and buffer with the same name and shape in all models is copied from a₀.
   A name that is not in every model, or a shape that differs other than in an input layer's
   column count, means the models differ beyond their input layers: refused, naming it.
3. An *input layer* is an ``nn.Linear`` whose weight has the same rows but a different number
   of columns (input features) in some model. Its input is recorded on a probe batch of real
   events; a column of a₀'s input is *common* when every model has a column with the same values
   (one-to-one, in order; float64, relative tolerance 1e-9). Each model's weight then holds a₀'s
   weight in its common columns and **zero** in every other column (the extra, e.g.
   non-invariant, channels), so every input layer computes the same pre-activations.

The models' outputs on the probe then agree to rounding; :func:`first_batch_difference` measures
it. Spurions appended as extra *particles* of a particle encoder change the number of rows an
input layer sees, not its columns: such specs cannot be matched and are refused.

A Linear applied blockwise (PELICAN's 2→2 layer applies one (H, F) block of its weight per
aggregation, never the module) is matched when a module above it declares
``blockwise_inputs = {"relative.name": k}``: that module's first argument holds the layer's F
input features, and its weight is k blocks of F columns (block b, feature c: column b·F + c);
each block is matched as the features are. PELICAN with and without the input method's pair
channels are matched this way (the channels E_i E_j, pz_i pz_j start at zero weight).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .errors import SpecError
from .spec import Spec

#: events of the training split (in order) used as the probe batch
PROBE_EVENTS = 256
RTOL = 1e-9


@dataclass(frozen=True)
class MatchedInit:
    """Train spec ``index`` of ``specs`` (the compared set; ``specs[0]`` gives the weights) matched."""

    specs: tuple[Spec, ...]
    index: int


@dataclass
class InputLayerMatch:
    """One input layer: for each model, the column of its input holding each common feature."""

    name: str
    columns: list[list[int]]  # per model, the column of each common feature (in a₀'s order)
    widths: list[int]  # per model, the layer's input width

    def describe(self, names: Sequence[str]) -> dict[str, Any]:
        return {"layer": self.name, "common_features": len(self.columns[0]),
                "inputs": {n: w for n, w in zip(names, self.widths)}}


def _refuse(specs: Sequence[Spec], why: str) -> SpecError:
    names = ", ".join(f"'{s.name}'" for s in specs)
    return SpecError(f"--matched-init: {names} cannot be matched: {why}")


def _input_layers(specs: Sequence[Spec], models: Sequence[nn.Module]) -> list[str]:
    """Names of the Linear modules whose weight differs only in its column count; everything else
    must have the same names and shapes in every model."""
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for spec, state in zip(specs[1:], states[1:]):
        extra = [k for k in state if k not in states[0]] + [k for k in keys if k not in state]
        if extra:
            raise _refuse(specs, f"'{extra[0]}' is not in every model (their architectures differ)")
    modules = [dict(m.named_modules()) for m in models]
    layers = []
    for key in keys:
        shapes = [tuple(s[key].shape) for s in states]
        if len(set(shapes)) == 1:
            continue
        owner, _, leaf = key.rpartition(".")
        linear = all(isinstance(mods.get(owner), nn.Linear) for mods in modules) and leaf == "weight"
        if not linear or len({s[0] for s in shapes}) != 1:
            listed = ", ".join(f"{tuple(sh)} in '{sp.name}'" for sp, sh in zip(specs, shapes))
            raise _refuse(specs, f"they differ beyond their input layers: '{key}' is {listed}")
        layers.append(owner)
    return layers


def _blocks(modules: dict[str, nn.Module], name: str) -> tuple[str, int]:
    """(the module whose first argument holds layer ``name``'s features, the number of weight
    blocks): the layer itself and 1, unless a module above it declares ``blockwise_inputs``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner, rel = ".".join(parts[:cut]), ".".join(parts[cut:])
        blocks = getattr(modules.get(owner), "blockwise_inputs", {})
        if rel in blocks:
            return owner, int(blocks[rel])
    return name, 1


def _layer_inputs(model: nn.Module, layers: Sequence[str], p4, mask) -> dict[str, torch.Tensor]:
    """The inputs of ``layers`` on the probe, flattened to (rows, features)."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def record(name):
        def hook(_module, args):  # returns None: the module's arguments stay as they are
            seen.setdefault(name, args[0].detach().reshape(-1, args[0].shape[-1]))
        return hook

    hooks = [modules[_blocks(modules, name)[0]].register_forward_pre_hook(record(name)) for name in layers]
    try:
        with torch.no_grad():
            model.eval()(p4, mask)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _match_columns(ref: torch.Tensor, other: torch.Tensor) -> dict[int, int]:
    """Columns of ``ref`` → a column of ``other`` with the same values (one-to-one, first free)."""
    # candidates by a random projection of each column (equal columns project equally), sorted
    # for a range search; then each candidate is checked value by value
    r = torch.rand(ref.shape[0], generator=torch.Generator().manual_seed(0), dtype=ref.dtype) + 0.5
    sig_ref, sig_other = r @ ref, r @ other
    tol = RTOL * (r @ ref.abs()) + 1e-300
    order = torch.argsort(sig_other)
    sorted_sig = sig_other[order]
    lo = torch.searchsorted(sorted_sig, sig_ref - 2 * tol).tolist()
    hi = torch.searchsorted(sorted_sig, sig_ref + 2 * tol, right=True).tolist()
    scale = ref.abs().amax(0)
    found: dict[int, int] = {}
    used: set[int] = set()
    ranked = order.tolist()
    start: dict[int, int] = {}  # for a range start, the first position not yet used (many equal columns)
    for c in range(ref.shape[1]):
        pos = start.get(lo[c], lo[c])
        while pos < hi[c] and ranked[pos] in used:
            pos += 1
        start[lo[c]] = pos
        for j in ranked[pos:hi[c]]:
            if j not in used and bool(((other[:, j] - ref[:, c]).abs() <= RTOL * scale[c]).all()):
                found[c] = j
                used.add(j)
                break
    return found


def matched_models(specs: Sequence[Spec], seed: int, p4: torch.Tensor, mask: torch.Tensor,
                   registry=None) -> tuple[list[nn.Module], list[InputLayerMatch]]:
    """The models of ``specs`` for ``seed``, matched on the probe (p4, mask) as the module
    docstring describes; float64, in training mode. Raises :class:`SpecError` when they cannot be."""
    from .model import build_model

    if len(specs) < 2:
        raise SpecError("--matched-init needs at least two specs to match")
    models = [build_model(s, registry, seed=seed).to(torch.float64) for s in specs]
    layers = _input_layers(specs, models)
    if not layers:
        raise _refuse(specs, "they have the same input layers (nothing to match; they are the same model)")
    ref_state = models[0].state_dict()
    for model in models[1:]:  # everything beyond the input layers: a₀'s weights
        state = model.state_dict()
        model.load_state_dict({k: (ref_state[k] if v.shape == ref_state[k].shape else v) for k, v in state.items()})
    probe = (p4.to(torch.float64), mask)
    inputs = [_layer_inputs(m, layers, *probe) for m in models]
    matches = []
    for name in layers:
        if not all(name in inp for inp in inputs):
            raise _refuse(specs, f"input layer '{name}' is not applied as a module (its weight is used in pieces, "
                                 "and no module above it declares blockwise_inputs), so its input features cannot be matched")
        x = [inp[name] for inp in inputs]
        if len({t.shape[0] for t in x}) != 1:
            rows = ", ".join(f"{t.shape[0]} in '{s.name}'" for s, t in zip(specs, x))
            raise _refuse(specs, f"input layer '{name}' sees a different number of rows ({rows}): the models "
                                 "differ in more than their input features (e.g. spurions added as particles)")
        per_model = [_match_columns(x[0], xm) for xm in x[1:]]
        common = [c for c in range(x[0].shape[1]) if all(c in found for found in per_model)]
        if not common:
            raise _refuse(specs, f"input layer '{name}' has no input feature common to every model")
        matches.append(InputLayerMatch(name, [common] + [[found[c] for c in common] for found in per_model],
                                       [t.shape[1] for t in x]))
    with torch.no_grad():
        for match in matches:
            ref_w = dict(models[0].named_modules())[match.name].weight.detach().clone()
            blocks = _blocks(dict(models[0].named_modules()), match.name)[1]
            for model, cols, width in zip(models, match.columns, match.widths):
                weight = dict(model.named_modules())[match.name].weight
                weight.zero_()
                for b in range(blocks):  # one block of the features per aggregation (1: a plain Linear)
                    weight[:, [b * width + c for c in cols]] = ref_w[:, [b * match.widths[0] + c for c in match.columns[0]]]
    for m in models:
        m.train()
    return models, matches


def matched_state(matched: MatchedInit, seed: int, p4: torch.Tensor, mask: torch.Tensor,
                  registry=None) -> dict[str, torch.Tensor]:
    """The initial state of ``matched.specs[matched.index]`` for ``seed`` (float64)."""
    models, _ = matched_models(matched.specs, seed, p4, mask, registry)
    return models[matched.index].state_dict()


def first_batch_difference(specs: Sequence[Spec], seeds: Sequence[int], p4: torch.Tensor, mask: torch.Tensor,
                           registry=None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Matched models of every seed on the probe, in ``dtype`` and training mode (batch
    statistics, as the first training step sees them): the largest |output − a₀'s output| over
    models, seeds and events, and which input layers were matched."""
    worst, layers = 0.0, []
    for seed in seeds:
        models, layers = matched_models(specs, seed, p4, mask, registry)
        with torch.no_grad():
            outs = [copy.deepcopy(m).to(dtype).train()(p4.to(dtype), mask) for m in models]
        worst = max([worst] + [float((o - outs[0]).abs().max()) for o in outs[1:]])
    names = [s.name for s in specs]
    return {"reference": names[0], "specs": names, "probe_events": int(p4.shape[0]),
            "dtype": str(dtype).removeprefix("torch."), "first_batch_max_difference": worst,
            "input_layers": [m.describe(names) for m in layers]}
