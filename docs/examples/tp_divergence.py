"""Compile divergences on a DTensor model, one factory each: what the compile agreement stops.

    python -m compile_guard check --target docs.examples.tp_divergence:guarded_value

The model is docs/examples/tp_dtensor.py's MLP (parallelize_module: colwise up, rowwise down,
whose all-reduce appears only after dispatch). Each factory adds one habit that makes rank 1
compile something rank 0 does not; the matrix's CD rows run them (compile_guard.matrix.rows):

- `shape`: rank 1's second input is longer, so rank 1 alone recompiles (a shape guard) and its
  all-reduce has another size (the per-step input agreement would stop it first; the CD row
  turns that off to show the compile agreement alone);
- `guarded_value`: from the first steady step on, rank 1's `scale` is another Python float:
  dynamo's guard on it fails there alone;
- `extra_collective`: a debug all-reduce left in on rank 1;
- `collective_shape`: a rank-local padding before a reduction;
- `settings`: at the first steady step every rank updates `scale` (every rank recompiles) and
  rank 1 also flips a dynamo setting;
- `graph_break`: a debug print inside forward on rank 1;
- `cache_artifacts` (inductor): rank 0 loads saved compile artifacts, rank 1 compiles fresh — the
  same program, which the agreement must confirm rather than stop;
- `stuck_peer`: at the first steady step every rank updates `scale` (a recompile every rank does) but
  rank 0 first blocks for good in its own code: no proof of anything, a stall (run with
  --no-input-agreement, else rank 1 waits in the input agreement's collective instead, and --stall-s).
"""

from __future__ import annotations

import torch
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, TOKENS = 64, 256, 16
FAULTY = 1  # the rank with the habit
STEPS = 2  # input steps per pass: the first steady step is step STEPS


class MLP(torch.nn.Module):
    def __init__(self, group: torch.distributed.ProcessGroup) -> None:
        super().__init__()
        self.up = torch.nn.Linear(DIM, HIDDEN)
        self.down = torch.nn.Linear(HIDDEN, DIM)
        self.group = group
        self.scale = 1.0  # a Python float read in forward: dynamo specialises on it and guards it
        self.debug_sync = False  # a debug all-reduce of the activations' sum
        self.pad = 0  # rows of padding before the reduction
        self.debug_print = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.up(x)) * self.scale
        if self.debug_print:
            print("debug: activations", h.shape)
        if self.debug_sync:
            h = h + 0.0 * funcol.all_reduce(h.sum(), "sum", self.group)
        y = self.down(h)
        if self.pad:
            y = funcol.all_reduce(torch.nn.functional.pad(y, (0, 0, 0, self.pad)), "sum", self.group)[: y.shape[0]]
        return y


def _build(ctx: TargetContext) -> tuple[MLP, list[tuple[torch.Tensor, ...]]]:
    torch.manual_seed(0)  # the same full weights on every rank; parallelize_module keeps each rank's shard
    mesh = DeviceMesh.from_group(ctx.tp_group, ctx.device.type)
    model = MLP(ctx.tp_group).to(ctx.device)
    parallelize_module(model, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
    inputs = [
        (torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),)
        for s in range(1, STEPS + 1)
    ]
    return model, inputs


def healthy(ctx: TargetContext) -> GuardTarget:
    model, inputs = _build(ctx)
    return GuardTarget(fn=model, inputs=inputs)


def shape(ctx: TargetContext) -> GuardTarget:
    model, inputs = _build(ctx)
    if ctx.rank == FAULTY:
        inputs[-1] = (torch.randn(TOKENS + 8, DIM, generator=torch.Generator().manual_seed(9)).to(ctx.device),)
    return GuardTarget(fn=model, inputs=inputs)


def guarded_value(ctx: TargetContext) -> GuardTarget:
    model, inputs = _build(ctx)

    def before_step(step: int) -> None:
        if step == STEPS and ctx.rank == FAULTY:
            model.scale = 0.5

    return GuardTarget(fn=model, inputs=inputs, before_step=before_step)


def _habit(ctx: TargetContext, attr: str, *, faulty: object, others: object) -> GuardTarget:
    """The MLP with `attr` set to `faulty` on the faulty rank and to `others` everywhere else."""
    model, inputs = _build(ctx)
    setattr(model, attr, faulty if ctx.rank == FAULTY else others)
    return GuardTarget(fn=model, inputs=inputs)


def extra_collective(ctx: TargetContext) -> GuardTarget:
    return _habit(ctx, "debug_sync", faulty=True, others=False)


def collective_shape(ctx: TargetContext) -> GuardTarget:
    return _habit(ctx, "pad", faulty=2, others=1)  # "round up to the local block size", computed per rank


def settings(ctx: TargetContext) -> GuardTarget:
    model, inputs = _build(ctx)

    def before_step(step: int) -> None:
        if step == STEPS:
            model.scale = 0.5  # every rank: a legitimate recompile, on all ranks at once
            if ctx.rank == FAULTY:
                torch._dynamo.config.capture_scalar_outputs = True

    return GuardTarget(fn=model, inputs=inputs, before_step=before_step)


def stuck_peer(ctx: TargetContext) -> GuardTarget:
    import threading

    model, inputs = _build(ctx)

    def before_step(step: int) -> None:
        if step == STEPS:
            if ctx.rank == 0:
                threading.Event().wait()  # rank 0 never comes back (until its watcher stops it)
            model.scale = 0.5

    return GuardTarget(fn=model, inputs=inputs, before_step=before_step)


def graph_break(ctx: TargetContext) -> GuardTarget:
    return _habit(ctx, "debug_print", faulty=True, others=False)


def cache_artifacts(ctx: TargetContext) -> GuardTarget:
    """Compiled artifacts loaded on rank 0 only (a CI cache restored on one host), rank 1 compiling fresh.

    Run with --backend inductor. Both ranks compile and run the model once together through the same
    backend the check uses, and save the artifacts (`torch.compiler.save_cache_artifacts`); dynamo is
    reset; rank 0 loads its artifacts into an empty cache directory (`load_cache_artifacts`), rank 1
    turns its caches off. The check's compile is then a cache hit on rank 0 and a cold compile on
    rank 1: a compile-time skew the agreement must wait out, and the same program on both ranks, which
    it must confirm — loaded artifacts are keyed on the graph and the config, so they are no divergence."""
    import os
    import tempfile

    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    from engine.compile import CompileConfig, CompiledRegion

    model, inputs = _build(ctx)
    with torch.no_grad():  # as the check runs its steps: the same inference graph, the same cache key
        CompiledRegion("warm", model, CompileConfig(enabled=True, backend="inductor"))(*inputs[0])  # both ranks
    saved = torch.compiler.save_cache_artifacts()
    torch._dynamo.reset()
    if ctx.rank == 0:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="restored_cache_")  # nothing on disk
        if saved is None:
            raise RuntimeError("torch.compiler.save_cache_artifacts() saved nothing: run with --backend inductor")
        torch.compiler.load_cache_artifacts(saved[0])
    else:
        inductor_config.fx_graph_cache = False  # compiles fresh: no graph cache, no autograd cache
        functorch_config.enable_autograd_cache = False
    return GuardTarget(fn=model, inputs=inputs)
