"""rank0's side of a stream: the chunk requests it sends, one per chunk.

A stream is a sequence of chunks at increasing frame positions; a hard cut starts a new
one (init_cache, new conditioning, position 0). KV recompute chunks carry the previous
chunk's clean latents as `context_frames_override`: rank0 supplies them, so the request
depends on the previous chunk's result (the R0a coupling of the PP contracts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.config import ModelConfig
from engine.control.transport import ChunkRequest
from engine.hooks import Hooks, Point, at
from engine.model.denoise import chunk_noise


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    chunks: int  # chunks after the warmup chunk
    steps: tuple[int, ...] = (1000, 750, 500, 250)  # denoising timesteps per chunk
    recompute_every: int = 2  # every k-th chunk recomputes the previous chunk's KV; 0 = never
    hard_cut_at: int = -1  # chunk index that starts a new stream (-1: none)
    attention_bias: float = 0.0  # kv_cache_attention_bias of every chunk

    def __post_init__(self) -> None:
        if self.chunks < 1:
            raise ValueError(f"chunks={self.chunks} is invalid; expected >= 1")
        if not self.steps or any(not 0 < s <= 1000 for s in self.steps):
            raise ValueError(f"steps={self.steps} is invalid; expected timesteps in (0, 1000]")
        if self.recompute_every < 0:
            raise ValueError(f"recompute_every={self.recompute_every} is invalid; expected >= 0")


class StreamBuilder:
    def __init__(self, cfg: ModelConfig, scfg: StreamConfig, hooks: Hooks, *, rank: int = 0) -> None:
        self.cfg, self.scfg, self.hooks = cfg, scfg, hooks
        self.rank = rank  # the driver's global rank
        self.position = 0  # chunk position inside the current stream
        self.stream_id = 0
        self.previous_clean: torch.Tensor | None = None

    def _conditioning(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(10_000 + self.stream_id)
        return torch.randn(1, self.cfg.cond_len, self.cfg.cond_dim, generator=gen)

    def request(self, chunk_index: int) -> ChunkRequest:
        if chunk_index == self.scfg.hard_cut_at:
            self.restart(new_stream=True)
        cfg, steps = self.cfg, list(self.scfg.steps)
        recompute = (
            chunk_index >= 0
            and self.scfg.recompute_every > 0
            and self.position > 0
            and chunk_index % self.scfg.recompute_every == 0
        )
        plan = {
            "height": cfg.latent_height,
            "width": cfg.latent_width,
            "current_start_frame": self.position * cfg.frames_per_chunk,
            "init_cache": self.position == 0,
            "reset_kv_cache": False,
            "reset_crossattn_cache": self.position == 0,
            "kv_cache_attention_bias": self.scfg.attention_bias,
            "do_kv_recompute": recompute,
            "num_denoise_steps": len(steps),
            "expected_generator_calls": len(steps) + int(recompute),
            "base_seed": 1_000 + max(chunk_index, 0),
        }
        tensors = {
            "latents": chunk_noise(cfg, base_seed=plan["base_seed"], chunk_index=chunk_index, step=0),
            "conditioning_embeds": self._conditioning(),
            "denoising_step_list": torch.tensor(steps, dtype=torch.int64),
        }
        if recompute:
            tensors["context_frames_override"] = self.previous_clean
        extras: dict = {"stream_id": self.stream_id}
        at(
            self.hooks,
            Point.REQUEST_BUILT,
            rank=self.rank,
            chunk_index=chunk_index,
            plan=plan,
            tensors=tensors,
            extras=extras,
        )
        return ChunkRequest(chunk_index=chunk_index, plan=plan, tensors=tensors, extras=extras)

    def restart(self, *, new_stream: bool) -> None:
        """Start over at position 0 (after warmup; at a hard cut, with new conditioning)."""
        self.position, self.previous_clean = 0, None
        self.stream_id += int(new_stream)

    def committed(self) -> None:
        """The last request went out (its header is sent): the next chunk follows it."""
        self.position += 1

    def context(self, clean: torch.Tensor) -> None:
        """Clean frames of the latest chunk: the next recompute's context_frames_override."""
        self.previous_clean = clean.detach().cpu()
