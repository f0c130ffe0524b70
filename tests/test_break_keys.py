"""One break, one key: across ranks (2.6 states object addresses), across torch releases (titles renamed), and
from dynamo's counter to its log record (so a reason can be traced to its sites). No process group."""

from __future__ import annotations

import logging

import torch

from compile_guard.health import policy
from compile_guard.health.policy import reason_key
from compile_guard.health.probe import CompileProbe
from compile_guard.health.sites import BreakSites
from engine.compile import CompileConfig, CompiledRegion

# The same break (a call of a torch.compiler.disable()d function) as three releases count it, measured with
# each release's dynamo on 2026-12-02 (`counters["graph_break"]` keys):
COUNTER_2_6 = "call torch._dynamo.disable() wrapped function <function _f at 0x7f91042cbce0>"
COUNTER_2_7 = (
    "Skip calling `torch.compiler.disable()`d function\n  Explanation: Skip calling function `<function _f"
    " at 0x7fe1bab598a0>` since it was wrapped with `torch.compiler.disable`\n"
)
COUNTER_2_8 = COUNTER_2_7 + " For more details about this graph break, please visit: .../gb/gb0098.html"
# and the log records of the graph-break artifact logger, as 2.6 and 2.8 write them
RECORD_2_6 = (
    "Graph break in user code at /w/engine/collectives.py:78\nReason: Unsupported: call"
    " torch._dynamo.disable() wrapped function <function _f at 0x7f5821d35260>\nUser code traceback:\n"
    '  File "x.py", line 4\n'
)
RECORD_2_8 = (
    "Graph break in user code at /w/engine/collectives.py:78\nGraph Break Reason: Skip calling"
    " `torch.compiler.disable()`d function\n  Explanation: Skip calling function `<function _f at"
    " 0x7fdd>`\n For more details about this graph break, please visit: .../gb/gb0098.html\n"
    "User code traceback:\n"
)


def test_2_6_addresses_differ_by_rank_the_key_does_not():
    """torch 2.6's message names the function with its address: two ranks of one program, two addresses."""
    other_rank = COUNTER_2_6.replace("0x7f91042cbce0", "0x7f0a11c2ab00")
    key = "call torch._dynamo.disable() wrapped function <function _f>"
    assert reason_key(COUNTER_2_6) == reason_key(other_rank) == key


def test_2_7_and_2_8_counters_are_one_key():
    assert reason_key(COUNTER_2_7) == reason_key(COUNTER_2_8) == "Skip calling `torch.compiler.disable()`d function"


def _sites_of(record: str) -> BreakSites:
    handler = BreakSites()
    handler.emit(logging.LogRecord("x", logging.DEBUG, "x", 0, record, None, None))
    return handler


def test_a_log_record_carries_the_counters_key_on_2_6_and_2_8():
    """The site's key is the reason's key: 2.6's record says "Reason: Unsupported: ...", its counter does not."""
    for record, counter in ((RECORD_2_6, COUNTER_2_6), (RECORD_2_8, COUNTER_2_8)):
        ((gb, key, site),) = _sites_of(record).breaks
        assert (key, site) == (reason_key(counter), "engine/collectives.py:78")
    assert [gb for gb, _, _ in _sites_of(RECORD_2_8).breaks] == ["gb0098"]
    assert _sites_of(RECORD_2_8).sites == {("gb0098", "engine/collectives.py:78"): 1}


def _side(reasons: dict[str, int], sites: list[tuple[str, str, int]]) -> tuple[dict, list]:
    return {"break_reasons": reasons}, [{"reason": "?", "key": k, "site": s, "count": n} for k, s, n in sites]


ITEM_2_7, ITEM_2_8 = "Tensor.item", "Unsupported Tensor.item() call with capture_scalar_outputs=False"


