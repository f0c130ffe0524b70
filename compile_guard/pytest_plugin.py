"""Moved (0.1.0): the pytest plugin is compile_guard.commands.pytest_plugin (pytest loads it by its entry point)."""

from compile_guard import moved

moved.warn_module("compile_guard.pytest_plugin", "compile_guard.commands.pytest_plugin")

from compile_guard.commands.pytest_plugin import *  # noqa: E402,F401,F403  (the fixtures, for `-p` users)
from compile_guard.commands.pytest_plugin import __all__  # noqa: E402,F401
