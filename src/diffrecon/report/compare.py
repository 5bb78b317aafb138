"""Do two workflow runs give the same results?

Compares every ``recon.h5`` (each case's datasets, byte for byte) and every ``metrics.csv`` (all
columns but the wall time ``seconds``) under two results directories.
"""

from __future__ import annotations

from pathlib import Path


def compare_results(a, b) -> list[str]:
    """Differences between results directories ``a`` and ``b`` (empty: bit-identical), one line each:
    ``MISSING``, ``CASES``, ``DIFF``, ``METRICS DIFF`` or ``EXTRA`` and the relative path."""
    import h5py
    import numpy as np
    import pandas as pd

    a, b = Path(a), Path(b)
    recons = sorted(p.relative_to(a) for p in a.rglob("recon.h5"))
    metrics = sorted(p.relative_to(a) for p in a.rglob("metrics.csv"))
    out = []
    for rel in recons:
        if not (b / rel).exists():
            out.append(f"MISSING {rel}")
            continue
        with h5py.File(a / rel, "r") as fa, h5py.File(b / rel, "r") as fb:
            if sorted(fa["cases"]) != sorted(fb["cases"]):
                out.append(f"CASES {rel}")
                continue
            for c in fa["cases"]:
                if sorted(fa["cases"][c]) != sorted(fb["cases"][c]):
                    out.append(f"DIFF {rel} {c} datasets")
                    continue
                for k in fa["cases"][c]:
                    x, y = fa["cases"][c][k][()], fb["cases"][c][k][()]
                    if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
                        what = float(np.abs(x - y).max()) if x.shape == y.shape else "shape"
                        out.append(f"DIFF {rel} {c} {k} {what}")
    for rel in metrics:
        if not (b / rel).exists():
            out.append(f"MISSING {rel}")
            continue
        da = pd.read_csv(a / rel).drop(columns=["seconds"], errors="ignore")
        db = pd.read_csv(b / rel).drop(columns=["seconds"], errors="ignore")
        if not da.equals(db):
            out.append(f"METRICS DIFF {rel}")
    for pattern, known in (("recon.h5", recons), ("metrics.csv", metrics)):
        out += [f"EXTRA {rel}" for rel in sorted({p.relative_to(b) for p in b.rglob(pattern)} - set(known))]
    return out
