"""The private torch entry points the harness and the compile agreement use, in one place, each with what it
falls back to and the torch releases it was checked on.

Every one is named once, by its dotted path, in `_PRIVATE`, and reached through `_private(name)`: a torch
without it fails that call loudly — TorchInternalMissing names the installed torch and what is missing —
or takes the fallback written next to it; never a silent "?" inside a field the ranks must agree on.
tests/test_compat.py resolves the whole table against the installed torch. Other modules call the
functions here, never torch's underscored names (the engine, which imports nothing of the harness, keeps
its own few in engine/torch_private.py).

Checked on 2.6.0, 2.7.1, 2.8.0, 2.13.0 (the pinned CPU wheel) and 2.15.0 (CUDA builds on the CPU),
2026-12-02, and on 2.9.1, 2.10.0, 2.11.0, 2.12.1 and 2.14.1, 2026-12-05, by `make version-matrix`.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable

import torch
import torch.distributed as dist

from compile_guard import named

# name -> dotted path of every private entry point used below (2.6-2.15 checked unless said otherwise)
_PRIVATE = {
    "default_store": "torch.distributed.distributed_c10d._get_default_store",
    "resolve_process_group": "torch.distributed.distributed_c10d._resolve_process_group",
    "get_backend": "torch.distributed.ProcessGroup._get_backend",
    "current_tx": "torch._dynamo.symbolic_convert.InstructionTranslator.current_tx",
    "metrics_context": "torch._dynamo.utils.get_metrics_context",
    "compilation_metrics": "torch._dynamo.utils.get_compilation_metrics",
    "compilation_metrics_limit": "torch._dynamo.utils.set_compilation_metrics_limit",
    "guard_failures": "torch._dynamo.guards.guard_failures",
    "current_compile_id": "torch._guards.CompileContext.current_compile_id",
    "callback_handler": "torch._dynamo.callback.callback_handler",
    "tracing": "torch._guards.tracing",
    "counters": "torch._dynamo.utils.counters",
    "lookup_backend": "torch._dynamo.lookup_backend",
    "set_logs": "torch._logging.set_logs",
    "dynamo_config": "torch._dynamo.config",
    "inductor_config": "torch._inductor.config",
    "functorch_config": "torch._functorch.config",
    "fake_tensor": "torch._subclasses.fake_tensor.FakeTensor",
    "fake_tensor_mode": "torch._subclasses.fake_tensor.FakeTensorMode",
    "tree_flatten_with_path": "torch.utils._pytree.tree_flatten_with_path",
    "keystr": "torch.utils._pytree.keystr",
    # the matrix's simulated inductor upgrades only (compile_guard.matrix.lowering_faults), 2.13.0 and 2.14.1
    "inductor_decompositions": "torch._inductor.decomposition.decompositions",
    "inductor_lowerings": "torch._inductor.lowering.lowerings",
    "inductor_tensor_box": "torch._inductor.ir.TensorBox",
    "custom_graph_pass": "torch._inductor.custom_graph_pass.CustomGraphPass",
    # the speed measurement's local replay (compile_guard.quality.speed): 2.13.0
    "world": "torch.distributed.distributed_c10d._world",
    "fake_process_group": "torch._C._distributed_c10d.FakeProcessGroup",
    "register_backend": "torch.distributed.ProcessGroup._register_backend",
    "backend_type": "torch.distributed.ProcessGroup.BackendType",
    # the inductor cache directory a compile uses (TORCHINDUCTOR_CACHE_DIR or its default), 2.6-2.15
    "inductor_cache_dir": "torch._inductor.runtime.cache_dir_utils.cache_dir",
    # inductor's in-process caches (loaded kernels and modules), cleared for a cold compile in a warm process: 2.13.0
    "inductor_clear_caches": "torch._inductor.utils.clear_caches",
}
ENTRY_POINTS = tuple(_PRIVATE.values())
# dynamo's graph-break artifact logger (a logger name, not an attribute: the probe and the agreement attach a
# handler to it; `set_logs(graph_breaks=True)` turns it on). 2.6-2.15: the same name.
BREAK_LOGGER = "torch._dynamo.symbolic_convert.__graph_breaks"
# inductor's output-code artifact logger: each graph's wrapper source as "Output code: \n%s", when inductor compiles
# it (graph.py) and when it loads it from its caches (codecache.py); the same issued schedules read on all five
# releases it was checked on: 2.6.0, 2.8.0, 2.11.0, 2.13.0 and 2.14.1 (2026-12-06). An inductor graph it says
# nothing of is `unread` (health.issued.UNLOGGED), never silently the dispatch schedule.
OUTPUT_CODE_LOGGER = "torch._inductor.codecache.__output_code"


class TorchInternalMissing(RuntimeError):
    """A private torch entry point compile_guard needs is not in this torch."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(
            f"torch {torch.__version__} has no {what} ({type(exc).__name__}: {exc}); compile_guard"
            " needs it and was checked on torch 2.6-2.15: run one of those, or report this torch"
        )


