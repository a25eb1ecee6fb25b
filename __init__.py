"""symfw: neural networks for approximately respected symmetries.

The Python API mirrors the CLI::

    import symfw
    spec = symfw.load_spec("hybrid")          # a preset name or a spec.toml path
    model = symfw.build_model(spec)
    logits = model(p4, mask)                  # p4: (B, N, 4) as (E, px, py, pz) in GeV

Plugins implement hooks marked with ``@symfw.hookimpl`` (see docs/plugins.md).
"""

from .core.errors import DataError, PluginError, SpecError, SymfwError, UsageError
from .core.hookspecs import hookimpl
from .core.invariance import assert_invariant
from .core.model import SymfwModel, build_model
from .core.registry import get_registry
from .core.spec import Spec, load_spec, resolve_spec, write_spec

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "PluginError",
    "Spec",
    "SpecError",
    "SymfwError",
    "SymfwModel",
    "UsageError",
    "__version__",
    "assert_invariant",
    "build_model",
    "get_registry",
    "hookimpl",
    "load_spec",
    "resolve_spec",
    "write_spec",
]
