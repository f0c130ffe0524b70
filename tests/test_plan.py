"""Plan v1 invariants and the sender's preflight order (no process group needed)."""

from __future__ import annotations

import pytest
import torch

from engine.config import ModelConfig
from engine.control.plan import GeneratorPlan, PlanError, validate_plan
from engine.control.stream import StreamBuilder, StreamConfig
from engine.control.transport import BroadcastChannel, ChunkRequest, EnvelopeSender
from engine.errors import PreflightError
from engine.hooks import Hooks

CFG = ModelConfig(num_layers=1)
NO_FAULT = Hooks()


def _request(chunk_index: int = 1) -> ChunkRequest:
    builder = StreamBuilder(CFG, StreamConfig(chunks=4, recompute_every=2), NO_FAULT)
    builder.request(0)
    builder.committed()
    builder.context(torch.zeros(1, CFG.frames_per_chunk, 4, 16, 16))
    return builder.request(chunk_index)


def _sender() -> EnvelopeSender:
    # preflight touches no group: safe without a process group
    channel = BroadcastChannel(group=None, name="tp", src=0)
    return EnvelopeSender(cfg=CFG, channel=channel, device=torch.device("cpu"))


def _check(req: ChunkRequest) -> None:
    from engine.control.envelope import spec_of

    validate_plan(GeneratorPlan.from_json(req.plan), [spec_of(k, 0, t) for k, t in req.tensors.items()], CFG)


def test_stream_requests_are_valid():
    _check(_request(1))  # plain chunk
    req = _request(2)  # recompute chunk: 4 steps + 1
    assert req.plan["do_kv_recompute"] and req.plan["expected_generator_calls"] == 5
    _check(req)


@pytest.mark.parametrize(
    "mutate, key_path",
    [
        (lambda p, t: p.update(num_denoise_steps=5), "plan.num_denoise_steps"),
        (lambda p, t: p.update(expected_generator_calls=9), "plan.expected_generator_calls"),
        (lambda p, t: t.pop("context_frames_override"), "tensors.context_frames_override"),
        (lambda p, t: p.update(do_kv_recompute=False, expected_generator_calls=4), "tensors.context_frames_override"),
        (lambda p, t: t.update(video=torch.zeros(1)), "tensors.video"),
        (lambda p, t: t.update(extra=torch.zeros(1)), "tensors.extra"),
        (lambda p, t: t.pop("latents"), "tensors.latents"),
        (lambda p, t: p.update(height=32), "plan.height/width"),
        (lambda p, t: p.update(current_start_frame=4), "plan.current_start_frame"),
        (lambda p, t: p.update(init_cache=1), "plan.init_cache"),
        (lambda p, t: p.pop("base_seed"), "plan"),
        (lambda p, t: t.update(conditioning_embeds=torch.zeros(1, 2, 3)), "tensors.conditioning_embeds"),
    ],
)
def test_plan_invariants(mutate, key_path):
    req = _request(2)
    mutate(req.plan, req.tensors)
    with pytest.raises(PlanError) as info:
        _check(req)
    assert info.value.key_path == key_path


def test_recompute_on_the_first_chunk_is_rejected():
    req = _request(2)
    req.plan.update(current_start_frame=0)
    with pytest.raises(PlanError, match="no previous chunk"):
        _check(req)


def _stage(req: ChunkRequest) -> str:
    with pytest.raises(PreflightError) as info:
        _sender().preflight(req)
    return info.value.stage


def test_preflight_stages_run_in_contract_order():
    """schema -> manifest -> meta encode -> dtype -> materialise: the earliest failure wins."""
    bad_plan, lam, boolean = "plan", "lambda", "bool"

    def req(*faults):
        r = _request(1)
        if bad_plan in faults:
            r.plan["num_denoise_steps"] = 7
        if lam in faults:
            r.extras["cb"] = lambda: None
        if boolean in faults:
            r.tensors["latents"] = r.tensors["latents"] > 0
        return r

    assert _stage(req(bad_plan, lam, boolean)) == "schema"
    assert _stage(req(lam, boolean)) == "meta_encode"
    assert _stage(req(boolean)) == "dtype"


def test_rejected_request_burns_its_call_id_and_the_next_one_works():
    sender = _sender()
    bad = _request(1)
    bad.extras["cb"] = lambda: None
    with pytest.raises(PreflightError):
        sender.preflight(bad)
    prepared = sender.preflight(_request(1))
    assert prepared.header.call_id == 1  # id 0 was burned: IDs stay strictly increasing
    assert [s.key for s in prepared.specs] == ["conditioning_embeds", "denoising_step_list", "latents"]
