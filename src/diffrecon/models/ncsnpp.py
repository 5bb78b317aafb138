"""NCSN++ (Song et al., 2021) with the tensor layout of the published score-MRI and DiffusionMBIR priors.

The network is the continuous-time VE score model s_θ(x, σ) ≈ ∇_x log p_σ(x) of the score-SDE
paper in the configuration both published priors use (``SCORE_MRI_KNEE_320``: fastMRI knee
320², ``DIFFUSIONMBIR_AAPM_256``: AAPM CT 256²). Its ``state_dict()`` has exactly the names,
shapes, order and dtypes of the original model class (522 entries: the buffer ``sigmas``, the
fixed Fourier frequencies ``all_modules.0.W`` and 520 trainable tensors), so a published
checkpoint converted with :func:`state_from_original` loads strictly.

Architecture, for x (B, C, H, W) in [0, 1] and σ (B,):

1. **Noise embedding.** Gaussian Fourier features of log σ with fixed random frequencies
   W ~ N(0, s²) (s = ``fourier_scale``, |W| = ``nf``):
   e = [sin(2π W log σ), cos(2π W log σ)] ∈ R^{2 nf}; then t = L₂(SiLU(L₁(e))) ∈ R^{4 nf}.
2. **Input map.** x ← 2x − 1 unless ``centered``.
3. **Encoder.** A 3×3 convolution to ``nf`` channels, then per resolution level ℓ
   (feature size ``image_size / 2^ℓ``) ``num_res_blocks`` BigGAN residual blocks with
   ``nf * ch_mult[ℓ]`` channels (each followed by self-attention where the level's size is in
   ``attn_resolutions``) and, except at the last level, a down-sampling residual block. A
   second path, the *residual input pyramid*, carries the image itself: at each down-sampling
   it is filtered and sub-sampled by a FIR-down-sampling 3×3 convolution to the level's
   channels and merged with the features, p ← (D(p) + h) / √2 (``skip_rescale``), and p is the
   features from then on.
4. **Middle.** Residual block, self-attention, residual block.
5. **Decoder.** Per level (coarsest first) ``num_res_blocks + 1`` residual blocks on the
   concatenation [h, skip] of the features with the encoder's stored activations (popped in
   reverse), optional attention, and an up-sampling residual block except at the finest level.
6. **Output.** GroupNorm, SiLU, 3×3 convolution to C channels, then divided by σ
   (``scale_by_sigma``): s_θ(x, σ) = f_θ(2x − 1, log σ) / σ.

BigGAN residual block (``skip_rescale``: every residual sum is divided by √2)::

    h = Conv₀(R(SiLU(GN₀(x)))) + Dense₀(SiLU(t))
    h = Conv₁(Dropout(SiLU(GN₁(h))))
    y = (S(R(x)) + h) / √2,   S = 1×1 Conv₂ when the channels change or R resamples, else identity

where R is identity, or the FIR up/down-sampling by 2 with the separable kernel
k = (1,3,3,1) ⊗ (1,3,3,1) / 64 (times 4 for up-sampling) of the ``upfirdn`` convention
(zero-insertion, zero padding, true convolution, decimation). Self-attention (one head, DDPM
style): q, k, v = 1×1 projections of GN(x) written ``NIN`` with weight W (C_in, C_out),
a = softmax(qᵀk / √C) over the H·W positions, y = (x + NIN₃(v a)) / √2.

Attention positions are fixed at construction from ``image_size``: the original decides at
run time by comparing the current feature size with ``attn_resolutions``, so the same weights
evaluated at another input size would gain or lose attention blocks. Here the module list
and the places attention runs are the ones of the configured ``image_size`` whatever the
input size, which lets a smaller input (any multiple of 2^(levels−1)) run the full network in
tests. For the two presets (320 and 256, feature sizes 320/160/80/40 and 256/128/64/32) the
only attention block is the middle one (``all_modules.27``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffrecon.options import Options

__all__ = ["NCSNppConfig", "NCSNpp", "SCORE_MRI_KNEE_320", "DIFFUSIONMBIR_AAPM_256", "state_from_original",
           "fir_downsample", "fir_upsample", "fir_conv_downsample"]


@dataclass(frozen=True)
class NCSNppConfig(Options):
    """Settings of :class:`NCSNpp` (the published priors' values are the defaults, ``image_size`` aside).

    ``nf``: base channels; ``ch_mult``: channel multiplier per resolution level;
    ``num_res_blocks``: residual blocks per level in the encoder (one more in the decoder);
    ``attn_resolutions``: feature sizes with self-attention; ``image_size``: the training image
    side, which fixes the attention positions; ``in_channels``: image channels (also output);
    ``fir_kernel``: 1-D FIR resampling kernel; ``fourier_scale``: std of the Fourier
    frequencies; ``skip_rescale``: divide residual sums by √2; ``init_scale``: scale of the
    last convolution of each residual branch and of the output (0 → 1e-10);
    ``dropout``; ``scale_by_sigma``: output divided by σ; ``centered``: inputs already in
    [−1, 1] (else x ↦ 2x − 1); ``num_scales``, ``sigma_min``, ``sigma_max``: the VE schedule of
    the ``sigmas`` buffer.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    image_size: int = 256
    in_channels: int = 1
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0
    skip_rescale: bool = True
    init_scale: float = 0.0
    dropout: float = 0.0
    scale_by_sigma: bool = True
    centered: bool = False
    num_scales: int = 2000
    sigma_min: float = 0.01
    sigma_max: float = 378.0

    def to_dict(self) -> dict:
        return asdict(self)


#: score-MRI's ``checkpoint_95.pth`` (fastMRI knee, 320², VE σ ∈ [0.01, 378]).
SCORE_MRI_KNEE_320 = NCSNppConfig(image_size=320)
#: DiffusionMBIR's ``checkpoint_185.pth`` (AAPM CT, 256², VE σ ∈ [0.01, 378]).
DIFFUSIONMBIR_AAPM_256 = NCSNppConfig(image_size=256)


# ----------------------------------------------------------------------------- initialisation
def _variance_scaling_(w: torch.Tensor, scale: float, fan_in: int, fan_out: int) -> torch.Tensor:
    """Uniform init with variance ``scale / mean(fan_in, fan_out)`` (scale 0 → 1e-10), in place."""
    scale = 1e-10 if scale == 0 else scale
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def _init_conv(conv_weight: torch.Tensor, scale: float = 1.0) -> None:
    out_ch, in_ch, kh, kw = conv_weight.shape
    _variance_scaling_(conv_weight, scale, in_ch * kh * kw, out_ch * kh * kw)


def _conv(in_ch: int, out_ch: int, size: int, init_scale: float = 1.0) -> nn.Conv2d:
    """A ``size``×``size`` stride-1 'same' convolution with variance-scaling weights and zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, size, padding=size // 2)
    _init_conv(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _dense(in_dim: int, out_dim: int) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    _variance_scaling_(lin.weight, 1.0, in_dim, out_dim)
    nn.init.zeros_(lin.bias)
    return lin


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C/4, 32) groups and ε = 1e-6."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


# ----------------------------------------------------------------------------- FIR resampling
def _fir_2d(kernel, gain: float, like: torch.Tensor) -> torch.Tensor:
    """The separable 2-D kernel outer(k, k) / sum(k)² × ``gain`` (n, n), in ``like``'s dtype/device."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    k2 = torch.outer(k, k)
    return (k2 / k2.sum() * gain).to(dtype=like.dtype, device=like.device)


def _depthwise(x: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """``k2`` (n, n) as a (C, 1, n, n) depthwise weight for ``x`` (B, C, H, W)."""
    return k2.expand(x.shape[1], 1, *k2.shape)


def fir_downsample(x: torch.Tensor, kernel=(1, 3, 3, 1)) -> torch.Tensor:
    """FIR down-sampling by 2: (B, C, H, W) → (B, C, H/2, W/2).

    y = ↓2( pad(x, ⌈p/2⌉, ⌊p/2⌋) * k ), p = n − 2, with k the normalised n×n kernel and * the
    true (flipped) convolution; for (1,3,3,1) each output is the 4×4 weighted mean of the inputs
    2i−1 … 2i+2.
    """
    k2 = _fir_2d(kernel, 1.0, x)
    p = k2.shape[0] - 2
    x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
    return F.conv2d(x, _depthwise(x, k2.flip(0, 1)), stride=2, groups=x.shape[1])


def fir_upsample(x: torch.Tensor, kernel=(1, 3, 3, 1)) -> torch.Tensor:
    """FIR up-sampling by 2: (B, C, H, W) → (B, C, 2H, 2W).

    Zero-insertion (x at even positions), padding by (⌈p/2⌉ + 1, ⌊p/2⌋) with p = n − 2, true
    convolution with 4·k (gain 4 keeps a constant image constant). Written as a strided
    transposed convolution (its full output is the zero-inserted signal convolved with 4·k)
    cropped to the 2H × 2W window of that padding.
    """
    k2 = _fir_2d(kernel, 4.0, x)
    n = k2.shape[0]
    start = n - 1 - ((n - 2 + 1) // 2 + 1)          # n − 1 − (left padding of the zero-inserted signal)
    y = F.conv_transpose2d(x, _depthwise(x, k2), stride=2, groups=x.shape[1])
    h, w = 2 * x.shape[-2], 2 * x.shape[-1]
    return y[..., start:start + h, start:start + w]


def fir_conv_downsample(x: torch.Tensor, weight: torch.Tensor, kernel=(1, 3, 3, 1)) -> torch.Tensor:
    """FIR filtering followed by a stride-2 convolution with ``weight`` (O, C, m, m), no bias:
    (B, C, H, W) → (B, O, H/2, W/2); padding (⌈p/2⌉, ⌊p/2⌋) with p = n − 2 + m − 1."""
    k2 = _fir_2d(kernel, 1.0, x)
    p = k2.shape[0] - 2 + weight.shape[-1] - 1
    x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
    x = F.conv2d(x, _depthwise(x, k2.flip(0, 1)), groups=x.shape[1])
    return F.conv2d(x, weight, stride=2)


# ----------------------------------------------------------------------------- layers
class GaussianFourierFeatures(nn.Module):
    """e(u) = [sin(2π W u), cos(2π W u)]: (B,) → (B, 2·|W|); W (size,) ~ N(0, scale²) is fixed
    (a parameter with ``requires_grad=False``, as stored in the checkpoints)."""

    def __init__(self, size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        proj = u[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class ResidualFIRDown(nn.Module):
    """The input pyramid's down-sampling: FIR filter, 3×3 stride-2 convolution, bias;
    (B, C_in, H, W) → (B, C_out, H/2, W/2). Parameter ``Conv2d_0.weight`` (C_out, C_in, 3, 3)."""

    class _Conv(nn.Module):
        def __init__(self, in_ch: int, out_ch: int):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
            self.bias = nn.Parameter(torch.zeros(out_ch))
            _init_conv(self.weight)

    def __init__(self, in_ch: int, out_ch: int, kernel):
        super().__init__()
        self.kernel = tuple(kernel)
        self.Conv2d_0 = self._Conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fir_conv_downsample(x, self.Conv2d_0.weight, self.kernel)
        return y + self.Conv2d_0.bias[None, :, None, None]


class ResBlockBigGAN(nn.Module):
    """BigGAN-type residual block with noise conditioning and optional FIR up/down-sampling:
    (B, C_in, H, W), t (B, T) → (B, C_out, H', W') with H' = 2H (up), H/2 (down) or H."""

    def __init__(self, in_ch: int, out_ch: int | None, temb_dim: int, *, up: bool = False,
                 down: bool = False, dropout: float = 0.0, kernel=(1, 3, 3, 1),
                 skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.up, self.down, self.kernel, self.skip_rescale = up, down, tuple(kernel), skip_rescale
        self.GroupNorm_0 = _group_norm(in_ch)
        self.Conv_0 = _conv(in_ch, out_ch, 3)
        self.Dense_0 = _dense(temb_dim, out_ch)
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(out_ch, out_ch, 3, init_scale)
        self.Conv_2 = _conv(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return fir_upsample(x, self.kernel)
        if self.down:
            return fir_downsample(x, self.kernel)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class NIN(nn.Module):
    """Per-pixel linear map y_o = Σ_c x_c W[c, o] + b_o: (B, C_in, H, W) → (B, C_out, H, W).
    Note W is stored (C_in, C_out), the transpose of a 1×1 convolution's weight."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_dim, out_dim))
        self.b = nn.Parameter(torch.zeros(out_dim))
        _variance_scaling_(self.W, init_scale, in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions: (B, C, H, W) → (B, C, H, W),
    y = (x + NIN₃(v softmax(qᵀk/√C))) / √2 with q, k, v = NIN₀,₁,₂(GN(x))."""

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.GroupNorm_0(x)

        def tokens(t):                                   # (B, C, H, W) → (B, 1, HW, C)
            return t.reshape(b, 1, c, height * width).transpose(-1, -2)

        q, k, v = tokens(self.NIN_0(h)), tokens(self.NIN_1(h)), tokens(self.NIN_2(h))
        a = F.scaled_dot_product_attention(q, k, v)      # softmax(q kᵀ / √C) v
        h = self.NIN_3(a.transpose(-1, -2).reshape(b, c, height, width))
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


# ----------------------------------------------------------------------------- the network
def vesde_sigmas(num_scales: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """σ_i = exp(linspace(log σ_max, log σ_min, N))_i, float64 (N,): the VE noise levels, largest first."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))


class NCSNpp(nn.Module):
    """NCSN++ VE score network s_θ(x, σ) (see the module docstring for the architecture).

    ``forward(x, sigma)``: x (B, C, H, W) in [0, 1] (or [−1, 1] when ``centered``), sigma (B,)
    or a scalar (broadcast), the VE noise level (not a time t); returns the score
    (B, C, H, W), already divided by σ when ``scale_by_sigma``. H and W must be divisible by
    2^(len(ch_mult) − 1); the attention positions are those of ``cfg.image_size``.
    The call convention is that of :class:`~diffrecon.models.networks.ScoreNetwork`.

    Modules live in the flat ``all_modules`` list in the original order: 0 Fourier features,
    1–2 dense layers, 3 input convolution, encoder blocks (with the pyramid's down-sampling
    after each down-sampling block), middle, decoder, output GroupNorm and convolution.
    """

    def __init__(self, cfg: NCSNppConfig):
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.ch_mult)
        if cfg.image_size % 2 ** (levels - 1):
            raise ValueError(f"ncsnpp: image_size {cfg.image_size} is not divisible by 2^{levels - 1}")
        self.register_buffer("sigmas", vesde_sigmas(cfg.num_scales, cfg.sigma_min, cfg.sigma_max))
        nf, temb_dim = cfg.nf, 4 * cfg.nf
        #: attention after the residual blocks of level ℓ (fixed from image_size)
        self.attn_levels = tuple((cfg.image_size >> lvl) in cfg.attn_resolutions for lvl in range(levels))

        def block(in_ch, out_ch=None, **kw):
            return ResBlockBigGAN(in_ch, out_ch, temb_dim, dropout=cfg.dropout, kernel=cfg.fir_kernel,
                                  skip_rescale=cfg.skip_rescale, init_scale=cfg.init_scale, **kw)

        def attention(ch):
            return AttnBlock(ch, skip_rescale=cfg.skip_rescale, init_scale=cfg.init_scale)

        mods: list[nn.Module] = [GaussianFourierFeatures(nf, cfg.fourier_scale),
                                 _dense(2 * nf, temb_dim), _dense(temb_dim, temb_dim),
                                 _conv(cfg.in_channels, nf, 3)]
        skip_ch, ch, pyramid_ch = [nf], nf, cfg.in_channels
        for lvl in range(levels):
            for _ in range(cfg.num_res_blocks):
                mods.append(block(ch, nf * cfg.ch_mult[lvl]))
                ch = nf * cfg.ch_mult[lvl]
                if self.attn_levels[lvl]:
                    mods.append(attention(ch))
                skip_ch.append(ch)
            if lvl != levels - 1:
                mods.append(block(ch, down=True))
                mods.append(ResidualFIRDown(pyramid_ch, ch, cfg.fir_kernel))
                pyramid_ch = ch
                skip_ch.append(ch)
        mods += [block(ch), attention(ch), block(ch)]
        for lvl in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                mods.append(block(ch + skip_ch.pop(), nf * cfg.ch_mult[lvl]))
                ch = nf * cfg.ch_mult[lvl]
            if self.attn_levels[lvl]:
                mods.append(attention(ch))
            if lvl != 0:
                mods.append(block(ch, up=True))
        assert not skip_ch
        mods += [_group_norm(ch), _conv(ch, cfg.in_channels, 3, cfg.init_scale)]
        self.all_modules = nn.ModuleList(mods)

    def _sigma(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """σ as a (B,) tensor in x's dtype; a scalar or one-element σ is broadcast."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.numel() != x.shape[0]:
            raise ValueError(f"ncsnpp: {sigma.numel()} noise levels for a batch of {x.shape[0]}")
        return sigma

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        cfg, levels = self.cfg, len(self.cfg.ch_mult)
        sigma = self._sigma(sigma, x)
        step = iter(self.all_modules).__next__         # modules are used in construction order

        def merge(a, b):
            return (a + b) / math.sqrt(2.0) if cfg.skip_rescale else a + b

        temb = step()(torch.log(sigma))                 # (B, 2 nf)
        temb = step()(temb)
        temb = step()(F.silu(temb))                     # (B, 4 nf)
        x = x if cfg.centered else 2 * x - 1
        pyramid = x
        hs = [step()(x)]
        for lvl in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = step()(hs[-1], temb)
                if self.attn_levels[lvl]:
                    h = step()(h)
                hs.append(h)
            if lvl != levels - 1:
                h = step()(hs[-1], temb)                # down-sampling block
                pyramid = merge(step()(pyramid), h)     # residual input pyramid
                hs.append(pyramid)
        h = step()(hs[-1], temb)
        h = step()(h)
        h = step()(h, temb)
        for lvl in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = step()(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[lvl]:
                h = step()(h)
            if lvl != 0:
                h = step()(h, temb)                     # up-sampling block
        h = F.silu(step()(h))
        h = step()(h)
        if cfg.scale_by_sigma:
            h = h / sigma[:, None, None, None]
        return h


# ----------------------------------------------------------------------------- checkpoint conversion
@functools.lru_cache(maxsize=8)
def _layout(cfg: NCSNppConfig) -> tuple[tuple[tuple[str, tuple[int, ...], torch.dtype, bool], ...], int]:
    """(name, shape, dtype, trainable) of every state-dict entry of ``NCSNpp(cfg)``, in order,
    and the number of trainable parameters; built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        net = NCSNpp(cfg)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    rows = tuple((name, tuple(t.shape), t.dtype, name in trainable) for name, t in net.state_dict().items())
    return rows, len(trainable)


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _unprefixed(d: dict, prefix: str) -> dict:
    return {(k[len(prefix):] if prefix and isinstance(k, str) and k.startswith(prefix) else k): v
            for k, v in d.items()}


def _checked(name: str, t, shape: tuple[int, ...], dtype: torch.dtype, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
        raise ValueError(f"ncsnpp checkpoint: {where} {name}: shape {_shape(t)}, expected {shape}")
    return t.detach().to(dtype)


def state_from_original(obj: dict, prefix: str = "module.", use_ema: bool = True, *,
                        cfg: NCSNppConfig = SCORE_MRI_KNEE_320) -> dict[str, torch.Tensor]:
    """The state dict of :class:`NCSNpp` (bare names, strict-loadable) from a score-SDE checkpoint.

    ``obj`` is what ``torch.load(path, weights_only=True)`` returns for score-MRI's
    ``checkpoint_95.pth`` or DiffusionMBIR's ``checkpoint_185.pth``: ``{'model': state dict
    with ``prefix``-ed keys, 'ema': {'decay', 'num_updates', 'shadow_params': [tensors]},
    'step', 'optimizer'}``; a raw state dict (no wrapper, keys with or without ``prefix``) is
    also accepted and taken as the weights.

    * ``use_ema`` (wrapper only): the trainable weights are ``ema['shadow_params']``, a
      positional list in the order of the module's trainable parameters (all parameters but
      ``all_modules.0.W``); the fixed Fourier frequencies ``all_modules.0.W`` come from
      ``model[prefix + 'all_modules.0.W']``. (score-MRI's own loader matches no key of the
      prefixed ``'model'`` entry and its EMA copy skips W, so there W stays at its random
      init; this conversion uses the trained W.) ``use_ema=False``: everything from ``'model'``.
    * ``sigmas`` (the VE levels, never read by the forward pass) is taken from the weights
      when present, else computed from ``cfg``.
    * ``cfg`` gives the expected layout (the two presets share it).

    Returns float32 parameters and the float64 ``sigmas``. A missing, extra or wrongly shaped
    tensor, or a shadow list of the wrong length, is a :class:`ValueError` with one line naming
    the first offending tensor.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"ncsnpp checkpoint: a dict is expected, not {type(obj).__name__}")
    rows, n_trainable = _layout(cfg)
    wrapped = "model" in obj or "ema" in obj
    weights = obj.get("model", {}) if wrapped else obj
    if not isinstance(weights, dict):
        raise ValueError(f"ncsnpp checkpoint: 'model' is a {type(weights).__name__}, not a state dict")
    weights = _unprefixed(weights, prefix)
    out: dict[str, torch.Tensor] = {}

    if wrapped and use_ema:
        ema = obj.get("ema")
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if not isinstance(shadow, (list, tuple)):
            raise ValueError("ncsnpp checkpoint: no 'ema'/'shadow_params' list (use_ema=False takes 'model')")
        trainable = [r for r in rows if r[3]]
        for i, (name, shape, dtype, _) in enumerate(trainable):
            if i >= len(shadow):
                raise ValueError(f"ncsnpp checkpoint: ema shadow_params has {len(shadow)} tensors for "
                                 f"{n_trainable} trainable parameters; {name} has none")
            t = shadow[i]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise ValueError(f"ncsnpp checkpoint: ema shadow_params[{i}] ({name}): shape {_shape(t)}, "
                                 f"expected {shape} ({len(shadow)} tensors for {n_trainable} parameters)")
            out[name] = t.detach().to(dtype)
        if len(shadow) != n_trainable:
            raise ValueError(f"ncsnpp checkpoint: ema shadow_params has {len(shadow)} tensors for "
                             f"{n_trainable} trainable parameters; shadow_params[{n_trainable}] is extra")
        for name, shape, dtype, is_trainable in rows:
            if is_trainable or name == "sigmas":
                continue
            if name not in weights:
                raise ValueError(f"ncsnpp checkpoint: 'model' lacks {prefix}{name}")
            out[name] = _checked(name, weights[name], shape, dtype, "'model'")
    else:
        known = {r[0] for r in rows}
        for key in weights:
            if key not in known:
                raise ValueError(f"ncsnpp checkpoint: unexpected tensor {key!r}")
        for name, shape, dtype, _ in rows:
            if name == "sigmas":
                continue
            if name not in weights:
                raise ValueError(f"ncsnpp checkpoint: missing tensor {name}")
            out[name] = _checked(name, weights[name], shape, dtype, "weights")

    sig_shape = next(r[1] for r in rows if r[0] == "sigmas")
    if "sigmas" in weights:
        out["sigmas"] = _checked("sigmas", weights["sigmas"], sig_shape, torch.float64,
                                 f"(num_scales {cfg.num_scales})")
    else:
        out["sigmas"] = vesde_sigmas(cfg.num_scales, cfg.sigma_min, cfg.sigma_max)
    return {name: out[name] for name, *_ in rows}
