# All Python glue of the workflow: config validation, the experiment matrix, path helpers.
# Stage files (data.smk, mri.smk, ct.smk, evaluate.smk, report.smk) hold rules only.

import copy
import fnmatch
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from diffrecon.config import ConfigError, validate_config
from diffrecon.samplers.ct_methods import METHOD_PRIOR
from diffrecon.settings import CTSetting, MRISetting

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

RESULTS = config["results_dir"]
ENV = "../../envs/diffrecon.yaml"


def mri_settings():
    """Names of the MRI settings: masks x accelerations x coil modes."""
    cfg = config.get("mri")
    if not cfg:
        return []
    return [
        MRISetting(mask, acc["factor"], acc["acs_fraction"], coil).name
        for mask in cfg["masks"]
        for acc in cfg["accelerations"]
        for coil in cfg["coil_modes"]
    ]


def ct_settings():
    cfg = config.get("ct")
    return [CTSetting.parse(s).name for s in cfg["settings"]] if cfg else []


def settings_of(modality):
    return mri_settings() if modality == "mri" else ct_settings()


LEARNED_METHODS = {
    "mri": ("score", "score_hybrid", "unet"),
    "ct": ("fbp_unet", *METHOD_PRIOR),
}


def applies(modality, setting, method):
    """Whether a method runs in a setting: the hybrid score algorithm needs multi-coil data, and
    `<modality>.learned_settings` (glob patterns of setting names) can limit the learned methods."""
    if modality == "mri" and method == "score_hybrid" and MRISetting.parse(setting).coil_mode != "multicoil":
        return False
    patterns = config[modality].get("learned_settings")
    if method in LEARNED_METHODS[modality] and patterns:
        return any(fnmatch.fnmatch(setting, p) for p in patterns)
    return True


def robustness_sets():
    """Out-of-distribution test sets (`mri.robustness`) by name."""
    return {r["name"]: r for r in (config.get("mri") or {}).get("robustness", [])}


def robustness_settings(name):
    """MRI settings of one robustness set (its `settings` globs matched against the matrix)."""
    patterns = robustness_sets()[name]["settings"]
    return [s for s in mri_settings() if any(fnmatch.fnmatch(s, p) for p in patterns)]


def test_source(dataset):
    """(dataset whose manifest holds the cases, split) of a table-column dataset."""
    r = robustness_sets().get(dataset)
    return (r["of"], r["split"]) if r else (dataset, "test")


def cells(modality):
    """Every (dataset, setting, method) table cell of one modality, robustness sets included."""
    cfg = config.get(modality)
    if not cfg:
        return []
    out = [
        (d, s, m)
        for d in cfg["datasets"]
        for s in settings_of(modality)
        for m in cfg["methods"]
        if applies(modality, s, m)
    ]
    if modality == "mri":
        out += [
            (name, s, m)
            for name in robustness_sets()
            for s in robustness_settings(name)
            for m in cfg["methods"]
            if applies(modality, s, m)
        ]
    return out


def cell_settings(modality, dataset):
    """The settings a dataset column has: the whole matrix, or a robustness set's selection."""
    return robustness_settings(dataset) if dataset in robustness_sets() else settings_of(modality)


def modalities():
    return [m for m in ("mri", "ct") if cells(m)]


def dataset_config(wildcards):
    """The config block of one dataset (checked against the modality in the path)."""
    cfg = config["datasets"][wildcards.dataset]
    if cfg["modality"] != wildcards.modality:
        raise ValueError(f"dataset {wildcards.dataset} is {cfg['modality']}, not {wildcards.modality}")
    return cfg


def metrics_files(wildcards):
    return [
        f"{RESULTS}/{wildcards.modality}/{d}/{s}/{m}/metrics.csv"
        for d, s, m in cells(wildcards.modality)
    ]


LEARNED = {"score": "score_mri", "score_hybrid": "score_mri"}


def score_params(setting, method):
    """Sampler settings of a score cell: `mri.score`, then `mri.score_multicoil` in multi-coil
    cells (the paper runs Alg. 4/5 with fewer steps), then `mri.score_hybrid` for Alg. 5."""
    mri = config["mri"]
    params = dict(mri.get("score", {}))
    if MRISetting.parse(setting).coil_mode == "multicoil":
        params.update(mri.get("score_multicoil", {}))
    if method == "score_hybrid":
        params.update(mri.get("score_hybrid", {}))
    return params


# CPU threads of each job that runs a network or an iterative CT solver (`threads`; Snakemake
# caps it at --cores). The classical MRI reconstructions are single-threaded.
THREADS = config.get("threads", 1)

