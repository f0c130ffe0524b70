"""The collective schedule of a compiled graph, read *after* dispatch.

The graph dynamo hands the backend holds DTensor ops, not the collectives they become: a
DTensor model shows no collective there at all. Tracing that graph once more with fake
tensors (make_fx) runs it through dispatch — DTensor's sharding propagation included — and
yields the ATen graph in which every collective is a functional c10d op, in the order the
compiled code will issue them. Per collective: op, group (name and ranks), input shape and
dtype, reduce op; plus a digest of the whole schedule. Compile time only: nothing here runs
when the compiled code runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import weakref
from typing import Any

import torch
import torch.distributed as dist
import torch.fx.traceback as fx_traceback
from torch.fx.experimental.proxy_tensor import make_fx

from compile_guard import compat
from compile_guard.health.issued import compared
from compile_guard.health.sites import relative_site
from engine.errors import RankCrashed

log = logging.getLogger("compile_guard.schedule")

_FUNCOL = "_c10d_functional."
_FRAME = re.compile(r'File "(.+?)", line (\d+)')
# one schedule per graph, however many readers (the probe, the compile agreement) ask for it
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_of(name: Any) -> dict[str, Any]:
    """A group name as the graph carries it, with its ranks when this process knows the group."""
    if not isinstance(name, str):
        return {"name": repr(name), "ranks": None}
    try:
        ranks = dist.get_process_group_ranks(compat.resolve_process_group(name))
    except Exception:  # a group of another process, or a name torch no longer resolves
        ranks = None
    return {"name": name, "ranks": ranks}


def _size(d: Any) -> int | str:
    """A size as data. The fake re-trace may give a subclass's inner tensors symbolic sizes; their hint
    is the concrete size this compile was for (a symbol's name would not be stable across runs)."""
    if isinstance(d, int):
        return d
    try:
        from torch.fx.experimental.symbolic_shapes import hint_int

        return hint_int(d)
    except Exception:  # no hint: a genuinely dynamic size
        return str(d)


def _shape(t: torch.Tensor) -> list[int | str]:
    return [_size(d) for d in t.shape]


def _tensor_of(arg: Any) -> dict[str, Any]:
    value = arg.meta.get("val", arg.meta.get("example_value")) if isinstance(arg, torch.fx.Node) else None
    if isinstance(value, (list, tuple)):  # coalesced collectives take lists
        return {"shape": [_shape(v) for v in value], "dtype": str(value[0].dtype) if value else None}
    if isinstance(value, torch.Tensor):
        return {"shape": _shape(value), "dtype": str(value.dtype)}
    return {"shape": None, "dtype": None}


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _site(node: torch.fx.Node) -> str | None:
    """The innermost frame outside torch that issued this collective (dynamo keeps the stack on each node):
    the user's line, not DTensor's or funcol's."""
    frames = [(f, int(n)) for f, n in _FRAME.findall(node.meta.get("stack_trace") or "")]
    users = [fr for fr in frames if not fr[0].startswith(_TORCH_DIR)] or frames
    return relative_site(*users[-1]) if users else None


def _entry(node: torch.fx.Node) -> dict[str, Any]:
    op = str(node.target).split(_FUNCOL, 1)[1].split(".")[0]
    strings = [a for a in node.args[1:] if isinstance(a, str)]
    group_name = node.kwargs.get("group_name", strings[-1] if strings else None)
    reduce_op = strings[0] if op.startswith(("all_reduce", "reduce_scatter")) and len(strings) > 1 else None
    return {
        "op": op,
        "group": group_of(group_name),
        **_tensor_of(node.args[0]),
        "reduce_op": reduce_op,
        "site": _site(node),
        "node": node.name,
    }


def digest(collectives: list[dict[str, Any]]) -> str:
    """Over what every rank must issue alike; where each comes from is left out."""
    issued = [compared(c) for c in collectives]
    return hashlib.sha256(json.dumps(issued, sort_keys=True).encode()).hexdigest()[:16]


def _hides_collectives(example_inputs: list[Any]) -> bool:
    """A tensor subclass among the inputs (a DTensor's parameters): its collectives appear only after
    dispatch. Plain tensors: the functional collectives dynamo captured are already the schedule."""
    return any(
        isinstance(x, torch.Tensor) and type(x) not in (torch.Tensor, torch.nn.Parameter) for x in example_inputs
    )


def _schedule_of(graph: torch.fx.Graph) -> dict[str, Any]:
    collectives = [
        _entry(n)
        for n in graph.nodes
        if n.op == "call_function" and _FUNCOL in str(n.target) and "wait_tensor" not in str(n.target)
    ]
    return {"collectives": collectives, "digest": digest(collectives)}


class _Retrace(torch.fx.Interpreter):
    """The graph, node by node, for make_fx. A scalar read of a graph input (`.item()`) gives the input's real
    value: torch 2.6-2.7 lift a float attribute that changed (`self.scale = 0.5`) to a tensor input on the
    recompile and read it back with `.item()`, which a fake tensor cannot answer (make_fx: "trying to get value
    out of a tracing tensor with aten._local_scalar_dense"). The value is this compile's own input: a scale
    that differs by rank still reads differently on each rank."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> None:
        super().__init__(gm)
        inputs = dict(zip((n for n in gm.graph.nodes if n.op == "placeholder"), example_inputs, strict=False))
        self.scalars = {}
        for n in gm.graph.nodes:
            source = inputs.get(n.args[0]) if n.op == "call_method" and n.target == "item" and n.args else None
            if (
                isinstance(source, torch.Tensor)
                and not compat.is_fake(source)
                and source.numel() == 1
                and type(source) in (torch.Tensor, torch.nn.Parameter)
            ):
                self.scalars[n] = source.item()

    def run_node(self, n: torch.fx.Node) -> Any:
        return self.scalars[n] if n in self.scalars else super().run_node(n)


class ScheduleUnreadable(RankCrashed):
    """A graph whose collectives hide behind a tensor subclass could not be re-traced: its schedule is unknown. An
    error of this rank's (ours, or torch's tracer), exit 3 with the traceback in the rank's log — never a field the
    ranks compare (one rank's error would read as a divergence) nor a count of 0 (a regression)."""


def collective_schedule(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> dict[str, Any]:
    """{"collectives": [...in issue order], "digest": str}; ScheduleUnreadable when the graph cannot be re-traced."""
    if gm not in _MEMO:
        _MEMO[gm] = _read_schedule(gm, example_inputs)
    return _MEMO[gm]


def _read_schedule(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> dict[str, Any]:
    if not _hides_collectives(example_inputs):
        return _schedule_of(gm.graph)  # no re-trace: what dynamo captured is what dispatch runs
    try:
        traced = retrace(gm, example_inputs)
    except Exception as exc:
        log.error("re-tracing a graph for its collective schedule failed; traceback:", exc_info=exc)
        raise ScheduleUnreadable(
            f"compile_guard could not re-trace a graph to read its collective schedule after"
            f" dispatch: {type(exc).__name__}: {exc}"[:600]
        ) from exc
    return _schedule_of(traced.graph)


def retrace(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> torch.fx.GraphModule:
    """The graph through dispatch, as ATen ops. Static shapes under one fake mode: real inputs (and a DTensor's
    parameters) turn fake on first use, so nothing is computed or communicated, and every size is the concrete
    one of this compile."""
    # Interpreting node by node under preserve_node_meta carries each dynamo node's stack trace onto
    # the ATen nodes it becomes, so a DTensor collective still names the user line that caused it.
    # Outside dynamo's tracing context: ours is a separate trace, and torch 2.8-2.12 assert that the active fake
    # mode is the context's (it is not: this one is ours)
    interpreter = _Retrace(gm, example_inputs)  # reads real scalars: before the fake mode
    with compat.outside_tracing_context(), compat.fake_mode(), fx_traceback.preserve_node_meta():
        return make_fx(interpreter.run, tracing_mode="real")(*example_inputs)
