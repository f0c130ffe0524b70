"""Quality judged against the baseline, per rank: rows for the check's report, lines that explain them, what
each timing judgement found (for --json), and what a baseline keeps. Torch-free (the parent reads rank reports
as data).

Rules (docs/check.md argues each default):
- accuracy: an output that passed in the baseline and fails now is a regression (named with its error, worst
  element and tolerance); nondeterministic eager is stated, never judged;
- timings (speed, compile time) are judged only against a baseline from the same kind of machine
  (compile_guard.quality.machine); against another they read "not comparable (baseline from ...)", reported and
  never judged either way; `--timings report` reports them everywhere. Each is a growth of a time, tested by
  compile_guard.quality.stats.growth (significant at `alpha` and above half its factor), and states its minimum
  detectable effect, judged or not:
  - speed: the compiled step's time relative to eager's (1 / the local speedup) against the baseline's;
  - compile time: per cache state, a compile's CPU seconds against the baseline's (a cold one measured each rank
    alone), and by at least `compile_floor_s` seconds; the graphs that grew are named;
- memory (CUDA): compiled / eager peak above the baseline's by `memory_factor`.
A baseline without quality, or without this cache state: "not in baseline", reported, never a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from compile_guard.contracts.rank_report import QualityReport
from compile_guard.quality import machine, stats
from compile_guard.quality.options import MISS, MIXED, Judging

NOT_IN_BASELINE = "not in baseline"
NOT_COMPARABLE, REPORTED = "not comparable", "reported"  # timing verdicts that never fail
ACCURACY, PARITY, SPEEDUP, LIVE, MEMORY = (
    "accuracy",
    "replicated outputs equal",
    "speedup (eager/compiled)",
    "speedup live (reported)",
    "peak memory compiled/eager",
)
WHY_UNJUDGED = {
    MISS: "not judged: the cache held other entries, so some kernels may have come from it (a run whose cache is"
    " empty at start is judged as cold)",
    MIXED: "not judged: some graphs came from the cache, some were compiled",
}


def compile_metric(state: str) -> str:
    return f"compile time ({state})"


def is_quality(metric: str) -> bool:
    """Whether a report row is one of quality's (the version matrix and the rehearsal tabulate them apart)."""
    return metric in (ACCURACY, PARITY, SPEEDUP, LIVE, MEMORY) or metric.startswith("compile time (")


def describe(entry: dict[str, Any]) -> str:
    """One rank's stored quality in a line (`baseline show`)."""
    said = []
    if "accuracy" in entry:
        said.append(
            f"accuracy {sum(v['status'] == 'pass' for v in entry['accuracy'].values())}/{len(entry['accuracy'])} pass"
        )
    if "speed" in entry:
        said.append(
            f"speedup {entry['speed']['speedup']:.3f} ({len(entry['speed']['samples'])} samples,"
            f" {entry['speed'].get('basis', 'wall')})"
        )
    said += [
        f"compile {state} x{c['ratio']} ({c['total_s']:.1f}s)"
        for state, c in sorted(entry.get("compile_time", {}).items())
    ]
    if "memory" in entry:
        said.append(f"memory x{entry['memory']['ratio']}")
    if "machine" in entry:
        said.append(f"on {machine.describe(entry['machine'])}")
    return "; ".join(said) or "nothing measured"


MIN_RUNS = 3  # a baseline refreshed over at least this many runs measures its machine's noise (--runs)


@dataclass(frozen=True, kw_only=True)
class Side:
    """The baseline's side of a timing test: its log figure, that figure's error, and the noise between runs."""

    log: float  # ln of the baseline's time figure (the mean over its runs when it has MIN_RUNS)
    se: float  # that figure's error, the noise between runs included
    noise: float  # the relative sd of one run's figure between runs on the baseline's machine
    noise_from: str  # "5 baseline runs" (measured there) or the flag whose default was assumed


