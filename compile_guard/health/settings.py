"""Every setting that changes what torch.compile makes, as it is right now: torch's own config modules, whole.

The compile handshake states them once at start (C-04's rule: a key that differs across ranks
stops every rank, named with its values); the compile agreement states them again with every
graph, so a setting changed on one rank mid-run shows up at the next compile, by name.

What is compared is, for each config module torch has (compile_guard.compat.config_modules:
dynamo, inductor and its sub-configs, functorch, symbolic shapes, collective reordering,
torch.distributed), the portable view torch keys its own caches on — private keys and cache
switches left out — less the keys that legitimately differ by host (MACHINE_SPECIFIC, path-valued
keys, CACHE_SWITCHES), plus the custom passes torch leaves out of that view, compared by identity (a pass's
`uuid()`, else its qualified name). A value that is not plain data is made comparable: sets
sorted, objects by type and fields, never by their address.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import warnings
from typing import Any

import torch

from compile_guard import compat

# (module, key) -> why it may differ across healthy ranks: never compared
MACHINE_SPECIFIC: dict[tuple[str, str], str] = {
    ("dynamo", "base_dir"): "where torch is installed",
    ("dynamo", "debug_dir_root"): "the working directory's debug folder",
    ("dynamo", "log_file_name"): "a log path",
    ("inductor", "cpp.threads"): "the host's thread count for generated C++ (-1: every core)",
    ("inductor", "compile_threads"): "the host's compile workers (torch leaves it out too)",
    ("inductor", "worker_start_method"): "how compile workers start (torch leaves it out too)",
    ("inductor", "cpp.cxx"): "the host's C++ compiler (the effective-backend handshake states the toolchain)",
    ("inductor", "halide.cpu_target"): "the host's CPU",
    ("inductor", "rocm.arch"): "the host's GPU architecture",
}
PATH_SUFFIXES = ("_dir", "_path", "_dir_root", "_file_name")  # a path: where, not what (any module)
# A cache switch says where a compile comes from, never what it makes: a rank that loads a graph another compiles
# is no divergence (CD-06). An explicit list, (module, key) -> what it switches: every key of torch 2.13.0's
# config modules whose name says cache, each classed by its comment in torch's source (a release that lacks one
# simply has no such key), and the ones torch's portable view already leaves out, named for releases that keep
# them. A key that names a cache but changes the generated code is compared (inductor.cpp.gemm_cache_blocking: a
# GEMM's blocking; inductor.cache_sdpa_constraint: SDPA's input buffers; inductor.triton.skip_l1_cache: the
# loads' eviction policy), as are dynamo's limits on recompiles (a rank that hits one falls back to eager alone),
# which older releases call cache sizes. A cache key a new release adds is compared until it is listed here: a
# false stop names it, a silent skip would not.
_LOCAL, _REMOTE, _AUTOGRAD = "the local compile cache", "a remote compile cache", "AOTAutograd's cache"
CACHE_SWITCHES: dict[tuple[str, str], str] = {
    ("dynamo", "fake_tensor_cache_enabled"): "fake tensors' dispatch cache: tracing speed only",
    ("dynamo", "fake_tensor_cache_crosscheck_enabled"): "a debug check of the fake tensor cache",
    ("inductor", "fx_graph_cache"): _LOCAL,
    ("inductor", "fx_graph_remote_cache"): _REMOTE,
    ("inductor", "autotune_local_cache"): "autotuning results' local cache",
    ("inductor", "autotune_remote_cache"): _REMOTE,
    ("inductor", "bundled_autotune_remote_cache"): _REMOTE,
    ("inductor", "remote_gemm_autotune_cache"): _REMOTE,
    ("inductor", "search_autotune_cache"): "deprecated, ignored by inductor",
    ("inductor", "force_disable_caches"): "every compile cache off (a cold compile makes the same code)",
    ("inductor", "bundle_triton_into_fx_graph_cache"): "what the local cache stores with a graph",
    ("inductor", "non_blocking_remote_cache_write"): _REMOTE,
    ("inductor", "cpp_cache_precompile_headers"): "the C++ build's precompiled headers: build speed only",
    ("inductor", "unsafe_marked_cacheable_functions"): "which custom ops the local cache may key",
    ("inductor", "unsafe_skip_cache_dynamic_shape_guards"): "the local cache's guards on a load",
    ("inductor", "cuda.use_binary_remote_cache"): _REMOTE,
    ("inductor", "cuda.upload_to_binary_remote_cache"): _REMOTE,
    ("inductor", "cuda.binary_remote_cache_force_write"): _REMOTE,
    ("inductor", "cutlass.use_binary_remote_cache"): _REMOTE,
    ("inductor", "cutlass.upload_to_binary_remote_cache"): _REMOTE,
    ("inductor", "cutlass.binary_remote_cache_force_write"): _REMOTE,
    ("inductor", "xpu.use_binary_remote_cache"): _REMOTE,
    ("inductor", "xpu.upload_to_binary_remote_cache"): _REMOTE,
    ("inductor", "xpu.binary_remote_cache_force_write"): _REMOTE,
    ("functorch", "enable_autograd_cache"): _AUTOGRAD,
    ("functorch", "enable_remote_autograd_cache"): _REMOTE,
    ("functorch", "autograd_cache_allow_custom_autograd_functions"): _AUTOGRAD,
    ("functorch", "autograd_cache_normalize_inputs"): "placeholder names in AOTAutograd's cache key",
    ("functorch", "bundled_autograd_cache"): _AUTOGRAD,
    ("functorch", "bypass_autograd_cache_key"): _AUTOGRAD,
    ("functorch", "force_autograd_cache"): _AUTOGRAD,
    ("functorch", "strict_autograd_cache"): "an error instead of a warning when AOTAutograd's cache is bypassed",
}
# torch leaves the custom passes out of its portable view (they are callables); they change the program
CALLABLE_KEYS: dict[str, tuple[str, ...]] = {
    "inductor": (
        "pre_grad_custom_pass",
        "joint_custom_pre_pass",
        "joint_custom_post_pass",
        "post_grad_custom_pre_pass",
        "post_grad_custom_post_pass",
        "_pre_fusion_custom_pass",
        "_fuse_ddp_communication_passes",
    ),
    "functorch": ("joint_custom_pass",),
}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def machine_specific(module: str, key: str) -> bool:
    """Not compared: a host's setting, a path, or a cache switch (each listed with its reason)."""
    return (module, key) in MACHINE_SPECIFIC or (module, key) in CACHE_SWITCHES or key.endswith(PATH_SUFFIXES)


