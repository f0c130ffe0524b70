"""The one resolver of an object named by text: `package.module:attr` (a --target factory, a rank_runner
function) and the dotted path `package.module.attr` (a torch entry point, a matrix row's requirement).

Named once here so every caller fails the same way: a malformed name or a module that is not there is a
`NameNotFound` naming the text, what was expected and the fix; a module whose import raises is the caller's
to report (its code crashed: the exception goes up untouched). Rank programs are never named by text: the
command that picks one passes the module object (compile_guard.launch.modes.RankProgram).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class NameNotFound(LookupError):
    """A name that does not resolve: the message says which text, what was expected and what to do."""


def split(text: str, *, what: str, example: str, shape: str = "package.module:function") -> tuple[str, str]:
    """'package.module:attr' -> (module, attr); NameNotFound unless both are dotted identifiers (`shape`: how the
    message writes the expected form)."""
    module_name, sep, attr = text.partition(":")
    dotted = bool(module_name) and all(part.isidentifier() for part in module_name.split("."))
    if not sep or not dotted or not attr.isidentifier():
        raise NameNotFound(f"{what} {text!r} is not '{shape}' (dotted names, no relative import); e.g. {example}")
    return module_name, attr


def callable_at(text: str, *, what: str, example: str, shape: str = "package.module:function") -> Callable:
    """The callable `package.module:attr` names. NameNotFound when the name is malformed, the module cannot be
    found or has no such callable; whatever the module's own import raises otherwise."""
    module_name, name = split(text, what=what, example=example, shape=shape)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NameNotFound(f"{what} {text!r}: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise NameNotFound(f"{what} {text!r}: {module_name} has no callable {name!r}")
    return found


def dotted(path: str) -> Any:
    """The object at a dotted path: the longest importable module prefix, then attributes (ImportError,
    AttributeError when it is not there: compile_guard.compat turns them into TorchInternalMissing)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(path)
