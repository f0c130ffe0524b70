"""A check's page model, from the JSON `check --json` writes (a judged run: rows against the baseline; a failed
run: how the ranks ended, what each rank's log says). Torch-free: it reads data and rank logs only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compile_guard.page import model
from compile_guard.page.model import Axis, Difference, GridRow, Link, Page, Plot
from engine import events

# a report row's metric -> its axis (compile_guard.health.schema's names, quality's rows)
_QUALITY_AXES = {
    "accuracy": model.ACCURACY,
    "replicated outputs equal": model.DRIFT,
    "speedup (eager/compiled)": model.SPEED,
    "speedup live (reported)": model.SPEED,
    "peak memory compiled/eager": model.MEMORY,
}
# a rank's fatal error -> the axis it proves a difference on (engine.errors, the agreement's, quality's)
_ERROR_AXES = {
    "ParityMismatch": model.SETTINGS,
    "CompileAsymmetry": model.STRUCTURE,
    "CompileDivergence": model.STRUCTURE,
    "CollectiveMismatch": model.ISSUED,
    "OutputDrift": model.DRIFT,
    "InputSignatureMismatch": model.DRIFT,
    "DigestMismatch": model.DRIFT,
    "FingerprintMismatch": model.DRIFT,
}
_MOVED = ("changed", "improvement")  # reported unless the run's flags make them fail (failing_metrics)
_NOTED = ("not comparable", "reported", "not in baseline")
_VERDICT_EVENTS = ("parity_mismatch", "compile_asymmetry", "compile_divergence", "digest_mismatch", "stall")


def axis_of(metric: str) -> str:
    if metric in _QUALITY_AXES:
        return _QUALITY_AXES[metric]
    if metric.startswith("compile time ("):
        return model.COMPILE
    if metric.startswith("issued"):
        return model.ISSUED
    if metric == "effective_backend":
        return model.SETTINGS
    return model.STRUCTURE


def rules(judging: dict[str, Any]) -> dict[str, str]:
    """Each axis's rule in words, with this run's thresholds (compile_guard.quality.options.Judging's fields)."""
    j = {
        "speed_factor": 1.05,
        "alpha": 0.001,
        "compile_factor": 1.15,
        "compile_floor_s": 1.0,
        "memory_factor": 1.1,
        **judging,
    }
    return {
        model.STRUCTURE: "counts: more = regression, fewer = improvement (fails unless allowed); fingerprints,"
        " guards, ops: reported (--strict fails them)",
        model.ISSUED: "point-to-point reordered or a collective gone = regression; other moves reported",
        model.SETTINGS: "every compared setting and the effective backend equal on every rank (handshakes)",
        model.ACCURACY: "an output that passed in the baseline fails: error vs fp64 > 3x eager's + 1e-5",
        model.DRIFT: "replicated outputs bitwise equal on every rank",
        model.SPEED: f"compiled step x{j['speed_factor']:g} (0.95x speedup), significant at alpha {j['alpha']:g}",
        model.COMPILE: f"compile CPU seconds x{j['compile_factor']:g}, significant at alpha {j['alpha']:g},"
        f" > {j['compile_floor_s']:g} s",
        model.MEMORY: f"peak memory compiled/eager x{j['memory_factor']:g} (CUDA)",
    }


def shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def state_of(row: dict[str, Any], failing: set[str]) -> str:
    if row["metric"] in failing or row["verdict"] == "regression":
        return model.FAIL
    if row["verdict"] in _MOVED:
        return model.MOVED
    if row["verdict"] in _NOTED:
        return model.NOTED
    return model.PASS


def axes_of(grid: list[GridRow], rule: dict[str, str]) -> tuple[Axis, ...]:
    """Each axis's state: the worst of its rows (FAIL, then MOVED, PASS, NOTED); an axis with no row was not run."""
    found = []
    for name in model.AXES:
        rows = [r for r in grid if r.axis == name]
        states = {r.state for r in rows}
        if not rows:
            # the handshakes passed whenever the ranks got as far as judging: settings equal on every rank
            state, why = (model.PASS, "equal on every rank") if name == model.SETTINGS and grid else (model.NOT_RUN, "")
        else:
            state = next(s for s in (model.FAIL, model.MOVED, model.PASS, model.NOTED) if s in states)
            first = next((r for r in rows if r.state == state), rows[0])
            why = f"{first.metric}: {first.verdict}"
        found.append(Axis(name=name, state=state, rule=rule[name], said=why))
    return tuple(found)


def _rank_logs(data: dict[str, Any]) -> list[Path]:
    if not data.get("log_dir"):
        return []
    log_dir = Path(data["log_dir"])
    return sorted(log_dir.glob("rank*.log"), key=lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0))


