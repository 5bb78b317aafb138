"""Published diffusion priors: their tensor layouts, conventions, and conversion to project weights.

Five published checkpoints are known by a layout name (:data:`LAYOUTS`, docs/published_checkpoints.md):

| layout | file | family | the project's use |
|---|---|---|---|
| ``adm_imagenet256_uncond`` | OpenAI ``256x256_diffusion_uncond.pt`` | ADM | ``init_from`` of an ADM prior |
| ``dds_aapm256`` | DDS ``AAPM256_1M.pt`` | ADM | ``ct_priors.slice.weights`` |
| ``diffusionblend_patch`` | DiffusionBlend's conditioned 3-slice model | ADM | ``ct_priors.patch.weights`` |
| ``scoremri_fastmri_knee_320`` | score-MRI ``checkpoint_95.pth`` | NCSN++ | ``score_mri.weights`` |
| ``diffusionmbir_aapm256`` | DiffusionMBIR ``checkpoint_185.pth`` | NCSN++ | ``ct_priors.score.weights`` |

:func:`import_weights` reads such a file with ``torch.load(weights_only=True)`` only (a file that
needs arbitrary objects unpickled is refused, never executed), takes the bare state dict out of the
original's storage format, checks every tensor name and shape against the network built from the
layout's settings, and writes project weights: ``<stem>.safetensors`` (tensors ``model.<name>``,
float32 weights), ``<stem>.json`` (the sidecar the loaders rebuild the network from, with the
source file's sha256 and the conventions) and ``<stem>.sha256`` — the files ``weights:`` in a
config takes. :func:`init_from` starts a network's training from such weights (DiffusionBlend's
fine-tuning of the ImageNet model).

Conventions shared by the ADM layouts: a VP (DDPM) process with linear β from 10⁻⁴ to 0.02 over
T = 1000 steps, ᾱ_t = ∏_{s ≤ t} (1 − β_s); the network takes x_t in [−1, 1] and the integer
diffusion index t ∈ [0, T−1] (as a float or int tensor; its sinusoidal embedding is of float(t))
and returns ε̂ in the first C output channels (the last C, with learned variance, are the
interpolation v ∈ [−1, 1] between log β_t and the log posterior variance, unused by the project's
samplers). NCSN++ layouts: a VE SDE with σ ∈ [0.01, 378]; the network takes x ∈ [0, 1] (it
maps x ↦ 2x − 1 itself) and σ (not a time), and returns the score, already divided by σ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from diffrecon.errors import CheckpointError, one_line

VP_LINEAR = {"beta_start": 1e-4, "beta_end": 0.02, "n_train_steps": 1000}
VE_RANGE = {"sigma_min": 0.01, "sigma_max": 378.0}

ADM_TIME = "integer diffusion index t in [0, 999] (float or int tensor); sinusoidal embedding of float(t)"
NCSNPP_TIME = "VE noise level sigma (not a time t); the network embeds log(sigma) with Gaussian Fourier features"


@dataclass(frozen=True)
class PublishedLayout:
    """One published checkpoint: its network, how the original file stores it, its conventions.

    ``storage``: ``state_dict`` (a raw state dict), ``wrapped_state_dict`` (``{'iterations',
    'state_dict'}``) or ``score_sde`` (``{'model', 'ema', 'step', …}``, the trained weights in
    ``ema['shadow_params']``). ``method``/``kind``: what the imported weights are in the project
    (the sidecar fields the loaders check); ``extra``: the further sidecar fields (process,
    labels)."""

    name: str
    family: str                   # adm | ncsnpp
    title: str
    file_name: str
    where: str                    # where users get the file
    storage: str
    method: str
    kind: str | None
    image_size: int
    conventions: dict
    extra: dict = field(default_factory=dict)

    def config(self):
        """The network settings (:class:`~diffrecon.models.adm.ADMConfig` or ``NCSNppConfig``)."""
        if self.family == "adm":
            from diffrecon.models.adm import PRESETS

            return PRESETS[self.name]
        from diffrecon.models import ncsnpp

        return {"scoremri_fastmri_knee_320": ncsnpp.SCORE_MRI_KNEE_320,
                "diffusionmbir_aapm256": ncsnpp.DIFFUSIONMBIR_AAPM_256}[self.name]

    def model_block(self) -> dict:
        """The ``model`` block of the sidecar / a config (``architecture`` plus the settings)."""
        return model_block(self.config())


LAYOUTS: dict[str, PublishedLayout] = {layout.name: layout for layout in [
    PublishedLayout(
        name="adm_imagenet256_uncond", family="adm",
        title="OpenAI ADM, ImageNet 256 x 256, unconditional (guided-diffusion)",
        file_name="256x256_diffusion_uncond.pt",
        where="guided-diffusion README (openaipublic.blob.core.windows.net/diffusion/jul-2021/)",
        storage="state_dict", method="adm_pretrained", kind=None, image_size=256,
        conventions={"input": "RGB in [-1, 1]", "time": ADM_TIME,
                     "output": "eps in channels [:3]; [3:] learned-range variance interpolation v",
                     "schedule": VP_LINEAR,
                     "use": "initialisation of an ADM prior (init_from); not a prior of any method itself"},
        extra={"schedule": VP_LINEAR}),
    PublishedLayout(
        name="dds_aapm256", family="adm",
        title="DDS AAPM 256 CT slice prior (ADM, 1 channel, trained from scratch)",
        file_name="AAPM256_1M.pt",
        where="DDS README (Dropbox; the README's wget saves it as AAPM256_1M.pth, the code loads AAPM256_1M.pt)",
        storage="state_dict", method="ct_slice", kind="slice", image_size=256,
        conventions={"input": "not stated by DDS (its solver feeds the slices as stored); the project feeds "
                              "2u - 1 for slices u in [0, 1], as for its own VP priors",
                     "time": ADM_TIME, "output": "eps in channel [:1]; [1:] learned-range variance interpolation",
                     "schedule": VP_LINEAR},
        extra={"schedule": VP_LINEAR}),
    PublishedLayout(
        name="diffusionblend_patch", family="adm",
        title="DiffusionBlend 3-slice patch prior (ADM fine-tuned from the ImageNet model, slice-spacing label)",
        file_name="triplane3D_finetune_452024_iter65099_cond.ckpt (AAPM) / "
                  "LIDC_triplane3D_finetunelarge_4232024_iter62099_cond.ckpt (LIDC)",
        where="not published with a link (DiffusionBlend's evaluation code names these files); obtain them "
              "from the authors",
        storage="wrapped_state_dict", method="ct_patch", kind="patch", image_size=256,
        conventions={"input": "3 slices as channels, u in [0, 1] mapped to 2u - 1", "time": ADM_TIME,
                     "output": "eps in channels [:3]; [3:] learned-range variance interpolation",
                     "schedule": VP_LINEAR,
                     "labels": {"1": "3 adjacent slices (spacing 1)", "3": "slices i, i+3, i+6 (spacing 3)"},
                     "label_rule": "label = slice spacing k, the project's own patch labels "
                                   "(diffrecon.data.training_sets.ct_patches)"},
        extra={"schedule": VP_LINEAR, "spacings": [1, 3]}),
    PublishedLayout(
        name="scoremri_fastmri_knee_320", family="ncsnpp",
        title="score-MRI NCSN++ (fastMRI knee 320 x 320, VE SDE, continuous)",
        file_name="checkpoint_95.pth", where="score-MRI install.sh / DiffusionMBIR README (Dropbox)",
        storage="score_sde", method="score_mri", kind=None, image_size=320,
        conventions={"input": "magnitude images in [0, 1] (mapped to 2x - 1 inside the network)",
                     "time": NCSNPP_TIME, "output": "score, already divided by sigma", "sde": VE_RANGE,
                     "weights": "EMA weights (ema['shadow_params']); all_modules.0.W from 'model'"},
        extra={"sde": VE_RANGE}),
    PublishedLayout(
        name="diffusionmbir_aapm256", family="ncsnpp",
        title="DiffusionMBIR NCSN++ (AAPM CT 256 x 256, VE SDE, continuous)",
        file_name="checkpoint_185.pth", where="DiffusionMBIR README (Dropbox)",
        storage="score_sde", method="ct_score", kind="score", image_size=256,
        conventions={"input": "CT slices in [0, 1] (mapped to 2x - 1 inside the network)",
                     "time": NCSNPP_TIME, "output": "score, already divided by sigma", "sde": VE_RANGE,
                     "weights": "EMA weights (ema['shadow_params']); all_modules.0.W from 'model'"},
        extra={"sde": VE_RANGE}),
]}

STORAGE = {"state_dict": "a raw state dict",
           "wrapped_state_dict": "a dict {'iterations', 'state_dict'}",
           "score_sde": "a score-SDE checkpoint {'model', 'ema', 'step', ...}"}


def model_block(cfg) -> dict:
    """``cfg`` (an ADM or NCSN++ settings dataclass) as a JSON-ready ``model`` block with its
    ``architecture``."""
    from diffrecon.models.adm import ADMConfig

    arch = "adm" if isinstance(cfg, ADMConfig) else "ncsnpp"
    d = dataclasses.asdict(cfg)
    return {"architecture": arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


def layout(name: str) -> PublishedLayout:
    """The layout called ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise CheckpointError(f"unknown layout {name!r} (known: {', '.join(LAYOUTS)})") from None


