"""Benchmark of diffrecon.physics.ct.ParallelBeamCT against a raw ASTRA loop.

Run:  PYTHONPATH=src python bench/ct_operator.py   (or with the package installed)

For a (D, n, n) float32 volume it times one forward projection followed by one
backprojection (the cost of a data-consistency gradient step):

(a) overhead: ParallelBeamCT(n_threads=1).A then .A_adjoint on a torch
    tensor, versus a plain serial loop of astra.OpTomo FP then BP over the
    slices with the projector created once. Target: ours/raw - 1 <= 0.05.
(b) threading: n_threads=2 versus n_threads=1. Target: speed-up >= 1.7.

Each figure is the median over repeats after warm-ups. The script always exits
0: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import astra
import numpy as np
import torch

from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

OVERHEAD_TARGET = 0.05
SPEEDUP_TARGET = 1.7


def median_time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_case(label: str, geom: CTGeometry, n_slices: int, repeats: int, warmup: int) -> list[bool]:
    rng = np.random.default_rng(0)
    vol_np = rng.random((n_slices, geom.n, geom.n), dtype=np.float32)
    vol_t = torch.from_numpy(vol_np.copy())

    # raw ASTRA: one projector, OpTomo FP then BP per slice, serial
    proj_id = astra.create_projector(geom.projector, geom.astra_proj_geom(), geom.astra_vol_geom())
    optomo = astra.OpTomo(proj_id)

    def raw():
        out = np.empty_like(vol_np)
        for i in range(n_slices):
            out[i] = optomo.BP(optomo.FP(vol_np[i]))
        return out

    results = []
    try:
        with ParallelBeamCT(geom, n_threads=1, backend="cpu") as op1, \
                ParallelBeamCT(geom, n_threads=2, backend="cpu") as op2:

            def ours1():
                return op1.A_adjoint(op1.A(vol_t))

            def ours2():
                return op2.A_adjoint(op2.A(vol_t))

            # sanity: same numbers as the raw loop
            np.testing.assert_allclose(ours1().numpy(), raw(), rtol=1e-5, atol=1e-3)
            np.testing.assert_array_equal(ours1().numpy(), ours2().numpy())

            # interleave the measurements so slow drifts of the machine hit all three alike
            t_raw, t_1, t_2 = [], [], []
            for _ in range(3):
                t_raw.append(median_time(raw, repeats, warmup))
                t_1.append(median_time(ours1, repeats, warmup))
                t_2.append(median_time(ours2, repeats, warmup))
            t_raw, t_1, t_2 = min(t_raw), min(t_1), min(t_2)
    finally:
        astra.projector.delete(proj_id)

    overhead = t_1 / t_raw - 1.0
    speedup = t_1 / t_2
    ok_a = overhead <= OVERHEAD_TARGET
    ok_b = speedup >= SPEEDUP_TARGET
    print(f"[{label}] volume {n_slices}x{geom.n}x{geom.n}, {geom.n_views} views, det {geom.det_count}, "
          f"projector {geom.projector}: raw {t_raw * 1e3:.1f} ms, ours(1 thread) {t_1 * 1e3:.1f} ms, "
          f"ours(2 threads) {t_2 * 1e3:.1f} ms")
    print(f"[{label}] overhead = ours/raw - 1 = {overhead:+.3f}  (target <= {OVERHEAD_TARGET:.2f})  "
          f"{'PASS' if ok_a else 'FAIL'}")
    print(f"[{label}] speed-up 2 threads vs 1 = {speedup:.2f}x  (target >= {SPEEDUP_TARGET:.1f})  "
          f"{'PASS' if ok_b else 'FAIL'}")
    results += [ok_a, ok_b]
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"astra {astra.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"astra.use_cuda() = {astra.use_cuda()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f} (timings are unreliable while other processes use the CPUs)")
    oks = []
    oks += bench_case("sparse-view 8", CTGeometry.sparse_view(args.n, 8), args.slices, args.repeats, args.warmup)
    oks += bench_case("limited-angle 90", CTGeometry.limited_angle(args.n), args.slices, args.repeats, args.warmup)
    print(f"overall: {sum(oks)}/{len(oks)} targets met; {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
