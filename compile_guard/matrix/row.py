"""One row of the operator matrix, as a type: what a row breaks (`Row`) and what a good failure looks like
(`Expect`), the constants the rows share and the helpers that build their hooks and expectations. The rows
themselves are compile_guard.matrix.rows.ROWS.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from engine.errors import (
    CompileAsymmetry,
    CompileDivergence,
    ParityMismatch,
    PeerLost,
    WatchdogExpired,
)

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
BUCKETING = "torch._inductor.config.bucket_all_reduces_fx"  # 2.13, 2.14.1: present; 2.6.0: absent (n/a there)
NO_INDUCTOR_CACHES = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
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


def hook(name: str, rank: int = 0, chunk: int = FAULT_CHUNK) -> dict[str, str]:
    return {
        "COMPILE_GUARD_TEST_FAULT": name,
        "COMPILE_GUARD_TEST_FAULT_RANK": str(rank),
        "COMPILE_GUARD_TEST_FAULT_CHUNK": str(chunk),
    }


def preflight(stage: str, key_path: str) -> Expect:
    return Expect(
        kind=CONTINUES,
        detector=0,
        event="preflight_rejected",
        fields={"stage": stage, "key_path": key_path, "chunk_index": FAULT_CHUNK},
    )


def all_exit(code: int, *, detector: int, event: str, **fields: object) -> Expect:
    return Expect(kind=ALL_EXIT, detector=detector, event=event, fields=fields, exit_codes={0: (code,), 1: (code,)})


NU = "quality against the baseline"
QUALITY_TARGET = "docs.examples.quality_block:block"
QUALITY = "TP=2 MLP block (nn.Module, functional all-reduce, replicated output), gloo, CPU, inductor"
QUALITY_SPEC: dict[str, Any] = {"compile": "inductor", "quality": {"compile_time": "cold"}}


def lowering(name: str, rank: int = -1, **more: str) -> dict[str, str]:
    return {"COMPILE_GUARD_TEST_LOWERING": name, "COMPILE_GUARD_TEST_LOWERING_RANK": str(rank), **more}


# NU-03's slower pass, per graph: ~4x the quality example's own cold compile measured alone (3-5 s CPU), so x4-5,
# above what a run can catch with the default compile noise (20 %: a growth past x2.4 is significant): the row
# tests that a slower compile is caught and named; how small a slowdown is caught is bench_quality.py's curve
NU03_SLOW_S = "16"


def diverged(kind: str, *, detector: int) -> Expect:
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


PARITY = ParityMismatch.exit_code
ASYMMETRY = CompileAsymmetry.exit_code  # compile_guard.quality.parity.OutputDrift's: cross-rank drift is exit 1
PEER_GONE = (
    PeerLost.exit_code,
    WatchdogExpired.exit_code,
)  # gloo sees a dead peer first; the watchdog a frozen one