def _links(data: dict[str, Any]) -> tuple[Link, ...]:
    links = [Link(label=f"{p.stem} log", path=str(p.resolve())) for p in _rank_logs(data)]
    for label, where in (("depyf dumps", data.get("dump_dir")), ("TORCH_TRACE (tlparse)", data.get("torch_trace"))):
        if where:
            path = Path(where)
            links.append(Link(label=label, path=str(path.resolve()), exists=path.exists()))
    if data.get("baseline"):
        path = Path(data["baseline"])
        links.append(Link(label="baseline", path=str(path.resolve()), exists=path.exists()))
    return tuple(links)


def _p(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, (int, float)) else "n/a"


def plots_of(data: dict[str, Any]) -> tuple[Plot, ...]:
    """Accuracy per output, speed samples per rank, compile time per graph and cache state: baseline vs run."""
    probes = [p for p in data.get("probes", []) if p.get("quality") and "skipped" not in p["quality"]]
    base = data.get("baseline_quality") or {}
    timings = data.get("timings") or {}
    plots = []
    if probes and all("accuracy" in p["quality"] for p in probes):
        series = {
            "outputs": [o["name"] for o in probes[0]["quality"]["accuracy"]["outputs"]],
            "baseline": {
                o: (base.get(f"rank{probes[0]['rank']}", {}).get("accuracy", {}).get(o) or {}).get("ratio")
                for o in [o["name"] for o in probes[0]["quality"]["accuracy"]["outputs"]]
            },
            "ranks": {
                f"rank{p['rank']}": {o["name"]: o.get("ratio") for o in p["quality"]["accuracy"]["outputs"]}
                for p in probes
            },
        }
        plots.append(
            Plot(
                id="accuracy",
                title="accuracy: each output's error vs fp64, in units of eager's own (log)",
                caption="above 3 (eager's error x3, plus 1e-5 absolute) an output fails; the baseline's beside",
                kind="accuracy",
                series=series,
            )
        )
    if probes and all("speed" in p["quality"] for p in probes):
        ranks, said = {}, []
        for p in probes:
            rank = f"rank{p['rank']}"
            ranks[rank] = {
                "run": p["quality"]["speed"]["samples"],
                "baseline": (base.get(rank, {}).get("speed") or {}).get("samples") or [],
            }
            t = (timings.get(rank) or {}).get("speed") or {}
            if t:
                mde = "n/a" if t.get("mde") is None else f"{t['mde']:.1%}"
                said.append(f"{rank}: compiled step x{t.get('ratio')}, p={_p(t.get('p'))}, MDE {mde}")
        plots.append(
            Plot(
                id="speed",
                title="speed: eager/compiled step time per sample (local replay), baseline vs run",
                caption="; ".join(said) or "no baseline samples to test against",
                kind="speed",
                series={"ranks": ranks},
            )
        )
    if probes and any(p["quality"].get("compile_time") for p in probes):
        bars: dict[str, Any] = {}  # "state: graph" (or the state's total) -> {"baseline": s, "ranks": {rank: s}}
        for p in probes:
            rank = f"rank{p['rank']}"
            for state, c in p["quality"].get("compile_time", {}).items():
                stored = (base.get(rank, {}).get("compile_time") or {}).get(state) or {}
                for name, run_s, base_s in _compile_bars(state, c, stored):
                    slot = bars.setdefault(name, {"baseline": None, "ranks": {}})
                    slot["ranks"][rank] = run_s
                    slot["baseline"] = slot["baseline"] if slot["baseline"] is not None else base_s
        said = [
            f"{rank} {state}: x{t.get('ratio')}, p={_p(t.get('p'))}"
            for rank, per in sorted(timings.items())
            for state, t in sorted((per.get("compile_time") or {}).items())
        ]
        plots.append(
            Plot(
                id="compile",
                title="compile time: CPU seconds per cache state and graph, baseline vs each rank",
                caption="; ".join(said) or "cache states the baseline does not hold are reported, not judged",
                kind="compile",
                series={"states": bars},
            )
        )
    return tuple(plots)


def _compile_bars(
    state: str, run: dict[str, Any], stored: dict[str, Any]
) -> list[tuple[str, float | None, float | None]]:
    """(label, the run's CPU seconds, the baseline's) per graph of one cache state, or the state's total where it
    compiled one graph or its graphs are not listed. The baseline keeps each graph's ratio to its calibration: its
    seconds are that ratio x its calibration's seconds."""
    graphs = run.get("graphs") or []
    if len(graphs) <= 1:
        return [(state, run.get("total_s"), stored.get("total_s"))]
    unit, kept = stored.get("calibration_s"), stored.get("graphs") or {}
    return [
        (
            f"{state}: {g['name']}",
            g.get("cpu_s", g.get("wall_s")),
            kept[g["name"]] * unit if unit and kept.get(g["name"]) is not None else None,
        )
        for g in graphs
    ]


