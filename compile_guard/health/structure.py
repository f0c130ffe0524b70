"""A graph's structure, apart from its constants: what must agree across ranks, and what may differ.

Ranks of an SPMD program compile the same ops in the same order with the same wiring, yet the
numbers baked into their graphs may legitimately differ by rank: a vocab-parallel embedding's
`x < 128` / `x - 128` on rank 1 is `x < 0` / `x - 0` on rank 0 (Megatron, vLLM), and a tensor
made in the graph names the rank's own device (`device(type='cuda', index=r)`). Hashing the
graph's code would call every such program divergent.

`graph_structure` walks the FX graph once and splits it:
- the **fingerprint** hashes each node's op, target and argument structure — other nodes by
  position, every int and float as a typed hole, the rank's *own* device as `local` (another
  device index stays in, as it is); strings, bools, dtypes and None are structure;
- the **constants** are the ints and floats that filled the holes, each at (node, argument
  path), with a digest; ranks whose fingerprints agree hold them at the same places, so two
  ranks' lists compare entry by entry (compile_guard.agreement.compare names the sites that differ).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import weakref
from typing import Any

import torch

from compile_guard.health.sites import relative_site

_FUNCOL = "_c10d_functional."
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_FRAME = re.compile(r'File "(.+?)", line (\d+), in (\S+)')
_SYMBOL = re.compile(r"^s\d+$")  # a size symbol's placeholder (dynamic shapes): its number is not structure
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> {local device: its structure}


def target_name(node: torch.fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    name = str(target) if _FUNCOL in str(target) else getattr(target, "__name__", str(target))
    return re.sub(r"0x[0-9a-f]+", "0x?", name)


def _device(value: torch.device, local: torch.device | None) -> str:
    if value.index is None or (local is not None and value.type == local.type and value.index == local.index):
        return f"device({value.type}:local)" if value.index is not None else f"device({value.type})"
    return f"device({value.type}:{value.index})"  # another rank's device: structure, and suspicious


class _Walker:
    """One graph's fingerprint parts and constants (ints, floats) in node order."""

    def __init__(self, nodes: list[torch.fx.Node], local: torch.device | None) -> None:
        self.index = {node: i for i, node in enumerate(nodes)}
        self.local = local
        self.constants: list[list[Any]] = []  # [node index, argument path, value]

    def shape(self, value: Any, node: int, path: str) -> str:
        if isinstance(value, torch.fx.Node):
            return f"%{self.index[value]}"
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return repr(value)
        if isinstance(value, (int, float)):
            self.constants.append([node, path, value])
            return type(value).__name__
        if isinstance(value, torch.device):
            return _device(value, self.local)
        if isinstance(value, (list, tuple)):
            inner = ",".join(self.shape(v, node, f"{path}.{i}") for i, v in enumerate(value))
            return f"[{inner}]" if isinstance(value, list) else f"({inner})"
        if isinstance(value, dict):
            return "{" + ",".join(f"{k}:{self.shape(value[k], node, f'{path}.{k}')}" for k in sorted(value)) + "}"
        if isinstance(value, slice):
            return (
                "slice("
                + ",".join(self.shape(getattr(value, a), node, f"{path}.{a}") for a in ("start", "stop", "step"))
                + ")"
            )
        return re.sub(r"0x[0-9a-f]+", "0x?", repr(value))  # dtypes, memory formats, reduce ops: structure


def graph_structure(gm: torch.fx.GraphModule, *, local_device: torch.device | None = None) -> dict[str, Any]:
    """{"fingerprint", "constants", "constants_digest", "nodes", "ops", "collectives", "op_counts"}; one walk per
    graph however many readers ask (the compile agreement's statement, the probe's every snapshot)."""
    local = local_device if local_device is not None else own_device()
    memo = _MEMO.setdefault(gm, {})
    if local not in memo:
        memo[local] = _structure(gm, local)
    return memo[local]


def own_device() -> torch.device | None:
    """This rank's accelerator (engine.lifecycle sets it with torch.cuda.set_device before anything compiles);
    None on CPU, whose device carries no index."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return None


def _structure(gm: torch.fx.GraphModule, local_device: torch.device | None) -> dict[str, Any]:
    nodes = list(gm.graph.nodes)
    walker = _Walker(nodes, local_device)
    parts, ops = [], collections.Counter()
    for i, node in enumerate(nodes):
        target = target_name(node)
        if node.op == "placeholder":
            target = "sym" if _SYMBOL.match(target) else target
        if node.op in ("call_function", "call_method", "call_module"):
            ops[target] += 1
        args = walker.shape(node.args, i, "args")
        kwargs = walker.shape(node.kwargs, i, "kwargs")
        parts.append(f"{node.op}|{target}|{args}|{kwargs}")
    digest = hashlib.sha256(json.dumps(walker.constants).encode()).hexdigest()[:16]
    return {
        "fingerprint": hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16],
        "constants": walker.constants,
        "constants_digest": digest,
        "nodes": len(nodes),
        "ops": sum(ops.values()),
        "collectives": sum(n for op, n in ops.items() if _FUNCOL in op and "wait_tensor" not in op),
        "op_counts": dict(sorted(ops.items())),
    }


def constant_site(gm: torch.fx.GraphModule, node_index: int, path: str) -> dict[str, str]:
    """Where constant (node, path) came from: {"site": file:line, "key": 'file function: op path'} — the key
    leaves the line number out, so an edit above it does not move it (baselines key rank-varying constants by it)."""
    node = list(gm.graph.nodes)[node_index]
    frames = [(f, int(n), fn) for f, n, fn in _FRAME.findall(node.meta.get("stack_trace") or "")]
    users = [fr for fr in frames if not fr[0].startswith(_TORCH_DIR)] or frames
    op = target_name(node)
    if not users:
        return {"site": "?", "key": f"? {op} {path}"}
    file, line, function = users[-1]
    site = relative_site(file, line)
    return {"site": site, "key": f"{site.rsplit(':', 1)[0]} {function}: {op} {path}"}
