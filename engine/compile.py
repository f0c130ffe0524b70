"""Compiled regions: a callable plus the record of what dynamo made of it.

Graph counts come from a recording backend (it sees every graph dynamo hands to the
compiler), not from log text; graph breaks come from dynamo's counters, snapshotted when
the region is built so a region reports only its own. Dynamo's counters are per process:
compile one region at a time when you need per-region numbers.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from engine import torch_private
from engine.errors import ConfigError

_BACKENDS = ("inductor", "aot_eager", "eager")
_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True, kw_only=True)
class CompileConfig:
    enabled: bool  # False: the region runs eagerly
    backend: str = "inductor"  # inductor compiles kernels; aot_eager/eager only trace
    mode: str | None = None  # inductor mode (None = default)
    fullgraph: bool = False  # True turns any graph break into an error
    dynamic: bool | None = False  # False: static shapes, so a shape change is a visible recompile

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is invalid; pick one of {list(_BACKENDS)}")
        if self.mode not in _MODES:
            raise ConfigError(f"mode={self.mode!r} is invalid; pick one of {list(_MODES)}")
        if self.mode not in (None, "default") and self.backend != "inductor":
            raise ConfigError(f"mode={self.mode!r} needs backend='inductor', got {self.backend!r}")


class RecordingBackend:
    """A dynamo backend that records each graph, then hands it to the real compiler."""

    def __init__(self, cfg: CompileConfig) -> None:
        self.graphs: list[torch.fx.GraphModule] = []
        # Called with (graph, example inputs) before each graph is compiled: a harness reads
        # what it needs of the graph here (compile_guard's collective schedule) without owning it.
        self.observers: list[Callable[[torch.fx.GraphModule, list[Any]], None]] = []
        # Called as gate(graph, example inputs, compile) in place of compile(graph, example inputs): a
        # harness may state a graph and hold it back until its first run (compile_guard's compile agreement).
        self.gate: Callable[[torch.fx.GraphModule, list[Any], Callable], Callable] | None = None
        if cfg.backend == "inductor":
            self._compile = torch_private.inductor_compiler(cfg.mode, cfg.dynamic)
        else:
            self._compile = torch_private.lookup_backend(cfg.backend)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable:
        self.graphs.append(gm)
        for observe in self.observers:
            observe(gm, example_inputs)
        if self.gate is not None:
            return self.gate(gm, example_inputs, self._compile)
        return self._compile(gm, example_inputs)


def _break_counts() -> collections.Counter:
    return torch_private.graph_break_counts()


class CompiledRegion:
    """`fn` as it runs on this rank: compiled through a recorder, or eager."""

    def __init__(self, name: str, fn: Callable, cfg: CompileConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.recorder: RecordingBackend | None = None
        self.eager = fn  # the same code, never compiled (a harness's reference)
        # Called with each call's positional arguments before it runs (compile_guard's quality measurement
        # keeps the warmup calls to replay them); empty unless a harness adds one.
        self.call_observers: list[Callable[[tuple[Any, ...]], None]] = []
        self._breaks_before = _break_counts()
        if cfg.enabled:
            self.recorder = RecordingBackend(cfg)
            self.fn = torch.compile(fn, backend=self.recorder, fullgraph=cfg.fullgraph, dynamic=cfg.dynamic)
        else:
            self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for observe in self.call_observers:
            observe(args)
        return self.fn(*args, **kwargs)

    # -- the harness's declared hooks (call_observers above, and these two) (compile_guard's probe and agreement); the
    # engine never calls them

    @property
    def compiled(self) -> bool:
        """Whether graphs go through the recorder (False when the region runs eagerly: nothing to observe)."""
        return self.recorder is not None

    def observe_graphs(self, observe: Callable[[torch.fx.GraphModule, list[Any]], None]) -> None:
        """`observe(graph, example inputs)` before each graph of this region is compiled."""
        assert self.recorder is not None, "an eager region compiles no graph: check `compiled` first"
        self.recorder.observers.append(observe)

    @contextlib.contextmanager
    def gated(self, gate: Callable[[torch.fx.GraphModule, list[Any], Callable], Callable]) -> Iterator[None]:
        """Inside: each graph goes to `gate(graph, example inputs, compile)` in place of `compile`; one gate at
        a time (a second would silently replace the first's agreement)."""
        assert self.recorder is not None, "an eager region compiles no graph: check `compiled` first"
        assert self.recorder.gate is None, f"region {self.name} is gated already"
        self.recorder.gate = gate
        try:
            yield
        finally:
            self.recorder.gate = None

    @property
    def graphs(self) -> list[torch.fx.GraphModule]:
        """The graphs dynamo produced for this region, in compile order ([] when eager)."""
        return [] if self.recorder is None else list(self.recorder.graphs)

    @property
    def graph_count(self) -> int:
        """Graphs dynamo produced for this region (0 when eager)."""
        return 0 if self.recorder is None else len(self.recorder.graphs)

    def graph_breaks(self) -> dict[str, int]:
        """Graph-break reason -> count, since this region was built."""
        delta = _break_counts()
        delta.subtract(self._breaks_before)
        return {reason: n for reason, n in delta.items() if n > 0}

    @property
    def graph_break_count(self) -> int:
        return sum(self.graph_breaks().values())
