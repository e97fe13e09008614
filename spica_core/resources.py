"""Files SPICA ships beside its code: the Alembic migrations, the example config and the
AstrOmatic tools' configuration files.

In a source checkout they live at the top of the repository (``sql/``, ``config/``); a wheel
carries copies under ``spica_core/_data`` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _first(*candidates: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def migrations_dir() -> Path:
    return _first(_CHECKOUT / "sql" / "migrations", _PACKAGE / "_data" / "migrations")


def example_config() -> Path:
    return _first(
        _CHECKOUT / "config" / "spica.example.toml", _PACKAGE / "_data" / "spica.example.toml"
    )


def astromatic_dir() -> Path:
    """The AstrOmatic configuration files (``.sex``, ``.param``, ``.psfex`` …)."""
    return _first(_CHECKOUT / "config" / "astromatic", _PACKAGE / "_data" / "astromatic")
