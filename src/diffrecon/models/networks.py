"""The networks of the learned methods, all built on diffusers' ``UNet2DModel``.

* :class:`ScoreNetwork` — s_θ(x, σ) of a VE prior (score-MRI, DiffusionMBIR);
* :class:`NoiseNetwork` — ε_θ(x_t, t, y) of a VP prior (DiffusionBlend, DDS);
* :class:`ImageUNet` — f(u) = u + g(u) of the FBP-U-Net (the MRI U-Net is fastMRI's, :mod:`~diffrecon.models.fastmri_nets`).

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

from diffrecon.options import Options


@dataclass
class UNetConfig(Options):
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

    def to_dict(self) -> dict:
        return asdict(self)


def build_unet(cfg: UNetConfig):
    """The ``UNet2DModel`` of ``cfg``: one down/up block per entry of ``channels``, with attention
    where ``attention`` says so; inputs and outputs (B, in/out_channels, sample_size, sample_size)."""
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


class ImageUNet(nn.Module):
    """f(u) = u + g(u, t=0) on (B, C, H, W) images; g a positional-embedding ``UNet2DModel``.

    The embedding of t = 0 is a constant vector, so the time branch reduces to a learned bias per
    block and g is a plain U-Net (no diffusion).
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = build_unet(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return x + self.unet(x, t).sample


def image_unet(model_cfg: dict, size: int) -> ImageUNet:
    """A one-channel :class:`ImageUNet` of ``size`` × ``size`` images from a config's ``model`` block
    (channels, attention, ...); input centring is off (inputs are in [0, 1])."""
    return ImageUNet(UNetConfig.from_dict({**model_cfg, "sample_size": size, "in_channels": 1,
                                           "out_channels": 1, "time_embedding": "positional"}))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
