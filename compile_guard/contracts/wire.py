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
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class WireError(ValueError):
    """A JSON object that is not the value this version writes: names the field, what was seen and expected."""


# (value, parent, key, error) -> the value, typed; the field's path (`parent.key`, `parent[i]`) is spelled only
# when it is wrong or nested: the agreement reads thousands of messages a run
Check = Callable[[Any, str, "str | int", type[WireError]], Any]


def _path(parent: str, key: str | int) -> str:
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{key}"


@functools.cache
def _fields(cls: type) -> tuple[tuple[tuple[str, Check, bool], ...], frozenset[str]]:
    """Each field's (name, its compiled check, whether it is required) and every name: once per class."""
    hints = typing.get_type_hints(cls)
    fields = tuple(
        (
            f.name,
            _check(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )
    return fields, frozenset(name for name, _, _ in fields)


def read(cls: type[T], data: Any, *, what: str, error: type[WireError] = WireError, strict: bool = False) -> T:
    """A `cls` built from `data`, nested dataclasses too. A key `cls` does not know is left out (a newer writer's),
    or refused with `strict` (the parent and its ranks run one version: a stray key is a version mix)."""
    if not isinstance(data, dict):
        raise error(f"{what} is a JSON {type(data).__name__}, expected an object ({cls.__name__})")
    fields, names = _fields(cls)
    missing = [name for name, _, required in fields if required and name not in data]
    unknown = sorted(set(data) - names) if strict else []
    if unknown or (strict and missing):
        raise error(
            f"{what}: unknown field(s) {unknown}, missing field(s) {missing}; parent and ranks run different"
            " compile_guard versions?"
        )
    if missing:
        raise error(f"{what} has no field {missing[0]!r} (expected {_name(typing.get_type_hints(cls)[missing[0]])})")
    return cls(**{name: check(data[name], what, name, error) for name, check, _ in fields if name in data})


@functools.cache
def _check(hint: Any) -> Check:
    """The check of a value against the type `hint`, built once per annotation (nested dataclasses read by `read`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return lambda value, parent, key, error: value
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # `A | B | None` (a holding): its owner reads the JSON and passes the object
            return _either(tuple(inner))
        optional = _check(inner[0])
        return lambda value, parent, key, error: None if value is None else optional(value, parent, key, error)
    if dataclasses.is_dataclass(hint):
        return lambda value, parent, key, error: read(hint, value, what=_path(parent, key), error=error)
    if origin is tuple:  # a fixed-length tuple, a JSON list on the wire
        return _tuple([_check(a) for a in args])
    if origin is list:
        return _list(None if args[0] is Any else _check(args[0]))
    if origin is dict:
        return _dict(None if args[1] is Any else _check(args[1]))
    return _scalar(hint)


def _either(kinds: tuple[type, ...]) -> Check:
    def check(value: Any, parent: str, key: str | int, error: type[WireError]) -> Any:
        if value is None or isinstance(value, kinds):
            return value
        raise error(
            f"{_path(parent, key)} is {type(value).__name__} {value!r:.60}, expected one of {[_name(k) for k in kinds]}"
        )

    return check


def _tuple(items: list[Check]) -> Check:
    def check(value: Any, parent: str, key: str | int, error: type[WireError]) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise error(f"{_path(parent, key)} is {value!r:.60}, expected a list of {len(items)}")
        what = _path(parent, key)
        return tuple(c(v, what, i, error) for i, (v, c) in enumerate(zip(value, items, strict=True)))

    return check


def _list(item: Check | None) -> Check:
    def check(value: Any, parent: str, key: str | int, error: type[WireError]) -> Any:
        if not isinstance(value, list):
            raise error(f"{_path(parent, key)} is {type(value).__name__} {value!r:.60}, expected a list")
        if item is None:
            return value
        what = _path(parent, key)
        return [item(v, what, i, error) for i, v in enumerate(value)]

    return check


def _dict(item: Check | None) -> Check:
    def check(value: Any, parent: str, key: str | int, error: type[WireError]) -> Any:
        if not isinstance(value, dict):
            raise error(f"{_path(parent, key)} is {type(value).__name__} {value!r:.60}, expected an object")
        if item is None:
            return value
        what = _path(parent, key)
        return {k: item(v, what, k, error) for k, v in value.items()}

    return check


def _scalar(hint: type) -> Check:
    def check(value: Any, parent: str, key: str | int, error: type[WireError]) -> Any:
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # JSON writes a whole float as it likes
        raise error(f"{_path(parent, key)} is {type(value).__name__} {value!r:.60}, expected {_name(hint)}")

    return check


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
