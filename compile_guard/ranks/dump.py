"""`check --dump-dir`: depyf's decompiled source of every compiled frame, per rank.

depyf's own hook *replaces* each compiled frame's code with a decompile-and-compile-back of
it (so a debugger can step through it). On code with graph breaks that breaks the run:
`fix_irregular_code` recurses without end on dynamo's resume functions, and code it does
compile back can fail at run time ("closure expected cell"). A dump must never change what
runs, so here the hook only writes the decompiled source of each transformed frame (both
sides of every break) and dynamo keeps its own code; depyf still writes the graphs, the
full code per function and the inductor kernels. Its load_by_key_path patch is wrapped too:
it rejects a keyword torch 2.13 passes.

Why depyf's hook is replaced rather than a hook of our own registered with
`torch._dynamo.convert_frame.register_bytecode_hook`: that is the hook depyf registers
underneath, and it hands over only (old code, new code). depyf's `full_code_for_*` dump at the
end of `prepare_debug` needs each compiled frame's module globals, which it collects in its
hook object's `optimized_code_and_module` from dynamo's `_compile` frame; a hook of our own
next to depyf's would leave depyf's (code-replacing) one in place. So the one hook keeps
depyf's bookkeeping (the stack walk is depyf's own, kept as is) and drops only the replacement.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator


def _dump_only(self: Any, code: Any, new_code: Any) -> None:
    """The bytecode hook: write the transformed frame's decompiled source; never replace the code."""
    frame = sys._getframe()
    while not (frame.f_code.co_name == "_compile" and frame.f_code.co_filename.endswith("convert_frame.py")):
        frame = frame.f_back  # dynamo's _compile holds the user frame: depyf's full_code dump needs its globals
    self.optimized_code_and_module.append([code, frame.f_locals["frame"].f_globals])
    from depyf import decompile

    name = code.co_name.replace(".", "_").replace("<", "_").replace(">", "_").replace(" ", "_")
    try:
        source = decompile(new_code)
    except Exception as exc:  # then at least say which frame is missing and why
        source = f"# depyf could not decompile this frame either: {type(exc).__name__}: {exc}\n"
    for n in itertools.count():
        path = Path(self.dump_src_dir) / f"__transformed_code_{n}_for_{name}.py"
        if not path.exists():
            path.write_text(
                f"# {code.co_name} of {code.co_filename}:{code.co_firstlineno}, as dynamo transformed"
                f" it (decompiled by depyf; dynamo ran its own bytecode)\n{source}"
            )
            return None


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
    original_load = depyf_debugging.patched_load_by_key_path
    original_hook = depyf_debugging.DebuggableHook.__call__

    def tolerant_load(key, path, linemap=None, attrs=None, **_torch_kwargs):
        return original_load(key, path, linemap, attrs)

    depyf_debugging.patched_load_by_key_path = tolerant_load
    depyf_debugging.DebuggableHook.__call__ = _dump_only
    stack = contextlib.ExitStack()
    try:
        with warnings.catch_warnings():  # depyf's reminder on entry is ours to give, not the user's to see
            warnings.filterwarnings("ignore", message=".*You are trying to debug")
            stack.enter_context(depyf.prepare_debug(str(dump_dir)))
        with stack:
            yield
    finally:
        depyf_debugging.patched_load_by_key_path = original_load
        depyf_debugging.DebuggableHook.__call__ = original_hook
