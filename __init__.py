"""symfw: neural networks for approximately respected symmetries.

The Python API mirrors the CLI::

    import symfw
    spec = symfw.load_spec("hybrid")          # a preset name or a spec.toml path
    model = symfw.build_model(spec)
    logits = model(p4, mask)                  # p4: (B, N, 4) as (E, px, py, pz) in GeV

    data = symfw.resolve_data("zmumu", n_events=20000, seed=1)     # or a .npz/.h5 path
    result = symfw.run_training(spec, data, symfw.RunSettings(seeds=3), out="runs/x")

Plugins implement hooks marked with ``@symfw.hookimpl`` (see docs/plugins.md).
"""

# absolute imports: pytest imports this file as the package of the test folder's parent, under
# that folder's name, which may not be a valid package name (a clone in /tmp/tmp.XYZ)
from symfw.core.compare import run_compare
from symfw.core.data import EventData, load_events, make_split, resolve_data, save_events
from symfw.core.errors import DataError, PluginError, SpecError, SymfwError, UsageError
from symfw.core.hookspecs import hookimpl
from symfw.core.invariance import assert_invariant
from symfw.core.model import SymfwModel, build_model
from symfw.core.registry import get_registry
from symfw.core.spec import Spec, load_spec, resolve_spec, write_spec
from symfw.core.training import RunSettings, load_members, run_training

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "EventData",
    "RunSettings",
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
    "load_events",
    "load_members",
    "load_spec",
    "make_split",
    "resolve_data",
    "run_compare",
    "run_training",
    "save_events",
    "resolve_spec",
    "write_spec",
]
