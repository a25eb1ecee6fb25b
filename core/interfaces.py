"""The interfaces every plugin implements.

A *component* is a class with a registered ``name``, a one-line ``description`` (its
docstring's first line by default) and an ``Options`` pydantic model that validates its
options in a spec. The model assembly (:mod:`symfw.core.model`) constructs components
with the arguments stated in each interface's docstring.

Data flow: four-vectors → input transforms → subnets (general, invariant) → combiner
(with a breaking context) → head → the task's output (a logit, class logits, or a regression). Penalties read the model and the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from . import kinematics


class Options(BaseModel):
    """Base class of component options: unknown keys are errors, and so are NaN and infinities
    in float options (a field that means "no limit" by inf can say ``Field(allow_inf_nan=True)``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# hidden layer widths of an MLP option (``phi``, ``hidden``, ...): every layer at least one neuron
LayerSizes = list[Annotated[int, Field(ge=1)]]


class NoOptions(Options):
    """For components without options."""


class Component:
    """Mixin carrying what the registry needs to know about a plugin class."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Options: ClassVar[type[Options]] = NoOptions

    @classmethod
    def describe(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------------- particles


@dataclass(frozen=True)
class Particles:
    """What flows from the input transforms to the subnets.

    p4:       (B, N, 4) four-vectors (E, px, py, pz) in GeV, padded entries zero.
    mask:     (B, N) bool, True for real particles (and spurions).
    channels: (B, N, C) extra per-particle scalars the encoders see next to p4 (e.g. the
              one-hot spurion label); C may be 0.
    scalars:  (B, S) extra event-level scalars for the invariant subnet (the "input method");
              S may be 0.
    components: (B, N, K) per-particle non-invariant components (the input method's quantities,
              e.g. E and pz), zero for padding; an encoder on particles that declares
              ``reads_components`` (PELICAN) turns them into pair channels c_a(p_i)·c_a(p_j).
              K may be 0 (the default: an empty tensor).
    """

    p4: torch.Tensor
    mask: torch.Tensor
    channels: torch.Tensor
    scalars: torch.Tensor
    components: torch.Tensor | None = None

    def __post_init__(self):
        if self.components is None:
            b, n, _ = self.p4.shape
            object.__setattr__(self, "components", self.p4.new_zeros(b, n, 0))

    @classmethod
    def from_p4(cls, p4: torch.Tensor, mask: torch.Tensor | None = None) -> "Particles":
        b, n, _ = p4.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=p4.device)
        return cls(
            p4=p4,
            mask=mask,
            channels=p4.new_zeros(b, n, 0),
            scalars=p4.new_zeros(b, 0),
            components=p4.new_zeros(b, n, 0),
        )

    def replace(self, **changes: Any) -> "Particles":
        return replace(self, **changes)


# --------------------------------------------------------------------------- groups


class SymmetryGroup(Component):
    """A matrix Lie group acting linearly on four-vectors (E, px, py, pz).

    Contract — a group implements only its algebra:
    - ``generators()`` → (G, 4, 4) Lie-algebra matrices T_a with Λ = exp(θ T_a) in the group;
      ``generator_names`` has G entries. Elements preserve the metric η = diag(+1, −1, −1, −1):
      Λᵀ η Λ = η.
    - ``default_ranges()`` (optional) → the default ranges of |rapidity| (boost-like generators)
      and |angle| (rotation-like ones) of its random elements: [0, 1] and [0, π].

    Random elements and their action live in :mod:`symfw.core.groups`, the one place every
    caller (penalties, the invariance checker, diagnostics, augmentation) draws them from:
    ``sample(n, generator=None, *, dtype, device, rng)`` is
    :func:`~symfw.core.groups.random_elements` with the default ranges (along the one named
    generator when ``generator`` is given) and ``act(elements, p4, mask=None)`` is
    :func:`~symfw.core.groups.act` (only real particles move). Overriding them changes only
    what direct callers of these methods get; symfw itself calls the module.

    Constructed as ``Group(options)``.
    """

    kind = "group"

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    # -- to implement ------------------------------------------------------------------
    generator_names: ClassVar[tuple[str, ...]] = ()

    def generators(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        raise NotImplementedError

    def default_ranges(self) -> dict[str, tuple[float, float]]:
        """Default [low, high] of |rapidity| and |angle| for :func:`~symfw.core.groups.random_elements`."""
        return {"rapidity": (0.0, 1.0), "angle": (0.0, math.pi)}

    # -- shared ------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: str | None = None,
        *,
        dtype: torch.dtype = torch.float64,
        device=None,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(n, 4, 4) random elements: :func:`symfw.core.groups.random_elements` with the default
        ranges, along ``generator`` (a name) only when given."""
        from .groups import random_elements

        along = None if generator is None else [generator]
        return random_elements(self, n, generators=along, dtype=dtype, device=device, rng=rng)

    def generator_index(self, name: str) -> int:
        from .errors import UsageError

        if name not in self.generator_names:
            known = ", ".join(self.generator_names) or "none"
            raise UsageError(f"group '{self.name}' has no generator '{name}'; known: {known}")
        return self.generator_names.index(name)

    def act(
        self, elements: torch.Tensor, p4: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:func:`symfw.core.groups.act`: (B, 4, 4) or (4, 4) elements on (B, N, 4) four-vectors."""
        from .groups import act

        return act(elements, p4, mask)


class MatrixLieGroup(SymmetryGroup):
    """A subgroup of the Lorentz group spanned by named boost and rotation generators.

    Subclasses set ``boosts`` and ``rotations``: tuples of generator names among
    ``Kx, Ky, Kz`` (boosts) and ``Jx, Jy, Jz`` (rotations). Random elements
    (:func:`symfw.core.groups.random_elements`) are Λ = exp(φ n̂·J) exp(y m̂·K) with unit vectors
    n̂, m̂ uniform in the span of the group's rotation and boost generators, |y| uniform in
    [0, max_rapidity] and |φ| uniform in [0, max_angle] (options).
    """

    boosts: ClassVar[tuple[str, ...]] = ()
    rotations: ClassVar[tuple[str, ...]] = ()

    class Options(Options):
        max_rapidity: float = Field(1.0, ge=0)
        max_angle: float = Field(math.pi, ge=0)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "generator_names" not in cls.__dict__:
            cls.generator_names = tuple(cls.boosts) + tuple(cls.rotations)

    def generators(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        mats = [lorentz_generator(n, dtype=dtype, device=device) for n in self.generator_names]
        if not mats:
            return torch.zeros(0, 4, 4, dtype=dtype, device=device)
        return torch.stack(mats)

    def default_ranges(self) -> dict[str, tuple[float, float]]:
        return {"rapidity": (0.0, self.options.max_rapidity), "angle": (0.0, self.options.max_angle)}


_AXES = {"x": 1, "y": 2, "z": 3}


def lorentz_generator(name: str, dtype=torch.float64, device=None) -> torch.Tensor:
    """The Lorentz-algebra matrix acting on (E, px, py, pz) for ``Kx|Ky|Kz|Jx|Jy|Jz``.

    K_i generates a boost along axis i (rapidity parameter); J_i a rotation about axis i
    (right-handed, angle parameter).
    """
    t = torch.zeros(4, 4, dtype=dtype, device=device)
    kind, axis = name[0], name[1:]
    if kind == "K" and axis in _AXES:
        i = _AXES[axis]
        t[0, i] = t[i, 0] = 1.0
        return t
    if kind == "J" and axis in _AXES:
        # right-handed: about x turns y into z, about y turns z into x, about z turns x into y
        j, k = {"x": (2, 3), "y": (3, 1), "z": (1, 2)}[axis]
        t[j, k], t[k, j] = -1.0, 1.0
        return t
    raise ValueError(f"unknown Lorentz generator {name!r}")


# --------------------------------------------------------------------------- maps & contexts


class InvariantMap(Component):
    """Features of an event that are invariant under the group named by ``group``.

    ``__call__(p4, mask) → (B, F)`` for p4 (B, N, 4) and mask (B, N); padded particles
    contribute zeros; F depends only on N (the assembly finds it with a dry run).
    Constructed as ``Map(options)``.
    """

    kind = "invariants"
    group: ClassVar[str]

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def __call__(self, p4: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BreakingContext(Component):
    """The scale at which the symmetry breaks, e.g. the leading muon's pT.

    ``__call__(p4, mask) → (B, C)``, C depending only on N; computed from the raw particles
    (before input transforms). Constructed as ``Context(options)``.

    :meth:`variable` is the one number per event that the breaking scale stands for (in GeV;
    :attr:`variable_label` names it): the x-axis of the learned-weight curve and the variable
    a ``--train-pt-max`` cut applies to. By default the largest column of the context.
    """

    kind = "context"
    variable_label: ClassVar[str] = "pT [GeV]"

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def __call__(self, p4: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def variable(self, p4: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self(p4, mask).amax(-1)


# --------------------------------------------------------------------------- modules


class Combiner(Component, nn.Module):
    """Pools the general latent g (B, L) and the invariant latent s (B, L) using the context.

    ``forward(g, s, context) → (B, out_features)``. Constructed as
    ``Combiner(options, latent_dim=L, context_dim=C)``; set ``out_features``. Combiners that
    learn a weight of the general subnet override ``weight(context) → (B,)`` in [0, 1] (used
    for the learned-weight plots; the default returns None); ``needs_context`` says whether a
    context is required.
    """

    kind = "combiner"
    needs_context: ClassVar[bool] = False
    out_features: int

    def __init__(self, options: Options, latent_dim: int, context_dim: int):
        nn.Module.__init__(self)
        self.options = options
        self.latent_dim = latent_dim
        self.context_dim = context_dim

    def weight(self, context: torch.Tensor) -> torch.Tensor | None:
        """The learned weight of the general subnet per event, or None if there is none."""
        return None


class Encoder(Component, nn.Module):
    """A subnet body mapping its input to a latent vector (B, latent_dim).

    ``consumes`` is ``"particles"`` (forward receives a :class:`Particles`; per-particle input
    width ``in_features`` = 4 + channels) or ``"features"`` (forward receives a (B, F) tensor
    from an invariant map, plus the input-method scalars). Constructed as
    ``Encoder(options, in_features=F, latent_dim=L)``; an encoder on particles that declares
    ``reads_components = True`` is constructed with ``components=K`` too, the width of
    :attr:`Particles.components` (the input method's per-particle quantities).
    """

    kind = "encoder"
    consumes: ClassVar[str] = "features"
    reads_components: ClassVar[bool] = False

    def __init__(self, options: Options, in_features: int, latent_dim: int):
        nn.Module.__init__(self)
        self.options = options
        self.in_features = in_features
        self.latent_dim = latent_dim


class InputTransform(Component):
    """Rewrites the particles before the subnets see them (spurions, the input method).

    ``__call__(particles) → particles``, deterministic and without learnable state; the
    shapes it produces depend only on the input shapes. Spurions are appended *inside* the
    model, so group actions applied to a model's input (augmentation, penalties) never
    transform them. Constructed as ``Transform(options)``.

    :attr:`keeps` declares the subgroup the transform leaves unbroken: a subnet invariant under
    a group G in everything it is given is, after this transform, invariant under G ∩ keeps as a
    function of the particles (spurions: the stabiliser of the spurions; the input method: the
    subgroup fixing its quantities). A registered group's name or a
    :class:`SymmetryGroup`; the default, ``"trivial"``, claims nothing.
    """

    kind = "inputs"

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    @property
    def keeps(self) -> "str | SymmetryGroup":
        """The subgroup left unbroken (a registered group's name, or a group instance)."""
        return "trivial"

    def __call__(self, particles: Particles) -> Particles:
        raise NotImplementedError


class Penalty(Component):
    """A soft loss term, e.g. SEAL's Γ_G or Γ_δ: ``__call__(fn, batch) → scalar tensor``.

    ``fn`` is one ensemble member's function ``fn(p4, mask) → (B,)`` outputs — not an
    ``nn.Module``: the trainer passes each member as a function (under ``torch.func.vmap``
    for a vectorised ensemble, with ``randomness="different"``), normalising with the batch
    statistics its training pass recorded; a penalty only calls it, and changes neither the
    batch nor the model. ``batch`` is a :class:`Batch` (``batch.logits``, when set, is fn's
    training-pass output on ``batch.p4``). Random group elements come from
    :mod:`symfw.core.groups`. The trainer multiplies the value by λ from the spec.
    Constructed as ``Penalty(options, group=SymmetryGroup)`` with the spec's group.

    The value is a mean over the batch's events, weighted with ``batch.weight`` when the
    penalty declares :attr:`weighted` (by default its option ``weighted``, if it has one),
    else uniform. Data-parallel training relies on this to combine the ranks' shares into the
    penalty of the global batch.
    """

    kind = "penalty"

    def __init__(self, options: Options, group: SymmetryGroup):
        self.options = options
        self.group = group

    @property
    def weighted(self) -> bool:
        """Whether the mean over events uses the sample weights."""
        return bool(getattr(self.options, "weighted", False))

    def __call__(self, fn, batch: "Batch") -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Batch:
    """A batch of events: p4 (B, N, 4), mask (B, N), label — the task's target: (B,) labels for a
    classifier, (B, K) for a regression — and weight (B,).

    ``logits`` (B,), when set, is the training pass's output on ``p4``: a penalty given it may
    use it for f(x) instead of calling ``fn(p4, mask)`` again (the trainer makes the two equal).
    """

    p4: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor | None = None


class DatasetSource(Component):
    """A source of labelled events (a generator such as ``zmumu``).

    ``generate(n_events, seed) → EventData`` (see :mod:`symfw.core.data`). Same seed, same
    events. Constructed as ``Source(options)``.
    """

    kind = "dataset"

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def generate(self, n_events: int | None, seed: int, progress=None):
        raise NotImplementedError


class FileFormat(Component):
    """A reader of one kind of event file: symfw's own layout, or a public dataset's (Top Tagging,
    energyflow, JetClass, PELICAN).

    Constructed as ``Format(options)``. ``extensions`` are the file-name endings it reads
    (``".h5"``); :meth:`sniff` says from the file's content, cheaply and without the optional
    dependencies, whether the file is of this format; :meth:`open` returns a
    :class:`symfw.core.formats.Reader` (arrays named as in symfw's layout, read by row ranges).
    ``requires`` names the modules :meth:`open` imports and ``extra`` the pip extra installing
    them (a missing one is a one-line error naming the extra). A ``fallback`` format reads its
    extensions when no other format recognises the content, and says what is wrong with it.
    ``label`` is the format's name in messages.
    """

    kind = "format"
    extensions: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    fallback: ClassVar[bool] = False
    label: ClassVar[str] = ""

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def sniff(self, path: Path) -> bool:
        return False

    def open(self, path: Path):
        raise NotImplementedError


class Task(Component):
    """What a model is trained to do: its output width, loss, metrics and primary metric.

    Constructed as ``Task(options)``; one instance serves every member of an ensemble.

    - :meth:`out_features` is the head's width (1: the model returns (B,), else (B, K));
    - :meth:`targets` picks, from an :class:`~symfw.core.data.EventData`, what the loss compares
      the output with (labels, or the ``target`` array), refusing unsuitable data with a
      :class:`~symfw.core.errors.DataError`;
    - :meth:`prepare` sees the training split's targets before training (a regression fits its
      target scale there) and may return ``(shift, scale)`` for the model's output layer;
    - :meth:`loss` is a weighted mean over the batch's events (differentiable and usable under
      ``torch.func.vmap``: tensor operations only);
    - :meth:`metrics` evaluates outputs in NumPy; it includes ``loss`` and :attr:`primary`, the
      metric the learning-rate choice and the best epoch use, better when larger if
      :attr:`direction` is ``"max"``;
    - :meth:`combine` pools the members' outputs into the ensemble's (the mean prediction, or
      the mean probability of a classifier);
    - :attr:`columns` are the (metric, header) pairs of the train/compare tables;
      :meth:`report` adds task-specific results for the test split (e.g. resolutions vs pT) and
      :meth:`plots` draws them.
    """

    kind = "task"
    primary: ClassVar[str] = "loss"
    direction: ClassVar[str] = "min"
    columns: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()

    def out_features(self) -> int:
        raise NotImplementedError

    def targets(self, data) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def loss(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, output: np.ndarray, target: np.ndarray, weight: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def combine(self, outputs: np.ndarray) -> np.ndarray:
        """The ensemble's output from its members' outputs (M, n, ...): what the task predicts
        when the M members vote. A regression averages the predictions (this default); a
        classifier averages the predicted probabilities (:meth:`metrics` then reads the result
        as it reads one member's output)."""
        return np.asarray(outputs, np.float64).mean(0)

    def report(self, output: np.ndarray, target: np.ndarray, weight: np.ndarray, data) -> dict[str, Any]:
        """Task-specific test-split results for ``output`` (members, n, ...); ``data`` the test events."""
        return {}

    def plots(self, results: Sequence[dict[str, Any]], out: Path, names: Sequence[str]) -> list[Path]:
        """Figures of :meth:`report`'s results (one run result per compared spec)."""
        return []

    def better(self, a: float, b: float) -> bool:
        """Whether primary-metric value ``a`` beats ``b`` (NaN never does)."""
        if a != a:
            return False
        if b != b:
            return True
        return a > b if self.direction == "max" else a < b


COMPONENT_KINDS: dict[str, type[Component]] = {
    "group": SymmetryGroup,
    "invariants": InvariantMap,
    "context": BreakingContext,
    "combiner": Combiner,
    "encoder": Encoder,
    "inputs": InputTransform,
    "penalty": Penalty,
    "dataset": DatasetSource,
    "task": Task,
    "format": FileFormat,
}

# re-exported for plugins that build four-vector quantities
__all__ = [
    "Batch",
    "BreakingContext",
    "COMPONENT_KINDS",
    "Combiner",
    "Component",
    "DatasetSource",
    "Encoder",
    "FileFormat",
    "InputTransform",
    "InvariantMap",
    "MatrixLieGroup",
    "NoOptions",
    "Options",
    "Particles",
    "Penalty",
    "SymmetryGroup",
    "Task",
    "kinematics",
    "lorentz_generator",
]
