"""The generator under test: a tiny causal video DiT, tensor-parallel over heads and FFN.

Per block (adaLN-modulated, as in streaming video DiTs):
  self-attention over [KV cache ++ chunk] with q/k RMSNorm → cross-attention to the
  conditioning → FFN.
TP: q/k/v, cross q/k/v and FFN-up are column-parallel (heads / hidden split over the TP
group); the attention outputs and FFN-down are row-parallel and joined by an all-reduce.
q/k RMSNorm normalises over the *full* head width, so each shard all-reduces its sum of
squares (one small all-reduce for q and k together). All collectives go through
`TPCollectives`, so a compiled forward keeps them in the graph.

`forward` is the compiled region: fixed shapes, no host sync, no logging.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from engine.collectives import TPCollectives
from engine.config import ModelConfig
from engine.model.weights import Shard

_COLWISE_SUFFIXES = (
    "self_q.weight",
    "self_q.bias",
    "self_k.weight",
    "self_k.bias",
    "self_v.weight",
    "self_v.bias",
    "self_q_norm",
    "self_k_norm",
    "cross_q.weight",
    "cross_q.bias",
    "cross_k.weight",
    "cross_k.bias",
    "cross_v.weight",
    "cross_v.bias",
    "cross_q_norm",
    "cross_k_norm",
    "ffn_up.weight",
    "ffn_up.bias",
)
_ROWWISE_SUFFIXES = ("self_o.weight", "cross_o.weight", "ffn_down.weight")


def sinusoidal(values: torch.Tensor, width: int) -> torch.Tensor:
    """[...] float -> [..., width] sin/cos features (timesteps, frame indices)."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float().unsqueeze(-1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def sharded_rms_norm(
    xs: list[torch.Tensor], weights: list[torch.Tensor], full_width: int, eps: float, comm: TPCollectives
) -> list[torch.Tensor]:
    """RMSNorm over a width split across TP ranks; one all-reduce for all of `xs`."""
    sumsq = torch.stack([x.float().pow(2).sum(-1) for x in xs], dim=-1)  # [B, T, len(xs)]
    sumsq = comm.all_reduce_sum(sumsq)
    scale = torch.rsqrt(sumsq / full_width + eps)
    return [
        (x.float() * scale[..., i : i + 1]).to(x.dtype) * w for i, (x, w) in enumerate(zip(xs, weights, strict=True))
    ]


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # [B, T, H*hd] -> [B, T, H, hd]
    return x.unflatten(-1, (num_heads, -1))


ATTN_IMPLS = ("sdpa", "math")  # what `attn_impl="auto"` can resolve to


