"""Plan `v1_generator_only`: what one chunk asks of the generator, and its invariants.

The same `validate_plan` runs on the sender before the header (schema stage of the
preflight) and on every receiver before the first generator collective, so a plan that
slips past one side (a skewed build, a corrupted meta) is still caught before Phase B.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.config import ModelConfig
from engine.control.envelope import TensorSpec

PLAN_ID = "v1_generator_only"

# tensor key -> required?  ("context_frames_override" is required exactly when recomputing.)
TENSOR_KEYS = {
    "latents": True,
    "conditioning_embeds": True,
    "denoising_step_list": True,
    "context_frames_override": False,
}
FORBIDDEN_KEYS = {"video": "pixel video never goes to workers; send latents"}


class PlanError(ValueError):
    """A plan that breaks an invariant: names the key path, the value seen and expected."""

    def __init__(self, key_path: str, detail: str) -> None:
        self.key_path, self.detail = key_path, detail
        super().__init__(f"{key_path}: {detail}")


@dataclass(frozen=True, kw_only=True)
class GeneratorPlan:
    height: int  # latent height the chunk is generated at
    width: int  # latent width
    current_start_frame: int  # absolute index of the chunk's first latent frame
    init_cache: bool  # hard cut: reset KV and cross-attn caches, new cache_epoch
    reset_kv_cache: bool  # reset the KV cache only
    reset_crossattn_cache: bool  # re-embed the conditioning
    kv_cache_attention_bias: float  # added to attention logits of cached tokens
    do_kv_recompute: bool  # one extra call rewrites the previous chunk's K/V from context
    num_denoise_steps: int  # == len(denoising_step_list)
    expected_generator_calls: int  # == num_denoise_steps + do_kv_recompute
    base_seed: int  # seeds the chunk's noise on every rank

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> GeneratorPlan:
        names = {f.name: f.type for f in fields(cls)}
        missing, unknown = sorted(set(names) - set(raw)), sorted(set(raw) - set(names))
        if missing or unknown:
            raise PlanError("plan", f"missing fields {missing}, unknown fields {unknown}")
        values = {}
        for name, kind in names.items():
            value = raw[name]
            if kind == "bool" and type(value) is not bool:
                raise PlanError(f"plan.{name}", f"expected bool, got {value!r}")
            if kind == "int" and type(value) is not int:
                raise PlanError(f"plan.{name}", f"expected int, got {value!r}")
            if kind == "float":
                if type(value) not in (int, float):
                    raise PlanError(f"plan.{name}", f"expected float, got {value!r}")
                value = float(value)
            values[name] = value
        return cls(**values)


def validate_plan(plan: GeneratorPlan, specs: list[TensorSpec], cfg: ModelConfig) -> None:
    """Raise PlanError on the first broken invariant (contracts.md, plan invariants)."""
    by_key = {s.key: s for s in specs}
    for key, reason in FORBIDDEN_KEYS.items():
        if key in by_key:
            raise PlanError(f"tensors.{key}", reason)
    unknown = sorted(set(by_key) - set(TENSOR_KEYS))
    if unknown:
        raise PlanError(f"tensors.{unknown[0]}", f"not a v1 tensor; allowed: {sorted(TENSOR_KEYS)}")
    for key, required in TENSOR_KEYS.items():
        if required and key not in by_key:
            raise PlanError(f"tensors.{key}", "required tensor is missing")
    if any(s.index != 0 for s in specs):
        raise PlanError("tensors", "v1 sends one tensor per key (index 0)")
    if (plan.height, plan.width) != (cfg.latent_height, cfg.latent_width):
        raise PlanError(
            "plan.height/width",
            f"({plan.height}, {plan.width}) != the engine's latent ({cfg.latent_height}, {cfg.latent_width})",
        )
    if plan.current_start_frame < 0 or plan.current_start_frame % cfg.frames_per_chunk:
        raise PlanError(
            "plan.current_start_frame",
            f"{plan.current_start_frame} must be a non-negative multiple of frames_per_chunk({cfg.frames_per_chunk})",
        )
    steps = by_key["denoising_step_list"]
    if steps.dtype != "int64" or len(steps.shape) != 1:
        raise PlanError("tensors.denoising_step_list", f"must be int64[N], got {steps.dtype}{list(steps.shape)}")
    if plan.num_denoise_steps != steps.shape[0]:
        raise PlanError(
            "plan.num_denoise_steps",
            f"{plan.num_denoise_steps} != len(denoising_step_list) = {steps.shape[0]}",
        )
    if plan.num_denoise_steps < 1:
        raise PlanError("plan.num_denoise_steps", f"{plan.num_denoise_steps} < 1")
    expected = plan.num_denoise_steps + (1 if plan.do_kv_recompute else 0)
    if plan.expected_generator_calls != expected:
        raise PlanError(
            "plan.expected_generator_calls",
            f"{plan.expected_generator_calls} != num_denoise_steps({plan.num_denoise_steps})"
            f" + do_kv_recompute({int(plan.do_kv_recompute)}) = {expected}",
        )
    has_override = "context_frames_override" in by_key
    if plan.do_kv_recompute and not has_override:
        raise PlanError(
            "tensors.context_frames_override",
            "required when do_kv_recompute=True (override required: no fallback to stale cache)",
        )
    if has_override and not plan.do_kv_recompute:
        raise PlanError("tensors.context_frames_override", "sent but do_kv_recompute=False")
    if plan.do_kv_recompute and plan.current_start_frame < cfg.frames_per_chunk:
        raise PlanError("plan.do_kv_recompute", "the first chunk of a stream has no previous chunk to recompute")
    chunk = [1, cfg.frames_per_chunk, cfg.latent_channels, cfg.latent_height, cfg.latent_width]
    for key in ("latents", "context_frames_override"):
        if key in by_key and list(by_key[key].shape) != chunk:
            raise PlanError(f"tensors.{key}", f"shape {list(by_key[key].shape)} != {chunk}")
    cond = [1, cfg.cond_len, cfg.cond_dim]
    if list(by_key["conditioning_embeds"].shape) != cond:
        raise PlanError("tensors.conditioning_embeds", f"shape {list(by_key['conditioning_embeds'].shape)} != {cond}")
