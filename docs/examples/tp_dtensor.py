"""A worked example target written the way most TP code is written today: DTensor.

    python -m compile_guard check --target docs.examples.tp_dtensor:mlp --baselines my_baselines

A two-layer MLP made tensor-parallel with torch's own `parallelize_module` (colwise up
projection, rowwise down projection) over a DeviceMesh built from the TP group compile_guard
hands the factory. The graph dynamo captures holds DTensor ops and no collective at all; the
rowwise projection's all-reduce appears only after dispatch, which is where compile_guard's
probe reads the collective schedule (compile_guard.health.schedule).
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from compile_guard import GuardTarget, TargetContext

DIM, HIDDEN, TOKENS = 64, 256, 16


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(DIM, HIDDEN)
        self.down = torch.nn.Linear(HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def mlp(ctx: TargetContext) -> GuardTarget:
    torch.manual_seed(0)  # the same full weights on every rank; parallelize_module keeps each rank's shard
    mesh = DeviceMesh.from_group(ctx.tp_group, ctx.device.type)
    model = parallelize_module(MLP().to(ctx.device), mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
    inputs = [(torch.randn(TOKENS, DIM, generator=torch.Generator().manual_seed(s)).to(ctx.device),) for s in (1, 2)]
    return GuardTarget(fn=model, inputs=inputs)
