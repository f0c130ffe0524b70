"""The page's figures, drawn by matplotlib as inline SVG (text kept as text, no network, no script): accuracy per
output, speed samples per rank, compile time per cache state, each the baseline beside the run. Imported only
when a page is written: matplotlib costs a second to import."""

from __future__ import annotations

import io
from typing import Any

from compile_guard.page.model import Plot

BASELINE_COLOUR, RUN_COLOURS = "#9e9e9e", ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
FAIL_LINE = "#d62728"


def _figure(width: float = 7.0, height: float = 3.2) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: the page is a file
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any, salt: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):  # text as text; stable ids per plot
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # the same run, the same page
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration, no doctype


def _grouped(ax: Any, groups: list[str], series: list[tuple[str, str, list[float | None]]]) -> None:
    """Bars per group, one per series (label, colour, a value per group; None: no bar)."""
    width = 0.8 / max(1, len(series))
    for i, (label, colour, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None and v > 0]
        if shown:
            ax.bar([x for x, _ in shown], [v for _, v in shown], width=width, label=label, color=colour)
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize=8, loc="best")


def accuracy(plot: Plot) -> str:
    s = plot.series
    fig = _figure()
    ax = fig.add_subplot()
    outputs = s["outputs"]
    series = [("baseline", BASELINE_COLOUR, [s["baseline"].get(o) for o in outputs])]
    series += [
        (rank, RUN_COLOURS[i % len(RUN_COLOURS)], [ratios.get(o) for o in outputs])
        for i, (rank, ratios) in enumerate(sorted(s["ranks"].items()))
    ]
    _grouped(ax, outputs, series)
    ax.set_yscale("log")
    ax.axhline(3.0, color=FAIL_LINE, linestyle="--", linewidth=1)
    ax.set_ylabel("error vs fp64 / eager's")
    ax.set_title(plot.title, fontsize=9)
    return _svg(fig, plot.id)


def speed(plot: Plot) -> str:
    ranks = sorted(plot.series["ranks"].items())
    fig = _figure()
    ax = fig.add_subplot()
    data, labels, colours = [], [], []
    for i, (rank, sides) in enumerate(ranks):
        for side in ("baseline", "run"):
            if sides[side]:
                data.append(sides[side])
                labels.append(f"{rank}\n{side}")
                colours.append(BASELINE_COLOUR if side == "baseline" else RUN_COLOURS[i % len(RUN_COLOURS)])
    if data:
        parts = ax.boxplot(data, tick_labels=labels, patch_artist=True, widths=0.5)
        for patch, colour in zip(parts["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        for x, (values, colour) in enumerate(zip(data, colours, strict=True), start=1):
            ax.plot([x] * len(values), values, ".", color=colour, markersize=3)
    ax.set_ylabel("speedup (eager / compiled)")
    ax.set_title(plot.title, fontsize=9)
    return _svg(fig, plot.id)


def compile_time(plot: Plot) -> str:
    states = sorted(plot.series["states"].items())
    ranks = sorted({rank for _, slot in states for rank in slot["ranks"]})
    fig = _figure()
    ax = fig.add_subplot()
    series = [("baseline", BASELINE_COLOUR, [slot["baseline"] for _, slot in states])]
    series += [
        (rank, RUN_COLOURS[i % len(RUN_COLOURS)], [slot["ranks"].get(rank) for _, slot in states])
        for i, rank in enumerate(ranks)
    ]
    _grouped(ax, [state for state, _ in states], series)
    ax.set_ylabel("compile CPU seconds")
    ax.set_title(plot.title, fontsize=9)
    return _svg(fig, plot.id)


DRAW = {"accuracy": accuracy, "speed": speed, "compile": compile_time}


def svg(plot: Plot) -> str:
    """The plot as an inline <svg> element."""
    return DRAW[plot.kind](plot)
