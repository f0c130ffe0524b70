"""Test-only fault hooks, switched by parity-checked COMPILE_GUARD_TEST_* knobs.

Every rank reads the same (fault, rank, chunk) triple — the parity handshake enforces it —
and each injection site asks `fires(name, ...)`, which is true on the fault rank only and
logs an `inject` event with a CLOCK_MONOTONIC time: the matrix measures time-to-fail from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import events, knobs

FAULTS = {
    "meta_unserialisable": "OM-01: a lambda in the request's extras (rank0 preflight)",
    "bool_tensor": "OM-02: latents sent as torch.bool (rank0 preflight)",
    "inconsistent_plan": "OM-03: num_denoise_steps != len(denoising_step_list) (rank0 preflight)",
    "corrupt_plan_on_receive": "OM-03: the fault rank's received plan miscounts generator calls",
    "adhoc_broadcast": "OM-06: rank0 broadcasts a tensor outside the manifest",
    "recompute_without_override": "OM-10: do_kv_recompute without context_frames_override",
    "perturb_input": "OM-11: the fault rank perturbs its copy of the latents",
    "mutate_weight": "OM-12: the fault rank mutates a weight of its shard",
    "kill_rank0_loop": "OM-13: rank0 SIGKILLs itself mid-chunk, after the header",
    "kill_rank0_idle": "OM-13: rank0 SIGKILLs itself while idle",
    "freeze_rank0_idle": "OM-13: rank0 SIGSTOPs itself while idle (the watchdog case)",
    "attn_auto_skew": "C-04: attn_impl=auto resolves to math on the fault rank",
    "rank_graph_break": "C-03: a debug print inside the compiled forward on the fault rank",
    "delay_result": "OM-09: stage 1 holds back one chunk's result (PP0)",
    "wrong_group": "OM-08: the mesh's pre-generator gather is issued on world_pg instead of mesh_pg (PP1)",
}


@dataclass(frozen=True, kw_only=True)
class FaultHooks:
    name: str  # "" = no fault
    rank: int  # the injecting rank
    chunk: int  # the chunk_index it fires at

    def __post_init__(self) -> None:
        if self.name and self.name not in FAULTS:
            raise ValueError(f"COMPILE_GUARD_TEST_FAULT={self.name!r} is unknown; pick one of {sorted(FAULTS)}")

    @classmethod
    def from_knobs(cls) -> FaultHooks:
        return cls(
            name=knobs.read("COMPILE_GUARD_TEST_FAULT"),
            rank=knobs.read("COMPILE_GUARD_TEST_FAULT_RANK"),
            chunk=knobs.read("COMPILE_GUARD_TEST_FAULT_CHUNK"),
        )

    def fires(self, name: str, *, rank: int, chunk_index: int) -> bool:
        """True on the fault rank (every rank reaching the site when the fault rank is -1)."""
        assert name in FAULTS, name
        if self.name != name or self.rank not in (-1, rank) or chunk_index != self.chunk:
            return False
        events.emit("inject", fault=name, rank=rank, chunk_index=chunk_index)
        return True
