"""Benchmark of the training loaders: memory that does not grow with the data set, and speed.

(a) peak RSS of a score-prior training run (``--steps`` steps, tiny network, CPU) on N and on 10·N
    synthetic slices of ``--size``² written in the store's format (single-coil fastMRI-layout files
    of ``--per-file`` slices: random smooth targets and their k-space), each run in
    its own subprocess. Peak memory: the run's own peak RSS (getrusage) and the peak of the whole
    process tree (run + DataLoader workers) as proportional set size (psutil, polled every 0.2 s;
    PSS counts pages shared by forked workers once). Target for the stream loader:
    tree peak(10·N) / tree peak(N) <= 1.2 (the memory loader is shown for contrast: it holds the set).
(b) samples/s of the training loop at demo size (64², the demo's score network, batch 16) with
    the stream loader (workers 0 and ``--workers``) against the memory loader, runs interleaved,
    the best of ``--repeats`` each (``--speed-steps`` − 5 timed steps); target: within 10 %.

    python bench/train_memory.py [--slices 128] [--size 320] [--steps 100] [--workers 2]
                                 [--speed-steps 30] [--repeats 2] [--threads 0]
                                 [--device cpu|cuda]

Timings are unreliable while other processes use the CPUs; threads 0 keeps torch's default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4, "layers_per_block": 1}


def write_store(root: Path, n_slices: int, size: int, per_file: int, seed: int = 0) -> Path:
    """``n_slices`` synthetic slices in fastMRI-layout files of ``per_file`` slices; returns the manifest."""
    from diffrecon.data.fastmri import volume_writer

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    files, left, i = [], n_slices, 0
    while left > 0:
        s = min(per_file, left)
        path = root / "train" / f"bench_{i:04d}.h5"
        with volume_writer(path, s, (size, size), (size, size)) as (ksp, tgt):
            for j in range(s):
                c, r = rng.uniform(-0.5, 0.5, 2), rng.uniform(0.2, 0.6)
                img = (np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / r ** 2)
                       + 0.05 * rng.random((size, size))).astype(np.float32)
                tgt[j] = img
                ksp[j] = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img), norm="ortho")).astype(np.complex64)
        files.append(str(path))
        left, i = left - s, i + 1
    manifest = {"name": f"bench{n_slices}", "modality": "mri", "splits": {"train": files}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json"


def child(args: dict) -> None:
    """One run in this process: print {rss_self_mb, rss_workers_mb, samples_per_s}."""
    import torch

    from diffrecon.data.streaming import MagnitudeSlices
    from diffrecon.data.training_sets import magnitude_slices
    from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
    from diffrecon.models.recipes import score_network
    from diffrecon.models.training import TrainConfig, train

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    manifest = json.loads(Path(args["manifest"]).read_text())
    stream = MagnitudeSlices(manifest)
    data = stream if args["loader"] == "stream" else magnitude_slices(manifest)
    stream.data_hash()                                   # as the recipe does: read once, slice by slice
    torch.manual_seed(0)
    net = score_network({"model": args["model"]}, stream.sample_shape[-1])
    cfg = TrainConfig(steps=args["steps"], batch_size=args["batch"], lr=2e-4, warmup=10, checkpoint_every=args["steps"],
                      seed=0, loader=args["loader"], workers=args["workers"])
    # warm-up steps (first-call allocations, worker start) are not timed: a short run first, continued
    dev = args.get("device", "cpu")
    train(net, data, ve_dsm_loss(VESDE(0.01, 30.0)), TrainConfig(**{**cfg.__dict__, "steps": 5}), args["stem"],
          progress=False, device=dev)
    t0 = time.perf_counter()
    train(net, data, ve_dsm_loss(VESDE(0.01, 30.0)), cfg, args["stem"], progress=False, device=dev)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({"rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "samples_per_s": (args["steps"] - 5) * args["batch"] / seconds}))


def run_child(**kwargs) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(kwargs)], stdout=out, stderr=err,
                                text=True, env=env)
        root, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            total = 0.0
            try:
                for p in [root, *root.children(recursive=True)]:
                    total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            peak = max(peak, total)
            time.sleep(0.2)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark run failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return {**json.loads(out.read().strip().splitlines()[-1]), "tree_pss_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=128, help="N (the large set has 10 N)")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--per-file", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--speed-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    import torch
    import yaml

    sys.stdout.reconfigure(line_buffering=True)
    print(f"torch {torch.__version__}, {args.device}, threads {args.threads or torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="train_memory_") as tmp:
        tmp = Path(tmp)
        # (a) memory
        peaks = {}
        for n in (args.slices, 10 * args.slices):
            manifest = write_store(tmp / f"n{n}", n, args.size, args.per_file)
            gb = n * args.size ** 2 * 4 / 1e9
            for loader in ("stream", "memory"):
                r = run_child(manifest=str(manifest), loader=loader, workers=args.workers if loader == "stream" else 0,
                              steps=args.steps, batch=args.batch, model=TINY, threads=args.threads, device=args.device,
                              stem=str(tmp / f"ck_{loader}_{n}"))
                peaks[loader, n] = r["tree_pss_mb"]
                print(f"(a) {loader:6s} N={n:5d} ({gb:.2f} GB of slices): peak RSS {r['rss_self_mb']:.0f} MB, "
                      f"process tree (with {args.workers if loader == 'stream' else 0} workers) {r['tree_pss_mb']:.0f} MB PSS")
        for loader in ("stream", "memory"):
            ratio = peaks[loader, 10 * args.slices] / peaks[loader, args.slices]
            verdict = ("PASS" if ratio <= 1.2 else "FAIL") if loader == "stream" else "(contrast)"
            print(f"(a) {loader}: peak(10N) / peak(N) = {ratio:.2f} (target <= 1.2) {verdict}")

        # (b) speed at demo size
        demo = yaml.safe_load((ROOT / "config.yaml").read_text())
        size, per_vol = demo["datasets"]["demo_brain"]["size"], demo["datasets"]["demo_brain"]["slices"]
        n = per_vol * demo["datasets"]["demo_brain"]["volumes"]["train"]
        manifest = write_store(tmp / "demo", n, size, per_vol)
        batch = demo["score_mri"]["train"]["batch_size"]
        common = dict(manifest=str(manifest), steps=args.speed_steps, batch=batch, model=demo["score_mri"]["model"],
                      threads=args.threads, device=args.device)
        rates = {}
        for _ in range(args.repeats):                    # interleaved, best of each: robust to other load
            for workers in (None, 0, args.workers):
                loader = "memory" if workers is None else "stream"
                r = run_child(loader=loader, workers=workers or 0, stem=str(tmp / f"speed_{loader}{workers}_{_}"),
                              **common)
                rates[workers] = max(rates.get(workers, 0.0), r["samples_per_s"])
        memory = rates[None]
        print(f"(b) demo size ({n} slices of {size}^2, batch {batch}, best of {args.repeats}): "
              f"memory loader {memory:.1f} samples/s")
        for workers in (0, args.workers):
            rel = rates[workers] / memory
            print(f"(b) stream loader, {workers} workers: {rates[workers]:.1f} samples/s = {rel:.2f} x memory "
                  f"(target >= 0.90) {'PASS' if rel >= 0.9 else 'FAIL'}")

if __name__ == "__main__":
    main()
