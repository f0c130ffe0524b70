"""The agreement protocol over thousands of randomised schedules (tests/protocol_sim.py; one process).

Topology: N = 2-4 simulated ranks in one group, an in-memory store, virtual time (stall_s = 10).
Every schedule is generated from its seed, which every failure message names: rerun one with
`python -c "from tests.test_protocol_sim import replay; replay('healthy', 123)"`.

- healthy schedules (late compiles, pauses, idle periods, symmetric recompiles, cache hits, a second
  frame, eager collectives, rank-varying constants, a rank-only graph break whose streams line up, a
  break on every rank at the same place; blocking and run-ahead collectives): no rank is ever stopped,
  none hangs — while ranks hold different slots for a moment (one still holds the last graph, another
  the next), the wait-for rules never fire;
- divergent schedules (each CD kind, the ledger's mismatch, a break whose streams part, strict
  constants, a stop asked for on an asymmetry; a frame one rank skipped and two ranks breaking one frame
  at different places, proven by the wait-for rules at once): a verdict of the expected kind stands, every rank
  that did not finish first is stopped, and no divergent collective ever ran;
- stalls (a peer stuck alive, a peer frozen for good): the stall verdict, with every rank's row
  (the frozen one as "no answer").
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest

from compile_guard.agreement import compare
from tests.protocol_sim import Graph, Plan, Sim, Step

STALL_S = 10.0
SEEDS = 600  # healthy: 600 x 2 (blocking, run-ahead); divergent: 100 x 12 kinds; stalls: 300 x 2 -> 3,000 schedules


def _ar(n: int, variant: int, i: int, extra: int = 0) -> dict[str, Any]:
    return {
        "op": "all_reduce",
        "group": {"name": "g", "ranks": list(range(n))},
        "shape": [8 + variant + extra, i],
        "dtype": "f32",
        "reduce_op": "sum",
    }


def _graph(frame: str, variant: int, n: int, rank: int, *, varying: bool) -> Graph:
    k = 2 + variant % 3
    return Graph(
        fingerprint=f"{frame}-{variant}",
        collectives=[_ar(n, variant, i) for i in range(k)],
        constants=[[0, "args.1", 128 * rank if varying else 7], [1, "args.0", 3]],
    )


def _split(g: Graph, at: int, *, rest_extra: int = 0) -> Graph:
    """A rank-only graph break: the first `at` collectives in the frame's graph, the rest in its resume's."""
    rest = [{**c, "shape": [c["shape"][0] + rest_extra, c["shape"][1]]} for c in g.collectives[at:]]
    return Graph(
        fingerprint=f"{g.fingerprint}-a{at}",
        collectives=g.collectives[:at],
        constants=g.constants,
        breaks=[
            {
                "reason": "gb0059: Failed to trace builtin operator",
                "site": f"sim.py:{9 + at}",
                "count": 1,
                "source": "print('debug')",
            }
        ],
        rest=Graph(fingerprint=f"{g.fingerprint}-b{at}", collectives=rest, constants=[]),
        rest_name=f"resume_at{at}",
        split=[f"sim.py:{9 + at}"],
    )


def _healthy(
    rng: random.Random, *, n: int | None = None, quiet: bool = True, scale: float = 1.0
) -> tuple[list[Plan], dict[str, Any]]:
    """`scale`: quiet periods' share of the stall window. Blocking collectives keep a holder at most one step
    ahead of any peer, so one period per step stays under the window; run-ahead collectives let it be up to
    three steps ahead (ASYNC_QUEUE), where an unguarded job's oldest collective waits through three periods:
    1/3 keeps the healthy family inside what the unguarded job itself survives."""
    n = n or rng.choice([2, 2, 3, 4])
    varying = rng.random() < 0.5
    variants, current, shape = [], 0, []
    for i in range(rng.randint(4, 10)):
        if rng.random() < 0.15:
            shape.append(("eager", None))
            continue
        frame = "G" if rng.random() < 0.15 else "F"
        if i > 0 and rng.random() < 0.25:  # a symmetric recompile (a new shape on every rank), or a cache hit
            current = rng.choice(variants) if variants and rng.random() < 0.3 else len(variants) + 1
        variants.append(current)
        shape.append((frame, current))
    plans = []
    for r in range(n):
        graphs = {(f, v): _graph(f, v, n, r, varying=varying) for f, v in shape if f != "eager"}
        steps = []
        for f, v in shape:
            step = (
                Step(kind="eager", eager={"op": "broadcast", "args": {"shape": [4]}})
                if f == "eager"
                else Step(kind="call", frame=f, variant=v)
            )
            if quiet:
                roll = rng.random()  # at most one quiet period per step, each under the stall window
                if roll < 0.2:
                    step.delay_s = rng.uniform(0, 0.85 * STALL_S * scale)
                elif roll < 0.3:
                    step.pause_s = rng.uniform(0, 0.6 * STALL_S * scale)
                step.trace_s = rng.choice([0.0, rng.uniform(0, 3 * STALL_S)])  # busy: a long trace is progress
                step.compile_s = rng.choice([0.0, rng.uniform(0, STALL_S)])
            steps.append(step)
        plans.append(Plan(steps=steps, graphs=graphs))
    roll = rng.random()
    call = next((s for s in plans[0].steps if s.kind == "call"), None)
    if roll < 0.15 and call is not None:  # a rank-only graph break whose streams line up: an asymmetry, reported
        r = rng.randrange(n)
        g = plans[r].graphs[(call.frame, call.variant)]
        plans[r].graphs[(call.frame, call.variant)] = _split(g, rng.randint(1, len(g.collectives) - 1))
    elif roll < 0.25 and call is not None:  # a break on every rank at the same place: one resume function each
        at = rng.randint(1, len(plans[0].graphs[(call.frame, call.variant)].collectives) - 1)
        for plan in plans:
            plan.graphs[(call.frame, call.variant)] = _split(plan.graphs[(call.frame, call.variant)], at)
    return plans, {"n": n}


def _calls(plan: Plan) -> list[int]:
    return [i for i, s in enumerate(plan.steps) if s.kind == "call"]


def _first_compiles(plan: Plan) -> list[int]:
    seen, found = set(), []
    for i, s in enumerate(plan.steps):
        if s.kind == "call" and (s.frame, s.variant) not in seen:
            seen.add((s.frame, s.variant))
            found.append(i)
    return found


DIVERGENCES = {  # kind -> the verdict kinds that prove it caught
    "recompile_same": {"other_graph"},
    "recompile_shape": {"other_graph"},
    "extra": {"mismatch"},
    "shape": {"mismatch"},
    "settings": {"mismatch"},
    "break_parts": {"mismatch"},
    "strict_constants": {"mismatch"},
    "asymmetry_stop": {"asymmetry"},
    "eager_extra": {"mismatch", "ended"},
    # rule 7, a wait-for cycle: one rank's frame skipped (a break in a loop: its callee compiled as a frame of its
    # own), or two ranks breaking one frame at different places (each holds its own resume function)
    "frame_skip": {"cycle"},
    "break_both": {"cycle", "split"},
    # rule 9: the same graph, a pass that decided otherwise on one rank (two collectives swapped in the issued code)
    "issued": {"issued"},
}


def _divergent(rng: random.Random, kind: str, *, blocking: bool) -> tuple[list[Plan], dict[str, Any]]:
    quiet = rng.random() < 0.5
    plans, info = _healthy(rng, quiet=quiet, scale=1.0 if blocking else 1 / 3)
    n, r = info["n"], rng.randrange(info["n"])
    for p in plans:  # no healthy asymmetry in the base: the fault is the only difference
        for key, g in p.graphs.items():
            if g.rest is not None:
                p.graphs[key] = _graph(key[0], key[1], n, plans.index(p), varying=False)
    mine = plans[r]
    options = compare.Options(strict_constants=kind == "strict_constants", stop_on_asymmetry=kind == "asymmetry_stop")
    compiles = _first_compiles(mine)
    if not compiles:  # every step eager: nothing to compile differently; draw again
        return _divergent(rng, kind, blocking=blocking)
    if kind in ("recompile_same", "recompile_shape"):
        later = [i for i in _calls(mine) if i not in compiles and i > compiles[0]]
        if not later:
            return _divergent(rng, kind, blocking=blocking)
        s = rng.choice(later)
        step = mine.steps[s]
        g = copy.deepcopy(mine.graphs[(step.frame, step.variant)])
        g.constants = [[0, "args.1", 999]]  # a guarded value changed: the same ops, another constant
        if kind == "recompile_shape":
            g.collectives = [{**c, "shape": [c["shape"][0] + 1, c["shape"][1]]} for c in g.collectives]
        mine.graphs[(step.frame, 1000)] = g
        for later_step in mine.steps[s:]:
            if later_step.kind == "call" and later_step.frame == step.frame:
                later_step.variant = 1000
    elif kind == "issued":
        firsts = [i for i in compiles if len(mine.graphs[(mine.steps[i].frame, mine.steps[i].variant)].collectives) > 1]
        if not firsts:
            return _divergent(rng, kind, blocking=blocking)
        step = mine.steps[rng.choice(firsts)]
        g = mine.graphs[(step.frame, step.variant)]
        g.issued = [g.collectives[1], g.collectives[0], *g.collectives[2:]]
    elif kind == "frame_skip":
        s = rng.choice(compiles)
        step = mine.steps[s]
        inner = Graph(
            fingerprint="inner",
            collectives=mine.graphs[(step.frame, step.variant)].collectives[:1],
            breaks=[
                {
                    "reason": "gb0098: Skip calling torch.compiler.disable()d function",
                    "site": "sim.py:78",
                    "count": 1,
                    "source": "disabled_all_reduce(x)",
                }
            ],
        )
        mine.graphs[("INNER", 0)] = inner
        mine.steps[s] = Step(
            kind="call",
            frame="INNER",
            variant=0,
            delay_s=step.delay_s,
            trace_s=step.trace_s,
            compile_s=step.compile_s,
            pause_s=step.pause_s,
        )
    elif kind == "break_both":
        firsts = [i for i in compiles if len(mine.graphs[(mine.steps[i].frame, mine.steps[i].variant)].collectives) > 2]
        if not firsts:
            return _divergent(rng, kind, blocking=blocking)
        step = mine.steps[rng.choice(firsts)]
        key = (step.frame, step.variant)
        other = (r + 1) % n
        k = len(mine.graphs[key].collectives)
        a, b = rng.sample(range(1, k), 2)
        mine.graphs[key] = _split(mine.graphs[key], a)
        plans[other].graphs[key] = _split(plans[other].graphs[key], b)
    elif kind == "eager_extra":
        s = rng.randrange(len(mine.steps) + 1)
        mine.steps.insert(s, Step(kind="eager", eager={"op": "barrier", "args": {}}))
        plans[(r + 1) % n].steps.insert(s, Step(kind="eager", eager={"op": "broadcast", "args": {"shape": [4]}}))
    else:
        step = mine.steps[rng.choice(compiles)]
        key = (step.frame, step.variant)
        g = mine.graphs[key]
        if kind == "extra":
            mine.graphs[key] = Graph(
                fingerprint=g.fingerprint + "+", collectives=[*g.collectives, _ar(n, 0, 99)], constants=g.constants
            )
        elif kind == "shape":
            mine.graphs[key] = Graph(
                fingerprint=g.fingerprint,
                constants=g.constants,
                collectives=[_ar(n, step.variant, i, extra=1) for i in range(len(g.collectives))],
            )
        elif kind == "settings":
            mine.graphs[key] = Graph(
                fingerprint=g.fingerprint, collectives=g.collectives, constants=g.constants, settings={"dynamo.x": True}
            )
        elif kind == "break_parts":
            mine.graphs[key] = _split(g, rng.randint(1, len(g.collectives) - 1), rest_extra=1)
        elif kind == "strict_constants":
            for p, plan in enumerate(plans):
                plan.graphs[key] = Graph(
                    fingerprint=g.fingerprint, collectives=g.collectives, constants=[[0, "args.1", 128 * p]]
                )
        elif kind == "asymmetry_stop":
            mine.graphs[key] = _split(g, rng.randint(1, len(g.collectives) - 1))
    return plans, {"n": n, "rank": r, "options": options, "quiet": quiet}


def _stalled(rng: random.Random, kind: str) -> tuple[list[Plan], dict[str, Any]]:
    plans, info = _healthy(rng, quiet=False)
    n, r = info["n"], rng.randrange(info["n"])
    at = [i for i in _first_compiles(plans[0]) if i > 0] or [None]
    s = rng.choice(at)
    if s is None:  # no recompile to hold at: add one (every rank, a new shape)
        for p in plans:
            p.graphs[("F", 77)] = _graph("F", 77, n, plans.index(p), varying=False)
            p.steps.append(Step(kind="call", frame="F", variant=77))
        s = len(plans[0].steps) - 1
    step = plans[r].steps[s]
    if kind == "stuck":
        step.stuck = True
    else:
        step.pause_s = math.inf
    return plans, {"n": n, "rank": r}


def _run(plans: list[Plan], seed: int, **kwargs: Any):
    return Sim(plans, seed=seed, stall_s=STALL_S, **kwargs).run()


def replay(family: str, seed: int, kind: str = "", blocking: bool = True) -> Any:
    rng = random.Random(seed)
    if family == "healthy":
        plans, _ = _healthy(rng, scale=1.0 if blocking else 1 / 3)
        return _run(plans, seed, blocking=blocking)
    if family == "divergent":
        plans, info = _divergent(rng, kind, blocking=blocking)
        return _run(plans, seed, options=info["options"], blocking=blocking)
    plans, _ = _stalled(rng, kind)
    return _run(plans, seed)


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "run-ahead"])
def test_no_healthy_schedule_is_ever_stopped(blocking):
    for seed in range(SEEDS):
        rng = random.Random(seed)
        plans, _ = _healthy(rng, scale=1.0 if blocking else 1 / 3)
        out = _run(plans, seed, blocking=blocking)
        where = f"healthy seed {seed} (blocking={blocking}): {out.ranks}, verdict {out.verdict and out.verdict['text']}"
        assert out.verdict is None and set(out.ranks.values()) == {"finished"}, where
        assert not out.violations, where


@pytest.mark.parametrize("kind", sorted(DIVERGENCES))
def test_every_divergence_is_stopped_before_its_collective(kind):
    for seed in range(SEEDS // 6):
        rng = random.Random(seed)
        plans, info = _divergent(rng, kind, blocking=seed % 2 == 0)
        out = _run(plans, seed, options=info["options"], blocking=seed % 2 == 0)  # replay(..., blocking=seed % 2 == 0)
        where = f"divergent {kind} seed {seed}: {out.ranks}, verdict {out.verdict}"
        assert not out.violations, where
        assert out.verdict is not None and out.verdict["kind"] in DIVERGENCES[kind], where
        assert "hung" not in out.ranks.values(), where
        if kind.startswith("recompile") and not info["quiet"]:  # no peer late: the proof is there at once
            latency = out.verdict_at - out.held_at[info["rank"]]  # the first ask waits first_ask_s (0.05)
            assert latency < 0.1, f"{where}: detected {latency:.3f}s after the hold"
        if kind == "frame_skip":  # proven once the cycle's second hold begins, however late it came
            latency = out.verdict_at - max(out.held_at.values())  # within first_ask_s, or at once when told
            assert 0 <= latency < 0.1, f"{where}: detected {latency:.3f}s after the last hold began"


@pytest.mark.parametrize("kind", ["stuck", "frozen"])
def test_every_stall_is_reported_with_every_rank(kind):
    for seed in range(SEEDS // 2):
        rng = random.Random(seed)
        plans, info = _stalled(rng, kind)
        out = _run(plans, seed)
        where = f"stall {kind} seed {seed}: {out.ranks}, verdict {out.verdict}"
        assert out.verdict is not None and out.verdict["error"] == "Stalled", where
        assert not out.violations, where
        table = out.verdict["text"].splitlines()[3:]  # header, column titles, rule
        assert sorted(int(row.split()[0]) for row in table) == list(range(info["n"])), where
        expected_silent = [info["rank"]] if kind == "frozen" else []
        assert out.verdict["no_answer"] == expected_silent, where
        others = {p: s for p, s in out.ranks.items() if p != info["rank"]}
        assert set(others.values()) <= {"stopped", "finished"}, where
