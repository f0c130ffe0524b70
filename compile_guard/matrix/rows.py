"""The operator matrix as data: one Row per check of operator-test-matrix.md.

A row says how to break the engine (parity-checked COMPILE_GUARD_TEST_* hooks, or per-rank
env for the rows that *are* a per-rank difference) and what a good failure looks like: the
exit code of every rank, the event that proves which mechanism caught it, and on which rank.
The runner (compile_guard.matrix.runner) and pytest both iterate over ROWS.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from engine.errors import (
    AdHocCollective,
    CollectiveMismatch,
    CompileAsymmetry,
    CompileDivergence,
    DigestMismatch,
    FingerprintMismatch,
    ParityMismatch,
    PeerLost,
    PlanRejected,
    Stalled,
    TerminatedByPeer,
    WatchdogExpired,
    WrongGroup,
)
from engine.runspec import PP0Spec

CONTINUES = "job_continues"  # the fault is rejected and the job finishes every other chunk
CONTINUES_CHECK = "check_completes"  # the check's ranks all finish; the verdict is the baseline diff
ALL_EXIT = "all_exit"  # every rank exits, with the codes in Expect.exit_codes

RUNTIME, PP0, PP1 = "tp", "pp0", "pp1"  # an engine topology, run by compile_guard.ranks.serve
CHECK = "check"  # the check's rank program (compile_guard.ranks.check) on a scenario
# what a check row is judged against: the committed baseline, or a healthy baseline this run writes first on this
# very machine (timings are judged against a baseline of the same machine only: the NU rows)
COMMITTED, THIS_RUN = "committed", "this run"
PP1_TOPOLOGY = "PP1: rank0 out of the mesh + mesh of 2 (TP=2, leader rank1), gloo, CPU, eager"
CHUNKS = 4  # chunks per row run (after warmup)
FAULT_CHUNK = 1  # hooks fire at this chunk_index
WATCHDOG_S = 2.0  # OM-13 rows: a short window makes the watchdog, not the deadline, end them
DIVERGE_BUDGET_S = 5.0  # CD rows: from the end of the divergent compile to every rank stopped
STALL_BUDGET_S = 3.0 + 2.0 + 1.0  # ST rows: the stall window, the report's answer wait, the exits
DTENSOR = "TP=2 DTensor MLP (parallelize_module), gloo, CPU, aot_eager"
# CD-09-host: rank 1's own inductor cache (aot_eager compiles nothing into it); per user, under the system temp dir
HOST_CACHE_DIR = os.path.join(tempfile.gettempdir(), f"compile_guard_cd09_{getpass.getuser()}")
PARALLEL = "TP=2 GPT-J-style parallel block (functional collectives), gloo, CPU, inductor"
_BUCKETING = "torch._inductor.config.bucket_all_reduces_fx"  # 2.13, 2.14.1: present; 2.6.0: absent (n/a there)
_NO_INDUCTOR_CACHES = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
MEGATRON = "TP=2 Megatron-style column/row-parallel layers (functional collectives), gloo, CPU, aot_eager"


@dataclass(frozen=True, kw_only=True)
class Expect:
    kind: str  # CONTINUES or ALL_EXIT
    detector: int  # the rank whose log must hold `event`
    event: str  # CG_EVENT proving the right mechanism caught the fault
    fields: dict[str, object] = field(default_factory=dict)  # subset the event must match
    exit_codes: dict[int, tuple[int | str, ...]] = field(default_factory=dict)  # rank -> allowed rc / signal
    ttf_budget_s: float | None = 2.0  # figure to reach (reported, not asserted); None: no failure to time
    baseline: str | None = None  # check rows: the verdict against the stored baseline ("pass"/"regression")
    sites: tuple[str, ...] = ()  # check rows: break sites the regression report must name
    since: str | None = None  # time-to-fail starts at the last such event before detection, not the injection
    quality: tuple[str, ...] = ()  # check rows: the quality rows that must regress (and no other row)
    # the proof that the fault reached the code, checked before the verdict (compile_guard.matrix.runner.APPLIED):
    # a row whose fault did not apply fails as "fault not applied", whatever its verdict
    applied: str = ""


@dataclass(frozen=True, kw_only=True)
class Row:
    id: str  # matrix ID, with a suffix for variants
    surface: str
    fm: str  # failure-mode label
    fault: str  # what is injected, in words
    expect: Expect
    env: dict[str, str] = field(default_factory=dict)  # every rank
    rank_env: dict[int, dict[str, str]] = field(default_factory=dict)  # per-rank differences
    spec: dict[str, Any] = field(default_factory=dict)  # RunSpec fields beyond the rows' defaults
    nprocs: int = 2
    deadline_s: float = 60.0
    topology: str = "TP=2, gloo, CPU, eager"
    program: str = RUNTIME  # an engine topology (tp, pp0, pp1), or CHECK: the check's rank program on a scenario
    scenario: str = "tp2-aot"  # CHECK rows: the scenario (aot_eager: dynamo's counts, no kernel compile)
    target: str | None = None  # CHECK rows: a user target ("pkg.module:factory") instead of the scenario's engine
    # torch APIs the row's fault needs ("torch.compiler.save_cache_artifacts"): on a torch without one the row is
    # not run and says so (n/a), never failed
    requires: tuple[str, ...] = ()
    against: str = COMMITTED  # CHECK rows with a baseline verdict: the committed baseline, or THIS_RUN's healthy one


def _hook(name: str, rank: int = 0, chunk: int = FAULT_CHUNK) -> dict[str, str]:
    return {
        "COMPILE_GUARD_TEST_FAULT": name,
        "COMPILE_GUARD_TEST_FAULT_RANK": str(rank),
        "COMPILE_GUARD_TEST_FAULT_CHUNK": str(chunk),
    }


def _preflight(stage: str, key_path: str) -> Expect:
    return Expect(
        kind=CONTINUES,
        detector=0,
        event="preflight_rejected",
        fields={"stage": stage, "key_path": key_path, "chunk_index": FAULT_CHUNK},
    )


def _all(code: int, *, detector: int, event: str, **fields: object) -> Expect:
    return Expect(kind=ALL_EXIT, detector=detector, event=event, fields=fields, exit_codes={0: (code,), 1: (code,)})


_NU = "quality against the baseline"
QUALITY_TARGET = "docs.examples.quality_block:block"
_QUALITY = "TP=2 MLP block (nn.Module, functional all-reduce, replicated output), gloo, CPU, inductor"
_QUALITY_SPEC: dict[str, Any] = {"compile": "inductor", "quality": {"compile_time": "cold"}}


def _lowering(name: str, rank: int = -1, **more: str) -> dict[str, str]:
    return {"COMPILE_GUARD_TEST_LOWERING": name, "COMPILE_GUARD_TEST_LOWERING_RANK": str(rank), **more}


# NU-03's slower pass, per graph: ~4x the quality example's own cold compile measured alone (3-5 s CPU), so x4-5,
# above what a run can catch with the default compile noise (20 %: a growth past x2.4 is significant): the row
# tests that a slower compile is caught and named; how small a slowdown is caught is bench_quality.py's curve
NU03_SLOW_S = "16"


def _diverged(kind: str, *, detector: int) -> Expect:
    """Every rank stopped by the compile agreement; the detector's compile_divergence event of that kind."""
    fields: dict[str, object] = {"kind": kind}
    return Expect(
        kind=ALL_EXIT,
        detector=detector,
        event="compile_divergence",
        fields=fields,
        exit_codes={0: (CompileDivergence.exit_code,), 1: (CompileDivergence.exit_code,)},
        ttf_budget_s=DIVERGE_BUDGET_S,
        since="graph_compiled",
    )


