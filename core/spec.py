"""Model specs: TOML files validated by pydantic v2 and by each component's own options model.

A spec names every component of a model (see docs/specs.md). ``resolve_spec`` checks names
against the registry and fills every option with its default, so a written spec is complete.
Errors read ``file: path.to.field: message`` and raise :class:`SpecError` (exit code 2).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SpecError, SymfwError, UsageError
from .registry import Registry, get_registry, read_toml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN and inf are never a setting


class ComponentRef(Strict):
    """A registered component by name, with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class Subnet(Strict):
    """A subnet: an encoder body, fed by an invariant map when the encoder consumes features.

    ``inputs``: input transforms this subnet alone applies, after the model's own (e.g. jet-frame
    features for a PFN next to an invariant subnet that must see the plain four-vectors).
    """

    encoder: ComponentRef
    invariants: ComponentRef | None = None
    inputs: list[ComponentRef] = Field(default_factory=list)


class Head(Strict):
    """The MLP after the combiner; its output width is the task's (one logit for ``binary``).

    ``kind = "four-vector"`` makes it PELICAN's equivariant four-vector output instead: per
    particle an invariant weight w_i from the latent and the particle's invariants, and the
    output Σ_i w_i p_i (a task with four outputs: ``regression`` of a four-momentum).
    """

    kind: Literal["mlp", "four-vector"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [512, 256, 128])
    batchnorm: bool = True

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v):
            raise ValueError("layer sizes must be >= 1")
        return v


class PenaltyRef(ComponentRef):
    """A penalty with its weight λ; λ ramps linearly from 0 over ``warmup_epochs``."""

    lam: float = Field(1.0, ge=0)
    warmup_epochs: int = Field(0, ge=0)


class Augment(Strict):
    """Data augmentation: every training batch's particles are moved by random elements of
    ``group`` (one per event; spurions, appended inside the model, are never moved). ``rapidity``
    bounds the boosts' rapidity, ``angle`` the rotations' angle (radians)."""

    group: str
    rapidity: float = Field(1.0, ge=0)
    angle: float = Field(math.pi, ge=0)


