"""Simulated inductor upgrades for the NU rows: inductor patched alone, the graphs and settings unchanged.

Switched by the parity-checked test knobs COMPILE_GUARD_TEST_LOWERING (which) and _RANK (-1: every rank).
Each patch is in-process and outside inductor's cache key, so a patched rank compiles in an empty inductor
cache directory of its own: a patched kernel never lands in the shared cache, nor a cached one hides the patch.
Structure-only checks pass on every one of them (measured: `check` exited 0 before issue 25).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import torch

from compile_guard import compat
from compile_guard.quality.compile_time import empty_cache_dir
from engine import events, knobs
from engine.errors import ConfigError


def _gelu_as_erf() -> Callable[[], None]:
    """NU-01: gelu(approximate="tanh") lowered as the exact erf gelu (4.7e-4 from fp64 on a gelu alone)."""
    decompositions, _, _ = compat.inductor_lowering_tables()
    gelu = torch.ops.aten.gelu.default
    original = decompositions[gelu]
    decompositions[gelu] = lambda x, approximate="none": original(x, approximate="none")
    return lambda: decompositions.__setitem__(gelu, original)


def _no_fusion() -> Callable[[], None]:
    """NU-02: every lowering's result realized and nothing fused: each op its own kernel (a small MLP block's
    compiled/eager speedup 1.08 -> 0.85 here)."""
    _, lowerings, tensor_box = compat.inductor_lowering_tables()
    saved = dict(lowerings)

    def realized(lower: Callable[..., Any]) -> Callable[..., Any]:
        def lower_and_realize(*args: Any, **kwargs: Any) -> Any:
            out = lower(*args, **kwargs)
            if isinstance(out, tensor_box):
                out.realize()
            return out

        return lower_and_realize

    for op, lower in saved.items():
        lowerings[op] = realized(lower)
    config = compat.inductor_config()
    fusion = config.max_fusion_size
    config.max_fusion_size = 1

    def undo() -> None:
        lowerings.clear()
        lowerings.update(saved)
        config.max_fusion_size = fusion

    return undo


def _slow_compile() -> Callable[[], None]:
    """NU-03: COMPILE_GUARD_TEST_SLOW_COMPILE_S (6 s) of CPU burnt in each graph's compile (a slower post-grad
    pass, one uuid on every rank: the same setting everywhere), the code it makes unchanged."""
    seconds = knobs.read("COMPILE_GUARD_TEST_SLOW_COMPILE_S")

    class SlowPass(compat.custom_graph_pass()):  # type: ignore[misc]
        def __call__(self, graph: Any) -> None:
            end = time.thread_time() + seconds  # CPU seconds: a loaded machine burns them slower, not fewer
            while time.thread_time() < end:
                pass
            events.emit("slow_pass", cpu_s=seconds)  # the proof that the slower pass ran in this compile

        def uuid(self) -> str:
            return f"compile_guard-NU-03-slow-compile-{seconds}"

    config = compat.inductor_config()
    saved = config.post_grad_custom_pre_pass
    config.post_grad_custom_pre_pass = SlowPass()
    return lambda: setattr(config, "post_grad_custom_pre_pass", saved)


def _sigmoid_as_tanh() -> Callable[[], None]:
    """NU-04 (one rank): sigmoid(x) lowered as 0.5 * (1 + tanh(x / 2)): the same function, other bits. After an
    all-reduce, on one rank only, the ranks' replicated values drift apart by an ulp or so; accuracy still
    passes, and the graphs, the settings and the issued schedule are all equal."""
    _, lowerings, _ = compat.inductor_lowering_tables()
    aten = torch.ops.aten
    sigmoid, tanh, mul, add = (
        lowerings[op] for op in (aten.sigmoid.default, aten.tanh.default, aten.mul.Tensor, aten.add.Tensor)
    )
    lowerings[aten.sigmoid.default] = lambda x: mul(add(tanh(mul(x, 0.5)), 1.0), 0.5)
    return lambda: lowerings.__setitem__(aten.sigmoid.default, sigmoid)


LOWERINGS: dict[str, Callable[[], Callable[[], None]]] = {
    "gelu_erf": _gelu_as_erf,
    "no_fusion": _no_fusion,
    "slow_compile": _slow_compile,
    "sigmoid_tanh": _sigmoid_as_tanh,
}


@contextlib.contextmanager
def lowering_fault() -> Iterator[None]:
    """Inside: this rank's inductor patched as the test knobs ask (nothing when they are unset)."""
    name, rank = knobs.read("COMPILE_GUARD_TEST_LOWERING"), knobs.read("COMPILE_GUARD_TEST_LOWERING_RANK")
    if not name:
        yield
        return
    if name not in LOWERINGS:
        raise ConfigError(f"COMPILE_GUARD_TEST_LOWERING={name!r} is unknown; pick one of {sorted(LOWERINGS)}")
    if rank not in (-1, int(knobs.read("RANK"))):
        yield
        return
    # the patch is outside inductor's cache key: compile in an empty cache of this rank's own, so a patched graph
    # never lands in the shared cache and a cached one never hides the patch
    with empty_cache_dir():
        undo = LOWERINGS[name]()
        events.emit("inject", fault=f"lowering:{name}", rank=int(knobs.read("RANK")))
        try:
            yield
        finally:
            undo()
