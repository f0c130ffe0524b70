"""PP1: rank0 out of the mesh, the leader's broadcast, the layout's group check.

Multi-process tests: PP1 topology, 3 ranks (rank0 driver + a TP=2 mesh led by rank1), gloo,
CPU, eager, through the launcher with a deadline. The failure rows (OM-07, OM-08, the PP1
variants of OM-02/OM-04 and the call-count mismatch) run in tests/test_matrix.py.
"""

from __future__ import annotations

import sys

import pytest
import torch

from engine import events
from engine.layout import ParallelLayout, RankContext


@pytest.mark.parametrize("mesh", [2, 4])
def test_pp1_stream_runs_and_rank0_stays_out_of_the_mesh(run_ranks_argv, mesh):
    """PP1 with a mesh of 2 (TP=2, 3 ranks) and of 4 (TP=4, 5 ranks): any mesh size works."""
    argv = [sys.executable, "-m", "engine.topology.pp1", "--chunks", "4"]
    result = run_ranks_argv(argv, nprocs=mesh + 1, deadline_s=180)
    assert result.ok, result.summary() + "\n" + result.ranks[0].log_tail
    logs = [events.parse(r.log_path.read_text()) for r in result.ranks]
    done = [next(e for e in evs if e["event"] == "run_done")["chunks_done"] for evs in logs]
    assert done == [[0, 1, 2, 3]] * (mesh + 1)  # rank0 decoded all; every mesh rank generated all
    assert not any(e["event"] == "commit" and e.get("point") == "phase_b" for e in logs[0])  # no generator
    assert {e.get("group") for e in logs[0] if e["event"] == "commit"} == {"world_pg"}  # only its p2p channel
    leader_infer = [e for e in logs[1] if e["event"] == "commit" and e.get("action") == "INFER"]
    assert {e["group"] for e in leader_infer} == {"mesh_pg"}  # the leader's own commitment point


def _ctx(world_size: int) -> RankContext:
    return RankContext(
        rank=0, world_size=world_size, local_rank=0, device=torch.device("cpu"), backend="gloo", timeout_s=5.0
    )


@pytest.mark.parametrize(
    "world_size, tp, out_of_mesh, message",
    [
        (4, 2, True, r"tp\(2\) \* pp\(1\) \+ 1 driver = 3 does not match world_size\(4\)"),
        (3, 2, False, r"tp\(2\) \* pp\(1\) = 2 does not match world_size\(3\)"),
    ],
)
def test_layout_rejects_a_world_that_does_not_fit(world_size, tp, out_of_mesh, message):
    with pytest.raises(ValueError, match=message):
        ParallelLayout(_ctx(world_size), tp=tp, driver_out_of_mesh=out_of_mesh)  # raises before any group
