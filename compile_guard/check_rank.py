"""The rank side of `check`: handshakes, lockstep warmup, compile-health probes.

    python -m compile_guard.check_rank --scenario tp2 --out DIR     # on every rank

On each rank, before any inference: the env parity handshake (FM-01), the compile
parity handshake (C-01: compile on/off and every setting that changes graphs), the
effective-backend handshake (C-04: what `auto` resolved to). Then the warmup chunk
(chunk_index=-1) runs through the control plane; right after it every rank's compile
health is gathered and must be equal across the group (C-03), else every rank exits
with the diff. Then the steady-state chunks; the probe is taken again to count
recompiles after warmup. Each rank writes `probe-rank{r}.json` into --out; the parent
(compile_guard.check) diffs it against the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

from compile_guard.probe import CompileProbe, symmetric_view
from compile_guard.scenarios import SCENARIOS
from engine import events, pp1
from engine.atomic_json import write_json
from engine.collectives import all_gather_json
from engine.compile import CompileConfig
from engine.errors import CompileAsymmetry
from engine.parity import diff_table, handshake
from engine.runtime import Runtime, add_stream_args, prepare, rank_main, serve
from engine.transport import Envelope

log = logging.getLogger("compile_guard.check_rank")

# dynamo / inductor settings that change what gets compiled; absent ones read "<absent>"
# (a torch upgrade renames config keys: the handshake then compares "<absent>" alike).
DYNAMO_KEYS = (
    "disable", "suppress_errors", "automatic_dynamic_shapes", "assume_static_by_default", "cache_size_limit",
    "recompile_limit", "capture_scalar_outputs", "capture_dynamic_output_shape_ops", "specialize_int",
    "nested_graph_breaks", "inline_inbuilt_nn_modules",
)  # fmt: skip
INDUCTOR_KEYS = ("max_autotune", "freezing", "fallback_random", "cpp_wrapper", "coordinate_descent_tuning",
                 "triton.cudagraphs")  # fmt: skip


def _config_value(module: Any, dotted: str) -> Any:
    value = module
    for part in dotted.split("."):
        value = getattr(value, part, "<absent>")
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def compile_payload(ccfg: CompileConfig) -> dict[str, Any]:
    import torch._inductor.config as inductor_config

    payload = {
        # effective: TORCH_COMPILE_DISABLE=1 on one rank turns compile off there alone
        "compile.enabled": ccfg.enabled and not torch._dynamo.config.disable,
        "compile.backend": ccfg.backend,
        "compile.mode": ccfg.mode,
        "compile.fullgraph": ccfg.fullgraph,
        "compile.dynamic": ccfg.dynamic,
    }
    payload.update({f"dynamo.{k}": _config_value(torch._dynamo.config, k) for k in DYNAMO_KEYS})
    payload.update({f"inductor.{k}": _config_value(inductor_config, k) for k in INDUCTOR_KEYS})
    return payload


@contextlib.contextmanager
def depyf_dump(dump_dir: Path | None) -> Iterator[None]:
    """Decompiled source of every compiled frame (and inductor kernels) into dump_dir."""
    if dump_dir is None:
        yield
        return
    import depyf
    import depyf.explain.enable_debugging as depyf_debugging

    # TODO(no upstream issue found): depyf 0.20's load_by_key_path patch takes 4 positional
    # arguments, and torch 2.13 passes a keyword-only `set_sys_modules`. Remove this wrapper
    # once depyf's patched function accepts extra keywords.
    original = depyf_debugging.patched_load_by_key_path

    def tolerant(key, path, linemap=None, attrs=None, **_torch_kwargs):
        return original(key, path, linemap, attrs)

    depyf_debugging.patched_load_by_key_path = tolerant
    try:
        with depyf.prepare_debug(str(dump_dir)):
            yield
    finally:
        depyf_debugging.patched_load_by_key_path = original


class WarmupGate:
    """after_chunk hook: after warmup, gather compile health and require symmetry (C-03)."""

    def __init__(self, rt: Runtime, probe: CompileProbe, ranks: tuple[int, ...]) -> None:
        self.rt, self.probe, self.ranks = rt, probe, ranks
        self.warmup: dict[str, Any] | None = None

    def __call__(self, env: Envelope) -> None:
        chunk = env.header.chunk_index
        if chunk != -1:
            events.emit("progress", phase="steady", chunk_index=chunk, generator_calls=self.rt.gen.num_calls)
            return
        self.warmup = require_symmetric(self.probe.snapshot(), group=self.rt.group, ranks=self.ranks,
                                        device=self.rt.ctx.device)  # fmt: skip


def require_symmetric(snapshot: dict[str, Any], *, group: Any, ranks: tuple[int, ...], device: Any) -> dict[str, Any]:
    """Gather every rank's post-warmup compile health; CompileAsymmetry with the diff if any differs (C-03)."""
    per_rank = all_gather_json(symmetric_view(snapshot), group=group, device=device)
    rows = diff_table(per_rank, ranks)
    events.emit("progress", phase="warmup_done", unique_graphs=snapshot["unique_graphs"],
                graph_breaks=snapshot["graph_breaks"], recompiles=snapshot["recompiles"])  # fmt: skip
    if rows:
        from tabulate import tabulate

        events.emit("compile_asymmetry", keys=[r[0] for r in rows], ranks=list(ranks))
        table = tabulate([[k, *(json.dumps(v)[:60] for v in vals)] for k, *vals in rows],
                         headers=["metric", *(f"rank{r}" for r in ranks)])  # fmt: skip
        log.error("compile health differs across ranks after warmup:\n%s", table)
        raise CompileAsymmetry(f"compile health differs across ranks after warmup on {[r[0] for r in rows]}\n{table}")
    return snapshot


