"""Published diffusion checkpoints: the ADM and NCSN++ networks load synthetic checkpoints with the
published tensor layouts (tests/data/checkpoint_layouts), `diffrecon import-weights` converts them,
the project's loaders and `init_from` use the result, and wrong files are refused in one line.

The synthetic checkpoints hold exactly the published names and shapes with random values, stored
as the originals store them. The ADM forward passes are compared with deepinv's ``DiffUNet`` (an
independent implementation of guided-diffusion's U-Net) on the same tensors.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.utils.serialization

from diffrecon.cli import main
from diffrecon.errors import CheckpointError
from diffrecon.models import published
from diffrecon.models.adm import (
    DDS_AAPM_256,
    PRESETS,
    ADMConfig,
    ADMNoiseNetwork,
    ADMUNet,
    timestep_embedding,
)
from diffrecon.models.checkpoint import load_checkpoint, save_checkpoint, unprefixed, verify_sha256_file

LAYOUTS_DIR = Path(__file__).resolve().parents[1] / "data" / "checkpoint_layouts"
ADM_LAYOUTS = ["adm_imagenet256_uncond", "dds_aapm256", "diffusionblend_patch"]
NCSNPP_LAYOUTS = ["scoremri_fastmri_knee_320", "diffusionmbir_aapm256"]



# ================================================================================== helpers
def fixture(name: str) -> dict:
    return json.loads((LAYOUTS_DIR / f"{name}.json").read_text())


DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


def synthetic_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the fixture's names, shapes and dtypes (state_dict order)."""
    return random_tensors(fixture(name)["tensors"], seed)