def _first_difference(grid: list[GridRow], ranks: tuple[str, ...], data: dict[str, Any]) -> Difference | None:
    failed = [r for r in grid if r.state == model.FAIL] or [r for r in grid if r.state == model.MOVED]
    if not failed:
        return None
    first = failed[0]
    rows = [
        (r.metric, r.baseline, *(c.text for c in r.cells for _ in range(c.ranks)))
        for r in grid
        if r.state in (model.FAIL, model.MOVED)
    ]
    lines = [line for line in data.get("quality_lines", []) if f": {first.metric}: " in line]
    return Difference(
        title=f"{first.metric}: {first.verdict}",
        columns=("metric", "baseline", *ranks),
        rows=tuple(rows),
        text="\n".join(lines),
    )


def from_judged(data: dict[str, Any], *, exit_code: int, text: str) -> Page:
    """A run judged against its baseline: rows, failing metrics, quality."""
    failing = set(data.get("failing_metrics", []))
    ranks = tuple(f"rank{p['rank']}" for p in data.get("probes", []) if p.get("role", "mesh") == "mesh")
    if not ranks and data.get("rows"):  # a report without its probes: the rows' own rank count
        ranks = tuple(f"rank{i}" for i in range(len(data["rows"][0]["per_rank"])))
    grid = [
        GridRow(
            axis=axis_of(r["metric"]),
            metric=r["metric"],
            baseline=shown(r["baseline"]),
            cells=model.group_cells([shown(v) for v in r["per_rank"]]),
            state=state_of(r, failing),
            verdict=r["verdict"],
        )
        for r in data.get("rows", [])
    ]
    grid.sort(key=lambda r: model.AXES.index(r.axis))
    factors, base = data.get("factors", {}), data.get("baseline_factors", {})
    failed = [r.metric for r in grid if r.state == model.FAIL]
    return Page(
        kind="check",
        subject=str(factors.get("scenario", "?")),
        versions=f"baseline torch {base.get('torch', '?')} -> run on torch {factors.get('torch', '?')}",
        passed=bool(data.get("passed")),
        exit_code=exit_code,
        headline="PASS" if data.get("passed") else f"FAIL: {', '.join(failed) or 'see the report'}",
        axes=axes_of(grid, rules(data.get("judging") or {})),
        ranks=ranks,
        grid=tuple(grid),
        difference=_first_difference(grid, ranks, data),
        plots=plots_of(data),
        links=_links(data),
        text=text,
        data=data,
    )


def _verdict_events(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every rank's fatal event, the verdict events of the detecting ranks), from the rank logs."""
    fatal, said = [], []
    for path in _rank_logs(data):
        rank = path.stem
        for e in events.parse(path.read_text(errors="replace")):
            if e["event"] == "fatal":
                fatal.append({**e, "rank": rank})
            elif e["event"] in _VERDICT_EVENTS:
                said.append({**e, "rank": rank})
    return fatal, said


def from_failure(data: dict[str, Any], *, exit_code: int, text: str) -> Page:
    """A run that ended before judging: how each rank ended, and what the detecting rank proved."""
    fatal, said = _verdict_events(data)
    cause = next((f for f in fatal if f.get("error") in _ERROR_AXES), fatal[0] if fatal else None)
    axis = _ERROR_AXES.get(cause.get("error", ""), "") if cause else ""
    if any(e["event"] == "compile_divergence" and e.get("kind") == "issued" for e in said):
        axis = model.ISSUED
    label = str(data.get("verdict", "failed"))
    columns = ("what", *(f.get("rank", "?") for f in fatal))
    rows: list[tuple[str, ...]] = []
    if fatal:
        rows.append(("error", *(str(f.get("error")) for f in fatal)))
        rows.append(("exit code", *(str(f.get("exit_code")) for f in fatal)))
        rows.append(("message", *(str(f.get("message", ""))[:200] for f in fatal)))
    facts = tuple(
        (f"{e['event']} ({e['rank']}): {k}", shown(e[k]))
        for e in said[:1]
        for k in ("kind", "handshake", "keys", "fields", "first_collective", "slot", "by")
        if e.get(k) not in (None, "", [])
    )
    first = said[0]["event"] if said else label
    difference = Difference(
        title=f"{label}: {first}" + (f" on {cause['rank']}" if cause else ""),
        columns=columns,
        rows=tuple(rows),
        facts=facts,
        text=text,
    )
    rule = rules(data.get("judging") or {})
    axes = tuple(
        Axis(
            name=name,
            state=model.FAIL if name == axis else model.NOT_RUN,
            rule=rule[name],
            said=f"{cause.get('error')}: {cause.get('message', '')[:160]}" if name == axis and cause else "",
        )
        for name in model.AXES
    )
    return Page(
        kind="check",
        subject=str(data.get("scenario", data.get("factors", {}).get("scenario", "?"))),
        versions=str(data.get("torch", "")),
        passed=False,
        exit_code=exit_code,
        headline=f"FAIL ({label}, exit {exit_code})",
        axes=axes,
        difference=difference,
        links=_links(data),
        text=text,
        data=data,
    )


def check_page(data: dict[str, Any], *, exit_code: int, text: str) -> Page:
    """The page of one check, judged or failed."""
    build = from_judged if "rows" in data else from_failure
    return build(data, exit_code=exit_code, text=text)
