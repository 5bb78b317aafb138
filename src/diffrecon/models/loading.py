"""Rebuild trained networks from checkpoints (:mod:`diffrecon.models.checkpoint`).

The sidecar of a checkpoint records the config block the network was built from (``model``,
``image_size`` and the method's extras), so the network is rebuilt with the same builder as in
training (:mod:`~diffrecon.models.recipes`: the diffusers UNets, or ``architecture: adm`` /
``ncsnpp`` — the networks of imported published priors, :mod:`~diffrecon.models.published`, whose
sidecars carry the same fields) and then given the checkpoint's weights: the EMA weights (``ema.*``) by default when
present, else the raw ones (``model.*``). Every loader returns the network on ``device``, in
eval mode and without gradients, with the sidecar metadata; a given ``expected_sha256`` is
checked against the weights file before it is read.
"""

from __future__ import annotations

import torch
from torch import nn

from diffrecon.diffusion.sde import VESDE
from diffrecon.errors import CheckpointError, one_line
from diffrecon.models.checkpoint import load_checkpoint, unprefixed
from diffrecon.models.networks import image_unet
from diffrecon.models.recipes import noise_network, score_network, vp_schedule


def _sidecar(stem):
    from pathlib import Path

    stem = Path(stem)
    return (stem if stem.suffix == ".safetensors" else stem.with_suffix(".safetensors")).with_suffix(".json")


def _load(stem, expected_sha256, what: str, accept) -> tuple[dict, dict]:
    """Tensors and sidecar of checkpoint ``stem``, which must be ``what`` (``accept(meta)`` true):
    a missing sidecar or one of another model is a one-line :class:`CheckpointError`."""
    sidecar = _sidecar(stem)
    if not sidecar.is_file() and sidecar.with_suffix(".safetensors").is_file():
        raise CheckpointError(f"{sidecar}: sidecar not found: the {what} cannot be rebuilt without it "
                              "(it records the network and the image size)")
    tensors, meta = load_checkpoint(stem, expected_sha256)
    if not accept(meta):
        found = meta.get("kind") or meta.get("method")
        hint = f" (imported layout {meta['layout']})" if meta.get("layout") else ""
        if meta.get("method") == "adm_pretrained":
            hint += "; it is an initialisation: give it as init_from of an ADM prior"
        raise CheckpointError(f"{sidecar.with_suffix('.safetensors')}: a {found!r} checkpoint{hint}, not a {what}")
    return tensors, meta


def _built(stem, meta: dict, build):
    """``build()`` of the network the sidecar describes; a missing or wrong field names the sidecar."""
    try:
        return build()
    except KeyError as exc:
        raise CheckpointError(f"{_sidecar(stem)}: sidecar lacks {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{_sidecar(stem)}: cannot build the network it describes "
                              f"({exc.__class__.__name__}: {one_line(exc, 100)})") from None


def _with_weights(model: nn.Module, tensors: dict[str, torch.Tensor], use_ema: bool, device, stem=None) -> nn.Module:
    """``model`` with the ``ema.*`` (if ``use_ema`` and present) or ``model.*`` weights, frozen on ``device``."""
    prefix = "ema" if use_ema and any(k.startswith("ema.") for k in tensors) else "model"
    try:
        model.load_state_dict(unprefixed(prefix, tensors))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{_sidecar(stem).with_suffix('.safetensors')}: its '{prefix}.*' weights do not fit "
                              f"the network of its sidecar ({one_line(exc, 100)})") from None
    return model.to(device).eval().requires_grad_(False)


def load_score_network(stem, expected_sha256: str | None = None, use_ema: bool = True,
                       device="cpu") -> tuple[nn.Module, VESDE, dict]:
    """The score-MRI prior of checkpoint ``stem``: (score network s_θ(x, σ) —
    :class:`~diffrecon.models.networks.ScoreNetwork`, or NCSN++ for ``architecture: ncsnpp`` — its
    :class:`VESDE` (the sidecar's σ range), metadata)."""
    tensors, meta = _load(stem, expected_sha256, "score-MRI prior",
                          lambda m: m.get("method", "score_mri") == "score_mri" and "kind" not in m)
    model, sde = _built(stem, meta, lambda: (score_network({"model": meta["model"]}, int(meta["image_size"])),
                                             VESDE(meta["sde"]["sigma_min"], meta["sde"]["sigma_max"])))
    return _with_weights(model, tensors, use_ema, device, stem), sde, meta


def load_ct_prior(stem, expected_sha256: str | None = None, use_ema: bool = True, device="cpu"):
    """A CT prior of checkpoint ``stem`` by the sidecar's ``kind``: (network, process, metadata).

    ``patch`` (DiffusionBlend): 3-channel ε-network with labels 0 … max spacing and its
    :class:`~diffrecon.diffusion.vp.VPSchedule`; ``slice`` (DDS): 1-channel ε-network and its
    schedule; ``score`` (DiffusionMBIR): score network and its :class:`VESDE`. The ε-networks are
    :class:`~diffrecon.models.networks.NoiseNetwork` or, for ``architecture: adm``,
    :class:`~diffrecon.models.adm.ADMNoiseNetwork` (ε̂ = the first C of its output channels); the
    score network :class:`~diffrecon.models.networks.ScoreNetwork` or NCSN++.
    """
    tensors, meta = _load(stem, expected_sha256, "CT prior", lambda m: m.get("kind") in ("patch", "slice", "score", "slice_perp"))
    kind = meta["kind"]

    def build():
        size = int(meta["image_size"])
        if kind == "patch":
            return (noise_network({"model": meta["model"]}, size, 3, max(meta["spacings"]) + 1), vp_schedule(meta))
        if kind in ("slice", "slice_perp"):          # slice_perp: TPDM's auxiliary prior (z windows)
            return noise_network({"model": meta["model"]}, size, 1, None), vp_schedule(meta)
        return score_network({"model": meta["model"]}, size), VESDE(meta["sde"]["sigma_min"], meta["sde"]["sigma_max"])

    model, process = _built(stem, meta, build)
    return _with_weights(model, tensors, use_ema, device, stem), process, meta


def load_unet(stem, device="cpu", use_ema: bool = True, expected_sha256: str | None = None) -> tuple[nn.Module, dict]:
    """A supervised U-Net and its metadata: the MRI U-Net (sidecar ``architecture: fastmri_unet``,
    ``fastmri.models.Unet``) or the CT FBP-U-Net (:class:`~diffrecon.models.networks.ImageUNet`; by the sidecar's ``kind``)."""
    tensors, meta = _load(stem, expected_sha256, "U-Net", lambda m: m.get("method") == "unet")
    if meta.get("architecture") == "fastmri_unet":
        from diffrecon.models.fastmri_nets import fastmri_unet

        model = _built(stem, meta, lambda: fastmri_unet(meta["model"]))
    else:
        model = _built(stem, meta, lambda: image_unet(meta["model"], int(meta["image_size"])))
    return _with_weights(model, tensors, use_ema, device, stem), meta


def load_varnet(stem, device="cpu", use_ema: bool = True, expected_sha256: str | None = None) -> tuple[nn.Module, dict]:
    """An E2E-VarNet (``fastmri.models.VarNet``, sidecar ``method: varnet``) and its metadata."""
    from diffrecon.models.fastmri_nets import fastmri_varnet

    tensors, meta = _load(stem, expected_sha256, "E2E-VarNet", lambda m: m.get("method") == "varnet")
    model = _built(stem, meta, lambda: fastmri_varnet(meta["model"]))
    return _with_weights(model, tensors, use_ema, device, stem), meta