_PARITY = ParityMismatch.exit_code
_ASYMMETRY = CompileAsymmetry.exit_code  # compile_guard.quality.parity.OutputDrift's: cross-rank drift is exit 1
_PEER_GONE = (PeerLost.exit_code, WatchdogExpired.exit_code)  # gloo sees a dead peer first; the watchdog a frozen one
_OM13_ENV = {"COMPILE_GUARD_WATCHDOG_S": str(WATCHDOG_S)}

# the matrix as a table: one row per entry, read down its columns: the formatter leaves it as written
# fmt: off
ROWS: tuple[Row, ...] = (
    Row(id="OM-01", surface="TP framing", fm="FM-04", fault="meta holds a lambda",
        env=_hook("meta_unserialisable"), expect=_preflight("meta_encode", "extras.on_done")),
    Row(id="OM-02", surface="TP framing", fm="FM-07", fault="latents sent as torch.bool",
        env=_hook("bool_tensor"), expect=_preflight("dtype", "tensors.latents[0]")),
    Row(id="OM-03", surface="TP v1.1 plan", fm="FM-02", fault="num_denoise_steps != len(denoising_step_list)",
        env=_hook("inconsistent_plan"), expect=_preflight("schema", "plan.num_denoise_steps")),
    Row(id="OM-03-worker", surface="TP v1.1 plan", fm="FM-02",
        fault="rank 1's received plan miscounts generator calls (only the receiver sees it)",
        env=_hook("corrupt_plan_on_receive", rank=1),
        expect=_all(PlanRejected.exit_code, detector=1, event="plan_rejected", chunk_index=FAULT_CHUNK)),
    Row(id="OM-04", surface="TP/PP plan parity", fm="FM-01", fault="PP enabled on rank 1 only",
        rank_env={1: {"COMPILE_GUARD_PP_ENABLED": "1"}},
        expect=_all(_PARITY, detector=0, event="parity_mismatch", keys=["env.COMPILE_GUARD_PP_ENABLED"])),
    Row(id="OM-04-plan", surface="TP/PP plan parity", fm="FM-01", fault="tp_plan differs on rank 1",
        rank_env={1: {"COMPILE_GUARD_TP_PLAN": "v0_full_pipeline"}},
        expect=_all(_PARITY, detector=0, event="parity_mismatch", keys=["env.COMPILE_GUARD_TP_PLAN"])),
    Row(id="OM-05", surface="conditional collectives", fm="FM-03",
        fault="debug barrier gated by a flag set on rank 1 only",
        rank_env={1: {"COMPILE_GUARD_DEBUG_SYNC": "1"}},
        expect=_all(_PARITY, detector=1, event="parity_mismatch", keys=["env.COMPILE_GUARD_DEBUG_SYNC"])),
    Row(id="OM-06", surface="ad-hoc broadcasts", fm="FM-08", fault="rank0 broadcasts a tensor outside the manifest",
        env=_hook("adhoc_broadcast"),
        expect=Expect(kind=ALL_EXIT, detector=0, event="adhoc_blocked", fields={"key": "shape_probe"},
                      exit_codes={0: (AdHocCollective.exit_code,), 1: _PEER_GONE})),
    Row(id="OM-10", surface="KV recompute override", fm="FM-06",
        fault="do_kv_recompute=True without context_frames_override",
        env=_hook("recompute_without_override"), expect=_preflight("schema", "tensors.context_frames_override")),
    Row(id="OM-11", surface="drift tripwire", fm="Franken-model", fault="rank 0 perturbs its copy of latents",
        env=_hook("perturb_input"),
        expect=_all(DigestMismatch.exit_code, detector=1, event="digest_mismatch", tensors=["latents"])),
    Row(id="OM-12", surface="weight divergence tripwire", fm="Franken-model",
        fault="rank 1 mutates one weight of its shard",
        env={**_hook("mutate_weight", rank=1), "COMPILE_GUARD_FINGERPRINT_EVERY": "4"},
        expect=_all(FingerprintMismatch.exit_code, detector=0, event="fingerprint_mismatch", reason="periodic")),
    Row(id="OM-13-loop", surface="orphan shutdown", fm="hang hygiene", fault="rank0 SIGKILLed after a header",
        env={**_hook("kill_rank0_loop"), **_OM13_ENV},
        expect=Expect(kind=ALL_EXIT, detector=1, event="fatal", exit_codes={0: ("SIGKILL",), 1: _PEER_GONE},
                      ttf_budget_s=WATCHDOG_S + 1)),
    Row(id="OM-13-idle", surface="orphan shutdown", fm="hang hygiene", fault="rank0 SIGKILLed while idle",
        env={**_hook("kill_rank0_idle"), **_OM13_ENV}, spec={"idle_after": FAULT_CHUNK, "idle_s": 30.0},
        expect=Expect(kind=ALL_EXIT, detector=1, event="fatal", exit_codes={0: ("SIGKILL",), 1: _PEER_GONE},
                      ttf_budget_s=WATCHDOG_S + 1)),
    Row(id="OM-13-frozen", surface="orphan shutdown", fm="hang hygiene",
        fault="rank0 SIGSTOPped while idle (alive, silent)",
        env={**_hook("freeze_rank0_idle"), **_OM13_ENV}, spec={"idle_after": FAULT_CHUNK, "idle_s": 30.0},
        expect=Expect(kind=ALL_EXIT, detector=1, event="watchdog_expired",
                      exit_codes={0: ("SIGKILL",), 1: (WatchdogExpired.exit_code,)}, ttf_budget_s=WATCHDOG_S + 1)),
    Row(id="OM-09", surface="KV lifecycle (epoch fence)", fm="FM-10",
        fault="stage 1 delays chunk 1's result; rank0 hard-cuts at chunk 2 before it arrives", program=PP0,
        topology="PP0 (rank0 stage 0, rank1 stage 1), D_in = D_out = 2, gloo, CPU",
        env=_hook("delay_result", rank=1), spec={"pp0": PP0Spec(d_in=2, d_out=2), "hard_cut_at": FAULT_CHUNK + 1},
        expect=Expect(kind=CONTINUES, detector=0, event="stale_result_dropped",
                      fields={"chunk_index": FAULT_CHUNK, "where": "in flight"})),
    Row(id="OM-07", surface="PP leader safety", fm="PP-FM-LEADER-THROW",
        fault="the leader's received envelope is corrupt (its plan miscounts calls)", program=PP1, nprocs=3,
        topology=PP1_TOPOLOGY, env=_hook("corrupt_plan_on_receive", rank=1),
        expect=Expect(kind=ALL_EXIT, detector=1, event="terminal_broadcast",
                      fields={"reason": "PLAN_REJECTED", "group": "mesh_pg", "chunk_index": FAULT_CHUNK},
                      exit_codes={0: (TerminatedByPeer.exit_code,), 1: (PlanRejected.exit_code,),
                                  2: (TerminatedByPeer.exit_code,)})),
    Row(id="OM-08", surface="wrong group collective", fm="PP-FM-WRONG-GROUP",
        fault="the mesh's pre-generator gather is handed world_pg instead of mesh_pg (every mesh rank)",
        program=PP1, nprocs=3, topology=PP1_TOPOLOGY, env=_hook("wrong_group", rank=-1),
        expect=Expect(kind=ALL_EXIT, detector=1, event="wrong_group",
                      fields={"group_used": "world_pg", "expected_group": "mesh_pg", "chunk_index": FAULT_CHUNK},
                      exit_codes={0: (TerminatedByPeer.exit_code,), 1: (WrongGroup.exit_code,),
                                  2: (WrongGroup.exit_code,)})),
    Row(id="OM-02-pp1", surface="PP framing", fm="FM-07", fault="latents sent as torch.bool to the leader",
        program=PP1, nprocs=3, topology=PP1_TOPOLOGY, env=_hook("bool_tensor"),
        expect=_preflight("dtype", "tensors.latents[0]")),
    Row(id="OM-04-pp1", surface="TP/PP plan parity", fm="FM-01", fault="PP enabled on rank 2 only",
        program=PP1, nprocs=3, topology=PP1_TOPOLOGY, rank_env={2: {"COMPILE_GUARD_PP_ENABLED": "1"}},
        expect=Expect(kind=ALL_EXIT, detector=0, event="parity_mismatch", fields={"ranks": [0, 1, 2]},
                      exit_codes={0: (_PARITY,), 1: (_PARITY,), 2: (_PARITY,)})),
    Row(id="FM-02-pp1", surface="mesh call-count agreement", fm="FM-02",
        fault="mesh rank 2 plans a different generator-call count", program=PP1, nprocs=3, topology=PP1_TOPOLOGY,
        env=_hook("corrupt_plan_on_receive", rank=2),
        expect=Expect(kind=ALL_EXIT, detector=2, event="plan_rejected", fields={"chunk_index": FAULT_CHUNK},
                      exit_codes={0: (TerminatedByPeer.exit_code,), 1: (PlanRejected.exit_code,),
                                  2: (PlanRejected.exit_code,)})),
    # Compile + distributed regression rows: the check's rank program on scenario tp2-aot.
    Row(id="C-01", surface="compile parity", fm="FM-01", fault="compile disabled on rank 1 (TORCH_COMPILE_DISABLE=1)",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager", rank_env={1: {"TORCH_COMPILE_DISABLE": "1"}},
        expect=_all(_PARITY, detector=0, event="parity_mismatch", handshake="compile")),
    Row(id="C-02", surface="graph-break gate", fm="compile cliff", fault="none: mode C's invariant (0 breaks, 1 graph)",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="progress",
                      fields={"phase": "warmup_done", "unique_graphs": 1, "graph_breaks": 0},
                      ttf_budget_s=None, baseline="pass")),
    Row(id="C-02-disable", surface="graph-break gate", fm="compile cliff",
        fault="collectives wrapped in torch.compiler.disable() on every rank", program=CHECK,
        topology="TP=2, gloo, CPU, aot_eager", env={"COMPILE_GUARD_COLLECTIVE_PATH": "disabled_inplace"},
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="progress", fields={"phase": "warmup_done"},
                      ttf_budget_s=None, baseline="regression", sites=("engine/collectives.py",))),
    Row(id="C-03", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="debug print in the compiled forward on rank 1 only", program=CHECK,
        topology="TP=2, gloo, CPU, aot_eager", env=_hook("rank_graph_break", rank=1, chunk=-1),
        # The compile agreement compares the warmup graph before it runs; the statement names the break site.
        # The streams line up (rank 1's all-reduces follow in its next graph): an asymmetry, which check stops.
        expect=_diverged("asymmetry", detector=0)),
    Row(id="C-03-dtensor", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="debug print in the DTensor MLP's forward on rank 1 only", program=CHECK, topology=DTENSOR,
        target="docs.examples.tp_divergence:graph_break", expect=_diverged("asymmetry", detector=0)),
    # Rank-only breaks that put a rank on another path: every rank holds a graph no peer compiled at that call (a
    # wait-for cycle, protocol rule 7), proven the moment the second hold begins; the break named by its site.
    Row(id="C-03-disable", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="rank 1 alone wraps its all-reduces in torch.compiler.disable(): a break in the blocks' loop, dynamo"
              " skips its forward and compiles its callees as frames of their own", program=CHECK,
        topology="TP=2, gloo, CPU, aot_eager", env=_hook("rank_disabled_collective", rank=1, chunk=-1),
        expect=_diverged("cycle", detector=0)),
    Row(id="C-03-nested", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="a warnings.warn on rank 0 only, inside a nested Megatron-style row-parallel layer", program=CHECK,
        topology=MEGATRON, target="docs.examples.megatron_tp:warn_rank0", expect=_diverged("asymmetry", detector=1)),
    Row(id="C-03-both", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="rank 0 warns in the first row-parallel layer, rank 1 in the second: each breaks elsewhere",
        program=CHECK, topology=MEGATRON, target="docs.examples.megatron_tp:break_both",
        expect=_diverged("mismatch", detector=0)),
    Row(id="C-03-skip", surface="rank-symmetric compile health", fm="asymmetric compile",
        fault="rank 1 disables its all-reduce inside a loop over Megatron-style layers: its block's frame skipped",
        program=CHECK, topology=MEGATRON, target="docs.examples.megatron_tp:skip_rank1",
        expect=_diverged("cycle", detector=0)),
    # Every setting of torch's config modules is compared, not a hand-picked list: a rank-only setting is named at
    # the compile handshake; one that differs by host (threads, paths) is no difference.
    Row(id="CD-09", surface="compile parity", fm="setting skew",
        fault="rank 1 alone runs with TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 (a setting outside the old 17-key list)",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        rank_env={1: {"TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE": "1"}},
        expect=_all(_PARITY, detector=0, event="parity_mismatch", handshake="compile",
                    keys=["inductor.max_autotune_pointwise"])),
    Row(id="CD-09-gemm", surface="compile parity", fm="setting skew",
        fault="rank 1 alone runs with TORCHINDUCTOR_CPP_GEMM_CACHE_BLOCKING=4,1,10 (a key that names a cache and"
              " changes a GEMM's code)",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        rank_env={1: {"TORCHINDUCTOR_CPP_GEMM_CACHE_BLOCKING": "4,1,10"}},
        expect=_all(_PARITY, detector=0, event="parity_mismatch", handshake="compile",
                    keys=["inductor.cpp.gemm_cache_blocking"])),
    Row(id="CD-09-host", surface="compile parity", fm="setting skew (healthy)",
        fault="none: rank 1 alone has one compile thread, another inductor cache directory and AOTAutograd's cache"
              " off (host settings and a cache switch)",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        rank_env={1: {"TORCHINDUCTOR_COMPILE_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": HOST_CACHE_DIR,
                      "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}},
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="progress", fields={"phase": "warmup_done"},
                      ttf_budget_s=None, baseline="pass")),
    Row(id="C-04", surface="effective backend parity", fm="FM-01", fault="attn_impl=auto resolves to math on rank 1",
        program=CHECK, topology="TP=2, gloo, CPU, aot_eager", env=_hook("attn_auto_skew", rank=1, chunk=-1),
        expect=_all(_PARITY, detector=1, event="parity_mismatch", handshake="effective_backend",
                    keys=["attn_impl"])),
)

