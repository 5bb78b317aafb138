"""Datasets: generate the embedded demo or index user files, and write a manifest.

Every dataset named in the config becomes ``manifest.json``::

    {"name": ..., "modality": "mri" | "ct", "source": "demo" | "files",
     "splits": {"train": [paths], "val": [...], "test": [...], "test_ood": [...]},
     "description": ...}

Downstream steps read only the manifest, so the demo and real data (fastMRI
h5 files, AAPM/LIDC volumes converted to h5/npy) follow the same DAG. CT from a
DICOM tree or NIfTI files (``source: dicom`` / ``nifti``) is converted into the
preprocessed store by :mod:`diffrecon.data.ct_store`; ``source: fastmri`` preprocesses raw
fastMRI files into the store (:mod:`diffrecon.data.fastmri_raw`) and adds ``prospective``. Both
add a ``preprocessing`` record (sources, crop or window, kept slices, normalisation, versions).

Demo data (deterministic for a seed; see ``docs/demo_data.md``):

* MRI: :func:`~diffrecon.data.phantoms.head_volume` magnitudes with a smooth
  phase, multiplied by sigpy birdcage coil maps and Fourier transformed, stored
  as multi-coil fastMRI files (``kspace`` (S, C, H, W), ``reconstruction_rss``).
  The ``test_ood`` split uses a shifted phantom family.
* CT: :func:`~diffrecon.data.thorax.thorax_volume` chest volumes in [0, 1], fine along z; the
  test split from another random family than training (``families`` overrides the family of
  a split, e.g. ``{test: heldout}``).
"""

from __future__ import annotations

import glob
import json
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from diffrecon.data.ct_volumes import write_ct_volume
from diffrecon.data.fastmri import write_volume
from diffrecon.data.phantoms import head_volume, smooth_phase
from diffrecon.data.thorax import thorax_volume

MRI_DESCRIPTION = (
    "Synthetic head-like phantoms (random ellipsoids with grey/white matter, ventricles, lesions, bias and "
    "texture), smooth phase, sigpy birdcage coil maps, noise-free k-space in the fastMRI multi-coil layout."
)
CT_DESCRIPTION = ("Synthetic chest CT ({family} family, diffrecon.data.thorax): body with fat and muscle, lungs with "
                  "texture, vessel trees and nodules, heart, aorta, airways, spine, ribs, liver; smooth intensity "
                  "variation and fine texture; 3 mm slices; values in [0, 1].")
#: split → thorax family of the CT demo (a dataset's ``families`` overrides it)
CT_FAMILIES = {"train": "train", "val": "train", "test": "test", "test_ood": "heldout"}


def dataset_seed(seed: int, name: str, split: str) -> int:
    """A stable per-(dataset, split) seed derived from the global seed (independent of Python's hash salt)."""
    return int(seed) * 1_000_003 + zlib.crc32(f"{name}/{split}".encode())


ANATOMY_DESCRIPTION = ("real brain anatomy bundled with nibabel (MIT): EPI example4d (train/val augmented, "
                       "test = held-out superior slices), T1 anatomical (test_ood); synthetic phase, birdcage "
                       "coils, fastMRI layout (diffrecon.data.anatomy)")


def _mri_demo(name: str, cfg: dict, outdir: Path, seed: int, anatomy: bool = False) -> dict:
    """Phantom volumes (``source: demo``) or real-anatomy volumes (``source: anatomy``,
    :mod:`diffrecon.data.anatomy`), through one acquisition model: smooth random phase,
    birdcage coil maps, noise-free k-space, fastMRI multi-coil layout."""
    import torch

    from diffrecon.physics.fft import fft2c
    from diffrecon.physics.sensitivity import birdcage_maps

    size, n_coils, n_slices = cfg["size"], cfg["coils"], cfg["slices"]
    maps = birdcage_maps(n_coils, (size, size))                      # (C, H, W), RSS = 1
    splits = {}
    for split, count in cfg["volumes"].items():
        rng = np.random.default_rng(dataset_seed(seed, name, split))
        paths = []
        for i in tqdm(range(count), desc=f"{name}/{split}", leave=False):
            if anatomy:
                from diffrecon.data.anatomy import anatomy_volume

                mag, acquisition = anatomy_volume(rng, split, i, count, n_slices, size)
            else:
                mag, acquisition = head_volume(rng, n_slices, size, ood=(split == "test_ood")), "DEMO_PHANTOM"
            img = mag * np.exp(1j * smooth_phase(rng, mag.shape))      # (S, H, W) complex
            coils = img[:, None] * maps[None]                             # (S, C, H, W)
            kspace = fft2c(torch.from_numpy(coils.astype(np.complex64))).numpy()
            rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
            path = outdir / split / f"{name}_{split}_{i:03d}.h5"
            write_volume(path, kspace, rss, {"acquisition": acquisition, "patient_id": f"{split}{i:03d}"})
            paths.append(str(path))
        splits[split] = paths
    return splits