def comparable(value: Any) -> Any:
    """A setting's value as plain JSON data that is the same on every rank holding the same setting."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((comparable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): comparable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.dtype):
        return str(value)
    uuid = getattr(value, "uuid", None)  # inductor's CustomGraphPass: its own identity of what it does
    if callable(uuid):
        try:
            return f"pass:{type(value).__qualname__}:{comparable(uuid())}"
        except Exception as exc:  # a pass whose uuid() fails: named by its class, and the failure said
            return f"pass:{type(value).__qualname__}:uuid() failed: {type(exc).__name__}"
    if callable(value):
        return f"callable:{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return _ADDRESS.sub("", repr(value))


def _compared(*, defaults: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    with warnings.catch_warnings():  # reading a deprecated key warns; the handshake only compares it
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for label, module in compat.config_modules().items():
            values = compat.portable_config(module)
            keys = [k for k in values if not machine_specific(label, k)]
            keys += [k for k in CALLABLE_KEYS.get(label, ()) if hasattr(module, k)]
            for key in keys:
                value = compat.config_default(module, key) if defaults else values.get(key, getattr(module, key))
                payload[f"{label}.{key}"] = comparable(value)
    return payload


def settings_payload() -> dict[str, Any]:
    """{"<module>.<key>": value} for every compared setting of every config module (see the module docstring):
    what the compile handshake compares (~800 keys on torch 2.13)."""
    return _compared(defaults=False)


@functools.cache
def _defaults() -> dict[str, Any]:
    """torch's defaults of the compared settings (read once per process; never mutated)."""
    return _compared(defaults=True)


def stated_settings() -> tuple[dict[str, Any], str]:
    """(the compared settings whose value is not torch's default, the digest of them all): what each graph's
    statement carries. Two ranks of one torch differ in a setting only if one of them changed it, so the changed
    ones name every difference, and the digest covers the rest."""
    payload, defaults = settings_payload(), _defaults()
    return {k: v for k, v in payload.items() if defaults.get(k, "<absent>") != v}, digest(payload)


def digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