def _base_side(runs: list[float], log: float, se: float, default: float, flag: str) -> Side:
    """With MIN_RUNS runs or more: their mean, and the noise measured from their spread (stats.moderated_noise:
    pooled with the assumed `default`); the mean's error is that noise over sqrt(runs). Fewer: the one run's
    figure, the noise assumed."""
    logs = [math.log(v) for v in runs if v > 0]
    if len(logs) >= MIN_RUNS:
        noise = stats.moderated_noise(logs, default)
        mean = sum(logs) / len(logs)
        return Side(log=mean, se=noise / math.sqrt(len(logs)), noise=noise, noise_from=f"{len(logs)} baseline runs")
    return Side(log=log, se=math.hypot(se, default), noise=default, noise_from=flag)


def speed_growth(run: dict[str, Any], base: dict[str, Any], judging: Judging) -> tuple[stats.Growth, Side]:
    """The compiled step's growth relative to eager: ln(base speedup) - ln(run speedup)."""
    run_log, run_se = stats.log_median_se(run["samples"])
    base_log, base_se = stats.log_median_se(base["samples"])
    runs = [1 / v for v in base.get("runs", []) if v > 0]  # the compiled step's time relative to eager's
    side = _base_side(runs, -base_log, base_se, judging.speed_noise, "--speed-noise")
    g = stats.growth(
        -run_log, math.hypot(run_se, side.noise), side.log, side.se, alpha=judging.alpha, factor=judging.speed_factor
    )
    return g, side


def compile_growth(run: dict[str, Any], base: dict[str, Any], judging: Judging) -> tuple[stats.Growth, Side]:
    """A compile's CPU seconds against the baseline's (the same kind of machine: its record says so). One figure a
    run: its error is the noise between runs. The ratio to the calibration is reported, not judged: on one
    machine kind it only added the calibration's own noise (a 50 ms piece of Python swings x1.8 with the host's
    neighbours, a 10 s compile averages them out: docs/check.md)."""
    side = _base_side(base.get("runs", []), math.log(base["total_s"]), 0.0, judging.compile_noise, "--compile-noise")
    g = stats.growth(
        math.log(run["total_s"]), side.noise, side.log, side.se, alpha=judging.alpha, factor=judging.compile_factor
    )
    return g, side


def growth_json(g: stats.Growth, side: Side) -> dict[str, Any]:
    def num(v: float, digits: int) -> float | None:
        return round(v, digits) if math.isfinite(v) else None

    return {
        "ratio": num(g.ratio, 4),
        "p": num(g.p, 6),
        "se": num(g.se, 5),
        "threshold": num(math.exp(g.threshold), 4),
        "mde": num(g.mde, 4),
        "regressed": g.regressed,
        "noise": num(side.noise, 4),
        "noise_from": side.noise_from,
    }


def mde_text(g: stats.Growth) -> str:
    return f"MDE {g.mde:.1%}" if math.isfinite(g.mde) else "MDE n/a"


def between(old: dict[str, Any], new: dict[str, Any], judging: Judging = Judging()) -> list[str]:
    """Two baselines' quality, rank by rank the first rank: what a release did to accuracy, speed, compile time."""
    if not old or not new:
        return ["quality: not in " + ("either baseline" if not old and not new else "one of the baselines")]
    rank = sorted(set(old) & set(new))[0]
    a, b = old[rank], new[rank]
    said = []
    if "accuracy" in a and "accuracy" in b:
        worse = [
            k
            for k, v in b["accuracy"].items()
            if v["status"] == "fail" and a["accuracy"].get(k, {}).get("status") == "pass"
        ]
        said.append(
            f"accuracy {sum(v['status'] == 'pass' for v in a['accuracy'].values())}/{len(a['accuracy'])} ->"
            f" {sum(v['status'] == 'pass' for v in b['accuracy'].values())}/{len(b['accuracy'])}"
            + (f" (regressed: {worse})" if worse else "")
        )
    apart = machine.difference(b.get("machine"), a.get("machine"))
    if apart is not None and ("speed" in a or a.get("compile_time")):
        said.append(f"timings not comparable ({apart})")
        return said
    if "speed" in a and "speed" in b and a["speed"].get("basis") == b["speed"].get("basis"):
        g, _ = speed_growth(b["speed"], a["speed"], judging)
        said.append(
            f"speedup {a['speed']['speedup']:.3f} -> {b['speed']['speedup']:.3f} (compiled step x{g.ratio:.3f},"
            f" p={g.p:.2g}{', regression' if g.regressed else ''})"
        )
    for state in sorted(set(a.get("compile_time", {})) & set(b.get("compile_time", {}))):
        x, y = a["compile_time"][state], b["compile_time"][state]
        said.append(f"compile {state} x{x['ratio']} ({x['total_s']:.1f}s) -> x{y['ratio']} ({y['total_s']:.1f}s)")
    return said


