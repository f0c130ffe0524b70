"""The bare baseline for bench_check: same ranks, same compiled engine, same generator calls —
no handshakes, no control plane, no probes, no tripwires.

    torchrun --nproc-per-node=2 benchmarks/bare_warmup.py --compile inductor
"""

from __future__ import annotations

import argparse

import torch

from engine.collectives import TPCollectives
from engine.compile import CompileConfig
from engine.config import DistConfig, ModelConfig
from engine.layout import ParallelLayout
from engine.lifecycle import joined
from engine.model.denoise import chunk_noise, denoise_chunk
from engine.model.generator import CausalGenerator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", default="inductor", choices=["inductor", "aot_eager"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=3, help="steady chunks after the warmup chunk")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with joined(DistConfig(timeout_s=60)) as ctx:
        layout = ParallelLayout(ctx, tp=ctx.world_size)
        cfg = ModelConfig(num_layers=args.layers)
        gen = CausalGenerator(
            cfg,
            comm=TPCollectives(group=layout.group("tp")),
            tp_rank=layout.axis_rank("tp"),
            device=ctx.device,
            compile_cfg=CompileConfig(enabled=True, backend=args.compile),
        )
        cond = torch.randn(1, cfg.cond_len, cfg.cond_dim, generator=torch.Generator().manual_seed(0))
        steps = [1000, 750, 500, 250]
        # warmup chunk, then the check scenario's stream: positions 0.., recompute on even chunks
        denoise_chunk(gen, conditioning=cond, denoising_steps=steps, current_start_frame=0, chunk_index=-1, base_seed=1)
        gen.reset_kv_cache()
        previous = None
        for k in range(args.chunks):
            recompute = k > 0 and k % 2 == 0
            previous = denoise_chunk(
                gen,
                conditioning=cond,
                denoising_steps=steps,
                current_start_frame=k * cfg.frames_per_chunk,
                chunk_index=k,
                base_seed=1 + k,
                context_frames=previous if recompute else None,
                initial_latents=chunk_noise(cfg, base_seed=1 + k, chunk_index=k, step=0),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