class Training(Strict):
    """Optimisation settings (defaults from the hybrid paper: AdamW, wd 0.01, batch 128, 100 epochs)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=2, description="events per step; at least 2, as batch norm needs two")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate per epoch: constant, or cosine from lr to 0 over the epochs")
    augment: Augment | None = None


class Spec(Strict):
    """A complete model spec."""

    name: str = "custom"
    description: str = ""
    n_particles: int = Field(2, ge=1, description="particle slots the model sees: events with more are cut to their first n_particles")
    latent_dim: int = Field(16, ge=1)
    group: ComponentRef = Field(default_factory=lambda: ComponentRef(name="lorentz"))
    inputs: list[ComponentRef] = Field(default_factory=list)
    general: Subnet | None = None
    invariant: Subnet | None = None
    context: ComponentRef | None = None
    combiner: ComponentRef | None = None
    head: Head = Field(default_factory=Head)
    task: ComponentRef = Field(default_factory=lambda: ComponentRef(name="binary"))
    penalties: list[PenaltyRef] = Field(default_factory=list)
    training: Training = Field(default_factory=Training)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(exclude_none=True))


def with_training_overrides(spec: Spec, **overrides: Any) -> Spec:
    """The spec with ``[training]`` values replaced (None keeps the spec's); validated."""
    values = spec.training.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        training = Training.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(f"training.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    return spec.model_copy(update={"training": training})


# --------------------------------------------------------------------------- validation


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = _loc(tuple(err["loc"]))
    where = ".".join(x for x in (prefix, loc) if x)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {msg}{tail}"


def _check_component(ref: ComponentRef, kind: str, path: str, registry: Registry, origin: str):
    try:
        cls = registry.get(kind, ref.name)
    except SymfwError as exc:
        raise SpecError(f"{origin}: {path}.name: {exc}") from None
    try:
        opts = cls.Options.model_validate(ref.options)
    except ValidationError as exc:
        raise SpecError(f"{origin}: {_first_error(exc, f'{path}.options')}") from None
    ref.options = opts.model_dump(mode="json")
    return cls


def resolve_spec(data: dict[str, Any], origin: str = "spec", registry: Registry | None = None) -> Spec:
    """Validate a spec dict: structure, component names, component options, coherence."""
    registry = registry or get_registry()
    try:
        spec = Spec.model_validate(copy.deepcopy(data))
    except ValidationError as exc:
        raise SpecError(f"{origin}: {_first_error(exc)}") from None

    _check_component(spec.group, "group", "group", registry, origin)
    for i, ref in enumerate(spec.inputs):
        _check_component(ref, "inputs", f"inputs[{i}]", registry, origin)
    for side in ("general", "invariant"):
        subnet: Subnet | None = getattr(spec, side)
        if subnet is None:
            continue
        enc = _check_component(subnet.encoder, "encoder", f"{side}.encoder", registry, origin)
        for i, ref in enumerate(subnet.inputs):
            _check_component(ref, "inputs", f"{side}.inputs[{i}]", registry, origin)
        if subnet.invariants is not None:
            _check_component(subnet.invariants, "invariants", f"{side}.invariants", registry, origin)
        elif side == "invariant" and enc.consumes == "features":
            raise SpecError(
                f"{origin}: invariant.invariants: encoder '{subnet.encoder.name}' consumes features, "
                "so the invariant subnet needs an invariant map"
            )
    if spec.general is None and spec.invariant is None:
        raise SpecError(f"{origin}: general: a model needs a general or an invariant subnet (or both)")
    if spec.context is not None:
        _check_component(spec.context, "context", "context", registry, origin)
    if spec.combiner is not None:
        comb = _check_component(spec.combiner, "combiner", "combiner", registry, origin)
        if spec.general is None or spec.invariant is None:
            raise SpecError(f"{origin}: combiner: a combiner pools two subnets, but the model has one")
        if comb.needs_context and spec.context is None:
            raise SpecError(f"{origin}: context: combiner '{spec.combiner.name}' needs a context")
    elif spec.general is not None and spec.invariant is not None:
        raise SpecError(f"{origin}: combiner: a model with two subnets needs a combiner")
    for i, ref in enumerate(spec.penalties):
        _check_component(ref, "penalty", f"penalties[{i}]", registry, origin)
    task_cls = _check_component(spec.task, "task", "task", registry, origin)
    if spec.head.kind == "four-vector":
        width = task_cls(task_cls.Options.model_validate(spec.task.options)).out_features()
        if width != 4:
            raise SpecError(
                f"{origin}: head.kind: a four-vector head outputs 4 numbers, but task '{spec.task.name}' "
                f"needs {width}"
            )
    if spec.training.augment is not None:
        try:
            registry.get("group", spec.training.augment.group)
        except SymfwError as exc:
            raise SpecError(f"{origin}: training.augment.group: {exc}") from None
    return spec


def check_penalties(spec: Spec, registry: Registry | None = None, origin: str = "spec") -> None:
    """Construct each penalty with the spec's group, so options naming the group (generators) are
    checked before anything is trained or written."""
    registry = registry or get_registry()
    group_cls = registry.get("group", spec.group.name)
    group = group_cls(group_cls.Options.model_validate(spec.group.options))
    for i, ref in enumerate(spec.penalties):
        cls = registry.get("penalty", ref.name)
        try:
            cls(cls.Options.model_validate(ref.options), group=group)
        except UsageError as exc:
            raise SpecError(f"{origin}: penalties[{i}].options: {exc}") from None


def load_spec(source: str | Path, registry: Registry | None = None) -> Spec:
    """Load a spec from a TOML file path or a preset name (a file wins if both exist)."""
    registry = registry or get_registry()
    path = Path(source)
    if path.is_file() or path.suffix == ".toml":
        return resolve_spec(read_toml(path), origin=str(path), registry=registry)
    if str(source) in registry.presets:
        return resolve_spec(registry.preset(str(source)), origin=f"preset '{source}'", registry=registry)
    known = ", ".join(sorted(registry.presets))
    raise SpecError(f"{source}: neither a spec file nor a preset; presets: {known}")


def write_spec(spec: Spec, path: str | Path) -> None:
    """Write a spec atomically (temp file + rename)."""
    from .io import atomic_write_text

    atomic_write_text(Path(path), spec.to_toml())