def _ct_demo(name: str, cfg: dict, outdir: Path, seed: int) -> dict:
    splits = {}
    for split, count in cfg["volumes"].items():
        rng = np.random.default_rng(dataset_seed(seed, name, split))
        paths = []
        for i in tqdm(range(count), desc=f"{name}/{split}", leave=False):
            family = {**CT_FAMILIES, **cfg.get("families", {})}[split]
            vol = thorax_volume(rng, cfg["slices"], cfg["size"], family)
            path = outdir / split / f"{name}_{split}_{i:03d}.h5"
            write_ct_volume(path, vol, description=CT_DESCRIPTION.format(family=family))
            paths.append(str(path))
        splits[split] = paths
    return splits


def image_grid(path, modality: str) -> tuple[int, int] | None:
    """The (H, W) image grid of one indexed file, read from its header only (no data): the
    fastMRI target's last two axes (None for a file without target: prospective k-space grids
    vary), or a CT volume's slice size."""
    import h5py

    from diffrecon.data.fastmri import TARGET_KEYS, DataFormatError, open_h5, reading

    path = Path(path)
    with reading(path, "data file"):
        if path.suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        else:
            with open_h5(path) as f:
                keys = (*TARGET_KEYS, "kspace") if modality == "mri" else ("volume",)
                if modality == "mri" and not any(k in f for k in TARGET_KEYS) and "kspace" in f:
                    return None
                key = next((k for k in keys if k in f and isinstance(f[k], h5py.Dataset)), None)
                if key is None:
                    raise DataFormatError(f"{path}: none of the datasets {', '.join(keys)} (keys: {sorted(f.keys())})")
                shape = f[key].shape
    if len(shape) < 2:
        raise DataFormatError(f"{path}: expected images, got an array of shape {shape}")
    return tuple(int(n) for n in shape[-2:])


def _indexed_files(cfg: dict) -> dict:
    """Expand the glob pattern of each split; an empty match is an error naming the split.

    Within a split no two files may share a stem (it names the case); all files of the dataset
    must have one image grid (a one-line error names two files that differ).
    """
    from diffrecon.data.fastmri import DataFormatError

    splits = {}
    first = None
    for split, pattern in cfg["files"].items():
        matches = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matches:
            raise FileNotFoundError(f"datasets: split '{split}' pattern '{pattern}' matches no file")
        stems = {}
        for path in matches:
            stem = Path(path).stem
            if stem in stems:
                raise DataFormatError(f"{path}: same case name '{stem}' as {stems[stem]} in split '{split}': "
                                      "rename one of them")
            stems[stem] = path
            grid = image_grid(path, cfg["modality"])
            if grid is None:
                continue
            if first is None:
                first = (path, grid)
            elif grid != first[1]:
                raise DataFormatError(f"{path}: image grid {grid[0]} x {grid[1]} differs from {first[0]}'s "
                                      f"{first[1][0]} x {first[1][1]}: one dataset holds one image size")
        splits[split] = matches
    return splits


def prepare_dataset(name: str, cfg: dict, outdir, seed: int = 0) -> dict:
    """Generate (demo), convert (dicom, nifti) or index (files) dataset ``name``; write ``outdir/manifest.json``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    modality, source = cfg["modality"], cfg["source"]
    extra = {}
    if source == "demo":
        splits = (_mri_demo if modality == "mri" else _ct_demo)(name, cfg, outdir, seed)
        description = MRI_DESCRIPTION if modality == "mri" else CT_DESCRIPTION
    elif source == "anatomy":
        splits = _mri_demo(name, cfg, outdir, seed, anatomy=True)
        description = ANATOMY_DESCRIPTION
    elif source in ("dicom", "nifti"):
        from diffrecon.data.ct_store import build_ct_store

        splits, extra["preprocessing"] = build_ct_store(name, cfg, outdir)
        description = cfg.get("description", f"{source} CT")
    elif source == "fastmri":
        from diffrecon.data.fastmri_raw import prepare_fastmri

        splits, record = prepare_fastmri(name, cfg, outdir)
        description = cfg.get("description", "fastMRI raw files, preprocessed")
        extra = {"prospective": bool(cfg.get("prospective", False)), "preprocessing": record}
    else:
        splits = _indexed_files(cfg)
        description = cfg.get("description", "user files")
    manifest = {"name": name, "modality": modality, "source": source, "seed": seed,
                "splits": splits, "description": description, **extra}
    tmp = outdir / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(outdir / "manifest.json")
    return manifest


def load_manifest(path) -> dict:
    return json.loads(Path(path).read_text())
