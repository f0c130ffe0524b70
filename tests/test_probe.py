"""Compile probe on one process (no process group): reasons, sites, recompiles, graphs."""

from __future__ import annotations

import inspect

import torch

from compile_guard.health.policy import reason_key
from compile_guard.health.probe import CompileProbe, relative_site
from compile_guard.health.schema import symmetric_view
from engine.compile import CompileConfig, CompiledRegion

MESSAGE = (
    "Skip calling `torch.compiler.disable()`d function\n  Explanation: Skip calling function `<function f at "
    "0x7f00>`\n\n For more details about this graph break, please visit: "
    "https://meta-pytorch.github.io/compile-graph-break-site/gb/gb0098.html"
)


# the same break as torch 2.7 states it: the title and explanation, no registry id (no URL)
MESSAGE_2_7 = "Skip calling `torch.compiler.disable()`d function\n  Explanation: Skip calling function `<function f>`"


def test_reason_key_drops_object_reprs():
    assert reason_key(MESSAGE) == "Skip calling `torch.compiler.disable()`d function"
    assert reason_key("some break without a registry id\nmore") == "some break without a registry id"


def test_one_break_is_one_key_across_the_2_7_to_2_8_upgrade():
    """2.8+ messages carry the registry id (gb0098), 2.7's do not: one key, and a baseline written with the id
    (before this key dropped it) compares equal to a run without it — no false "new break reason" on upgrade day."""
    from compile_guard.health import policy

    assert reason_key(MESSAGE) == reason_key(MESSAGE_2_7)
    base = {"break_reasons": {"gb0098: Skip calling `torch.compiler.disable()`d function": 2}}
    run = {"break_reasons": {reason_key(MESSAGE_2_7): 2}}
    rows = [r for r in policy.compare(base, [run, run]) if r.metric.startswith("break: ")]
    assert [(r.metric, r.verdict) for r in rows] == [
        ("break: Skip calling `torch.compiler.disable()`d function", policy.OK)
    ]


def test_relative_site_is_portable():
    assert relative_site("/work/main/engine/collectives.py", 78) == "engine/collectives.py:78"
    assert relative_site("/x/lib/python3.11/site-packages/torch/nn/functional.py", 5) == "torch/nn/functional.py:5"
    assert relative_site("/tmp/other.py", 1) == "other.py:1"


def _break_fn(x):
    y = x * 2
    torch._dynamo.graph_break()  # one explicit break: two graphs
    return y + 1


def test_probe_counts_breaks_sites_graphs_and_recompiles():
    torch._dynamo.reset()
    region = CompiledRegion("t", _break_fn, CompileConfig(enabled=True, backend="eager"))
    probe = CompileProbe(region)
    region(torch.ones(3))
    first = probe.snapshot()
    assert first["graph_breaks"] == 1  # the explicit graph_break()
    assert first["unique_graphs"] == 2  # one graph either side of it
    assert len(first["graph_fingerprints"]) == 2 and first["recompiles"] == 0
    lines, start = inspect.getsourcelines(_break_fn)
    break_line = start + next(i for i, line in enumerate(lines) if "graph_break()" in line)
    assert [s["site"] for s in first["break_sites"]] == [f"test_probe.py:{break_line}"]
    region(torch.ones(3, dtype=torch.float64))  # new dtype: a guard fails, each frame recompiles
    second = probe.snapshot()
    assert second["recompiles"] >= 1
    # dynamo's reason names the failed guard; 2.6's metrics carry none, and the probe says so (never "?")
    from compile_guard import compat

    expected = "dtype" if compat.torch_release() >= (2, 7) else compat.NO_RECOMPILE_REASON[:40]
    assert any(expected in r["reason"] for r in second["recompile_reasons"]), second["recompile_reasons"]
    assert symmetric_view(second)["recompiles"] == second["recompiles"]


def test_graph_fingerprint_is_deterministic_and_counts_ops():
    def fn(x):
        return torch.relu(x) + 1

    prints = []
    for _ in range(2):
        torch._dynamo.reset()
        region = CompiledRegion("t", fn, CompileConfig(enabled=True, backend="eager"))
        probe = CompileProbe(region)
        region(torch.ones(2))
        prints.append(probe.snapshot())
    assert prints[0]["graph_fingerprints"] == prints[1]["graph_fingerprints"]
    assert prints[0]["graphs"][0]["op_counts"] == {"add": 1, "relu": 1}
    assert prints[0]["collectives_in_graphs"] == 0


def _scaled(x, scale):
    return x * scale.item()  # torch 2.6-2.7 on a recompile: a float attribute lifted to a tensor input, read back


def test_retrace_reads_a_lifted_scalar_from_the_compiles_input():
    """The DTensor schedule re-trace runs under fake tensors, which cannot answer `.item()` (2.7 failed ST-01-dtensor
    with exit 3 on it): the scalar is read from this compile's real input, so each rank reads its own value."""
    from compile_guard.health.schedule import retrace

    gm = torch.fx.symbolic_trace(_scaled)
    for value in (0.5, 2.0):
        traced = retrace(gm, [torch.ones(3), torch.tensor(value)])
        muls = [n for n in traced.graph.nodes if n.op == "call_function" and "mul" in str(n.target)]
        assert [n.args[1] for n in muls] == [value]  # the real value, a constant of the traced graph