def _private(name: str) -> Any:
    """The entry point `_PRIVATE[name]`, or TorchInternalMissing naming it and the installed torch."""
    try:
        return named.dotted(_PRIVATE[name])
    except (ImportError, AttributeError) as exc:
        raise TorchInternalMissing(_PRIVATE[name], exc) from None


def default_store() -> dist.Store:
    """The store the job's default group was initialised with (torchrun's, or our launcher's).
    torch.distributed.distributed_c10d._get_default_store (2.6-2.15)."""
    return _private("default_store")()


def group_timeout_s(group: dist.ProcessGroup, device: torch.device | None = None) -> float:
    """The timeout the group was made with. ProcessGroup._get_backend(device).options._timeout (2.13: gloo and
    NCCL); falls back to torch's default for the backend (30 min for NCCL, 30 min for gloo in 2.13)."""
    try:
        device = device or torch.device("cuda" if dist.get_backend(group) == "nccl" else "cpu")
        backend = _private("get_backend")(group, device)
        timeout = backend.options._timeout
    except (AttributeError, RuntimeError):
        from torch.distributed.constants import default_pg_timeout

        timeout = default_pg_timeout
    return timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)


def compiling_frame() -> tuple[Any, dict[str, Any]] | None:
    """(code, f_locals) of the frame dynamo is compiling, inside a backend call; None outside dynamo.
    InstructionTranslator.current_tx() (2.6-2.15): .f_code, .f_locals."""
    current_tx = _private("current_tx")
    try:
        tx = current_tx()
    except (AttributeError, IndexError, AssertionError):  # not under dynamo (a backend called by hand)
        return None
    return tx.f_code, getattr(tx, "f_locals", {}) or {}


def recompile_reason() -> str | None:
    """dynamo's reason for this compile (its first cache entry's failed guard), or None for a first compile.
    torch._dynamo.utils.get_metrics_context()._metrics["recompile_reason"] (2.7-2.15; 2.6 keeps none there, so
    None: the statement then names the failed guards of `guard_failures` alone)."""
    return getattr(_private("metrics_context")(), "_metrics", {}).get("recompile_reason")


def guard_failures(code: Any) -> list[str]:
    """Every failed-guard reason dynamo recorded for `code` so far, one per cache entry per recompile, each
    'compile_id: guard ...'. torch._dynamo.guards.guard_failures (2.6-2.15: a dict keyed by the original code)."""
    return list(_private("guard_failures").get(code, []))


def compile_id() -> str:
    """dynamo's id of the compile in progress ('frame/attempt'). torch._guards.CompileContext (2.6-2.15)."""
    cid = _private("current_compile_id")()
    return str(cid) if cid is not None else "?"


def on_compiles(start: Callable[[Any], None], end: Callable[[Any], None]) -> Callable[[], None]:
    """Call `start`/`end` around every dynamo compile in this process; returns the function that removes them.
    torch._dynamo.callback.callback_handler (2.6-2.15)."""
    callback_handler = _private("callback_handler")
    handles = (callback_handler.register_start_callback(start), callback_handler.register_end_callback(end))

    def remove() -> None:
        callback_handler.remove_start_callback(handles[0])
        callback_handler.remove_end_callback(handles[1])

    return remove


