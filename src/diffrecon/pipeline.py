"""The pipeline's steps as plain functions: simulate → reconstruct → evaluate.

Each step reads and writes HDF5 files with one group per test case, so a
reconstruction step never sees the ground truth:

``measurements.h5``  root attrs: modality, setting, dataset (+ mask metadata for MRI,
                     geometry for CT); dataset ``mask`` (MRI) or ``angles`` (CT);
                     ``cases/<case>/kspace`` (S, [C,] H, W) or ``cases/<case>/sinogram`` (S, V, det)
``target.h5``        ``cases/<case>/target`` (S, H, W) float32 magnitude / attenuation
``recon.h5``         ``cases/<case>/reconstruction`` (S, H, W) float32 (fastMRI prediction key)

Snakemake scripts and the CLI both call these functions.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from diffrecon.settings import CTSetting, MRISetting

log = logging.getLogger("diffrecon")


@contextmanager
def atomic_h5(path):
    """Open ``path`` for writing through a temporary file renamed on success (nothing half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_cases(path, key: str) -> dict[str, np.ndarray]:
    """``{case: cases/<case>/<key>}`` from a pipeline HDF5 file, in stored order."""
    with h5py.File(path, "r") as f:
        return {name: f["cases"][name][key][()] for name in f["cases"]}


def read_attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def _central(n: int, keep: int | None) -> slice:
    if not keep or keep >= n:
        return slice(0, n)
    start = (n - keep) // 2
    return slice(start, start + keep)


def _case_name(path) -> str:
    return Path(path).stem


# ----------------------------------------------------------------------------------------- MRI
def mri_ground_truth(coil_imgs: np.ndarray, coil_mode: str, multicoil_file: bool, acs: int = 24):
    """Image to measure and its magnitude target for one volume of coil images (S, C, H, W).

    * ``multicoil``: the coil images themselves; target RSS.
    * ``singlecoil``: complex coil combination sum_c conj(S_c) x_c with ESPIRiT maps from the
      fully sampled data (this builds the reference object, it is not part of any reconstruction);
      a single-coil file is used as is.
    * ``magnitude``: the RSS image, real valued.
    """
    from diffrecon.physics.mri import rss

    import torch

    mag = rss(torch.from_numpy(coil_imgs), dim=-3).numpy()
    if coil_mode == "multicoil":
        return coil_imgs, mag
    if coil_mode == "magnitude":
        return mag.astype(np.complex64), mag
    if not multicoil_file:
        img = coil_imgs[:, 0]
        return img, np.abs(img)
    from diffrecon.physics.fft import fft2c
    from diffrecon.physics.sensitivity import espirit_maps

    ksp = fft2c(torch.from_numpy(coil_imgs)).numpy()
    img = np.stack([(np.conj(espirit_maps(ksp[s], calib_width=min(acs, ksp.shape[-1] // 2))) * coil_imgs[s]).sum(0)
                    for s in range(len(ksp))]).astype(np.complex64)
    return img, np.abs(img)


def simulate_mri(manifest: dict, setting: MRISetting, out_measurements, out_target, out_mask_json=None,
                 seed: int = 0, max_cases: int | None = None, central_slices: int | None = None,
                 split: str = "test", name: str | None = None) -> dict:
    """Retrospective undersampling of one split (default ``test``): y = M ⊙ F x for every case.

    ``name`` is the dataset name recorded in the outputs (default: the manifest's); a
    robustness set names the held-out split of another dataset this way.

    Each volume is normalised by the maximum of its target magnitude (as score-MRI trains and tests
    on [0, 1] magnitudes); the scale is stored per case. One seeded mask per setting.
    """
    import torch

    from diffrecon.data.fastmri import coil_images, read_volume
    from diffrecon.physics.fft import fft2c
    from diffrecon.physics.masks import make_mask

    if not manifest["splits"].get(split):
        raise ValueError(f"dataset {manifest['name']} has no '{split}' cases")
    files = manifest["splits"][split][:max_cases] if max_cases else manifest["splits"][split]
    mask = None
    with atomic_h5(out_measurements) as fm, atomic_h5(out_target) as ft:
        for path in files:
            vol = read_volume(path)
            sl = _central(vol.n_slices, central_slices)
            coils = coil_images(vol, sl)
            if mask is None:
                mask = make_mask(setting.mask, coils.shape[-2:], setting.acceleration, setting.acs_fraction, seed)
            x, target = mri_ground_truth(coils, setting.coil_mode, vol.multicoil)
            scale = float(target.max()) or 1.0
            x, target = x / scale, target / scale
            ksp = fft2c(torch.from_numpy(np.ascontiguousarray(x, dtype=np.complex64))).numpy()
            ksp = ksp * mask.array
            g = fm.create_group(f"cases/{_case_name(path)}")
            g.create_dataset("kspace", data=ksp.astype(np.complex64), compression="gzip", compression_opts=1)
            g.attrs.update({"scale": scale, "source": str(path), "slices": f"{sl.start}:{sl.stop}"})
            ft.create_dataset(f"cases/{_case_name(path)}/target", data=target.astype(np.float32))
        meta = mask.to_dict()
        fm.create_dataset("mask", data=mask.array)
        fm.attrs.update({"modality": "mri", "dataset": name or manifest["name"], "setting": setting.name,
                         "coil_mode": setting.coil_mode, "mask": json.dumps(meta), "split": split})
        ft.attrs.update({"modality": "mri", "dataset": name or manifest["name"], "setting": setting.name,
                         "split": split})
    if out_mask_json:
        Path(out_mask_json).write_text(json.dumps(meta, indent=2))
    log.info("simulated %d cases, %s, effective R = %.2f", len(files), setting.name, mask.effective_acceleration)
    return meta


LEARNED_MRI_METHODS = ("score", "score_hybrid", "unet")


def reconstruct_mri(measurements, method: str, out_path, params: dict | None = None, model=None) -> dict:
    """Run an MRI method on every case of ``measurements``; write ``recon.h5``; return timings.

    Classical methods take ``params`` as keyword arguments; the score methods take the sampler
    settings (:class:`~diffrecon.samplers.score_mri.SamplerConfig` fields) and need ``model``,
    the trained score network's checkpoint. Posterior methods also store a pixel-wise ``std``.
    ``unet`` (the supervised baseline, :mod:`diffrecon.baselines.unet`) needs ``model``, the
    checkpoint stem of the U-Net trained for the setting's mask family.
    """
    from diffrecon.baselines import MRI_METHODS
    from diffrecon.physics.masks import acs_width

    if method not in MRI_METHODS and method not in LEARNED_MRI_METHODS:
        raise ValueError(f"MRI method '{method}' is not one of {', '.join((*MRI_METHODS, *LEARNED_MRI_METHODS))}")
    attrs = read_attrs(measurements)
    setting = MRISetting.parse(attrs["setting"])
    with h5py.File(measurements, "r") as f:
        mask = f["mask"][()]
    params = dict(params or {})
    acs = max(acs_width(mask.shape, setting.acs_fraction), 4)
    run = _learned_mri_runner(method, setting, mask, params, model, acs) if method in LEARNED_MRI_METHODS else None
    if method == "tv":
        params.setdefault("acs_width", acs)
    seconds = {}
    with atomic_h5(out_path) as fo:
        for case, ksp in read_cases(measurements, "kspace").items():
            t0 = time.perf_counter()
            extra = {}
            if run is None:
                rec = MRI_METHODS[method](ksp, mask, setting.coil_mode, **params)
            else:
                out = run(ksp)
                rec, extra = out["mean"], ({"std": out["std"]} if "std" in out else {})
            seconds[case] = time.perf_counter() - t0
            g = fo.create_group(f"cases/{case}")
            g.create_dataset("reconstruction", data=rec.astype(np.float32))
            for key, value in extra.items():
                g.create_dataset(key, data=value.astype(np.float32))
            g.attrs["seconds"] = seconds[case]
            if run is not None and "nfe" in out:          # network evaluations, all posterior samples
                g.attrs.update({"nfe": out["nfe"], "network_seconds": out["network_seconds"]})
        fo.attrs.update({"modality": "mri", "method": method, "setting": setting.name,
                         "params": json.dumps(params, default=str), "model": str(model or "")})
    return seconds


def _learned_mri_runner(method, setting, mask, params, model, acs):
    """A function kspace → {mean, std} for a score method ({mean} for ``unet``), with the network loaded once."""
    from diffrecon.devices import pick_device
    from diffrecon.models.loading import load_score_network
    from diffrecon.samplers.score_mri import ALGORITHM_OF, SamplerConfig, reconstruct_volume

    if method == "unet":
        from diffrecon.baselines.unet import unet_reconstruct
        from diffrecon.models.loading import load_unet

        if model is None:
            raise ValueError("method 'unet' needs a trained U-Net (checkpoint path)")
        network, _ = load_unet(model, device=pick_device(params.get("device", "auto")))
        return lambda ksp: {"mean": unet_reconstruct(ksp, mask, setting.coil_mode, network,
                                                     batch_limit=int(params.get("batch_limit", 64)))}
    if (method, setting.coil_mode) not in ALGORITHM_OF:
        raise ValueError(f"method '{method}' does not apply to coil mode '{setting.coil_mode}'")
    if model is None:
        raise ValueError(f"method '{method}' needs a trained score model (checkpoint path)")
    device = pick_device(params.get("device", "auto"))
    network, sde, _ = load_score_network(model, device=device)
    cfg = SamplerConfig.from_dict(params)
    batch_limit = int(params.get("batch_limit", 256))
    return lambda ksp: reconstruct_volume(ksp, mask, setting.coil_mode, method, network, sde, cfg,
                                          acs_width=acs, device=device, batch_limit=batch_limit)


# ------------------------------------------------------------------------------------------ CT
def simulate_ct(manifest: dict, setting: CTSetting, out_measurements, out_target, projector: str = "linear",
                n_threads: int | None = None, max_cases: int | None = None, split: str = "test",
                noise: dict | None = None, seed: int = 0) -> dict:
    """Project each test volume: y = A x slice by slice (optional Poisson + Gaussian noise)."""
    import torch

    from diffrecon.data.ct_volumes import read_ct_volume
    from diffrecon.physics.ct import ParallelBeamCT

    files = manifest["splits"][split][:max_cases] if max_cases else manifest["splits"][split]
    rng = np.random.default_rng(seed)
    geom = None
    with atomic_h5(out_measurements) as fm, atomic_h5(out_target) as ft:
        for path in files:
            vol = read_ct_volume(path)
            if geom is None:
                geom = setting.geometry(vol.shape[-1], projector)
                op = ParallelBeamCT(geom, n_threads=n_threads)
            elif vol.shape[-1] != geom.n:
                raise ValueError(f"{path}: slice size {vol.shape[-1]} differs from the first test volume ({geom.n})")
            sino = op.A(torch.from_numpy(vol)).numpy()
            if noise and (noise.get("I0") or noise.get("sigma")):
                sino = add_ct_noise(sino, rng, noise.get("I0", 0), noise.get("sigma", 0.0), noise.get("mu_scale", 1.0))
            fm.create_dataset(f"cases/{_case_name(path)}/sinogram", data=sino.astype(np.float32))
            fm[f"cases/{_case_name(path)}"].attrs["source"] = str(path)
            ft.create_dataset(f"cases/{_case_name(path)}/target", data=vol)
        op.close()
        fm.create_dataset("angles", data=np.asarray(geom.angles))
        fm.attrs.update({"modality": "ct", "dataset": manifest["name"], "setting": setting.name, "n": geom.n,
                         "det_count": geom.det_count, "projector": geom.projector, "noise": json.dumps(noise or {})})
        ft.attrs.update({"modality": "ct", "dataset": manifest["name"], "setting": setting.name})
    return {"cases": len(files), "views": len(geom.angles)}


def add_ct_noise(sino: np.ndarray, rng: np.random.Generator, I0: float, sigma: float, mu_scale: float = 1.0) -> np.ndarray:
    """Transmission noise: counts ~ Poisson(I0 exp(-p/mu_scale)) + N(0, sigma^2), back to line integrals.

    ``I0 = 0`` disables the Poisson part (then only Gaussian noise of std ``sigma`` is added to p).
    """
    if not I0:
        return sino + rng.normal(0.0, sigma, sino.shape)
    counts = rng.poisson(I0 * np.exp(-sino / mu_scale)) + rng.normal(0.0, sigma, sino.shape)
    return -mu_scale * np.log(np.clip(counts, 1.0, None) / I0)


def ct_geometry_from(measurements):
    """The :class:`CTGeometry` stored in a measurements file."""
    from diffrecon.physics.ct import CTGeometry

    with h5py.File(measurements, "r") as f:
        a = f.attrs
        return CTGeometry(n=int(a["n"]), angles=tuple(float(t) for t in f["angles"][()]),
                          det_count=int(a["det_count"]), projector=str(a["projector"]))


def _is_limited_angle(setting: str, geom) -> bool:
    """la<degrees> settings; for a user sinogram, views spanning well under 180° (and more than 20)."""
    try:
        return CTSetting.parse(setting).kind == "la"
    except ValueError:
        span = max(geom.angles) - min(geom.angles)
        return geom.n_views > 20 and span < np.deg2rad(150)


def reconstruct_ct(measurements, method: str, out_path, params: dict | None = None, model=None) -> dict:
    """Run a CT method on every case of ``measurements``; write ``recon.h5``; return timings.

    Diffusion methods (:data:`~diffrecon.samplers.ct_methods.METHOD_PRIOR`) need ``model``, the
    checkpoint stem of their trained prior; each case also records its NFE and network seconds.
    """
    from diffrecon.baselines import CT_METHODS
    from diffrecon.samplers.ct_methods import METHOD_PRIOR, ct_diffusion_runner

    known = (*CT_METHODS, "fbp_unet", *METHOD_PRIOR)
    if method not in known:
        raise ValueError(f"CT method '{method}' is not one of {', '.join(known)}")
    geom = ct_geometry_from(measurements)
    setting = read_attrs(measurements)["setting"]
    params = dict(params or {})
    max_cases = params.pop("max_cases", None)
    run = None
    if method in METHOD_PRIOR:
        run = ct_diffusion_runner(method, model, geom, {k: v for k, v in params.items() if k != "n_threads"},
                                  limited_angle=_is_limited_angle(setting, geom), n_threads=params.get("n_threads"))
    elif method == "fbp_unet":
        run = _fbp_unet_runner(model, setting, geom, params)
    seconds = {}
    try:
        with atomic_h5(out_path) as fo:
            cases = read_cases(measurements, "sinogram")
            for case in list(cases)[:max_cases] if max_cases else list(cases):
                sino = cases[case]
                t0 = time.perf_counter()
                rec = CT_METHODS[method](sino, geom, **params) if run is None else run(sino)
                seconds[case] = time.perf_counter() - t0
                fo.create_dataset(f"cases/{case}/reconstruction", data=rec.astype(np.float32))
                fo[f"cases/{case}"].attrs["seconds"] = seconds[case]
                if getattr(run, "last", None) is not None:
                    fo[f"cases/{case}"].attrs.update({"nfe": run.last.nfe,
                                                      "network_seconds": run.last.network_seconds})
            fo.attrs.update({"modality": "ct", "method": method, "setting": setting,
                             "params": json.dumps(params, default=str), "model": str(model or "")})
    finally:
        if hasattr(run, "close"):
            run.close()
    return seconds


def _fbp_unet_runner(model, setting: str, geom, params: dict):
    """sinogram → f(FBP(y)) with the FBP-U-Net trained for ``setting`` loaded once."""
    from diffrecon.baselines.fbp_unet import fbp_unet_reconstruct
    from diffrecon.devices import pick_device
    from diffrecon.models.loading import load_unet

    if model is None:
        raise ValueError("method 'fbp_unet' needs a trained FBP-U-Net (checkpoint path)")
    network, meta = load_unet(model, device=pick_device(params.get("device", "auto")))
    if meta.get("kind") != "fbp_unet":
        raise ValueError(f"{model}: not an FBP-U-Net checkpoint")
    if setting != "user" and meta.get("setting") != setting:
        raise ValueError(f"{model}: trained for setting {meta.get('setting')}, not {setting}")
    return lambda sino: fbp_unet_reconstruct(sino, geom, network, n_threads=params.get("n_threads"))


# ---------------------------------------------------------------------------------- evaluation
def evaluate(target_path, recon_path, out_csv, dataset: str, setting: str, method: str, subset: bool = False):
    """Per-case metrics of one table cell → ``metrics.csv`` (one row per case and view).

    The reconstruction must hold every target case, or with ``subset`` (ablations limited to
    ``max_cases``) a non-empty subset of them; only those are scored."""
    import pandas as pd

    from diffrecon.metrics import case_rows
    from diffrecon.metrics.ct import CT_CONVENTION, ct_view_metrics
    from diffrecon.metrics.mri import MRI_CONVENTION, fastmri_metrics

    modality = read_attrs(target_path)["modality"]
    targets = read_cases(target_path, "target")
    recons = read_cases(recon_path, "reconstruction")
    with h5py.File(recon_path, "r") as f:
        seconds = {c: float(f["cases"][c].attrs.get("seconds", np.nan)) for c in f["cases"]}
        nfe = {c: float(f["cases"][c].attrs.get("nfe", np.nan)) for c in f["cases"]}
    if (not recons or not set(recons) <= set(targets)) if subset else set(targets) != set(recons):
        raise ValueError(f"{recon_path}: cases {sorted(recons)} differ from targets {sorted(targets)}")
    targets = {c: t for c, t in targets.items() if c in recons}
    rows = []
    for case, target in targets.items():
        if modality == "mri":
            by_view = {"image": fastmri_metrics(target, recons[case])}
        else:
            by_view = ct_view_metrics(target, recons[case])
        rows += case_rows(modality, dataset, setting, method, case, by_view)
        for row in rows[-len(by_view):]:
            row["seconds"] = seconds[case]
            row["nfe"] = nfe[case]
    df = pd.DataFrame(rows)
    df["convention"] = MRI_CONVENTION if modality == "mri" else CT_CONVENTION
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    return df


# ------------------------------------------------------------------------------ tables, figures
def summarize_metrics(metrics_files, out_summary, out_cases):
    """Concatenate per-case metrics of every cell; write all rows and the per-cell summary."""
    import pandas as pd

    from diffrecon.report.tables import summarize

    cases = pd.concat([pd.read_csv(p) for p in metrics_files], ignore_index=True)
    cases.to_csv(out_cases, index=False)
    summary = summarize(cases)
    summary.to_csv(out_summary, index=False)
    return summary


def runtime_tables(cases_csv, modality: str, out_csv, out_md, methods=None):
    """Wall time per test volume and NFE of every method and setting (from the per-case rows)."""
    import pandas as pd

    from diffrecon.report.tables import runtime_table, write_runtime_table

    table = runtime_table(pd.read_csv(cases_csv), method_order=methods)
    write_runtime_table(table, out_csv, out_md, modality)
    return table


def paper_tables(summary_csv, modality: str, view: str, out_csv, out_md, out_tex, methods=None, settings=None,
                 datasets=None, title=None):
    """Write one paper-shaped table (CSV, Markdown, LaTeX) from the per-cell summary.

    ``datasets`` / ``settings`` (when given) keep only those column groups, in that order;
    ``title`` replaces the caption's lead.
    """
    import pandas as pd

    from diffrecon.metrics.ct import CT_CONVENTION
    from diffrecon.metrics.mri import MRI_CONVENTION
    from diffrecon.report.tables import write_table

    summary = pd.read_csv(summary_csv)
    if datasets is not None:
        summary = summary[summary["dataset"].isin(list(datasets))]
    if settings is not None:
        summary = summary[summary["setting"].isin(list(settings))]
    stem = Path(out_csv).with_suffix("")
    paths = write_table(summary, modality, view, stem, MRI_CONVENTION if modality == "mri" else CT_CONVENTION,
                        method_order=methods, setting_order=settings, dataset_order=datasets, title=title)
    for produced, wanted in zip((paths["csv"], paths["md"], paths["tex"]), (out_csv, out_md, out_tex)):
        if Path(produced) != Path(wanted):
            Path(produced).replace(wanted)
    return paths


def setting_figure(target_path, measurements_path, recon_paths: dict, out_png, case_index: int = 0):
    """Comparison figure of one setting for one test case (MRI: middle slice; CT: three views)."""
    from diffrecon.metrics.ct import ct_view_metrics
    from diffrecon.metrics.mri import fastmri_metrics
    from diffrecon.report.figures import comparison_figure, ct_views_figure

    attrs = read_attrs(measurements_path)
    targets = read_cases(target_path, "target")
    case = list(targets)[min(case_index, len(targets) - 1)]
    target = targets[case]
    recons = {m: read_cases(p, "reconstruction")[case] for m, p in recon_paths.items()}
    title = f"{attrs['dataset']} · {attrs['setting']} · {case}"
    if attrs["modality"] == "ct":
        metrics = {m: ct_view_metrics(target, r) for m, r in recons.items()}
        return ct_views_figure(target, recons, out_png, metrics_by_view=metrics, title=title)
    with h5py.File(measurements_path, "r") as f:
        mask = f["mask"][()]
    meta = json.loads(attrs["mask"])
    k = target.shape[0] // 2
    metrics = {m: fastmri_metrics(target, r) for m, r in recons.items()}
    return comparison_figure(target[k], {m: r[k] for m, r in recons.items()}, out_png, measurement=mask,
                             measurement_label=f"mask (R_eff = {meta['effective_acceleration']:.2f})",
                             metrics=metrics, title=f"{title} · slice {k} (metrics over the volume)")


def posterior_figure(target_path, recon_path, out_png, case_index: int = 0):
    """Uncertainty figure of a posterior-sampling cell: middle slice of one case (mean, std, error)."""
    from diffrecon.report.figures import uncertainty_figure

    targets = read_cases(target_path, "target")
    case = list(targets)[min(case_index, len(targets) - 1)]
    with h5py.File(recon_path, "r") as f:
        g = f["cases"][case]
        if "std" not in g:
            raise ValueError(f"{recon_path}: case {case} has no 'std' (not a posterior-sampling method)")
        mean, std = g["reconstruction"][()], g["std"][()]
        params = json.loads(f.attrs.get("params", "{}"))
        attrs = dict(f.attrs)
    k = mean.shape[0] // 2
    title = f"{attrs['method']} · {attrs['setting']} · {case} · slice {k}"
    return uncertainty_figure(targets[case][k], mean[k], std[k], out_png, n_samples=params.get("n_samples"), title=title)


def ct_ablation_report(metrics_files: dict, out: dict, where: str = ""):
    """Ablation tables and plots from ``{(method, variant): metrics.csv}`` (see :mod:`diffrecon.report.ablation`)."""
    import pandas as pd

    from diffrecon.report.ablation import write_ablation

    return write_ablation({key: pd.read_csv(path) for key, path in metrics_files.items()}, out, where)
