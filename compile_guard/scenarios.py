"""Named check scenarios: what `check` runs, and what a baseline is a baseline of.

A scenario's config hash (written into its baselines) covers every field that changes
the compiled program, so a baseline is never compared against a different setup silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str  # id used on the command line and in baseline file names
    description: str  # one line for `check --list`
    topology: str = "tp"  # "tp": every rank in one TP group; "pp1": rank0 drives a TP mesh of nprocs - 1
    nprocs: int = 2  # ranks (tp: the TP degree; pp1: 1 + the mesh size)
    compile: str = "inductor"  # compile backend of the generator region
    layers: int = 4  # transformer blocks (4 = serving shape)
    chunks: int = 3  # steady-state chunks after the warmup chunk
    recompute_every: int = 2  # a KV-recompute chunk runs in steady state too
    env: dict[str, str] = field(default_factory=dict)  # knobs every rank gets
    target: str | None = None  # "pkg.module:factory" for a user's own model (check --target)
    deadline_s: float = 600.0  # hard limit of one check run (a cold inductor compile included)

    def runtime_args(self) -> list[str]:
        if self.target is not None:
            return ["--target", self.target, "--backend", self.compile]
        return [
            "--chunks", str(self.chunks), "--layers", str(self.layers), "--compile", self.compile,
            "--recompute-every", str(self.recompute_every),
        ]  # fmt: skip

    def config_hash(self) -> str:
        """Hash of the fields that define the compiled program (not name, text or deadline)."""
        factors = {k: v for k, v in asdict(self).items() if k not in ("name", "description", "deadline_s")}
        return hashlib.sha256(json.dumps(factors, sort_keys=True).encode()).hexdigest()[:16]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="tp2", description="TP=2, gloo/CPU, inductor, serving shapes (the default)"),
        Scenario(name="tp2-aot", description="TP=2, gloo/CPU, aot_eager: dynamo's view without kernel compile",
                 compile="aot_eager"),
        Scenario(name="pp1", description="PP1: rank0 out of the mesh + a TP=2 mesh, gloo/CPU, inductor",
                 topology="pp1", nprocs=3),
    )
}  # fmt: skip
DEFAULT_SCENARIO = "tp2"


def target_scenario(spec: str, *, nprocs: int, backend: str) -> Scenario:
    """The scenario of a user's target: named after it, so its baselines are too."""
    name = "target-" + re.sub(r"[^0-9A-Za-z]+", "_", spec).strip("_")
    return Scenario(name=name, description=f"--target {spec} on {nprocs} ranks, {backend}", nprocs=nprocs,
                    compile=backend, target=spec)
