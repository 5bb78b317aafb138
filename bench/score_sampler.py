"""Benchmark of the score-MRI sampler (untrained network of the demo's architecture; timing only).

(a) sampler overhead = (sampler time − network time) / network time, target ≤ 0.10,
    for the single-coil complex algorithm (Alg. 3) and the multi-coil SSOS algorithm (Alg. 4);
(b) batched-coil speed-up: one network call carrying every coil's real and imaginary parts
    versus a Python loop over coils (one sampler run per coil, as the original code does).

    python bench/score_sampler.py [--steps 20] [--slices 2] [--coils 8] [--size 64]
                                  [--precision float32|bfloat16|auto] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import yaml

from diffrecon.devices import pick_device
from diffrecon.diffusion.sde import VESDE
from diffrecon.models.inference import network_fn
from diffrecon.models.recipes import score_network
from diffrecon.physics.masks import make_mask
from diffrecon.physics.mri import SingleCoilMRI
from diffrecon.samplers.score_mri import SamplerConfig, ScoreMRISampler

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--slices", type=int, default=2)
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "auto"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())["score_mri"]
    net = score_network(cfg, args.size).eval().requires_grad_(False).to(device)
    sde = VESDE(cfg["sde"]["sigma_min"], cfg["sde"]["sigma_max"])
    mask = torch.from_numpy(make_mask("gaussian1d", (args.size, args.size), 4, 0.08, seed=0).array).to(device)
    x = torch.randn(args.slices, args.coils, args.size, args.size, dtype=torch.complex64).to(device)
    op = SingleCoilMRI(mask)
    y = op.A(x)
    print(f"torch {torch.__version__}, {device}, {args.precision}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}; "
          f"{args.slices} slices x {args.coils} coils, {args.size}^2, {args.steps} steps "
          f"(timings are unreliable while other processes use the CPUs)")

    def run(y_in, algorithm):
        sampler = ScoreMRISampler(network_fn(net, args.precision, batch_limit=256), sde,
                                  SamplerConfig(n_steps=args.steps, progress=False))
        t0 = time.perf_counter()
        sampler.sample(y_in, op, algorithm, seed=0)
        return time.perf_counter() - t0, sampler.network_seconds

    run(y[:, 0], "complex")                                   # warm-up
    for label, y_in, algorithm in (("Alg. 3 complex single-coil", y[:, 0], "complex"),
                                   ("Alg. 4 multi-coil SSOS", y, "ssos")):
        total, network = run(y_in, algorithm)
        overhead = (total - network) / network
        print(f"[{label}] sampler {total:.2f} s, network {network:.2f} s: overhead = {overhead:.3f} "
              f"(target <= 0.10) {'PASS' if overhead <= 0.10 else 'FAIL'}")

    batched, _ = run(y, "ssos")
    looped = sum(run(y[:, c:c + 1].contiguous(), "ssos")[0] for c in range(args.coils))
    speedup = looped / batched
    print(f"[batched coils] per-coil loop {looped:.2f} s vs batched {batched:.2f} s: speed-up {speedup:.2f}x")


if __name__ == "__main__":
    main()
