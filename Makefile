# Set-up and entry points. `make demo` and `make test` create/update the local venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CORES  ?= all

.PHONY: venv demo test lint bench priors clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first: this exact pin resolves to the local CPU wheel (other specs pull CUDA packages)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[workflow,dev]"
	# fastMRI's reference code without its dependencies (they would replace the CPU torch)
	$(BIN)/python -m pip install -q --no-deps fastmri==0.3.0 runstats==2.0.0
	# deepinv's DiffUNet, the ADM tests' reference, without its dependencies (torchvision would break the CPU torch)
	$(BIN)/python -m pip install -q --no-deps deepinv==0.5.0
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## demo: run the embedded demo end to end (tables in results/tables, figures in results/figures)
demo: venv
	$(BIN)/snakemake --cores $(CORES)

## test: unit + integration tests (no GPU needed; GPU-only tests skip)
test: venv
	@$(BIN)/python -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; exit $$rc

## priors: retrain every shipped demo model (the five priors and the supervised baselines) from the
## demo data (CUDA when present; side by side with --cores all) and export each to weights/ with
## its sidecar and checksum
DEMO_PRIORS := score_mri/demo_brain ct_patch/demo_thorax ct_slice/demo_thorax ct_score/demo_thorax \
               ct_slice_perp/demo_thorax unet/demo_brain/gaussian1d-R4-acs0.12 \
               varnet/demo_brain/gaussian1d-R4-acs0.12 fbp_unet/demo_thorax/sv8
priors: venv
	$(BIN)/snakemake --cores $(CORES) --config retrain=true -- \
	    $(foreach m,$(DEMO_PRIORS),results/models/$(m)/model.safetensors)
	$(foreach m,$(DEMO_PRIORS),$(BIN)/diffrecon export-weights results/models/$(m)/model.safetensors \
	    weights/$(subst .,,$(subst /,_,$(m))).safetensors &&) true

lint: venv
	$(BIN)/snakemake --lint

## bench: speed benchmarks (print measured ratios against their targets)
bench: venv
	$(BIN)/python bench/ct_operator.py
	$(BIN)/python bench/blend_sampler.py
	$(BIN)/python bench/demo_walltime.py

clean:
	rm -rf results logs .snakemake
