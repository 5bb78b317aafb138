# Config → paths. The experiment matrix (settings, cells, parameters) is diffrecon.experiment,
# the method list diffrecon.methods; this file only names the files and validates the config.
# Stage files (data.smk, mri.smk, ct.smk, ...) hold rules only.

import copy
import fnmatch
import os
import re
import sys
from pathlib import Path

try:
    from diffrecon import methods
except ImportError:
    sys.stderr.write("diffrecon is not installed in the Python running snakemake: run `make venv` and use "
                     ".venv/bin/snakemake, or `pip install -e .` in your environment\n")
    sys.exit(1)
from diffrecon.config import ConfigError, baseline_weights, case_group_methods, read_yaml, validate_config
from diffrecon.experiment import VIEWS, Experiment
from diffrecon.settings import CTSetting, MRISetting

# Snakemake parsed the config file(s) itself, keeping the last of duplicate keys: read them again
# strictly (duplicate keys, syntax errors: one line with file, line and column).
try:
    for _path in list(workflow.overwrite_configfiles or workflow.configfiles):
        read_yaml(_path)
except ConfigError as err:
    sys.stderr.write(f"{err}\n")
    sys.exit(1)

# A --configfile given on the command line replaces config.yaml instead of being merged
# into it (a paper config must not inherit the demo's datasets); --config still overrides.
if workflow.overwrite_configfiles:
    config.clear()
    config.update(copy.deepcopy(dict(workflow.config_settings.overwrite_config)))

# `--config retrain=true` arrives as a string
if isinstance(config.get("retrain"), str) and config["retrain"].lower() in ("true", "false"):
    config["retrain"] = config["retrain"].lower() == "true"

try:
    validate_config(config)
except ConfigError as err:
    sys.stderr.write(f"{err}\n")
    sys.exit(1)

X = Experiment(config)

# Where the package lives: envs/diffrecon.post-deploy.sh installs it into the conda environment
# that `--use-conda` creates (the rules' scripts import diffrecon like any installed package).
os.environ.setdefault("DIFFRECON_ROOT", str(Path(workflow.basedir)))
RESULTS = config["results_dir"]
# The rules' conda environment (--use-conda), chosen by the config key conda_env: the CPU or the
# CUDA build of PyTorch, everything else pinned alike (docs/environments.md). Relative to this file.
CONDA_ENVS = {"cpu": "../../envs/diffrecon.yaml", "gpu": "../../envs/diffrecon-gpu.yaml"}
ENV = CONDA_ENVS[config.get("conda_env", "cpu")]

# CPU threads of each job that runs a network or an iterative CT solver (`threads`; Snakemake
# caps it at --cores). The classical MRI reconstructions are single-threaded.
THREADS = config.get("threads", 1)

# Among ready jobs Snakemake starts the highest priority first. Long jobs (training, learned
# reconstructions) go first, and before them the cheap jobs they wait on (datasets, weights,
# measurements of the settings they run in), so the many short jobs fill the cores around the
# long ones instead of one long job running alone at the end.
PRIORITY_UNLOCKS = 20
PRIORITY_LONG = 10


def train_gpus(block):
    """Training processes (one GPU each) of a prior's config block: train.gpus, default 1."""
    return int(((block or {}).get("train") or {}).get("gpus", 1))


def cell_dir(modality, dataset, setting):
    return f"{RESULTS}/{modality}/{dataset}/{setting}"


def metrics_files(wildcards):
    return [f"{cell_dir(wildcards.modality, d, s)}/{m}/metrics.csv" for d, s, m in X.cells(wildcards.modality)]


def dataset_config(wildcards):
    """The config block of one dataset (checked against the modality in the path)."""
    cfg = config["datasets"][wildcards.dataset]
    if cfg["modality"] != wildcards.modality:
        raise ValueError(f"dataset {wildcards.dataset} is {cfg['modality']}, not {wildcards.modality}")
    return cfg


def simulate_manifest(wildcards):
    return f"{RESULTS}/data/mri/{X.test_source(wildcards.dataset)[0]}/manifest.json"


def dataset_inputs(wildcards):
    """The download record of a dataset whose archives are fetched first (its `download` block)."""
    cfg = config["datasets"][wildcards.dataset]
    return {"download": f"{RESULTS}/data/downloads/{wildcards.dataset}.json"} if cfg.get("download") else {}


def prospective_figure_inputs(wildcards):
    """Measurements and every applicable method's reconstruction of a prospective dataset."""
    base = cell_dir("mri", wildcards.dataset, f"prospective-{wildcards.coil_mode}")
    files = {"measurements": f"{base}/measurements.h5"}
    for m in X.prospective_methods(wildcards.dataset):
        files[f"recon_{m}"] = f"{base}/{m}/recon.h5"
    return files


