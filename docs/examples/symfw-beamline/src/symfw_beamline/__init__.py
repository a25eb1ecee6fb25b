"""symfw-beamline: an example symfw plugin package (see README.md)."""

__version__ = "0.2.0"
