"""A small convolutional decoder, latents -> pixels: rank0's decode stage in PP0.

Replicated (no TP): it runs on the driver, outside the mesh.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import ModelConfig
from engine.model.weights import Shard, materialize

_UPSCALE = 4  # pixels per latent, per side


class LatentDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig, *, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width // 2, 3, 3, padding=1),
            nn.Tanh(),
        )
        rules = {}
        for name, param in self.named_parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 1
            std = fan_in**-0.5 if param.dim() > 1 else 0.02
            rules[name] = (Shard.REPLICATED, 0.0, std)
        # An offset keeps decoder tensors independent of generator tensors of the same name.
        materialize(self, rules, seed=cfg.seed + 1, tp_rank=0, tp_size=1)

    @torch.no_grad()
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, F, C, H, W] latents -> [B, F, 3, 4H, 4W] pixels in [-1, 1]."""
        b, f = latents.shape[:2]
        pixels = self.net(latents.flatten(0, 1))
        return pixels.unflatten(0, (b, f))

    @staticmethod
    def pixel_shape(cfg: ModelConfig) -> tuple[int, int, int]:
        return 3, cfg.latent_height * _UPSCALE, cfg.latent_width * _UPSCALE
