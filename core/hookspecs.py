"""Hook specifications. A plugin implements any of these with ``@symfw.hookimpl``.

Every hook receives ``register``, a callback taking one component class (a subclass of the
interface in :mod:`symfw.core.interfaces` with a ``name``). Hooks are called with keyword
arguments only. The host decides what happens on a name clash (see docs/plugins.md).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("symfw")
hookimpl = pluggy.HookimplMarker("symfw")


@hookspec
def register_groups(register):
    """Register :class:`~symfw.core.interfaces.SymmetryGroup` subclasses."""


@hookspec
def register_invariant_maps(register):
    """Register :class:`~symfw.core.interfaces.InvariantMap` subclasses."""


@hookspec
def register_contexts(register):
    """Register :class:`~symfw.core.interfaces.BreakingContext` subclasses."""


@hookspec
def register_combiners(register):
    """Register :class:`~symfw.core.interfaces.Combiner` subclasses."""


@hookspec
def register_encoders(register):
    """Register :class:`~symfw.core.interfaces.Encoder` subclasses."""


@hookspec
def register_input_transforms(register):
    """Register :class:`~symfw.core.interfaces.InputTransform` subclasses (spurions, input method)."""


@hookspec
def register_penalties(register):
    """Register :class:`~symfw.core.interfaces.Penalty` subclasses."""


@hookspec
def register_datasets(register):
    """Register :class:`~symfw.core.interfaces.DatasetSource` subclasses."""


@hookspec
def register_tasks(register):
    """Register :class:`~symfw.core.interfaces.Task` subclasses (binary, multiclass, regression)."""


@hookspec
def register_formats(register):
    """Register :class:`~symfw.core.interfaces.FileFormat` subclasses (readers of event files)."""


#: hook name -> component kind it registers
HOOK_KINDS = {
    "register_groups": "group",
    "register_invariant_maps": "invariants",
    "register_contexts": "context",
    "register_combiners": "combiner",
    "register_encoders": "encoder",
    "register_input_transforms": "inputs",
    "register_penalties": "penalty",
    "register_datasets": "dataset",
    "register_tasks": "task",
    "register_formats": "format",
}
