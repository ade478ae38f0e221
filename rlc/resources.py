"""Where the shipped data folders are: inside the package in a wheel, at the repo root in a checkout."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """`schemas` or `templates`: rlc/<name> in an installed wheel, <repo>/<name> in a source checkout."""
    packaged = _HERE / name
    return packaged if packaged.is_dir() else _HERE.parent / name
