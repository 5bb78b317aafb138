"""Configuration validation with one-line error messages.

The pipeline's ``config.yaml`` is checked against the package's ``schemas/config.schema.yaml``
(JSON Schema 2020-12, ``additionalProperties: false``), whose method enums are filled from the
method registry (:mod:`diffrecon.methods`). The first (most relevant)
violation is reported as a single line naming the key path and the allowed values,
e.g. ``config: mri.masks[0]: 'gaussian3d' is not one of gaussian1d, uniform1d, ...``.
Defaults declared in the schema are filled in. Cross-references (experiment
datasets must exist and have the right modality) are checked too.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; ``str(err)`` is the one-line message shown to the user."""


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
    from diffrecon import methods

    def prior_kind(method):             # ct_patch → patch (the key of ct_priors), else None
        model = methods.get(method).model or ""
        return model[len("ct_"):] if model.startswith("ct_") else None

    for i, method in enumerate((config.get("ct") or {}).get("methods", [])):
        if method == "fbp_unet" and not {"model", "train"} <= set(config["ct"].get("fbp_unet", {})):
            raise ConfigError(f"config: ct.methods[{i}]: 'fbp_unet' needs ct.fbp_unet.model and ct.fbp_unet.train")
        kind = prior_kind(method)
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
        if not config.get("retrain") and not prior.get("weights"):
            raise ConfigError(f"config: ct_priors.{kind}.weights: no shipped weights given; set them or retrain: true")
        if prior["dataset"] not in datasets or datasets[prior["dataset"]]["modality"] != "ct":
            raise ConfigError(f"config: ct_priors.{kind}.dataset: '{prior['dataset']}' is not a CT dataset")
        if kind == "score" and "sde" not in prior:
            raise ConfigError("config: ct_priors.score.sde: the VE prior needs sigma_min and sigma_max")
    for i, entry in enumerate(config.get("mri", {}).get("robustness", [])):
        if entry["of"] not in config["mri"]["datasets"]:
            raise ConfigError(f"config: mri.robustness[{i}].of: '{entry['of']}' is not one of mri.datasets "
                              f"({', '.join(config['mri']['datasets'])})")
        if entry["name"] in datasets:
            raise ConfigError(f"config: mri.robustness[{i}].name: '{entry['name']}' is already a dataset name")
    _check_prospective(config, datasets)
    return config


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
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__})") from None
    return validate_config(config)