def torch_release() -> tuple[int, int]:
    """(major, minor) of the installed torch: where a behaviour differs by release."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def listening_store(sock: Any, timeout_s: float) -> dist.TCPStore:
    """A TCPStore server on an already bound and listening socket, which it takes over (no pick-a-free-port race).
    `TCPStore(master_listen_fd=...)`: torch 2.8-2.14 (checked 2.13.0, 2.14.1) take the fd on the libuv backend;
    2.6 and 2.7 (checked 2.6.0) refuse it there (NotImplementedError) and take it on the legacy backend, chosen
    with `use_libuv=False` (a constructor argument: USE_LIBUV=0 in the environment does not reach it)."""
    port = sock.getsockname()[1]
    legacy = {"use_libuv": False} if torch_release() < (2, 8) else {}
    # The store takes the fd over (and closes it): detach so Python never closes it twice.
    return dist.TCPStore(
        "127.0.0.1",
        port,
        None,
        True,
        datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=sock.detach(),
        **legacy,
    )


def clone_store(store: dist.Store) -> dist.Store:
    """A connection of this thread's own to `store`'s server (a TCPStore client serialises its operations).
    `Store.clone()`: torch 2.8+ (checked 2.13.0, 2.14.1). Before 2.8 (checked 2.6.0) there is none: a new client
    of the TCPStore under any PrefixStore (`_underlying_non_prefix_store`; 2.6 does not expose a PrefixStore's
    prefix), so every connection of every rank then shares the server's bare key space — the same on all ranks,
    since every rank runs the one torch the env handshake agreed on."""
    if hasattr(store, "clone"):
        return store.clone()
    base = getattr(store, "_underlying_non_prefix_store", store)
    if not isinstance(base, dist.TCPStore):
        raise TorchInternalMissing(
            "Store.clone (and the store is no TCPStore to connect to again)", AttributeError(type(base).__name__)
        )
    return dist.TCPStore(base.host, base.port, None, False, base.timeout, use_libuv=base.libuvBackend)


NO_RECOMPILE_REASON = "(this torch's compilation metrics carry no recompile reason: torch < 2.7)"


def compile_records(since: int, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """dynamo's compilation metrics from record `since` on, as plain dicts (compile_id, co_name, co_filename,
    co_firstlineno, guard_count, recompile_reason), and the count so far; keeps at least `limit` records.
    torch._dynamo.utils.get_compilation_metrics / set_compilation_metrics_limit (2.6.0, 2.13.0, 2.14.1 checked).
    `recompile_reason` is a field from 2.7 on; on 2.6 a recompile's reason reads NO_RECOMPILE_REASON (said,
    never a guess), and the recompile itself is still counted (its compile id's attempt)."""
    _private("compilation_metrics_limit")(limit)
    metrics = _private("compilation_metrics")()
    records = [
        {
            "compile_id": m.compile_id,
            "co_name": m.co_name,
            "co_filename": m.co_filename,
            "co_firstlineno": m.co_firstlineno,
            "guard_count": m.guard_count,
            "recompile_reason": getattr(m, "recompile_reason", NO_RECOMPILE_REASON),
            # compile time (health.quality): the whole frame's (dynamo + backend) and inductor's FX-graph cache
            # hits and misses in it; None where a torch lacks the field (checked on 2.13.0 and 2.14.1)
            "frame_s": getattr(m, "entire_frame_compile_time_s", None),
            "fx_hits": getattr(m, "inductor_fx_local_cache_hit_count", None),
            "fx_misses": getattr(m, "inductor_fx_local_cache_miss_count", None),
        }
        for m in metrics[since:]
    ]
    return records, len(metrics)


def resolve_process_group(name: str) -> dist.ProcessGroup:
    """The group a functional collective's graph node names. distributed_c10d._resolve_process_group (2.6.0,
    2.13.0, 2.14.1)."""
    return _private("resolve_process_group")(name)


def outside_tracing_context() -> Any:
    """A context with no dynamo TracingContext (a trace of our own inside a backend call). torch._guards.tracing
    (2.6.0, 2.8.0, 2.13.0, 2.15.0 checked): without it, 2.8 asserts that the active fake mode is the context's."""
    return _private("tracing")(None)


def cache_hits() -> int:
    """Inductor's FX-graph and AOT-autograd cache hits so far in this process (loaded artifacts hit them).
    torch._dynamo.utils.counters["inductor"]["fxgraph_cache_hit"], ["aot_autograd"]["autograd_cache_hit"]."""
    counters = _private("counters")
    return counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]


