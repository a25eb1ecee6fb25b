"""An ensemble of M models of one architecture, trained together.

Two ways to hold and run the members:

- **stacked** (for a vectorised step): the members' parameters and buffers are stacked along a
  leading member axis (``torch.func.stack_module_state``); one stateless copy of the
  architecture on the ``meta`` device runs them through ``torch.func.functional_call``, and
  ``torch.func.vmap`` over the member axis gives one batched forward/backward for all members,
  each with its own batch of events (steps of the stacked ensemble may also run one member
  after the other, on views of the stacked tensors: the fallback when vmap fails);
- **direct** (``direct=True``, what the trainer uses for one member or ``--vectorize no``): every
  member is a module of its own, run as it is — no functional call and no views per step; the
  stacked tensors (:attr:`Ensemble.params`, :attr:`Ensemble.buffers`) are assembled from the
  members for checkpoints and evaluation.

Both compute the same per-member losses and gradients, and one AdamW (an element-wise update)
steps all members at once, so they differ only by floating-point rounding of batched versus
single matrix products. Tolerance (tested in
``tests/core/test_ensemble.py``): in float64 the per-member metrics of every epoch agree to
1e-9; in float32 one step's gradients agree within 1e-5 of the largest gradient, and training
amplifies such rounding differences over many steps as it does between two machines.

BatchNorm under vmap: the running statistics are stacked buffers too; the in-place updates of
``nn.BatchNorm1d`` and :class:`~symfw.core.nn.MaskedBatchNorm` write through to each member's
slice. While a penalty evaluates the model (:meth:`Ensemble.penalty_fn`), every batch norm
normalises with the statistics of the step's clean batch
(:func:`~symfw.core.nn.shared_batch_statistics`): the penalty's passes on transformed events
neither shape the normalisation nor move the running averages, and f(x) in a penalty equals the
training pass's logits, which the penalty gets as ``batch.logits``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .interfaces import Batch, Penalty, Task
from .limits import eval_chunk
from .model import SymfwModel, build_model
from .nn import SharedBatchStatistics, shared_batch_statistics
from .spec import Spec

State = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class PenaltyTerm:
    """A penalty and its effective weight λ for the current epoch."""

    name: str
    penalty: Penalty
    lam: float


class Ensemble:
    """M members built from ``spec``, member m initialised with ``torch.manual_seed(seeds[m])``.

    Members are built on the CPU and then moved to ``device`` (and ``dtype``, float32 unless
    asked), so a seed gives the same initial weights on every device. ``task`` gives the loss
    (the spec's task by default); ``output_affine`` = (shift, scale) sets every member's output
    layer (:meth:`~symfw.core.model.SymfwModel.set_output_affine`, regression); ``init(seed)``
    gives a member's initial state instead of its own (matched initialisation,
    :mod:`symfw.core.matching`). ``direct``: the members stay modules of their own, stepped one
    after the other (see the module docstring).
    """

    def __init__(
        self,
        spec: Spec,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        registry=None,
        vectorize: bool = True,
        dtype: torch.dtype = torch.float32,
        task: Task | None = None,
        output_affine: tuple[torch.Tensor, torch.Tensor] | None = None,
        init: Callable[[int], dict[str, torch.Tensor]] | None = None,
        direct: bool = False,
    ):
        if len(seeds) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.spec = spec
        self.registry = registry
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.vectorize = vectorize
        self.dtype = dtype
        models = []
        for s in self.seeds:
            model = build_model(spec, registry, seed=s)
            if init is not None:
                model.load_state_dict(init(s))
            models.append(model.to(device=self.device, dtype=dtype))
            if output_affine is not None:
                models[-1].set_output_affine(*output_affine)
        if task is None:
            from .registry import get_registry

            cls = (registry or get_registry()).get("task", spec.task.name)
            task = cls(cls.Options.model_validate(spec.task.options))
        self.task = task
        self.direct = direct
        self.eval_chunk = eval_chunk(spec, registry, dtype)  # events per evaluation pass (bounded memory)
        if direct:  # every member a module of its own (its tensors are the state)
            self.members: list[SymfwModel] = models
            self.base: SymfwModel = models[0]
        else:
            self._params, self._buffers = stack_module_state(models)
            self.base = copy.deepcopy(models[0]).to("meta")
        self.n_parameters = sum(p.numel() for p in models[0].parameters())
        self._compiled: tuple[Callable, Callable] | None = None  # see compile_step
        self._compiled_batch: int | None = None

    # -- basics ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.seeds)

    def train(self, mode: bool = True) -> "Ensemble":
        for module in self.members if self.direct else [self.base]:
            module.train(mode)
        return self

    def eval(self) -> "Ensemble":
        return self.train(False)

    def _stack(self, named: Callable[[nn.Module], object]) -> dict[str, torch.Tensor]:
        """``direct``: the members' tensors stacked, without grad (views for one member, else copies)."""
        parts = [dict(named(module)) for module in self.members]
        if len(parts) == 1:
            return {k: v.detach().unsqueeze(0) for k, v in parts[0].items()}
        return {k: torch.stack([part[k].detach() for part in parts]) for k in parts[0]}

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The stacked parameters, (M, ...) each (``direct``: the members', stacked without grad)."""
        if self.direct:
            return self._stack(nn.Module.named_parameters)
        return self._params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        """The stacked buffers, (M, ...) each (``direct``: the members', stacked)."""
        if self.direct:
            return self._stack(nn.Module.named_buffers)
        return self._buffers

    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimiser steps (their gradients are the step's): the stacked
        parameters, or (``direct``) the members' own, every parameter's members in a row."""
        if not self.direct:
            return list(self._params.values())
        named = [dict(module.named_parameters()) for module in self.members]
        return [part[k] for k in named[0] for part in named]

    def parameter_layout(self) -> tuple[list[torch.Size], int]:
        """How the optimiser's state is laid out: the stacked shape (M, ...) of every parameter,
        and how many consecutive tensors of :meth:`parameters` each one covers."""
        return [p.shape for p in self.params.values()], len(self) if self.direct else 1

    def _call(self, params, buffers, p4, mask) -> torch.Tensor:
        if isinstance(params, nn.Module):  # a member module itself (direct)
            return params(p4, mask)
        return functional_call(self.base, (params, buffers), (p4, mask))

    def _slice(self, m: int, state: State | None = None) -> State:
        params, buffers = state if state is not None else (self.params, self.buffers)
        return {k: v[m] for k, v in params.items()}, {k: v[m] for k, v in buffers.items()}

    def _trained(self, m: int) -> tuple:
        """Member m as a training step runs it: views of the stacked tensors, or (``direct``)
        (its module, None) — no views, no functional call."""
        return (self.members[m], None) if self.direct else self._slice(m)

    def _stacked(self) -> State:
        """The stacked state with gradients flowing to :meth:`parameters` (for a vmapped step;
        ``direct``: one member only, whose buffers must stay the ones updated in place)."""
        if self.direct:
            if len(self) != 1:
                raise RuntimeError("a direct ensemble of several members steps them one after the other")
            return {k: v.unsqueeze(0) for k, v in self.base.named_parameters()}, self.buffers
        return self._params, self._buffers

    def penalty_fn(self, params, buffers, shared: SharedBatchStatistics) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One member as a function (p4, mask) → logits, normalised with the step's recorded statistics."""

        def fn(p4, mask=None):
            if mask is None:
                mask = torch.ones(p4.shape[:2], dtype=torch.bool, device=p4.device)
            with shared.reusing():
                return self._call(params, buffers, p4, mask)

        return fn

    # -- training ----------------------------------------------------------------------------
    def member_loss(self, params, buffers, p4, mask, label, weight, terms: Sequence[PenaltyTerm], shares=None):
        """One member's task loss plus λ-weighted penalties on its batch: (total, loss, penalty).

        ``shares`` (data-parallel shards) = (share of the batch's weight, share of its events):
        the loss and each penalty are multiplied by the share matching their weighting, so the
        shards' values sum to those of the whole batch.
        """
        total, loss, penalty = self._member_terms(params, buffers, p4, mask, label, weight, terms, shares)
        return total, loss.detach(), penalty.detach()

    def _member_terms(self, params, buffers, p4, mask, label, weight, terms: Sequence[PenaltyTerm], shares=None):
        """:meth:`member_loss` with nothing detached (what is compiled: a compiled function's
        detached outputs lose the first output's graph in torch 2.13)."""
        # without penalties nothing reuses the statistics: every batch norm is then torch's own
        module = params if isinstance(params, nn.Module) else self.base
        with shared_batch_statistics(module) if terms else contextlib.nullcontext() as shared:
            logits = self._call(params, buffers, p4, mask)
            loss = self.task.loss(logits, label, weight)
            if shares is not None:
                loss = loss * shares[0]
            penalty = torch.zeros((), dtype=loss.dtype, device=loss.device)
            if terms:
                fn = self.penalty_fn(params, buffers, shared)
                batch = Batch(p4=p4, mask=mask, label=label, weight=weight, logits=logits if shared.exact else None)
                for term in terms:
                    value = term.lam * term.penalty(fn, batch)
                    penalty = penalty + (value if shares is None else value * shares[0 if term.penalty.weighted else 1])
        return loss + penalty, loss, penalty

    def backward(
        self, batch: Batch, terms: Sequence[PenaltyTerm] = (), vectorize: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member losses of one step and their gradients (accumulated in ``.grad``).

        ``batch`` holds one batch per member: p4 (M, B, N, 4), mask (M, B, N), label (the task's
        target, (M, B) or (M, B, K)) and weight (M, B). Returns the detached task losses (M,) and
        penalty values (M,). A step without penalties on a full batch runs the compiled step
        when :meth:`compile_step` made one.
        """
        vectorize = self.vectorize if vectorize is None else vectorize
        terms = [t for t in terms if t.lam != 0]
        compiled = self._compiled if not terms and batch.p4.shape[1] == self._compiled_batch else None
        if vectorize:
            members = compiled[1] if compiled else self._members_terms
            total, bce, pen = members(*self._stacked(), batch.p4, batch.mask, batch.label, batch.weight, terms)
            total.sum().backward()
            return bce.detach(), pen.detach()
        member = compiled[0] if compiled else self._member_terms
        bces, pens = [], []
        for m in range(len(self)):
            params, buffers = self._trained(m)
            total, bce, pen = member(params, buffers, batch.p4[m], batch.mask[m], batch.label[m], batch.weight[m], terms)
            total.backward()
            bces.append(bce.detach())
            pens.append(pen.detach())
        return torch.stack(bces), torch.stack(pens)

    def _members_terms(self, params, buffers, p4, mask, label, weight, terms: Sequence[PenaltyTerm]):
        """:meth:`_member_terms` of every member at once (``vmap`` over the member axis)."""
        return vmap(
            lambda p, b, x, m, y, w: self._member_terms(p, b, x, m, y, w, terms), randomness="different"
        )(params, buffers, p4, mask, label, weight)

    def _with_copies(self, fn: Callable[[], object]) -> str | None:
        """Run ``fn`` on copies of the state (``direct``: on the module, whose state and
        gradients are put back after); None if it works, else the reason (one line). Nothing
        of the ensemble changes (state and global RNG are restored)."""
        if self.direct:
            saved = [{k: v.detach().clone() for k, v in module.state_dict().items()} for module in self.members]
            grads = [(p.grad, None if p.grad is None else p.grad.clone()) for p in self.parameters()]
        else:
            saved_params, saved_buffers = self._params, self._buffers
            self._params = {k: v.detach().clone().requires_grad_(True) for k, v in saved_params.items()}
            self._buffers = {k: v.clone() for k, v in saved_buffers.items()}
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                fn()
            return None
        except Exception as exc:  # noqa: BLE001 - any failure means: take the other path
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            if self.direct:
                with torch.no_grad():
                    for module, kept in zip(self.members, saved):
                        for k, v in module.state_dict().items():
                            v.copy_(kept[k])
                    for p, (g, kept) in zip(self.parameters(), grads):  # autograd may add into g in place
                        if g is not None:
                            g.copy_(kept)
                        p.grad = g
            else:
                self._params, self._buffers = saved_params, saved_buffers

    def probe_vectorized(self, batch: Batch, terms: Sequence[PenaltyTerm] = ()) -> str | None:
        """Try one vectorised step on copies of the state; None if it works, else the reason.

        Nothing of the ensemble changes (state and global RNG are restored) but the memory
        layout of the stacked parameters: each takes that of its vmapped gradient (a Linear
        weight's arrives transposed), so gradients are accumulated without a strided copy.
        """
        layouts: dict[str, tuple[int, ...]] = {}

        def record(k: str):
            def hook(grad: torch.Tensor) -> None:  # the gradient as it arrives, before accumulation copies it
                layouts.setdefault(k, grad.stride())
            return hook

        def step():
            if not self.direct:
                for k, v in self._params.items():
                    v.register_hook(record(k))
            self.backward(batch, terms, vectorize=True)

        reason = self._with_copies(step)
        if reason is None and not self.direct:
            with torch.no_grad():
                for k, v in self._params.items():
                    if k in layouts and layouts[k] != v.stride():
                        v.data = torch.empty_strided(v.shape, layouts[k], dtype=v.dtype, device=v.device).copy_(v)
        return reason

    def compile_step(self, batch: Batch, vectorize: bool) -> str | None:
        """Compile the training step without penalties with ``torch.compile`` — forward and loss,
        and (through AOTAutograd) their backward — for full batches of ``batch``'s size, and try
        it on copies of the state; None if it works, else the reason, and the step stays eager.

        Torch keeps the compiled graphs in memory for every later step and on disk (its
        inductor cache) for later runs. Batches of another size (the last of an epoch) and
        steps with penalties run eagerly. The compiled step computes the same function; float32
        rounding may differ from the eager step's in the last bits.
        """
        self._compiled = (
            torch.compile(self._member_terms, dynamic=False),
            torch.compile(self._members_terms, dynamic=False),
        )
        self._compiled_batch = batch.p4.shape[1]
        reason = self._with_copies(lambda: self.backward(batch, (), vectorize=vectorize))
        if reason is not None:
            self._compiled, self._compiled_batch = None, None
        return reason

    @property
    def compiled(self) -> bool:
        """Whether full-batch steps without penalties run compiled (:meth:`compile_step`)."""
        return self._compiled is not None

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        p4: torch.Tensor,
        mask: torch.Tensor,
        state: State | None = None,
        chunk: int | None = None,
    ) -> torch.Tensor:
        """Outputs (M, n[, K]) of every member on the same n events, in eval mode, ``chunk``
        events at a time (default: :func:`~symfw.core.limits.eval_chunk` of the spec, which bounds
        a pass's memory): members one after the other (on a CPU three times as fast as one
        vmapped pass, which works on M times larger tensors), vmapped on a GPU when the ensemble
        trains vmapped."""
        chunk = chunk or self.eval_chunk
        was_training = self.base.training
        self.eval()
        params, buffers = state if state is not None else (self.params, self.buffers)
        outs = []
        try:
            for start in range(0, p4.shape[0], chunk):
                x, m = p4[start : start + chunk], mask[start : start + chunk]
                if state is None and self.direct:
                    out = torch.stack([module(x, m) for module in self.members])
                elif self.vectorize and self.device.type == "cuda":
                    out = vmap(self._call, in_dims=(0, 0, None, None))(params, buffers, x, m)
                else:
                    out = torch.stack([self._call(*self._slice(i, (params, buffers)), x, m) for i in range(len(self))])
                outs.append(out)
        finally:
            self.train(was_training)
        return torch.cat(outs, dim=1)

    # -- state ---------------------------------------------------------------------------------
    def member_shapes(self) -> State:
        """One member's parameters and buffers as meta tensors (names, shapes, dtypes)."""
        meta = lambda named: {k: torch.empty_like(v, device="meta") for k, v in named}  # noqa: E731
        return meta(self.base.named_parameters()), meta(self.base.named_buffers())

    def state(self) -> State:
        """Detached contiguous copies of the stacked parameters and buffers."""
        snapshot = lambda t: t.detach().clone(memory_format=torch.contiguous_format)  # noqa: E731
        return {k: snapshot(v) for k, v in self.params.items()}, {k: snapshot(v) for k, v in self.buffers.items()}

    @torch.no_grad()
    def load_state(self, state: State) -> None:
        params, buffers = state
        if self.direct:
            for m, module in enumerate(self.members):
                mine = module.state_dict()
                for k, v in {**params, **buffers}.items():
                    mine[k].copy_(v[m])
            return
        for k, v in params.items():
            self._params[k].copy_(v)
        for k, v in buffers.items():
            self._buffers[k].copy_(v)

    def member(self, m: int, state: State | None = None) -> SymfwModel:
        """Member m as a standalone :class:`SymfwModel` (eval mode) on the ensemble's device."""
        params, buffers = self._slice(m, state)
        with torch.random.fork_rng(devices=[]):
            model = build_model(self.spec, self.registry).to(device=self.device, dtype=self.dtype)
        model.load_state_dict({**{k: v.detach() for k, v in params.items()}, **buffers})
        return model.eval()
