"""NCSN++ (diffrecon.models.ncsnpp): the published priors' tensor layout, the forward pass against an
independent functional reference, the score-SDE checkpoint conversion and the call contract.

The 61 M-parameter presets are checked by names, shapes, order, dtypes and a strict load; forward
passes run at 32² (the preset) or on a reduced configuration whose attention sits inside the
encoder and decoder (the presets only attend in the middle).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from diffrecon.models.ncsnpp import (DIFFUSIONMBIR_AAPM_256, SCORE_MRI_KNEE_320, NCSNpp, NCSNppConfig,
                                     fir_conv_downsample, fir_downsample, fir_upsample, state_from_original)
from reference_ncsnpp import fir_kernel_2d, ncsnpp_forward, upfirdn2d

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "checkpoint_layouts"
PRESETS = {"scoremri_fastmri_knee_320": SCORE_MRI_KNEE_320, "diffusionmbir_aapm256": DIFFUSIONMBIR_AAPM_256}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# three levels (16, 8, 4): attention after the encoder and decoder blocks of level 1 and in the middle
TINY = NCSNppConfig(nf=16, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), image_size=16,
                    in_channels=2, num_scales=10)


def fixture(name: str) -> dict:
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def random_state(net: NCSNpp, seed: int = 0, dtype=None) -> dict[str, torch.Tensor]:
    """Every tensor of ``net``'s state dict drawn at random at a scale that keeps activations O(1)
    (so that every branch, including the zero-initialised ones, matters in a comparison)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in net.state_dict().items():
        dt = dtype or t.dtype
        if name == "sigmas":
            out[name] = t.clone()
        elif name.endswith(".W") and t.dim() == 1:                          # Fourier frequencies
            out[name] = torch.randn(t.shape, generator=g, dtype=dt) * 16
        elif "GroupNorm" in name or name == f"all_modules.{len(net.all_modules) - 2}.weight":
            base = 1.0 if name.endswith("weight") else 0.0
            out[name] = base + 0.2 * torch.randn(t.shape, generator=g, dtype=dt)
        elif t.dim() == 1:                                                   # biases
            out[name] = 0.1 * torch.randn(t.shape, generator=g, dtype=dt)
        else:
            fan_in = t.shape[0] if name.endswith(".W") else t[0].numel()    # NIN W is (in, out)
            out[name] = torch.randn(t.shape, generator=g, dtype=dt) / math.sqrt(fan_in)
    return out


def reference(sd, cfg: NCSNppConfig, x, sigma):
    return ncsnpp_forward(sd, x, sigma, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                          attn_resolutions=cfg.attn_resolutions, image_size=cfg.image_size,
                          fir_kernel=cfg.fir_kernel, skip_rescale=cfg.skip_rescale,
                          scale_by_sigma=cfg.scale_by_sigma, centered=cfg.centered)


def loaded(cfg: NCSNppConfig, sd: dict, dtype=torch.float64) -> NCSNpp:
    net = NCSNpp(cfg).to(dtype)
    net.load_state_dict(sd, strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def tiny():
    """(cfg, weights in float64, inputs x (2, 2, 16, 16), sigma (2,))."""
    torch.manual_seed(0)
    sd = random_state(NCSNpp(TINY), seed=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 16, 16, generator=g, dtype=torch.float64)
    return TINY, sd, x, torch.tensor([0.05, 7.0], dtype=torch.float64)


# ----------------------------------------------------------------------------- (a) layout
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_state_dict_equals_the_published_layout(name):
    fx, cfg = fixture(name), PRESETS[name]
    torch.manual_seed(0)
    net = NCSNpp(cfg)
    sd = net.state_dict()
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()]
    assert got == fx["tensors"]                                   # names, shapes, order, dtypes
    assert len(got) == 522
    assert sum(p.numel() for p in net.parameters()) == fx["n_params"] == 61_433_601
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 61_433_473
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == fx["non_trainable_parameters"]
    assert [n for n, _ in net.named_buffers()] == fx["buffers"]
    assert [n for n, p in net.named_parameters() if p.requires_grad] == fx["ema_shadow_params_order"]
    expected = torch.exp(torch.linspace(math.log(378.0), math.log(0.01), 2000, dtype=torch.float64))
    assert sd["sigmas"].dtype == torch.float64 and torch.equal(sd["sigmas"], expected)
    # a state dict of exactly the recorded names and shapes loads strictly
    net.load_state_dict({k: torch.zeros(s, dtype=DTYPES[d]) for k, s, d in fx["tensors"]}, strict=True)
    assert not net.all_modules[0].W.requires_grad and float(net.all_modules[3].weight.detach().abs().sum()) == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_the_published_configurations(name):
    fx, cfg = fixture(name), PRESETS[name]
    model, data = fx["config"]["model"], fx["config"]["data"]
    assert NCSNppConfig.from_dict({**model, **data, "in_channels": data["num_channels"]}) == cfg
    # the settings the module implements without a switch
    fixed = {"resblock_type": "biggan", "progressive": "none", "progressive_input": "residual",
             "progressive_combine": "sum", "fir": True, "resamp_with_conv": True, "conditional": True,
             "embedding_type": "fourier", "attention_type": "ddpm", "nonlinearity": "swish",
             "normalization": "GroupNorm", "conv_size": 3}
    assert {k: model[k] for k in fixed} == fixed
    assert fx["checkpoint_model_key_prefix"] == "module."
    # the feature sizes never reach 16: the middle block is the only attention
    with torch.device("meta"):
        net = NCSNpp(cfg)
    assert [i for i, m in enumerate(net.all_modules) if type(m).__name__ == "AttnBlock"] == [27]


