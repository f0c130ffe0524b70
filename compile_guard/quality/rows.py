"""The quality table of a check's report: one row per quality metric, a cell per rank, the lines that explain
each judgement, and the timings' figures for --json. The rules are compile_guard.quality.rules's. Torch-free.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from compile_guard.contracts.rank_report import QualityReport
from compile_guard.health.policy import OK, REGRESSION, Row
from compile_guard.quality import machine
from compile_guard.quality.options import REPORT, Judging
from compile_guard.quality.rules import (
    ACCURACY,
    LIVE,
    MEMORY,
    NOT_COMPARABLE,
    NOT_IN_BASELINE,
    PARITY,
    REPORTED,
    SPEEDUP,
    WHY_UNJUDGED,
    compile_growth,
    compile_metric,
    growth_json,
    mde_text,
    speed_growth,
)

Ruled = tuple[str, str, list[str], dict[str, Any]]  # one rank by a rule: (cell, verdict, lines, what it found)
_ORDER = (REGRESSION, NOT_COMPARABLE, REPORTED, OK)  # a row's verdict: the first of these any rank has


def _not_judged(base: dict[str, Any] | None, q: QualityReport, judging: Judging) -> tuple[str, str] | None:
    """(verdict, why) when this rank's timings are not to be judged against `base` (a rank's stored quality)."""
    if judging.timings == REPORT:
        return REPORTED, "reported, not judged (--timings report)"
    apart = machine.difference(q.machine, (base or {}).get("machine"))
    return (NOT_COMPARABLE, f"not comparable ({apart})") if apart else None


def _accuracy(base: dict[str, Any] | None, q: QualityReport) -> Ruled:
    assert q.accuracy is not None
    outputs = q.accuracy["outputs"]
    fails = [o for o in outputs if o["status"] == "fail"]
    cell = f"{sum(o['status'] == 'pass' for o in outputs)}/{len(outputs)} pass ({q.accuracy['reference']})"
    nondet = [o["name"] for o in outputs if o["status"] == "nondeterministic"]
    if nondet:
        cell += f", {len(nondet)} nondeterministic"
    if base is None:
        return cell, OK, [f"{_said(o)} (not in baseline: reported)" for o in fails], {}
    regressed = [o for o in fails if base.get(o["name"], {}).get("status") == "pass"]
    lines = [_said(o) for o in regressed] + [
        f"{_said(o)} (failed in the baseline too)" for o in fails if o not in regressed
    ]
    return cell, REGRESSION if regressed else OK, lines, {}


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


def _speed(base: dict[str, Any] | None, q: QualityReport, judging: Judging, stored: dict[str, Any] | None) -> Ruled:
    s = q.speed or {}
    cell = f"{s['speedup']:.3f} [{s['spread'][0]:.2f}-{s['spread'][1]:.2f}]"
    what = f"{s['speedup']:.3f} ({s.get('basis', 'wall')}, {s.get('repeats', len(s['samples']))} pairs"
    what += f"; live {s['live']['speedup']:.3f})" if "live" in s else ")"
    if s.get("why"):
        what += f" [{s['why']}]"
    if base is None:
        return cell, OK, [], {"judged": False, "why": NOT_IN_BASELINE}
    skip = _not_judged(stored, q, judging)
    if skip is None and base.get("basis", "wall") != s.get("basis", "wall"):
        skip = NOT_COMPARABLE, f"not comparable (the baseline's speedup is by its {base.get('basis', 'wall')} figure)"
    g, side = speed_growth(s, base, judging)
    found = {**growth_json(g, side), "judged": skip is None, "why": skip[1] if skip else ""}
    said = (
        f"{what} vs the baseline's {math.exp(-side.log):.3f}: compiled step x{g.ratio:.3f}, p={g.p:.2g}, {mde_text(g)}"
        f" (noise {side.noise:.1%}: {side.noise_from})"
    )
    if skip is not None:
        return f"{cell}, {skip[0]}", skip[0], [f"{said}; {skip[1]}"], found
    if g.regressed:
        return (
            cell,
            REGRESSION,
            [
                f"{said}: the compiled step grew x{g.ratio:.3f} > x{found['threshold']} (half of --speed-factor"
                f" {judging.speed_factor:g}, or the significance bound at alpha {judging.alpha:g}): regression"
            ],
            found,
        )
    return cell, OK, [said], found


def _compile(
    base: dict[str, Any] | None, state: str, c: dict[str, Any], judging: Judging, q: QualityReport, stored: Any
) -> Ruled:
    basis = c.get("basis", "wall")
    how = "alone" if c.get("alone") else "in the run"
    cell = f"{c['total_s']:.2f}s {basis} x{c['ratio']}"
    if base is None or c["ratio"] is None or base.get("ratio") is None:
        return cell, OK, [], {"judged": False, "why": NOT_IN_BASELINE}
    skip = _not_judged(stored, q, judging)
    if skip is None and base.get("basis", "wall") != basis:
        skip = NOT_COMPARABLE, f"not comparable (the baseline's compile time is by {base.get('basis', 'wall')})"
    if skip is None and bool(base.get("alone")) != bool(c.get("alone")):
        where = "alone" if base.get("alone") else "in its run"
        skip = NOT_COMPARABLE, f"not comparable (the baseline's compile was measured {where}, this one {how})"
    g, side = compile_growth(c, base, judging)
    expected_s = math.exp(side.log)  # the baseline's compile seconds
    found = {**growth_json(g, side), "judged": skip is None, "why": skip[1] if skip else ""}
    live = f"; in the run {c['live']['total_s']:.2f}s" if "live" in c else ""
    said = (
        f"{c['total_s']:.2f}s {basis} ({how}{live}; x{c['ratio']} the calibration) vs the baseline's"
        f" {expected_s:.2f}s: x{g.ratio:.3f}, p={g.p:.2g}, {mde_text(g)} (noise {side.noise:.1%}: {side.noise_from})"
    )
    if skip is not None:
        return f"{cell}, {skip[0]}", skip[0], [f"{said}; {skip[1]}"], found
    if g.regressed and c["total_s"] - expected_s > judging.compile_floor_s:
        grown = [
            f"{gr['name']} x{base['graphs'].get(gr['name'])} -> x{gr['ratio']}"
            for gr in c["graphs"]
            if gr["ratio"] is not None
            and gr["ratio"] > (base["graphs"].get(gr["name"]) or 0) * judging.compile_factor**0.5
        ]
        return (
            cell,
            REGRESSION,
            [
                f"{said}: grew > x{found['threshold']} (half of --compile-factor {judging.compile_factor:g}, or the"
                f" significance bound) and by > {judging.compile_floor_s:g}s: regression; graphs that grew (by their"
                f" ratio to the calibration): {grown or 'none alone'}"
            ],
            found,
        )
    return cell, OK, [said], {**found, "regressed": False}


def _memory(base: dict[str, Any] | None, m: dict[str, Any], judging: Judging) -> Ruled:
    if not m.get("measured"):
        return "n/a", OK, [], {}
    cell = f"x{m['ratio']}"
    if base is None or m["ratio"] is None or base.get("ratio") is None:
        return cell, OK, [], {}
    if m["ratio"] > base["ratio"] * judging.memory_factor:
        line = f"peak memory compiled/eager x{m['ratio']} > the baseline's x{base['ratio']} * {judging.memory_factor:g}"
        return cell, REGRESSION, [line], {}
    return cell, OK, [], {}


class _Table:
    """The quality table as it is built: its rows, the lines explaining each judgement, the timings' figures."""

    def __init__(self, quality: list[tuple[str, QualityReport]]) -> None:
        self.quality, self.ranks = quality, [rank for rank, _ in quality]
        self.out: list[Row] = []
        self.lines: list[str] = []
        self.timings: dict[str, dict[str, Any]] = {}

    def row(self, metric: str, base_cell: str, rule: Callable[[str, QualityReport], Ruled], key: str = "") -> None:
        ruled = [rule(rank, q) for rank, q in self.quality]
        verdicts = {v for _, v, _, _ in ruled}
        verdict = next(v for v in _ORDER if v in verdicts)
        self.out.append(Row(metric=metric, baseline=base_cell, per_rank=[c for c, _, _, _ in ruled], verdict=verdict))
        for rank, (_, _, said, found) in zip(self.ranks, ruled, strict=True):
            self.lines.extend(f"{rank}: {metric}: {line}" for line in said)
            if key and found:
                parts = key.split(".")
                slot = self.timings.setdefault(rank, {})
                for part in parts[:-1]:
                    slot = slot.setdefault(part, {})
                slot[parts[-1]] = found


