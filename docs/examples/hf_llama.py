"""A real third-party model guarded as a user would: a tiny Hugging Face Llama, tensor-parallel.

    pip install -c constraints.txt -e '.[hf]'     # transformers (the test extra has it too)
    python -m compile_guard baseline refresh --target docs.examples.hf_llama:llama --backend aot_eager \\
        --baselines my_baselines
    python -m compile_guard check --target docs.examples.hf_llama:llama --backend aot_eager --baselines my_baselines

`transformers.LlamaForCausalLM` from a config only (random init, nothing downloaded), every
decoder layer made tensor-parallel with torch's `parallelize_module`: q/k/v and the MLP's
gate/up projections colwise, o/down projections rowwise (their all-reduces appear only after
dispatch). compile_guard compiles the forward, agrees on every graph across the ranks before
it runs, and probes it. `llama_rank_dtype` is the same model where rank 1 alone rounds its
embeddings through bfloat16: the compile agreement stops both ranks before the first step.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from compile_guard import GuardTarget, TargetContext

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, TOKENS = 256, 64, 2, 4, 2, 8


def _plan(layers: int) -> dict[str, object]:
    plan: dict[str, object] = {}
    for i in range(layers):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            plan[f"model.layers.{i}.{name}"] = ColwiseParallel()
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            plan[f"model.layers.{i}.{name}"] = RowwiseParallel()
    return plan


def _llama(ctx: TargetContext) -> tuple[torch.nn.Module, list[tuple[torch.Tensor, ...]]]:
    from transformers import LlamaConfig, LlamaForCausalLM  # a test/extra dependency: imported where used

    if HEADS % ctx.world_size or KV_HEADS % ctx.world_size:
        raise ValueError(f"tp({ctx.world_size}) does not divide heads({HEADS})/kv_heads({KV_HEADS}); use 1 or 2 ranks")
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=4 * TOKENS,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)  # the same full weights on every rank; parallelize_module keeps each rank's shard
    model = LlamaForCausalLM(cfg).to(ctx.device).eval()
    mesh = DeviceMesh.from_group(ctx.tp_group, ctx.device.type)
    parallelize_module(model, mesh, _plan(LAYERS))
    ids = [
        (torch.randint(0, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(s)).to(ctx.device),)
        for s in (1, 2)
    ]
    return model, ids


def llama(ctx: TargetContext) -> GuardTarget:
    model, inputs = _llama(ctx)

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, use_cache=False).logits

    return GuardTarget(fn=forward, inputs=inputs)


def llama_rank_dtype(ctx: TargetContext) -> GuardTarget:
    """Rank 1 rounds its embeddings through bfloat16 ("matches the checkpoint's precision on this host"):
    its graph differs from rank 0's by two casts, and so would every number after them."""
    model, inputs = _llama(ctx)
    low = ctx.rank == 1

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        embeds = model.model.embed_tokens(input_ids)
        if low:
            embeds = embeds.to(torch.bfloat16).to(torch.float32)
        return model(inputs_embeds=embeds, use_cache=False).logits

    return GuardTarget(fn=forward, inputs=inputs)
