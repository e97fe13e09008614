"""SPICA engine: dbspica, the node layer, the daemon, operations and planning.

Nothing in this package imports a UI library (textual, rich, typer); the faces in
``spica_tui`` depend on it, never the other way round.
"""

__version__ = "0.1.0"
