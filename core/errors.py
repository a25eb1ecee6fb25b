"""Domain exceptions. The CLI renders each as one line on stderr.

``UsageError`` and its subclasses mean *bad input* (exit code 2); any other
``SymfwError`` is a failure while running (exit code 1).
"""

from __future__ import annotations


class SymfwError(Exception):
    """Base class of every error symfw raises on purpose."""

    exit_code = 1


class UsageError(SymfwError):
    """The user gave something symfw cannot use (a bad option, file or spec)."""

    exit_code = 2


class SpecError(UsageError):
    """A model spec is invalid. The message reads ``file: path.to.field: what is wrong``."""


class UnknownComponentError(SpecError):
    """A component name is not registered."""


class DataError(UsageError):
    """A data file or dataset option is invalid."""


class OutputError(UsageError):
    """An output path symfw cannot write (below a file, read-only, full, not a folder)."""


class PluginError(SymfwError):
    """A plugin could not be loaded or registered something inconsistent."""


class InvarianceError(AssertionError):
    """Raised by :func:`symfw.core.invariance.assert_invariant` when outputs differ."""
