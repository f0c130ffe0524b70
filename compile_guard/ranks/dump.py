"""`check --dump-dir`: depyf's decompiled source of every compiled frame, per rank."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def depyf_dump(dump_dir: Path | None) -> Iterator[None]:
    """Decompiled source of every compiled frame (and inductor kernels) into dump_dir."""
    if dump_dir is None:
        yield
        return
    import depyf
    import depyf.explain.enable_debugging as depyf_debugging

    # TODO(no upstream issue found): depyf 0.20's load_by_key_path patch takes 4 positional
    # arguments, and torch 2.13 passes a keyword-only `set_sys_modules`. Remove this wrapper
    # once depyf's patched function accepts extra keywords.
    original = depyf_debugging.patched_load_by_key_path

    def tolerant(key, path, linemap=None, attrs=None, **_torch_kwargs):
        return original(key, path, linemap, attrs)

    depyf_debugging.patched_load_by_key_path = tolerant
    try:
        with depyf.prepare_debug(str(dump_dir)):
            yield
    finally:
        depyf_debugging.patched_load_by_key_path = original
