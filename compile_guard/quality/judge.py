"""Quality judged against the baseline, per rank: rows for the check's report, lines that explain a failure,
and what a baseline keeps. Torch-free (the parent reads rank reports as data).

Rules (docs/check.md argues each default):
- accuracy: an output that passed in the baseline and fails now is a regression (named with its error, worst
  element and tolerance); nondeterministic eager is stated, never judged;
- speed: a rank's median speedup below the baseline's by more than `speed_factor`, *and* its samples lower than
  the baseline's by a one-sided Mann-Whitney test at `alpha`;
- compile time: per cache state, the ratio to the calibration (compile_guard.quality.compile_time) above the
  baseline's by `compile_factor`, and by at least `compile_floor_s` seconds in this run's terms; the graphs that
  grew are named;
- memory (CUDA): compiled / eager peak above the baseline's by `memory_factor`.
A baseline without quality, or without this cache state: "not in baseline", reported, never a failure.
"""

from __future__ import annotations

from typing import Any

from compile_guard.health.policy import OK, REGRESSION, Row
from compile_guard.quality import stats
from compile_guard.quality.options import UNJUDGED, Judging

NOT_IN_BASELINE = "not in baseline"
ACCURACY, PARITY, SPEEDUP, MEMORY = (
    "accuracy",
    "replicated outputs equal",
    "speedup (eager/compiled)",
    "peak memory compiled/eager",
)


def compile_metric(state: str) -> str:
    return f"compile time ({state}) / calibration"


def is_quality(metric: str) -> bool:
    """Whether a report row is one of quality's (the version matrix and the rehearsal tabulate them apart)."""
    return metric in (ACCURACY, PARITY, SPEEDUP, MEMORY) or metric.startswith("compile time (")


def describe(entry: dict[str, Any]) -> str:
    """One rank's stored quality in a line (`baseline show`)."""
    said = []
    if "accuracy" in entry:
        said.append(
            f"accuracy {sum(v['status'] == 'pass' for v in entry['accuracy'].values())}/{len(entry['accuracy'])} pass"
        )
    if "speed" in entry:
        said.append(f"speedup {entry['speed']['speedup']:.3f} ({len(entry['speed']['samples'])} samples)")
    said += [
        f"compile {state} x{c['ratio']} ({c['total_s']:.1f}s)"
        for state, c in sorted(entry.get("compile_time", {}).items())
    ]
    if "memory" in entry:
        said.append(f"memory x{entry['memory']['ratio']}")
    return "; ".join(said) or "nothing measured"


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
    if "speed" in a and "speed" in b:
        p = stats.mann_whitney_less(b["speed"]["samples"], a["speed"]["samples"])
        slower = b["speed"]["speedup"] < a["speed"]["speedup"] / judging.speed_factor and p < judging.alpha
        said.append(
            f"speedup {a['speed']['speedup']:.3f} -> {b['speed']['speedup']:.3f} (p={p:.2g}"
            f"{', regression' if slower else ''})"
        )
    for state in sorted(set(a.get("compile_time", {})) & set(b.get("compile_time", {}))):
        x, y = a["compile_time"][state], b["compile_time"][state]
        said.append(f"compile {state} x{x['ratio']} ({x['total_s']:.1f}s) -> x{y['ratio']} ({y['total_s']:.1f}s)")
    return said


def baseline_entry(quality: dict[str, Any]) -> dict[str, Any]:
    """What a baseline keeps of one rank's quality: statuses and ratios, speed samples, compile-time ratios."""
    entry: dict[str, Any] = {}
    if "accuracy" in quality:
        entry["accuracy"] = {
            o["name"]: {"status": o["status"], "ratio": o.get("ratio")} for o in quality["accuracy"]["outputs"]
        }
    if "speed" in quality:
        entry["speed"] = {k: quality["speed"][k] for k in ("speedup", "spread", "samples", "repeats")}
        entry["speed"]["basis"] = quality["speed"].get("basis", "wall")
    if "compile_time" in quality:
        entry["compile_time"] = {
            state: {
                "ratio": c["ratio"],
                "basis": c.get("basis", "wall"),
                "total_s": c["total_s"],
                "calibration_s": c["calibration_s"],
                "graphs": {g["name"]: g["ratio"] for g in c["graphs"]},
            }
            for state, c in quality["compile_time"].items()
            if state not in UNJUDGED
        }
    if quality.get("memory", {}).get("measured"):
        entry["memory"] = {"ratio": quality["memory"]["ratio"]}
    return entry


