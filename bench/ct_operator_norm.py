"""Largest eigenvalue of AᵀA for the parallel-beam operator against the slice side n.

The conversion of the originals' data-consistency parameters (docs/ct_scaling.md) keeps ρ's
ratio to this eigenvalue; it relies on the eigenvalue growing linearly with n. Prints
λ_max / n per geometry and the ratio of the largest to the smallest over the sizes
(1.00 = exactly linear).

    python bench/ct_operator_norm.py [--sizes 32 64 128 256]
"""

from __future__ import annotations

import argparse

import torch

from diffrecon.physics.ct import CTGeometry, ParallelBeamCT


def largest_eigenvalue(op: ParallelBeamCT, n: int, iterations: int = 60) -> float:
    x = torch.rand(1, n, n, generator=torch.Generator().manual_seed(0))
    value = 0.0
    for _ in range(iterations):
        x = op.normal(x)
        value = float(x.norm())
        x = x / value
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    args = ap.parse_args()
    for label, make in (("8 views", lambda n: CTGeometry.sparse_view(n, 8)),
                        ("90 views (limited angle)", lambda n: CTGeometry.limited_angle(n, 90))):
        per_n = []
        for n in args.sizes:
            with ParallelBeamCT(make(n)) as op:
                per_n.append(largest_eigenvalue(op, n) / n)
            print(f"{label}, n = {n}: lambda_max(A^T A) / n = {per_n[-1]:.3f}")
        print(f"{label}: max/min of lambda_max / n over sizes = {max(per_n) / min(per_n):.4f}")


if __name__ == "__main__":
    main()
