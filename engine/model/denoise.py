"""The per-chunk denoising loop (flow matching, few steps) around the generator.

Every rank runs the same loop on the same inputs: noise comes from a CPU generator
seeded by (base_seed, chunk_index, step), never from device RNG state that could drift.
"""

from __future__ import annotations

import torch

from engine.config import ModelConfig
from engine.errors import ConfigError
from engine.model.generator import CausalGenerator

NUM_TRAIN_TIMESTEPS = 1000  # sigma = timestep / 1000


def chunk_noise(cfg: ModelConfig, *, base_seed: int, chunk_index: int, step: int, batch: int = 1) -> torch.Tensor:
    """Deterministic [B, F, C, H, W] noise for one (chunk, step), on CPU."""
    gen = torch.Generator(device="cpu").manual_seed(
        (base_seed * 1_000_003 + chunk_index * 1_009 + step) & ((1 << 63) - 1)
    )
    shape = (batch, cfg.frames_per_chunk, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    return torch.randn(shape, generator=gen)


def expected_generator_calls(denoising_steps: list[int], do_kv_recompute: bool) -> int:
    return len(denoising_steps) + (1 if do_kv_recompute else 0)


def denoise_chunk(
    generator: CausalGenerator,
    *,
    conditioning: torch.Tensor,  # [B, Lc, cond_dim]
    denoising_steps: list[int],  # decreasing timesteps, e.g. [1000, 750, 500, 250]
    current_start_frame: int,
    chunk_index: int,
    base_seed: int,
    context_frames: torch.Tensor | None = None,  # previous chunk's clean frames: KV recompute
    attention_bias: float = 0.0,
    initial_latents: torch.Tensor | None = None,  # the envelope's latents; default: seeded noise
) -> torch.Tensor:
    """Denoise one chunk; return its clean latents [B, F, C, H, W] (on the generator's device).

    Each call rewrites the chunk's K/V. When `context_frames` is given (KV recompute), one
    call at timestep 0 first rewrites the *previous* chunk's K/V from those clean frames, so
    this chunk attends to clean context rather than to the last denoising step's.
    """
    if not denoising_steps:
        raise ConfigError("denoising_steps is empty; pass at least one timestep, e.g. [1000, 500]")
    cfg = generator.cfg
    if context_frames is not None:
        previous_start = current_start_frame - cfg.frames_per_chunk
        if previous_start < 0:
            raise ConfigError(
                f"KV recompute at current_start_frame={current_start_frame} has no previous chunk;"
                f" recompute needs current_start_frame >= {cfg.frames_per_chunk}"
            )
        generator(
            context_frames,
            0.0,
            current_start_frame=previous_start,
            conditioning=conditioning,
            attention_bias=attention_bias,
        )
    if initial_latents is None:
        initial_latents = chunk_noise(cfg, base_seed=base_seed, chunk_index=chunk_index, step=0, batch=generator.batch)
    noisy = initial_latents.to(generator.device, torch.float32)
    for i, timestep in enumerate(denoising_steps):
        flow = generator(
            noisy,
            timestep,
            current_start_frame=current_start_frame,
            conditioning=conditioning,
            attention_bias=attention_bias,
        ).float()
        sigma = timestep / NUM_TRAIN_TIMESTEPS
        clean = noisy - sigma * flow
        if i + 1 < len(denoising_steps):
            next_sigma = denoising_steps[i + 1] / NUM_TRAIN_TIMESTEPS
            noise = chunk_noise(
                cfg, base_seed=base_seed, chunk_index=chunk_index, step=i + 1, batch=generator.batch
            ).to(generator.device)
            noisy = (1 - next_sigma) * clean + next_sigma * noise
    return clean
