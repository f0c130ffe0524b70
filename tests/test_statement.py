"""What a rank states of a graph, read inside dynamo's backend call (one process, no process group)."""

from __future__ import annotations

import torch

from compile_guard import compat
from compile_guard.agreement.positions import Positions
from compile_guard.agreement.statement import StatementMaker


class _Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.sum()


def test_each_cache_entrys_failed_guard_is_named_the_same_instances_first():
    """Two instances of one module share one code object: one cache entry each. Instance `a` then meets a new
    size. dynamo's own reason is the *last* entry's first failed guard — instance b's `requires_grad`
    mismatch, another module's; the statement names a's own entry (the size) first, then b's."""
    torch._dynamo.reset()
    maker = StatementMaker(0, Positions(0))
    reasons: list[list[str]] = []
    dynamo_says: list[str | None] = []

    def backend(gm, example_inputs):
        code, f_locals = compat.compiling_frame()
        dynamo_says.append(compat.recompile_reason())
        reasons.append(maker._reasons(code, f_locals, compat.compile_id()))
        return gm.forward

    a, b = _Scaled(), _Scaled()
    torch.compile(a, backend=backend)(torch.ones(3))
    torch.compile(b, backend=backend)(torch.ones(3, requires_grad=True))
    torch.compile(a, backend=backend)(torch.ones(4))
    if compat.torch_release() >= (2, 7):  # 2.6's metrics context holds no recompile reason: nothing misleads there
        assert "requires_grad mismatch" in dynamo_says[2]  # the misleading first line
    first, second = reasons[2]
    assert first.startswith("guard failed (cache entry 0/0): tensor 'x' size mismatch at index 0"), reasons[2]
    assert second.startswith("guard failed (cache entry 0/1): tensor 'x' requires_grad mismatch"), reasons[2]