def random_tensors(rows, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for ``rows`` of (name, shape, dtype): weights ~ N(0, 1/fan_in), 1-D weights
    (norms) ~ 1 + N(0, 0.1²), biases ~ N(0, 0.1²), the VE levels a geometric ladder — so that every
    block (attention included) changes the output."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in rows:
        if key == "sigmas":
            out[key] = torch.exp(torch.linspace(math.log(378.0), math.log(0.01), shape[0], dtype=torch.float64))
            continue
        t = torch.randn(shape, generator=g)
        if len(shape) >= 2:
            t /= math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            t = 1 + 0.1 * t
        else:
            t *= 0.1
        out[key] = t.to(DTYPES[dtype])
    return out


def cheap_state(name: str, drop: str | None = None, reshape: str | None = None, extra: str | None = None) -> dict:
    """The fixture's names and shapes as zero-stride tensors (a few bytes on disk), for the refusals."""
    state = {}
    for key, shape, dtype in fixture(name)["tensors"]:
        if key == drop:
            continue
        if key == reshape:
            shape = [shape[0] + 1, *shape[1:]]
        state[key] = torch.zeros(1, dtype=DTYPES[dtype]).expand(shape)
    if extra:
        state[extra] = torch.zeros(3)
    return state


def stored(name: str, state: dict) -> object:
    """``state`` in the storage format of the original file of layout ``name``."""
    lay = published.LAYOUTS[name]
    if lay.storage == "state_dict":
        return state
    if lay.storage == "wrapped_state_dict":
        return {"iterations": 65099, "state_dict": state}
    order = fixture(name)["ema_shadow_params_order"]
    model = {f"module.{k}": (v + 1 if k in order else v) for k, v in state.items()}   # raw ≠ EMA weights
    return {"model": model, "ema": {"decay": 0.999, "num_updates": 10, "shadow_params": [state[k] for k in order]},
            "step": 10, "optimizer": {"state": {}, "param_groups": []}}


def save_fast(obj, path) -> None:
    """``torch.save`` without the zip entries' CRC-32 where torch can skip it (gigabyte files)."""
    try:
        config = torch.utils.serialization.config.save
        before = config.compute_crc32
    except AttributeError:
        torch.save(obj, path)
        return
    config.compute_crc32 = False
    try:
        torch.save(obj, path)
    finally:
        config.compute_crc32 = before


def meta_network(cfg: ADMConfig, tensors: dict, cls=ADMUNet) -> torch.nn.Module:
    """``cls(cfg)`` holding ``tensors`` (strict), built without initialisation."""
    with torch.device("meta"):
        net = cls(cfg)
    net.load_state_dict(tensors, strict=True, assign=True)
    return net.eval()


def deepinv_diffunet():
    """deepinv's ``DiffUNet`` class. deepinv's package ``__init__`` imports torchvision (not
    installed beside the CPU torch), so without it only the three module files the network needs
    (models/utils, base, diffunet) are loaded, with the one name they take from deepinv.utils."""
    try:
        from deepinv.models import DiffUNet

        return DiffUNet
    except ImportError:
        pass
    spec = importlib.util.find_spec("deepinv")
    if spec is None or spec.origin is None:
        pytest.skip("deepinv is not installed (make venv installs deepinv==0.5.0 without dependencies)")
    root = Path(spec.origin).parent
    names = ["deepinv", "deepinv.models", "deepinv.utils", "deepinv.utils.io"]
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            sys.modules[n] = types.ModuleType(n)
        sys.modules["deepinv"].__path__ = [str(root)]
        sys.modules["deepinv.models"].__path__ = [str(root / "models")]
        sys.modules["deepinv.utils"].__path__ = []
        sys.modules["deepinv.utils.io"].DownloadError = type("DownloadError", (RuntimeError,), {})
        return importlib.import_module("deepinv.models.diffunet").DiffUNet
    except Exception as exc:                       # another deepinv version: say why, do not fail
        pytest.skip(f"deepinv's DiffUNet is not importable here ({exc.__class__.__name__}: {exc})")
    finally:
        for n in [m for m in sys.modules if m == "deepinv" or m.startswith("deepinv.")]:
            del sys.modules[n]
        sys.modules.update({n: m for n, m in saved.items() if m is not None})


def deepinv_reference(tensors: dict, large: bool, in_channels: int, num_classes: int | None = None):
    """deepinv's DiffUNet (large: the ImageNet-256 preset; small: 128 channels, 1 block, attention
    at 16) holding ``tensors``; a label embedding is attached for a class-conditional layout (its
    forward adds ``label_emb(y)`` when ``num_classes`` is set)."""
    DiffUNet = deepinv_diffunet()
    with torch.device("meta"):
        ref = DiffUNet(in_channels=in_channels, out_channels=2 * in_channels if in_channels != 3 else 3,
                       large_model=large, pretrained=None)
        if num_classes is not None:
            ref.num_classes = num_classes
            ref.label_emb = torch.nn.Embedding(num_classes, 4 * ref.model_channels)
    missing, unexpected = ref.load_state_dict(tensors, strict=False, assign=True)
    assert not unexpected and set(missing) == {"sqrt_1m_alphas_cumprod", "sqrt_alphas_cumprod"}  # its schedule buffers
    return ref.eval()


def inputs(channels: int, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, size, size, generator=g), torch.tensor([3.0, 870.0])


def assert_one_line_error(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


def outputs_of(stem: Path) -> list[Path]:
    return sorted(stem.parent.glob(stem.name + "*")) if stem.parent.is_dir() else []


# ================================================================================== layouts
@pytest.mark.parametrize("name", ADM_LAYOUTS)
def test_adm_state_dict_is_the_published_layout(name):
    fx = fixture(name)
    with torch.device("meta"):
        net = ADMNoiseNetwork(PRESETS[name])
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in net.state_dict().items()]
    assert got == fx["tensors"]                                          # names, shapes, dtypes, order
    assert sum(p.numel() for p in net.parameters()) == fx["n_params"]
    kw = fx["config"]["derived_UNetModel_kwargs"]
    cfg = PRESETS[name]
    assert (cfg.in_channels, cfg.out_channels, cfg.model_channels, list(cfg.channel_mult), list(cfg.attention_ds),
            cfg.num_classes) == (kw["in_channels"], kw["out_channels"], kw["model_channels"], kw["channel_mult"],
                                 kw["attention_ds"], kw["num_classes"])


def test_registry_names_the_fixtures_and_their_conventions():
    assert set(published.LAYOUTS) == set(ADM_LAYOUTS + NCSNPP_LAYOUTS) == {p.stem for p in LAYOUTS_DIR.glob("*.json")}
    blend = published.LAYOUTS["diffusionblend_patch"]
    assert blend.kind == "patch" and blend.extra["spacings"] == [1, 3]
    assert set(blend.conventions["labels"]) == {"1", "3"}
    for name in ADM_LAYOUTS:
        assert published.LAYOUTS[name].conventions["schedule"] == {"beta_start": 1e-4, "beta_end": 0.02,
                                                                   "n_train_steps": 1000}
    for name in NCSNPP_LAYOUTS:
        assert published.LAYOUTS[name].extra["sde"] == {"sigma_min": 0.01, "sigma_max": 378.0}
    assert [published.LAYOUTS[n].method for n in NCSNPP_LAYOUTS] == ["score_mri", "ct_score"]


# ================================================================================== network
def test_timestep_embedding_is_cos_then_sin_of_float_t():
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 8)
    omega = 10000.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.cos(t[:, None] * omega), torch.sin(t[:, None] * omega)], 1))
    torch.testing.assert_close(timestep_embedding(t.float(), 8), emb)
    assert timestep_embedding(t, 9).shape == (3, 9) and torch.all(timestep_embedding(t, 9)[:, -1] == 0)


