"""Score and noise-prediction networks built on diffusers' ``UNet2DModel``.

score-MRI uses an NCSN++-style network: Fourier features of log(sigma) as the time
embedding and an output divided by sigma. diffusers expresses both with
``time_embedding_type="fourier"`` (the model divides its output by the timestep it is
given, and its Gaussian Fourier projection takes log of it), with
``center_input_sample=True`` mapping x in [0, 1] to 2x - 1 as NCSN++ does. diffusers'
Skip blocks (NCSN++'s progressive skip path) hard-code 3 image channels, so the plain
down/up blocks with attention at the lowest resolution are used instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class UNetConfig:
    """Architecture of a :class:`~diffusers.UNet2DModel` (sizes come from the pipeline config)."""

    sample_size: int = 64
    in_channels: int = 1
    out_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, True)
    norm_num_groups: int = 8
    time_embedding: str = "fourier"          # fourier (VE, input sigma) | positional (VP, input t)
    num_class_embeds: int | None = None      # DiffusionBlend: slice-spacing labels
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        for key in ("channels", "attention"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def build_unet(cfg: UNetConfig):
    from diffusers import UNet2DModel

    if len(cfg.channels) != len(cfg.attention):
        raise ValueError(f"unet: channels {cfg.channels} and attention {cfg.attention} differ in length")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        center_input_sample=cfg.time_embedding == "fourier",
        time_embedding_type=cfg.time_embedding,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=cfg.num_class_embeds,
        dropout=cfg.dropout,
        attention_head_dim=None,
        **cfg.extra,
    )


class ScoreNetwork(nn.Module):
    """s_theta(x, sigma) ~ grad_x log p_sigma(x) for VE perturbations; x: (B, C, H, W), sigma: (B,)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = build_unet(cfg)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        return self.unet(x, sigma).sample        # UNet2DModel(fourier) already divides by sigma


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class NoiseNetwork(nn.Module):
    """ε_θ(x_t, t, y) for VP diffusion; x: (B, C, H, W) in [−1, 1], t: (B,) integer steps,
    y: (B,) integer class labels or None (DiffusionBlend: the slice spacing of a 3-slice patch,
    through diffusers' learned class embedding added to the time embedding)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        if cfg.time_embedding != "positional":
            raise ValueError("a noise-prediction network uses the positional time embedding")
        self.cfg = cfg
        self.unet = build_unet(cfg)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        if (labels is None) != (self.cfg.num_class_embeds is None):
            raise ValueError("class labels are needed exactly when the network has class embeddings")
        if labels is not None:
            labels = torch.as_tensor(labels, device=x.device).reshape(-1).expand(x.shape[0])
        return self.unet(x, t, class_labels=labels).sample