def lookup_backend(name: str) -> Callable:
    """A dynamo backend by its name ("inductor", "aot_eager"). torch._dynamo.lookup_backend."""
    return _private("lookup_backend")(name)


def log_compile_artifacts() -> None:
    """Turn on the two artifact logs compile_guard reads: dynamo's graph breaks (BREAK_LOGGER) and inductor's output
    code (OUTPUT_CODE_LOGGER), each kept out of the rank log (its records go to our handlers only).
    torch._logging.set_logs(graph_breaks=True, output_code=True): one call, since each call resets the others."""
    _private("set_logs")(graph_breaks=True, output_code=True)
    for name in (BREAK_LOGGER, OUTPUT_CODE_LOGGER):
        logging.getLogger(name).propagate = False  # multi-KB reports and whole wrappers: not for the rank log


def inductor_cpp_wrapper() -> bool:
    """Whether inductor generates a C++ wrapper (its collective calls are then not in Python source)."""
    return bool(getattr(_private("inductor_config"), "cpp_wrapper", False))


def dynamo_config() -> Any:
    """dynamo's config module (torch._dynamo.config): read by the settings handshake, flipped by one fault."""
    return _private("dynamo_config")


def inductor_config() -> Any:
    """inductor's config module (torch._inductor.config): read by the settings handshake."""
    return _private("inductor_config")


# Config modules besides dynamo's, inductor's and functorch's whose settings change what gets compiled; each is
# compared where the installed torch has it, and absent from the comparison where it has not (label -> module).
OPTIONAL_CONFIGS = {
    "fx": "torch.fx.experimental._config",  # symbolic shapes (2.13.0, 2.14.1: present)
    "inductor_comms": "torch._inductor.config_comms",  # collective reordering and estimations (2.13.0, 2.14.1)
    "distributed": "torch.distributed.config",  # compile_on_one_rank, torchcomms (2.13.0, 2.14.1)
}


def config_modules() -> dict[str, Any]:
    """label -> torch's config module, for every config module that can change the compiled program: dynamo,
    inductor, functorch (2.6-2.15) and those of OPTIONAL_CONFIGS the installed torch has."""
    found = {
        "dynamo": _private("dynamo_config"),
        "inductor": _private("inductor_config"),
        "functorch": _private("functorch_config"),
    }
    for label, path in OPTIONAL_CONFIGS.items():
        try:
            found[label] = named.dotted(path)
        except (ImportError, AttributeError):
            continue
    return found


def portable_config(module: Any) -> dict[str, Any]:
    """A config module's settings in the portable view torch keys its own caches on: private keys and the
    module's `_cache_config_ignore_prefix` left out (ConfigModule.save_config_portable: checked on 2.6.0, 2.8.0,
    2.11.0, 2.13.0, 2.14.1); a module without it (an older ConfigModule), its whole `get_config_copy()`."""
    if hasattr(module, "save_config_portable"):
        return module.save_config_portable()
    return {k: v for k, v in module.get_config_copy().items() if not k.startswith("_")}