def small_cfg(**kw) -> ADMConfig:
    base = dict(in_channels=1, out_channels=2, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_ds=(2,), num_head_channels=16, image_size=16)
    return ADMConfig(**{**base, **kw})


def test_noise_network_returns_eps_channels_and_takes_labels_exactly_when_conditional():
    torch.manual_seed(0)
    net = ADMNoiseNetwork(small_cfg(in_channels=3, out_channels=6, num_classes=4)).eval()
    for p in net.parameters():                    # the zero-initialised output layers would hide everything
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full = net.full_output(x, torch.tensor([5, 5]), torch.tensor([1, 3]))
        eps = net(x, torch.tensor([5, 5]), torch.tensor([1, 3]))
        assert full.shape == (2, 6, 16, 16) and torch.equal(eps, full[:, :3])
        assert torch.equal(net(x, 5, torch.tensor([1, 3])), eps)                        # scalar t broadcasts
        assert torch.equal(net(x, torch.tensor([5.0, 5.0]), torch.tensor([1, 3])), eps)  # float index = int index
        assert not torch.allclose(eps[0], net(x, 5, torch.tensor([3, 3]))[0])          # the label matters
        assert not torch.allclose(eps, net(x, 6, torch.tensor([1, 3])))                # the step matters
        with pytest.raises(ValueError, match="class labels"):
            net(x, 5)
        with pytest.raises(ValueError, match="multiples of 2"):
            net(torch.randn(1, 3, 15, 15), 5, torch.tensor([1]))
    with pytest.raises(ValueError, match="out_channels must be 2"):
        small_cfg(out_channels=1)