def simulate_priority(modality):
    return lambda wildcards: PRIORITY_UNLOCKS if X.learned_in(modality, wildcards.setting) else 0


def method_priority(wildcards):
    return PRIORITY_LONG if methods.get(wildcards.method).learned else 0


def gpu_request(wildcards):
    """resources: gpu=1 for the reconstructions that sample a diffusion prior (a SLURM profile
    turns it into --gpus=1; local runs are not limited by it)."""
    return 1 if methods.get(wildcards.method).kind == "diffusion" else 0


def reconstruct_threads(wildcards):
    """Learned methods and every CT method run with `threads` threads; classical MRI ones with one."""
    m = methods.get(wildcards.method)
    return THREADS if m.learned or m.modality == "ct" else 1


def method_params(wildcards):
    return X.method_params(wildcards.modality, wildcards.setting, wildcards.method)


def model_path(modality, dataset, setting, method):
    """Checkpoint of the model a learned method loads (None for classical methods)."""
    model = methods.get(method).model
    if model is None:
        return None
    if model == "score_mri":
        return f"{RESULTS}/models/score_mri/{config['score_mri']['dataset']}/model.safetensors"
    if model in ("unet", "varnet"):
        s = MRISetting.parse(setting)
        trained_on = config["mri"].get(model, {}).get("dataset") or X.test_source(dataset)[0]
        return f"{RESULTS}/models/{model}/{trained_on}/{s.mask}-R{s.acceleration:g}-acs{s.acs_fraction:g}/model.safetensors"
    if model == "fbp_unet":
        trained_on = config["ct"].get("fbp_unet", {}).get("dataset") or dataset
        return f"{RESULTS}/models/fbp_unet/{trained_on}/{setting}/model.safetensors"
    kind = model[len("ct_"):]
    return f"{RESULTS}/models/{model}/{config['ct_priors'][kind]['dataset']}/model.safetensors"


#: a table cell's setting (prospective settings have no target and no table cell)
TABLE_SETTING = "(?!prospective-)[^/]+"


def reconstruct_inputs(wildcards):
    """Measurements, plus the trained model(s) of a learned method."""
    files = {"measurements": f"{cell_dir(wildcards.modality, wildcards.dataset, wildcards.setting)}/measurements.h5"}
    model = model_path(wildcards.modality, wildcards.dataset, wildcards.setting, wildcards.method)
    if model:
        files["model"] = model
    files.update(extra_model_paths(wildcards.method))
    return files


def extra_model_paths(method):
    """A method's further models (Method.extra_models: parameter → CT prior), as inputs named by parameter."""
    out = {}
    for key, model in methods.get(method).extra_models.items():
        kind = model[len("ct_"):]
        out[key] = f"{RESULTS}/models/{model}/{config['ct_priors'][kind]['dataset']}/model.safetensors"
    return out


# Slice blocks (mri.blocks): the cells of BLOCKED_METHODS run as one job per block of every
# volume's slices, merged into the cell's recon.h5 (reconstruct.smk); off (null) by default.
_BLOCKS = (config.get("mri") or {}).get("blocks") or {}
BLOCK_COUNT = int(_BLOCKS.get("count", 0))
BLOCKED_METHODS = list(_BLOCKS.get("methods") or methods.sampling("mri")) if BLOCK_COUNT else []


def block_files(wildcards):
    """The block files of one MRI cell, merged into its recon.h5."""
    base = f"{cell_dir(wildcards.modality, wildcards.dataset, wildcards.setting)}/{wildcards.method}"
    return [f"{base}/blocks/{k}-of-{BLOCK_COUNT}.h5" for k in range(1, BLOCK_COUNT + 1)]


# Case groups (mri.case_groups, ct.case_groups): the cells of GROUPED_METHODS run as one job per
# group of their test volumes, merged into the cell's recon.h5 (reconstruct.smk); off (null) by
# default. A method is either slice-blocked or case-grouped (diffrecon.config refuses both).
CASE_GROUPS = {m: int(((config.get(m) or {}).get("case_groups") or {}).get("count", 0)) for m in ("mri", "ct")}
GROUPED_METHODS = {m: case_group_methods(config, m) for m in ("mri", "ct")}
GROUPED_MODALITIES = [m for m in ("mri", "ct") if GROUPED_METHODS[m]]

# The classical MRI methods of one setting (zero-filled, TV: about a second of work per cell) run
# in one job, each still writing its own cell's recon.h5 and metrics.csv: one process start per
# setting instead of one per method (reconstruct.smk: reconstruct_classical).
SHARED_CLASSICAL = [m for m in (config.get("mri") or {}).get("methods") or []
                    if methods.get(m).kind == "classical" and m not in BLOCKED_METHODS + GROUPED_METHODS["mri"]]