# ----------------------------------------------------------------------------- (b) forward = reference
def test_fir_resampling_matches_upfirdn_and_hand_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 6, generator=g, dtype=torch.float64)
    k = fir_kernel_2d((1, 3, 3, 1))
    torch.testing.assert_close(fir_downsample(x), upfirdn2d(x, k, down=2, pad=(1, 1)), rtol=0, atol=1e-14)
    torch.testing.assert_close(fir_upsample(x), upfirdn2d(x, 4 * k, up=2, pad=(2, 1)), rtol=0, atol=1e-14)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(upfirdn2d(x, k, pad=(2, 2)), w, stride=2)
    torch.testing.assert_close(fir_conv_downsample(x, w), ref, rtol=0, atol=1e-13)
    # other kernel lengths keep the upfirdn padding convention
    for k1 in [(1, 1), (1, 2, 1), (1, 4, 6, 4, 1)]:
        k2, p = fir_kernel_2d(k1), len(k1) - 2
        torch.testing.assert_close(fir_downsample(x, k1), upfirdn2d(x, k2, down=2, pad=((p + 1) // 2, p // 2)))
        torch.testing.assert_close(fir_upsample(x, k1), upfirdn2d(x, 4 * k2, up=2, pad=((p + 1) // 2 + 1, p // 2)))
    # impulse responses worked by hand: 1-D down of δ₂ (length 8) = [1, 3, 0, 0]/8; 1-D up of δ₁
    # (length 4) = [0, 1, 3, 3, 1, 0, 0, 0]/4; the 2-D responses are their outer products
    d = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    d[..., 2, 2] = 1
    down = torch.tensor([1, 3, 0, 0], dtype=torch.float64) / 8
    torch.testing.assert_close(fir_downsample(d)[0, 0], torch.outer(down, down), rtol=0, atol=1e-15)
    u = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    u[..., 1, 1] = 1
    up = torch.tensor([0, 1, 3, 3, 1, 0, 0, 0], dtype=torch.float64) / 4
    torch.testing.assert_close(fir_upsample(u)[0, 0], torch.outer(up, up), rtol=0, atol=1e-15)
    torch.testing.assert_close(upfirdn2d(u, 4 * k, up=2, pad=(2, 1))[0, 0], torch.outer(up, up), rtol=0, atol=1e-15)


def test_forward_equals_the_functional_reference(tiny):
    cfg, sd, x, sigma = tiny
    net = loaded(cfg, sd)
    with torch.no_grad():
        out = net(x, sigma)
    ref = reference(sd, cfg, x, sigma)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


def test_preset_forward_equals_the_reference_at_a_small_input():
    cfg = SCORE_MRI_KNEE_320
    torch.manual_seed(0)
    net = NCSNpp(cfg).eval()
    sd = random_state(net, seed=3)
    net.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 32, 32, generator=g)
    sigma = torch.tensor([0.02, 150.0])
    with torch.no_grad():
        out = net(x, sigma)
    ref = reference(sd, cfg, x, sigma)
    for i in range(2):                            # outputs differ by orders of magnitude across σ
        torch.testing.assert_close(out[i], ref[i], rtol=1e-3, atol=1e-4 * float(ref[i].abs().max()))


VARIANTS = {
    "skip_rescale": {"skip_rescale": False},
    "fir_kernel": {"fir_kernel": (1, 1)},
    "centered": {"centered": True},
    "scale_by_sigma": {"scale_by_sigma": False},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_reference_comparison_detects_a_changed_architecture(tiny, variant):
    """A network built with one setting changed, with the same weights, must fail the comparison above:
    the test inputs exercise the skip rescale, the FIR kernel, the 2x − 1 map and the σ division."""
    cfg, sd, x, sigma = tiny
    wrong = loaded(dataclasses.replace(cfg, **VARIANTS[variant]), sd)
    with torch.no_grad():
        out = wrong(x, sigma)
    ref = reference(sd, cfg, x, sigma)
    for i in range(len(x)):
        assert float((out[i] - ref[i]).abs().max()) > 1e-3 * float(ref[i].abs().max())


def test_the_reference_itself_depends_on_each_setting(tiny):
    """The reference is not blind to the settings it is compared on."""
    cfg, sd, x, sigma = tiny
    base = reference(sd, cfg, x, sigma)
    for change in VARIANTS.values():
        other = reference(sd, dataclasses.replace(cfg, **change), x, sigma)
        assert float((other - base).abs().max()) > 1e-3 * float(base.abs().max())


# ----------------------------------------------------------------------------- (c) checkpoint conversion
def original_checkpoint(cfg: NCSNppConfig, seed: int = 0, with_sigmas: bool = True) -> dict:
    """A checkpoint in the score-SDE format: 'model' with 'module.' keys (all tensors), 'ema' with the
    trainable tensors as a positional list (other values than 'model'), 'step', 'optimizer'."""
    with torch.device("meta"):
        layout = NCSNpp(cfg)
    g = torch.Generator().manual_seed(seed)
    model = {"module." + k: torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in layout.state_dict().items() if with_sigmas or k != "sigmas"}
    shadow = [torch.randn(p.shape, generator=g) for p in layout.parameters() if p.requires_grad]
    return {"model": model, "ema": {"decay": 0.999, "num_updates": 10, "shadow_params": shadow},
            "step": 10, "optimizer": {"state": {}, "param_groups": []}}


@pytest.fixture(scope="module")
def published():
    return original_checkpoint(SCORE_MRI_KNEE_320)


def test_conversion_takes_ema_weights_and_the_trained_fourier_frequencies(published):
    out = state_from_original(published)
    fx = fixture("scoremri_fastmri_knee_320")
    assert [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in out.items()] == fx["tensors"]
    for name, t in zip(fx["ema_shadow_params_order"], published["ema"]["shadow_params"]):
        assert torch.equal(out[name], t), name
        assert not torch.equal(out[name], published["model"]["module." + name]), name
    assert torch.equal(out["all_modules.0.W"], published["model"]["module.all_modules.0.W"])
    torch.manual_seed(0)
    net = NCSNpp(SCORE_MRI_KNEE_320)
    net.load_state_dict(out, strict=True)
    assert torch.equal(net.all_modules[0].W, published["model"]["module.all_modules.0.W"])
    assert torch.equal(net.all_modules[53].bias, published["ema"]["shadow_params"][-1])


def test_conversion_of_raw_weights_and_of_a_file_roundtrip(tmp_path):
    cfg = TINY
    ckpt = original_checkpoint(cfg, seed=5, with_sigmas=False)
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    obj = torch.load(path, weights_only=True)
    raw = state_from_original(obj, use_ema=False, cfg=cfg)
    bare = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    assert all(torch.equal(raw[k], v) for k, v in bare.items())
    torch.testing.assert_close(raw["sigmas"], torch.exp(torch.linspace(math.log(378), math.log(0.01), 10,
                                                                       dtype=torch.float64)))
    # raw state dicts, prefixed or not, are the weights themselves
    for d in (ckpt["model"], bare):
        again = state_from_original(d, cfg=cfg)
        assert list(again) == list(raw) and all(torch.equal(again[k], raw[k]) for k in raw)
    ema = state_from_original(obj, cfg=cfg)
    loaded(cfg, ema, torch.float32)                               # strict load of the EMA weights


def _one_line_error(obj, match, **kw):
    with pytest.raises(ValueError, match=match) as exc:
        state_from_original(obj, **kw)
    assert "\n" not in str(exc.value)


def test_conversion_refuses_a_wrong_checkpoint_with_one_line(published):
    order = fixture("scoremri_fastmri_knee_320")["ema_shadow_params_order"]
    shadow = published["ema"]["shadow_params"]

    def with_shadow(lst):
        return {**published, "ema": {**published["ema"], "shadow_params": lst}}

    # one tensor missing in the middle (a GroupNorm weight: its bias has the same shape and takes its
    # place, so the list is seen out of step one position later, where the convolution arrives)
    _one_line_error(with_shadow(shadow[:6] + shadow[7:]), r"shadow_params\[7\] \(all_modules\.4\.GroupNorm_0\.bias\)")
    _one_line_error(with_shadow(shadow[:-1]), "519 tensors for 520 .*all_modules.53.bias has none")
    _one_line_error(with_shadow(shadow + [torch.zeros(1)]), "521 tensors for 520")
    bad = list(shadow)
    bad[100] = bad[100][..., :1]
    _one_line_error(with_shadow(bad), rf"shadow_params\[100\] \({order[100]}\)")
    model = dict(published["model"])
    del model["module.all_modules.0.W"]
    _one_line_error({**published, "model": model}, "lacks module.all_modules.0.W")
    _one_line_error({**published, "model": {**published["model"], "module.all_modules.0.W": torch.zeros(64)}},
                    r"all_modules\.0\.W: shape \(64,\)")
    _one_line_error({**published, "model": {**published["model"], "module.sigmas": torch.zeros(1000)}},
                    r"sigmas: shape \(1000,\)")
    _one_line_error({"model": published["model"]}, "no 'ema'")
    raw = {k: v for k, v in published["model"].items() if k != "module.all_modules.27.NIN_3.b"}
    _one_line_error(raw, "missing tensor all_modules.27.NIN_3.b")
    _one_line_error({**published["model"], "module.extra.weight": torch.zeros(1)}, "unexpected tensor 'extra.weight'")
    _one_line_error([1, 2], "a dict is expected")


# ----------------------------------------------------------------------------- (d) properties, call contract
def test_output_is_the_unscaled_network_divided_by_sigma(tiny):
    cfg, sd, x, _ = tiny
    scaled, plain = loaded(cfg, sd), loaded(dataclasses.replace(cfg, scale_by_sigma=False), sd)
    with torch.no_grad():
        for s in (0.01, 1.0, 378.0):
            torch.testing.assert_close(scaled(x, s) * s, plain(x, s), rtol=1e-12, atol=1e-12)


def test_centered_input_skips_the_2x_minus_1_map(tiny):
    cfg, sd, x, sigma = tiny
    with torch.no_grad():
        torch.testing.assert_close(loaded(dataclasses.replace(cfg, centered=True), sd)(2 * x - 1, sigma),
                                   loaded(cfg, sd)(x, sigma), rtol=1e-12, atol=1e-12)


def test_sigma_broadcasts_and_each_sample_sees_its_own(tiny):
    cfg, sd, x, sigma = tiny
    net = loaded(cfg, sd)
    with torch.no_grad():
        out = net(x, sigma)
        full = net(x, torch.full((2,), 0.4, dtype=torch.float64))
        for one in (0.4, torch.tensor(0.4, dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)):
            assert torch.equal(net(x, one), full)
        for i in range(2):
            torch.testing.assert_close(net(x[i:i + 1], sigma[i:i + 1]), out[i:i + 1], rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError, match="3 noise levels for a batch of 2"):
            net(x, torch.ones(3))


def test_drop_in_for_the_samplers_network_wrapper(tiny):
    """The project's ``network_fn`` (channels-last, no gradients, σ cast) runs it unchanged."""
    from diffrecon.models.inference import network_fn

    cfg, sd, x, sigma = tiny
    net = loaded(cfg, sd, torch.float32)
    expected = net(x.float(), sigma.float()).detach()
    fn = network_fn(net)
    torch.testing.assert_close(fn(x.float(), sigma.float()), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # attention positions are fixed at construction: a 32² input runs the same module list
    assert net(torch.rand(1, 2, 32, 32), 1.0).shape == (1, 2, 32, 32)


def test_trainable_parameters_exclude_the_fourier_frequencies():
    net = NCSNpp(TINY)
    x = torch.rand(1, 2, 16, 16)
    net(x, torch.tensor([0.5])).square().sum().backward()
    assert net.all_modules[0].W.grad is None
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="not divisible"):
        NCSNpp(dataclasses.replace(TINY, image_size=18))


def test_score_mri_sampler_runs_it_unchanged():
    from diffrecon.diffusion.sde import VESDE
    from diffrecon.models.inference import network_fn
    from diffrecon.physics.mri import SingleCoilMRI
    from diffrecon.samplers.score_mri import SamplerConfig, ScoreMRISampler

    torch.manual_seed(0)
    net = NCSNpp(dataclasses.replace(TINY, in_channels=1)).eval()
    mask = torch.zeros(16, 16)
    mask[:, ::2] = 1
    op = SingleCoilMRI(mask)
    y = op.A(torch.rand(2, 16, 16, dtype=torch.complex64))
    sampler = ScoreMRISampler(network_fn(net), VESDE(), SamplerConfig(n_steps=3, progress=False))
    x = sampler.sample(y, op, "real", seed=0)
    assert x.shape == y.shape and torch.isfinite(torch.view_as_real(x)).all() and sampler.nfe > 0