def test_dds_topology_equals_deepinv_at_half_width():
    """DDS's prior (1 channel, 1 residual block per level, attention only at downsample factor 16,
    64-channel heads) is deepinv's small DiffUNet at 256 instead of 128 channels: at 128 channels
    the two implementations agree on the same tensors (the full width is checked by layout above)."""
    cfg = dataclasses.replace(DDS_AAPM_256, model_channels=128)
    with torch.device("meta"):
        rows = [(k, list(v.shape), "float32") for k, v in ADMUNet(cfg).state_dict().items()]
    tensors = random_tensors(rows)
    ours = meta_network(cfg, tensors)
    ref = deepinv_reference(tensors, large=False, in_channels=1)
    x, t = inputs(1)
    with torch.no_grad():
        a, b = ours(x, t), ref.forward_diffusion(x, t)
    assert a.shape == (2, 2, 64, 64) and float(a.abs().mean()) > 1e-3
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ================================================================================== full-size imports
def import_full_size(name: str, tmp_path: Path, via_cli: bool = False):
    """A synthetic checkpoint of layout ``name`` in the original format, imported; returns
    (source tensors, imported tensors (memory-mapped), sidecar, stem)."""
    state = synthetic_state(name)
    src = tmp_path / published.LAYOUTS[name].file_name.split(" ")[0]
    save_fast(stored(name, state), src)
    stem = tmp_path / "imported" / name
    if via_cli:
        assert main(["import-weights", str(src), "--layout", name, "--out", str(stem)]) == 0
    else:
        published.import_weights(src, name, stem)
    src.unlink()                                            # free the disk before the next layout
    from safetensors.torch import load_file

    tensors = load_file(str(stem.with_suffix(".safetensors")))   # (load_checkpoint would hash 2 GB again)
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".sha256").read_text().split() == [meta["sha256"], f"{name}.safetensors"]
    assert meta["layout"] == name and meta["family"] == published.LAYOUTS[name].family
    assert len(meta["source_sha256"]) == 64 and meta["conventions"] == published.LAYOUTS[name].conventions
    model = unprefixed("model", tensors)
    assert sorted(model) == sorted(state)                   # every tensor (safetensors stores them sorted)
    for k, v in state.items():
        assert model[k].dtype == v.dtype and torch.equal(model[k], v), k
    return state, model, meta, stem


def test_imagenet_import_forward_equals_deepinv(tmp_path):
    state, model, meta, _ = import_full_size("adm_imagenet256_uncond", tmp_path)
    assert meta["method"] == "adm_pretrained" and "kind" not in meta and meta["model"]["architecture"] == "adm"
    ours = meta_network(ADMConfig.from_dict(meta["model"]), model, ADMNoiseNetwork)
    ref = deepinv_reference(state, large=True, in_channels=3)
    x, t = inputs(3)
    with torch.no_grad():
        full, expected = ours.full_output(x, t), ref.forward_diffusion(x, t)
        eps = ours(x, t)
    assert full.shape == (2, 6, 64, 64) and float(full.abs().mean()) > 1e-3
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(eps, full[:, :3])
    del state, model, ours, ref
    gc.collect()


def test_diffusionblend_import_forward_equals_deepinv_with_labels(tmp_path):
    state, model, meta, stem = import_full_size("diffusionblend_patch", tmp_path)
    assert (meta["method"], meta["kind"], meta["spacings"]) == ("ct_patch", "patch", [1, 3])
    ours = meta_network(ADMConfig.from_dict(meta["model"]), model, ADMNoiseNetwork)
    ref = deepinv_reference(state, large=True, in_channels=3, num_classes=1000)
    x, t = inputs(3)
    y = torch.tensor([1, 3])                                # adjacent / spacing-3 patches
    with torch.no_grad():
        full, expected = ours.full_output(x, t, y), ref.forward_diffusion(x, t, y)
        other = ours(x, t, torch.tensor([3, 1]))
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(other, full[:, :3], atol=1e-4)   # the label row matters
    del state, model, ours, ref
    gc.collect()


