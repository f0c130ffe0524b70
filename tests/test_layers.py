"""The layers stay apart: the engine knows nothing of the harness, and the parent's light
commands never import torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, load_benchmark


def _row_families() -> list[str]:
    from compile_guard.matrix.rows import ROWS

    return sorted({row.id.split("-")[0] for row in ROWS} - {"FM"} | {"O"})  # O-01..O-03: the overlap command's rows


# every family of matrix rows (OM, C, CD, EL, ST, ... as rows.py has them); FM-xx are the contract's failure modes
ROW_ID = re.compile(rf"\b({'|'.join(_row_families())})-\d\d")


def _engine_files() -> list[Path]:
    return sorted((REPO / "engine").rglob("*.py"))


def test_the_engine_never_imports_the_harness():
    for path in _engine_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "compile_guard" for n in names), f"{path}:{node.lineno}"


def test_the_engine_never_names_a_matrix_row():
    """Faults live in compile_guard.matrix.faults; the engine exposes injection points only."""
    named = [
        f"{p.relative_to(REPO)}:{i}"
        for p in _engine_files()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if ROW_ID.search(line)
    ]
    assert named == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["check", "--list"],
        ["check", "--help"],
        ["baseline", "show", "--scenario", "tp2"],
        ["matrix", "--list"],
    ],
)
def test_light_commands_import_no_torch(argv, quick_process):
    probe = (
        "import sys, runpy; sys.argv = ['compile-guard', *sys.argv[1:]]\n"
        "from compile_guard.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
        "raise SystemExit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_code_is_formatted_and_linted(quick_process):
    """One formatter and linter configuration (pyproject.toml, ruff pinned in the test extras): the tree passes it as
    it is. A failure prints what to run: `ruff format .` rewrites the layout, `ruff check --fix .` the imports."""
    for check in (["format", "--check", "."], ["check", "."]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *check], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, (
            f"`ruff {' '.join(check)}` failed; run `ruff {check[0]} .`:\n{proc.stdout}{proc.stderr}"
        )


def test_no_import_climbs_a_layer():
    """compile_guard's layers (benchmarks/layers.py: base < concerns < launch < flow < matrix < programs) import
    only downward or sideways: the launch layer knows no rank program, the flow no front end; and no module names a
    rank program (or a higher layer's module) in a string: the command that picks a program passes its module."""
    _lines, climbs, _shims = load_benchmark("layers").survey(REPO)
    assert climbs == []


def test_a_climbing_import_is_found(tmp_path):
    """The survey can fail: a flow module that imports a rank program is named, and so is any module that names a
    rank program in a string (`python -m`, importlib: an edge no import shows); a docstring may speak of one."""
    for name, source in {
        "flow/check_run.py": "from compile_guard.ranks.check import probe_rank\n",
        "ranks/check.py": "from compile_guard.flow import check_run\n",  # downward: fine
        "matrix/runner.py": '"""Runs compile_guard.ranks.serve."""\nSERVE = "compile_guard.ranks.serve"\n',
        "commands/plugin.py": 'ARGV = ["-m", "compile_guard.ranks.call"]\nLOG = "compile_guard.agreement"\n',
    }.items():
        (tmp_path / "compile_guard" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "compile_guard" / name).write_text(source)
    _lines, climbs, _shims = load_benchmark("layers").survey(tmp_path)
    assert sorted(climbs) == [
        "compile_guard/commands/plugin.py:1 commands -> ranks by string",
        "compile_guard/flow/check_run.py:1 flow -> ranks",
        "compile_guard/matrix/runner.py:2 matrix -> ranks by string",
    ]


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80  # a file one concern; a function one screen (the house style)


def test_every_file_and_function_of_the_harness_stays_small():
    """compile_guard/ and engine/: every module <= 400 lines, every function (its decorators excluded) <= 80."""
    too_long = []
    for path in sorted([*(REPO / "compile_guard").rglob("*.py"), *(REPO / "engine").rglob("*.py")]):
        source = path.read_text()
        name = path.relative_to(REPO)
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {length} lines")
    assert too_long == [], "split these (one concern per module, one screen per function):\n" + "\n".join(too_long)