def rows(
    base: dict[str, Any], per_rank: list[tuple[str, QualityReport | None]], judging: Judging
) -> tuple[list[Row], list[str], dict[str, Any]]:
    """(rows for the report's quality table, lines explaining each judgement, per rank what the timing tests
    found: ratio, p, se, threshold, mde, regressed, judged and why not)."""
    quality = [(rank, q) for rank, q in per_rank if q is not None and q.measured]
    if not quality:
        return [], [], {}
    table = _Table(quality)
    stored = {rank: base.get(rank) for rank in table.ranks}
    first = stored[table.ranks[0]] or {}
    if all(q.accuracy is not None for _, q in quality):
        b0 = first.get("accuracy")
        base_cell = (
            NOT_IN_BASELINE if b0 is None else f"{sum(v['status'] == 'pass' for v in b0.values())}/{len(b0)} pass"
        )
        table.row(ACCURACY, base_cell, lambda r, q: _accuracy((stored[r] or {}).get("accuracy"), q))
    if all(q.parity is not None for _, q in quality):
        counts = [len((q.parity or {})["replicated"]) for _, q in quality]  # each rank's own cell
        cells = [f"{n} equal" if n else "none declared" for n in counts]
        table.out.append(Row(metric=PARITY, baseline="-", per_rank=cells, verdict=OK))
    if all(q.speed is not None for _, q in quality):
        b0 = first.get("speed")
        table.row(
            SPEEDUP,
            NOT_IN_BASELINE if b0 is None else f"{b0['speedup']:.3f}",
            lambda r, q: _speed((stored[r] or {}).get("speed"), q, judging, stored[r]),
            key="speed",
        )
        if all("live" in (q.speed or {}) for _, q in quality):
            table.row(LIVE, "-", lambda r, q: (f"{(q.speed or {})['live']['speedup']:.3f}", REPORTED, [], {}))
    _compile_rows(table, stored, judging)
    if all(q.memory is not None for _, q in quality):
        b0 = first.get("memory")
        table.row(
            MEMORY,
            "n/a" if b0 is None else f"x{b0['ratio']}",
            lambda r, q: _memory((stored[r] or {}).get("memory"), q.memory or {}, judging),
        )
    return table.out, table.lines, table.timings


