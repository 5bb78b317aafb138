"""A compact functional NCSN++ forward pass on a bare state dict, for checking the module.

Written independently of ``diffrecon.models.ncsnpp``: it reads tensors by name from the state
dict, uses its own general ``upfirdn2d`` (zero-insertion, padding, true 2-D convolution,
decimation, in float64 if given float64), a hand-written GroupNorm, attention as an explicit
softmax of an einsum and ``NIN`` as an einsum with W indexed [in, out]. The layout walk
follows the published description of the score-SDE NCSN++ (BigGAN blocks, residual input
pyramid, skip rescale by 1/√2, output / σ, input 2x − 1); attention runs where the configured
``image_size`` (not the input size) reaches an attention resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Up-sample by zero insertion (each sample followed by up−1 zeros), zero-pad (pad0, pad1) on both
    axes, convolve (true convolution, valid) with the 2-D ``k``, keep every ``down``-th sample."""
    b, c, h, w = x.shape
    if up > 1:
        z = torch.zeros(b, c, h, up, w, up, dtype=x.dtype)
        z[:, :, :, 0, :, 0] = x
        x = z.reshape(b, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    kf = torch.flip(k, (0, 1)).to(x.dtype)[None, None]
    y = F.conv2d(x.reshape(b * c, 1, *x.shape[-2:]), kf)
    y = y.reshape(b, c, *y.shape[-2:])
    return y[:, :, ::down, ::down]


def fir_kernel_2d(k1) -> torch.Tensor:
    k = torch.tensor(k1, dtype=torch.float64)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def down2(x, k1):
    k = fir_kernel_2d(k1)
    p = k.shape[0] - 2
    return upfirdn2d(x, k, down=2, pad=((p + 1) // 2, p // 2))


def up2(x, k1):
    k = fir_kernel_2d(k1) * 4
    p = k.shape[0] - 2
    return upfirdn2d(x, k, up=2, pad=((p + 1) // 2 + 1, p // 2))


def group_norm(x, weight, bias, eps=1e-6):
    b, c, h, w = x.shape
    g = min(c // 4, 32)
    xs = x.reshape(b, g, -1)
    mean = xs.mean(-1, keepdim=True)
    var = ((xs - mean) ** 2).mean(-1, keepdim=True)
    xs = (xs - mean) / torch.sqrt(var + eps)
    return xs.reshape(b, c, h, w) * weight[None, :, None, None] + bias[None, :, None, None]


def silu(x):
    return x * torch.sigmoid(x)


def conv(x, sd, name, stride=1):
    w = sd[name + ".weight"]
    return F.conv2d(x, w, sd[name + ".bias"], stride=stride, padding=w.shape[-1] // 2)


def dense(x, sd, name):
    return x @ sd[name + ".weight"].t() + sd[name + ".bias"]


def nin(x, sd, name):
    return torch.einsum("bchw,co->bohw", x, sd[name + ".W"]) + sd[name + ".b"][None, :, None, None]


def resblock(x, temb, sd, name, kernel, skip_rescale, mode=None):
    h = silu(group_norm(x, sd[name + ".GroupNorm_0.weight"], sd[name + ".GroupNorm_0.bias"]))
    if mode == "up":
        h, x = up2(h, kernel), up2(x, kernel)
    elif mode == "down":
        h, x = down2(h, kernel), down2(x, kernel)
    h = conv(h, sd, name + ".Conv_0")
    h = h + dense(silu(temb), sd, name + ".Dense_0")[:, :, None, None]
    h = silu(group_norm(h, sd[name + ".GroupNorm_1.weight"], sd[name + ".GroupNorm_1.bias"]))
    h = conv(h, sd, name + ".Conv_1")
    if name + ".Conv_2.weight" in sd:
        x = conv(x, sd, name + ".Conv_2")
    return (x + h) / math.sqrt(2) if skip_rescale else x + h


def attention(x, sd, name, skip_rescale):
    b, c, hh, ww = x.shape
    h = group_norm(x, sd[name + ".GroupNorm_0.weight"], sd[name + ".GroupNorm_0.bias"])
    q, k, v = (nin(h, sd, f"{name}.NIN_{i}") for i in range(3))
    logits = torch.einsum("bchw,bcij->bhwij", q, k) / math.sqrt(c)
    a = torch.softmax(logits.reshape(b, hh, ww, hh * ww), dim=-1).reshape(b, hh, ww, hh, ww)
    h = nin(torch.einsum("bhwij,bcij->bchw", a, v), sd, name + ".NIN_3")
    return (x + h) / math.sqrt(2) if skip_rescale else x + h


def pyramid_down(x, sd, name, kernel):
    """FIR filter (pad so that a 3×3 stride-2 convolution halves the size) then convolve."""
    k = fir_kernel_2d(kernel)
    w = sd[name + ".Conv2d_0.weight"]
    p = (k.shape[0] - 2) + (w.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=2) + sd[name + ".Conv2d_0.bias"][None, :, None, None]


def ncsnpp_forward(sd: dict, x: torch.Tensor, sigma: torch.Tensor, *, ch_mult, num_res_blocks, attn_resolutions,
                   image_size, fir_kernel=(1, 3, 3, 1), skip_rescale=True, scale_by_sigma=True,
                   centered=False) -> torch.Tensor:
    """s(x, σ) of the NCSN++ whose tensors are ``sd`` (bare names): x (B, C, H, W), σ (B,)."""
    sd = {k: v.to(x.dtype) for k, v in sd.items()}
    idx = iter(range(10 ** 6))

    def nxt():
        return f"all_modules.{next(idx)}"

    def rescale(a, b):
        return (a + b) / math.sqrt(2) if skip_rescale else a + b

    levels = len(ch_mult)
    attn = [image_size // 2 ** i in attn_resolutions for i in range(levels)]
    w = sd[nxt() + ".W"]
    proj = torch.log(sigma)[:, None] * w[None, :] * 2 * math.pi
    temb = torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)
    temb = dense(temb, sd, nxt())
    temb = dense(silu(temb), sd, nxt())

    if not centered:
        x = 2 * x - 1
    pyr = x
    hs = [conv(x, sd, nxt())]
    for lvl in range(levels):
        for _ in range(num_res_blocks):
            h = resblock(hs[-1], temb, sd, nxt(), fir_kernel, skip_rescale)
            if attn[lvl]:
                h = attention(h, sd, nxt(), skip_rescale)
            hs.append(h)
        if lvl < levels - 1:
            h = resblock(hs[-1], temb, sd, nxt(), fir_kernel, skip_rescale, mode="down")
            pyr = rescale(pyramid_down(pyr, sd, nxt(), fir_kernel), h)
            hs.append(pyr)
    h = resblock(hs[-1], temb, sd, nxt(), fir_kernel, skip_rescale)
    h = attention(h, sd, nxt(), skip_rescale)
    h = resblock(h, temb, sd, nxt(), fir_kernel, skip_rescale)
    for lvl in reversed(range(levels)):
        for _ in range(num_res_blocks + 1):
            h = resblock(torch.cat([h, hs.pop()], 1), temb, sd, nxt(), fir_kernel, skip_rescale)
        if attn[lvl]:
            h = attention(h, sd, nxt(), skip_rescale)
        if lvl > 0:
            h = resblock(h, temb, sd, nxt(), fir_kernel, skip_rescale, mode="up")
    name = nxt()
    h = silu(group_norm(h, sd[name + ".weight"], sd[name + ".bias"]))
    h = conv(h, sd, nxt())
    used = next(idx)
    assert not hs and used == 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("all_modules."))
    if scale_by_sigma:
        h = h / sigma[:, None, None, None]
    return h
