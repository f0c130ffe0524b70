"""The public surface stays put: the names users import, their signatures and fields, the pytest plugin's
fixtures, and every moved module's shim. A change here is a change users see: make it on purpose, keep a
shim for a release (compile_guard.moved), and update the frozen value below in the same commit.
(The CLI's surface is frozen in tests/test_cli.py, SURFACE.)"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import subprocess
import sys
import warnings

import pytest

import compile_guard
from tests.conftest import REPO

# Frozen: `from compile_guard import *` and what each name is.
PUBLIC = {
    "CollectiveLedger": "class",
    "CompileAgreement": "class",
    "GuardTarget": "class",
    "TargetContext": "class",
    "TargetError": "class",
    "__version__": "str",
    "agree_on_compiles": "function",
    "assert_compile_health": "function",
}

# Frozen: the signatures users call, as inspect prints them (annotations are strings: __future__ annotations).
SIGNATURES = {
    "agree_on_compiles": "(group: 'dist.ProcessGroup', compiler: 'str | Callable' = 'inductor', **kwargs: 'Any')"
    " -> 'Callable'",
    "assert_compile_health": "(metrics: 'dict[str, Any] | list[dict[str, Any]]', baseline: 'str | Path', *,"
    " allow_improvement: 'bool' = False, strict: 'bool' = False) -> 'None'",
}

# Frozen: the fields of the dataclasses a user builds or reads.
FIELDS = {
    "GuardTarget": ["fn", "inputs", "before_step", "replicated"],
    "TargetContext": ["rank", "world_size", "tp_group", "device"],
}

FIXTURES = ["compile_guard_check", "rank_runner"]  # the plugin's fixtures (entry point pytest11)

# old import -> (new import, names): modules that moved, kept for one release (compile_guard.moved.REMOVED_IN)
SHIMS = {
    "compile_guard.target": ("compile_guard", ["GuardTarget", "TargetContext", "TargetError"]),
    "compile_guard.ranks.rank_report": ("compile_guard.contracts.rank_report", ["RankReport", "RankReportError"]),
}
PLUGIN_SHIMS = ["compile_guard.pytest_plugin", "compile_guard.integrations.pytest_plugin"]


def _kind(value: object) -> str:
    return "class" if inspect.isclass(value) else "function" if callable(value) else type(value).__name__


def test_the_public_names_are_frozen():
    assert sorted(compile_guard.__all__) == sorted(PUBLIC)
    assert {name: _kind(getattr(compile_guard, name)) for name in compile_guard.__all__} == PUBLIC


def test_the_public_signatures_and_fields_are_frozen():
    assert {name: str(inspect.signature(getattr(compile_guard, name))) for name in SIGNATURES} == SIGNATURES
    fields = {name: [f.name for f in dataclasses.fields(getattr(compile_guard, name))] for name in FIELDS}
    assert fields == FIELDS


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Guard'"):
        compile_guard.Guard  # noqa: B018


def test_importing_the_package_loads_no_torch(quick_process):
    """The names resolve on first use: `import compile_guard` stays light (the CLI's light commands rely on it)."""
    probe = "import sys, compile_guard; dir(compile_guard); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], cwd=REPO, check=True, timeout=60)


def test_assert_compile_health_needs_no_pytest(quick_process):
    """A script or another test runner gates compile health too: with pytest unimportable, the name resolves."""
    probe = (
        "import sys; sys.modules['pytest'] = None\n"
        "from compile_guard import assert_compile_health\n"
        "assert callable(assert_compile_health)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_plugin_entry_point_and_its_fixtures():
    points = [p for p in importlib.metadata.entry_points(group="pytest11") if p.name == "compile_guard"]
    assert [p.value for p in points] == ["compile_guard.commands.pytest_plugin"]
    plugin = points[0].load()
    assert [name for name in FIXTURES if hasattr(plugin, name)] == FIXTURES


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_a_moved_module_warns_and_gives_the_same_object(old):
    new, names = SHIMS[old]
    module = importlib.import_module(old)
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved: write `from {new} import {name}`"):
            value = getattr(module, name)
        assert value is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", PLUGIN_SHIMS)
def test_a_moved_plugin_module_warns_and_keeps_its_fixtures(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        f"{old} moved to compile_guard.commands.pytest_plugin: import or name compile_guard.commands.pytest_plugin"
        " instead; {old} stops working in compile_guard 0.3.0".replace("{old}", old)
    ]
    assert (
        module.compile_guard_check
        is importlib.import_module("compile_guard.commands.pytest_plugin").compile_guard_check
    )
