"""Programs the tests run on every rank through the launcher (never in the test process).

    python tests/rank_programs.py collective_loop --fault sigkill --fault-rank 1
    python tests/rank_programs.py tp_parity --compile aot_eager --out DIR

Faults are chosen by argv, identical on every rank; each rank decides from its own rank
whether it is the faulty one, so the test cannot create a per-rank configuration by accident.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from engine import knobs
from engine.collectives import TPCollectives
from engine.compile import CompileConfig
from engine.config import DistConfig, ModelConfig
from engine.layout import ParallelLayout
from engine.lifecycle import joined
from engine.model.denoise import chunk_noise, denoise_chunk, expected_generator_calls
from engine.model.generator import CausalGenerator

log = logging.getLogger("rank_program")

FAULTS = ("none", "raise", "sigkill", "sigstop", "never_join", "block")
FAULT_AT_ITER = 3  # the faulty rank fails after this many good collectives


def collective_loop(args: argparse.Namespace) -> int:
    """All-reduce in a loop; the fault rank raises / dies / freezes / never joins / blocks."""
    rank = knobs.read("RANK")
    faulty = rank == args.fault_rank
    if faulty and args.fault == "never_join":
        log.info("rank %s: never joining the process group", rank)
        signal.pause()  # parked until the launcher kills it
    with joined(DistConfig(timeout_s=args.timeout_s)) as ctx:
        x = torch.ones(4)
        for i in range(args.iters):
            if faulty and i == FAULT_AT_ITER:
                log.info("rank %s: injecting %s at iteration %s", rank, args.fault, i)
                if args.fault == "raise":
                    raise RuntimeError(f"injected failure on rank {rank}")
                if args.fault == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if args.fault == "sigstop":
                    os.kill(os.getpid(), signal.SIGSTOP)
            if args.fault == "block" and i == FAULT_AT_ITER:
                signal.pause()  # every rank parks: only the deadline ends this run
            dist.all_reduce(x, group=dist.group.WORLD)
        log.info("rank %s: %s iterations done", ctx.rank, args.iters)
        return 0


def tp_parity(args: argparse.Namespace) -> int:
    """Run TP=world and a local TP=1 reference over the same stream; write max diffs.

    Stream: 3 chunks (the third rolls the 6-frame cache window), KV recompute on chunk 1,
    then a full reset (KV + cross-attn, new conditioning) and 2 more chunks.
    """
    with joined(DistConfig(timeout_s=args.timeout_s)) as ctx:
        torch.set_num_threads(1)
        layout = ParallelLayout(ctx, tp=ctx.world_size)
        cfg = ModelConfig(num_layers=2)
        compiled = args.compile != "off"
        backend = args.compile if compiled else "inductor"
        tp_gen = CausalGenerator(
            cfg,
            comm=TPCollectives(group=layout.group("tp")),
            tp_rank=layout.axis_rank("tp"),
            device=ctx.device,
            compile_cfg=CompileConfig(enabled=compiled, backend=backend),
        )
        ref_gen = CausalGenerator(
            cfg,
            comm=TPCollectives(group=None),
            tp_rank=0,
            device=ctx.device,
            compile_cfg=CompileConfig(enabled=False),
        )
        steps = [1000, 750, 500, 250]
        schedule = [(0, 0, False), (1, 3, True), (2, 6, False), ("reset", 0, False), (3, 0, False), (4, 3, True)]
        conds = [torch.randn(1, cfg.cond_len, cfg.cond_dim, generator=torch.Generator().manual_seed(s)) for s in (7, 8)]
        cond = conds[0]
        diffs, calls = [], 0
        for chunk_index, start, recompute in schedule:
            if chunk_index == "reset":
                for gen in (tp_gen, ref_gen):
                    gen.reset_kv_cache()
                    gen.reset_crossattn_cache()
                cond = conds[1]
                continue
            # Stand-in for rank0's re-encoded frames: deterministic, identical for both.
            context = chunk_noise(cfg, base_seed=99, chunk_index=chunk_index, step=0) if recompute else None
            outs = [
                denoise_chunk(
                    gen,
                    conditioning=cond,
                    denoising_steps=steps,
                    current_start_frame=start,
                    chunk_index=chunk_index,
                    base_seed=11,
                    attention_bias=-0.5,
                    context_frames=context,
                )
                for gen in (tp_gen, ref_gen)
            ]
            diffs.append(float((outs[0].float() - outs[1].float()).abs().max()))
            calls += expected_generator_calls(steps, recompute)
        result = {
            "rank": ctx.rank,
            "compile": args.compile,
            "max_abs_diff_per_chunk": diffs,
            "num_calls": tp_gen.num_calls,
            "expected_calls": calls,
            "graph_count": tp_gen.region.graph_count,
            "graph_break_count": tp_gen.region.graph_break_count,
            "output_scale": float(outs[1].abs().max()),
        }
        Path(args.out, f"rank{ctx.rank}.json").write_text(json.dumps(result, sort_keys=True))
        return 0


def local_replay(args: argparse.Namespace) -> int:
    """Each rank in turn (compile_guard.quality.speed.alone) serves every collective locally while the other waits
    on the job's store: functional (by group name) and c10d (by group object) collectives, on the world and on a
    subgroup, return at once with their buffers unchanged; each turn then lasts --turn-s, longer than the groups'
    timeout (a turn is a whole cold compile), and the waiting rank still goes on; after the swap back a real
    all-reduce sums again."""
    import time

    import torch.distributed._functional_collectives as funcol

    from compile_guard.quality import speed

    with joined(DistConfig(timeout_s=args.timeout_s)) as ctx:
        sub = dist.new_group([0, 1], timeout=datetime.timedelta(seconds=args.timeout_s))
        result: dict[str, object] = {}

        def turn() -> None:
            started = time.perf_counter()
            x = torch.full((4,), float(ctx.rank + 1))
            dist.all_reduce(x, group=dist.group.WORLD)
            dist.all_reduce(x, group=sub)
            y = funcol.all_reduce(torch.full((4,), float(ctx.rank + 1)), "sum", sub).wait()
            gathered = [torch.zeros(4) for _ in range(ctx.world_size)]
            dist.all_gather(gathered, x, group=dist.group.WORLD)
            result["local_s"] = time.perf_counter() - started
            result["unchanged"] = bool(torch.equal(x, torch.full((4,), float(ctx.rank + 1))))
            result["functional_unchanged"] = bool(torch.equal(y, torch.full((4,), float(ctx.rank + 1))))
            time.sleep(args.turn_s)  # a long turn (a cold compile's stand-in): the peer waits it out

        found, why = speed.alone(sub, torch.device("cpu"), turn)
        result["why"] = why
        z = torch.full((4,), float(ctx.rank + 1))
        dist.all_reduce(z, group=sub)
        result["real_sum"] = float(z[0])  # 1 + 2 on two ranks
        Path(args.out, f"rank{ctx.rank}.json").write_text(json.dumps(result, sort_keys=True))
        return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="program", required=True)
    loop = sub.add_parser("collective_loop")
    loop.add_argument("--fault", choices=FAULTS, default="none")
    loop.add_argument("--fault-rank", type=int, default=1)
    loop.add_argument("--iters", type=int, default=20)
    loop.add_argument("--timeout-s", type=float, default=5.0)
    parity = sub.add_parser("tp_parity")
    parity.add_argument("--compile", choices=["off", "aot_eager", "inductor"], default="off")
    parity.add_argument("--out", required=True)
    parity.add_argument("--timeout-s", type=float, default=60.0)
    local = sub.add_parser("local_replay")
    local.add_argument("--out", required=True)
    local.add_argument("--timeout-s", type=float, default=30.0)
    local.add_argument("--turn-s", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    programs = {"collective_loop": collective_loop, "tp_parity": tp_parity, "local_replay": local_replay}
    return programs[args.program](args)


if __name__ == "__main__":
    sys.exit(main())
