"""Diagnostics of the learned priors on the images their samplers actually feed them.

Not a tuning tool: it measures how well each prior denoises the kinds of images a method
shows it, on a dataset's test split (and, for reference, its training split), so that an
ordering that fails can be traced to what the prior knows.

* **score-MRI prior** (VE): relative denoising error ‖D(x + σz) − x‖² / ‖σz‖², with
  D(v) = v + σ² s_θ(v, σ) (Tweedie), at several σ, for
  (a) magnitude slices of unit peak — what Alg. 2 samples and what the prior was trained on;
  (b) referenced coil images Re(x_c / r_c), r_c = peak_c · exp(i φ_low,c) — what Alg. 4/5 sample
      (each coil image, shaded by its receive profile);
  (c) referenced single-coil complex images Re(x / r) — what Alg. 3 samples.
  1 = no better than returning the noisy input; lower is better.
* **DiffusionBlend patch prior** (VP, ε-prediction): ε-MSE E‖ε̂(x_t, t, k) − ε‖² per pixel at
  several t for adjacent (k = 1) and jump-3 (k = 3) 3-slice patches — what DiffusionBlend and
  DiffusionBlend++ ask of it — and of the DDS slice prior on single slices.

    python bench/prior_diagnostics.py --results results [--out docs/figures_of_record.md]

``--results``: a run's results folder (its ``data/`` manifests and ``models/`` checkpoints);
the datasets and models are the config's (``--config``, default ``config.yaml``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = [0.02, 0.05, 0.1, 0.2, 0.5]
TIMES = [50, 150, 300, 500, 700]


def _manifest(results: Path, modality: str, dataset: str) -> dict:
    """A dataset's manifest, its relative paths (relative to the run's working directory, the
    parent of its results folder) made absolute."""
    manifest = json.loads((results / "data" / modality / dataset / "manifest.json").read_text())
    base = results.resolve().parent
    manifest["splits"] = {k: [p if Path(p).is_absolute() else str(base / p) for p in v]
                          for k, v in manifest["splits"].items()}
    return manifest


@torch.no_grad()
def _ve_error(net, images: torch.Tensor, sigma: float, gen: torch.Generator, batch: int = 64) -> float:
    """Mean relative denoising error of (N, 1, H, W) images at noise level sigma."""
    num = den = 0.0
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        z = torch.randn(x.shape, generator=gen)
        v = x + sigma * z
        d = v + sigma ** 2 * net(v, torch.full((x.shape[0],), sigma))
        num += float(((d - x) ** 2).sum())
        den += float(((sigma * z) ** 2).sum())
    return num / den


def mri_image_sets(results: Path, dataset: str, split: str, max_volumes: int) -> dict[str, torch.Tensor]:
    """Magnitude slices, referenced coil images and referenced single-coil images of a split."""
    from diffrecon.data.fastmri import read_volume
    from diffrecon.physics.mri import SingleCoilMRI
    from diffrecon.samplers.score_mri import acs_reference

    mags, coils, single = [], [], []
    for path in _manifest(results, "mri", dataset)["splits"][split][:max_volumes]:
        vol = read_volume(path)
        k = torch.from_numpy(vol.kspace).to(torch.complex64)              # (S, C, H, W)
        op = SingleCoilMRI(torch.ones(k.shape[-2:]))
        img = op.A_adjoint(k)
        rss = img.abs().pow(2).sum(1).sqrt()
        mags.append(rss / rss.amax(dim=(-2, -1), keepdim=True))
        ref = acs_reference(k, op, 8)
        coils.append((img / ref).real.reshape(-1, *k.shape[-2:]))
        combined = (img * img.abs()).sum(1) / img.abs().pow(2).sum(1).sqrt().clamp_min(1e-12)   # phase-kept RSS
        kc = op.A(combined)
        single.append((combined / acs_reference(kc, op, 8)).real)
    return {name: torch.cat(v).unsqueeze(1).float() for name, v in
            (("magnitude", mags), ("coil images (Alg. 4/5)", coils), ("single-coil complex (Alg. 3)", single))}


def mri_report(results: Path, cfg: dict, max_volumes: int) -> list[str]:
    from diffrecon.models.loading import load_score_network

    block = cfg["score_mri"]
    stem = results / "models" / "score_mri" / block["dataset"] / "model"
    net, _, meta = load_score_network(stem)
    net.eval()
    lines = [f"### score-MRI prior ({stem}.safetensors, step {meta.get('step')})", "",
             "Relative denoising error ‖D(x+σz) − x‖² / ‖σz‖² (lower is better; 1 = returns its input).", ""]
    for split in ("train", "test", "test_ood"):
        if split not in _manifest(results, "mri", block["dataset"])["splits"]:
            continue
        sets = mri_image_sets(results, block["dataset"], split, max_volumes)
        lines += [f"**{block['dataset']} / {split}**", "",
                  "| images | n | " + " | ".join(f"σ = {s:g}" for s in SIGMAS) + " |",
                  "|:---|---:|" + "---:|" * len(SIGMAS)]
        for name, images in sets.items():
            gen = torch.Generator().manual_seed(0)
            errs = [_ve_error(net, images, s, gen) for s in SIGMAS]
            lines.append(f"| {name} | {images.shape[0]} | " + " | ".join(f"{e:.3f}" for e in errs) + " |")
        lines.append("")
    return lines


@torch.no_grad()
def _eps_mse(net, schedule, x0: torch.Tensor, t: int, labels, gen: torch.Generator, batch: int = 64) -> float:
    abar = float(schedule.alpha_bar(t))
    tot, n = 0.0, 0
    for i in range(0, x0.shape[0], batch):
        x = x0[i:i + batch]
        eps = torch.randn(x.shape, generator=gen)
        xt = abar ** 0.5 * x + (1 - abar) ** 0.5 * eps
        tt = torch.full((x.shape[0],), t)
        pred = net(xt, tt) if labels is None else net(xt, tt, torch.full((x.shape[0],), labels))
        tot += float(((pred - eps) ** 2).sum())
        n += eps.numel()
    return tot / n


def ct_score_report(results: Path, cfg: dict, max_volumes: int, extra: list[Path]) -> list[str]:
    """DiffusionMBIR's VE score prior (and any ``extra`` checkpoints of it, e.g. an earlier step):
    relative denoising error on axial slices of the train and test splits."""
    from diffrecon.data.ct_volumes import read_ct_volume
    from diffrecon.models.loading import load_ct_prior

    dataset = cfg["ct_priors"]["score"]["dataset"]
    nets = []
    for stem in [results / "models" / "ct_score" / dataset / "model", *extra]:
        net, _, meta = load_ct_prior(Path(stem).with_suffix(""))
        nets.append((f"score prior (DiffusionMBIR), step {meta.get('step')}", net.eval()))
    lines = ["### CT score prior (DiffusionMBIR)", "",
             "Relative denoising error ‖D(x+σz) − x‖² / ‖σz‖² on axial slices in [0, 1] (lower is better).", ""]
    manifest = _manifest(results, "ct", dataset)
    for split in ("train", "test"):
        vols = [read_ct_volume(p) for p in manifest["splits"].get(split, [])[:max_volumes]]
        if not vols:
            continue
        images = torch.from_numpy(np.stack([sl for v in vols for sl in v[::2]]))[:, None].float()
        lines += [f"**{dataset} / {split}**", "",
                  "| network | n | " + " | ".join(f"σ = {s:g}" for s in SIGMAS) + " |", "|:---|---:|" + "---:|" * len(SIGMAS)]
        for name, net in nets:
            gen = torch.Generator().manual_seed(0)
            errs = [_ve_error(net, images, s, gen) for s in SIGMAS]
            lines.append(f"| {name} | {images.shape[0]} | " + " | ".join(f"{e:.3f}" for e in errs) + " |")
        lines.append("")
    return lines


def ct_report(results: Path, cfg: dict, max_volumes: int) -> list[str]:
    from diffrecon.data.ct_volumes import read_ct_volume
    from diffrecon.models.loading import load_ct_prior

    lines = []
    patch_cfg, slice_cfg = cfg["ct_priors"]["patch"], cfg["ct_priors"]["slice"]
    pnet, psched, pmeta = load_ct_prior(results / "models" / "ct_patch" / patch_cfg["dataset"] / "model")
    snet, ssched, smeta = load_ct_prior(results / "models" / "ct_slice" / slice_cfg["dataset"] / "model")
    pnet.eval(), snet.eval()
    lines += [f"### CT priors (patch step {pmeta.get('step')}, slice step {smeta.get('step')})", "",
              "ε-prediction MSE per pixel (1 = predicts nothing; lower is better).", ""]
    manifest = _manifest(results, "ct", patch_cfg["dataset"])
    for split in ("train", "test"):
        vols = [read_ct_volume(p) for p in manifest["splits"].get(split, [])[:max_volumes]]
        if not vols:
            continue
        rows = {}
        for k in (1, 3):
            patches = [np.stack([v[j], v[j + k], v[j + 2 * k]]) for v in vols for j in range(0, v.shape[0] - 2 * k, 2)]
            rows[f"patch prior, {'adjacent' if k == 1 else 'jump-3'} patches (label {k})"] = \
                (torch.from_numpy(np.stack(patches)) * 2 - 1, k, pnet, psched)
        slices = [s for v in vols for s in v[::2]]
        rows["slice prior (DDS), axial slices"] = (torch.from_numpy(np.stack(slices))[:, None] * 2 - 1, None, snet, ssched)
        lines += [f"**{patch_cfg['dataset']} / {split}**", "",
                  "| images | n | " + " | ".join(f"t = {t}" for t in TIMES) + " |", "|:---|---:|" + "---:|" * len(TIMES)]
        for name, (x0, label, net, sched) in rows.items():
            gen = torch.Generator().manual_seed(0)
            errs = [_eps_mse(net, sched, x0, t, label, gen) for t in TIMES]
            lines.append(f"| {name} | {x0.shape[0]} | " + " | ".join(f"{e:.4f}" for e in errs) + " |")
        lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--max-volumes", type=int, default=4, help="volumes per split")
    ap.add_argument("--only", choices=["mri", "ct"], help="one modality")
    ap.add_argument("--out", type=Path, help="also write the Markdown here")
    ap.add_argument("--ct-score-also", type=Path, nargs="*", default=[],
                    help="further checkpoints of the CT score prior to compare (e.g. an earlier step)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = yaml.safe_load(args.config.read_text())
    lines = ["## Prior diagnostics", ""]
    if args.only in (None, "mri"):
        lines += mri_report(args.results, cfg, args.max_volumes)
    if args.only in (None, "ct"):
        lines += ct_report(args.results, cfg, args.max_volumes)
        if cfg["ct_priors"].get("score"):
            lines += ct_score_report(args.results, cfg, args.max_volumes, args.ct_score_also)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
