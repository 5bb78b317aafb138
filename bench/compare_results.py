"""Regression check: do two workflow runs give the same results?

Compares every ``recon.h5`` (each case's ``reconstruction`` and ``std``, byte for byte) and every
``metrics.csv`` (all columns but the wall time) of two run directories, e.g. the demo before and
after a refactor (``python bench/demo_walltime.py --keep DIR`` makes one):

    python bench/compare_results.py RUN_A RUN_B

Prints each difference and a count; exits 1 when any file differs, is missing or is extra.
The comparison is :func:`diffrecon.report.compare.compare_results`.
"""
import sys
from pathlib import Path

from diffrecon.report.compare import compare_results

a, b = Path(sys.argv[1]) / "results", Path(sys.argv[2]) / "results"
diffs = compare_results(a, b)
for line in diffs:
    print(line)
print(f"{len(list(a.rglob('recon.h5')))} recon files, {len(list(a.rglob('metrics.csv')))} metrics files compared; "
      f"{len(diffs)} differences")
sys.exit(1 if diffs else 0)
