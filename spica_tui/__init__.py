"""The faces of SPICA over ``spica_core``: the typer CLI and the Textual console."""