def _compile_rows(table: _Table, stored: dict[str, Any], judging: Judging) -> None:
    """One compile-time row per cache state every rank measured (a state that cannot be judged says why)."""
    quality, first = table.quality, stored[table.ranks[0]] or {}
    for state in sorted({s for _, q in quality for s in q.compile_time or {}}):
        if not all(state in (q.compile_time or {}) for _, q in quality):
            continue
        if state in WHY_UNJUDGED:
            table.row(
                compile_metric(state),
                "not judged",
                lambda r, q, s=state: _compile(None, s, (q.compile_time or {})[s], judging, q, None),
            )
            table.lines.append(f"{compile_metric(state)}: {WHY_UNJUDGED[state]}")
            continue
        b0 = first.get("compile_time", {}).get(state)
        have = sorted(first.get("compile_time", {}))
        base_cell = (
            f"{b0['total_s']:.2f}s {b0.get('basis', 'wall')} x{b0['ratio']}"
            if b0
            else NOT_IN_BASELINE + (f" (has {', '.join(have)})" if have else "")
        )
        table.row(
            compile_metric(state),
            base_cell,
            lambda r, q, s=state: _compile(
                (stored[r] or {}).get("compile_time", {}).get(s), s, (q.compile_time or {})[s], judging, q, stored[r]
            ),
            key=f"compile_time.{state}",
        )
