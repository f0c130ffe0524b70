"""What the compiled program gives its users, beside its structure: outputs, speed, compile time, memory.

Measured on each rank after the check's run, on the run's own warmup inputs (compile_guard.quality.measure);
judged per rank against the baseline in the parent (compile_guard.quality.rules). docs/check.md argues
every default.
"""
