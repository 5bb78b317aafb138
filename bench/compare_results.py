"""Regression check: do two workflow runs give the same results?

Compares every ``recon.h5`` (each case's ``reconstruction`` and ``std``, byte for byte) and every
``metrics.csv`` (all columns but the wall time) of two run directories, e.g. the demo before and
after a refactor (``python bench/demo_walltime.py --keep DIR`` makes one):

    python bench/compare_results.py RUN_A RUN_B

Prints each difference and a count; exits 1 when any file differs or is missing.
"""
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

a, b = Path(sys.argv[1]) / "results", Path(sys.argv[2]) / "results"
recons = sorted(p.relative_to(a) for p in a.rglob("recon.h5"))
metrics = sorted(p.relative_to(a) for p in a.rglob("metrics.csv"))
bad = 0
for rel in recons:
    if not (b / rel).exists():
        print("MISSING", rel); bad += 1; continue
    with h5py.File(a / rel) as fa, h5py.File(b / rel) as fb:
        if sorted(fa["cases"]) != sorted(fb["cases"]):
            print("CASES", rel); bad += 1; continue
        for c in fa["cases"]:
            for k in fa["cases"][c]:
                x, y = fa["cases"][c][k][()], fb["cases"][c][k][()]
                if x.shape != y.shape or x.tobytes() != y.tobytes():
                    print("DIFF", rel, c, k, float(np.abs(x - y).max()) if x.shape == y.shape else "shape"); bad += 1
for rel in metrics:
    if not (b / rel).exists():
        print("MISSING", rel); bad += 1; continue
    da, db = pd.read_csv(a / rel).drop(columns=["seconds"]), pd.read_csv(b / rel).drop(columns=["seconds"])
    if not da.equals(db):
        print("METRICS DIFF", rel); bad += 1
extra = sorted(set(p.relative_to(b) for p in b.rglob("recon.h5")) - set(recons))
print(f"{len(recons)} recon files, {len(metrics)} metrics files compared; {bad} differences; {len(extra)} extra in second")
sys.exit(1 if bad or extra else 0)