# Compile divergence: one rank compiles what its peers do not. The compile agreement (compile_guard.agreement)
# stops every rank before the divergent graph's first run; each fault on our engine and on a DTensor target.
_DIV, _AOT = "compile divergence", "TP=2, gloo, CPU, aot_eager"
ROWS += (
    Row(id="CD-01", surface=_DIV, fm="rank-only recompile (shape)", program=CHECK, topology=_AOT,
        fault="rank 1's latents get one more frame after the input agreement (chunk 1)",
        env=_hook("rank_frames", rank=1), expect=_diverged("other_graph", detector=1)),
    Row(id="CD-01-dtensor", surface=_DIV, fm="rank-only recompile (shape)", program=CHECK, topology=DTENSOR,
        fault="rank 1's second input is longer (input agreement off)", target="docs.examples.tp_divergence:shape",
        spec={"agree_inputs": False}, expect=_diverged("other_graph", detector=1)),
    Row(id="CD-02", surface=_DIV, fm="rank-only recompile (guard)", program=CHECK, topology=_AOT,
        fault="rank 1 changes a LayerNorm's eps at chunk 1 (a guarded Python float)",
        env=_hook("rank_eps", rank=1), expect=_diverged("other_graph", detector=1)),
    Row(id="CD-02-dtensor", surface=_DIV, fm="rank-only recompile (guard)", program=CHECK, topology=DTENSOR,
        fault="rank 1's MLP.scale changes at the first steady step", target="docs.examples.tp_divergence:guarded_value",
        expect=_diverged("other_graph", detector=1)),
    Row(id="CD-03", surface=_DIV, fm="extra collective", program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        fault="a debug all-reduce in the compiled forward on rank 1", env=_hook("rank_debug_sync", rank=1, chunk=-1),
        expect=_diverged("mismatch", detector=0)),
    Row(id="CD-03-dtensor", surface=_DIV, fm="extra collective", program=CHECK, topology=DTENSOR,
        fault="a debug all-reduce in the DTensor MLP on rank 1", target="docs.examples.tp_divergence:extra_collective",
        expect=_diverged("mismatch", detector=0)),
    Row(id="CD-04", surface=_DIV, fm="collective shape", program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        fault="rank 1's warmup latents get one more frame: its all-reduces are longer",
        env=_hook("rank_frames", rank=1, chunk=-1), expect=_diverged("mismatch", detector=0)),
    Row(id="CD-04-dtensor", surface=_DIV, fm="collective shape", program=CHECK, topology=DTENSOR,
        fault="a rank-local padding before a reduction", target="docs.examples.tp_divergence:collective_shape",
        expect=_diverged("mismatch", detector=0)),
    Row(id="CD-05", surface=_DIV, fm="setting skew", program=CHECK, topology="TP=2, gloo, CPU, aot_eager",
        fault="every rank recompiles at chunk 1; rank 1 flipped dynamo's capture_scalar_outputs first",
        env=_hook("setting_skew", rank=-1), expect=_diverged("mismatch", detector=0)),
    Row(id="CD-05-dtensor", surface=_DIV, fm="setting skew", program=CHECK, topology=DTENSOR,
        fault="every rank recompiles at the first steady step; rank 1 flipped capture_scalar_outputs",
        target="docs.examples.tp_divergence:settings", expect=_diverged("mismatch", detector=0)),
    # Decided after dynamo's graph, by inductor (a GPT-J-style block: two independent row-parallel all-reduces of one
    # shape). A rank-only setting is named by the statement; a pass deciding by rank under one identity only by the
    # issued schedule (rule 9). Its rows compile with inductor's caches off: one uuid, two programs would poison them.
    Row(id="CD-07", surface=_DIV, fm="inductor pass on one rank", program=CHECK, topology=PARALLEL,
        fault="rank 1 alone turns on inductor's all-reduce bucketing (bucket_all_reduces_fx='all')",
        target="docs.examples.parallel_block:bucket_rank1", spec={"compile": "inductor"},
        requires=(_BUCKETING,), expect=_diverged("mismatch", detector=0)),
    Row(id="CD-07-every", surface=_DIV, fm="inductor pass on every rank (healthy)", program=CHECK, topology=PARALLEL,
        fault="none: bucketing on every rank (one bucketed all-reduce issued everywhere)",
        target="docs.examples.parallel_block:bucket_every_rank", spec={"compile": "inductor"}, requires=(_BUCKETING,),
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="graph_compiled", fields={}, ttf_budget_s=None)),
    Row(id="CD-08", surface=_DIV, fm="rank-dependent pass decision", program=CHECK, topology=PARALLEL,
        fault="one custom post-grad pass (one uuid) swaps the two all-reduces on rank 1 only: same graph, same"
              " settings, the compiled code issues them in another order", env=_NO_INDUCTOR_CACHES,
        target="docs.examples.parallel_block:pass_rank1", spec={"compile": "inductor"},
        expect=_diverged("issued", detector=0)),
    Row(id="CD-08-every", surface=_DIV, fm="rank-dependent pass decision (healthy)", program=CHECK, topology=PARALLEL,
        fault="none: the same pass decides alike on every rank", env=_NO_INDUCTOR_CACHES,
        target="docs.examples.parallel_block:pass_every_rank", spec={"compile": "inductor"},
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="graph_compiled", fields={}, ttf_budget_s=None)),
    # What an upgrade can take without changing a graph (issue 25): inductor patched alone (on every rank unless
    # said), the graphs, settings and issued schedules unchanged, judged against a healthy baseline of the quality
    # example written first in the same matrix run on the same machine (a committed one holds another machine's
    # timings); each patched rank compiles in an empty inductor cache of its own
    # (compile_guard.matrix.lowering_faults), and each row first proves its fault reached the generated code.
    Row(id="NU-01", surface=_NU, fm="numerics change (every rank)", program=CHECK, topology=_QUALITY,
        fault="inductor lowers gelu(approximate='tanh') as the exact erf gelu", target=QUALITY_TARGET,
        env=_lowering("gelu_erf"), spec=_QUALITY_SPEC, deadline_s=120.0, against=THIS_RUN,
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="quality_measured", ttf_budget_s=None,
                      baseline="regression", quality=("accuracy",), applied="erf")),
    Row(id="NU-02", surface=_NU, fm="lost fusion (speed)", program=CHECK, topology=_QUALITY,
        fault="inductor realizes every op and fuses none: each op its own kernel", target=QUALITY_TARGET,
        env=_lowering("no_fusion"), spec=_QUALITY_SPEC, deadline_s=120.0, against=THIS_RUN,
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="quality_measured", ttf_budget_s=None,
                      baseline="regression", quality=("speedup (eager/compiled)",), applied="unfused")),
    Row(id="NU-03", surface=_NU, fm="slower compile", program=CHECK, topology=_QUALITY,
        fault="a post-grad pass burns 16 s of CPU per graph (COMPILE_GUARD_TEST_SLOW_COMPILE_S), cold compile",
        target=QUALITY_TARGET,
        env=_lowering("slow_compile", COMPILE_GUARD_TEST_SLOW_COMPILE_S=NU03_SLOW_S), spec=_QUALITY_SPEC,
        deadline_s=240.0, against=THIS_RUN,
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="quality_measured", ttf_budget_s=None,
                      baseline="regression", quality=("compile time (cold)",), applied="slow_pass")),
    Row(id="NU-04", surface=_NU, fm="numerics change on one rank (silent drift)", program=CHECK, topology=_QUALITY,
        fault="rank 1's inductor lowers sigmoid as 0.5 * (1 + tanh(x / 2)): after the all-reduce, other bits",
        target=QUALITY_TARGET, env=_lowering("sigmoid_tanh", rank=1), spec=_QUALITY_SPEC, deadline_s=120.0,
        expect=Expect(kind=ALL_EXIT, detector=0, event="fatal", fields={"error": "OutputDrift"},
                      exit_codes={0: (_ASYMMETRY,), 1: (_ASYMMETRY,)}, ttf_budget_s=None, applied="rank1_math")),
    Row(id="NU-00", surface=_NU, fm="healthy (quality)", program=CHECK, topology=_QUALITY,
        fault="none: the same build as the baseline, compiled cold", target=QUALITY_TARGET, spec=_QUALITY_SPEC,
        deadline_s=120.0, against=THIS_RUN, expect=Expect(kind=CONTINUES_CHECK, detector=0, event="quality_measured",
                                                          ttf_budget_s=None, baseline="pass")),
    # Not a divergence, and the agreement must say so: loaded artifacts are keyed on graph and config.
    Row(id="CD-06-dtensor", surface=_DIV, fm="artifacts on one rank", program=CHECK,
        topology="TP=2 DTensor MLP (parallelize_module), gloo, CPU, inductor",
        fault="rank 0 loads saved compile artifacts (a cache hit), rank 1 compiles fresh",
        target="docs.examples.tp_divergence:cache_artifacts", spec={"compile": "inductor"},
        requires=("torch.compiler.save_cache_artifacts", "torch.compiler.load_cache_artifacts"),  # torch >= 2.7
        expect=Expect(kind=CONTINUES_CHECK, detector=0, event="graph_compiled", fields={"cache": "hit"},
                      ttf_budget_s=None)),
)

