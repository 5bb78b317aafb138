"""Configuration validation with one-line error messages.

The pipeline's ``config.yaml`` is checked against the package's ``schemas/config.schema.yaml``
(JSON Schema 2020-12, ``additionalProperties: false``), whose method enums are filled from the
method registry (:mod:`diffrecon.methods`). The first (most relevant)
violation is reported as a single line naming the key path and the allowed values,
e.g. ``config: mri.masks[0]: 'gaussian3d' is not one of gaussian1d, uniform1d, ...``.
Defaults declared in the schema are filled in. Cross-references (experiment
datasets must exist and have the right modality) are checked too, and so is whatever would only
fail later in a job: setting names (``la400``), masks that cannot be drawn at an acceleration,
``source: files`` globs that match nothing, shipped weights that are missing.

Files are read with :func:`read_yaml`: duplicate keys and syntax errors are one line with the
file, line and column (``config.yaml:12:3: duplicate key 'seed' (first at line 3)``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; ``str(err)`` is the one-line message shown to the user."""


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:               # unhashable key: let PyYAML report it
            continue
        if first is not None:
            mark = key_node.start_mark
            raise ConfigError(f"{mark.name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} "
                              f"(first at line {first.line + 1})")
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path):
    """Parse a YAML config file strictly; raise :class:`ConfigError` with one line
    (``file:line:column: message``) on a syntax error, a duplicate key or an unreadable file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc.__class__.__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read config (not UTF-8 text)") from None
    try:
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(exc.problem or exc.context or "syntax error").split())
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config (expected a mapping of keys such as seed, datasets)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config is a {type(data).__name__}, not a mapping of keys "
                          "(seed, datasets, ...)")
    return data


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(err) -> str:
    where = _key_path(err.absolute_path)
    if err.validator == "enum":
        return f"{where}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        return f"{where}: unknown key {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})"
    if err.validator == "propertyNames":
        allowed = err.validator_value.get("enum") or err.validator_value.get("pattern")
        bad = err.instance if not isinstance(err.instance, dict) else ""
        return f"{where}: unknown key {bad!r} (allowed: {', '.join(allowed) if isinstance(allowed, list) else allowed})"
    return f"{where}: {err.message}"


def _fill_defaults(schema: dict, instance, root: dict):
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(schema["items"], item, root)
        return
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub = {**_resolve(sub["$ref"], root), **{k: v for k, v in sub.items() if k != "$ref"}}
        if key not in instance and "default" in sub:
            instance[key] = sub["default"]
        if key in instance:
            _fill_defaults(sub, instance[key], root)
    for branch in schema.get("allOf", []):       # if/then alternatives (a prior's model block)
        if "if" in branch and "then" in branch and _matches(branch["if"], instance, root):
            then = branch["then"]
            _fill_defaults(_resolve(then["$ref"], root) if "$ref" in then else then, instance, root)


def _matches(fragment: dict, instance, root: dict) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator({"$defs": root["$defs"], **fragment}).is_valid(instance)


def _resolve(ref: str, root: dict) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def load_schema(schema_path=SCHEMA) -> dict:
    """The config schema with the method enums of the registry filled in."""
    from diffrecon import methods

    schema = yaml.safe_load(Path(schema_path).read_text())
    defs = schema["$defs"]
    defs["mri_method"]["enum"] = methods.names("mri")
    defs["ct_method"]["enum"] = methods.names("ct")
    defs["ct_diffusion_method"]["enum"] = methods.names("ct", kind="diffusion")
    return schema


def check_value(pointer: str, value, key: str | None = None, schema: dict | None = None) -> str | None:
    """Check one value against the schema fragment at ``pointer`` (e.g. ``$defs/score_sampler``,
    ``properties/mri/properties/tv``), as property ``key`` of it when given: the same constraint
    the config's value meets. Returns the problem (jsonschema's message) or None.

    The command line checks its options with this, so a bound changed in the schema changes both.
    """
    import jsonschema

    schema = schema or load_schema()
    fragment = _resolve(pointer, schema)
    if key is not None:
        props = fragment.get("properties", {})
        if "$ref" in fragment and not props:
            props = _resolve(fragment["$ref"], schema).get("properties", {})
        fragment, value = props[key], value
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], **fragment})
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else error.message


def validate_config(config: dict, schema_path=SCHEMA) -> dict:
    """Validate ``config`` in place (defaults filled); raise :class:`ConfigError` with one line."""
    import jsonschema

    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(f"config: {_message(error)}")
    _fill_defaults(schema, config, schema)
    datasets = config["datasets"]
    for modality in ("mri", "ct"):
        for i, name in enumerate(config.get(modality, {}).get("datasets", [])):
            if name not in datasets:
                raise ConfigError(f"config: {modality}.datasets[{i}]: '{name}' is not a dataset (defined: {', '.join(datasets)})")
            if datasets[name]["modality"] != modality:
                raise ConfigError(f"config: {modality}.datasets[{i}]: '{name}' has modality {datasets[name]['modality']}, not {modality}")
    if config.get("score_mri") and not config.get("retrain") and not config["score_mri"].get("weights"):
        raise ConfigError("config: score_mri.weights: no shipped weights given; set them or retrain: true")
    if config.get("score_mri"):
        _check_architecture("score_mri", "score", config["score_mri"]["model"])
    from diffrecon import methods

    def prior_kind(method):             # ct_patch → patch (the key of ct_priors), else None
        model = methods.get(method).model or ""
        return model[len("ct_"):] if model.startswith("ct_") else None

    for i, method in enumerate((config.get("ct") or {}).get("methods", [])):
        if method == "fbp_unet" and not {"model", "train"} <= set(config["ct"].get("fbp_unet", {})):
            raise ConfigError(f"config: ct.methods[{i}]: 'fbp_unet' needs ct.fbp_unet.model and ct.fbp_unet.train")
        kinds = [prior_kind(method)] + [m[len("ct_"):] for m in methods.get(method).extra_models.values()]
        for kind in kinds:
            if kind and kind not in (config.get("ct_priors") or {}):
                raise ConfigError(f"config: ct.methods[{i}]: '{method}' needs the prior ct_priors.{kind}")
    ablation = (config.get("ct") or {}).get("ablation")
    if ablation:
        name = ablation["dataset"]
        if name not in datasets or datasets[name]["modality"] != "ct":
            raise ConfigError(f"config: ct.ablation.dataset: '{name}' is not a CT dataset")
        studied = list(ablation["steps_methods"] if ablation["steps"] else [])
        studied += ["diffusion_blend_pp"] if ablation["jump_every"] else []
        for method in studied:
            if prior_kind(method) not in (config.get("ct_priors") or {}):
                raise ConfigError(f"config: ct.ablation: '{method}' needs the prior ct_priors.{prior_kind(method)}")
    for kind, prior in (config.get("ct_priors") or {}).items():
        if not config.get("retrain") and not prior.get("weights") and kind != "slice_perp":   # slice_perp: trained when not shipped
            raise ConfigError(f"config: ct_priors.{kind}.weights: no shipped weights given; set them or retrain: true")
        if prior["dataset"] not in datasets or datasets[prior["dataset"]]["modality"] != "ct":
            raise ConfigError(f"config: ct_priors.{kind}.dataset: '{prior['dataset']}' is not a CT dataset")
        if kind == "score" and "sde" not in prior:
            raise ConfigError("config: ct_priors.score.sde: the VE prior needs sigma_min and sigma_max")
        _check_architecture(f"ct_priors.{kind}", kind, prior["model"])
    for i, entry in enumerate(config.get("mri", {}).get("robustness", [])):
        if entry["of"] not in config["mri"]["datasets"]:
            raise ConfigError(f"config: mri.robustness[{i}].of: '{entry['of']}' is not one of mri.datasets "
                              f"({', '.join(config['mri']['datasets'])})")
        if entry["name"] in datasets:
            raise ConfigError(f"config: mri.robustness[{i}].name: '{entry['name']}' is already a dataset name")
    _check_prospective(config, datasets)
    _check_case_groups(config)
    _check_training(config)
    _check_settings(config)
    _check_files(config)
    _check_weights(config)
    _check_init_from(config)
    return config


def block_methods(config: dict) -> list[str]:
    """The MRI methods whose cells run in slice blocks (mri.blocks; default: the diffusion methods)."""
    from diffrecon import methods

    blocks = (config.get("mri") or {}).get("blocks") or {}
    return list(blocks.get("methods") or methods.sampling("mri")) if blocks.get("count") else []


def case_group_methods(config: dict, modality: str) -> list[str]:
    """The methods of ``modality`` whose cells run in case groups (<modality>.case_groups; default:
    the diffusion methods)."""
    from diffrecon import methods

    groups = (config.get(modality) or {}).get("case_groups") or {}
    return list(groups.get("methods") or methods.sampling(modality)) if groups.get("count") else []


def _check_case_groups(config: dict) -> None:
    """A method is either slice-blocked (mri.blocks) or case-grouped (mri.case_groups), not both."""
    both = [m for m in case_group_methods(config, "mri") if m in block_methods(config)]
    if both:
        raise ConfigError(f"config: mri.case_groups: '{both[0]}' is also in mri.blocks (a method runs in "
                          "slice blocks or in case groups, not both: name it in one methods list)")


def _check_training(config: dict) -> None:
    """Data-parallel priors split the global batch evenly (``batch_size`` a multiple of ``gpus``);
    the supervised FBP-U-Net trains in one process on its in-memory FBP pairs."""
    blocks = [("score_mri", config.get("score_mri"))]
    blocks += [(f"ct_priors.{kind}", prior) for kind, prior in (config.get("ct_priors") or {}).items()]
    for where, block in blocks:
        train = (block or {}).get("train") or {}
        gpus, batch = train.get("gpus", 1), train.get("batch_size", 16)
        if batch % gpus:
            raise ConfigError(f"config: {where}.train.batch_size: {batch} is not a multiple of train.gpus ({gpus}): "
                              "each process takes an equal share of the global batch")
    train = ((config.get("ct") or {}).get("fbp_unet") or {}).get("train") or {}
    for key, single in (("gpus", 1), ("loader", "memory")):
        if train.get(key, single) != single:
            raise ConfigError(f"config: ct.fbp_unet.train.{key}: the FBP-U-Net trains in one process on in-memory "
                              f"FBP pairs ({key} {single!r} only)")


def _check_settings(config: dict) -> None:
    """Setting names parse (``la400``, ``sv5000``) and every mask can be drawn at every
    acceleration (on the demo datasets' grids; the equispaced mask needs an integer R)."""
    from diffrecon.physics.masks import mask_problem
    from diffrecon.settings import CTSetting

    ct = config.get("ct") or {}
    for i, name in enumerate(ct.get("settings", [])):
        try:
            CTSetting.parse(name)
        except ValueError as exc:
            raise ConfigError(f"config: ct.settings[{i}]: {exc}") from None
    mri = config.get("mri") or {}
    shapes = {}
    for name in mri.get("datasets", []):
        cfg = config["datasets"][name]
        if cfg["source"] in ("demo", "anatomy"):
            shapes[name] = (cfg["size"], cfg["size"])
    for mask in mri.get("masks", []):
        for j, acc in enumerate(mri.get("accelerations", [])):
            if mask == "equispaced" and float(acc["factor"]) != int(acc["factor"]):
                raise ConfigError(f"config: mri.accelerations[{j}]: mask 'equispaced' needs an integer factor, "
                                  f"got {acc['factor']:g}")
            for name, shape in shapes.items():
                problem = mask_problem(mask, shape, acc["factor"], acc["acs_fraction"])
                if problem:
                    raise ConfigError(f"config: mri.accelerations[{j}]: mask '{mask}' on {name} "
                                      f"({shape[0]}x{shape[1]}): {problem}")


def _check_files(config: dict) -> None:
    """Every split pattern of a ``source: files`` dataset matches a file now (nothing creates them).
    dicom / nifti / fastmri trees are checked by their preparation job: a download rule may
    create them, and placeholder paths of the paper configs must still dry-run."""
    import glob

    for name, cfg in config["datasets"].items():
        if cfg["source"] != "files":
            continue
        for split, pattern in cfg["files"].items():
            if not glob.glob(str(Path(pattern).expanduser()), recursive=True):
                raise ConfigError(f"config: datasets.{name}.files.{split}: the pattern '{pattern}' matches no file")


def repository_root() -> Path:
    """Where relative weight paths of a config point (the repository, or $DIFFRECON_ROOT)."""
    import os

    return Path(os.environ.get("DIFFRECON_ROOT") or Path(__file__).resolve().parents[2])


#: the config block of each supervised baseline that may ship weights per mask family / CT setting
BASELINE_BLOCKS = {"unet": "mri.unet", "varnet": "mri.varnet", "fbp_unet": "ct.fbp_unet"}


def baseline_weights(config: dict) -> dict[str, dict[str, str]]:
    """{baseline: {mask family or CT setting: weights file}} of the supervised baselines whose block
    (:data:`BASELINE_BLOCKS`) has a ``weights`` map; retrain or not is the caller's business."""
    out = {}
    for name, key in BASELINE_BLOCKS.items():
        section, block = key.split(".")
        files = ((config.get(section) or {}).get(block) or {}).get("weights")
        if files:
            out[name] = dict(files)
    return out


def _check_weights(config: dict) -> None:
    """Shipped weights given (and not retraining) exist, as do their .sha256 files."""
    if config.get("retrain"):
        return
    given = [("score_mri.weights", (config.get("score_mri") or {}).get("weights"), "score_mri")]
    given += [(f"ct_priors.{k}.weights", (v or {}).get("weights"), f"ct_{k}")
              for k, v in (config.get("ct_priors") or {}).items()]
    given += [(f"{BASELINE_BLOCKS[name]}.weights.{family}", weights, name)       # supervised baselines:
              for name, files in baseline_weights(config).items() for family, weights in files.items()]
    for key, weights, want in given:
        if not weights:
            continue
        path = Path(weights).expanduser()
        if not path.is_absolute() and not path.exists():
            path = repository_root() / path
        if not path.is_file():
            raise ConfigError(f"config: {key}: no file '{weights}' (relative paths are relative to "
                              f"the repository {repository_root()}); set it or retrain: true")
        problem = _weights_problem(path, want)
        if problem:
            raise ConfigError(f"config: {key}: {problem}")


def _check_architecture(key: str, kind: str, model: dict) -> None:
    """VP priors (patch, slice) are the default UNet or ADM; VE priors (score) the default UNet or NCSN++."""
    arch = model.get("architecture")
    allowed = ("ncsnpp",) if kind == "score" else ("adm",)
    if arch is not None and arch not in allowed:
        what = "a VE score prior" if kind == "score" else "a VP noise prior"
        raise ConfigError(f"config: {key}.model.architecture: {what} is the default UNet (no architecture) or "
                          f"{allowed[0]!r}, not {arch!r}")


def _weights_problem(path: Path, want: str) -> str | None:
    """Why the weights at ``path`` cannot be the model ``want`` (``score_mri``, ``ct_patch``, ``unet``, ...),
    by their sidecar (None if they can, or if there is no readable sidecar to tell: loading will)."""
    import json

    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    from diffrecon.io import sidecar_model

    method = sidecar_model(meta)
    if method == want:
        return None
    layout = f" (imported layout {meta['layout']})" if meta.get("layout") else ""
    hint = "; it is an initialisation: give it as init_from of an ADM prior" if method == "adm_pretrained" else ""
    return f"'{path}' holds a {method!r} prior{layout}, not a {want!r} prior{hint}"


def _check_init_from(config: dict) -> None:
    """A prior's ``init_from`` weights exist (with their sidecar) when the prior is trained."""
    for kind, prior in (config.get("ct_priors") or {}).items():
        init = (prior or {}).get("init_from")
        if not init or (prior.get("weights") and not config.get("retrain")):
            continue
        path = Path(init).expanduser()
        if not path.is_absolute() and not path.exists():
            path = repository_root() / path
        if path.suffix != ".safetensors" or not path.is_file() or not path.with_suffix(".json").is_file():
            raise ConfigError(f"config: ct_priors.{kind}.init_from: no weights '{init}' with their .json sidecar "
                              "(convert a published checkpoint with diffrecon import-weights)")


def _check_prospective(config: dict, datasets: dict) -> None:
    """Prospective datasets (no targets) are reconstructed through ``mri.prospective`` only."""
    mri = config.get("mri") or {}
    for i, name in enumerate(mri.get("datasets", [])):
        if datasets[name].get("prospective"):
            raise ConfigError(f"config: mri.datasets[{i}]: '{name}' is prospective (no targets, no table cell); "
                              "list it under mri.prospective")
    for i, entry in enumerate(mri.get("prospective", [])):
        cfg = datasets.get(entry["dataset"])
        if cfg is None or cfg["modality"] != "mri" or cfg["source"] != "fastmri" or not cfg.get("prospective"):
            raise ConfigError(f"config: mri.prospective[{i}].dataset: '{entry['dataset']}' is not an MRI dataset "
                              "with source: fastmri and prospective: true")


def load_config(path) -> dict:
    """Read (strictly, :func:`read_yaml`) and validate a YAML config file."""
    return validate_config(read_yaml(path))
