#!/usr/bin/env bash
# Run by `snakemake --use-conda` once, right after it creates the environment of
# envs/diffrecon-gpu.yaml: the steps of envs/diffrecon.post-deploy.sh, with the same pins
# (tests/unit/test_envs.py checks both scripts). Kept as a copy rather than a call: Snakemake
# runs a copy of this file and hashes its text into the environment's name, so a changed pin
# here rebuilds the environment.
set -euo pipefail
: "${DIFFRECON_ROOT:?not set: run this through the diffrecon Snakefile}"
python -m pip install --no-deps -e "$DIFFRECON_ROOT"
# fastMRI's reference code without its dependencies (they would replace the pinned torch)
python -m pip install --no-deps fastmri==0.3.0 runstats==2.0.0
