"""One rank's generator: its model shard, its caches and the region that runs the forward.

A generator call = one forward over a chunk at one timestep. The caches stay in eager
around the compiled region (see kv_cache.py), so the region sees fixed shapes.
"""

from __future__ import annotations

import torch

from engine.collectives import TPCollectives
from engine.compile import CompileConfig, CompiledRegion
from engine.config import ModelConfig
from engine.model.kv_cache import CrossAttnCache, KVCache
from engine.model.transformer import GeneratorModel
from engine.model.weights import materialize


class CausalGenerator:
    def __init__(
        self,
        cfg: ModelConfig,
        *,
        comm: TPCollectives,  # collectives of this rank's TP group
        tp_rank: int,  # this rank's index inside the TP group
        device: torch.device,
        compile_cfg: CompileConfig,
        batch: int = 1,
        attn_impl: str = "sdpa",  # a resolved kernel name (engine.model.resolve_attention)
    ) -> None:
        tp = comm.size
        if not 0 <= tp_rank < tp:
            raise ValueError(f"tp_rank({tp_rank}) is invalid for a TP group of {tp}")
        self.cfg = cfg
        self.device = device
        self.batch = batch
        self.comm = comm
        self.model = GeneratorModel(cfg, tp=tp, comm=comm, attn_impl=attn_impl)
        materialize(self.model, self.model.init_rules(), seed=cfg.seed, tp_rank=tp_rank, tp_size=tp)
        self.model.to(device=device, dtype=cfg.torch_dtype).eval()
        self.kv_cache = KVCache(
            num_layers=cfg.num_layers,
            batch=batch,
            capacity_tokens=cfg.cache_tokens,
            local_heads=cfg.num_heads // tp,
            head_dim=cfg.head_dim,
            tokens_per_frame=cfg.tokens_per_frame,
            dtype=cfg.torch_dtype,
            device=device,
        )
        self.crossattn_cache = CrossAttnCache()
        self.region = CompiledRegion("generator", self.model.forward, compile_cfg)
        self.num_calls = 0  # generator calls since construction (warmup included)

    def reset_kv_cache(self) -> None:
        self.kv_cache.reset()

    def reset_crossattn_cache(self) -> None:
        self.crossattn_cache.reset()

    @torch.no_grad()
    def __call__(
        self,
        latents: torch.Tensor,  # [B, F, C, H, W]
        timestep: float,  # 0..1000; 0 = clean (the KV recompute call)
        *,
        current_start_frame: int,
        conditioning: torch.Tensor,  # [B, Lc, cond_dim]; embedded once per cross-attn reset
        attention_bias: float = 0.0,  # added to logits of cached tokens
    ) -> torch.Tensor:
        """Run one generator call; commit the chunk's K/V to the cache; return the flow."""
        dtype = self.cfg.torch_dtype
        if not self.crossattn_cache.filled:
            self.crossattn_cache.fill(*self.model.embed_conditioning(conditioning.to(self.device, dtype)))
        cache_k, cache_v, cache_bias = self.kv_cache.view(current_start_frame, attention_bias)
        flow, new_k, new_v = self.region(
            latents.to(self.device, dtype),
            torch.full((latents.shape[0],), float(timestep), device=self.device),
            torch.tensor(current_start_frame, dtype=torch.int64, device=self.device),
            self.crossattn_cache.k,
            self.crossattn_cache.v,
            cache_k,
            cache_v,
            cache_bias,
        )
        self.kv_cache.write(current_start_frame, new_k, new_v)
        self.num_calls += 1
        return flow
