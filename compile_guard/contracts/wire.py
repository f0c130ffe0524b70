"""The one reader of typed JSON: a frozen dataclass built from a JSON object, every field checked against its
annotation, and the one writer back (`plain`).

Everything that crosses a process boundary or comes from a file is read here: a rank's report
(compile_guard.contracts.rank_report), a baseline file (compile_guard.health.baseline), the agreement's
statements and verdicts (compile_guard.agreement.entries) and its messages (compile_guard.agreement.messages).
A field missing, or of another type, is a `WireError` (or the caller's subclass of it) naming the path of the
field (`rank 1's report.final.graph_breaks`), the value seen and the type expected. Data only: json.loads gives
the objects, never pickle. Torch-free.

Annotations understood: the JSON scalars (a whole float may arrive as an int; a bool is never an int), `Any`,
`X | None`, a nested dataclass, `list[X]`, `dict[str, X]`, fixed `tuple[X, Y]` (a JSON list), and the bare
`list` / `dict` of compile_guard.health.schema's metrics.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class WireError(ValueError):
    """A JSON object that is not the value this version writes: names the field, what was seen and expected."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def read(cls: type[T], data: Any, *, what: str, error: type[WireError] = WireError, strict: bool = False) -> T:
    """A `cls` built from `data`, nested dataclasses too. A key `cls` does not know is left out (a newer writer's),
    or refused with `strict` (the parent and its ranks run one version: a stray key is a version mix)."""
    if not isinstance(data, dict):
        raise error(f"{what} is a JSON {type(data).__name__}, expected an object ({cls.__name__})")
    hints, fields = _hints(cls), dataclasses.fields(cls)
    missing = [
        f.name
        for f in fields
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    unknown = sorted(set(data) - {f.name for f in fields}) if strict else []
    if unknown or (strict and missing):
        raise error(
            f"{what}: unknown field(s) {unknown}, missing field(s) {missing}; parent and ranks run different"
            " compile_guard versions?"
        )
    if missing:
        hint = hints[missing[0]]
        raise error(f"{what} has no field {missing[0]!r} (expected {_name(hint)})")
    values = {f.name: _value(data[f.name], hints[f.name], f"{what}.{f.name}", error) for f in fields if f.name in data}
    return cls(**values)


def _value(value: Any, hint: Any, what: str, error: type[WireError]) -> Any:
    """`value` checked against the type `hint` (nested dataclasses built); `error` when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` is used
        return _value(value, inner, what, error)
    if dataclasses.is_dataclass(hint):
        return read(hint, value, what=what, error=error)
    if origin is tuple:  # a fixed-length tuple, a JSON list on the wire
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise error(f"{what} is {value!r:.60}, expected a list of {len(args)}")
        return tuple(_value(v, a, f"{what}[{i}]", error) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON writes a whole float as it likes
    if origin is list:
        if not isinstance(value, list):
            raise error(f"{what} is {type(value).__name__} {value!r:.60}, expected a list")
        return value if args[0] is Any else [_value(v, args[0], f"{what}[{i}]", error) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{what} is {type(value).__name__} {value!r:.60}, expected an object")
        return value if args[1] is Any else {k: _value(v, args[1], f"{what}.{k}", error) for k, v in value.items()}
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise error(f"{what} is {type(value).__name__} {value!r:.60}, expected {_name(hint)}")


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)


def plain(value: Any, *, drop_none: bool = False) -> Any:
    """A dataclass as its JSON object (nested ones too, tuples as lists); `drop_none`: a field left None is left out
    of every object (a verdict's unset proofs, a run summary's counters of another topology)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: plain(getattr(value, f.name), drop_none=drop_none) for f in dataclasses.fields(value)}
        return {k: v for k, v in out.items() if v is not None} if drop_none else out
    if isinstance(value, (list, tuple)):
        return [plain(v, drop_none=drop_none) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, drop_none=drop_none) for k, v in value.items()}
    return value
