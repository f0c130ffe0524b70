"""Small standalone repro scripts, runnable with `torchrun --nproc-per-node=2`."""
