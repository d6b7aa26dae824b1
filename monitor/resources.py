"""Where the bundled rule pack and templates are.

An installed wheel carries them as ``monitor/_bundled/{rules,templates}``; a source
checkout (editable install, tests) has them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    installed = _PACKAGE_DIR / "_bundled" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name


def bundled_rules_dir() -> Path:
    return _bundled("rules")


def templates_dir() -> Path:
    return _bundled("templates")
