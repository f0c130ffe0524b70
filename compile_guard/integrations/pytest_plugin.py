"""Moved (0.1.0): the pytest plugin is compile_guard.commands.pytest_plugin (a front end, beside the commands);
`assert_compile_health` is `from compile_guard import assert_compile_health`."""

from compile_guard import moved

moved.warn_module("compile_guard.integrations.pytest_plugin", "compile_guard.commands.pytest_plugin")

from compile_guard.commands.pytest_plugin import *  # noqa: E402,F401,F403  (the fixtures, for `-p` users)
from compile_guard.commands.pytest_plugin import __all__  # noqa: E402,F401
