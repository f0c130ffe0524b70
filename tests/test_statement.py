"""What a rank states of a graph, read inside dynamo's backend call (one process, no process group)."""

from __future__ import annotations

import dataclasses
import logging

import torch

from compile_guard import compat
from compile_guard.agreement.entries import Statement
from compile_guard.agreement.ops import decode, encode
from compile_guard.agreement.positions import Positions
from compile_guard.agreement.statement import StatementMaker, fit


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


def _broken(x: torch.Tensor) -> torch.Tensor:
    y = x * 2
    print("a graph break")  # dynamo cannot trace it: graph 0 ends here, a resume function runs the rest
    return y + 1


def test_what_a_rank_states_is_what_its_peers_read_back(capsys):
    """The judge compares a rank's own statement with its peers' decoded ones: a value that JSON changes (a tuple, a
    set, a device) would differ on every healthy job. Each statement of a frame split by a graph break — its
    break, the split, the resume function's parent call — reads back equal, whole and cut to fit."""
    torch._dynamo.reset()
    maker = StatementMaker(0, Positions(0))
    made: list[Statement] = []

    def backend(gm, example_inputs):
        statement, _ = maker.make(len(made), gm, example_inputs)
        made.append(statement)
        record = maker.positions.frames[statement.fid]

        def run(*args):
            record.ran(statement.slot)  # this rank's count of the frame's calls, as the gate keeps it
            return gm.forward(*args)

        return run

    breaks = logging.getLogger(compat.BREAK_LOGGER)
    compat.log_compile_artifacts()
    breaks.addHandler(maker.sites)
    try:
        torch.compile(_broken, backend=backend)(torch.ones(3))
    finally:
        breaks.removeHandler(maker.sites)
        torch._logging.set_logs()  # torch's defaults again, and the two loggers back in the log
        for name in (compat.BREAK_LOGGER, compat.OUTPUT_CODE_LOGGER):
            logging.getLogger(name).propagate = True
    capsys.readouterr()
    first, resume = made  # the frame's graph up to the print, then the resume function's
    (printed,) = first.breaks
    assert printed.source.startswith('print("a graph break")') and first.split == [printed.site]
    assert resume.parent is not None and resume.parent.name == "_broken" and resume.parent.call == 0
    huge = [{"op": "all_reduce", "site": "x" * 100}] * 1000  # over the store's entry limit: cut to fit
    cut = fit(dataclasses.replace(first, collectives=huge, constants=[[0, "x" * 100, 1]] * 1000), what="it")
    assert cut.cut and cut.collectives == [] and cut.constants == []
    for statement in [*made, cut]:
        wire = decode(encode(statement.to_json(), what="it"), what="it")  # what a peer's read returns
        assert Statement.from_json(wire) == statement
