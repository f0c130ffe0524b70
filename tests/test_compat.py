"""The private torch entry points (compile_guard.compat), listed against the installed torch. In-process."""

from __future__ import annotations

import datetime
import socket

import torch
import torch.distributed as dist

from compile_guard import compat, named


def test_every_private_entry_point_resolves_on_the_installed_torch():
    missing = {}
    for path in compat.ENTRY_POINTS:
        try:
            named.dotted(path)
        except (ImportError, AttributeError) as exc:
            missing[path] = f"{type(exc).__name__}: {exc}"
    assert not missing, f"torch {torch.__version__} lacks compat entry points (add a fallback or a floor): {missing}"


def test_a_store_cloned_or_reconnected_shares_the_servers_keys():
    """Store.clone on 2.8+, a new client of the same server before it: either way one key space."""
    server = dist.TCPStore("127.0.0.1", 0, 1, True, datetime.timedelta(seconds=10))
    other = compat.clone_store(server)
    other.set("k", "v")
    assert server.get("k") == b"v"


def test_the_listening_store_takes_over_a_bound_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    store = compat.listening_store(sock, 10.0)
    client = dist.TCPStore("127.0.0.1", port, None, False, datetime.timedelta(seconds=10))
    client.set("k", "v")
    assert store.get("k") == b"v"


def test_every_private_entry_point_of_the_engine_resolves_on_the_installed_torch():
    import importlib

    from engine import torch_private

    missing = [f"{m}.{n}" for m, n in torch_private.ENTRY_POINTS if not hasattr(importlib.import_module(m), n)]
    assert not missing, f"torch {torch.__version__} lacks engine entry points: {missing}"


def test_a_missing_entry_point_names_the_torch_and_what_is_missing(monkeypatch):
    """Never a silent "?": a torch without one fails the call, naming the installed torch and the entry point."""
    monkeypatch.setitem(compat._PRIVATE, "counters", "torch._dynamo.utils.no_such_counters")
    try:
        compat.cache_hits()
    except compat.TorchInternalMissing as exc:
        assert torch.__version__ in str(exc) and "torch._dynamo.utils.no_such_counters" in str(exc)
    else:
        raise AssertionError("a missing entry point was not reported")


def test_no_module_but_the_two_tables_names_a_private_torch_internal():
    """The harness reaches torch's underscored names only through compile_guard.compat, the engine only through
    engine.torch_private (the tables above)."""
    import ast
    import pathlib

    # the functional collectives are public API under an underscored module name (torch's own docs use it)
    public = {"torch.distributed._functional_collectives"}

    def dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None

    root = pathlib.Path(compat.__file__).parent.parent
    found = {}
    for path in sorted([*(root / "compile_guard").rglob("*.py"), *(root / "engine").rglob("*.py")]):
        if path.name in ("compat.py", "torch_private.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [dotted(node) or ""]
                if isinstance(node, ast.Attribute)
                else []
            )
            for name in names:
                parts = name.split(".")
                parts[:1] = ["torch", "distributed"] if parts[0] == "dist" else parts[:1]  # `import ... as dist`
                name = ".".join(parts)
                private = any(p.startswith("_") and not p.startswith("__") for p in parts[1:])
                if parts[0] == "torch" and name not in public and private:
                    found[f"{path.relative_to(root)}:{node.lineno}"] = name
    assert not found, f"private torch names outside compat.py: {found}"
