"""Checkpoints: safetensors weights + a JSON sidecar.

``<stem>.safetensors`` holds flat tensors: ``model.*`` (raw weights), ``ema.*`` (EMA
weights) and ``optim.<i>.<state>`` (Adam moments per parameter index); minibatches and noise
are drawn from per-step seeds, so these suffice for a killed run to resume exactly. ``<stem>.json`` records the step, the
training config and its hash, the training-data hash, the git commit, library versions and
the loss history. Shipped weights carry only ``model.*``/``ema.*`` and are verified by sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from diffrecon.io import sha256_file, sidecar_field, sidecar_model




def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit(cwd=None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=cwd or Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict:
    import numpy

    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:                                    # the installed version, without importing diffusers (seconds)
        versions["diffusers"] = version("diffusers")
    except PackageNotFoundError:
        pass
    return versions


def save_checkpoint(stem, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically (temporary files, then rename)."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tmp_w, tmp_j = Path(f"{weights}.part"), Path(f"{sidecar}.part")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp_w))
    meta = {**meta, "sha256": sha256_file(tmp_w)}
    tmp_j.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp_w, weights)
    os.replace(tmp_j, sidecar)
    return weights


def read_sidecar(path) -> dict:
    """The JSON object of a sidecar file; :class:`CheckpointError` naming it if it is not one."""
    from diffrecon.errors import CheckpointError, one_line

    path = Path(path)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: sidecar is not valid JSON ({one_line(exc, 80)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: sidecar must hold a JSON object, got {type(meta).__name__}")
    return meta


def recorded_sha256(weights) -> str | None:
    """The checksum in ``<stem>.sha256`` next to ``weights`` (None without that file)."""
    from diffrecon.errors import CheckpointError

    sums = Path(weights).with_suffix(".sha256")
    if not sums.is_file():
        return None
    fields = sums.read_text(errors="replace").split()
    if not fields or len(fields[0]) != 64:
        raise CheckpointError(f"{sums}: not a sha256 checksum file")
    return fields[0].lower()


def load_checkpoint(stem, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read ``stem.safetensors`` (+ ``stem.json`` if present).

    The weights are verified against every checksum present: ``expected_sha256``, the sidecar's
    ``sha256`` and a ``stem.sha256`` file; a mismatch, an unreadable sidecar or weights file is a
    one-line :class:`~diffrecon.errors.CheckpointError` naming the file.
    """
    from safetensors.torch import load_file

    from diffrecon.errors import CheckpointError, one_line

    stem = Path(stem)
    weights = stem if stem.suffix == ".safetensors" else stem.with_suffix(".safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: checkpoint not found")
    sidecar = weights.with_suffix(".json")
    meta = read_sidecar(sidecar) if sidecar.is_file() else {}
    sums = {"given": expected_sha256, sidecar.name: meta.get("sha256"),
            weights.with_suffix(".sha256").name: recorded_sha256(weights)}
    digest = sha256_file(weights) if any(sums.values()) else None   # hash the file once
    for source, expected in sums.items():
        if not expected:
            continue
        if not isinstance(expected, str) or digest != expected.lower():
            where = "the expected" if source == "given" else f"the one in {source}"
            raise CheckpointError(f"{weights}: sha256 {digest[:12]}… does not match {where} ({str(expected)[:12]}…): "
                                  "a damaged or replaced file (or an interrupted write); re-fetch or retrain it")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:    # safetensors raises its own error type (or OSError) on a damaged file
        raise CheckpointError(f"{weights}: not a readable safetensors file "
                              f"({exc.__class__.__name__}: {one_line(exc, 100)})") from None
    return tensors, meta


def publish_checkpoint(src_stem, dst_stem) -> Path:
    """Copy a finished checkpoint (``.safetensors`` + ``.json``) to ``dst_stem`` atomically.

    Training rules write their resumable checkpoints next to, not at, the declared output: a
    workflow manager deletes the outputs of an interrupted job before running it again, which
    would throw the checkpoint (and the resume) away.
    """
    src, dst = Path(src_stem), Path(dst_stem)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        tmp = Path(f"{dst.with_suffix(suffix)}.part")
        shutil.copyfile(src.with_suffix(suffix), tmp)
        os.replace(tmp, dst.with_suffix(suffix))
    return dst.with_suffix(".safetensors")


def prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict) -> dict:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def verify_sha256_file(weights, remedy: str = "re-fetch the file") -> str:
    """Check ``weights`` against the ``<stem>.sha256`` file next to it (``<hex>  <name>``, as
    :func:`export_weights` writes it); return the digest or raise a one-line error naming the file."""
    from diffrecon.errors import CheckpointError

    weights = Path(weights)
    sums = weights.with_suffix(".sha256")
    fields = sums.read_text(errors="replace").split()
    if not fields:
        raise CheckpointError(f"{sums}: checksum file is empty")
    expected = fields[0].lower()
    actual = sha256_file(weights)
    if actual != expected:
        raise CheckpointError(f"{weights}: sha256 {actual[:12]}… does not match {sums.name} ({expected[:12]}…); "
                              f"{remedy}")
    return actual


def install_weights(shipped, out_stem, method: str | None = None, expect: dict | None = None) -> Path:
    """Verify shipped weights against their ``.sha256`` file and copy weights + sidecar to ``out_stem``.

    A missing or mismatching checksum stops with a one-line error naming the file, and points
    at the alternative (``--config retrain=true`` trains the prior with the workflow's own rule).
    The sidecar's own ``sha256`` (if any) must agree; the installed sidecar always carries it.
    With ``method`` (``score_mri``, ``ct_patch``, ``ct_slice``, ``ct_score``), weights of another
    prior (by the sidecar's ``method``; e.g. an imported NCSN++ given as the DDS prior) are a
    one-line error too (a supervised baseline's sidecar names it as ``kind``: ``fbp_unet``).
    ``expect`` ({sidecar field: value}, e.g. the dataset and the mask family or CT setting the
    weights are installed for): a sidecar that records another value is a one-line error.
    """
    from diffrecon.errors import CheckpointError

    shipped = Path(shipped)
    sums = shipped.with_suffix(".sha256")
    if not shipped.is_file():
        raise FileNotFoundError(f"{shipped}: shipped weights not found (train them with --config retrain=true)")
    if not sums.is_file():
        raise FileNotFoundError(f"{sums}: checksum file not found next to the weights (shipped weights "
                                "must carry their sha256; export them with diffrecon export-weights)")
    actual = verify_sha256_file(shipped, "re-fetch the file or retrain with --config retrain=true")
    sidecar = shipped.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"{sidecar}: sidecar not found next to the weights")
    meta = read_sidecar(sidecar)
    found = sidecar_model(meta)
    if method is not None and found != method:
        layout = f", imported layout {meta['layout']}" if meta.get("layout") else ""
        raise CheckpointError(f"{shipped}: weights of a {found!r} prior{layout}, not of the {method!r} prior "
                              "they are given for")
    for field, value in (expect or {}).items():
        if (recorded := sidecar_field(meta, field)) != value:
            raise CheckpointError(f"{sidecar}: trained for {field} {recorded!r}, installed for {value!r}; "
                                  "ship weights trained for it or retrain with --config retrain=true")
    if meta.get("sha256") and meta["sha256"] != actual:
        raise CheckpointError(f"{sidecar}: its sha256 ({str(meta['sha256'])[:12]}…) differs from the weights' "
                              f"({actual[:12]}…); re-fetch both files")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    tmp_j, tmp_w = Path(f"{out_stem}.json.part"), Path(f"{out_stem}.safetensors.part")
    try:
        if meta.get("sha256"):
            shutil.copyfile(sidecar, tmp_j)
        else:
            tmp_j.write_text(json.dumps({**meta, "sha256": actual}, indent=2, default=str))
        shutil.copyfile(shipped, tmp_w)
        os.replace(tmp_j, out_stem.with_suffix(".json"))
        os.replace(tmp_w, out_stem.with_suffix(".safetensors"))
    finally:
        tmp_j.unlink(missing_ok=True)
        tmp_w.unlink(missing_ok=True)
    return out_stem.with_suffix(".safetensors")


def export_weights(checkpoint_stem, out_stem) -> Path:
    """Write shippable weights from a training checkpoint: the EMA weights only (no optimizer
    state), its sidecar (plus the source checkpoint's sha256) and a ``.sha256`` file."""
    tensors, meta = load_checkpoint(checkpoint_stem)
    ema = {k: v for k, v in tensors.items() if k.startswith("ema.")}
    if not ema:
        raise ValueError(f"{checkpoint_stem}: checkpoint holds no EMA weights")
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    meta["exported_from"] = {"checkpoint": str(Path(checkpoint_stem).with_suffix(".safetensors")),
                             "sha256": sha256_file(Path(checkpoint_stem).with_suffix(".safetensors"))}
    weights = save_checkpoint(out_stem, ema, meta)
    Path(out_stem).with_suffix(".sha256").write_text(f"{sha256_file(weights)}  {weights.name}\n")
    return weights
