"""The direction policy: every verdict, and what each flag relaxes or tightens."""

from __future__ import annotations

import pytest

from compile_guard.health import policy

BASE = {
    "graph_breaks": 2,
    "unique_graphs": 3,
    "recompiles": 0,
    "steady_recompiles": 0,
    "break_reasons": {"gb0098: disable": 2},
    "graph_fingerprints": ["a", "b", "c"],
    "collectives_in_graphs": 20,
    "guard_count": 100,
    "graph_ops": 400,
    "effective_backend": {"attn_impl": "sdpa"},
    "rank_varying_constants": {"m.py forward: lt args.1": 1},
}
SCALE = "m.py forward: mul args.1"  # `scale = 0.5 if rank == 1`: a rank-varying site the baseline lacks


def _verdicts(**changes) -> dict[str, str]:
    current = {**BASE, **changes}
    return {r.metric: r.verdict for r in policy.compare(BASE, [current, current])}


@pytest.mark.parametrize(
    "changes, metric, verdict",
    [
        ({}, "graph_breaks", policy.OK),
        ({"graph_breaks": 3}, "graph_breaks", policy.REGRESSION),
        ({"graph_breaks": 1}, "graph_breaks", policy.IMPROVEMENT),
        ({"unique_graphs": 4}, "unique_graphs", policy.REGRESSION),
        ({"recompiles": 1}, "recompiles", policy.REGRESSION),
        ({"steady_recompiles": 2}, "steady_recompiles", policy.REGRESSION),
        ({"break_reasons": {"gb0098: disable": 2, "gb0007: print": 1}}, "break: print", policy.REGRESSION),
        ({"break_reasons": {"gb0098: disable": 3}}, "break: disable", policy.REGRESSION),
        ({"break_reasons": {}}, "break: disable", policy.IMPROVEMENT),
        (
            {"rank_varying_constants": {**BASE["rank_varying_constants"], SCALE: 1}},
            f"rank-varying: {SCALE}",
            policy.REGRESSION,
        ),
        ({}, "rank-varying: m.py forward: lt args.1", policy.OK),  # the vocab offset the baseline holds
        ({"graph_fingerprints": ["a", "b", "x"]}, "graph_fingerprints", policy.CHANGED),
        ({"guard_count": 90}, "guard_count", policy.CHANGED),
        ({"effective_backend": {"attn_impl": "math"}}, "effective_backend", policy.CHANGED),
    ],
)
def test_verdicts(changes, metric, verdict):
    assert _verdicts(**changes)[metric] == verdict


def test_worst_rank_decides():
    rows = policy.compare(BASE, [BASE, {**BASE, "graph_breaks": 5}])
    row = next(r for r in rows if r.metric == "graph_breaks")
    assert row.per_rank == [2, 5] and row.verdict == policy.REGRESSION


def test_outcome_flags():
    rows = policy.compare(BASE, [{**BASE, "graph_breaks": 1}])
    assert policy.outcome(rows, allow_improvement=False, strict=False)[0] is False  # improvement fails by default
    assert policy.outcome(rows, allow_improvement=True, strict=False)[0] is True
    changed = policy.compare(BASE, [{**BASE, "guard_count": 1}])
    assert policy.outcome(changed, allow_improvement=False, strict=False)[0] is True  # reported only
    assert policy.outcome(changed, allow_improvement=False, strict=True)[0] is False
    regressed = policy.compare(BASE, [{**BASE, "unique_graphs": 9}])
    passed, problems = policy.outcome(regressed, allow_improvement=True, strict=False)
    assert not passed and problems == ["unique_graphs: 3 -> [9] (regression)"]


def test_collectives_leaving_the_graph_is_a_regression_more_is_reported():
    assert _verdicts(collectives_in_graphs=0)["collectives_in_graphs"] == policy.REGRESSION  # the compile cliff
    assert _verdicts(collectives_in_graphs=24)["collectives_in_graphs"] == policy.CHANGED
    assert _verdicts()["collectives_in_graphs"] == policy.OK


def test_no_graph_while_compile_is_on_is_a_regression_whatever_the_baseline():
    zeros = {**BASE, "unique_graphs": 0, "graph_breaks": 0, "break_reasons": {}}
    rows = policy.nothing_compiled([zeros, {**BASE}], compile_on=True)
    assert [(r.metric, r.per_rank, r.verdict) for r in rows] == [(policy.NOTHING_COMPILED, [0, 3], policy.REGRESSION)]
    assert policy.nothing_compiled([zeros, zeros], compile_on=False) == []  # eager on purpose: nothing to compile
