#!/usr/bin/env bash
# Run by `snakemake --use-conda` once, right after it creates the environment of
# envs/diffrecon.yaml: installs the diffrecon package itself (editable, no dependencies: the
# environment file pins them) from the repository whose Snakefile is running. The workflow
# exports that location as DIFFRECON_ROOT (workflow/rules/common.smk).
set -euo pipefail
: "${DIFFRECON_ROOT:?not set: run this through the diffrecon Snakefile}"
python -m pip install --no-deps -e "$DIFFRECON_ROOT"
# fastMRI's reference code (the networks of the U-Net and E2E-VarNet baselines), without its dependencies: the declared ones would
# replace the pinned torch (pyproject.toml, extra `fastmri`)
python -m pip install --no-deps fastmri==0.3.0 runstats==2.0.0
