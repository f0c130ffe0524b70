"""A page model rendered: one self-contained HTML file (jinja2's template, matplotlib's inline SVG, the JSON it
was rendered from embedded) and the Markdown summary of a CI job's page, both from the same model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from compile_guard.page.model import Page

TEMPLATES = Path(__file__).parent / "templates"
DATA_ID = "report-data"  # the <script type="application/json"> element that holds the page's JSON


def _embedded(data: dict[str, Any]) -> str:
    """The JSON for a <script> element: `<` escaped, so no value can close the element early."""
    return json.dumps(data, sort_keys=True, default=str).replace("<", "\\u003c")


def html(page: Page, where: Path | None = None) -> str:
    """The page as one HTML file; `where`: the file it will be written to (links are made relative to it, so a
    page unpacked beside its dumps still finds them), else they are absolute file:// links."""
    import jinja2
    from markupsafe import Markup

    from compile_guard.page import plots

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a field the template names and the model lacks fails here, not silently
        keep_trailing_newline=True,
    )
    env.filters["css"] = lambda state: str(state).replace(" ", "-")
    template = env.get_template("page.html.j2")

    def href(path: str) -> str:
        if where is None:
            return Path(path).as_uri()
        return quote(os.path.relpath(path, Path(where).resolve().parent))

    return template.render(
        page=page,
        href=href,
        draw=lambda plot: Markup(plots.svg(plot)),  # matplotlib's own SVG: markup, not text
        data_json=Markup(_embedded(page.data)),
    )


def embedded_data(text: str) -> dict[str, Any]:
    """The JSON a page was rendered from, read back out of its HTML."""
    start = text.index(f'<script type="application/json" id="{DATA_ID}">') + len(
        f'<script type="application/json" id="{DATA_ID}">'
    )
    return json.loads(text[start : text.index("</script>", start)])


def _cell(text: str, width: int = 60) -> str:
    return (text if len(text) <= width else text[: width - 3] + "...").replace("|", "\\|")


def markdown(page: Page) -> str:
    """The page as Markdown (GitHub's $GITHUB_STEP_SUMMARY, say): the verdict, the axes, every row, the first
    difference, the matrix."""
    verdict = "PASS" if page.passed else f"FAIL (exit {page.exit_code})"
    lines = [f"### compile_guard {page.kind} `{page.subject}`: {verdict}", "", page.versions, ""]
    if page.axes:
        lines += ["| axis | verdict | rule | decided by |", "|---|---|---|---|"]
        lines += [f"| {a.name} | {a.state} | {_cell(a.rule, 200)} | {_cell(a.said, 200)} |" for a in page.axes]
        lines.append("")
    if page.grid:
        lines += [
            "| metric | baseline | " + " | ".join(page.ranks) + " | verdict |",
            "|---" * (len(page.ranks) + 3) + "|",
        ]
        for row in page.grid:
            cells = [_cell(c.text) for c in row.cells for _ in range(c.ranks)]
            mark = "**regression**" if row.verdict == "regression" else row.verdict
            lines.append(f"| {_cell(row.metric)} | {_cell(row.baseline)} | " + " | ".join(cells) + f" | {mark} |")
    if page.data.get("problems"):
        lines += ["", "Failed:", *(f"- {p}" for p in page.data["problems"])]
    if page.data.get("quality_lines"):
        lines += ["", "Quality:", *(f"- {line}" for line in page.data["quality_lines"])]
    if page.difference is not None and not page.grid:
        lines += ["", f"First difference: {page.difference.title}", "", "```", page.text.strip(), "```"]
    if page.matrix:
        lines += ["", "| row | outcome | time to fail / budget | why |", "|---|---|---|---|"]
        for m in page.matrix:
            ttf = "n/a" if m.ttf_s is None else f"{m.ttf_s:.3f} s"
            budget = f" / {m.budget_s} s" if m.budget_s else ""
            lines.append(f"| {m.id} | {m.outcome} | {ttf}{budget} | {_cell('; '.join(m.problems))} |")
    if not page.grid and not page.matrix and page.difference is None:
        lines += ["```", page.text.strip(), "```"]
    return "\n".join([*lines, ""])