def config_default(module: Any, key: str) -> Any:
    """torch's default of one setting, before any environment variable or assignment changed it; "<unknown>" where
    the module keeps none. ConfigModule._config[key].default (checked on 2.6.0, 2.8.0, 2.11.0, 2.13.0, 2.14.1)."""
    entry = getattr(module, "_config", {}).get(key)
    return getattr(entry, "default", "<unknown>") if entry is not None else "<unknown>"


def is_fake(value: Any) -> bool:
    """A fake tensor (a compile's example input with no data). torch._subclasses.fake_tensor.FakeTensor."""
    return isinstance(value, _private("fake_tensor"))


def flatten_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """(path as text, leaf) of every leaf of a nested structure of the step's inputs ("[0]['x']").
    torch.utils._pytree.tree_flatten_with_path and keystr."""
    leaves, _spec = _private("tree_flatten_with_path")(tree)
    return [(_private("keystr")(path), leaf) for path, leaf in leaves]


def fake_mode() -> Any:
    """A fake mode of static shapes that takes real inputs too (the schedule re-trace). FakeTensorMode."""
    return _private("fake_tensor_mode")(allow_non_fake_inputs=True, static_shapes=True)


def inductor_lowering_tables() -> tuple[dict[Any, Any], dict[Any, Any], type]:
    """Inductor's decomposition table, its lowering table and its TensorBox: what the matrix's simulated
    upgrades patch (test-only). torch._inductor.decomposition.decompositions, torch._inductor.lowering.lowerings,
    torch._inductor.ir.TensorBox (2.13.0, 2.14.1)."""
    return _private("inductor_decompositions"), _private("inductor_lowerings"), _private("inductor_tensor_box")


def custom_graph_pass() -> type:
    """Inductor's base class of a custom pass with a uuid (its cache key part): the matrix's NU-03 pass.
    torch._inductor.custom_graph_pass.CustomGraphPass (2.6-2.15: the same class)."""
    return _private("custom_graph_pass")


def local_collectives(device: torch.device) -> Callable[[], None]:
    """Every process group of this process served locally on `device`: each group's backend swapped for torch's
    fake one (collectives return at once, their buffers unchanged: no peer, no wait), by name and by object
    alike, since functional collectives resolve the group by name and c10d calls take the object. Returns the
    function that swaps the real backends back. For timing only: a collective's result is wrong inside.
    torch.distributed.distributed_c10d._world.pg_names, ProcessGroup._get_backend / _register_backend / BackendType,
    FakeProcessGroup._create_internal (2.13.0; its constructor before). TorchInternalMissing where any is absent."""
    fake_class = _private("fake_process_group")
    backend_type = _private("backend_type")
    register = _private("register_backend")
    get = _private("get_backend")
    swapped: list[tuple[Any, Any, Any]] = []

    def restore() -> None:
        while swapped:
            group, kind, real = swapped.pop()
            register(group, device, kind, real)

    try:
        for group in list(_private("world").pg_names):
            try:
                real = get(group, device)
            except RuntimeError:  # no backend for this device in this group: nothing to serve
                continue
            create = getattr(fake_class, "_create_internal", fake_class)
            fake = create(group.rank(), group.size())
            kind = getattr(backend_type, real.name().upper(), backend_type.CUSTOM)
            register(group, device, backend_type.CUSTOM, fake)
            swapped.append((group, kind, real))
    except BaseException:
        restore()
        raise
    return restore


def inductor_cache_dir() -> str:
    """The directory inductor caches into now (TORCHINDUCTOR_CACHE_DIR, else its per-user default).
    torch._inductor.runtime.cache_dir_utils.cache_dir (2.6-2.15)."""
    return str(_private("inductor_cache_dir")())


def clear_inductor_caches() -> None:
    """Forget the kernels and modules inductor loaded in this process, so the next compile in an empty cache
    directory builds every kernel again (a cold compile in a process that already compiled the program).
    torch._inductor.utils.clear_caches (2.13.0; clear_inductor_caches before it was renamed)."""
    try:
        clear = _private("inductor_clear_caches")
    except TorchInternalMissing:
        clear = named.dotted("torch._inductor.utils.clear_inductor_caches")
    clear()
