"""The page models of the commands other than check: the operator matrix, `baseline diff`, and the collections
(the upgrade rehearsal, the version matrix) whose parts are check or diff pages. Torch-free."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from compile_guard.page import check_page, model
from compile_guard.page.model import Difference, GridRow, MatrixRow, Page

CHECK_REPORT = "check.json"  # what a matrix check row leaves in its log directory: {exit_code, text, data}


def matrix_page(results: list[dict[str, Any]], *, wall_s: float, text: str = "") -> Page:
    """The operator matrix: every row's outcome and time to fail against its budget; each check row that found
    something (its check's exit is not 0) as a part, its check page."""
    rows, parts = [], []
    for r in results:
        report = Path(r.get("log_dir") or "") / CHECK_REPORT
        anchor = ""
        if report.exists():
            said = json.loads(report.read_text())
            if said["exit_code"] != 0:
                anchor = f"#part-{len(parts)}"
                page = check_page.check_page(said["data"], exit_code=said["exit_code"], text=said["text"])
                parts.append(_titled(page, f"{r['id']}: {page.subject}"))
        rows.append(
            MatrixRow(
                id=r["id"],
                outcome=model.NOT_RUN if r.get("not_run") else model.PASS if r["passed"] else model.FAIL,
                observed=r.get("observed", ""),
                signature=r.get("signature", ""),
                ttf_s=r.get("ttf_s"),
                budget_s=r.get("ttf_budget_s"),
                wall_s=r.get("wall_s", 0.0),
                problems=tuple(r.get("problems", [])),
                report=anchor,
            )
        )
    ran = [m for m in rows if m.outcome != model.NOT_RUN]
    passed = sum(m.outcome == model.PASS for m in ran)
    over = [m.id for m in rows if m.budget_s and (m.ttf_s is None or m.ttf_s > m.budget_s)]
    return Page(
        kind="matrix",
        subject=", ".join(r["id"] for r in results) if len(results) <= 8 else f"{len(results)} rows",
        versions="",
        passed=passed == len(ran),
        exit_code=0 if passed == len(ran) else 1,
        headline=f"{passed}/{len(ran)} rows passed in {wall_s:.1f} s"
        + (f"; over their time-to-fail budget: {', '.join(over)}" if over else ""),
        matrix=tuple(rows),
        parts=tuple(parts),
        text=text,
        data={"rows": results, "wall_s": wall_s},
    )


def _titled(page: Page, subject: str) -> Page:
    return dataclasses.replace(page, subject=subject)


def _as_probes(quality: dict[str, Any]) -> list[dict[str, Any]]:
    """A baseline's per-rank quality in the shape of a run's probes (what check_page's plots read)."""
    probes = []
    for rank, entry in sorted(quality.items()):
        q: dict[str, Any] = {}
        if "accuracy" in entry:
            q["accuracy"] = {"outputs": [{"name": k, "ratio": v.get("ratio")} for k, v in entry["accuracy"].items()]}
        if "speed" in entry:
            q["speed"] = {"samples": entry["speed"].get("samples", [])}
        if entry.get("compile_time"):
            q["compile_time"] = {s: {"total_s": c.get("total_s")} for s, c in entry["compile_time"].items()}
        probes.append({"rank": int(rank.removeprefix("rank")), "quality": q})
    return probes


def diff_page(
    a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, Any]], quality: list[str], *, text: str = ""
) -> Page:
    """`baseline diff A B`: B's metrics against A's, per axis; what the release did to quality; A's and B's
    timings side by side. `a`, `b`: {"path", "factors", "quality"}; `rows`: policy rows (metric, baseline,
    per_rank, verdict) with B as the one rank."""
    grid = [
        GridRow(
            axis=check_page.axis_of(r["metric"]),
            metric=r["metric"],
            baseline=check_page.shown(r["baseline"]),
            cells=model.group_cells([check_page.shown(v) for v in r["per_rank"]]),
            state=check_page.state_of(r, set()),
            verdict=r["verdict"],
        )
        for r in rows
    ]
    grid.sort(key=lambda r: model.AXES.index(r.axis))
    moved = [r for r in grid if r.state in (model.FAIL, model.MOVED)]
    factors = [k for k in sorted(set(a["factors"]) | set(b["factors"])) if a["factors"].get(k) != b["factors"].get(k)]
    difference = Difference(
        title=f"{moved[0].metric}: {moved[0].verdict}" if moved else "no metric moved",
        columns=("what", "A", "B"),
        rows=tuple(
            [(f"factor {k}", str(a["factors"].get(k)), str(b["factors"].get(k))) for k in factors]
            + [(r.metric, r.baseline, r.cells[0].text) for r in moved]
        ),
        text="\n".join(f"quality (A -> B): {line}" for line in quality),
    )
    plots_data = {"probes": _as_probes(b.get("quality") or {}), "baseline_quality": a.get("quality") or {}}
    return Page(
        kind="baseline diff",
        subject=f"{Path(a['path']).name} -> {Path(b['path']).name}",
        versions=f"torch {a['factors'].get('torch', '?')} -> {b['factors'].get('torch', '?')}",
        passed=not any(r.state == model.FAIL for r in grid),
        exit_code=0,
        headline=f"{len(moved)} metric(s) moved" if moved else "no metric moved",
        axes=check_page.axes_of(grid, check_page.rules({})),
        ranks=("B",),
        grid=tuple(grid),
        difference=difference,
        plots=check_page.plots_of(plots_data),
        text=text,
        data={"a": a, "b": b, "rows": rows, "quality": quality},
    )


def collection(
    *,
    kind: str,
    subject: str,
    versions: str,
    summary: Difference,
    parts: list[Page],
    passed: bool,
    text: str = "",
    data: dict[str, Any] | None = None,
) -> Page:
    """A page of pages: the upgrade rehearsal (a check page per scenario) or the version matrix (a diff page per
    scenario and pair of releases), under one summary table."""
    failed = [p.subject for p in parts if not p.passed]
    return Page(
        kind=kind,
        subject=subject,
        versions=versions,
        passed=passed,
        exit_code=0 if passed else 1,
        headline="PASS" if passed and not failed else f"FAIL: {', '.join(failed) or 'see the table'}",
        summary=summary,
        parts=tuple(parts),
        text=text,
        data=data or {},
    )
