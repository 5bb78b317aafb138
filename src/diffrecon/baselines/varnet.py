"""Supervised multi-coil baseline: E2E-VarNet (Sriram et al., MICCAI 2020), fastMRI's own network.

The network is ``fastmri.models.VarNet`` (:mod:`diffrecon.models.fastmri_nets`) with its
sensitivity-estimation U-Net, called in fastMRI's conventions: masked k-space as real tensors
(B, C, H, W, 2), the mask (B, 1, H, W, 1) bool (a 1-D mask's rows are equal, so this is fastMRI's
(B, 1, 1, W, 1) broadcast over the rows; 2-D masks work the same way), ``num_low_frequencies``
the side of the fully sampled centre (the ACS width); output the RSS magnitude (B, H, W). One
network is trained per *mask family* (kind x R x ACS fraction, one seeded mask), as the U-Net.

Training set (:class:`MultiCoilSlices`, in memory :func:`multicoil_slices`): the fully sampled
coil images x_c of a dataset's train split, each volume divided by the maximum of its stored RSS
target (the scale the ``simulate`` stage gives test volumes, there from the central slices), as
real tensors (N, C, H, W, 2). Per step, with F the centred orthonormal
DFT (``fastmri.fft2c`` = :func:`~diffrecon.physics.fft.fft2c`) and M the family's mask:

    y_c  = M ⊙ F x_c                         masked k-space, (B, C, H, W, 2)
    x̂    = VarNet(y, M, num_low_frequencies)  (B, H, W)
    x    = RSS_c |x_c|                        target, (B, H, W)
    loss = 1 − SSIM(x̂, x; data_range 1)       fastMRI's ``SSIMLoss`` (7 x 7 window), as the
                                              fastMRI reference training of E2E-VarNet (data_range:
                                              the volume maximum, 1 after the scaling above)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from torch import nn

from diffrecon.data.fastmri import TARGET_KEYS, DataFormatError, check_finite, open_h5, reading
from diffrecon.data.streaming import StreamingSet, _split_files

from diffrecon.baselines.unet import MaskSpec
from diffrecon.models.fastmri_nets import FASTMRI_VARNET, fastmri_varnet
from diffrecon.models.networks import count_parameters

log = logging.getLogger("diffrecon.training")

__all__ = ["MultiCoilSlices", "multicoil_slices", "varnet_mask", "varnet_loss", "fit_varnet", "train_varnet", "varnet_reconstruct"]


class MultiCoilSlices(StreamingSet):
    """E2E-VarNet's training set read one slice at a time (the ``stream`` loader): sample i (C, h, w, 2)
    float32 is slice i of the split's multi-coil files in file order: the centred inverse DFT of its
    k-space, centre-cropped to the target grid, divided by the maximum of the file's stored RSS target.

    The index reads file headers and the targets (for the scale), never k-space; :meth:`data_hash`
    fingerprints the targets, names and k-space shapes (hashing every k-space sample of fastMRI
    knee would read ~1 TB). Every file must be multi-coil with the same coils and grid (one line
    naming the first that is not).
    """

    def __init__(self, manifest: dict, split: str = "train"):
        files, shapes, self.scales, self.crop = [], [], [], None
        for path in _split_files(manifest, split):
            p = Path(path)
            with reading(p, "fastMRI HDF5 file"), open_h5(p) as f:
                ks = f["kspace"] if "kspace" in f else None
                if not isinstance(ks, h5py.Dataset) or ks.ndim != 4 or not np.issubdtype(ks.dtype, np.complexfloating):
                    raise DataFormatError(f"{p}: E2E-VarNet trains on multi-coil k-space (slices, coils, H, W) complex, "
                                          f"got {None if ks is None else (ks.shape, str(ks.dtype))}")
                if TARGET_KEYS[0] not in f:
                    raise DataFormatError(f"{p}: no '{TARGET_KEYS[0]}' target to train on")
                target = np.asarray(f[TARGET_KEYS[0]][()], dtype=np.float32)
                kshape = tuple(ks.shape)
            check_finite(p, TARGET_KEYS[0], target)
            if self.crop is None:
                self.crop, coils = target.shape[1:], kshape[1]
            elif (kshape[1], target.shape[1:]) != (coils, self.crop):
                raise DataFormatError(f"{p}: {kshape[1]} coils on a {target.shape[1:]} grid differ from the first "
                                      f"file's {coils} on {self.crop}: one training set holds one coil count and size")
            files.append(path), shapes.append(kshape), self.scales.append(float(target.max()) or 1.0)
        super().__init__(files, ["kspace"] * len(files), shapes)
        self.definition = {"set": "multicoil_slices", "normalisation": "volume RSS-target max", "split": split}
        self._ends = np.cumsum([sh[0] for sh in shapes])

    @property
    def sample_shape(self):
        return (self.shapes[0][1], *self.crop, 2)

    def __getitem__(self, i: int) -> torch.Tensor:
        from diffrecon.data.fastmri import center_crop
        from diffrecon.physics.fft import ifft2c

        f, s = self.locate(int(i))
        with reading(self.files[f], "fastMRI HDF5 file"):
            k = np.asarray(self._dataset(f)[s]).astype(np.complex64)
        check_finite(f"{self.files[f]} slice {s}", "kspace", k)
        img = center_crop(ifft2c(torch.from_numpy(k)).numpy(), self.crop) / np.float32(self.scales[f])
        return torch.view_as_real(torch.from_numpy(np.ascontiguousarray(img, dtype=np.complex64))).contiguous()

    def data_hash(self) -> str:
        h = hashlib.sha256(json.dumps({**self.definition, "n": len(self)}, sort_keys=True).encode())
        for path, shape in zip(self.files, self.shapes):
            with reading(path, "fastMRI HDF5 file"), open_h5(Path(path)) as f:
                target = np.ascontiguousarray(f[TARGET_KEYS[0]][()])
            h.update(json.dumps([Path(path).name, list(shape), hashlib.sha256(target.tobytes()).hexdigest()]).encode())
        return h.hexdigest()[:16]


def multicoil_slices(manifest: dict, split: str = "train") -> torch.Tensor:
    """The whole :class:`MultiCoilSlices` set in memory (the ``memory`` loader): (N, C, h, w, 2) float32,
    row i = sample i."""
    ds = MultiCoilSlices(manifest, split)
    out = torch.stack([ds[i] for i in range(len(ds))])
    ds.close()
    return out


def varnet_mask(mask, batch: int, device=None) -> torch.Tensor:
    """The (H, W) 0/1 ``mask`` as fastMRI's bool mask (batch, 1, H, W, 1)."""
    m = torch.as_tensor(np.asarray(getattr(mask, "array", mask)) > 0, device=device)
    return m[None, None, :, :, None].expand(batch, 1, *m.shape, 1)


