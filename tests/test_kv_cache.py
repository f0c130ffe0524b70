"""KV cache: index bookkeeping, rolling eviction, masking of empty and future slots."""

from __future__ import annotations

import pytest
import torch

from engine.model.kv_cache import KVCache

TPF = 2  # tokens per frame
CAP_FRAMES = 4


def _cache() -> KVCache:
    return KVCache(
        num_layers=1,
        batch=1,
        capacity_tokens=CAP_FRAMES * TPF,
        local_heads=1,
        head_dim=1,
        tokens_per_frame=TPF,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def _chunk(first_frame: int, frames: int = 2) -> torch.Tensor:
    # K value = absolute token index, so slot contents say which token they hold.
    tokens = torch.arange(first_frame * TPF, (first_frame + frames) * TPF, dtype=torch.float32)
    return tokens.view(1, 1, -1, 1, 1)


def _held(cache: KVCache) -> list[int]:
    return cache.k[0, 0, : cache.local_end_index, 0, 0].int().tolist()


def test_append_then_roll_keeps_newest_window():
    cache = _cache()
    cache.write(0, _chunk(0), _chunk(0))
    cache.write(2, _chunk(2), _chunk(2))
    assert (cache.global_end_index, cache.local_end_index) == (8, 8)
    cache.write(4, _chunk(4), _chunk(4))  # 2 frames over capacity: frames 0-1 leave
    assert (cache.global_end_index, cache.local_end_index) == (12, 8)
    assert _held(cache) == list(range(4, 12))


def test_rewrite_same_chunk_overwrites_in_place():
    cache = _cache()
    cache.write(0, _chunk(0), _chunk(0))
    cache.write(2, _chunk(2), _chunk(2))
    cache.write(2, _chunk(2) + 100, _chunk(2) + 100)  # a later denoise step of chunk 1
    assert (cache.global_end_index, cache.local_end_index) == (8, 8)
    assert _held(cache) == [0, 1, 2, 3, 104, 105, 106, 107]


def test_view_masks_empty_and_current_chunk_slots():
    cache = _cache()
    cache.write(0, _chunk(0), _chunk(0))
    cache.write(2, _chunk(2), _chunk(2))
    _, _, bias = cache.view(2, attention_bias=-0.5)  # re-denoising chunk at frame 2
    # slots 0-3 hold frames 0-1 (before the chunk): biased; 4-7 are the chunk itself: masked
    assert bias.tolist() == [-0.5] * 4 + [float("-inf")] * 4
    _, _, bias = cache.view(4, attention_bias=0.0)
    assert bias.tolist() == [0.0] * 8


def test_reset_forgets_everything():
    cache = _cache()
    cache.write(0, _chunk(0), _chunk(0))
    cache.reset()
    assert (cache.global_end_index, cache.local_end_index) == (0, 0)
    assert torch.isinf(cache.view(0, 0.0)[2]).all()


def test_gap_and_evicted_starts_are_rejected():
    cache = _cache()
    with pytest.raises(ValueError, match=r"current_start_frame=1 is invalid: the cache holds frames \[0, 0\)"):
        cache.write(1, _chunk(1), _chunk(1))
    for first in (0, 2, 4):
        cache.write(first, _chunk(first), _chunk(first))
    with pytest.raises(ValueError, match=r"current_start_frame=0 was evicted"):
        cache.write(0, _chunk(0), _chunk(0))
