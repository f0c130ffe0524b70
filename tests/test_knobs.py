"""The env table: parsing, defaults, bad values, and that every hook knob is parity-checked;
the matrix's fault injector acting only at its point, rank and chunk."""

from __future__ import annotations

import pytest

from compile_guard.matrix.faults import FAULTS, FaultInjector
from engine import knobs
from engine.hooks import Point, at


def test_defaults_and_parsing():
    assert knobs.read("COMPILE_GUARD_INPUT_DIGEST", {}) is True
    assert knobs.read("COMPILE_GUARD_DEBUG_SYNC", {"COMPILE_GUARD_DEBUG_SYNC": "yes"}) is True
    assert knobs.read("COMPILE_GUARD_WATCHDOG_S", {"COMPILE_GUARD_WATCHDOG_S": "2.5"}) == 2.5


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("COMPILE_GUARD_DEBUG_SYNC", "maybe", "COMPILE_GUARD_DEBUG_SYNC='maybe' is invalid"),
        ("COMPILE_GUARD_WATCHDOG_S", "0", r"expected seconds in \(0, 600\]"),
        ("COMPILE_GUARD_FINGERPRINT_EVERY", "0", "expected an int >= 1"),
    ],
)
def test_bad_values_name_the_variable(name, text, message):
    with pytest.raises(ValueError, match=message):
        knobs.read(name, {name: text})


def test_unknown_knob_is_an_internal_error():
    with pytest.raises(KeyError, match="add a row"):
        knobs.read("COMPILE_GUARD_NOPE", {})


def test_every_test_hook_is_parity_checked():
    hooks = [k for k in knobs.KNOBS if k.name.startswith("COMPILE_GUARD_TEST_")]
    assert hooks and all(k.parity for k in hooks)


def test_fault_injector_acts_only_at_its_point_rank_and_chunk():
    injector = FaultInjector(name="inconsistent_plan", rank=1, chunk=2)

    def steps_after(point: Point, *, rank: int, chunk_index: int) -> int:
        plan = {"num_denoise_steps": 4}
        at(injector, point, rank=rank, chunk_index=chunk_index, plan=plan, tensors={}, extras={})
        return plan["num_denoise_steps"]

    assert steps_after(Point.REQUEST_BUILT, rank=0, chunk_index=2) == 4  # another rank
    assert steps_after(Point.REQUEST_BUILT, rank=1, chunk_index=1) == 4  # another chunk
    assert steps_after(Point.PLAN_RECEIVED, rank=1, chunk_index=2) == 4  # another point
    assert steps_after(Point.REQUEST_BUILT, rank=1, chunk_index=2) == 5  # its point, rank and chunk
    everywhere = FaultInjector(name="wrong_group", rank=-1, chunk=0)

    class Layout:
        def group(self, axis: str) -> str:
            return f"{axis}_pg"

    for rank in (0, 1):
        handed = at(everywhere, Point.AGREEMENT_GROUP, rank=rank, chunk_index=0, group="tp_pg", layout=Layout())
        assert handed["group"] == "world_pg"  # rank -1: every rank reaching the point
    with pytest.raises(ValueError, match="COMPILE_GUARD_TEST_FAULT='typo' is unknown"):
        FaultInjector(name="typo", rank=0, chunk=0)
    assert set(FAULTS) >= {"perturb_input", "mutate_weight", "freeze_rank0_idle"}
