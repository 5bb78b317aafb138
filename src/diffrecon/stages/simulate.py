"""Stage ``simulate``: measure the test split of a dataset in one setting.

MRI: retrospective undersampling y = M ⊙ F x (:class:`~diffrecon.physics.mri.SingleCoilMRI`,
coils as a batch axis) of each volume normalised by its target's maximum; one seeded mask per
setting. CT: y = A x slice by slice (:class:`~diffrecon.physics.ct.ParallelBeamCT`), optional
transmission noise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from diffrecon.io import CaseWriter, write_ct_measurements_header

log = logging.getLogger("diffrecon")


def _central(n: int, keep: int | None) -> slice:
    if not keep or keep >= n:
        return slice(0, n)
    start = (n - keep) // 2
    return slice(start, start + keep)


def _case_name(path) -> str:
    return Path(path).stem


def _split_files(manifest: dict, split: str, max_cases: int | None) -> list:
    if not manifest["splits"].get(split):
        raise ValueError(f"dataset {manifest['name']} has no '{split}' cases")
    files = manifest["splits"][split]
    return files[:max_cases] if max_cases else files


# ----------------------------------------------------------------------------------------- MRI
def mri_ground_truth(coil_imgs: np.ndarray, coil_mode: str, multicoil_file: bool, acs: int = 24):
    """Image to measure and its magnitude target for one volume of coil images (S, C, H, W).

    * ``multicoil``: the coil images themselves; target RSS.
    * ``singlecoil``: complex coil combination Σ_c conj(S_c) x_c with ESPIRiT maps from the
      fully sampled data (this builds the reference object, it is not part of any
      reconstruction); a single-coil file is used as is.
    * ``magnitude``: the RSS image, real valued.
    """
    import torch

    from diffrecon.physics.fft import fft2c
    from diffrecon.physics.mri import rss
    from diffrecon.physics.sensitivity import espirit_maps

    mag = rss(torch.from_numpy(coil_imgs), dim=-3).numpy()
    if coil_mode == "multicoil":
        return coil_imgs, mag
    if coil_mode == "magnitude":
        return mag.astype(np.complex64), mag
    if not multicoil_file:
        img = coil_imgs[:, 0]
        return img, np.abs(img)
    ksp = fft2c(torch.from_numpy(coil_imgs)).numpy()
    img = np.stack([(np.conj(espirit_maps(ksp[s], calib_width=min(acs, ksp.shape[-1] // 2))) * coil_imgs[s]).sum(0)
                    for s in range(len(ksp))]).astype(np.complex64)
    return img, np.abs(img)


def simulate_mri(manifest: dict, setting, out_measurements, out_target, out_mask_json=None, seed: int = 0,
                 max_cases: int | None = None, central_slices: int | None = None, split: str = "test",
                 name: str | None = None, mask_file=None) -> dict:
    """Undersample one split (default ``test``) of an MRI dataset in ``setting`` (:class:`MRISetting`).

    ``name`` is the dataset name recorded in the outputs (default: the manifest's); a robustness
    set names the held-out split of another dataset this way. Each volume is normalised by the
    maximum of its target magnitude (score-MRI trains and tests on [0, 1] magnitudes); the scale
    is stored per case. ``mask_file`` (.npy / .h5 ``mask``: (W,) columns or (H, W)) replaces the
    setting's mask (the measurements then name the setting ``maskfile-<coil_mode>``). Returns the
    mask's metadata.
    """
    import torch

    from diffrecon.data.fastmri import coil_images, read_volume
    from diffrecon.physics.masks import make_mask
    from diffrecon.physics.mri import SingleCoilMRI

    files = _split_files(manifest, split, max_cases)
    mask = op = None
    dataset = name or manifest["name"]
    with CaseWriter(out_measurements, compress=("kspace",)) as fm, CaseWriter(out_target) as ft:
        for path in files:
            vol = read_volume(path)
            sl = _central(vol.n_slices, central_slices)
            coils = coil_images(vol, sl)
            if mask is None and mask_file is not None:
                from diffrecon.physics.masks import Mask, measured_acs_width
                from diffrecon.stages.measure import load_mask_file

                H, W = coils.shape[-2:]
                m = load_mask_file(mask_file, W, H, f"{path} (image grid {H} x {W})", allow_2d=True)
                m = np.broadcast_to(m, (H, W)).astype(np.float32)
                mask = Mask(m, "mask_file", m.size / max(m.sum(), 1), measured_acs_width(m) / W, None)
                op = SingleCoilMRI(mask.array)
            elif mask is None:
                mask = make_mask(setting.mask, coils.shape[-2:], setting.acceleration, setting.acs_fraction, seed)
                op = SingleCoilMRI(mask.array)
            elif mask.shape != tuple(coils.shape[-2:]):
                raise ValueError(f"{path}: image grid {tuple(coils.shape[-2:])} differs from the first test volume's {mask.shape}")
            x, target = mri_ground_truth(coils, setting.coil_mode, vol.multicoil)
            scale = float(target.max()) or 1.0
            x, target = x / scale, target / scale
            ksp = op.A(torch.from_numpy(np.ascontiguousarray(x, dtype=np.complex64))).numpy()
            fm.add(_case_name(path), {"scale": scale, "source": str(path), "slices": f"{sl.start}:{sl.stop}"},
                   kspace=ksp.astype(np.complex64))
            ft.add(_case_name(path), target=target.astype(np.float32))
        meta = mask.to_dict()
        setting_name = setting.name if mask_file is None else f"maskfile-{setting.coil_mode}"
        common = {"modality": "mri", "dataset": dataset, "setting": setting_name, "split": split}
        fm.finish({**common, "coil_mode": setting.coil_mode, "mask": json.dumps(meta)}, mask=mask.array)
        ft.finish(common)
    if out_mask_json:
        Path(out_mask_json).write_text(json.dumps(meta, indent=2))
    log.info("simulated %d cases, %s, effective R = %.2f", len(files), setting_name, mask.effective_acceleration)
    return meta


# ------------------------------------------------------------------------------------------ CT
def add_ct_noise(sino: np.ndarray, rng: np.random.Generator, I0: float, sigma: float, mu_scale: float = 1.0) -> np.ndarray:
    """Transmission noise: counts ~ Poisson(I0 exp(−p/mu_scale)) + N(0, σ²), back to line integrals.

    ``I0 = 0`` disables the Poisson part (then only Gaussian noise of std ``sigma`` is added to p).
    """
    if not I0:
        return sino + rng.normal(0.0, sigma, sino.shape)
    counts = rng.poisson(I0 * np.exp(-sino / mu_scale)) + rng.normal(0.0, sigma, sino.shape)
    return -mu_scale * np.log(np.clip(counts, 1.0, None) / I0)


def simulate_ct(manifest: dict, setting, out_measurements, out_target, projector: str = "linear",
                n_threads: int | None = None, max_cases: int | None = None, split: str = "test",
                noise: dict | None = None, seed: int = 0) -> dict:
    """Project each volume of one split in ``setting`` (:class:`CTSetting`): y = A x slice by slice."""
    import torch

    from diffrecon.data.ct_volumes import read_ct_volume
    from diffrecon.physics.ct import ParallelBeamCT

    files = _split_files(manifest, split, max_cases)
    rng = np.random.default_rng(seed)
    geom = op = None
    try:
        with CaseWriter(out_measurements) as fm, CaseWriter(out_target) as ft:
            for path in files:
                vol = read_ct_volume(path)
                if geom is None:
                    geom = setting.geometry(vol.shape[-1], projector)
                    op = ParallelBeamCT(geom, n_threads=n_threads)
                elif vol.shape[-1] != geom.n:
                    raise ValueError(f"{path}: slice size {vol.shape[-1]} differs from the first test volume ({geom.n})")
                sino = op.A(torch.from_numpy(vol)).numpy()
                if noise and (noise.get("I0") or noise.get("sigma")):
                    sino = add_ct_noise(sino, rng, noise.get("I0", 0), noise.get("sigma", 0.0),
                                        noise.get("mu_scale", 1.0))
                fm.add(_case_name(path), {"source": str(path)}, sinogram=sino.astype(np.float32))
                ft.add(_case_name(path), target=vol)
            write_ct_measurements_header(fm, geom, manifest["name"], setting.name, noise, split)
            ft.finish({"modality": "ct", "dataset": manifest["name"], "setting": setting.name, "split": split})
    finally:
        if op is not None:
            op.close()
    return {"cases": len(files), "views": len(geom.angles)}