# A stall is not a divergence: no proof, every rank's position reported, its own exit code.
ROWS += (
    Row(id="ST-01-dtensor", surface="agreement stall", fm="stalled peer", program=CHECK, topology=DTENSOR,
        fault="rank 0 blocks for good in its own code before a recompile every rank does (stall window 3 s)",
        target="docs.examples.tp_divergence:stuck_peer", spec={"agree_inputs": False, "stall_s": 3.0},
        expect=Expect(kind=ALL_EXIT, detector=1, event="stall", fields={"kind": "stall"},
                      exit_codes={0: (Stalled.exit_code,), 1: (Stalled.exit_code,)}, ttf_budget_s=STALL_BUDGET_S,
                      since="graph_compiled")),
)

# The eager-collective ledger (opt-in: check --eager-ledger): the same debug all-reduce, reached in eager code.
ROWS += (
    Row(id="EL-01", surface="eager collective ledger", fm="extra collective (eager)", program=CHECK, topology=_AOT,
        fault="a debug all-reduce on rank 1 in the eager cross-attention fill (without the ledger: a gloo abort)",
        env=_hook("rank_debug_sync_eager", rank=1, chunk=-1), spec={"eager_ledger": True},
        expect=Expect(kind=ALL_EXIT, detector=0, event="collective_mismatch", fields={"kind": "mismatch"},
                      exit_codes={0: (CollectiveMismatch.exit_code,), 1: (CollectiveMismatch.exit_code,)})),
)
# fmt: on

ROWS_BY_ID = {row.id: row for row in ROWS}
assert len(ROWS_BY_ID) == len(ROWS), "duplicate row id"