def varnet_loss(mask, num_low_frequencies: int | None) -> Callable:
    """fastMRI's SSIM loss of E2E-VarNet, for :func:`~diffrecon.models.training.train`.

    ``loss(model, x0, generator)``: x0 coil images (B, C, H, W, 2); returns 1 − SSIM(VarNet(M F x0), RSS x0)
    (module docstring; the generator is unused).
    """
    import fastmri
    from fastmri.losses import SSIMLoss

    ssim = SSIMLoss()
    nlf = int(num_low_frequencies) if num_low_frequencies else None

    def loss(model: nn.Module, x0: torch.Tensor, gen) -> torch.Tensor:
        m = varnet_mask(mask, x0.shape[0], x0.device)
        y = fastmri.fft2c(x0) * m
        target = fastmri.rss(fastmri.complex_abs(x0), dim=1)
        out = model(y, m, nlf)
        return ssim.to(x0.device)(out[:, None], target[:, None], torch.ones(x0.shape[0], device=x0.device))

    return loss


def fit_varnet(data: torch.Tensor, mask_spec, cfg: dict, out_stem, device="auto", meta: dict | None = None,
               progress: bool = True) -> dict:
    """Train E2E-VarNet on coil images ``data`` (N, C, H, W, 2) for one mask family.

    ``mask_spec``: a :class:`~diffrecon.baselines.unet.MaskSpec` or a (kind, acceleration,
    acs_fraction, seed) tuple (the mask is built for (H, W)); ``cfg``: ``model`` (``cascades``,
    ``chans``, ``pools``, ``sens_chans``, ``sens_pools``) and ``train``
    (:class:`~diffrecon.models.training.TrainConfig` fields). Checkpoints, resume and EMA are those of
    :func:`~diffrecon.models.training.train`; returns its sidecar.
    """
    from diffrecon.data.training_sets import tensor_hash
    from diffrecon.devices import pick_device
    from diffrecon.models.training import TrainConfig, train
    from diffrecon.physics.masks import make_mask

    shape = tuple(data.shape[1:]) if isinstance(data, torch.Tensor) else tuple(data.sample_shape)
    if len(shape) != 4 or shape[-1] != 2:
        raise ValueError(f"E2E-VarNet trains on coil images (N, C, H, W, 2), got samples of shape {shape}")
    spec = MaskSpec(*mask_spec)
    n_coils, H, W = shape[:3]
    if H != W:
        raise ValueError(f"E2E-VarNet: square images only (the checkpoint records one image_size), got {H} x {W}")
    mask = make_mask(spec.kind, (H, W), spec.acceleration, spec.acs_fraction, spec.seed)
    nlf = mask.to_dict()["acs_width"]
    torch.manual_seed(cfg["train"].get("seed", 0))                # weight initialisation
    model = fastmri_varnet(cfg["model"])
    dev = pick_device(device)
    log.info("varnet %s-R%g-acs%g: %d parameters, %d training slices of %d coils, effective R %.2f, device %s",
             spec.kind, spec.acceleration, spec.acs_fraction, count_parameters(model), len(data), n_coils,
             mask.effective_acceleration, dev)
    run_meta = {"method": "varnet", "architecture": FASTMRI_VARNET, "loss": "ssim", "model": cfg["model"],
                "mask": {**spec._asdict(), **mask.to_dict()}, "num_low_frequencies": nlf, "image_size": int(H),
                "n_coils": int(n_coils), "n_train_slices": len(data),
                **({"data_hash": tensor_hash(data)} if isinstance(data, torch.Tensor) else {}), **(meta or {})}
    return train(model, data, varnet_loss(mask, nlf), TrainConfig.from_dict(cfg["train"]), out_stem,
                 meta=run_meta, device=dev, progress=progress)


