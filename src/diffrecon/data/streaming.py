"""Training sets read one sample at a time from the preprocessed stores (the streaming loader).

The same samples, in the same order, as the in-memory builders of
:mod:`diffrecon.data.training_sets` — sample i here equals row i there — without holding the set:

* :class:`MagnitudeSlices` — score-MRI's set: slice s of a fastMRI-layout file's target
  (``reconstruction_rss``, else ``reconstruction_esc``), min-max normalised to [0, 1], (1, h, w);
* :class:`CTSlices` — the 2-D CT priors' set: axial slice s of a CT volume, clipped to [0, 1], (1, H, W);
* :class:`CTPatches` — DiffusionBlend's set: slices {j, j + k, j + 2k} of a volume, (3, H, W), with
  the spacing k as label; for each volume, for each spacing k, j = 0 … S − 2k − 1.

The index (file, slice) is built from the files' dataset shapes (headers only, never pixel
data); a read fetches only the chunks of the slices it needs (the stores are chunked one chunk
per slice). Files are opened lazily, at most :data:`MAX_OPEN` at a time per process, and never
shared across processes: each DataLoader worker opens its own handles.

``centered=True`` returns 2u − 1 instead of u (the VP priors' input range).

:meth:`StreamingSet.data_hash` fingerprints the set without holding it: a sha256 over the set's
definition and, per file in index order, its name, dataset key, shape, dtype and the sha256 of
the dataset's stored values (read a few slices at a time). It does not depend on where the
store lives nor on the loader, and is what checkpoint sidecars record as ``data_hash``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from diffrecon.data.fastmri import TARGET_KEYS, DataFormatError, check_finite, open_h5, reading

#: open file handles kept per process (least recently used closed first)
MAX_OPEN = 32
#: slices read at a time by :meth:`StreamingSet.data_hash`
HASH_BLOCK = 8


def _split_files(manifest: dict, split: str) -> list[str]:
    files = (manifest.get("splits") or {}).get(split) or []
    if not files:
        raise ValueError(f"dataset {manifest.get('name')}: split '{split}' has no volumes")
    return [str(f) for f in files]


class StreamingSet(Dataset):
    """Common part: files, per-file dataset key and shape, lazy per-process file handles, hash."""

    definition: dict = {}

    def __init__(self, files, keys, shapes, centered: bool = False):
        self.files, self.keys, self.shapes = list(files), list(keys), [tuple(s) for s in shapes]
        self.centered = bool(centered)
        self._handles: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    # ------------------------------------------------------------------ index
    # Sets of one sample per stored slice set ``_ends`` (cumulative slice counts per file).
    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(file, slice) of sample ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        f = int(np.searchsorted(self._ends, i, side="right"))
        return f, int(i - (self._ends[f - 1] if f else 0))

    # ------------------------------------------------------------------ handles
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    def _source(self, i: int):
        """The open file (h5py) or memory map (.npy) of file ``i`` in this process."""
        if self._pid != os.getpid():              # a forked worker: the parent's handles are not ours
            self._handles, self._pid = OrderedDict(), os.getpid()
        src = self._handles.get(i)
        if src is not None:
            self._handles.move_to_end(i)
            return src
        path = Path(self.files[i])
        with reading(path, "data file"):
            if path.suffix == ".npy":
                src = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                src = h5py.File(path, "r", rdcc_nbytes=0) if path.is_file() else open_h5(path)
        self._handles[i] = src
        while len(self._handles) > MAX_OPEN:
            _, old = self._handles.popitem(last=False)
            if isinstance(old, h5py.File):
                old.close()
        return src

    def _dataset(self, i: int):
        src = self._source(i)
        return src[self.keys[i]] if isinstance(src, h5py.File) else src

    def close(self) -> None:
        """Close this process's open files."""
        for src in self._handles.values():
            if isinstance(src, h5py.File):
                src.close()
        self._handles.clear()

    def _out(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return 2 * t - 1 if self.centered else t

    # ------------------------------------------------------------------ description
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        raise NotImplementedError

    def data_hash(self) -> str:
        """16 hex digits of a sha256 over the set's definition and its files' contents (see the module docstring)."""
        h = hashlib.sha256(json.dumps({**self.definition, "n": len(self)}, sort_keys=True).encode())
        for i, path in enumerate(self.files):
            data = self._dataset(i)
            digest = hashlib.sha256()
            with reading(path, "data file"):
                for s in range(0, self.shapes[i][0], HASH_BLOCK):
                    digest.update(np.ascontiguousarray(data[s:s + HASH_BLOCK]).tobytes())
            h.update(json.dumps([Path(path).name, self.keys[i], list(self.shapes[i]), str(data.dtype),
                                 digest.hexdigest()]).encode())
        self.close()
        return h.hexdigest()[:16]


class MagnitudeSlices(StreamingSet):
    """score-MRI's training set, sample i (1, h, w) float32 in [0, 1]: slice i of the split's
    targets in file order, min-max normalised ((u − min) / (max − min); a constant slice gives zeros)."""

    def __init__(self, manifest: dict, split: str = "train", centered: bool = False):
        files, keys, shapes = [], [], []
        for path in _split_files(manifest, split):
            p = Path(path)
            with reading(p, "fastMRI HDF5 file"), open_h5(p) as f:
                key = next((k for k in TARGET_KEYS if k in f), None)
                if key is None:
                    raise ValueError(f"{p}: no reconstruction_rss / reconstruction_esc target to train on")
                ds = f[key]
                if not isinstance(ds, h5py.Dataset):
                    raise DataFormatError(f"{p}: '{key}' is not a dataset")
                if np.issubdtype(ds.dtype, np.complexfloating) or not np.issubdtype(ds.dtype, np.number):
                    raise DataFormatError(f"{p}: '{key}' must be a real magnitude image, got {ds.dtype}")
                if ds.ndim != 3 or min(ds.shape) == 0:
                    raise DataFormatError(f"{p}: '{key}' must be (slices, h, w) with at least one slice, "
                                          f"got shape {ds.shape}")
                files.append(path), keys.append(key), shapes.append(ds.shape)
        grids = {s[1:] for s in shapes}
        if len(grids) > 1:
            raise DataFormatError(f"dataset {manifest.get('name')}: split '{split}' mixes target grids {sorted(grids)}; "
                                  "one training set holds one image size")
        super().__init__(files, keys, shapes, centered)
        self.definition = {"set": "magnitude_slices", "normalisation": "slice min-max", "split": split}
        self._ends = np.cumsum([s[0] for s in shapes])

    @property
    def sample_shape(self):
        return (1, *self.shapes[0][1:])

    def __getitem__(self, i: int) -> torch.Tensor:
        f, s = self.locate(int(i))
        path = self.files[f]
        with reading(path, "fastMRI HDF5 file"):
            img = np.asarray(self._dataset(f)[s]).astype(np.float32)
        check_finite(f"{path} slice {s}", self.keys[f], img)
        return self._out(normalise_slice(img)[None])


def normalise_slice(img: np.ndarray) -> np.ndarray:
    """(img − min) / (max − min) of a float32 slice (zeros for a constant slice), float32."""
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _ct_index(manifest: dict, split: str):
    from diffrecon.data.ct_volumes import ct_volume_shape

    files = _split_files(manifest, split)
    shapes = [ct_volume_shape(p) for p in files]
    grids = {s[1:] for s in shapes}
    if len(grids) > 1:
        raise DataFormatError(f"dataset {manifest.get('name')}: split '{split}' mixes slice sizes {sorted(grids)}; "
                              "one training set holds one image size")
    return files, ["volume"] * len(files), shapes


class _CTSet(StreamingSet):
    def _read(self, f: int, slices) -> np.ndarray:
        from diffrecon.data.ct_volumes import read_ct_slices

        src = self._source(f)
        return np.clip(read_ct_slices(src, self.files[f], slices, self.keys[f]), 0.0, 1.0).astype(np.float32)


class CTSlices(_CTSet):
    """The 2-D CT priors' set, sample i (1, H, W) float32 in [0, 1] (2u − 1 if ``centered``):
    axial slice i of the split's volumes in file order."""

    def __init__(self, manifest: dict, split: str = "train", centered: bool = False):
        super().__init__(*_ct_index(manifest, split), centered)
        self.definition = {"set": "ct_slices", "clip": [0, 1], "split": split}
        self._ends = np.cumsum([s[0] for s in self.shapes])

    @property
    def sample_shape(self):
        return (1, *self.shapes[0][1:])

    def __getitem__(self, i: int) -> torch.Tensor:
        f, s = self.locate(int(i))
        return self._out(self._read(f, [s]))


class CTPatches(_CTSet):
    """DiffusionBlend's set, sample i: (patch (3, H, W) float32 in [0, 1] (2u − 1 if ``centered``),
    spacing k); patches {j, j + k, j + 2k} for each volume, each k in ``spacings``, each j."""

    def __init__(self, manifest: dict, spacings=(1, 3), split: str = "train", centered: bool = False):
        super().__init__(*_ct_index(manifest, split), centered)
        self.spacings = tuple(int(k) for k in spacings)
        if not self.spacings or min(self.spacings) < 1:
            raise ValueError(f"spacings {list(spacings)} must be positive integers")
        self.definition = {"set": "ct_patches", "spacings": list(self.spacings), "clip": [0, 1], "split": split}
        files, js, ks = [], [], []
        for f, shape in enumerate(self.shapes):
            for k in self.spacings:
                n = max(0, shape[0] - 2 * k)
                files.append(np.full(n, f, np.int32)), js.append(np.arange(n, dtype=np.int32))
                ks.append(np.full(n, k, np.int32))
        self._file, self._j, self._k = (np.concatenate(a) for a in (files, js, ks))
        if not len(self._file):
            raise ValueError(f"dataset {manifest.get('name')}: volumes too short for spacings {self.spacings}")

    def __len__(self) -> int:
        return len(self._file)

    @property
    def sample_shape(self):
        return (3, *self.shapes[0][1:])

    @property
    def labels(self) -> torch.Tensor:
        """The spacing of every sample, (N,) int64."""
        return torch.from_numpy(self._k.astype(np.int64))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        f, j, k = int(self._file[i]), int(self._j[i]), int(self._k[i])
        return self._out(self._read(f, [j, j + k, j + 2 * k])), k
