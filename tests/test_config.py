"""Bad config values raise ValueError naming the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from engine.compile import CompileConfig
from engine.config import DistConfig, ModelConfig


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": -8}, r"ModelConfig.dim=-8 is invalid; expected a positive int"),
        ({"num_layers": 0}, r"ModelConfig.num_layers=0 is invalid"),
        ({"num_heads": 3}, r"num_heads\(3\) does not divide dim\(128\); pick num_heads in \[1, 2, 4, 8, 16"),
        ({"patch_size": 3}, r"patch_size\(3\) does not divide latent_height\(16\); pick a patch_size in \[1, 2, 4"),
        ({"cache_frames": 2}, r"cache_frames\(2\) < frames_per_chunk\(3\)"),
        ({"dtype": "float64"}, r"dtype='float64' is invalid; pick one of \['bfloat16', 'float16', 'float32'\]"),
        ({"seed": -1}, r"seed=-1 is invalid"),
        ({"frames_per_chunk": 1.5}, r"frames_per_chunk=1.5 is invalid"),
    ],
)
def test_model_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_tp_must_divide_heads_and_ffn():
    cfg = ModelConfig()  # 8 heads, ffn 512
    for tp in (1, 2, 4, 8):
        cfg.check_tp(tp)
    with pytest.raises(ValueError, match=r"tp\(3\) does not divide num_heads\(8\) .*pick tp in \[1, 2, 4, 8\]"):
        cfg.check_tp(3)
    with pytest.raises(ValueError, match=r"tp\(0\)"):
        cfg.check_tp(0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "tpu"}, r"device='tpu' is invalid; pick one of \['auto', 'cpu', 'cuda'\]"),
        ({"backend": "mpi"}, r"backend='mpi' is invalid; pick one of \['auto', 'gloo', 'nccl'\]"),
        ({"timeout_s": 1800}, r"timeout_s=1800 is invalid; expected seconds in \(0, 600\]"),
    ],
)
def test_dist_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistConfig(**kwargs)


def test_dist_config_resolves_cpu_to_gloo():
    cfg = DistConfig(device="cpu")
    assert (cfg.resolved_device_type(), cfg.resolved_backend()) == ("cpu", "gloo")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tvm"}, r"backend='tvm' is invalid"),
        ({"mode": "fast"}, r"mode='fast' is invalid"),
        ({"backend": "aot_eager", "mode": "max-autotune"}, r"needs backend='inductor'"),
    ],
)
def test_compile_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompileConfig(enabled=True, **kwargs)