def resolve_attention(requested: str) -> str:
    """The attention kernel `requested` ("auto", "sdpa", "math") runs as on this build."""
    if requested not in ("auto", *ATTN_IMPLS):
        raise ValueError(f"attn_impl={requested!r} is invalid; pick one of {['auto', *ATTN_IMPLS]}")
    if requested != "auto":
        return requested
    return "sdpa" if hasattr(F, "scaled_dot_product_attention") else "math"


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, impl: str) -> torch.Tensor:
    # q: [B, Tq, H, hd], k/v: [B, Tk, H, hd], mask: [Tq, Tk] additive -> [B, Tq, H*hd]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:  # the unfused reference: same math, different kernels and rounding
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        out = torch.softmax(scores if mask is None else scores + mask, dim=-1) @ v
    return out.transpose(1, 2).flatten(2)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, tp: int, comm: TPCollectives, attn_impl: str) -> None:
        super().__init__()
        self.cfg, self.comm, self.attn_impl = cfg, comm, attn_impl
        self.local_heads = cfg.num_heads // tp
        local = self.local_heads * cfg.head_dim
        self.modulation = nn.Parameter(torch.empty(6, cfg.dim))
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.self_q = nn.Linear(cfg.dim, local)
        self.self_k = nn.Linear(cfg.dim, local)
        self.self_v = nn.Linear(cfg.dim, local)
        self.self_q_norm = nn.Parameter(torch.empty(local))
        self.self_k_norm = nn.Parameter(torch.empty(local))
        self.self_o = nn.Linear(local, cfg.dim, bias=False)
        self.self_o_bias = nn.Parameter(torch.empty(cfg.dim))  # added once, after the reduce
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.cross_q = nn.Linear(cfg.dim, local)
        self.cross_k = nn.Linear(cfg.dim, local)
        self.cross_v = nn.Linear(cfg.dim, local)
        self.cross_q_norm = nn.Parameter(torch.empty(local))
        self.cross_k_norm = nn.Parameter(torch.empty(local))
        self.cross_o = nn.Linear(local, cfg.dim, bias=False)
        self.cross_o_bias = nn.Parameter(torch.empty(cfg.dim))
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn_up = nn.Linear(cfg.dim, cfg.ffn_dim // tp)
        self.ffn_down = nn.Linear(cfg.ffn_dim // tp, cfg.dim, bias=False)
        self.ffn_down_bias = nn.Parameter(torch.empty(cfg.dim))

    def cross_kv(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Lc, dim] embedded conditioning -> this rank's cross K, V [B, Lc, Hl, hd]."""
        (k,) = sharded_rms_norm([self.cross_k(cond)], [self.cross_k_norm], self.cfg.dim, self.cfg.eps, self.comm)
        return _heads(k, self.local_heads), _heads(self.cross_v(cond), self.local_heads)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, dim]
        mod: torch.Tensor,  # [B, 6, dim] timestep modulation
        mask: torch.Tensor,  # [T, cap + T] additive: cache bias ++ frame-causal
        cross_k: torch.Tensor,  # [B, Lc, Hl, hd]
        cross_v: torch.Tensor,
        cache_k: torch.Tensor,  # [B, cap, Hl, hd]
        cache_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, comm = self.cfg, self.comm
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.modulation).unbind(1)
        h = self.norm1(x) * (1 + scale1.unsqueeze(1)) + shift1.unsqueeze(1)
        q, k = sharded_rms_norm(
            [self.self_q(h), self.self_k(h)], [self.self_q_norm, self.self_k_norm], cfg.dim, cfg.eps, comm
        )
        q, k, v = (_heads(t, self.local_heads) for t in (q, k, self.self_v(h)))
        attn = _attend(q, torch.cat([cache_k, k], 1), torch.cat([cache_v, v], 1), mask, self.attn_impl)
        x = x + (comm.all_reduce_sum(self.self_o(attn)) + self.self_o_bias) * gate1.unsqueeze(1)

        h = self.norm3(x)
        (cq,) = sharded_rms_norm([self.cross_q(h)], [self.cross_q_norm], cfg.dim, cfg.eps, comm)
        attn = _attend(_heads(cq, self.local_heads), cross_k, cross_v, None, self.attn_impl)
        x = x + comm.all_reduce_sum(self.cross_o(attn)) + self.cross_o_bias

        h = self.norm2(x) * (1 + scale2.unsqueeze(1)) + shift2.unsqueeze(1)
        ffn = comm.all_reduce_sum(self.ffn_down(F.gelu(self.ffn_up(h), approximate="tanh")))
        x = x + (ffn + self.ffn_down_bias) * gate2.unsqueeze(1)
        return x, k, v


