"""Command line: ``diffrecon reconstruct`` (your own file), ``diffrecon check-config`` and
``diffrecon download`` (fastMRI archives from your own links).

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

Errors (unreadable file, wrong layout, bad option) print one line naming the file or option
and exit with status 2; outputs are written atomically (nothing half-written).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from diffrecon import __version__, methods
from diffrecon.physics.masks import MASK_KINDS

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffrecon", description="Diffusion-prior MRI / CT reconstruction.")
    p.add_argument("--version", action="version", version=f"diffrecon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

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
    mri.add_argument("--coil-mode", default="multicoil", help="magnitude | singlecoil | multicoil")
    mri.add_argument("--central-slices", type=int, help="keep only this many central slices")
    mri.add_argument("--lam", type=float, default=0.01, help="TV weight")
    mri.add_argument("--iterations", type=int, default=300, help="TV iterations")
    mri.add_argument("--steps", type=int, default=500, help="score: predictor-corrector steps N")
    mri.add_argument("--samples", type=int, default=1, help="score: posterior samples (mean and std are written)")
    mri.add_argument("--snr", type=float, default=0.16, help="score: Langevin signal-to-noise ratio")
    ct = r.add_argument_group("CT")
    ct.add_argument("--setting", default="sv8", help="sv<views> or la<degrees> (volume input)")
    ct.add_argument("--projector", default="linear", choices=["line", "strip", "linear"])
    ct.add_argument("--sinogram", action="store_true", help="input is a sinogram file, not a volume")
    ct.add_argument("--threads", type=int, default=None, help="CPU threads for ASTRA")
    ct.add_argument("--ddim-steps", type=int, help="CT diffusion methods: reverse steps (default: the method's)")

    c = sub.add_parser("check-config", help="validate a pipeline config file")
    c.add_argument("config", type=Path)

    d = sub.add_parser("download", help="download and extract fastMRI archives from your own links (resumable)",
                       description="Download the archives listed in a URL file (one URL a line, optionally "
                                   "followed by size=<bytes> and sha256=<hex>), resuming partial downloads, "
                                   "checking size / sha256 when given, and extract them into --dest. Only file "
                                   "names are printed, never the links.")
    d.add_argument("--urls-file", type=Path, help="URL list (default: $FASTMRI_URLS_FILE)")
    d.add_argument("--dest", type=Path, required=True, help="raw data folder (archives are extracted here)")
    d.add_argument("--only", nargs="+", metavar="NAME", help="archive file names to fetch (default: all)")
    d.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")

    e = sub.add_parser("export-weights", help="write shippable EMA weights (+ sidecar, .sha256) from a checkpoint")
    e.add_argument("checkpoint", type=Path, help="training checkpoint (.safetensors with its .json sidecar)")
    e.add_argument("output", type=Path, help="output .safetensors path")
    return p


def _method_params(args) -> dict:
    sampling = methods.get(args.method).kind == "diffusion"
    if args.modality == "mri":
        if args.method == "tv":
            return {"lam": args.lam, "iterations": args.iterations, "seed": args.seed}
        if sampling:
            return {"n_steps": args.steps, "n_samples": args.samples, "snr": args.snr, "seed": args.seed,
                    "precision": args.precision}
        return {}
    out = {"n_threads": args.threads}
    if sampling:
        out["seed"] = args.seed
        out["precision"] = args.precision
        if args.ddim_steps:
            out["n_steps"] = args.ddim_steps
    return out


def _reconstruct(args) -> dict:
    from diffrecon import io
    from diffrecon.settings import CTSetting, MRISetting
    from diffrecon.stages.evaluate import evaluate
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.data.fastmri_raw import is_prospective_file, preprocess_file
    from diffrecon.stages.measure import measure_prospective
    from diffrecon.stages.simulate import simulate_ct, simulate_mri

    if not args.input.is_file():
        raise FileNotFoundError(f"{args.input}: file not found")
    method = methods.get(args.method, args.modality)
    if method.learned and args.model is None:
        raise ValueError(f"--method {args.method} needs --model (a trained {methods.MODELS[method.model]})")
    model = args.model.with_suffix("") if args.model else None
    manifest = {"name": "cli", "splits": {"test": [str(args.input)]}}
    with tempfile.TemporaryDirectory() as tmp:
        meas, target, recon = (Path(tmp) / n for n in ("measurements.h5", "target.h5", "recon.h5"))
        if args.modality == "mri" and is_prospective_file(args.input):
            store = Path(tmp) / "store" / args.input.name
            preprocess_file(args.input, store)          # readout crop to the recon matrix; own mask kept
            measure_prospective({"name": "cli", "splits": {"test": [str(store)]}}, meas, args.coil_mode,
                                central_slices=args.central_slices, mask_file=args.mask_file)
            target = None
        elif args.modality == "mri":
            setting = MRISetting(args.mask, args.acceleration, args.acs_fraction, args.coil_mode)
            simulate_mri(manifest, setting, meas, target, seed=args.seed, central_slices=args.central_slices,
                         mask_file=args.mask_file)
        elif args.sinogram:
            _sinogram_measurements(args.input, meas, args.projector)
            target = None
        else:
            simulate_ct(manifest, CTSetting.parse(args.setting), meas, target, projector=args.projector,
                        n_threads=args.threads, seed=args.seed)
        reconstruct(meas, args.method, recon, _method_params(args), model=model)
        case = next(iter(io.read_cases(recon, "reconstruction")))
        rec = io.read_cases(recon, "reconstruction")[case]
        try:
            std = io.read_cases(recon, "std")[case]
        except KeyError:
            std = None
        summary = {"input": str(args.input), "method": args.method, "shape": list(rec.shape)}
        if target is None and args.modality == "mri":
            summary["prospective"] = True
            summary["mask"] = json.loads(io.read_attrs(meas)["mask"])
        if target is not None:
            df = evaluate(target, recon, Path(tmp) / "metrics.csv", "cli", "cli", args.method)
            summary["metrics"] = {f"{r.view}/{k}": round(float(getattr(r, k)), 4)
                                  for r in df.itertuples() for k in ("psnr", "ssim") if np.isfinite(getattr(r, k))}
        attrs = io.read_attrs(recon)
        io.write_single(args.output, {"reconstruction": rec, "std": std},
                        {"method": args.method, "modality": args.modality, "input": str(args.input),
                         "summary": json.dumps(summary), "provenance": attrs["provenance"],
                         **{k: attrs[k] for k in ("params", "sampler_params") if k in attrs}})
    if args.preview:
        from diffrecon.report.figures import save_preview

        save_preview(rec[len(rec) // 2], args.preview, title=f"{args.method}: {args.input.name}")
    return summary


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
        elif args.command == "export-weights":
            from diffrecon.models.checkpoint import export_weights

            out = export_weights(args.checkpoint.with_suffix(""), args.output.with_suffix(""))
            print(f"{out}: written (sha256 in {out.with_suffix('.sha256').name})")
        else:
            print(json.dumps(_reconstruct(args), indent=2))
    except (ConfigError, DataFormatError, FileNotFoundError, ValueError, KeyError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"diffrecon: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