def case_files(wildcards):
    """The case group files of one cell, merged into its recon.h5."""
    base = f"{cell_dir(wildcards.modality, wildcards.dataset, wildcards.setting)}/{wildcards.method}"
    n = CASE_GROUPS[wildcards.modality]
    return [f"{base}/cases/{k}-of-{n}.h5" for k in range(1, n + 1)]


def ablation_inputs(wildcards):
    """Measurements and trained model of an ablation variant, and the table cell's reconstruction
    (``cell``) when the variant's computation is the cell's (the job then copies it)."""
    w = wildcards
    files = {"measurements": f"{cell_dir(w.modality, w.dataset, w.setting)}/measurements.h5"}
    if X.reuses_cell(w.modality, w.dataset, w.setting, w.method, w.variant):
        files["cell"] = f"{cell_dir(w.modality, w.dataset, w.setting)}/{w.method}/recon.h5"
    model = model_path(w.modality, w.dataset, w.setting, w.method)
    if model:
        files["model"] = model
    files.update(extra_model_paths(w.method))
    return files


def ablation_metrics_files():
    """Metrics file of each ablation variant (variants with identical parameters share a run)."""
    a = X.ablation()
    if not a:
        return []
    return [f"{cell_dir('ct', a['dataset'], a['setting'])}/ablation/{m}/{run}/metrics.csv"
            for (m, _), run in zip(X.ablation_variants(), X.ablation_runs())]


def mri_ablation_metrics_files():
    """Metrics file of each MRI ablation run, in run order."""
    a = X.mri_ablation()
    if not a:
        return []
    return [f"{cell_dir('mri', a['dataset'], s)}/ablation/{m}/{v}/metrics.csv" for s, m, v in X.mri_ablation_runs()]


def ablation_params(wildcards):
    w = wildcards
    if w.modality == "mri":
        return X.mri_ablation_params(w.setting, w.method, w.variant)
    return X.ablation_params(w.method, w.variant)


def figure_inputs(wildcards):
    """Target, measurements and every method's reconstruction of one setting."""
    base = cell_dir(wildcards.modality, wildcards.dataset, wildcards.setting)
    files = {"target": f"{base}/target.h5", "measurements": f"{base}/measurements.h5"}
    for m in X.methods(wildcards.modality):
        if X.applies(wildcards.modality, wildcards.setting, m):
            files[f"recon_{m}"] = f"{base}/{m}/recon.h5"
    return files


def shipped_baselines():
    """{baseline: {mask family or CT setting: shipped weights}} (diffrecon.config.baseline_weights);
    empty with retrain."""
    return {} if config["retrain"] else baseline_weights(config)


def repository_path(path):
    """A config path; relative paths are relative to the repository (shipped weights)."""
    path = Path(path)
    return str(path if path.is_absolute() else Path(workflow.basedir) / path)


def used_models():
    """Checkpoint of every model the configured run loads (table cells, robustness and prospective
    sets, ablations), each once, in a stable order."""
    paths = []

    def add(modality, dataset, setting, method):
        for path in (model_path(modality, dataset, setting, method), *extra_model_paths(method).values()):
            if path and path not in paths:
                paths.append(path)

    for modality in X.modalities():
        for d, s, m in X.cells(modality):
            add(modality, d, s, m)
    if "mri" in X.modalities():
        for d, s in X.prospective_sets():
            for m in X.prospective_methods(d):
                add("mri", d, s, m)
        for s, m, _ in X.mri_ablation_runs():
            add("mri", X.mri_ablation()["dataset"], s, m)
    if "ct" in X.modalities() and X.ablation():
        for m, _ in X.ablation_variants():
            add("ct", X.ablation()["dataset"], X.ablation()["setting"], m)
    return paths


def _loss_curves():
    """Loss-curve figure name (<model>_<dataset>[_<family>]) → model, dataset, family (mask family
    of an MRI U-Net/VarNet, setting of an FBP-U-Net; "" for the priors) and sidecar JSON."""
    prefix = f"{RESULTS}/models/"
    out = {}
    for path in used_models():
        model, dataset, *family = path[len(prefix):].split("/")[:-1]
        name = "_".join([model, dataset, *family])
        out[name] = {"model": model, "dataset": dataset, "family": "/".join(family),
                     "sidecar": str(Path(path).with_suffix(".json"))}
    return out


#: the training loss curves of the run (rule loss_curves), by figure name
LOSS_CURVES = _loss_curves()


# ---------------------------------------------------------------------------------- report
# `snakemake --report`: every table and figure is filed under a category (REPORT_CATEGORY of its
# modality, "Ablations", "Run time" or "Training") and a subcategory (dataset · setting where it
# belongs to one), with one label that names it uniquely in the report.

