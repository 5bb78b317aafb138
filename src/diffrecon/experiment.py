"""The experiment matrix of a validated config: settings, table cells, per-cell parameters.

Snakemake's ``common.smk`` turns these into file paths; nothing here knows about paths. Method
lists come from the registry (:mod:`diffrecon.methods`). Light imports only (the workflow reads
this at every start).
"""

from __future__ import annotations

import fnmatch
import json

from diffrecon import methods
from diffrecon.settings import CTSetting, MRISetting, coil_mode_of

VIEWS = {"mri": ("image",), "ct": ("axial", "coronal", "sagittal")}


class Experiment:
    """Queries over one validated config dict (:func:`diffrecon.config.validate_config`)."""

    def __init__(self, config: dict):
        self.config = config

    # ----------------------------------------------------------------------------- settings
    def settings(self, modality: str) -> list[str]:
        """Setting names: MRI masks × accelerations × coil modes; CT ``ct.settings``."""
        cfg = self.config.get(modality)
        if not cfg:
            return []
        if modality == "ct":
            return [CTSetting.parse(s).name for s in cfg["settings"]]
        return [MRISetting(mask, acc["factor"], acc["acs_fraction"], coil).name
                for mask in cfg["masks"] for acc in cfg["accelerations"] for coil in cfg["coil_modes"]]

    def methods(self, modality: str) -> list[str]:
        return list(self.config[modality]["methods"]) if self.config.get(modality) else []

    def applies(self, modality: str, setting: str, method: str) -> bool:
        """Whether a method runs in a setting: its coil modes (:attr:`Method.coil_modes`), and
        ``<modality>.learned_settings`` (globs of setting names) for the learned methods."""
        m = methods.get(method, modality)
        if modality == "mri" and not m.applies_to(MRISetting.parse(setting).coil_mode):
            return False
        patterns = self.config[modality].get("learned_settings")
        if m.learned and patterns:
            return any(fnmatch.fnmatch(setting, p) for p in patterns)
        return True

    def learned_in(self, modality: str, setting: str) -> bool:
        """Whether some learned method of the config runs in this setting."""
        return any(methods.get(m).learned and self.applies(modality, setting, m) for m in self.methods(modality))

    # --------------------------------------------------------------------------- robustness
    def robustness_sets(self) -> dict[str, dict]:
        """Out-of-distribution test sets (``mri.robustness``) by name."""
        return {r["name"]: r for r in (self.config.get("mri") or {}).get("robustness", [])}

    def robustness_settings(self, name: str) -> list[str]:
        patterns = self.robustness_sets()[name]["settings"]
        return [s for s in self.settings("mri") if any(fnmatch.fnmatch(s, p) for p in patterns)]

    def test_source(self, dataset: str) -> tuple[str, str]:
        """(dataset whose manifest holds the cases, split) of a table-column dataset."""
        r = self.robustness_sets().get(dataset)
        return (r["of"], r["split"]) if r else (dataset, "test")

    def robustness_columns(self) -> dict:
        """Datasets, settings and methods of the robustness table."""
        datasets, settings = [], []
        for name, r in self.robustness_sets().items():
            datasets += [d for d in (r["of"], name) if d not in datasets]
            settings += [s for s in self.robustness_settings(name) if s not in settings]
        used = [m for m in self.methods("mri") if any(self.applies("mri", s, m) for s in settings)]
        return {"datasets": datasets, "settings": settings, "methods": used}

    # --------------------------------------------------------------------------- prospective
    def prospective_sets(self) -> list[tuple[str, str]]:
        """(dataset, setting) of each prospective dataset (``mri.prospective``): reconstructed with
        the files' own masks in ``prospective-<coil_mode>``, a figure and no table cell."""
        from diffrecon.settings import prospective_setting

        return [(p["dataset"], prospective_setting(p.get("coil_mode", "multicoil")))
                for p in (self.config.get("mri") or {}).get("prospective", [])]

    def prospective_methods(self, dataset: str) -> list[str]:
        """Methods run on a prospective dataset: its ``methods`` (default ``mri.methods``) that apply
        to its coil mode and to any mask (not the supervised ones, trained per mask family), within
        ``mri.learned_settings`` for the learned ones."""
        entry = next(p for p in self.config["mri"].get("prospective", []) if p["dataset"] == dataset)
        setting = dict(self.prospective_sets())[dataset]
        coil_mode = entry.get("coil_mode", "multicoil")
        patterns = self.config["mri"].get("learned_settings")
        out = []
        for name in entry.get("methods") or self.methods("mri"):
            m = methods.get(name, "mri")
            if m.kind == "supervised" or not m.applies_to(coil_mode):
                continue
            if m.learned and patterns and not any(fnmatch.fnmatch(setting, p) for p in patterns):
                continue
            out.append(name)
        return out

    # -------------------------------------------------------------------------------- cells
    def cells(self, modality: str) -> list[tuple[str, str, str]]:
        """Every (dataset, setting, method) table cell of one modality, robustness sets included."""
        cfg = self.config.get(modality)
        if not cfg:
            return []
        out = [(d, s, m) for d in cfg["datasets"] for s in self.settings(modality) for m in cfg["methods"]
               if self.applies(modality, s, m)]
        if modality == "mri":
            out += [(name, s, m) for name in self.robustness_sets() for s in self.robustness_settings(name)
                    for m in cfg["methods"] if self.applies(modality, s, m)]
        return out

    def modalities(self) -> list[str]:
        return [m for m in ("mri", "ct") if self.cells(m)]

    # --------------------------------------------------------------------------- parameters
    def method_params(self, modality: str, setting: str, method: str) -> dict:
        """Reconstruction parameters of one cell from the config (the method's defaults fill the rest).

        score-MRI: ``mri.score``, then ``mri.score_multicoil`` in multi-coil cells (the paper runs
        Algorithms 4/5 with fewer steps), then ``mri.<method>`` (``score_hybrid``); supervised
        methods: only ``device`` of their block (the rest configures training); others: their block.
        """
        cfg = self.config[modality]
        m = methods.get(method, modality)
        if m.module == "diffrecon.methods.score":
            params = dict(cfg.get("score", {}))
            if coil_mode_of(setting) == "multicoil":
                params.update(cfg.get("score_multicoil", {}))
            if method != "score":
                params.update(cfg.get(method, {}))
            return params
        if m.kind == "supervised":
            return {k: v for k, v in cfg.get(method, {}).items() if k == "device"}
        return dict(cfg.get(method, {}))

    def n_samples(self, setting: str, method: str) -> int:
        return int(self.method_params("mri", setting, method).get("n_samples", 1))

    # ----------------------------------------------------------------------------- ablation
    def ablation(self) -> dict | None:
        return (self.config.get("ct") or {}).get("ablation")

    def ablation_variants(self) -> list[tuple[str, str]]:
        """[(method, variant)] of ``ct.ablation`` (steps<N> / jump<J>), in config order."""
        from diffrecon.report.ablation import ablation_variants

        return [tuple(v) for v in ablation_variants(self.ablation())]

    def ablation_params(self, method: str, variant: str) -> dict:
        """Sampler parameters of one variant: ``ct.<method>`` with the studied key replaced."""
        from diffrecon.report.ablation import variant_params

        return variant_params(method, variant, self.config["ct"].get(method), (self.ablation() or {}).get("max_cases"))

    def ablation_runs(self) -> list[str]:
        """The variant whose run each variant reuses, in variant order: variants with identical
        resolved sampler parameters (e.g. jump2 and the steps study at the configured step count)
        share one reconstruction."""
        first, runs = {}, []
        for m, v in self.ablation_variants():
            key = json.dumps([m, methods.resolve_params(m, self.ablation_params(m, v))], sort_keys=True)
            runs.append(first.setdefault(key, v))
        return runs

    def ablation_max_cases(self, modality: str) -> int | None:
        a = self.ablation() if modality == "ct" else self.mri_ablation()
        return (a or {}).get("max_cases")

    def ablation_where(self) -> str:
        a = self.ablation() or {}
        n = a.get("max_cases")
        return f"{a.get('dataset')} · {a.get('setting')} · {f'first {n}' if n else 'all'} test volume(s)"

    # ------------------------------------------------------------------ MRI steps ablation
    def mri_ablation(self) -> dict | None:
        return (self.config.get("mri") or {}).get("ablation")

    def mri_ablation_runs(self) -> list[tuple[str, str, str]]:
        """[(setting, method, steps<N>)] of ``mri.ablation``: the matrix settings matching its globs
        in which its method applies, × the step counts."""
        a = self.mri_ablation()
        if not a:
            return []
        m = methods.get(a["method"], "mri")
        multicoil = a.get("steps_multicoil") or a["steps"]
        settings = [s for s in self.settings("mri") if any(fnmatch.fnmatch(s, p) for p in a["settings"])
                    and m.applies_to(MRISetting.parse(s).coil_mode)]
        return [(s, m.name, f"steps{n}") for s in settings
                for n in (multicoil if MRISetting.parse(s).coil_mode == "multicoil" else a["steps"])]

    def mri_ablation_params(self, setting: str, method: str, variant: str) -> dict:
        """The cell's parameters with ``n_steps`` (and optionally ``n_samples``) replaced."""
        from diffrecon.report.ablation import variant_params

        a = self.mri_ablation()
        params = variant_params(method, variant, self.method_params("mri", setting, method), a.get("max_cases"))
        if a.get("n_samples"):
            params["n_samples"] = int(a["n_samples"])
        return params

    def variant_params(self, modality: str, setting: str, method: str, variant: str) -> dict:
        """Parameters of one ablation variant (either modality)."""
        if modality == "mri":
            return self.mri_ablation_params(setting, method, variant)
        return self.ablation_params(method, variant)

    def reuses_cell(self, modality: str, dataset: str, setting: str, method: str, variant: str) -> bool:
        """Whether an ablation variant is its table cell's own computation on fewer volumes (same
        resolved parameters but ``max_cases``): its metrics are then taken from the cell's
        reconstruction instead of running it again (each case's sampler is seeded alike)."""
        if (dataset, setting, method) not in self.cells(modality):
            return False

        def resolved(params):
            return {k: v for k, v in methods.resolve_params(method, params).items() if k != "max_cases"}

        return resolved(self.variant_params(modality, setting, method, variant)) == \
            resolved(self.method_params(modality, setting, method))

    def mri_ablation_where(self) -> str:
        a = self.mri_ablation() or {}
        n = a.get("max_cases")
        samples = f" · {a['n_samples']} posterior sample(s)" if a.get("n_samples") else ""
        return f"{a.get('dataset')} · {f'first {n}' if n else 'all'} test volume(s){samples}"

    # ------------------------------------------------------------------------ step counts
    def reduced_steps_note(self, modality: str) -> str:
        """A caption sentence naming the sampling methods of the tables that run fewer steps than
        their paper ("" when none does)."""
        parts = []
        for name in self.methods(modality):
            m = methods.get(name)
            if m.kind != "diffusion":
                continue
            used = {}
            for _, s, cell_method in self.cells(modality):
                if cell_method != name:
                    continue
                coil = MRISetting.parse(s).coil_mode if modality == "mri" else None
                n = methods.resolve_params(name, self.method_params(modality, s, name)).get("n_steps")
                paper = m.paper_n_steps(coil)
                if n is not None and paper is not None and n < paper:
                    used[(n, paper)] = None
            if used:
                parts.append(f"{name} " + ", ".join(f"{n} (paper {p})" for n, p in used))
        if not parts:
            return ""
        study = "mri_ablation_steps" if modality == "mri" else "ct_ablation_steps"
        return ("Sampling steps below the papers': " + "; ".join(parts)
                + f" — read against the steps ablation ({study}).")