# Among ready jobs Snakemake starts the highest priority first. Long jobs (training, learned
# reconstructions) go first, and before them the cheap jobs they wait on (datasets, weights,
# measurements of the settings they run in), so the many short jobs fill the cores around the
# long ones instead of one long job running alone at the end.
PRIORITY_UNLOCKS = 20
PRIORITY_LONG = 10


def learned_in(modality, setting):
    """Whether some learned method of the config runs in this setting."""
    return any(m in LEARNED_METHODS[modality] and applies(modality, setting, m) for m in config[modality]["methods"])


def simulate_priority(modality):
    return lambda wildcards: PRIORITY_UNLOCKS if learned_in(modality, wildcards.setting) else 0


def method_priority(modality):
    return lambda wildcards: PRIORITY_LONG if wildcards.method in LEARNED_METHODS[modality] else 0


def gpu_request(modality):
    """resources: gpu=1 for the reconstructions that sample a diffusion prior (a SLURM profile
    turns it into --gpus=1; local runs are not limited by it)."""
    sampling = LEARNED if modality == "mri" else METHOD_PRIOR
    return lambda wildcards: 1 if wildcards.method in sampling else 0


def mri_threads(wildcards):
    """Learned methods run torch with `threads` threads; the classical ones with one."""
    return THREADS if wildcards.method in (*LEARNED, "unet") else 1


def method_params_mri(wildcards):
    """Parameters of one MRI method from the config (e.g. the `mri.tv` block)."""
    if wildcards.method in LEARNED:
        return score_params(wildcards.setting, wildcards.method)
    if wildcards.method == "unet":  # the rest of `mri.unet` configures training
        return {k: v for k, v in config["mri"].get("unet", {}).items() if k == "device"}
    return dict(config["mri"].get(wildcards.method, {}))


def reconstruct_mri_inputs(wildcards):
    """Measurements, plus the trained prior for learned methods."""
    files = {"measurements": f"{RESULTS}/mri/{wildcards.dataset}/{wildcards.setting}/measurements.h5"}
    if wildcards.method in LEARNED:
        prior = config[LEARNED[wildcards.method]]
        files["model"] = f"{RESULTS}/models/{LEARNED[wildcards.method]}/{prior['dataset']}/model.safetensors"
    elif wildcards.method == "unet":
        files["model"] = unet_checkpoint(wildcards.dataset, wildcards.setting)
    return files


def unet_checkpoint(dataset, setting):
    """The supervised U-Net of a setting's mask family, trained on `mri.unet.dataset` (default: `dataset`)."""
    s = MRISetting.parse(setting)
    trained_on = config["mri"].get("unet", {}).get("dataset") or test_source(dataset)[0]
    return f"{RESULTS}/models/unet/{trained_on}/{s.mask}-R{s.acceleration:g}-acs{s.acs_fraction:g}/model.safetensors"


def method_params_ct(wildcards):
    if wildcards.method == "fbp_unet":  # the rest of `ct.fbp_unet` configures training
        return {k: v for k, v in config["ct"].get("fbp_unet", {}).items() if k == "device"}
    return dict(config["ct"].get(wildcards.method, {}))


def reconstruct_ct_inputs(wildcards):
    """Measurements, plus the trained prior of a CT diffusion method."""
    from diffrecon.samplers.ct_methods import METHOD_PRIOR

    files = {"measurements": f"{RESULTS}/ct/{wildcards.dataset}/{wildcards.setting}/measurements.h5"}
    kind = METHOD_PRIOR.get(wildcards.method)
    if kind:
        files["model"] = f"{RESULTS}/models/ct_{kind}/{config['ct_priors'][kind]['dataset']}/model.safetensors"
    elif wildcards.method == "fbp_unet":
        trained_on = config["ct"].get("fbp_unet", {}).get("dataset") or wildcards.dataset
        files["model"] = f"{RESULTS}/models/fbp_unet/{trained_on}/{wildcards.setting}/model.safetensors"
    return files


def ablation_variants_of_config():
    """[(method, variant)] of `ct.ablation` (steps<N> / jump<J>), in config order."""
    from diffrecon.report.ablation import ablation_variants

    return [list(v) for v in ablation_variants((config.get("ct") or {}).get("ablation"))]


