"""GPU check: the figures a GPU run must confirm, written as JSON and Markdown.

(a) CT operator: the ASTRA 3-D CUDA backend against the 2-D CPU backend on one volume —
    relative difference of A x and of Aᵀ y (target ≤ 1e-4);
(b) dot test on the GPU backend: |⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / (‖A x‖ ‖y‖) (and the CPU backend's);
(c) patch scoring: all patches of a DiffusionBlend++ partition in one batch vs one network call
    per patch (the original's loop), at 256² with the paper-size network (target ≥ 5× on the
    GPU), and the network's activation memory per image measured on the GPU
    (``max_memory_allocated``) beside the CPU estimate (profiler allocation timeline) that a
    ``memory_budget_gb`` uses on CPU-only machines;
(d) a few training steps of each paper-size prior of ``config/paper/*.yaml`` (images/s, peak
    GPU memory; bf16 autocast where the config's ``train.precision`` asks for it);
(e) everything in ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``.

    python bench/gpu_check.py --out results/gpu_check [--network auto|adm|unet2d] [--quick]

Parts that need CUDA print one ``SKIP`` line each where there is none: (a) and (b) need ASTRA
with a usable GPU (``astra.use_cuda()``), (c) and (d) a CUDA device for their targets; with
``--quick`` (tiny sizes, for tests) (c) and (d) still run their code on the CPU, without targets.
docs/gpu_check.md says how to run it on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper"


# ----------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(fn, device: torch.device, repeat: int = 1) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeat


def _astra_cuda() -> tuple[bool, str]:
    try:
        import astra
    except Exception as exc:                     # not installed, or its CUDA libraries missing
        return False, f"ASTRA does not import ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})"
    try:
        ok = bool(astra.use_cuda())
    except Exception as exc:
        return False, f"astra.use_cuda() failed ({exc})"
    return ok, "ASTRA has a usable GPU" if ok else "astra.use_cuda() is False (no usable GPU for ASTRA)"


def _skip(results: dict, part: str, title: str, why: str) -> None:
    print(f"SKIP ({part}) {title}: {why}", flush=True)
    results[part] = {"title": title, "skipped": why}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ------------------------------------------------------------------ (a), (b) CT operator
def ct_operator(results: dict, size: int, slices: int, views: int) -> None:
    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

    title_a, title_b = "CT operator: ASTRA 3-D CUDA vs 2-D CPU", "dot test on the GPU backend"
    ok, why = _astra_cuda()
    geom = CTGeometry.sparse_view(size, views)
    rng = np.random.default_rng(0)
    x = rng.random((slices, size, size)).astype(np.float32)
    y = rng.standard_normal((slices, views, geom.det_count)).astype(np.float32)

    def dot(op) -> float:
        ax, aty = op.forward_np(x), op.adjoint_np(y)
        lhs, rhs = float(np.vdot(ax.astype(np.float64), y)), float(np.vdot(x.astype(np.float64), aty))
        return abs(lhs - rhs) / max(float(np.linalg.norm(ax) * np.linalg.norm(y)), 1e-300)

    with ParallelBeamCT(geom, backend="cpu") as cpu:
        cpu_fwd, cpu_adj = cpu.forward_np(x), cpu.adjoint_np(y)
        cpu_seconds = _clock(lambda: cpu.forward_np(x), torch.device("cpu"))
        cpu_dot = dot(cpu)
    if not ok:
        _skip(results, "a", title_a, why)
        _skip(results, "b", title_b, f"{why} (CPU backend dot test: {cpu_dot:.2e})")
        results["b"]["cpu_dot"] = cpu_dot
        return
    with ParallelBeamCT(geom, backend="cuda") as gpu:
        fwd, adj = gpu.forward_np(x), gpu.adjoint_np(y)
        gpu_seconds = _clock(lambda: gpu.forward_np(x), torch.device("cpu"), repeat=3)
        gpu_dot = dot(gpu)
        calibration = float(getattr(gpu._backend, "calibration_error", math.nan))
    rel_a, rel_at = _rel(fwd, cpu_fwd), _rel(adj, cpu_adj)
    results["a"] = {"title": title_a, "volume": [slices, size, size], "views": views,
                    "rel_forward": rel_a, "rel_adjoint": rel_at, "calibration_error": calibration,
                    "cpu_forward_s": cpu_seconds, "gpu_forward_s": gpu_seconds, "target": 1e-4,
                    "pass": bool(max(rel_a, rel_at) <= 1e-4)}
    results["b"] = {"title": title_b, "gpu_dot": gpu_dot, "cpu_dot": cpu_dot, "target": 1e-4,
                    "pass": bool(gpu_dot <= 1e-4)}
    print(f"(a) {title_a}: ‖ΔAx‖/‖Ax‖ = {rel_a:.2e}, ‖ΔAᵀy‖/‖Aᵀy‖ = {rel_at:.2e} (target <= 1e-4) "
          f"{'PASS' if results['a']['pass'] else 'FAIL'}; forward {gpu_seconds * 1e3:.1f} ms GPU vs "
          f"{cpu_seconds * 1e3:.1f} ms CPU", flush=True)
    print(f"(b) {title_b}: {gpu_dot:.2e} (CPU backend {cpu_dot:.2e}; target <= 1e-4) "
          f"{'PASS' if results['b']['pass'] else 'FAIL'}", flush=True)


# ------------------------------------------------------------------ (c) patch scoring
def patch_network(kind: str, size: int, quick: bool):
    """The patch prior to time: ``adm`` (guided-diffusion's U-Net, DiffusionBlend's layout) or
    ``unet2d`` (the project's NoiseNetwork at the paper config's size); ``auto``: adm if present."""
    if kind in ("auto", "adm"):
        try:
            from diffrecon.models import adm
        except ImportError:
            if kind == "adm":
                raise SystemExit("--network adm: diffrecon.models.adm is not in this version") from None
            print("(c) diffrecon.models.adm is not in this version: timing the project's NoiseNetwork "
                  "(UNet2DModel) at the paper config's size", flush=True)
        else:
            cfg = adm.DIFFUSIONBLEND_PATCH
            if quick:
                cfg = adm.ADMConfig(model_channels=32, channel_mult=(1, 2), attention_ds=(2,), num_res_blocks=1,
                                    num_classes=4, num_head_channels=16, image_size=size)
            return adm.ADMNoiseNetwork(cfg), "adm"
    from diffrecon.models.recipes import noise_network

    block = yaml.safe_load((PAPER / "aapm.yaml").read_text())["ct_priors"]["patch"]
    if quick:
        block = {"model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
                           "layers_per_block": 1}}
    return noise_network(block, size, 3, 4), "unet2d"


def patch_scoring(results: dict, device: torch.device, network: str, size: int, slices: int, steps: int,
                  quick: bool, precision: str) -> None:
    from diffrecon.models.inference import network_fn
    from diffrecon.samplers.blend import blended_eps, choose_partition, per_patch_eps
    from diffrecon.samplers.memory import example_inputs, measure_network

    title = "patch scoring: batched vs batch-1"
    if device.type != "cuda" and not quick:
        _skip(results, "c", title, "no CUDA device (torch.cuda.is_available() is False)")
        return
    torch.manual_seed(0)
    net, name = patch_network(network, size, quick)
    n_params = sum(p.numel() for p in net.parameters())
    net = net.eval().requires_grad_(False).to(device)
    fn = network_fn(net, precision)
    x = torch.randn(slices, size, size, device=device)
    rng = np.random.default_rng(0)
    partitions = [choose_partition(i, slices, rng, jump_every=2) for i in range(steps)]
    blended_eps(x, 500, partitions[0], fn)                                   # warm-up (kernels, autotuning)
    per_patch_eps(x, 500, partitions[0], fn)
    batched = _clock(lambda: [blended_eps(x, 500, p, fn, batch_limit=len(p)) for p in partitions], device)
    looped = _clock(lambda: [per_patch_eps(x, 500, p, fn) for p in partitions], device)
    speedup = looped / batched
    patches = int(np.mean([len(p) for p in partitions]))
    mem_gpu = measure_network(fn, example_inputs("labelled", 3, size, device), device) if device.type == "cuda" else None
    net_cpu = net.to("cpu") if device.type == "cuda" else net
    mem_cpu = measure_network(network_fn(net_cpu, "float32" if device.type == "cuda" else precision),
                              example_inputs("labelled", 3, size, "cpu"), "cpu")
    out = {"title": title, "device": str(device), "network": name, "parameters": n_params, "size": size,
           "slices": slices, "steps": steps, "patches_per_step": patches, "precision": precision,
           "batch1_s": looped, "batched_s": batched, "speedup": speedup,
           "cpu_estimate_mib_per_image": mem_cpu.per_image / 2 ** 20}
    if mem_gpu is not None:
        out.update(gpu_mib_per_image=mem_gpu.per_image / 2 ** 20, gpu_fixed_mib=mem_gpu.fixed / 2 ** 20,
                   gpu_over_cpu_estimate=mem_gpu.per_image / mem_cpu.per_image, target=5.0,
                   **{"pass": bool(speedup >= 5.0)})
        mem = (f"; activations {out['gpu_mib_per_image']:.0f} MiB/image on the GPU ({precision}) vs "
               f"{out['cpu_estimate_mib_per_image']:.0f} MiB/image CPU estimate (float32)")
        verdict = f"(target >= 5x) {'PASS' if out['pass'] else 'FAIL'}"
    else:
        mem = f"; activations {out['cpu_estimate_mib_per_image']:.1f} MiB/image (CPU estimate)"
        verdict = "(CPU, quick: code path only, no target)"
        print(f"SKIP (c) {title} on the GPU: no CUDA device (ran the code path on the CPU at {size}²)", flush=True)
    results["c"] = out
    print(f"(c) {title}: {name} ({n_params / 1e6:.1f} M parameters) at {size}², {slices} slices, {patches} patches "
          f"per step, {steps} steps: batch-1 {looped:.2f} s vs batched {batched:.2f} s = {speedup:.2f}x {verdict}{mem}",
          flush=True)


# ------------------------------------------------------------------ (d) training steps
def paper_priors(quick: bool) -> list[dict]:
    """(name, config block, image size, kind) of every prior in config/paper/*.yaml (first of each
    name); ``quick``: the same list with tiny networks, 16² images and batch 2."""
    out, seen = [], set()
    for path in sorted(PAPER.glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        sizes = {name: d.get("size") for name, d in (cfg.get("datasets") or {}).items()}
        blocks = []
        if cfg.get("score_mri"):
            blocks.append(("score_mri", cfg["score_mri"], "score", 320))
        for kind, block in (cfg.get("ct_priors") or {}).items():
            blocks.append((f"ct_{kind}", block, kind, 256))
        for name, block, kind, default_size in blocks:
            if name in seen:
                continue
            seen.add(name)
            size = int(sizes.get(block.get("dataset")) or default_size)
            if quick:
                block = {**block, "model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
                                            "layers_per_block": 1},
                         "train": {**block.get("train", {}), "batch_size": 2}}
                size = 16
            out.append({"name": name, "config": path.name, "block": block, "size": size, "kind": kind})
    return out


def training_steps(results: dict, device: torch.device, steps: int, quick: bool) -> None:
    from diffrecon.devices import use_bf16
    from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
    from diffrecon.diffusion.vp import vp_eps_loss
    from diffrecon.models.recipes import noise_network, score_network, vp_schedule

    title = "training steps of the paper-size priors"
    if device.type != "cuda" and not quick:
        _skip(results, "d", title, "no CUDA device (torch.cuda.is_available() is False)")
        return
    if device.type != "cuda":
        print(f"SKIP (d) {title} on the GPU: no CUDA device (ran the code path on the CPU at 16²)", flush=True)
    rows = []
    for prior in paper_priors(quick):
        block, size, kind = prior["block"], prior["size"], prior["kind"]
        train = block.get("train", {})
        batch = int(train.get("batch_size", 4))
        torch.manual_seed(0)
        labels = None
        if kind == "score":
            model = score_network(block, size)
            sde = block.get("sde", {"sigma_min": 0.01, "sigma_max": 378.0})
            loss_fn, channels = ve_dsm_loss(VESDE(sde["sigma_min"], sde["sigma_max"])), 1
        else:
            channels = 3 if kind == "patch" else 1
            n_labels = max(block.get("spacings", [1, 3])) + 1 if kind == "patch" else None
            model = noise_network(block, size, channels, n_labels)
            loss_fn = vp_eps_loss(vp_schedule(block))
            if kind == "patch":
                labels = torch.ones(batch, dtype=torch.long, device=device)
        model = model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=float(train.get("lr", 1e-4)))
        bf16 = device.type == "cuda" and use_bf16(str(train.get("precision", "float32")), device.type)
        gen = torch.Generator(device="cpu").manual_seed(0)
        x0 = torch.rand(batch, channels, size, size, device=device) * 2 - 1

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, x0, gen) if labels is None else loss_fn(model, x0, gen, labels)
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        step()                                                             # warm-up
        seconds = _clock(lambda: [step() for _ in range(steps)], device) / steps
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else math.nan
        row = {"prior": prior["name"], "config": prior["config"], "size": size, "batch": batch,
               "parameters": sum(p.numel() for p in model.parameters()), "bf16": bf16,
               "step_s": seconds, "images_per_s": batch / seconds, "peak_gib": peak}
        rows.append(row)
        print(f"(d) {prior['name']} ({prior['config']}, {row['parameters'] / 1e6:.1f} M parameters, {size}², batch "
              f"{batch}, {'bf16' if bf16 else 'fp32'}): {seconds * 1e3:.0f} ms/step, {row['images_per_s']:.1f} images/s, "
              f"peak {peak:.1f} GiB", flush=True)
        del model, opt
    results["d"] = {"title": title, "device": str(device), "steps": steps, "rows": rows}


# ------------------------------------------------------------------ (e) report
def markdown(results: dict) -> str:
    lines = [f"# GPU check ({results['meta']['device_name']}, torch {results['meta']['torch']})", ""]
    for part in "abcd":
        r = results.get(part, {})
        lines.append(f"## ({part}) {r.get('title', '')}")
        if "skipped" in r:
            lines += ["", f"skipped: {r['skipped']}", ""]
            continue
        if part == "d":
            lines += ["", "| prior | config | size | batch | parameters (M) | bf16 | ms/step | images/s | peak GiB |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {w['prior']} | {w['config']} | {w['size']} | {w['batch']} | {w['parameters'] / 1e6:.1f} | "
                      f"{w['bf16']} | {w['step_s'] * 1e3:.0f} | {w['images_per_s']:.1f} | {w['peak_gib']:.2f} |"
                      for w in r["rows"]]
            lines.append("")
            continue
        lines += ["", "| quantity | value |", "|---|---|"]
        for k, v in r.items():
            if k != "title":
                lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--network", choices=["auto", "adm", "unet2d"], default="auto",
                    help="patch prior of (c): adm (guided-diffusion's U-Net) or unet2d (the project's NoiseNetwork)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (tests): seconds on a CPU")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps per prior (default 5; quick 2)")
    ap.add_argument("--precision", choices=["float32", "bfloat16", "auto"], default="auto",
                    help="arithmetic of the patch scoring in (c) on the GPU (the CPU runs float32)")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out}: not a folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick
    results = {"meta": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU",
                        "quick": quick, "started": time.strftime("%Y-%m-%d %H:%M:%S")}}
    print(f"gpu_check: torch {torch.__version__}, device {results['meta']['device_name']}, "
          f"{'quick (tiny sizes)' if quick else 'paper sizes'}", flush=True)
    t0 = time.perf_counter()
    ct_operator(results, size=32 if quick else 256, slices=9 if quick else 64, views=8)
    patch_scoring(results, device, args.network, size=32 if quick else 256, slices=12 if quick else 64,
                  steps=2 if quick else 4, quick=quick,
                  precision=args.precision if device.type == "cuda" else "float32")
    training_steps(results, device, steps=args.train_steps or (2 if quick else 5), quick=quick)
    results["meta"]["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    from diffrecon.io import atomic_path

    with atomic_path(args.out / "gpu_check.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2, default=str))
    with atomic_path(args.out / "gpu_check.md") as tmp:
        tmp.write_text(markdown(results))
    print(f"gpu_check: {results['meta']['seconds']:.1f} s; wrote {args.out / 'gpu_check.json'} and "
          f"{args.out / 'gpu_check.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