def build_network(lay: PublishedLayout, device="cpu") -> nn.Module:
    """The project network of ``lay`` (ADM: :class:`~diffrecon.models.adm.ADMNoiseNetwork`; NCSN++:
    ``NCSNpp``), on ``device`` (``"meta"``: shapes only, no memory, no initialisation cost)."""
    with torch.device(device):
        if lay.family == "adm":
            from diffrecon.models.adm import ADMNoiseNetwork

            return ADMNoiseNetwork(lay.config())
        from diffrecon.models.ncsnpp import NCSNpp

        return NCSNpp(lay.config())


_ROWS: dict[tuple[str, str], dict] = {}


def _layout_rows(lay: PublishedLayout) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name → (shape, dtype) of every state-dict entry of ``lay``'s network, in order (built once on
    the meta device: no memory, no initialisation)."""
    key = (lay.name, repr(lay.config()))
    if key not in _ROWS:
        _ROWS[key] = {k: (tuple(v.shape), v.dtype) for k, v in build_network(lay, "meta").state_dict().items()}
    return _ROWS[key]


# ------------------------------------------------------------------------------------------- reading
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read_original(path) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (memory-mapped for zip-format
    files): tensors, numbers, strings and containers only. Anything else (a pickled class, a
    damaged or non-torch file) is a one-line :class:`CheckpointError`: arbitrary objects are never
    unpickled."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    is_zip = zipfile.is_zipfile(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if not is_zip and head[:1] != b"\x80":            # neither torch's zip format nor a (legacy) pickle
        raise CheckpointError(f"{path}: not a torch checkpoint file (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as exc:        # UnpicklingError, RuntimeError (zip reader), EOFError, ...
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            why = "it holds pickled objects other than tensors, numbers, strings and containers"
        elif not is_zip:
            why = f"not a torch checkpoint file: {exc.__class__.__name__}: {_ANSI.sub('', one_line(exc, 80))}"
        else:
            why = f"{exc.__class__.__name__}: {_ANSI.sub('', one_line(exc, 120))}"
        raise CheckpointError(f"{path}: refused: torch.load(weights_only=True) cannot read it ({why}); "
                              "arbitrary pickled objects are never unpickled") from None


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:4]
        return f"a dict with keys {', '.join(map(repr, keys))}{', …' if len(obj) > 4 else ''}"
    return f"a {type(obj).__name__}"


def _strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def extract_state(obj, lay: PublishedLayout, path) -> dict[str, torch.Tensor]:
    """The bare state dict (layout names) held by ``obj`` in ``lay``'s storage format; a ``module.``
    prefix (DataParallel) on every key is removed. Another format is a one-line error."""
    if lay.storage == "score_sde":
        if not (isinstance(obj, dict) and ("model" in obj or "ema" in obj)):
            raise CheckpointError(f"{path}: layout '{lay.name}' is stored as {STORAGE[lay.storage]}, "
                                  f"the file holds {_describe(obj)}")
        import inspect

        from diffrecon.models import ncsnpp

        kwargs = {"cfg": lay.config()} if "cfg" in inspect.signature(ncsnpp.state_from_original).parameters else {}
        try:
            state = ncsnpp.state_from_original(obj, prefix="module.", use_ema=True, **kwargs)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: does not fit layout '{lay.name}': {one_line(exc, 200)}") from None
        return dict(state)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: layout '{lay.name}' is stored as {STORAGE[lay.storage]}, "
                              f"the file holds {_describe(obj)}")
    if lay.storage == "wrapped_state_dict":
        if not isinstance(obj.get("state_dict"), dict):
            raise CheckpointError(f"{path}: layout '{lay.name}' is stored as {STORAGE[lay.storage]}, "
                                  f"the file holds {_describe(obj)}")
        obj = obj["state_dict"]
    elif "state_dict" in obj or "model" in obj or "ema" in obj:
        raise CheckpointError(f"{path}: layout '{lay.name}' is stored as {STORAGE[lay.storage]}, "
                              f"the file holds {_describe(obj)} (another layout's storage format?)")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is {_describe(value)}, not a tensor: not a state dict "
                                  f"of layout '{lay.name}'")
    return _strip_prefix(dict(obj))


def check_state(state: dict, lay: PublishedLayout, path, allow_missing: tuple[str, ...] = ()) -> None:
    """Every name and shape of ``state`` equals the layout's network (besides ``allow_missing``
    names absent); else one line naming the file, the layout, the first offending tensor and how
    many differ (and a layout the tensors do fit, if any)."""
    rows = _layout_rows(lay)
    missing = [k for k in rows if k not in state and k not in allow_missing]
    unexpected = [k for k in state if k not in rows]
    shapes = [k for k in rows if k in state and tuple(state[k].shape) != rows[k][0]]
    if not (missing or unexpected or shapes):
        return
    if shapes:
        k = shapes[0]
        first = f"'{k}' has shape {tuple(state[k].shape)}, the layout {rows[k][0]}"
    elif missing:
        first = f"'{missing[0]}' {rows[missing[0]][0]} is missing"
    else:
        first = f"'{unexpected[0]}' {tuple(state[unexpected[0]].shape)} is not in the layout"
    fits = [other.name for other in LAYOUTS.values() if other.name != lay.name and other.family == lay.family
            and _fits(state, other)]
    hint = f"; the tensors fit layout '{fits[0]}'" if fits else ""
    raise CheckpointError(f"{path}: does not fit layout '{lay.name}': {first} ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(shapes)} wrong-shape tensors){hint}")


def _fits(state: dict, lay: PublishedLayout) -> bool:
    try:
        rows = _layout_rows(lay)
    except ImportError:
        return False
    return set(rows) == set(state) and all(tuple(state[k].shape) == rows[k][0] for k in rows)


# ----------------------------------------------------------------------------------------- importing
def sidecar_meta(lay: PublishedLayout, src, src_sha256: str) -> dict:
    """The sidecar of an import: the loaders' fields (``method``, ``kind``, ``model``,
    ``image_size``, ``schedule``/``sde``, ``spacings``) and the provenance (source file, its sha256,
    layout, family, storage, conventions)."""
    from diffrecon.models.checkpoint import git_commit, library_versions

    meta = {"method": lay.method}
    if lay.kind:
        meta["kind"] = lay.kind
    meta.update({"model": lay.model_block(), "image_size": lay.image_size, **lay.extra,
                 "layout": lay.name, "family": lay.family, "title": lay.title,
                 "source": str(Path(src).resolve()), "source_sha256": src_sha256,
                 "source_storage": STORAGE[lay.storage], "conventions": lay.conventions,
                 "weights": "model.* (the published weights, float32)",
                 "git_commit": git_commit(), "versions": library_versions()})
    return meta


def import_weights(src_path, layout_name: str, out_stem) -> tuple[Path, dict]:
    """Convert the published checkpoint ``src_path`` of layout ``layout_name`` to project weights at
    ``out_stem`` (``.safetensors`` + ``.json`` + ``.sha256``); returns (weights path, sidecar).

    Steps: read with ``weights_only=True`` (:func:`read_original`); take the bare state dict
    (:func:`extract_state`); check every name and shape (:func:`check_state`); cast each tensor to
    the network's dtype (float32 weights; NCSN++'s ``sigmas`` float64); write the three files as
    ``.part`` files; reload the weights strictly into a fresh network and compare every tensor;
    only then rename them into place (the weights last). Any failure is a one-line
    :class:`CheckpointError` and leaves no output.
    """
    from safetensors.torch import load_file, save_file

    from diffrecon.io import sha256_file

    lay = layout(layout_name)
    src = Path(src_path)
    out_stem = Path(out_stem)
    if out_stem.suffix == ".safetensors":
        out_stem = out_stem.with_suffix("")
    outs = {s: out_stem.with_name(out_stem.name + s) for s in (".safetensors", ".json", ".sha256")}
    if src.exists() and any(p.exists() and p.resolve() == src.resolve() for p in outs.values()):
        raise CheckpointError(f"{src}: the output {out_stem} would overwrite the source file")
    state = extract_state(read_original(src), lay, src)
    check_state(state, lay, src)
    rows = _layout_rows(lay)
    tensors = {f"model.{k}": v.detach().to(rows[k][1]).contiguous() for k, v in state.items()}
    meta = sidecar_meta(lay, src, sha256_file(src))
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    parts = {s: p.with_name(p.name + ".part") for s, p in outs.items()}
    try:
        for p in parts.values():
            p.unlink(missing_ok=True)
        save_file(tensors, str(parts[".safetensors"]), metadata={"layout": lay.name})
        digest = sha256_file(parts[".safetensors"])
        parts[".json"].write_text(json.dumps({**meta, "sha256": digest}, indent=2, default=str))
        parts[".sha256"].write_text(f"{digest}  {outs['.safetensors'].name}\n")
        _verify(load_file(str(parts[".safetensors"])), tensors, lay, src)
        for suffix in (".json", ".sha256", ".safetensors"):
            os.replace(parts[suffix], outs[suffix])
    finally:
        for p in parts.values():
            p.unlink(missing_ok=True)
    return outs[".safetensors"], {**meta, "sha256": digest}


def _verify(written: dict, expected: dict, lay: PublishedLayout, src) -> None:
    """The written tensors load strictly into a fresh network of ``lay`` and equal ``expected``."""
    from diffrecon.models.checkpoint import unprefixed

    net = build_network(lay, "meta")
    try:
        net.load_state_dict(unprefixed("model", written), strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{src}: written weights do not load into layout '{lay.name}' "
                              f"({one_line(exc, 120)})") from None
    loaded = net.state_dict()
    for key, value in expected.items():
        got = loaded[key[len("model."):]]
        if got.dtype != value.dtype or not torch.equal(got, value):
            raise CheckpointError(f"{src}: written tensor {key} differs from the source after reloading")


# -------------------------------------------------------------------------------------- fine-tuning
NEW_TENSORS = ("label_emb.weight",)


def init_from(model: nn.Module, path) -> dict:
    """Copy every tensor of the imported weights ``path`` (``.safetensors`` with sidecar, as written
    by :func:`import_weights` or ``export-weights``) into ``model``, as the start of its training.

    Strict apart from :data:`NEW_TENSORS`: the weights may lack ``label_emb.weight`` (a class
    embedding the source network does not have, e.g. DiffusionBlend's slice-spacing labels on the
    unconditional ImageNet model), which then keeps ``model``'s initialisation. Any other missing,
    unexpected or wrong-shape tensor is a one-line :class:`CheckpointError` naming the file.
    Returns the provenance (:func:`init_provenance`).
    """
    from diffrecon.models.checkpoint import load_checkpoint, unprefixed

    path = resolve_path(path)
    if not path.with_suffix(".json").is_file():
        raise CheckpointError(f"{path}: initial weights need their .json sidecar (as diffrecon import-weights "
                              "writes it)")
    tensors, meta = load_checkpoint(path)
    prefix = "ema" if any(k.startswith("ema.") for k in tensors) else "model"
    state = unprefixed(prefix, tensors)
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in NEW_TENSORS]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        k = (shapes or missing or unexpected)[0]
        what = ("has shape " + str(tuple(state[k].shape)) + f", the network {tuple(own[k].shape)}" if shapes
                else "is missing" if missing else "is not in the network")
        raise CheckpointError(f"{path}: cannot initialise the network from it: '{k}' {what} ({len(missing)} "
                              f"missing, {len(unexpected)} unexpected, {len(shapes)} wrong-shape tensors; only "
                              f"{', '.join(NEW_TENSORS)} may be new)")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}}, strict=True)
    return init_provenance(path, meta)


def resolve_path(path) -> Path:
    """``path`` as given, or relative to the repository when it does not exist as given (as a
    config's ``weights:``)."""
    from diffrecon.config import repository_root

    path = Path(path).expanduser()
    if not path.is_absolute() and not path.exists():
        path = repository_root() / path
    return path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")


def init_provenance(path, meta: dict | None = None) -> dict:
    """``{"init_from": {path, sha256, layout, method}}`` of the initial weights ``path`` (from its
    sidecar), for a training run's metadata (so a changed initialisation is a changed config)."""
    from diffrecon.models.checkpoint import read_sidecar

    weights = resolve_path(path)
    if meta is None:
        sidecar = weights.with_suffix(".json")
        meta = read_sidecar(sidecar) if sidecar.is_file() else {}
    return {"init_from": {"path": str(weights), "sha256": meta.get("sha256"), "layout": meta.get("layout"),
                          "method": meta.get("method")}}


def init_record(cfg: dict) -> dict:
    """The ``init_from`` provenance of a prior's config block (``{}`` without ``init_from``)."""
    return init_provenance(cfg["init_from"]) if cfg.get("init_from") else {}
