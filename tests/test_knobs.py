"""The env table: parsing, defaults, bad values, and that every hook knob is parity-checked."""

from __future__ import annotations

import pytest

from engine import knobs
from engine.faults import FAULTS, FaultHooks


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


def test_fault_hooks_fire_only_on_their_rank_and_chunk():
    hooks = FaultHooks(name="perturb_input", rank=1, chunk=2)
    assert not hooks.fires("perturb_input", rank=0, chunk_index=2)
    assert not hooks.fires("perturb_input", rank=1, chunk_index=1)
    assert not hooks.fires("mutate_weight", rank=1, chunk_index=2)
    assert hooks.fires("perturb_input", rank=1, chunk_index=2)
    with pytest.raises(ValueError, match="COMPILE_GUARD_TEST_FAULT='typo' is unknown"):
        FaultHooks(name="typo", rank=0, chunk=0)
    assert set(FAULTS) >= {"perturb_input", "mutate_weight", "freeze_rank0_idle"}
