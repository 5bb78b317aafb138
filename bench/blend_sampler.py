"""Benchmark of the DiffusionBlend sampler (untrained patch network of the demo's size; timing only).

(a) batched patch scoring vs one network call per patch (the original's batch-1 loop), over the
    partitions of a few reverse steps: speed-up = loop time / batched time
    (target >= 1.5x on CPU, >= 5x on GPU);
(b) sampler overhead = (sampler time − network time) / network time for a full DiffusionBlend++
    run (DDIM, blending, Tweedie, ADMM z-TV with 5 CG iterations on the ASTRA projector),
    target <= 0.10.

    python bench/blend_sampler.py [--slices 27] [--size 64] [--steps 25] [--views 8]
                                  [--precision float32|bfloat16|auto] [--device auto|cpu|cuda]

The precision defaults to the demo's (``ct.diffusion_blend_pp.precision`` in config.yaml), the
threads to torch's default (all cores; OMP_NUM_THREADS=1 mimics one demo job).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from diffrecon.devices import pick_device
from diffrecon.models.inference import network_fn
from diffrecon.models.recipes import noise_network, vp_schedule
from diffrecon.physics.ct import CTGeometry, ParallelBeamCT
from diffrecon.samplers.blend import blended_eps, choose_partition, per_patch_eps
from diffrecon.samplers.diffusion_blend import BlendConfig, DiffusionBlendSampler

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=27)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--views", type=int, default=8)
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    ap.add_argument("--precision", choices=["float32", "bfloat16", "auto"],
                    default=((demo.get("ct") or {}).get("diffusion_blend_pp") or {}).get("precision", "float32"))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    cfg = demo["ct_priors"]["patch"]
    net = noise_network(cfg, args.size, 3, max(cfg.get("spacings", [1, 3])) + 1).eval().requires_grad_(False).to(device)
    eps_fn = network_fn(net, args.precision)
    print(f"torch {torch.__version__}, {device}, {args.precision}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}; {args.slices} slices of {args.size}^2 "
          f"(timings are unreliable while other processes use the CPUs)")

    x = torch.randn(args.slices, args.size, args.size, device=device)
    rng = np.random.default_rng(0)
    partitions = [choose_partition(i, args.slices, rng, jump_every=2) for i in range(args.steps)]
    blended_eps(x, 500, partitions[0], eps_fn)                                   # warm-up
    per_patch_eps(x, 500, partitions[0], eps_fn)

    def clock(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for p in partitions:
            fn(x, 500, p, eps_fn)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    batched, looped = clock(blended_eps), clock(per_patch_eps)
    target = 5.0 if device.type == "cuda" else 1.5
    speedup = looped / batched
    print(f"[patch scoring] batch-1 loop {looped:.2f} s vs batched {batched:.2f} s over {args.steps} steps: "
          f"speed-up {speedup:.2f}x (target >= {target:g}x) {'PASS' if speedup >= target else 'FAIL'}")

    geom = CTGeometry.sparse_view(args.size, args.views)
    with ParallelBeamCT(geom) as op:
        y = op.A(torch.rand(args.slices, args.size, args.size)).to(device)

        def run(n_steps):
            s = DiffusionBlendSampler(eps_fn, vp_schedule(cfg), BlendConfig(n_steps=n_steps, jump_every=2,
                                                                            progress=False))
            t0 = time.perf_counter()
            s.sample(y, op, (args.slices, args.size, args.size))
            return s, time.perf_counter() - t0

        run(2)                                                                   # warm-up
        sampler, total = run(args.steps)
    overhead = (total - sampler.network_seconds) / sampler.network_seconds
    print(f"[DiffusionBlend++ sampler] {total:.2f} s, network {sampler.network_seconds:.2f} s "
          f"({sampler.network_calls} calls, NFE {sampler.nfe}): overhead = {overhead:.3f} (target <= 0.10) "
          f"{'PASS' if overhead <= 0.10 else 'FAIL'}")


if __name__ == "__main__":
    main()
