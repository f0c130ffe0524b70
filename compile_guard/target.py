"""Moved (0.1.0): the --target contract is `from compile_guard import GuardTarget, TargetContext`."""

from compile_guard import moved

__getattr__ = moved.shim("compile_guard.target", "compile_guard", ["GuardTarget", "TargetContext", "TargetError"])
