"""Configs of the engine under test: the model, the parallel layout and the runtime.

All frozen, keyword-only; `__post_init__` rejects bad values with the value seen, the
values allowed and what to do, so a typo fails before any process group exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DEVICES = ("auto", "cpu", "cuda")
_DIST_BACKENDS = ("auto", "gloo", "nccl")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _require_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{type(obj).__name__}.{name}={value!r} is invalid; expected a positive int")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A tiny causal video DiT generator: one call denoises one chunk of latent frames."""

    dim: int = 128  # transformer width
    num_heads: int = 8  # attention heads; TP shards them, so tp must divide this
    num_layers: int = 4  # transformer blocks
    ffn_mult: int = 4  # FFN hidden = ffn_mult * dim; TP shards the hidden
    latent_channels: int = 4  # channels of a latent frame
    latent_height: int = 16  # latent frame height
    latent_width: int = 16  # latent frame width
    patch_size: int = 2  # square patch; tokens_per_frame = (H / p) * (W / p)
    frames_per_chunk: int = 3  # latent frames generated per chunk (one envelope)
    cache_frames: int = 6  # KV cache capacity in frames (rolling window)
    cond_len: int = 16  # conditioning tokens (text-embedding stand-in)
    cond_dim: int = 64  # conditioning embedding width
    freq_dim: int = 64  # sinusoidal width of timestep and frame-position embeddings
    dtype: str = "float32"  # parameter and activation dtype: float32, bfloat16, float16
    seed: int = 0  # every rank derives the same full weights from it, then shards
    eps: float = 1e-6  # norm epsilon

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "dim",
            "num_heads",
            "num_layers",
            "ffn_mult",
            "latent_channels",
            "latent_height",
            "latent_width",
            "patch_size",
            "frames_per_chunk",
            "cache_frames",
            "cond_len",
            "cond_dim",
            "freq_dim",
        )
        if self.dim % self.num_heads:
            raise ConfigError(
                f"num_heads({self.num_heads}) does not divide dim({self.dim}); pick num_heads in {_divisors(self.dim)}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim = dim / num_heads = {self.head_dim} must be even")
        if self.freq_dim % 2:
            raise ConfigError(f"freq_dim({self.freq_dim}) must be even")
        for side in ("latent_height", "latent_width"):
            if getattr(self, side) % self.patch_size:
                raise ConfigError(
                    f"patch_size({self.patch_size}) does not divide {side}"
                    f"({getattr(self, side)}); pick a patch_size in {_divisors(getattr(self, side))}"
                )
        if self.cache_frames < self.frames_per_chunk:
            raise ConfigError(
                f"cache_frames({self.cache_frames}) < frames_per_chunk({self.frames_per_chunk});"
                f" the cache must hold at least one chunk: set cache_frames >= {self.frames_per_chunk}"
            )
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype={self.dtype!r} is invalid; pick one of {sorted(_DTYPES)}")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} is invalid; expected an int >= 0")
        if not self.eps > 0:
            raise ConfigError(f"eps={self.eps} is invalid; expected a float > 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.ffn_mult * self.dim

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size) * (self.latent_width // self.patch_size)

    @property
    def tokens_per_chunk(self) -> int:
        return self.frames_per_chunk * self.tokens_per_frame

    @property
    def cache_tokens(self) -> int:
        return self.cache_frames * self.tokens_per_frame

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def check_tp(self, tp: int) -> None:
        """Raise unless `tp` shards heads and FFN hidden evenly."""
        allowed = [d for d in _divisors(self.num_heads) if self.ffn_dim % d == 0]
        if not isinstance(tp, int) or tp <= 0 or tp not in allowed:
            raise ConfigError(
                f"tp({tp}) does not divide num_heads({self.num_heads}) and "
                f"ffn_dim({self.ffn_dim}); pick tp in {allowed}"
            )


@dataclass(frozen=True, kw_only=True)
class DistConfig:
    """How a rank joins the job: device, collective backend, timeouts. (The mesh's shape is the topology's:
    engine.layout.ParallelLayout checks tp * pp against the world it joined.)"""

    device: str = "auto"  # auto: cuda when available, else cpu
    backend: str = "auto"  # auto: nccl on cuda, gloo on cpu
    timeout_s: float = 30.0  # every process group's timeout: a frozen peer is seen after this

    def __post_init__(self) -> None:
        if self.device not in _DEVICES:
            raise ConfigError(f"device={self.device!r} is invalid; pick one of {list(_DEVICES)}")
        if self.backend not in _DIST_BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is invalid; pick one of {list(_DIST_BACKENDS)}")
        if not 0 < self.timeout_s <= 600:
            raise ConfigError(
                f"timeout_s={self.timeout_s} is invalid; expected seconds in (0, 600]: "
                "a longer timeout turns a frozen peer into a hang"
            )

    def resolved_device_type(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.resolved_device_type() == "cuda" else "gloo"