def test_dds_import_through_the_command_line_and_the_ct_loader(tmp_path, capsys):
    state, model, meta, stem = import_full_size("dds_aapm256", tmp_path, via_cli=True)
    out = capsys.readouterr().out
    assert "dds_aapm256" in out and str(stem.with_suffix(".safetensors")) in out
    assert (meta["method"], meta["kind"], meta["image_size"]) == ("ct_slice", "slice", 256)
    assert verify_sha256_file(stem.with_suffix(".safetensors")) == meta["sha256"]   # as install_weights checks it
    # the import holds the source tensors at the same places: its forward equals a network given them by name
    ours = meta_network(ADMConfig.from_dict(meta["model"]), model, ADMNoiseNetwork)
    direct = meta_network(DDS_AAPM_256, state)
    x, t = inputs(1)
    with torch.no_grad():
        eps, full = ours(x, t.long()), direct(x, t)
    assert eps.shape == (2, 1, 64, 64) and float(eps.abs().mean()) > 1e-3
    torch.testing.assert_close(eps, full[:, :1], rtol=0, atol=0)
    del state, model, ours, direct
    gc.collect()


# ================================================================================== NCSN++ imports
@pytest.mark.parametrize("name", NCSNPP_LAYOUTS)
def test_ncsnpp_import_takes_the_ema_weights_and_loads(name, tmp_path):
    from diffrecon.models.loading import load_ct_prior, load_score_network
    from diffrecon.models.ncsnpp import NCSNpp

    state, model, meta, stem = import_full_size(name, tmp_path)    # EMA values, not the raw 'model' ones
    assert meta["model"]["architecture"] == "ncsnpp" and meta["sde"] == {"sigma_min": 0.01, "sigma_max": 378.0}
    if name == "scoremri_fastmri_knee_320":
        net, sde, _ = load_score_network(stem)
    else:
        net, sde, _ = load_ct_prior(stem)
    assert isinstance(net, NCSNpp) and (sde.sigma_min, sde.sigma_max) == (0.01, 378.0)
    direct = NCSNpp(published.LAYOUTS[name].config())
    direct.load_state_dict(state, strict=True)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))   # NCSN++ is slow on CPU
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma), direct.eval()(x, sigma), rtol=0, atol=0)


# ================================================================================== refusals
REFUSALS = {
    # case: (layout asked for, what the file holds, expected parts of the message)
    "another_layout": ("adm_imagenet256_uncond", lambda: cheap_state("dds_aapm256"),
                       ["'adm_imagenet256_uncond'", "wrong-shape", "fit layout 'dds_aapm256'"]),
    "no_label_embedding": ("diffusionblend_patch",
                           lambda: stored("diffusionblend_patch", cheap_state("adm_imagenet256_uncond")),
                           ["'label_emb.weight' (1000, 1024) is missing", "1 missing, 0 unexpected, 0 wrong-shape",
                            "fit layout 'adm_imagenet256_uncond'"]),
    "missing_tensor": ("dds_aapm256", lambda: cheap_state("dds_aapm256", drop="middle_block.1.qkv.weight"),
                       ["'middle_block.1.qkv.weight' (3072, 1024, 1) is missing", "1 missing, 0 unexpected"]),
    "wrong_shape": ("dds_aapm256", lambda: cheap_state("dds_aapm256", reshape="out.2.bias"),
                    ["'out.2.bias' has shape (3,), the layout (2,)", "0 missing, 0 unexpected, 1 wrong-shape"]),
    "unexpected_tensor": ("adm_imagenet256_uncond",
                          lambda: cheap_state("adm_imagenet256_uncond", extra="spacecode_emb.weight"),
                          ["'spacecode_emb.weight' (3,) is not in the layout", "0 missing, 1 unexpected"]),
    "wrapped_given_as_raw": ("dds_aapm256", lambda: {"iterations": 1, "state_dict": cheap_state("dds_aapm256")},
                             ["stored as a raw state dict", "'iterations', 'state_dict'"]),
    "raw_given_as_wrapped": ("diffusionblend_patch", lambda: cheap_state("diffusionblend_patch"),
                             ["stored as a dict {'iterations', 'state_dict'}"]),
    "score_sde_given_as_adm": ("dds_aapm256", lambda: {"model": {}, "ema": {}, "step": 3},
                               ["stored as a raw state dict", "'model', 'ema', 'step'"]),
    "not_a_dict": ("dds_aapm256", lambda: [torch.zeros(2)], ["holds a list"]),
    "non_tensor_entry": ("dds_aapm256", lambda: {**cheap_state("dds_aapm256"), "note": "hello"},
                         ["entry 'note'", "not a tensor"]),
}


