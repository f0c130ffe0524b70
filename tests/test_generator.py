"""Generator on one process, TP=1 (no process group): caches, determinism, one graph."""

from __future__ import annotations

import torch

from engine.collectives import TPCollectives
from engine.compile import CompileConfig
from engine.config import ModelConfig
from engine.model.decoder import LatentDecoder
from engine.model.denoise import chunk_noise, denoise_chunk, expected_generator_calls
from engine.model.generator import CausalGenerator

CFG = ModelConfig(num_layers=2)
STEPS = [1000, 500]


def _gen(compiled: bool = False) -> CausalGenerator:
    return CausalGenerator(
        CFG,
        comm=TPCollectives(group=None),
        tp_rank=0,
        device=torch.device("cpu"),
        compile_cfg=CompileConfig(enabled=compiled, backend="aot_eager"),
    )


def _cond(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, CFG.cond_len, CFG.cond_dim, generator=torch.Generator().manual_seed(seed))


def _chunk(gen, chunk_index, *, bias=0.0, cond=None):
    return denoise_chunk(
        gen,
        conditioning=_cond() if cond is None else cond,
        denoising_steps=STEPS,
        current_start_frame=chunk_index * CFG.frames_per_chunk,
        chunk_index=chunk_index,
        base_seed=3,
        attention_bias=bias,
    )


def test_kv_cache_changes_the_next_chunk():
    gen = _gen()
    _chunk(gen, 0)
    with_context = _chunk(gen, 1)
    gen.reset_kv_cache()
    _chunk(gen, 0)
    # -inf on every cached slot = attend to the chunk alone.
    without_context = _chunk(gen, 1, bias=float("-inf"))
    assert (with_context - without_context).abs().max() > 1e-3


def test_reset_reproduces_the_stream_exactly():
    gen = _gen()
    first = [_chunk(gen, i) for i in range(3)]
    gen.reset_kv_cache()
    gen.reset_crossattn_cache()
    again = [_chunk(gen, i) for i in range(3)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_crossattn_cache_is_used_until_reset():
    gen = _gen()
    a = _chunk(gen, 0, cond=_cond(0))
    gen.reset_kv_cache()
    stale = _chunk(gen, 0, cond=_cond(1))  # cross-attn cache still holds cond 0
    gen.reset_kv_cache()
    gen.reset_crossattn_cache()
    fresh = _chunk(gen, 0, cond=_cond(1))
    assert torch.equal(a, stale)
    assert not torch.equal(a, fresh)


def test_one_graph_across_chunks_resets_and_biases():
    """Compiled (aot_eager), TP=1: start frame, timestep and cache bias are tensors, so
    advancing chunks, rolling the cache, resetting it and changing the bias never recompile."""
    gen = _gen(compiled=True)
    eager = _gen()
    for i in range(3):  # chunk 2 rolls the 6-frame window
        torch.testing.assert_close(_chunk(gen, i, bias=-0.25), _chunk(eager, i, bias=-0.25))
    gen.reset_kv_cache()
    _chunk(gen, 0, bias=0.0)
    assert gen.num_calls == 4 * expected_generator_calls(STEPS, do_kv_recompute=False)
    assert gen.region.graph_count == 1  # fixed shapes, no data-dependent Python ints
    assert gen.region.graph_break_count == 0  # tp=1: no collective at all


def test_decoder_maps_latents_to_pixels():
    decoder = LatentDecoder(CFG)
    latents = chunk_noise(CFG, base_seed=0, chunk_index=0, step=0)
    pixels = decoder(latents)
    assert pixels.shape == (1, CFG.frames_per_chunk, *LatentDecoder.pixel_shape(CFG))
    assert pixels.abs().max() <= 1.0
    assert torch.equal(pixels, LatentDecoder(CFG)(latents))  # weights come from the seed
