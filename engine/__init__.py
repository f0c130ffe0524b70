"""The engine under test: a tiny causal video DiT with TP layers, KV cache and decoder."""
