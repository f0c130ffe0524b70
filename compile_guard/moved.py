"""Names that moved keep working for one release: a shim module's attributes resolve to the new home and warn.

    __getattr__ = moved.shim("compile_guard.target", "compile_guard", ["GuardTarget", "TargetContext"])

The warning is a `DeprecationWarning` naming the import to write instead; `tests/test_public_api.py` checks
every shim (the same object, the warning, its text).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

REMOVED_IN = "0.3.0"  # the shims go one release after the move (0.1.0 -> 0.2.0 keeps them)


def warning(old: str, new: str, name: str) -> str:
    return (
        f"{old}.{name} moved: write `from {new} import {name}`; the old import stops working in"
        f" compile_guard {REMOVED_IN}"
    )


def shim(old: str, new: str, names: list[str]) -> Callable[[str], Any]:
    """A module `__getattr__` for the shim `old`: each of `names` from `new`, with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new})")
        warnings.warn(warning(old, new, name), DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)

    return __getattr__


def warn_module(old: str, new: str) -> None:
    """For a shim that must re-export eagerly (a pytest plugin: pytest finds fixtures by walking the module)."""
    warnings.warn(
        f"{old} moved to {new}: import or name {new} instead; {old} stops working in compile_guard {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
