"""Input signature agreement per step (`check --target`): ranks compare what they are about to feed
the compiled function — shape, dtype, strides and device of every tensor leaf, type and value of
every other leaf — before the step runs. A rank given a different shape would recompile alone and
then meet its peers in a collective of another size: a gloo abort, an NCCL hang or garbage. Here
it is an InputSignatureMismatch naming the step, the leaf and every rank's value, before any of it.
"""

from __future__ import annotations

from typing import Any

import torch
from tabulate import tabulate

from compile_guard import compat
from engine import events
from engine.collectives import all_gather_json
from engine.control.parity import diff_table
from engine.errors import InputSignatureMismatch


def input_signature(args: tuple[Any, ...]) -> dict[str, Any]:
    """{"<leaf path>.<field>": value} for one step's arguments, flat, so a diff names the field."""
    signature: dict[str, Any] = {}
    for path, leaf in compat.flatten_with_paths(args):
        key = f"args{path}"
        if isinstance(leaf, torch.Tensor):
            fields = {
                "shape": list(leaf.shape),
                "dtype": str(leaf.dtype),
                "stride": list(leaf.stride()),
                "device": leaf.device.type,
            }
        elif isinstance(leaf, (bool, int, float, str, type(None))):
            fields = {"type": type(leaf).__name__, "value": leaf}
        else:
            fields = {"type": type(leaf).__name__}
        signature.update({f"{key}.{name}": value for name, value in fields.items()})
    return signature


def agree_on_inputs(args: tuple[Any, ...], *, step: int, group: Any, ranks: tuple[int, ...], device: Any) -> None:
    """Every rank's signature of this step; InputSignatureMismatch with the per-rank table if any differs."""
    per_rank = all_gather_json(input_signature(args), group=group, device=device)
    rows = diff_table(per_rank, ranks)
    if rows:
        events.emit("input_signature_mismatch", step=step, leaves=[r[0] for r in rows], ranks=list(ranks))
        table = tabulate(
            [[k, *(str(v)[:40] for v in values)] for k, *values in rows],
            headers=["input", *(f"rank{r}" for r in ranks)],
        )
        raise InputSignatureMismatch(
            f"step {step}: ranks would run on inputs of different signatures (stopped before"
            f" the step, so before any recompile or collective)\n{table}"
        )