def keep_states(new: dict[str, Any], old: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A refreshed baseline's quality, with the compile-time states this run did not measure kept from the old
    one (a warm refresh keeps the cold entry of a `--compile-time cold` refresh, and the other way round)."""
    kept, notes = {}, []
    for rank, entry in new.items():
        old_states = old.get(rank, {}).get("compile_time", {})
        states = dict(entry.get("compile_time", {}))
        for state, value in old_states.items():
            if state not in states:
                states[state] = value
                notes.append(f"{rank}: compile time ({state}) kept from the previous baseline")
        kept[rank] = {**entry, "compile_time": states} if states else entry
    return kept, sorted(set(n.split(": ", 1)[1] for n in notes))


def _accuracy(base: dict[str, Any] | None, q: dict[str, Any]) -> tuple[str, str, list[str]]:
    outputs = q["accuracy"]["outputs"]
    fails = [o for o in outputs if o["status"] == "fail"]
    cell = f"{sum(o['status'] == 'pass' for o in outputs)}/{len(outputs)} pass ({q['accuracy']['reference']})"
    nondet = [o["name"] for o in outputs if o["status"] == "nondeterministic"]
    if nondet:
        cell += f", {len(nondet)} nondeterministic"
    if base is None:
        return cell, OK, [f"{_said(o)} (not in baseline: reported)" for o in fails]
    regressed = [o for o in fails if base.get(o["name"], {}).get("status") == "pass"]
    lines = [_said(o) for o in regressed] + [
        f"{_said(o)} (failed in the baseline too)" for o in fails if o not in regressed
    ]
    return cell, REGRESSION if regressed else OK, lines


def _said(o: dict[str, Any]) -> str:
    worst = o.get("worst") or {}
    where = (
        f"; worst element {worst.get('index')}: compiled {worst.get('compiled'):.6g} vs"
        f" {o.get('reference', 'eager')} {worst.get('reference'):.6g}"
        if worst
        else ""
    )
    return (
        f"output {o['name']} ({o.get('dtype', '?')} {o.get('shape', '')}): {o['detail']}; tolerance"
        f" {o.get('tolerance')}{where}"
    )


def _speed(base: dict[str, Any] | None, q: dict[str, Any], judging: Judging) -> tuple[str, str, list[str]]:
    s = q["speed"]
    cell = f"{s['speedup']:.3f} [{s['spread'][0]:.2f}-{s['spread'][1]:.2f}]"
    if base is None:
        return cell, OK, []
    if base.get("basis", "wall") != s.get("basis", "wall"):
        return f"{cell}, baseline by {base.get('basis', 'wall')} time: not compared", OK, []
    p = stats.mann_whitney_less(s["samples"], base["samples"])
    cell += f" p={p:.2g}"
    slower = s["speedup"] < base["speedup"] / judging.speed_factor
    if slower and p < judging.alpha:
        cpu = (
            f"CPU: eager {s['eager_cpu_ms']:.3f} ms, compiled {s['compiled_cpu_ms']:.3f} ms; "
            if "eager_cpu_ms" in s
            else ""
        )
        return (
            cell,
            REGRESSION,
            [
                f"speedup {s['speedup']:.3f} by {s.get('basis', 'wall')} time ({cpu}wall: eager"
                f" {s['eager_ms']:.3f} ms, compiled {s['compiled_ms']:.3f} ms) < the baseline's {base['speedup']:.3f} /"
                f" {judging.speed_factor:g}, Mann-Whitney p={p:.2g} < {judging.alpha:g}"
            ],
        )
    return cell, OK, []


def _compile(
    base: dict[str, Any] | None, state: str, c: dict[str, Any], judging: Judging
) -> tuple[str, str, list[str]]:
    basis = c.get("basis", "wall")
    cell = f"x{c['ratio']} ({c['total_s']:.2f}s {basis})"
    if base is None or c["ratio"] is None or base.get("ratio") is None:
        return cell, OK, []
    if base.get("basis", "wall") != basis:
        return f"{cell}, baseline by {base.get('basis', 'wall')}: not compared", OK, []
    expected_s = base["ratio"] * c["calibration_s"]  # the baseline's compile, in this run's terms
    if c["ratio"] > base["ratio"] * judging.compile_factor and c["total_s"] - expected_s > judging.compile_floor_s:
        grown = [
            f"{g['name']} x{base['graphs'].get(g['name'])} -> x{g['ratio']}"
            for g in c["graphs"]
            if g["ratio"] is not None and g["ratio"] > (base["graphs"].get(g["name"]) or 0) * judging.compile_factor
        ]
        return (
            cell,
            REGRESSION,
            [
                f"compile time ({state}, {basis} seconds) x{c['ratio']} the calibration, > the baseline's"
                f" x{base['ratio']} * {judging.compile_factor:g} ({c['total_s']:.2f}s, the baseline's"
                f" in this run's terms {expected_s:.2f}s); graphs that grew: {grown or 'none alone'}"
            ],
        )
    return cell, OK, []


def _memory(base: dict[str, Any] | None, m: dict[str, Any], judging: Judging) -> tuple[str, str, list[str]]:
    if not m.get("measured"):
        return "n/a", OK, []
    cell = f"x{m['ratio']}"
    if base is None or m["ratio"] is None or base.get("ratio") is None:
        return cell, OK, []
    if m["ratio"] > base["ratio"] * judging.memory_factor:
        return (
            cell,
            REGRESSION,
            [f"peak memory compiled/eager x{m['ratio']} > the baseline's x{base['ratio']} * {judging.memory_factor:g}"],
        )
    return cell, OK, []


def rows(
    base: dict[str, Any], per_rank: list[tuple[str, dict[str, Any]]], judging: Judging
) -> tuple[list[Row], list[str]]:
    """(rows for the report's quality table, lines explaining each regression and failed output)."""
    out, lines = [], []
    quality = [(rank, q) for rank, q in per_rank if q and "skipped" not in q]
    if not quality:
        return [], []

    def row(metric: str, base_cell: str, judged: list[tuple[str, str, list[str]]], ranks: list[str]) -> None:
        verdicts = [v for _, v, _ in judged]
        out.append(
            Row(
                metric=metric,
                baseline=base_cell,
                per_rank=[c for c, _, _ in judged],
                verdict=REGRESSION if REGRESSION in verdicts else OK,
            )
        )
        lines.extend(
            f"{rank}: {metric}: {line}" for rank, (_, _, said) in zip(ranks, judged, strict=True) for line in said
        )

    ranks = [rank for rank, _ in quality]
    stored = {rank: base.get(rank) for rank in ranks}
    if all("accuracy" in q for _, q in quality):
        b = [stored[r].get("accuracy") if stored[r] else None for r in ranks]
        base_cell = (
            NOT_IN_BASELINE if b[0] is None else f"{sum(v['status'] == 'pass' for v in b[0].values())}/{len(b[0])} pass"
        )
        row(ACCURACY, base_cell, [_accuracy(bb, q) for bb, (_, q) in zip(b, quality, strict=True)], ranks)
    if all("parity" in q for _, q in quality):
        n = len(quality[0][1]["parity"]["replicated"])
        out.append(
            Row(
                metric=PARITY,
                baseline="-",
                per_rank=[f"{n} equal" if n else "none declared" for _ in quality],
                verdict=OK,
            )
        )
    if all("speed" in q for _, q in quality):
        b = [stored[r].get("speed") if stored[r] else None for r in ranks]
        row(
            SPEEDUP,
            NOT_IN_BASELINE if b[0] is None else f"{b[0]['speedup']:.3f}",
            [_speed(bb, q, judging) for bb, (_, q) in zip(b, quality, strict=True)],
            ranks,
        )
    states = sorted({s for _, q in quality for s in q.get("compile_time", {})})
    for state in states:
        if not all(state in q.get("compile_time", {}) for _, q in quality):
            continue
        b = [(stored[r] or {}).get("compile_time", {}).get(state) for r in ranks]
        if state in UNJUDGED:
            base_cell = "not judged (use --compile-time cold)"
            b = [None for _ in ranks]
        elif b[0] is None:
            have = sorted((stored[ranks[0]] or {}).get("compile_time", {}))
            base_cell = f"{NOT_IN_BASELINE}" + (f" (has {', '.join(have)})" if have else "")
        else:
            base_cell = f"x{b[0]['ratio']} ({b[0]['total_s']:.2f}s {b[0].get('basis', 'wall')})"
        row(
            compile_metric(state),
            base_cell,
            [_compile(bb, state, q["compile_time"][state], judging) for bb, (_, q) in zip(b, quality, strict=True)],
            ranks,
        )
    if all("memory" in q for _, q in quality):
        b = [(stored[r] or {}).get("memory") for r in ranks]
        judged = [_memory(bb, q["memory"], judging) for bb, (_, q) in zip(b, quality, strict=True)]
        row(MEMORY, "n/a" if b[0] is None else f"x{b[0]['ratio']}", judged, ranks)
    return out, lines