def train_varnet(manifest: dict, mask_spec, cfg: dict, out_stem, device="auto", progress: bool = True) -> dict:
    """Train the E2E-VarNet of one mask family on the manifest's train split (``cfg``: the ``mri.varnet`` block;
    ``train.loader``: ``memory`` holds the set, ``stream`` reads it slice by slice, the same samples and
    weights; the sidecar's ``data_hash`` is :meth:`MultiCoilSlices.data_hash` for both)."""
    stream = MultiCoilSlices(manifest, "train")
    data = stream if cfg["train"].get("loader", "memory") == "stream" else multicoil_slices(manifest, "train")
    return fit_varnet(data, mask_spec, cfg, out_stem, device=device,
                      meta={"dataset": manifest["name"], "data_hash": stream.data_hash()}, progress=progress)


@torch.no_grad()
def varnet_reconstruct(kspace: np.ndarray, mask: np.ndarray, network: nn.Module,
                       num_low_frequencies: int | None = None, batch_limit: int = 8) -> np.ndarray:
    """VarNet(y, M, num_low_frequencies) slice by slice; ``kspace`` (S, C, H, W) complex measured (masked),
    ``mask`` (H, W); returns the RSS magnitude (S, H, W) float32 (``num_low_frequencies`` None or 0:
    fastMRI finds the fully sampled centre columns in the mask). Runs on the network's device."""
    if kspace.ndim != 4:
        raise ValueError(f"E2E-VarNet reconstructs multi-coil k-space (S, C, H, W), got shape {kspace.shape}")
    if tuple(mask.shape) != tuple(kspace.shape[-2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit the k-space grid {tuple(kspace.shape[-2:])}")
    device = next(network.parameters()).device
    y = torch.view_as_real(torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64)))   # (S, C, H, W, 2)
    nlf = int(num_low_frequencies) if num_low_frequencies else None
    out = torch.empty(y.shape[0], *y.shape[-3:-1])
    for i in range(0, len(y), batch_limit):
        yb = y[i:i + batch_limit].to(device)
        out[i:i + batch_limit] = network(yb, varnet_mask(mask, yb.shape[0], device), nlf).cpu()
    return out.numpy().astype(np.float32)
