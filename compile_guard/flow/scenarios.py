"""Named check scenarios: what `check` runs, and what a baseline is a baseline of.

Each scenario is a `RunSpec` (engine.runspec), run as a `RankJob` (compile_guard.contracts.rank_job) with the
options the flags give; its config hash (written into its baselines)
covers every field that changes the compiled program, so a baseline is never compared
against a different setup silently. No torch import: `check --list` reads these.
"""

from __future__ import annotations

import re

from compile_guard.contracts.rank_job import RankJob, Target
from engine.errors import ConfigError
from engine.runspec import RunSpec

SCENARIOS: dict[str, RunSpec] = {
    s.name: s
    for s in (
        RunSpec(name="tp2", description="TP=2, gloo/CPU, inductor, serving shapes (the default)"),
        RunSpec(
            name="tp2-aot",
            description="TP=2, gloo/CPU, aot_eager: dynamo's view without kernel compile",
            compile="aot_eager",
        ),
        # timeout_s: the driver waits in a collective for the mesh's first result, which holds the mesh's whole cold
        # inductor compile (tens of seconds on a small CPU runner, more when loaded: docs/check.md has the figures; a
        # new torch's first run is always cold): 30 s turned a cold cache into a lost peer (exit 3). Not in the config
        # hash: baselines unchanged.
        RunSpec(
            name="pp1",
            description="PP1: rank0 out of the mesh + a TP=2 mesh, gloo/CPU, inductor",
            topology="pp1",
            nprocs=3,
            timeout_s=120.0,
        ),
    )
}
DEFAULT_SCENARIO = "tp2"


class UnknownScenario(ConfigError):
    """A scenario name that is not in the registry: names the known ones."""


def scenario(name: str) -> RunSpec:
    if name not in SCENARIOS:
        raise UnknownScenario(f"--scenario {name!r} is unknown; known: {sorted(SCENARIOS)} (see check --list)")
    return SCENARIOS[name]


def target_scenario(factory: str, *, nprocs: int, backend: str) -> RankJob:
    """The job of a user's target: named after it, so its baselines are too."""
    name = "target-" + re.sub(r"[^0-9A-Za-z]+", "_", factory).strip("_")
    spec = RunSpec(
        name=name,
        description=f"--target {factory} on {nprocs} ranks, {backend}",
        nprocs=nprocs,
        compile=backend,
        timeout_s=60.0,
    )
    return RankJob(spec=spec, target=Target(factory=factory))


def resolve(*, scenario_name: str, target: str | None, nprocs: int, backend: str) -> RankJob:
    """The job `check`/`baseline refresh` run, with the options' defaults: --target's (its factory loadable, so a
    typo fails before any rank starts) or --scenario's. ConfigError (UnknownScenario, TargetError) naming the fix;
    TargetCrashed when the target's module raises while importing."""
    if target is None:
        return RankJob(spec=scenario(scenario_name))
    from compile_guard.integrations.target import load_factory  # imports torch, and the user's module

    load_factory(target)
    return target_scenario(target, nprocs=nprocs, backend=backend)
