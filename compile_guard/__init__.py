"""compile_guard: compile-parity regression harness for distributed PyTorch inference.

What a user's code imports, all from here (`docs/targets.md`, `docs/agreement.md`):

    from compile_guard import GuardTarget, TargetContext, agree_on_compiles, CollectiveLedger

The names resolve on first use, so `import compile_guard` (and the CLI's light commands) loads no torch.
`tests/test_public_api.py` freezes this surface: a change to it is a visible diff there.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (the only table of the package's public surface)
PUBLIC = {
    "GuardTarget": "compile_guard.integrations.target",  # what a --target factory returns
    "TargetContext": "compile_guard.integrations.target",  # what a --target factory is given
    "TargetError": "compile_guard.integrations.target",  # a target refused as given (exit 2)
    "agree_on_compiles": "compile_guard.agreement.gate",  # torch.compile's backend= for a user's own model
    "CompileAgreement": "compile_guard.agreement.gate",  # the gate agree_on_compiles returns
    "CollectiveLedger": "compile_guard.agreement.ledger",  # eager collectives agreed across the ranks
    "assert_compile_health": "compile_guard.health.assertion",  # a probe's metrics against a baseline (no pytest)
}
__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in PUBLIC:
        raise AttributeError(f"module 'compile_guard' has no attribute {name!r}")
    value = getattr(importlib.import_module(PUBLIC[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
