"""OM-06 (static half): engine code issues collectives only through engine/collectives.py.

An ad-hoc broadcast with receiver-side shape inference is the FM-08 hang; the runtime half
(a broadcast outside the manifest stopped before the call) is matrix row OM-06. This test
also bans unpickling peer bytes (all_gather_object, broadcast_object_list, pickle.loads).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ALLOWED = {REPO / "engine" / "collectives.py"}
COLLECTIVES = {
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "broadcast",
    "barrier",
    "send",
    "recv",
    "isend",
    "irecv",
    "all_to_all",
    "all_to_all_single",
    "gather",
    "scatter",
    "reduce",
    "batch_isend_irecv",
    "monitored_barrier",
    "wait_tensor",
}
PICKLING = {"all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list", "loads"}
DIST_MODULES = {"dist", "torch.distributed", "funcol", "c10d", "torch.distributed._functional_collectives"}


def violations(source: str, filename: str, *, allow_collectives: bool) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base, name = ast.unparse(node.func.value), node.func.attr
            if name in PICKLING and (base in DIST_MODULES or base == "pickle"):
                found.append(f"{filename}:{node.lineno}: {base}.{name} unpickles bytes from a peer or file")
            elif name in COLLECTIVES and base in DIST_MODULES and not allow_collectives:
                found.append(f"{filename}:{node.lineno}: {base}.{name} outside engine/collectives.py")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            for alias in node.names:
                if alias.name in COLLECTIVES | PICKLING and not allow_collectives:
                    found.append(f"{filename}:{node.lineno}: imports {alias.name} from {node.module}")
    return found


def _sources() -> list[Path]:
    return sorted(p for pkg in ("engine", "compile_guard", "repro") for p in (REPO / pkg).rglob("*.py"))


def test_engine_collectives_only_through_the_wrappers():
    problems = []
    for path in _sources():
        problems += violations(path.read_text(), str(path.relative_to(REPO)), allow_collectives=path in ALLOWED)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import torch.distributed as dist\ndist.broadcast(shape, src=0)\n", "dist.broadcast outside"),
        ("from torch.distributed import broadcast\n", "imports broadcast"),
        ("funcol.all_reduce(x, 'sum', g)\n", "funcol.all_reduce outside"),
        ("dist.all_gather_object(out, meta)\n", "unpickles"),
        ("import pickle\npickle.loads(payload)\n", "unpickles"),
    ],
)
def test_checker_catches_ad_hoc_collectives(snippet, expected):
    found = violations(snippet, "snippet.py", allow_collectives=False)
    assert found and expected in found[0]