def run(ctx: Any, args: argparse.Namespace) -> dict[str, Any]:
    if SCENARIOS[args.scenario].topology == "pp1":
        layout, cfg, ccfg = pp1.prepare(ctx, args)
        if ctx.rank == pp1.DRIVER:  # out of the mesh, compiles nothing: reported apart
            summary = pp1.drive(ctx, layout, cfg, args)
            return {"scenario": args.scenario, "rank": ctx.rank, "role": "driver", "run": summary}

        def serve_fn(rt: Runtime) -> None:
            pp1.serve_mesh(ctx, layout, rt)
    else:
        layout, cfg, ccfg = prepare(ctx, args)

        def serve_fn(rt: Runtime) -> None:
            serve(rt, layout, args)

    # The symmetric group: the TP group (tp2) or the mesh (pp1). Compile settings, resolved
    # backends and compile health must match inside it.
    group, ranks = layout.group("tp"), layout.ranks("tp")
    handshake("compile", compile_payload(ccfg), group=group, ranks=ranks, device=ctx.device)
    rt = Runtime(ctx, layout, cfg, ccfg)
    handshake("effective_backend", rt.effective_backend(), group=group, ranks=ranks, device=ctx.device)
    probe = CompileProbe(rt.gen.region)
    gate = WarmupGate(rt, probe, ranks)
    rt.after_chunk = gate
    dump = Path(args.dump_dir) / f"rank{ctx.rank}" if args.dump_dir else None
    with depyf_dump(dump):
        serve_fn(rt)
    final = probe.snapshot()
    steady = final["recompile_reasons"][len(gate.warmup["recompile_reasons"]):]
    return {
        "scenario": args.scenario,
        "rank": ctx.rank,
        "role": "mesh",
        "effective_backend": rt.effective_backend(),
        "warmup": symmetric_view(gate.warmup),
        "final": final,
        "steady_recompiles": len(steady),
        "steady_recompile_reasons": steady,
        "run": {"generator_calls": rt.gen.num_calls, **rt.timers},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--out", required=True, help="directory for probe-rank{r}.json")
    parser.add_argument("--dump-dir", default=None, help="depyf dumps per rank")
    add_stream_args(parser)
    args = parser.parse_args(argv)

    def write_probe(report: dict[str, Any]) -> None:
        write_json(Path(args.out) / f"probe-rank{report['rank']}.json", report)

    return rank_main(args, lambda ctx: run(ctx, args), write_probe)


if __name__ == "__main__":
    sys.exit(main())
