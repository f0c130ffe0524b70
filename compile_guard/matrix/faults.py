"""The matrix's fault injector: test-only faults, switched by parity-checked COMPILE_GUARD_TEST_* knobs.

Every rank reads the same (fault, rank, chunk) triple — the env parity handshake enforces
it — and hands the engine a `FaultInjector` as its hooks. At the fault's injection point
(engine.hooks.Point), on the fault rank (every rank when it is -1) and at the fault chunk,
the injector logs an `inject` event with a CLOCK_MONOTONIC time (the matrix measures
time-to-fail from it), then does the fault to what the site holds.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

import torch

from compile_guard import compat
from engine import events, knobs
from engine.collectives import CollectivePath, TPCollectives
from engine.control.envelope import TensorSpec
from engine.errors import ConfigError
from engine.hooks import Hooks, Point, Site

# OM-09's injected delay. The order it tests does not rest on it: with D_in = 2, rank 0's scheduler
# (engine.topology.pp0, Stage0.run) sends chunk 2 — the hard cut — right after decoding chunk 0 frees a slot,
# before it next waits for a result, so chunk 1's result is read after the cut however fast it comes. The delay
# makes the result late in time as well, as a slow stage 1 would, and shows in the row's time-to-fail (~300 ms).
DELAY_RESULT_S = 0.3


@dataclass(frozen=True, kw_only=True)
class Fault:
    point: Point  # where the engine lets it happen
    doc: str  # the matrix row it serves and what it does
    act: Callable[[Site], None]  # the fault itself, on what the site holds


def _recompute_without_override(site: Site) -> None:
    plan = site["plan"]
    plan["do_kv_recompute"], plan["expected_generator_calls"] = True, plan["num_denoise_steps"] + 1
    site["tensors"].pop("context_frames_override", None)


def _mutate_weight(site: Site) -> None:
    with torch.no_grad():
        site["model"].blocks[0].self_q.weight.view(-1)[0] += 1e-3


def _adhoc_broadcast(site: Site) -> None:
    probe = torch.zeros(2, dtype=torch.int64, device=site["sender"].device)  # "tell workers a shape"
    spec = TensorSpec(key="shape_probe", index=0, dtype="int64", shape=(2,))
    site["sender"].send_tensor(spec, probe, manifest=site["manifest"])


def _inconsistent_plan(site: Site) -> None:
    site["plan"]["num_denoise_steps"] += 1


def _miscount_received_plan(site: Site) -> None:
    site["plan"] = {**site["plan"], "expected_generator_calls": site["plan"].get("expected_generator_calls", 0) + 1}


def _skew_attention(site: Site) -> None:
    if site["requested"] == "auto":
        site["attn_impl"] = "math"


@dataclass(frozen=True, kw_only=True)
class _DebugSyncCollectives(TPCollectives):
    """A debug all-reduce of the activations' sum before each reduce ("are the ranks in step?"): in the
    compiled forward only (CD-03, about graphs), or also in eager code (EL-01: the cross-attention fill)."""

    compiled_only: bool = True

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled_only and not torch.compiler.is_compiling():
            return super().all_reduce_sum(x)
        in_step = super().all_reduce_sum(x.sum())
        return super().all_reduce_sum(x) + 0.0 * in_step


def _debug_sync_left_in(*, compiled_only: bool) -> Callable[[Site], None]:
    def act(site: Site) -> None:
        block = site["model"].blocks[0]
        block.comm = _DebugSyncCollectives(group=block.comm.group, path=block.comm.path, compiled_only=compiled_only)

    return act


def _disable_collectives(site: Site) -> None:
    for block in site["model"].blocks:  # a rank-only debug wrapper: torch.compiler.disable around the all-reduce
        block.comm = TPCollectives(group=block.comm.group, path=CollectivePath.DISABLED)


def _one_more_frame(site: Site) -> None:
    latents = site["tensors"]["latents"]
    site["tensors"]["latents"] = torch.cat([latents, latents[:, :1]], dim=1)


def _every_rank_recompiles_one_flips_a_setting(site: Site) -> None:
    site["model"].blocks[0].norm1.eps *= 2  # every rank: a legitimate recompile, on all ranks at once
    if site.rank == site["model"].tp - 1:  # the last rank of the group alone also flips a dynamo setting
        config = compat.dynamo_config()
        config.capture_scalar_outputs = not config.capture_scalar_outputs


def _signal_self(sig: signal.Signals) -> Callable[[Site], None]:
    return lambda _site: os.kill(os.getpid(), sig)


# the fault table: one fault per entry: the formatter leaves it as written
# fmt: off
FAULTS: dict[str, Fault] = {
    "meta_unserialisable": Fault(point=Point.REQUEST_BUILT, doc="OM-01: a lambda in the request's extras",
                                 act=lambda s: s["extras"].__setitem__("on_done", lambda: None)),
    "bool_tensor": Fault(point=Point.REQUEST_BUILT, doc="OM-02: latents sent as torch.bool",
                         act=lambda s: s["tensors"].__setitem__("latents", s["tensors"]["latents"] > 0)),
    "inconsistent_plan": Fault(point=Point.REQUEST_BUILT, doc="OM-03: num_denoise_steps != len(denoising_step_list)",
                               act=_inconsistent_plan),
    "recompute_without_override": Fault(point=Point.REQUEST_BUILT, act=_recompute_without_override,
                                        doc="OM-10: do_kv_recompute without context_frames_override"),
    "corrupt_plan_on_receive": Fault(point=Point.PLAN_RECEIVED,
                                     doc="OM-03/OM-07/FM-02: the fault rank's received plan miscounts calls",
                                     act=_miscount_received_plan),
    "adhoc_broadcast": Fault(point=Point.PAYLOAD_SENT, doc="OM-06: rank0 broadcasts a tensor outside the manifest",
                             act=_adhoc_broadcast),
    "perturb_input": Fault(point=Point.CHUNK_INPUTS, doc="OM-11: the fault rank perturbs its copy of the latents",
                           act=lambda s: s["tensors"]["latents"].add_(1e-3)),
    "mutate_weight": Fault(point=Point.CHUNK_INPUTS, doc="OM-12: the fault rank mutates a weight of its shard",
                           act=_mutate_weight),
    "kill_rank0_loop": Fault(point=Point.HEADER_SENT, doc="OM-13: rank0 SIGKILLs itself mid-chunk, after the header",
                             act=_signal_self(signal.SIGKILL)),
    "kill_rank0_idle": Fault(point=Point.IDLE_TICK, doc="OM-13: rank0 SIGKILLs itself while idle",
                             act=_signal_self(signal.SIGKILL)),
    "freeze_rank0_idle": Fault(point=Point.IDLE_TICK, doc="OM-13: rank0 SIGSTOPs itself while idle (the watchdog)",
                               act=_signal_self(signal.SIGSTOP)),
    "attn_auto_skew": Fault(point=Point.ATTENTION_RESOLVED, doc="C-04: attn_impl=auto resolves to math",
                            act=_skew_attention),
    "rank_graph_break": Fault(point=Point.MODEL_BUILT, doc="C-03: a debug print inside the compiled forward",
                              act=lambda s: setattr(s["model"], "debug_print", True)),
    "rank_frames": Fault(point=Point.PHASE_B, doc="CD-01: the fault rank's latents get one more frame after the"
                         " input agreement: it alone recompiles, its all-reduces are longer", act=_one_more_frame),
    "rank_eps": Fault(point=Point.PHASE_B, doc="CD-02: the fault rank changes a LayerNorm's eps (a guarded float)",
                      act=lambda s: setattr(s["model"].blocks[0].norm1, "eps", s["model"].blocks[0].norm1.eps * 2)),
    "rank_disabled_collective": Fault(point=Point.MODEL_BUILT, act=_disable_collectives,
                                      doc="C-03-disable: the all-reduces wrapped in torch.compiler.disable()"),
    "rank_debug_sync": Fault(point=Point.MODEL_BUILT, doc="CD-03: a debug all-reduce in the compiled forward",
                             act=_debug_sync_left_in(compiled_only=True)),
    "rank_debug_sync_eager": Fault(point=Point.MODEL_BUILT, doc="EL-01: the same debug all-reduce in eager code too",
                                   act=_debug_sync_left_in(compiled_only=False)),
    "setting_skew": Fault(point=Point.PHASE_B, act=_every_rank_recompiles_one_flips_a_setting,
                          doc="CD-05 (fault rank -1): every rank recompiles (a new eps), the last rank with"
                              " dynamo's capture_scalar_outputs flipped"),
    "delay_result": Fault(point=Point.RESULT_READY, doc="OM-09: stage 1 holds back one chunk's result (PP0)",
                          act=lambda _s: time.sleep(DELAY_RESULT_S)),
    "wrong_group": Fault(point=Point.AGREEMENT_GROUP, doc="OM-08: the pre-generator gather is handed world_pg",
                         act=lambda s: s.__setitem__("group", s["layout"].group("world"))),
}
# fmt: on


class FaultInjector(Hooks):
    def __init__(self, *, name: str, rank: int, chunk: int) -> None:
        if name and name not in FAULTS:
            raise ConfigError(f"COMPILE_GUARD_TEST_FAULT={name!r} is unknown; pick one of {sorted(FAULTS)}")
        self.name, self.rank, self.chunk = name, rank, chunk
        self.fault = FAULTS.get(name)

    @classmethod
    def from_knobs(cls) -> FaultInjector:
        return cls(
            name=knobs.read("COMPILE_GUARD_TEST_FAULT"),
            rank=knobs.read("COMPILE_GUARD_TEST_FAULT_RANK"),
            chunk=knobs.read("COMPILE_GUARD_TEST_FAULT_CHUNK"),
        )

    @classmethod
    def requested(cls) -> FaultInjector | None:
        """The injector when the run asks for a fault (COMPILE_GUARD_TEST_FAULT set), else None: a production
        check wires no test hook into the engine."""
        return cls.from_knobs() if knobs.read("COMPILE_GUARD_TEST_FAULT") else None

    def at(self, point: Point, site: Site) -> None:
        fault = self.fault
        if fault is None or fault.point is not point or self.rank not in (-1, site.rank):
            return
        if site.chunk_index != self.chunk:
            return
        events.emit("inject", fault=self.name, rank=site.rank, chunk_index=site.chunk_index)
        fault.act(site)