def ablation_metrics_files():
    """Metrics file of each ablation variant, in variant order. Variants with identical sampler
    parameters (e.g. jump2 and the steps study at the configured step count) share one run."""
    import json

    from diffrecon.report.ablation import variant_params
    from diffrecon.samplers.ct_methods import method_settings

    a = (config.get("ct") or {}).get("ablation")
    if not a:
        return []
    first = {}
    files = []
    for m, v in ablation_variants_of_config():
        params = variant_params(m, v, config["ct"].get(m), a.get("max_cases"))
        key = json.dumps([m, method_settings(m, params, limited_angle=False)], sort_keys=True)
        run = first.setdefault(key, v)
        files.append(f"{RESULTS}/ct/{a['dataset']}/{a['setting']}/ablation/{m}/{run}/metrics.csv")
    return files


def ablation_where():
    a = (config.get("ct") or {}).get("ablation") or {}
    n = a.get("max_cases")
    cases = f"first {n}" if n else "all"
    return f"{a.get('dataset')} · {a.get('setting')} · {cases} test volume(s)"


def ablation_params(wildcards):
    """Sampler parameters of one ablation variant: `ct.<method>` with the studied key replaced."""
    from diffrecon.report.ablation import variant_params

    return variant_params(wildcards.method, wildcards.variant, config["ct"].get(wildcards.method),
                          (config["ct"].get("ablation") or {}).get("max_cases"))


def table_methods(wildcards):
    return list(config[wildcards.modality]["methods"])


def table_settings(wildcards):
    return settings_of(wildcards.modality)


def table_datasets(wildcards):
    return list(config[wildcards.modality]["datasets"])


def simulate_manifest(wildcards):
    return f"{RESULTS}/data/mri/{test_source(wildcards.dataset)[0]}/manifest.json"


def robustness_columns():
    """Datasets and settings of the robustness table: each source dataset next to its held-out sets."""
    datasets, settings = [], []
    for name, r in robustness_sets().items():
        datasets += [d for d in (r["of"], name) if d not in datasets]
        settings += [s for s in robustness_settings(name) if s not in settings]
    methods = [m for m in config["mri"]["methods"] if any(applies("mri", s, m) for s in settings)]
    return {"datasets": datasets, "settings": settings, "methods": methods}


def figure_inputs(wildcards):
    """Target, measurements and every method's reconstruction of one setting."""
    base = f"{RESULTS}/{wildcards.modality}/{wildcards.dataset}/{wildcards.setting}"
    files = {"target": f"{base}/target.h5", "measurements": f"{base}/measurements.h5"}
    for m in config[wildcards.modality]["methods"]:
        if applies(wildcards.modality, wildcards.setting, m):
            files[f"recon_{m}"] = f"{base}/{m}/recon.h5"
    return files


def repository_path(path):
    """A config path; relative paths are relative to the repository (shipped weights)."""
    path = Path(path)
    return str(path if path.is_absolute() else Path(workflow.basedir) / path)


def shipped_weights(method):
    """Path of a prior's shipped demo weights (`score_mri.weights`)."""
    return repository_path(config[method]["weights"])


def shipped_weights_ct(kind):
    """Path of a CT prior's shipped demo weights (`ct_priors.<kind>.weights`)."""
    return repository_path(config["ct_priors"][kind]["weights"])


def table_views(modality):
    return ["image"] if modality == "mri" else ["axial", "coronal", "sagittal"]


def final_outputs():
    """Final targets: tables per modality and view, one figure per setting."""
    out = []
    for modality in modalities():
        out.append(f"{RESULTS}/tables/{modality}_summary.csv")
        out += [f"{RESULTS}/tables/{modality}_runtime.{ext}" for ext in ("csv", "md")]
        for view in table_views(modality):
            out += [f"{RESULTS}/tables/{modality}_{view}.{ext}" for ext in ("csv", "md", "tex")]
        for d in config[modality]["datasets"]:
            out += [f"{RESULTS}/figures/{modality}/{d}/{s}.png" for s in settings_of(modality)]
    if "ct" in modalities() and config["ct"].get("ablation"):
        out += [f"{RESULTS}/tables/ct_ablation_{k}.{ext}" for k in ("steps", "jump") for ext in ("csv", "md")]
        out += [f"{RESULTS}/figures/ct/ablation_{k}.png" for k in ("steps", "jump")]
    if "mri" in modalities() and robustness_sets():
        out += [f"{RESULTS}/tables/mri_robustness.{ext}" for ext in ("csv", "md", "tex")]
        out += [f"{RESULTS}/figures/mri/{d}/{s}.png" for d in robustness_sets() for s in robustness_settings(d)]
    if "mri" in modalities():
        out += [
            f"{RESULTS}/figures/mri/{d}/uncertainty/{s}_{m}.png"
            for d, s, m in cells("mri")
            if m in LEARNED and score_params(s, m).get("n_samples", 1) > 1
        ]
    return out