class GeneratorModel(nn.Module):
    def __init__(self, cfg: ModelConfig, *, tp: int, comm: TPCollectives, attn_impl: str = "sdpa") -> None:
        super().__init__()
        cfg.check_tp(tp)
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={attn_impl!r} must be resolved first (resolve_attention); got no kernel name")
        self.cfg, self.tp, self.attn_impl = cfg, tp, attn_impl
        patch_width = cfg.latent_channels * cfg.patch_size**2
        self.patch_embed = nn.Linear(patch_width, cfg.dim)
        self.pos_spatial = nn.Parameter(torch.empty(cfg.tokens_per_frame, cfg.dim))
        self.frame_embed = nn.Linear(cfg.freq_dim, cfg.dim)
        self.time_embed = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.cond_embed = nn.Sequential(
            nn.Linear(cfg.cond_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.blocks = nn.ModuleList(Block(cfg, tp, comm, attn_impl) for _ in range(cfg.num_layers))
        self.head_norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head_modulation = nn.Parameter(torch.empty(2, cfg.dim))
        self.head = nn.Linear(cfg.dim, patch_width)
        # A debugging habit the harness must catch: set on one rank only, the print
        # breaks that rank's graph and nothing else differs.
        self.debug_print = False

    def init_rules(self) -> dict[str, tuple[Shard, float, float]]:
        """name -> (shard, init mean, init std) for `engine.model.weights.materialize`."""
        rules = {}
        for name, param in self.named_parameters():
            shard = Shard.REPLICATED
            if name.endswith(_COLWISE_SUFFIXES):
                shard = Shard.COLWISE
            elif name.endswith(_ROWWISE_SUFFIXES):
                shard = Shard.ROWWISE
            if re.search(r"norm[^.]*(\.weight)?$", name):
                rules[name] = (shard, 1.0, 0.1)  # norm gains: around 1, not all equal
            elif name.endswith("weight") and param.dim() == 2:
                fan_in = param.shape[1] * (self.tp if shard is Shard.ROWWISE else 1)
                rules[name] = (shard, 0.0, 1.0 / math.sqrt(fan_in))
            else:
                rules[name] = (shard, 0.0, 0.02)  # biases, modulations, positions
        return rules

    def embed_conditioning(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Lc, cond_dim] -> cross K, V for every block, [L, B, Lc, Hl, hd] each."""
        emb = self.cond_embed(cond)
        kvs = [block.cross_kv(emb) for block in self.blocks]
        return torch.stack([k for k, _ in kvs]), torch.stack([v for _, v in kvs])

    def _frame_causal_bias(self, frames: int, device: torch.device) -> torch.Tensor:
        frame_of = torch.arange(frames * self.cfg.tokens_per_frame, device=device)
        frame_of = frame_of // self.cfg.tokens_per_frame
        allowed = frame_of.unsqueeze(1) >= frame_of.unsqueeze(0)  # query frame >= key frame
        zero = torch.zeros((), dtype=self.head.weight.dtype, device=device)
        return torch.where(allowed, zero, float("-inf"))

    def forward(
        self,
        latents: torch.Tensor,  # [B, F, C, H, W] noisy latents of the chunk
        timestep: torch.Tensor,  # [B] float, 0..1000
        start_frame: torch.Tensor,  # [] int64: absolute index of the chunk's first frame
        cross_k: torch.Tensor,  # [L, B, Lc, Hl, hd]
        cross_v: torch.Tensor,
        cache_k: torch.Tensor,  # [L, B, cap, Hl, hd]
        cache_v: torch.Tensor,
        cache_bias: torch.Tensor,  # [cap] additive bias per cache slot (-inf = empty)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> flow prediction [B, F, C, H, W], the chunk's K and V [L, B, T, Hl, hd]."""
        cfg = self.cfg
        b, f, c, hgt, wid = latents.shape
        p = cfg.patch_size
        tokens = latents.reshape(b, f, c, hgt // p, p, wid // p, p)
        tokens = tokens.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f * cfg.tokens_per_frame, c * p * p)
        frames = start_frame + torch.arange(f, device=latents.device)
        frame_pos = self.frame_embed(sinusoidal(frames, cfg.freq_dim).to(latents.dtype))  # [F, dim]
        pos = (self.pos_spatial.unsqueeze(0) + frame_pos.unsqueeze(1)).flatten(0, 1)  # [T, dim]
        x = self.patch_embed(tokens) + pos

        t_emb = self.time_embed(sinusoidal(timestep, cfg.freq_dim).to(latents.dtype))
        mod = self.time_proj(t_emb).unflatten(1, (6, cfg.dim))
        num_tokens = x.shape[1]
        mask = torch.cat([cache_bias.expand(num_tokens, -1), self._frame_causal_bias(f, latents.device)], dim=1)
        if self.debug_print:
            print("debug: chunk tokens", x.shape)
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, mod, mask, cross_k[i], cross_v[i], cache_k[i], cache_v[i])
            new_k.append(k)
            new_v.append(v)

        shift, scale = (self.head_modulation.unsqueeze(0) + t_emb.unsqueeze(1)).unbind(1)
        x = self.head(self.head_norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))
        out = x.reshape(b, f, hgt // p, wid // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, f, c, hgt, wid), torch.stack(new_k), torch.stack(new_v)