def test_a_title_the_release_renamed_is_one_break_by_its_sites():
    """2.7 calls it "Tensor.item", 2.8 a longer title: the same break at the same two sites (2 + 1 hits)."""
    base, base_sites = _side({ITEM_2_7: 3}, [(ITEM_2_7, "m.py:10", 2), (ITEM_2_7, "m.py:20", 1)])
    run, run_sites = _side({ITEM_2_8: 3}, [(ITEM_2_8, "m.py:20", 1), (ITEM_2_8, "m.py:10", 2)])
    renamed, notes = policy.across_releases(base, base_sites, [run, run], [run_sites, run_sites])
    assert [m["break_reasons"] for m in renamed] == [{ITEM_2_7: 3}, {ITEM_2_7: 3}]
    assert len(notes) == 1 and ITEM_2_8 in notes[0]
    rows = [r for r in policy.compare(base, renamed) if r.metric.startswith("break: ")]
    assert [(r.metric, r.verdict) for r in rows] == [(f"break: {ITEM_2_7}", policy.OK)]


def test_a_new_break_at_another_site_is_still_a_regression():
    """The other way: a renamed title whose sites moved, or were hit more, is not matched — the program changed."""
    base, base_sites = _side({ITEM_2_7: 2}, [(ITEM_2_7, "m.py:10", 2)])
    for sites in (
        [(ITEM_2_8, "m.py:11", 2)],
        [(ITEM_2_8, "m.py:10", 3)],
        [(ITEM_2_8, "m.py:10", 2), (ITEM_2_8, "m.py:30", 1)],
    ):
        run, run_sites = _side({ITEM_2_8: sum(n for *_, n in sites)}, sites)
        renamed, notes = policy.across_releases(base, base_sites, [run], [run_sites])
        assert notes == [] and renamed[0]["break_reasons"] == {ITEM_2_8: run["break_reasons"][ITEM_2_8]}
        verdicts = {r.metric: r.verdict for r in policy.compare(base, renamed)}
        assert verdicts[f"break: {ITEM_2_8}"] == policy.REGRESSION


def test_two_gone_reasons_with_one_footprint_match_neither():
    """Ambiguous (two old titles hit at the same site the same number of times): no guess, both rows stay."""
    base, base_sites = _side({"a": 1, "b": 1}, [("a", "m.py:1", 1), ("b", "m.py:1", 1)])
    run, run_sites = _side({"c": 1}, [("c", "m.py:1", 1)])
    assert policy.across_releases(base, base_sites, [run], [run_sites])[1] == []


def test_baseline_sites_without_a_key_match_nothing():
    """A baseline written before sites carried a key: no rename is invented."""
    base = {"break_reasons": {ITEM_2_7: 1}}
    run, run_sites = _side({ITEM_2_8: 1}, [(ITEM_2_8, "m.py:10", 1)])
    assert policy.across_releases(base, [{"reason": "?", "site": "m.py:10", "count": 1}], [run], [run_sites])[1] == []


def test_the_agreements_title_of_a_2_6_break_is_the_same_on_every_rank():
    """The compile agreement states each new break as "id: title": rank-local addresses would make every break
    of a 2.6 job look asymmetric (measured: C-02-disable stopped as a divergence on 2.6 before this)."""
    other_rank = RECORD_2_6.replace("0x7f5821d35260", "0x7f00aa11bb22")
    assert (
        _sites_of(RECORD_2_6).titles
        == _sites_of(other_rank).titles
        == {"?": "call torch._dynamo.disable() wrapped function <function _f>"}
    )


@torch.compiler.disable
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def _two_breaks(x: torch.Tensor) -> torch.Tensor:
    y = _opaque(x * 2)  # a disable()d call: one break
    return y * y.sum().item()  # a data-dependent scalar: another (capture_scalar_outputs is off by default)


def test_every_counted_reason_is_traced_to_its_sites_on_the_installed_torch():
    """The rename across releases needs each counted reason's sites: the key the counter gives and the key the
    log record gives must be one, on whatever torch runs this suite."""
    torch._dynamo.reset()
    region = CompiledRegion("t", _two_breaks, CompileConfig(enabled=True, backend="eager"))
    probe = CompileProbe(region)
    region(torch.ones(3))
    health = probe.snapshot()
    assert len(health["break_reasons"]) == 2  # the two breaks above, by two titles
    assert {s["key"] for s in health["break_sites"]} == set(health["break_reasons"])
    for s in health["break_sites"]:
        assert "0x" not in s["key"] and s["site"].startswith("test_break_keys.py:")
