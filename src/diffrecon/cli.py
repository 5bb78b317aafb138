"""Command line: ``diffrecon reconstruct`` (your own file), ``diffrecon check-config``,
``diffrecon download`` (fastMRI archives from your own links) and ``diffrecon train`` (one prior
of a pipeline config; launchable under ``torchrun`` for data-parallel training).

Examples::

    # MRI: retrospective undersampling of a fully sampled fastMRI-layout file
    diffrecon reconstruct file1000033.h5 --modality mri --method tv \\
        --mask gaussian1d --acceleration 4 --acs-fraction 0.08 --coil-mode multicoil \\
        --output recon.h5 --preview recon.png

    # MRI: a prospective fastMRI test/challenge file (undersampled k-space, its own 1-D `mask`,
    # no target): reconstructed with its own mask (--mask-file overrides it); no metrics
    diffrecon reconstruct file_brain_AXT2_200_2000019.h5 --modality mri --method zero_filled \
        --output recon.h5 --preview recon.png

    # MRI: retrospective undersampling with your own mask ((W,) columns or (H, W); .npy or .h5 `mask`)
    diffrecon reconstruct file1000033.h5 --modality mri --method tv --mask-file mask.npy -o recon.h5

    # fastMRI archives from the links of the data agreement (one URL a line; never commit that file)
    diffrecon download --urls-file ~/fastmri_urls.txt --dest /data/fastmri --only knee_multicoil_val.tar.xz

    # CT: a volume (h5 `volume` or .npy, (slices, H, W) in [0, 1]) projected at 8 views, then FBP
    diffrecon reconstruct volume.h5 --modality ct --method fbp --setting sv8 --output recon.h5

    # CT: your own sinogram file (`sinogram` (slices, views, det), `angles` in radians)
    diffrecon reconstruct sino.h5 --modality ct --method fbp --sinogram --output recon.h5

    # MRI: a long volume as separate jobs, one block of slices each (K/N or START:STOP), merged
    # into the file one job writes; --checkpoint-slices stores parts so a killed job resumes
    diffrecon reconstruct file1000033.h5 --modality mri --method score --model prior.safetensors \
        --slices 1/4 --checkpoint-slices 4 --output block1.h5       # ... and 2/4, 3/4, 4/4
    diffrecon merge-blocks recon.h5 block1.h5 block2.h5 block3.h5 block4.h5

    # a workflow cell run as case groups (mri.case_groups / ct.case_groups: one job per group of
    # its test volumes): the groups' files into the cell's recon.h5 (what rule merge_cases does)
    diffrecon merge-cases results/ct/lidc/sv8/dds/recon.h5 results/ct/lidc/sv8/dds/cases/*-of-4.h5

    # train the DiffusionBlend prior of a config on 4 GPUs of one node (resumable checkpoint at --out)
    torchrun --standalone --nproc_per_node 4 -m diffrecon.cli train ct_patch --config config/paper/lidc.yaml

Errors (unreadable file, wrong layout, bad option) print one line naming the file or option
and exit with status 2; outputs are written atomically (nothing half-written).
"""

from __future__ import annotations

import argparse
import io as _io
import json
import os
import sys
from pathlib import Path

import numpy as np