class Arbitrary:
    """A pickled object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("this ran while unpickling",))


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_wrong_checkpoints_are_refused_in_one_line_and_nothing_is_written(case, tmp_path):
    name, content, parts = REFUSALS[case]
    src = tmp_path / "ckpt.pt"
    torch.save(content(), src)
    stem = tmp_path / "out" / "w"
    with pytest.raises(CheckpointError) as exc:
        published.import_weights(src, name, stem)
    assert_one_line_error(exc, str(src), *parts)
    assert outputs_of(stem) == [] and not list(tmp_path.rglob("*.part"))


def test_pickled_objects_are_refused_not_unpickled(tmp_path, capsys):
    src = tmp_path / "evil.pt"
    torch.save({"time_embed.0.weight": torch.zeros(2), "hook": Arbitrary()}, src)
    with pytest.raises(CheckpointError) as exc:
        published.import_weights(src, "dds_aapm256", tmp_path / "out" / "w")
    assert_one_line_error(exc, str(src), "weights_only", "never unpickled")
    assert "this ran" not in capsys.readouterr().out
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError) as exc:
        published.import_weights(junk, "dds_aapm256", tmp_path / "out" / "w")
    assert_one_line_error(exc, str(junk), "not a torch checkpoint file")
    assert outputs_of(tmp_path / "out" / "w") == []


def test_command_line_refusals_are_one_line_with_status_2(tmp_path, capsys):
    src = tmp_path / "ckpt.pt"
    torch.save(cheap_state("dds_aapm256", drop="out.2.bias"), src)
    stem = tmp_path / "out" / "w"
    for argv, part in [
        (["import-weights", str(src), "--layout", "dds_aapm256", "--out", str(stem)], "'out.2.bias' (2,) is missing"),
        (["import-weights", str(src), "--layout", "no_such", "--out", str(stem)], "unknown layout 'no_such'"),
        (["import-weights", str(tmp_path / "absent.pt"), "--layout", "dds_aapm256", "--out", str(stem)], "not found"),
        (["import-weights", str(src)], "give --layout, --out"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("diffrecon: error: ") and part in err, err
    assert outputs_of(stem) == []
    assert main(["import-weights", "--list-layouts"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == list(published.LAYOUTS)


# ================================================================================== project integration
SMALL_BLOCK = {"architecture": "adm", "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
               "attention_ds": [2], "num_head_channels": 16}


def small_import(tmp_path: Path, name: str, method: str, kind: str | None, block: dict, extra: dict) -> Path:
    """Weights + sidecar + .sha256 as an import of a (small) ADM writes them."""
    from diffrecon.io import sha256_file
    from diffrecon.models.recipes import noise_network

    channels = block.get("in_channels", 3 if kind == "patch" else 1)
    torch.manual_seed(3)
    net = noise_network({"model": block}, 16, channels, 4 if block.get("num_classes") else None)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    meta = {"method": method, **({"kind": kind} if kind else {}), "model": block, "image_size": 16,
            "layout": name, "family": "adm", **extra}
    weights = save_checkpoint(tmp_path / name, {f"model.{k}": v for k, v in net.state_dict().items()}, meta)
    weights.with_suffix(".sha256").write_text(f"{sha256_file(weights)}  {weights.name}\n")
    return weights


def test_ct_loader_builds_the_adm_of_an_imported_sidecar(tmp_path):
    from diffrecon.diffusion.vp import VPSchedule
    from diffrecon.models.loading import load_ct_prior, load_score_network

    block = {**SMALL_BLOCK, "num_classes": 1000, "in_channels": 3, "out_channels": 6, "learn_sigma": True}
    weights = small_import(tmp_path, "patch", "ct_patch", "patch", block,
                           {"spacings": [1, 3], "schedule": published.VP_LINEAR})
    net, process, meta = load_ct_prior(weights)
    assert isinstance(net, ADMNoiseNetwork) and net.cfg.num_classes == 1000 and not net.training
    assert isinstance(process, VPSchedule)
    assert (process.beta_start, process.beta_end, process.n_train_steps) == (1e-4, 0.02, 1000)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        eps = net(x, torch.tensor([10, 10]), torch.tensor([1, 3]))
        full = net.full_output(x, torch.tensor([10, 10]), torch.tensor([1, 3]))
        assert eps.shape == x.shape and torch.equal(eps, full[:, :3])
    with pytest.raises(CheckpointError) as exc:                    # a CT prior is not a score-MRI prior
        load_score_network(weights)
    assert_one_line_error(exc, "'patch' checkpoint", "imported layout patch")


def test_weights_of_another_prior_are_refused_at_validation_and_install(tmp_path):
    from diffrecon.config import ConfigError, read_yaml, validate_config
    from diffrecon.models.checkpoint import install_weights

    fitting = {kind: small_import(tmp_path, f"{kind}_import", f"ct_{kind}", kind, SMALL_BLOCK, {})
               for kind in ("patch", "slice")}
    ncsnpp_like = small_import(tmp_path, "diffusionmbir_aapm256", "ct_score", "score", SMALL_BLOCK, {})
    fitting["score"] = ncsnpp_like
    imagenet_like = small_import(tmp_path, "adm_imagenet256_uncond", "adm_pretrained", None, SMALL_BLOCK, {})
    repo = Path(__file__).resolve().parents[2]
    raw = read_yaml(repo / "config" / "paper" / "aapm.yaml")
    raw["retrain"] = False
    for k in fitting:                       # (TPDM's perpendicular prior is always trained: no weights)
        raw["ct_priors"][k]["weights"] = str(fitting[k])
    validate_config(json.loads(json.dumps(raw)))                    # each prior's own weights: valid
    wrong_kind = "holds a 'ct_score' prior (imported layout diffusionmbir_aapm256), not a 'ct_slice' prior"
    for kind, weights, part in [("slice", ncsnpp_like, wrong_kind), ("patch", imagenet_like, "give it as init_from")]:
        cfg = json.loads(json.dumps(raw))
        cfg["ct_priors"][kind]["weights"] = str(weights)
        with pytest.raises(ConfigError) as exc:
            validate_config(cfg)
        assert_one_line_error(exc, f"ct_priors.{kind}.weights", part)
    with pytest.raises(CheckpointError) as exc:
        install_weights(ncsnpp_like, tmp_path / "installed" / "model", method="ct_slice")
    assert_one_line_error(exc, "'ct_score' prior", "not of the 'ct_slice' prior")
    assert not (tmp_path / "installed" / "model.safetensors").exists()
    assert install_weights(ncsnpp_like, tmp_path / "installed" / "model", method="ct_score").is_file()


def test_paper_configs_build_the_published_adm_layouts():
    from diffrecon.config import load_config
    from diffrecon.models.recipes import noise_network

    repo = Path(__file__).resolve().parents[2]
    for name in ("aapm", "lidc"):
        cfg = load_config(repo / "config" / "paper" / f"{name}.yaml")
        for kind, layout, channels, labels in [("patch", "diffusionblend_patch", 3, 4),
                                               ("slice", "dds_aapm256", 1, None)]:
            with torch.device("meta"):
                net = noise_network(cfg["ct_priors"][kind], 256, channels, labels)
            got = [[k, list(v.shape), "float32"] for k, v in net.state_dict().items()]
            assert got == fixture(layout)["tensors"], (name, kind)
            assert cfg["ct_priors"][kind].get("init_from") is None


def test_builder_refuses_blocks_that_do_not_fit_the_prior():
    from diffrecon.models.recipes import noise_network, score_network

    with pytest.raises(ValueError, match="num_classes ≥ 4"):
        noise_network({"model": SMALL_BLOCK}, 16, 3, 4)
    with pytest.raises(ValueError, match="num_classes null"):
        noise_network({"model": {**SMALL_BLOCK, "num_classes": 8}}, 16, 1, None)
    with pytest.raises(ValueError, match="in_channels"):
        noise_network({"model": {**SMALL_BLOCK, "in_channels": 3}}, 16, 1, None)
    with pytest.raises(ValueError, match="'adm'"):
        score_network({"model": SMALL_BLOCK}, 16)


def test_init_from_loads_everything_but_the_new_label_embedding(tmp_path):
    from diffrecon.models.recipes import noise_network

    uncond = small_import(tmp_path, "adm_imagenet256_uncond", "adm_pretrained", None,
                          {**SMALL_BLOCK, "in_channels": 3, "out_channels": 6}, {})
    source = unprefixed("model", load_checkpoint(uncond)[0])
    block = {**SMALL_BLOCK, "num_classes": 1000}
    torch.manual_seed(7)
    fresh = noise_network({"model": block}, 16, 3, 4)
    torch.manual_seed(7)
    net = noise_network({"model": block, "init_from": str(uncond)}, 16, 3, 4)
    state = net.state_dict()
    assert set(state) == set(source) | {"label_emb.weight"}
    for k, v in source.items():
        assert torch.equal(state[k], v), k
    assert torch.equal(state["label_emb.weight"], fresh.state_dict()["label_emb.weight"])   # kept its init
    assert published.init_record({"init_from": str(uncond)})["init_from"]["layout"] == "adm_imagenet256_uncond"
    # another width: refused in one line, naming the file and the first tensor
    with pytest.raises(CheckpointError) as exc:
        noise_network({"model": {**block, "model_channels": 64}, "init_from": str(uncond)}, 16, 3, 4)
    assert_one_line_error(exc, str(uncond), "'time_embed.0.weight' has shape", "wrong-shape")
    # a one-channel network cannot start from the three-channel model
    with pytest.raises(CheckpointError) as exc:
        noise_network({"model": SMALL_BLOCK, "init_from": str(uncond)}, 16, 1, None)
    assert_one_line_error(exc, "'input_blocks.0.0.weight' has shape (32, 3, 3, 3)")


def test_train_ct_prior_starts_from_init_from_and_records_it(tmp_path):
    from diffrecon.data.datasets import prepare_dataset
    from diffrecon.models.recipes import train_ct_prior

    manifest = prepare_dataset("thorax", {"modality": "ct", "source": "demo", "size": 16, "slices": 9,
                                          "volumes": {"train": 1, "test": 1}}, tmp_path / "data", seed=0)
    uncond = small_import(tmp_path, "adm_imagenet256_uncond", "adm_pretrained", None,
                          {**SMALL_BLOCK, "in_channels": 3, "out_channels": 6}, {})
    cfg = {"model": {**SMALL_BLOCK, "num_classes": 4}, "spacings": [1, 3], "init_from": str(uncond),
           "train": {"steps": 1, "batch_size": 2, "lr": 1e-12, "warmup": 1, "checkpoint_every": 1}}
    meta = train_ct_prior(manifest, cfg, tmp_path / "prior", "patch", device="cpu", progress=False)
    assert meta["init_from"]["path"] == str(uncond)
    assert meta["init_from"]["sha256"] == load_checkpoint(uncond)[1]["sha256"]
    trained = unprefixed("model", load_checkpoint(tmp_path / "prior")[0])
    source = unprefixed("model", load_checkpoint(uncond)[0])
    torch.testing.assert_close(trained["time_embed.0.weight"], source["time_embed.0.weight"], rtol=1e-6, atol=1e-6)
