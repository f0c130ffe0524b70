"""compile_guard: compile-parity regression harness for distributed PyTorch inference."""

__version__ = "0.1.0"
