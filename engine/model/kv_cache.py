"""Self-attention KV cache (rolling window) and cross-attention cache.

The cache lives outside the compiled region: the compiled generator takes a fixed-shape
view (all `capacity` slots plus an additive bias that masks empty/future slots) and
returns the chunk's new K/V, which `write` commits here in eager. So the graph's shapes
never depend on how full the cache is or where the chunk starts: one graph, no recompile
as `current_start_frame` advances or the cache resets.

Index bookkeeping follows the streaming video generators this engine imitates:
`global_end_index` is the absolute token index one past the last written token,
`local_end_index` the same position inside the buffer. Writing past capacity evicts the
oldest tokens by rolling the buffer left.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class KVCache:
    def __init__(
        self,
        *,
        num_layers: int,  # one K and one V per block
        batch: int,  # batch size the cache serves
        capacity_tokens: int,  # slots per layer: the rolling window
        local_heads: int,  # heads held by this rank (num_heads / tp)
        head_dim: int,  # per-head width
        tokens_per_frame: int,  # converts frame indices to token indices
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, batch, capacity_tokens, local_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity_tokens
        self.tokens_per_frame = tokens_per_frame
        self.global_end_index = 0
        self.local_end_index = 0

    def reset(self) -> None:
        """Forget everything. Zeroing is belt and braces: the bias already masks empty slots."""
        self.k.zero_()
        self.v.zero_()
        self.global_end_index = 0
        self.local_end_index = 0

    @property
    def _base(self) -> int:
        # Absolute token index held by buffer slot 0.
        return self.global_end_index - self.local_end_index

    def view(self, current_start_frame: int, attention_bias: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K, V and a [capacity] additive bias for a chunk starting at `current_start_frame`.

        Slots holding tokens before the chunk get `attention_bias` (0 = plain attention, <0
        de-emphasises the past); empty slots and tokens at or after the chunk's start (a
        re-denoise of the same chunk overwrites them) get -inf.
        """
        start = self._check_start(current_start_frame)
        absolute = self._base + torch.arange(self.capacity, device=self.k.device)
        valid = (torch.arange(self.capacity, device=self.k.device) < self.local_end_index) & (absolute < start)
        bias = torch.full((self.capacity,), float("-inf"), dtype=self.k.dtype, device=self.k.device)
        bias[valid] = attention_bias
        return self.k, self.v, bias

    def write(self, current_start_frame: int, new_k: torch.Tensor, new_v: torch.Tensor) -> None:
        """Commit a chunk's K/V ([layers, batch, tokens, heads, head_dim]) at its frames."""
        start = self._check_start(current_start_frame)
        num_new = new_k.shape[2]
        if num_new > self.capacity:
            raise ValueError(
                f"chunk of {num_new} tokens does not fit a cache of {self.capacity} slots; raise cache_frames"
            )
        end = start + num_new
        appended = max(0, end - self.global_end_index)
        overflow = self.local_end_index + appended - self.capacity
        if overflow > 0:
            keep = self.local_end_index - overflow
            # Roll left: the oldest `overflow` tokens leave the window.
            self.k[:, :, :keep] = self.k[:, :, overflow : self.local_end_index].clone()
            self.v[:, :, :keep] = self.v[:, :, overflow : self.local_end_index].clone()
            self.local_end_index = keep
        self.local_end_index += appended
        self.global_end_index += appended
        local_start = start - self._base
        if local_start < 0:
            raise ValueError(
                f"current_start_frame={current_start_frame} was evicted from the rolling"
                f" window (oldest frame held: {self._base // self.tokens_per_frame});"
                " only the newest cache_frames frames can be rewritten"
            )
        self.k[:, :, local_start : local_start + num_new] = new_k
        self.v[:, :, local_start : local_start + num_new] = new_v

    def _check_start(self, current_start_frame: int) -> int:
        start = current_start_frame * self.tokens_per_frame
        if current_start_frame < 0 or start > self.global_end_index:
            raise ValueError(
                f"current_start_frame={current_start_frame} is invalid: the cache holds frames"
                f" [0, {self.global_end_index // self.tokens_per_frame}); a chunk must start at"
                " or before the end (set init_cache/reset to start over)"
            )
        return start


class CrossAttnCache:
    """Per-layer cross-attention K/V of the conditioning; filled once, reset explicitly."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.k is not None

    def fill(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v

    def reset(self) -> None:
        self.k = self.v = None
