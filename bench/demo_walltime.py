"""Benchmark: wall time of the whole demo (default config.yaml) from an empty results folder.

Runs ``snakemake --cores 2`` on the repository's Snakefile in a fresh temporary working
directory (install time excluded) and prints the wall time and its ratio to the target
(300 s on a 2-core machine), after the job seconds per rule (where the time goes; snakemake's
log is kept as ``snakemake.log`` in the working directory).

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


def job_seconds(log: str) -> dict[str, list[float]]:
    """Rule → duration of each of its jobs, from snakemake's log (timestamps at job start and end)."""
    import datetime
    import re

    starts, rules, out = {}, {}, {}
    stamp = rule = None
    for line in log.splitlines():
        if m := re.match(r"\[(\w{3} \w{3}\s+\d+ [\d:]+ \d{4})\]", line):
            stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule:
            starts[m.group(1)], rules[m.group(1)], rule = stamp, rule, None
        elif (m := re.match(r"Finished jobid: (\d+)", line)) and m.group(1) in starts:
            out.setdefault(rules[m.group(1)], []).append((stamp - starts[m.group(1)]).total_seconds())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", default="2")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep its results")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="diffrecon-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--cores", args.cores]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        print(f"demo FAILED after {wall:.1f} s")
        return 1
    per_rule = job_seconds(proc.stdout + proc.stderr)
    n_jobs = sum(len(v) for v in per_rule.values())
    print("job seconds by rule (start to finish of each job, whole seconds; sum over jobs):")
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"  {rule:28s} {len(secs):4d} jobs {sum(secs):7.0f} s")
    print(f"demo wall time: {wall:.1f} s for {n_jobs} jobs on {args.cores} cores "
          f"(target <= {TARGET_S:.0f} s): ratio {wall / TARGET_S:.2f} -> {'PASS' if wall <= TARGET_S else 'FAIL'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
