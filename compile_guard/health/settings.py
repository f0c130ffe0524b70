"""The dynamo and inductor settings that change what gets compiled, as they are right now.

The compile handshake states them once at start; the compile agreement states them again with
every graph, so a setting changed on one rank mid-run shows up at the next compile, by name.
"""

from __future__ import annotations

import warnings
from typing import Any

from compile_guard import compat

# dynamo / inductor settings that change what gets compiled; absent ones read "<absent>"
# (a torch upgrade renames config keys: the handshake then compares "<absent>" alike).
DYNAMO_KEYS = (
    "disable", "suppress_errors", "automatic_dynamic_shapes", "assume_static_by_default", "cache_size_limit",
    "recompile_limit", "capture_scalar_outputs", "capture_dynamic_output_shape_ops", "specialize_int",
    "nested_graph_breaks", "inline_inbuilt_nn_modules",
)  # fmt: skip
INDUCTOR_KEYS = ("max_autotune", "freezing", "fallback_random", "cpp_wrapper", "coordinate_descent_tuning",
                 "triton.cudagraphs")  # fmt: skip


def _config_value(module: Any, dotted: str) -> Any:
    value = module
    with warnings.catch_warnings():  # reading a deprecated key warns; the handshake only compares it
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for part in dotted.split("."):
            value = getattr(value, part, "<absent>")
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def settings_payload() -> dict[str, Any]:
    """{"dynamo.<key>": value, "inductor.<key>": value} for every key above."""
    payload = {f"dynamo.{k}": _config_value(compat.dynamo_config(), k) for k in DYNAMO_KEYS}
    payload.update({f"inductor.{k}": _config_value(compat.inductor_config(), k) for k in INDUCTOR_KEYS})
    return payload
