"""What a reviewer's page holds, as data: one model that the HTML page and the Markdown summary both render, so
the two never disagree. Torch-free; built from the JSON a command writes (compile_guard.page.build).

A page reads top to bottom: the verdict banner (the subject, the torch versions, pass or fail per axis with the
rule that decided it), the check x rank grid, the first difference side by side, plots, the operator matrix's
rows, and links to what the run left on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# the axes a check is judged on, in the order a reviewer reads them
STRUCTURE, ISSUED, SETTINGS, ACCURACY, DRIFT, SPEED, COMPILE, MEMORY = (
    "structure",
    "issued schedule",
    "settings",
    "accuracy",
    "cross-rank drift",
    "speed",
    "compile time",
    "memory",
)
AXES = (STRUCTURE, ISSUED, SETTINGS, ACCURACY, DRIFT, SPEED, COMPILE, MEMORY)
# a cell's or an axis's state, each with its colour in the page: what failed, what moved but passed, what is fine
PASS, FAIL, MOVED, NOTED, NOT_RUN = "pass", "fail", "moved", "noted", "not run"


@dataclass(frozen=True, kw_only=True)
class Axis:
    """One axis of the verdict banner."""

    name: str  # one of AXES
    state: str  # PASS, FAIL, MOVED (changed or improved, reported), NOTED (reported, not judged), NOT_RUN
    rule: str  # the rule or threshold that decided it, in words (e.g. "compiled step x1.05, alpha 0.001")
    said: str = ""  # what decided it in this run (the failing metric, the verdict's kind)


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One rank's value of one metric, or several ranks' when they agree (`ranks` > 1: grouped)."""

    text: str  # the value as shown
    ranks: int = 1  # how many adjacent ranks share it (the page spans their columns)


@dataclass(frozen=True, kw_only=True)
class GridRow:
    """One metric of the check x rank grid."""

    axis: str  # one of AXES
    metric: str  # the report's metric name
    baseline: str  # the baseline's value as shown
    cells: tuple[Cell, ...]  # per rank, adjacent equal values grouped
    state: str  # PASS, FAIL, MOVED, NOTED
    verdict: str  # the report's own word (ok, regression, changed, not comparable, ...)


@dataclass(frozen=True, kw_only=True)
class Difference:
    """The first difference, side by side: the columns (ranks, or baseline and run, or A and B) and rows."""

    title: str  # what differs, in a line
    columns: tuple[str, ...]  # the header: "what", then one column per side
    rows: tuple[tuple[str, ...], ...]  # each as long as `columns`
    facts: tuple[tuple[str, str], ...] = ()  # what the detecting rank's proof names (kind, fields, first collective)
    text: str = ""  # the report's own words (a divergence table, the lines that explain a verdict)


@dataclass(frozen=True, kw_only=True)
class Plot:
    """A figure, as data; compile_guard.page.plots draws it (inline SVG)."""

    id: str  # an HTML id: accuracy, speed, compile
    title: str  # the figure's title
    caption: str  # what to read in it, and the test's figures (p, MDE) where it has them
    kind: str  # "accuracy" | "speed" | "compile": which drawing
    series: dict[str, Any]  # the drawing's data (see compile_guard.page.plots)


@dataclass(frozen=True, kw_only=True)
class MatrixRow:
    """One row of the operator matrix: outcome and time to fail against its budget."""

    id: str  # the row's id (C-03, NU-01, ...)
    outcome: str  # PASS, FAIL or NOT_RUN
    observed: str  # the exit codes seen
    signature: str  # the detecting event as logged
    ttf_s: float | None  # time to fail (None: nothing fails in this row, or not measured)
    budget_s: float | None  # the row's budget for it
    wall_s: float  # the row's wall time
    problems: tuple[str, ...]  # why it failed
    report: str = ""  # the row's check page, a relative link, where one was written


@dataclass(frozen=True, kw_only=True)
class Link:
    label: str  # what it is
    path: str  # where it is, absolute (the page links it relative to where the page is written)
    exists: bool = True  # whether the target was there when the page was written


@dataclass(frozen=True, kw_only=True)
class Page:
    """A whole page."""

    kind: str  # "check", "matrix", "baseline diff", "upgrade rehearsal", "version matrix"
    subject: str  # the scenario or target, the rows, the two baselines
    versions: str  # "torch A -> B" or "baseline torch A, run on torch B"
    passed: bool
    exit_code: int
    headline: str  # the verdict in a line
    axes: tuple[Axis, ...] = ()
    ranks: tuple[str, ...] = ()  # the grid's rank columns
    grid: tuple[GridRow, ...] = ()
    difference: Difference | None = None
    plots: tuple[Plot, ...] = ()
    matrix: tuple[MatrixRow, ...] = ()
    links: tuple[Link, ...] = ()
    summary: Difference | None = None  # a rehearsal's or a version matrix's table, one row per scenario or release
    parts: tuple[Page, ...] = ()  # a rehearsal's or a version matrix's pages, one per scenario or release
    text: str = ""  # the terminal report, whole
    data: dict[str, Any] = field(default_factory=dict)  # the JSON the page was rendered from (embedded)

    def sections(self) -> list[str]:
        """The ids of the sections this page shows, in order (the browser test looks for each)."""
        found = ["verdict"]
        found += ["summary"] if self.summary is not None else []
        found += ["grid"] if self.grid else []
        found += ["difference"] if self.difference is not None else []
        found += [f"plot-{p.id}" for p in self.plots]
        found += ["matrix"] if self.matrix else []
        found += ["links"] if self.links else []
        found += [f"part-{i}" for i in range(len(self.parts))]
        return found


def group_cells(values: list[str]) -> tuple[Cell, ...]:
    """Adjacent ranks with the same value share one cell."""
    cells: list[Cell] = []
    for value in values:
        if cells and cells[-1].text == value:
            cells[-1] = Cell(text=value, ranks=cells[-1].ranks + 1)
        else:
            cells.append(Cell(text=value))
    return tuple(cells)
