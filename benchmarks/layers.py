"""How the harness's layers stand: lines per layer, imports that climb from a lower layer to a higher one,
and where the formatter is told to keep out (`# fmt: skip` lines, `# fmt: off` regions). Prints a table; run it before
and after a restructuring.

    python benchmarks/layers.py [--root DIR] [--imports]

Layers, lowest first (an import may go down or sideways, never up):
  0 base        torch-free or torch-only leaves: verdict, compat
  1 concerns    contracts/ (what both sides of the process boundary read), health/, agreement/, quality/,
                integrations/ (the user's target contract), page/ (the reviewer's page, from data)
  2 launch      launch/ (supervision, run modes)
  3 flow        flow/ (the parent's check flow)
  4 matrix      matrix/ (rows, faults, their runner)
  5 programs    ranks/ (rank programs), commands/, cli, __main__, the package's public names
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

# the layer table: one layer per row: the formatter leaves it as written
# fmt: off
LEVELS = {
    "verdict": 0,
    "compat": 0,
    "moved": 0,
    "named": 0,
    "contracts": 1,
    "health": 1,
    "agreement": 1,
    "quality": 1,
    "integrations": 1,
    "page": 1,
    "launch": 2,
    "flow": 3,
    "matrix": 4,
    "ranks": 5,
    "commands": 5,
    "cli": 5,
    "__main__": 5,
    "__init__": 5,
    "target": 5,
    "pytest_plugin": 5,
}
# fmt: on
NAMES = ["base", "concerns", "launch", "flow", "matrix", "programs"]


def layer_of(path: Path, package: Path) -> str:
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported(node: ast.AST) -> list[str]:
    """The compile_guard layers an import statement names (`from compile_guard import compat` names compat)."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("compile_guard.")]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        parts = node.module.split(".")
        if parts[0] != "compile_guard":
            return []
        return [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
    return []


MODULE_TEXT = re.compile(r"^compile_guard(\.[a-z_]+)+$")  # a string that is a harness module's dotted name


def named_by_string(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, layer) of every string, docstrings aside, that is the dotted name of a compile_guard module: an edge
    an import survey would miss (importlib, `python -m`). A rank program is passed as its module, never named."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value.split(".")[1])
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and MODULE_TEXT.match(node.value)
    ]


def _count(path: Path, marker: str) -> int:
    """Lines that are the marker as a comment (a string that mentions it, as in this file, is not one)."""
    return sum(
        line.strip() == marker or line.rstrip().endswith(f"  {marker}") for line in path.read_text().splitlines()
    )


def survey(root: Path) -> tuple[list[int], list[str], int]:
    """(lines per layer, every climbing edge as 'path:line src -> dst', shims of moved modules) of root's
    compile_guard/ (tests/test_layers.py holds the climbs at none). An edge is an import, or a string naming a
    module (' by string'): one to a rank program (ranks/) is a climb from anywhere, a name where a module belongs."""
    package = root / "compile_guard"
    lines = [0] * len(NAMES)
    climbs: list[str] = []
    shims = 0  # a moved module's shim imports its new home, wherever that is: counted apart, for one release
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        src = layer_of(path, package)
        lines[LEVELS[src]] += len(source.splitlines())
        if source.startswith('"""Moved ('):
            shims += 1
            continue
        tree = ast.parse(source)
        for node in ast.walk(tree):
            for dst in imported(node):
                if dst in LEVELS and dst != src and LEVELS[dst] > LEVELS[src]:
                    climbs.append(f"{path.relative_to(root)}:{node.lineno} {src} -> {dst}")
        for line, dst in named_by_string(tree):
            if dst in LEVELS and (dst == "ranks" or (dst != src and LEVELS[dst] > LEVELS[src])):
                climbs.append(f"{path.relative_to(root)}:{line} {src} -> {dst} by string")
    return lines, climbs, shims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--imports", action="store_true", help="list every climbing import")
    args = parser.parse_args()
    lines, climbs, shims = survey(args.root)
    dirs = ("compile_guard", "engine", "tests", "benchmarks", "docs", "repro")
    skips = {d: sum(_count(p, "# fmt: skip") for p in (args.root / d).rglob("*.py")) for d in dirs}
    regions = {d: sum(_count(p, "# fmt: off") for p in (args.root / d).rglob("*.py")) for d in dirs}
    print(f"{'layer':<12}{'lines':>8}")
    for name, n in zip(NAMES, lines, strict=True):
        print(f"{name:<12}{n:>8}")
    print(f"{'total':<12}{sum(lines):>8}")
    engine = sum(len(p.read_text().splitlines()) for p in (args.root / "engine").rglob("*.py"))
    print(f"{'engine/':<12}{engine:>8}")
    pairs = sorted({c.split(" ", 1)[1] for c in climbs})
    print(
        f"\nedges climbing a layer (imports, strings naming a module): {len(climbs)} ({', '.join(pairs) or 'none'});"
        f" shims of moved modules: {shims}"
    )
    if args.imports:
        print("\n".join(f"  {c}" for c in climbs))
    for what, found in (("\n# fmt: skip lines", skips), ("# fmt: off regions", regions)):
        print(f"{what}: " + ", ".join(f"{d}/ {n}" for d, n in found.items()) + f"; total {sum(found.values())}")


if __name__ == "__main__":
    main()