from diffrecon import __version__, methods
from diffrecon.errors import one_line
from diffrecon.physics.masks import MASK_KINDS

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``diffrecon: error: ...``), status 2, like every other error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"diffrecon: error: {message.splitlines()[0]} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="diffrecon", description="Diffusion-prior MRI / CT reconstruction.")
    p.add_argument("--version", action="version", version=f"diffrecon {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("reconstruct", help="reconstruct one file with one method and setting",
                       description="Reconstruct one file. MRI input: a fully sampled fastMRI-layout .h5 "
                                   "(undersampled here, retrospectively). CT input: a volume (.h5 with "
                                   "'volume', or .npy; projected here) or, with --sinogram, measured data.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("input", type=Path, help="input file (.h5 or .npy)")
    r.add_argument("--modality", choices=["mri", "ct"], required=True)
    r.add_argument("--method", required=True, metavar="METHOD",
                   help="mri: " + " | ".join(methods.names("mri")) + ";  ct: " + " | ".join(methods.names("ct")))
    r.add_argument("--model", type=Path, help="checkpoint (.safetensors + .json sidecar) of a learned method, "
                                              "e.g. weights/score_mri_demo_brain.safetensors")
    for key, want in sorted({k: v for m in methods.METHODS.values() for k, v in m.extra_models.items()}.items()):
        users = ", ".join(m.name for m in methods.METHODS.values() if key in m.extra_models)
        r.add_argument("--" + key.replace("_", "-"), type=Path, dest=key,
                       help=f"{users}: checkpoint of the second prior ({methods.MODELS[want]})")
    r.add_argument("--output", "-o", type=Path, required=True, help="output .h5 ('reconstruction' (S, H, W))")
    r.add_argument("--preview", type=Path, help="also write a PNG preview of the middle slice")
    r.add_argument("--seed", type=int, default=0, help="seed of the mask / noise / sampler")
    r.add_argument("--precision", default="auto", choices=["float32", "bfloat16", "auto"],
                   help="diffusion methods: network arithmetic (auto: bfloat16 where the device has it natively)")
    mri = r.add_argument_group("MRI")
    mri.add_argument("--mask", default="gaussian1d", help=" | ".join(MASK_KINDS))
    mri.add_argument("--mask-file", type=Path,
                     help="use this mask (.npy, or .h5 with 'mask'; (W,) columns or (H, W)) instead of --mask; "
                          "prospective files (own 'mask', no target) use their own mask unless this is given")
    mri.add_argument("--acceleration", type=float, default=4.0, help="nominal acceleration R")
    mri.add_argument("--acs-fraction", type=float, default=0.08, help="fully sampled centre fraction")
    mri.add_argument("--coil-mode", default="auto",
                     help="auto (multicoil for a multi-coil file, singlecoil for a single-coil one) | magnitude | "
                          "singlecoil | multicoil")
    mri.add_argument("--central-slices", type=int, help="keep only this many central slices")
    mri.add_argument("--lam", type=float, default=0.01, help="TV weight")
    mri.add_argument("--iterations", type=int, default=300, help="TV iterations")
    mri.add_argument("--steps", type=int, default=500, help="score: predictor-corrector steps N")
    mri.add_argument("--samples", type=int, default=1, help="score: posterior samples (mean and std are written)")
    mri.add_argument("--snr", type=float, default=0.16, help="score: Langevin signal-to-noise ratio")
    mri.add_argument("--slices", metavar="START:STOP|K/N",
                     help="reconstruct one block of the volume's slices (merge the blocks with merge-blocks); "
                          "no metrics")
    mri.add_argument("--checkpoint-slices", type=int, metavar="N",
                     help="store every finished part of N slices in OUTPUT.partial/; a rerun resumes from them")
    ct = r.add_argument_group("CT")
    ct.add_argument("--setting", default="sv8", help="sv<views> or la<degrees> (volume input)")
    ct.add_argument("--projector", default="linear", choices=["line", "strip", "linear"])
    ct.add_argument("--sinogram", action="store_true", help="input is a sinogram file, not a volume")
    ct.add_argument("--threads", type=int, default=None, help="CPU threads for ASTRA")
    ct.add_argument("--ddim-steps", type=int, help="CT diffusion methods: reverse steps (default: the method's)")
    r.add_argument("--memory-budget-gb", type=float, metavar="GIB",
                   help="diffusion methods: GiB of network activations per call (sets the network batch; "
                        "same result to float rounding)")

    c = sub.add_parser("check-config", help="validate a pipeline config file")
    c.add_argument("config", type=Path)
    mb = sub.add_parser("merge-blocks", help="assemble reconstruct --slices outputs into one volume's file")
    mb.add_argument("output", type=Path, help="output .h5 (the file one reconstruct run writes)")
    mb.add_argument("blocks", type=Path, nargs="+", help="outputs of reconstruct --slices covering the volume")

    mc = sub.add_parser("merge-cases", help="assemble a workflow cell's case group files into its recon.h5",
                        description="Concatenate the files of a cell's case groups (rule reconstruct_cases: "
                                    ".../<method>/cases/K-of-N.h5) into the recon.h5 one job writes; refuses "
                                    "missing or duplicated groups and groups of other runs.")
    mc.add_argument("output", type=Path, help="output recon.h5")
    mc.add_argument("groups", type=Path, nargs="+", help="the N case group files (any order)")

    d = sub.add_parser("download", help="download and extract fastMRI archives from your own links (resumable)",
                       description="Download the archives listed in a URL file (one URL a line, optionally "
                                   "followed by size=<bytes> and sha256=<hex>), resuming partial downloads, "
                                   "checking size / sha256 when given, and extract them into --dest. Only file "
                                   "names are printed, never the links.")
    d.add_argument("--urls-file", type=Path, help="URL list (default: $FASTMRI_URLS_FILE)")
    d.add_argument("--dest", type=Path, required=True, help="raw data folder (archives are extracted here)")
    d.add_argument("--only", nargs="+", metavar="NAME", help="archive file names to fetch (default: all)")
    d.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")

    t = sub.add_parser("train", help="train one prior of a pipeline config (under torchrun: data-parallel)",
                       description="Train one learned prior of a pipeline config into a resumable checkpoint "
                                   "(the workflow's training rules run this; launch it with `torchrun "
                                   "--standalone --nproc_per_node N -m diffrecon.cli train ...` for N processes). "
                                   "The dataset must be prepared (its manifest.json exists).")
    t.add_argument("prior", choices=list(TRAINABLE), help="which prior: " + ", ".join(TRAINABLE))
    t.add_argument("--config", type=Path, required=True, help="pipeline config (YAML) holding the prior's block")
    t.add_argument("--manifest", type=Path,
                   help="dataset manifest (default: <results_dir>/data/<mri|ct>/<dataset>/manifest.json)")
    t.add_argument("--out", type=Path, help="checkpoint stem (default: <results_dir>/models/<prior>/<dataset>/checkpoint)")
    t.add_argument("--device", help="auto | cpu | cuda (default: the block's device, else auto)")
    t.add_argument("--threads", type=int, help="CPU threads per process")

    e = sub.add_parser("export-weights", help="write shippable EMA weights (+ sidecar, .sha256) from a checkpoint")
    e.add_argument("checkpoint", type=Path, help="training checkpoint (.safetensors with its .json sidecar)")
    e.add_argument("output", type=Path, help="output .safetensors path")

    i = sub.add_parser("import-weights", help="convert a published diffusion checkpoint to project weights",
                       description="Read a published checkpoint (torch.load with weights_only=True: a file that "
                                   "needs arbitrary objects unpickled is refused), check every tensor name and "
                                   "shape against the layout's network, and write STEM.safetensors, STEM.json "
                                   "(sidecar) and STEM.sha256, usable as weights: (or init_from:) in a config. "
                                   "docs/published_checkpoints.md lists the layouts.")
    i.add_argument("file", type=Path, nargs="?", help="the published checkpoint (.pt / .ckpt / .pth)")
    i.add_argument("--layout", help="layout of the file (see --list-layouts)")
    i.add_argument("--out", type=Path, help="output stem (STEM.safetensors, STEM.json, STEM.sha256)")
    i.add_argument("--list-layouts", action="store_true", help="list the known layouts and exit")
    return p


#: prior name -> (config block path, modality)
TRAINABLE = {"score_mri": (("score_mri",), "mri"), "ct_patch": (("ct_priors", "patch"), "ct"),
             "ct_slice": (("ct_priors", "slice"), "ct"), "ct_score": (("ct_priors", "score"), "ct"),
             "ct_slice_perp": (("ct_priors", "slice_perp"), "ct")}


def _train(args) -> dict | None:
    """``diffrecon train``: one prior of a config; returns the sidecar (rank 0) or None (other ranks)."""
    import logging

    from diffrecon.config import load_config
    from diffrecon.data.datasets import load_manifest
    from diffrecon.models import distributed

    env = distributed.environment()
    logging.basicConfig(level=logging.INFO if env.is_main else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s [rank {env.rank}] %(name)s: %(message)s")
    config = load_config(args.config)
    path, modality = TRAINABLE[args.prior]
    block = config
    for key in path:
        block = (block or {}).get(key)
    if not block:
        raise UsageError(f"{args.config}: no {'.'.join(path)} block to train")
    results = Path(config.get("results_dir", "results"))
    manifest_path = args.manifest or results / "data" / modality / block["dataset"] / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: dataset manifest not found (prepare the dataset first, "
                                f"e.g. snakemake {manifest_path})")
    out = args.out or results / "models" / args.prior / block["dataset"] / "checkpoint"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    gpus = int(block.get("train", {}).get("gpus", 1))
    if gpus != env.world and env.is_main:
        logging.getLogger("diffrecon.training").warning(
            "train.gpus is %d, running %d process(es): launch with torchrun --nproc_per_node %d", gpus, env.world, gpus)
    device = args.device or block.get("device", "auto")
    manifest = load_manifest(manifest_path)
    try:
        if args.prior == "score_mri":
            from diffrecon.models.recipes import train_score_mri

            meta = train_score_mri(manifest, block, out, device=device)
        else:
            from diffrecon.models.recipes import train_ct_prior

            meta = train_ct_prior(manifest, block, out, args.prior.removeprefix("ct_"), device=device)
    finally:
        distributed.teardown()
    if not env.is_main:
        return None
    return {"checkpoint": str(Path(out).with_suffix(".safetensors")), "step": meta["step"],
            "world_size": meta.get("world_size"), "data_hash": meta["data_hash"],
            "loss": meta["loss_history"][-1][1] if meta.get("loss_history") else None}


class UsageError(ValueError):
    """A wrong input: one line on stderr naming the file or option, exit status 2."""


# option -> (flag, schema fragment, property of it): the config's constraint on the same quantity,
# so the command line and the pipeline accept the same values (diffrecon.config.check_value)
OPTION_SCHEMA = {
    "seed": ("--seed", "properties/seed", None),
    "threads": ("--threads", "properties/threads", None),
    "mask": ("--mask", "properties/mri/properties/masks/items", None),
    "acceleration": ("--acceleration", "properties/mri/properties/accelerations/items", "factor"),
    "acs_fraction": ("--acs-fraction", "properties/mri/properties/accelerations/items", "acs_fraction"),
    "central_slices": ("--central-slices", "properties/mri/properties/central_slices", None),
    "lam": ("--lam", "properties/mri/properties/tv", "lam"),
    "iterations": ("--iterations", "properties/mri/properties/tv", "iterations"),
    "steps": ("--steps", "$defs/score_sampler", "n_steps"),
    "samples": ("--samples", "$defs/score_sampler", "n_samples"),
    "snr": ("--snr", "$defs/score_sampler", "snr"),
    "ddim_steps": ("--ddim-steps", "$defs/ct_sampler", "n_steps"),
    "setting": ("--setting", "properties/ct/properties/settings/items", None),
}
COIL_MODES = ("auto", "magnitude", "singlecoil", "multicoil")
MRI_EXPECTED = "a fastMRI-layout .h5 with 'kspace' (slices, [coils,] H, W) complex"


def check_options(args) -> None:
    """Every option against the config schema's constraint on the same quantity."""
    from diffrecon.config import check_value, load_schema

    schema = load_schema()
    for attr, (flag, pointer, key) in OPTION_SCHEMA.items():
        value = getattr(args, attr)
        if value is None and attr != "central_slices":
            continue
        if attr == "setting" and (args.modality != "ct" or args.sinogram):
            continue
        problem = check_value(pointer, value, key, schema)
        if problem:
            where = pointer.replace("properties/", "").replace("$defs/", "").replace("/", ".")
            raise UsageError(f"{flag} {value}: {problem} (the constraint of config {where}"
                             f"{'.' + key if key else ''})")
    if args.coil_mode not in COIL_MODES:
        raise UsageError(f"--coil-mode {args.coil_mode}: not one of {', '.join(COIL_MODES)}")
    from diffrecon.stages.reconstruct import parse_slices

    for flag, value in (("--slices", args.slices), ("--checkpoint-slices", args.checkpoint_slices)):
        if value is not None and args.modality != "mri":
            raise UsageError(f"{flag} {value}: MRI only (CT methods couple the slices of a volume)")
    if args.slices is not None:
        try:
            parse_slices(args.slices)
        except ValueError as exc:
            raise UsageError(f"--slices {exc}") from None
    if args.checkpoint_slices is not None and args.checkpoint_slices < 1:
        raise UsageError(f"--checkpoint-slices {args.checkpoint_slices}: must be >= 1")
    budget = args.memory_budget_gb
    if budget is not None and (not budget > 0 or not np.isfinite(budget)):
        raise UsageError(f"--memory-budget-gb {budget}: must be a positive number of GiB")
    if budget is not None and methods.get(args.method).kind != "diffusion":
        raise UsageError(f"--memory-budget-gb: only for diffusion methods, not {args.method}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_writable(path: Path, flag: str) -> None:
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {parent} is not writable")


def check_paths(args) -> None:
    """Input readable, outputs writable and distinct from the input (also through links)."""
    src = args.input
    if not src.exists():
        raise UsageError(f"{src}: file not found")
    if not src.is_file():
        raise UsageError(f"{src}: not a file")
    if not os.access(src, os.R_OK):
        raise UsageError(f"{src}: not readable (permission denied)")
    if src.stat().st_size == 0:
        raise UsageError(f"{src}: empty file")
    _check_writable(args.output, "--output")
    if _same_file(args.output, src):
        raise UsageError(f"--output {args.output}: is the input file {src} (it would be overwritten)")
    if args.preview is not None:
        _check_writable(args.preview, "--preview")
        if args.preview.suffix.lower() != ".png":
            raise UsageError(f"--preview {args.preview}: must be a .png file")
        for other, what in ((src, "the input file"), (args.output, "the --output file")):
            if _same_file(args.preview, other):
                raise UsageError(f"--preview {args.preview}: is {what}")
    if args.mask_file is not None:
        if args.modality != "mri":
            raise UsageError(f"--mask-file {args.mask_file}: only for --modality mri")
        if not args.mask_file.is_file():
            raise UsageError(f"--mask-file {args.mask_file}: file not found")


def check_mri_input(args) -> str:
    """An MRI input must be a fastMRI-layout HDF5 file; returns its coil mode for ``auto``."""
    import h5py

    src = args.input
    if not h5py.is_hdf5(src):
        raise UsageError(f"{src}: not an HDF5 file; MRI input is {MRI_EXPECTED}")
    with h5py.File(src, "r") as f:
        if "kspace" not in f or not isinstance(f["kspace"], h5py.Dataset):
            raise UsageError(f"{src}: no 'kspace' dataset (keys: {sorted(f.keys())}); MRI input is {MRI_EXPECTED}")
        ndim = f["kspace"].ndim
    if ndim not in (3, 4):
        raise UsageError(f"{src}: 'kspace' has {ndim} dimensions; MRI input is {MRI_EXPECTED}")
    multicoil = ndim == 4
    if args.coil_mode == "auto":
        return "multicoil" if multicoil else "singlecoil"
    if args.coil_mode == "multicoil" and not multicoil:
        raise UsageError(f"--coil-mode multicoil: {src} is a single-coil file (kspace (slices, H, W)); "
                         "use singlecoil or magnitude")
    return args.coil_mode


def _checkpoint_kind(meta: dict) -> str | None:
    kind = meta.get("kind")
    if kind == "fbp_unet":
        return "fbp_unet"
    if kind:
        return f"ct_{kind}"
    return meta.get("method")


def check_model(args, method) -> Path | None:
    """The --model checkpoint of a learned method (and the checkpoints of its ``extra_models``,
    e.g. TPDM's --axial-model): present, its .sha256 (if any) matching, a readable safetensors
    file with a sidecar, of the kind the method needs. Returns the --model stem; the extra stems
    are set on ``args`` (``args.extra_models``, parameter → stem)."""
    args.extra_models = {}
    if not method.learned:
        return None
    for key, want in method.extra_models.items():
        flag = "--" + key.replace("_", "-")
        path = getattr(args, key, None)
        if path is None:
            raise UsageError(f"--method {args.method} needs {flag} (a trained {methods.MODELS[want]})")
        args.extra_models[key] = str(_check_checkpoint(path, flag, want, args.method))
    if args.model is None:
        raise UsageError(f"--method {args.method} needs --model (a trained {methods.MODELS[method.model]})")
    return _check_checkpoint(args.model, "--model", method.model, args.method)


def _check_checkpoint(path: Path, flag: str, want: str, method_name: str) -> Path:
    from diffrecon.models.checkpoint import verify_sha256_file

    weights = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
    sidecar, sums = weights.with_suffix(".json"), weights.with_suffix(".sha256")
    if not weights.is_file():
        raise UsageError(f"{flag} {weights}: checkpoint not found")
    if sums.is_file():
        try:
            verify_sha256_file(weights)
        except ValueError as exc:
            raise UsageError(f"{flag} {exc}") from None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            f.keys()
    except Exception as exc:   # the library raises its own error type on a bad header
        raise UsageError(f"{flag} {weights}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if not sidecar.is_file():
        raise UsageError(f"{flag} {weights}: sidecar {sidecar.name} not found (a checkpoint is .safetensors + .json)")
    try:
        meta = json.loads(sidecar.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise UsageError(f"{flag} {sidecar}: not a readable JSON sidecar ({exc})") from None
    if not meta.get("sha256") and not sums.is_file():
        print(f"diffrecon: warning: {flag} {weights}: no checksum ({sums.name} or sha256 in {sidecar.name}); "
              "not verified", file=sys.stderr)
    kind = _checkpoint_kind(meta)
    if kind in methods.MODELS and kind != want:
        raise UsageError(f"{flag} {weights}: a {kind} checkpoint; --method {method_name} needs a {want} "
                         f"checkpoint ({methods.MODELS[want]})")
    return weights.with_suffix("")


def _method_params(args) -> dict:
    sampling = methods.get(args.method).kind == "diffusion"
    budget = {"memory_budget_gb": args.memory_budget_gb} if args.memory_budget_gb is not None else {}
    if args.modality == "mri":
        if args.method == "tv":
            return {"lam": args.lam, "iterations": args.iterations, "seed": args.seed}
        if sampling:
            return {"n_steps": args.steps, "n_samples": args.samples, "snr": args.snr, "seed": args.seed,
                    "precision": args.precision, **budget}
        return {}
    out = {"n_threads": args.threads, **getattr(args, "extra_models", {})}
    if sampling:
        out["seed"] = args.seed
        out["precision"] = args.precision
        out.update(budget)
        if args.ddim_steps is not None:
            out["n_steps"] = args.ddim_steps
    return out


def _part_files(output: Path) -> list[Path]:
    """Files a run writing ``output`` keeps beside it while it runs (``<output>.part*``)."""
    return [p for p in output.parent.glob(output.name + ".part*") if p.is_file()] if output.parent.is_dir() else []


def _reconstruct(args) -> dict:
    from diffrecon.data.fastmri_raw import is_prospective_file

    method = methods.get(args.method, args.modality)
    check_options(args)
    check_paths(args)
    coil_mode = check_mri_input(args) if args.modality == "mri" else None
    model = check_model(args, method)
    for stale in _part_files(args.output):            # left by a killed run
        stale.unlink(missing_ok=True)
    prospective = args.modality == "mri" and is_prospective_file(args.input)
    written: list[Path] = []
    try:
        return _run(args, method, coil_mode, model, prospective, written)
    except BaseException:
        for path in written:                          # all or nothing
            path.unlink(missing_ok=True)
        for part in _part_files(args.output):
            part.unlink(missing_ok=True)
        raise


def _run(args, method, coil_mode, model, prospective, written) -> dict:
    from diffrecon import io
    from diffrecon.settings import CTSetting, MRISetting
    from diffrecon.stages.evaluate import evaluate
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.data.fastmri_raw import preprocess_file
    from diffrecon.stages.measure import measure_prospective
    from diffrecon.stages.simulate import simulate_ct, simulate_mri

    # intermediate stage files live in memory: nothing of them outlives the process
    manifest = {"name": "cli", "splits": {"test": [str(args.input)]}}
    meas, target, recon = _io.BytesIO(), _io.BytesIO(), _io.BytesIO()
    if prospective:
        store = args.output.with_name(args.output.name + ".part.store.h5")   # removed below
        store.parent.mkdir(parents=True, exist_ok=True)
        try:
            preprocess_file(args.input, store)          # readout crop to the recon matrix; own mask kept
            measure_prospective({"name": "cli", "splits": {"test": [str(store)]}}, meas, coil_mode,
                                central_slices=args.central_slices, mask_file=args.mask_file)
        finally:
            store.unlink(missing_ok=True)
        target = None
    elif args.modality == "mri":
        setting = MRISetting(args.mask, args.acceleration, args.acs_fraction, coil_mode)
        simulate_mri(manifest, setting, meas, target, seed=args.seed, central_slices=args.central_slices,
                     mask_file=args.mask_file)
    elif args.sinogram:
        _sinogram_measurements(args.input, meas, args.projector)
        target = None
    else:
        simulate_ct(manifest, CTSetting.parse(args.setting), meas, target, projector=args.projector,
                    n_threads=args.threads, seed=args.seed)
    reconstruct(meas, args.method, recon, _method_params(args), model=model, slices=args.slices,
                checkpoint_slices=args.checkpoint_slices, partial_dir=args.output)
    case_attrs = next(iter(io.read_case_attrs(recon).values()))
    rec = _block_array(recon, "reconstruction")
    std = _block_array(recon, "std") if _has_std(recon) else None
    summary = {"input": str(args.input), "method": args.method, "shape": list(rec.shape)}
    block = {}
    if args.slices is not None:
        block = {"block": args.slices, **{k: int(case_attrs[k]) for k in ("slice_start", "slice_stop", "volume_slices")}}
        summary.update(block)
        if not len(rec):
            raise ValueError(f"--slices {args.slices}: no slice of the volume's {block['volume_slices']} in this block")
        target = None
    if coil_mode is not None:
        summary["coil_mode"] = coil_mode
    if prospective:
        summary["prospective"] = True
        summary["mask"] = json.loads(io.read_attrs(meas)["mask"])
    elif block:
        summary["metrics"] = "not computed: one block of the volume's slices (--slices)"
    if target is not None:
        try:
            df = evaluate(target, recon, None, "cli", "cli", args.method)
            summary["metrics"] = {f"{r.view}/{k}": round(float(getattr(r, k)), 4)
                                  for r in df.itertuples() for k in ("psnr", "ssim") if np.isfinite(getattr(r, k))}
        except Exception as exc:      # the reconstruction stands; only the scoring failed
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            summary["metrics"] = f"not computed: {msg}"
    attrs = io.read_attrs(recon)
    preview_part = None
    if args.preview:
        from diffrecon.report.figures import save_preview

        preview_part = args.preview.with_name(args.preview.stem + ".part" + args.preview.suffix)
        preview_part.parent.mkdir(parents=True, exist_ok=True)
        written.append(preview_part)
        save_preview(rec[len(rec) // 2], preview_part, title=f"{args.method}: {args.input.name}")
    written.append(args.output)
    io.write_single(args.output, {"reconstruction": rec, "std": std},
                    {"method": args.method, "modality": args.modality, "input": str(args.input),
                     "summary": json.dumps(summary), "provenance": attrs["provenance"],
                     **{k: attrs[k] for k in ("params", "sampler_params") if k in attrs}, **block})
    if preview_part is not None:
        written.append(args.preview)
        os.replace(preview_part, args.preview)
    return summary


def _block_array(recon, key: str) -> np.ndarray:
    """``key`` of the one case of an in-memory reconstruction file (a block may hold no slice)."""
    import h5py

    recon.seek(0)
    with h5py.File(recon, "r") as f:
        (case,) = list(f["cases"])
        return f["cases"][case][key][()]


#: attributes of reconstruct --slices outputs that must agree to merge them
_MERGE_SAME = ("method", "modality", "input", "params", "sampler_params")


def merge_block_outputs(output: Path, blocks: list[Path]) -> dict:
    """One volume's file from ``reconstruct --slices`` outputs that cover its slices once: the
    blocks' ``reconstruction`` (and ``std``) concatenated in slice order, the attributes of the
    first (summary: shape and merged blocks). One-line ``UsageError`` naming the file otherwise."""
    import h5py

    from diffrecon import io

    parts = []
    for path in blocks:
        if not Path(path).is_file():
            raise UsageError(f"{path}: file not found")
        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f.attrs)
                arrays = {k: f[k][()] for k in ("reconstruction", "std") if k in f}
        except OSError as exc:
            raise UsageError(f"{path}: not a readable HDF5 file ({one_line(exc, 200)})") from None
        if not {"block", "slice_start", "slice_stop", "volume_slices"} <= set(attrs) or "reconstruction" not in arrays:
            raise UsageError(f"{path}: not an output of reconstruct --slices (no 'block' attributes)")
        parts.append((int(attrs["slice_start"]), int(attrs["slice_stop"]), path, attrs, arrays))
    parts.sort(key=lambda p: (p[0], p[1]))
    first = parts[0]
    for start, stop, path, attrs, arrays in parts:
        for key in (*_MERGE_SAME, "volume_slices"):
            if attrs.get(key) != first[3].get(key):
                raise UsageError(f"{path}: '{key}' differs from {first[2]}'s: blocks of other runs or volumes")
        if json.loads(attrs["provenance"]).get("params_hash") != json.loads(first[3]["provenance"]).get("params_hash"):
            raise UsageError(f"{path}: parameter hash differs from {first[2]}'s: blocks of other runs")
        if set(arrays) != set(first[4]):
            raise UsageError(f"{path}: datasets {sorted(arrays)} differ from {first[2]}'s {sorted(first[4])}")
    from diffrecon.stages.reconstruct import check_cover

    check_cover([(p[0], p[1], p[2]) for p in parts], int(first[3]["volume_slices"]))
    arrays = {k: np.concatenate([p[4][k] for p in parts]) for k in first[4]}
    summary = {**json.loads(first[3]["summary"]), "shape": list(arrays["reconstruction"].shape),
               "merged_blocks": [str(p[2]) for p in parts]}
    for key in ("block", "slice_start", "slice_stop", "metrics"):
        summary.pop(key, None)
    attrs = {k: v for k, v in first[3].items() if k not in ("block", "slice_start", "slice_stop", "volume_slices")}
    io.write_single(output, arrays, {**attrs, "summary": json.dumps(summary)})
    return summary


def _merge_cases(output: Path, groups: list[Path]) -> dict:
    """``diffrecon merge-cases``: :func:`~diffrecon.stages.reconstruct.merge_cases` (summary: output,
    its cases, the merged files)."""
    from diffrecon import io
    from diffrecon.stages.reconstruct import merge_cases

    for path in groups:
        if not path.is_file():
            raise UsageError(f"{path}: file not found")
        if _same_file(output, path):
            raise UsageError(f"{output}: is one of the case group files (it would be overwritten)")
    _check_writable(output, "output")
    merge_cases(groups, output)
    return {"output": str(output), "cases": list(io.read_case_attrs(output)), "merged_groups": [str(p) for p in groups]}


def _has_std(recon) -> bool:
    import h5py

    with h5py.File(recon, "r") as f:
        return all("std" in f["cases"][c] for c in f["cases"])


def _sinogram_measurements(path: Path, out: Path, projector: str) -> None:
    """Wrap a user sinogram file as a one-case measurements file (geometry from its angles)."""
    from diffrecon import io
    from diffrecon.data.ct_volumes import read_sinogram
    from diffrecon.physics.ct import CTGeometry

    sino, angles = read_sinogram(path)
    det = sino.shape[-1]
    n = int(np.floor(det / np.sqrt(2)))
    geom = CTGeometry(n=n, angles=tuple(angles), det_count=det, projector=projector)
    with io.CaseWriter(out) as w:
        w.add(path.stem, {"source": str(path)}, sinogram=sino)
        io.write_ct_measurements_header(w, geom, "cli", "user")


def _import_weights(args) -> None:
    """``diffrecon import-weights``: list the layouts, or convert one file (docs/published_checkpoints.md)."""
    from diffrecon.models.published import LAYOUTS, import_weights

    if args.list_layouts:
        for lay in LAYOUTS.values():
            use = f"{lay.method}" + (f" (ct_priors.{lay.kind})" if lay.kind else "")
            print(f"{lay.name}: {lay.title}; file {lay.file_name}; imports as {use}")
        return
    missing = [flag for flag, value in (("FILE", args.file), ("--layout", args.layout), ("--out", args.out))
               if value is None]
    if missing:
        raise UsageError(f"import-weights: give {', '.join(missing)} (or --list-layouts)")
    weights, meta = import_weights(args.file, args.layout, args.out)
    print(f"{weights}: written from layout {meta['layout']} ({meta['method']}; sidecar "
          f"{weights.with_suffix('.json').name}, sha256 in {weights.with_suffix('.sha256').name})")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from diffrecon.config import ConfigError, load_config
    from diffrecon.data.fastmri import DataFormatError

    try:
        if args.command == "check-config":
            load_config(args.config)
            print(f"{args.config}: valid")
        elif args.command == "download":
            from diffrecon.data.download import download_all, read_url_list

            entries = read_url_list(args.urls_file)
            for rec in download_all(entries, args.dest, only=args.only, keep_archives=args.keep_archives):
                print(f"{rec['name']}: {rec['status']} ({rec['size']} bytes) -> {rec['extracted_to']}")
        elif args.command == "merge-blocks":
            if any(_same_file(args.output, b) for b in args.blocks if b.exists()):
                raise UsageError(f"{args.output}: is one of the block files (it would be overwritten)")
            _check_writable(args.output, "output")
            print(json.dumps(merge_block_outputs(args.output, args.blocks), indent=2))
        elif args.command == "merge-cases":
            print(json.dumps(_merge_cases(args.output, args.groups), indent=2))
        elif args.command == "export-weights":
            from diffrecon.models.checkpoint import export_weights

            stem = args.output.with_suffix("") if args.output.suffix == ".safetensors" else args.output
            if "." in stem.name:              # the .json / .sha256 / .safetensors would replace its last part
                raise UsageError(f"{args.output}: the output name must have no '.' before .safetensors "
                                 f"(e.g. {stem.name.replace('.', '')}.safetensors)")
            out = export_weights(args.checkpoint.with_suffix(""), stem)
            print(f"{out}: written (sha256 in {out.with_suffix('.sha256').name})")
        elif args.command == "import-weights":
            _import_weights(args)
        elif args.command == "train":
            summary = _train(args)
            if summary is not None:
                print(json.dumps(summary, indent=2))
        else:
            print(json.dumps(_reconstruct(args), indent=2))
    except (ConfigError, DataFormatError, FileNotFoundError, ValueError, KeyError, OSError) as exc:
        print(f"diffrecon: error: {one_line(exc, limit=2000)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:          # a fault of this program, still one line (status 1)
        print(f"diffrecon: error: internal error: {exc.__class__.__name__}: {one_line(exc, limit=2000)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
