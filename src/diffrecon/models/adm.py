"""ADM: the ε-prediction U-Net of "Diffusion Models Beat GANs" (guided-diffusion's ``UNetModel``).

:class:`ADMUNet` reproduces that network so that published checkpoints load into it by name:
its ``state_dict()`` holds exactly the original's tensors, in the original's order —
``time_embed.*``, ``label_emb.weight`` (class-conditional only), ``input_blocks.*``,
``middle_block.*``, ``output_blocks.*``, ``out.*`` — with the original shapes. Three published
priors use it (:data:`IMAGENET_256_UNCOND`, :data:`DDS_AAPM_256`, :data:`DIFFUSIONBLEND_PATCH`,
see :mod:`diffrecon.models.published`); :class:`ADMNoiseNetwork` puts it behind the calling
convention of the project's noise networks (ε of the input's channels, integer steps, labels).

Structure (C = ``model_channels``, E = 4C the embedding width, levels ℓ = 0 … L−1 with widths
C·``channel_mult[ℓ]``; the feature map of level ℓ has downsample factor d = 2^ℓ):

* embedding: e = W₂ SiLU(W₁ φ(t) + b₁) + b₂ (+ label_emb[y]), where φ(t) ∈ ℝ^C is the sinusoidal
  embedding of float(t): φ_j = cos(t ω_j), φ_{C/2+j} = sin(t ω_j), ω_j = 10000^(−j/(C/2));
* encoder: a 3×3 convolution, then per level ``num_res_blocks`` residual blocks (each followed by
  self-attention where d ∈ ``attention_ds``) and, except at the last level, one downsampling step
  (a residual block that average-pools, or a stride-2 convolution);
* middle: residual block, attention, residual block;
* decoder: per level (deepest first) ``num_res_blocks + 1`` residual blocks on the concatenation
  with the matching encoder output (attention where d ∈ ``attention_ds``), the last one of each
  level but the top followed by an upsampling step (a residual block with nearest ×2, or
  nearest ×2 then a 3×3 convolution);
* output: GroupNorm, SiLU, 3×3 convolution to ``out_channels``.

Residual block with scale-shift norm: h = conv(SiLU(GN(x))); (s, b) = Linear(SiLU(e));
h = conv(dropout(SiLU(GN(h)·(1 + s) + b))); out = skip(x) + h, skip the identity when the width
is unchanged, else a 1×1 convolution (without scale-shift norm: h + Linear(SiLU(e)) before the
second norm). Attention: GroupNorm, a 1×1 convolution to q, k, v with the heads laid out
head-major (each head's [q; k; v] block contiguous), softmax(qᵀk / √c_h) per head of width c_h,
a zero-initialised 1×1 output projection, and the residual. GroupNorm uses 32 groups and
computes in float32 whatever the input's dtype.

The network accepts any H × W divisible by 2^(L−1) (the attention positions are fixed by
downsample factor, not by size); ``image_size`` records the size the weights were trained at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffrecon.options import Options

__all__ = ["ADMConfig", "ADMUNet", "ADMNoiseNetwork", "timestep_embedding", "IMAGENET_256_UNCOND",
           "DDS_AAPM_256", "DIFFUSIONBLEND_PATCH", "PRESETS"]


@dataclass
class ADMConfig(Options):
    """Settings of an :class:`ADMUNet` (guided-diffusion's ``UNetModel`` arguments, attention given
    as downsample factors rather than resolutions).

    ``out_channels`` is the network's full output: 2 × ``in_channels`` with ``learn_sigma`` (ε
    first, then the learned-variance interpolation v), else ``in_channels``. ``num_head_channels``
    > 0 fixes the head width (heads = width / num_head_channels) and overrides ``num_heads``;
    ``num_heads_upsample`` = −1 means ``num_heads`` in the decoder. ``num_classes`` None is an
    unconditional network, else a learned embedding of that many labels added to the time
    embedding.
    """

    in_channels: int = 3
    out_channels: int = 6
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_ds: tuple[int, ...] = (8, 16, 32)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    num_classes: int | None = None
    dropout: float = 0.0
    image_size: int = 256
    learn_sigma: bool = True

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_ds = tuple(int(d) for d in self.attention_ds)
        if self.in_channels < 1 or self.model_channels < 1 or self.num_res_blocks < 1 or not self.channel_mult:
            raise ValueError(f"adm: in_channels, model_channels, num_res_blocks and channel_mult must be "
                             f"positive, got {self.in_channels}, {self.model_channels}, {self.num_res_blocks}, "
                             f"{self.channel_mult}")
        expected = self.in_channels * (2 if self.learn_sigma else 1)
        if self.out_channels != expected:
            raise ValueError(f"adm: out_channels must be {expected} for {self.in_channels} input channels with "
                             f"learn_sigma={self.learn_sigma}, got {self.out_channels}")
        for m in self.channel_mult:
            if (self.model_channels * m) % 32:
                raise ValueError(f"adm: every width model_channels × channel_mult must be a multiple of 32 "
                                 f"(GroupNorm's groups), got {self.model_channels} × {m}")
        if self.num_head_channels <= 0 and self.num_heads <= 0:
            raise ValueError("adm: give num_head_channels > 0 or num_heads > 0")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"adm: num_classes must be None or positive, got {self.num_classes}")

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (tuples as lists), with ``architecture: adm``."""
        d = asdict(self)
        return {"architecture": "adm", **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels


# --------------------------------------------------------------------------------------- presets
#: OpenAI's 256 × 256 unconditional ImageNet model (``256x256_diffusion_uncond.pt``).
IMAGENET_256_UNCOND = ADMConfig()
#: DDS's AAPM 256 CT slice prior (``AAPM256_1M.pt``): one channel, one residual block per level,
#: attention only at downsample factor 16.
DDS_AAPM_256 = ADMConfig(in_channels=1, out_channels=2, num_res_blocks=1, attention_ds=(16,))
#: DiffusionBlend's 3-slice patch prior: the ImageNet layout with three slices as channels and a
#: 1000-row label embedding (labels 1 and 3: slice spacing of the patch).
DIFFUSIONBLEND_PATCH = ADMConfig(num_classes=1000)

PRESETS = {"adm_imagenet256_uncond": IMAGENET_256_UNCOND, "dds_aapm256": DDS_AAPM_256,
           "diffusionblend_patch": DIFFUSIONBLEND_PATCH}


# ------------------------------------------------------------------------------------ building blocks
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of t (B,) (float, fractional allowed): [cos(t ω), sin(t ω)] with
    ω_j = max_period^(−j / (dim/2)), j = 0 … dim/2 − 1, and a zero column when dim is odd."""
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.reshape(-1, 1).to(torch.float32) * omega.reshape(1, -1)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (32 groups) evaluated in float32; the result is returned in the input's dtype."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class EmbeddingBlock(nn.Module):
    """A block that takes the embedding e (B, E) besides its features."""


class EmbedSequential(nn.Sequential):
    """Applies its modules in order, passing the embedding to those that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbeddingBlock) else layer(x)
        return x