REPORT_CATEGORY = {"mri": "MRI", "ct": "CT"}


def report_category(wildcards):
    return REPORT_CATEGORY[wildcards.modality]


def metric_convention(modality):
    """The metric convention of a modality, as printed under its tables (diffrecon.metrics)."""
    from diffrecon.metrics.ct import CT_CONVENTION
    from diffrecon.metrics.mri import MRI_CONVENTION

    return MRI_CONVENTION if modality == "mri" else CT_CONVENTION


def setting_description(modality, setting):
    """A setting name in words (report captions)."""
    if modality == "ct":
        s = CTSetting.parse(setting)
        if s.kind == "sv":
            return f"{setting}: sparse view, {s.n} projection views uniform over [0°, 180°)"
        return f"{setting}: limited angle, {s.n}° at 1° steps"
    if setting.startswith("prospective-"):
        return f"{setting}: prospective data, the files' own sampling masks, {setting[len('prospective-'):]} coil mode"
    s = MRISetting.parse(setting)
    return (f"{setting}: {s.mask} mask, acceleration R = {s.acceleration:g}, ACS fraction {s.acs_fraction:g}, "
            f"{s.coil_mode} coil mode")


def mri_ablation_subcategory():
    a = X.mri_ablation() or {}
    settings = list(dict.fromkeys(s for s, _, _ in X.mri_ablation_runs()))
    return f"{a.get('dataset')} · {' / '.join(settings)}"


#: the MRI tables' titles by coil mode (score-MRI's algorithms)
COIL_TITLES = {"magnitude": "magnitude images (real-valued, Alg. 2)", "singlecoil": "complex single-coil (Alg. 3)",
               "multicoil": "multi-coil (Alg. 4 SSOS, Alg. 5 hybrid)"}


def table_views(modality):
    """Main tables of a modality: CT one per view (axial, coronal, sagittal, as DiffusionBlend),
    MRI one per coil mode (as score-MRI's tables)."""
    return list(config["mri"]["coil_modes"]) if modality == "mri" else list(VIEWS[modality])


def table_settings(wildcards):
    """The settings (columns) of one main table: MRI, those of its coil mode."""
    settings = X.settings(wildcards.modality)
    if wildcards.modality == "mri":
        settings = [s for s in settings if s.endswith(f"-{wildcards.view}")]
    return settings


def figure_settings(modality):
    """Settings whose comparison figure the default target builds, those matching `figures.settings`
    (globs; null: every setting). Any other setting's figure is built when asked for."""
    patterns = (config.get("figures") or {}).get("settings")
    return [s for s in X.settings(modality) if patterns is None or any(fnmatch.fnmatch(s, p) for p in patterns)]


def final_outputs():
    """Final targets: tables per modality and view, one figure per setting, the loss curve of every
    model the run uses."""
    out = []
    for modality in X.modalities():
        out.append(f"{RESULTS}/tables/{modality}_summary.csv")
        out += [f"{RESULTS}/tables/{modality}_runtime.{ext}" for ext in ("csv", "md")]
        for view in table_views(modality):
            out += [f"{RESULTS}/tables/{modality}_{view}.{ext}" for ext in ("csv", "md", "tex")]
        for d in config[modality]["datasets"]:
            out += [f"{RESULTS}/figures/{modality}/{d}/{s}.png" for s in figure_settings(modality)]
    if "ct" in X.modalities() and X.ablation():
        out += [f"{RESULTS}/tables/ct_ablation_{k}.{ext}" for k in ("steps", "jump") for ext in ("csv", "md")]
        out += [f"{RESULTS}/figures/ct/ablation_{k}.png" for k in ("steps", "jump")]
    if "mri" in X.modalities() and X.mri_ablation_runs():
        out += [f"{RESULTS}/tables/mri_ablation_steps.{ext}" for ext in ("csv", "md")]
        out.append(f"{RESULTS}/figures/mri/ablation_steps.png")
    if "mri" in X.modalities() and X.robustness_sets():
        out += [f"{RESULTS}/tables/mri_robustness.{ext}" for ext in ("csv", "md", "tex")]
        out += [f"{RESULTS}/figures/mri/{d}/{s}.png" for d in X.robustness_sets() for s in X.robustness_settings(d)]
    out += [f"{RESULTS}/figures/mri/{d}/{s}.png" for d, s in X.prospective_sets()]
    if "mri" in X.modalities():
        out += [f"{RESULTS}/figures/mri/{d}/uncertainty/{s}_{m}.png" for d, s, m in X.cells("mri")
                if methods.get(m).kind == "diffusion" and X.n_samples(s, m) > 1]
    out += [f"{RESULTS}/figures/training/{name}.png" for name in LOSS_CURVES]
    return out