def baseline_entry(quality: QualityReport) -> dict[str, Any]:
    """What a baseline keeps of one rank's quality: statuses and ratios, speed samples, compile-time ratios, and
    the machine its timings came from."""
    entry: dict[str, Any] = {}
    if quality.machine is not None:
        entry["machine"] = quality.machine
    if quality.accuracy is not None:
        entry["accuracy"] = {
            o["name"]: {"status": o["status"], "ratio": o.get("ratio")} for o in quality.accuracy["outputs"]
        }
    if quality.speed is not None:
        entry["speed"] = {k: quality.speed[k] for k in ("speedup", "spread", "samples", "repeats")}
        entry["speed"]["basis"] = quality.speed.get("basis", "wall")
        entry["speed"]["runs"] = [quality.speed["speedup"]]  # one per refresh run (pool_runs)
    if quality.compile_time is not None:
        entry["compile_time"] = {
            state: {
                "ratio": c["ratio"],
                "basis": c.get("basis", "wall"),
                "total_s": c["total_s"],
                "calibration_s": c["calibration_s"],
                "calibration_spread": c.get("calibration_spread", 0.0),
                "alone": c.get("alone", False),  # a cold compile measured alone, each rank in turn
                "graphs": {g["name"]: g["ratio"] for g in c["graphs"]},
                "runs": [c["total_s"]],  # the judged CPU seconds, one per refresh run (pool_runs)
            }
            for state, c in quality.compile_time.items()
            if state not in WHY_UNJUDGED
        }
    if quality.memory is not None and quality.memory.get("measured"):
        entry["memory"] = {"ratio": quality.memory["ratio"]}
    return entry


def pool_runs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Several refresh runs' quality (each per rank, as baseline_entry keeps it) as one: the first run's entry,
    with every run's speedup and every cache state's compile CPU seconds in `runs`, so the judge measures this
    machine's noise from their spread (MIN_RUNS or more) and compares with their mean."""
    pooled: dict[str, Any] = {}
    for rank, first in entries[0].items():
        entry = dict(first)
        others = [e.get(rank, {}) for e in entries[1:]]
        if "speed" in first:
            runs = [v for e in (first, *others) for v in e.get("speed", {}).get("runs", [])]
            entry["speed"] = {**first["speed"], "runs": runs}
        states = {}
        for state, c in first.get("compile_time", {}).items():
            runs = [v for e in (first, *others) for v in e.get("compile_time", {}).get(state, {}).get("runs", [])]
            states[state] = {**c, "runs": runs}
        if states:
            entry["compile_time"] = states
        pooled[rank] = entry
    return pooled


def keep_states(new: dict[str, Any], old: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A refreshed baseline's quality, with the compile-time states this run did not measure kept from the old
    one (a warm refresh keeps the cold entry of a `--compile-time cold` refresh, and the other way round) where
    both came from the same kind of machine; another machine's are dropped, said so."""
    kept, notes = {}, []
    for rank, entry in new.items():
        old_entry = old.get(rank, {})
        states = dict(entry.get("compile_time", {}))
        same = machine.difference(entry.get("machine"), old_entry.get("machine")) is None
        for state, value in old_entry.get("compile_time", {}).items():
            if state in states:
                continue
            if same:
                states[state] = value
                notes.append(f"{rank}: compile time ({state}) kept from the previous baseline")
            else:
                notes.append(f"{rank}: compile time ({state}) of the previous baseline dropped: another machine")
        kept[rank] = {**entry, "compile_time": states} if states else entry
    return kept, sorted(set(n.split(": ", 1)[1] for n in notes))