class Resample(nn.Module):
    """×2 nearest upsampling or ×½ downsampling (average pooling, or a stride-2 3×3 convolution
    when ``conv``); with ``conv`` the upsampling is followed by a 3×3 convolution. State dict:
    ``conv.*`` (up) or ``op.*`` (down) with ``conv``, nothing without."""

    def __init__(self, channels: int, up: bool, conv: bool):
        super().__init__()
        self.up = up
        if conv and up:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        elif conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.has_conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.has_conv else x
        return self.op(x) if self.has_conv else F.avg_pool2d(x, kernel_size=2, stride=2)


class ResBlock(EmbeddingBlock):
    """Residual block x → skip(x) + h conditioned on e (module docstring), optionally resampling
    both paths (``up``/``down``: between the first norm-activation and the first convolution).

    State dict: ``in_layers.{0: GroupNorm, 2: Conv}``, ``emb_layers.1`` (Linear E → 2·out with
    scale-shift norm, else out), ``out_layers.{0: GroupNorm, 3: Conv}``, ``skip_connection``
    (1×1 Conv when the width changes)."""

    def __init__(self, channels: int, emb_dim: int, dropout: float, out_channels: int | None = None,
                 scale_shift: bool = True, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = up or down
        if self.resample:
            self.h_upd = Resample(channels, up=up, conv=False)
            self.x_upd = Resample(channels, up=up, conv=False)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, (2 if scale_shift else 1) * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = rest(norm(h + e))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual.

    qkv = W_qkv GN(x) as (B, 3C, N) — heads first, each head's channels ordered [q; k; v];
    per head a = v softmax(qᵀk / √c_h) (softmax over keys, in float32); out = x + W_o a.
    State dict: ``norm``, ``qkv`` (Conv1d C → 3C, weight (3C, C, 1)), ``proj_out`` (Conv1d C → C).
    """

    def __init__(self, channels: int, num_heads: int, num_head_channels: int):
        super().__init__()
        if num_head_channels > 0:
            if channels % num_head_channels:
                raise ValueError(f"adm: attention width {channels} is not a multiple of num_head_channels "
                                 f"{num_head_channels}")
            num_heads = channels // num_head_channels
        if channels % num_heads:
            raise ValueError(f"adm: attention width {channels} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        n = flat.shape[-1]
        qkv = self.qkv(self.norm(flat))                                      # (B, 3C, N)
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, n).split(ch, dim=1)  # each (B·H, c_h, N)
        logits = torch.einsum("bcq,bck->bqk", q, k) / math.sqrt(ch)
        weights = torch.softmax(logits.float(), dim=-1).to(q.dtype)
        a = torch.einsum("bqk,bck->bcq", weights, v).reshape(b, c, n)
        return (flat + self.proj_out(a)).reshape(b, c, *spatial)


# ------------------------------------------------------------------------------------------ network
class ADMUNet(nn.Module):
    """The ADM U-Net of ``cfg`` (module docstring); parameter names and shapes are those of
    guided-diffusion's ``UNetModel`` built with the same settings.

    ``forward(x (B, in_channels, H, W), t (B,) or scalar diffusion index (int or float, in
    [0, T−1]), y (B,) int labels or None) -> (B, out_channels, H, W)``; H and W must be multiples
    of 2^(len(channel_mult) − 1).
    """

    def __init__(self, cfg: ADMConfig):
        super().__init__()
        self.cfg = cfg
        c, e = cfg.model_channels, cfg.time_embed_dim
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.time_embed = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, e)

        def res(cin, cout, **kw):
            return ResBlock(cin, e, cfg.dropout, cout, cfg.use_scale_shift_norm, **kw)

        def attn(width, heads):
            return AttentionBlock(width, heads, cfg.num_head_channels)

        width = int(cfg.channel_mult[0] * c)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, width, 3, padding=1))])
        skips, ds = [width], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(width, mult * c)]
                width = mult * c
                if ds in cfg.attention_ds:
                    layers.append(attn(width, cfg.num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(width)
            if level != len(cfg.channel_mult) - 1:
                down = res(width, width, down=True) if cfg.resblock_updown else Resample(width, up=False, conv=True)
                self.input_blocks.append(EmbedSequential(down))
                skips.append(width)
                ds *= 2
        self.middle_block = EmbedSequential(res(width, width), attn(width, cfg.num_heads), res(width, width))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(width + skips.pop(), mult * c)]
                width = mult * c
                if ds in cfg.attention_ds:
                    layers.append(attn(width, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(width, width, up=True) if cfg.resblock_updown
                                  else Resample(width, up=True, conv=True))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(width), nn.SiLU(), nn.Conv2d(width, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"adm: input must be (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"adm: H and W must be multiples of {factor}, got {x.shape[-2]} x {x.shape[-1]}")
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        if (y is None) != (cfg.num_classes is None):
            raise ValueError("adm: class labels are needed exactly when the network has a label embedding")
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(dtype))
        if y is not None:
            y = torch.as_tensor(y, device=x.device).reshape(-1).expand(x.shape[0])
            emb = emb + self.label_emb(y.long())
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


class ADMNoiseNetwork(ADMUNet):
    """ε_θ(x_t, t, y) of an :class:`ADMUNet`, in the project's noise-network convention
    (:class:`~diffrecon.models.networks.NoiseNetwork`).

    ``forward(x (B, C, H, W) in the diffusion's [−1, 1] range, t (B,) or scalar integer step in
    [0, T−1], labels (B,) | scalar | None) -> ε̂ (B, C, H, W)``: the first C output channels
    (with ``learn_sigma`` the remaining C, the variance interpolation, are dropped). The module
    *is* the U-Net (a subclass, no wrapping attribute), so its ``state_dict()`` keeps the
    original layout's names: imported, fine-tuned and exported weights share them;
    :meth:`full_output` gives all output channels.
    """

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, t, labels)[:, : self.cfg.in_channels]

    def full_output(self, x: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        """All ``out_channels`` channels (B, out_channels, H, W): ε̂, then v with ``learn_sigma``."""
        return super().forward(x, t, labels)
