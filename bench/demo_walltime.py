"""Benchmark: wall time of the whole demo (default config.yaml) from an empty results folder.

Runs ``snakemake --cores 2`` on the repository's Snakefile in a fresh temporary working
directory (install time excluded) and prints the wall time and its ratio to the target
(300 s on a 2-core machine).

    python bench/demo_walltime.py [--cores N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep its results")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="diffrecon-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--cores", args.cores, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        print(f"demo FAILED after {wall:.1f} s")
        return 1
    n_jobs = sum(1 for _ in (work / "logs").rglob("*.log"))
    print(f"demo wall time: {wall:.1f} s for {n_jobs} jobs on {args.cores} cores "
          f"(target <= {TARGET_S:.0f} s): ratio {wall / TARGET_S:.2f} -> {'PASS' if wall <= TARGET_S else 'FAIL'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
