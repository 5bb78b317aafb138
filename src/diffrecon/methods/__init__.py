"""The one list of reconstruction methods.

Every method of the tables, the workflow, the config schema and the command line is an entry of
:data:`METHODS`: its name, modality, kind, the trained model it loads, its default parameters
and the module that builds its runner. Everything else is derived from this table: the schema's
method enums (:func:`diffrecon.config.validate_config`), the Snakemake rules' method lists, model
inputs and GPU requests (``workflow/rules/common.smk``), the CLI's ``--method`` choices and the
method table of ``docs/methods.md`` (:func:`markdown_table`).

A method's module defines ``build(method, problem, params, model) -> Runner`` (see
:mod:`diffrecon.methods.runner`): ``method`` is its :class:`Method` entry (one module may serve
several entries), ``problem`` describes the measurement (mask or geometry),
``params`` are the resolved parameters (:func:`resolve_params`), ``model`` the checkpoint stem of
its trained model (or ``None``). Adding a method = one module + one :func:`register` call (or a
line in :data:`METHODS`).

This module imports nothing heavy (no torch): the workflow reads it at every start.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

__all__ = ["Method", "METHODS", "KINDS", "MODELS", "register", "get", "names", "learned", "sampling",
           "resolve_params", "build_runner", "markdown_table", "label"]

#: classical: no training; supervised: a network trained on (measurement, target) pairs;
#: diffusion: samples a generative prior.
KINDS = ("classical", "supervised", "diffusion")

#: Trained models a method can load, by name → what it is. The workflow trains or installs them.
MODELS = {
    "score_mri": "VE score network on magnitude MRI slices (score-MRI)",
    "unet": "image-domain U-Net of one MRI mask family (supervised)",
    "fbp_unet": "post-processing U-Net of one CT setting (supervised)",
    "ct_patch": "VP ε-network on 3-slice patches, spacing-conditioned (DiffusionBlend)",
    "ct_slice": "VP ε-network on axial slices (DDS)",
    "ct_score": "VE score network on axial slices (DiffusionMBIR)",
    "ct_slice_perp": "VP ε-network on coronal/sagittal slices, z windows (TPDM's auxiliary prior)",
    "varnet": "E2E-VarNet of one MRI mask family, multi-coil (supervised)",
}


@dataclass(frozen=True)
class Method:
    """One reconstruction method.

    ``module`` names the module whose ``build(method, problem, params, model)`` returns the runner;
    ``defaults`` are the paper's / original code's parameters (config blocks override them per
    key; a key ``<name>_limited_angle`` replaces ``<name>`` in limited-angle CT settings);
    ``coil_modes`` limits an MRI method to some coil modes (``None``: all); ``paper_steps`` is the
    number of sampling steps the paper runs, by coil mode (key ``None``: any; diffusion methods),
    so that tables built with fewer steps can say so.
    """

    name: str
    modality: str
    kind: str
    module: str
    summary: str
    model: str | None = None
    defaults: dict = field(default_factory=dict)
    coil_modes: tuple[str, ...] | None = None
    paper_steps: dict = field(default_factory=dict)
    #: further trained models, by parameter name: the workflow passes each one's checkpoint stem
    #: as that parameter (TPDM: ``axial_model`` → ``ct_slice``)
    extra_models: dict = field(default_factory=dict)
    #: the name the papers print in their tables and figures (one solver may carry the same
    #: label in both modalities: ``dps`` and ``dps_ct`` are both "DPS")
    label: str = ""

    def __post_init__(self):
        if self.modality not in ("mri", "ct"):
            raise ValueError(f"method {self.name}: modality '{self.modality}' is not one of mri, ct")
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind '{self.kind}' is not one of {', '.join(KINDS)}")
        for model in (self.model, *self.extra_models.values()):
            if model is not None and model not in MODELS:
                raise ValueError(f"method {self.name}: model '{model}' is not one of {', '.join(MODELS)}")

    @property
    def display(self) -> str:
        """The label of tables and figures (the name when no label is set)."""
        return self.label or self.name

    @property
    def learned(self) -> bool:
        """Whether it loads a trained model."""
        return self.model is not None

    def paper_n_steps(self, coil_mode: str | None = None) -> int | None:
        """The paper's number of sampling steps for this coil mode (None: not a sampling method)."""
        return self.paper_steps.get(coil_mode, self.paper_steps.get(None))

    def applies_to(self, coil_mode: str | None) -> bool:
        return self.coil_modes is None or coil_mode is None or coil_mode in self.coil_modes


#: ``dc_scale: original``: ρ, λ, γ are the originals' values, in the units of their back-projector
#: (π/(2V) times the unfiltered back-projection); the CT runner converts them to the true adjoint
#: per geometry (docs/ct_scaling.md).
_BLEND = {"n_steps": 200, "eta": 0.85, "rho": 1e-3, "lam": 5e-5, "cg_iter": 5, "dc_scale": "original"}

#: name → method, in table order.
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"method '{method.name}' is already registered")
    twin = [m.name for m in METHODS.values() if m.modality == method.modality and m.display == method.display]
    if twin:
        raise ValueError(f"method '{method.name}': label '{method.display}' is already {twin[0]}'s "
                         f"({method.modality.upper()} tables need one row name per method)")
    METHODS[method.name] = method
    return method


for _m in (
    # ------------------------------------------------------------------------------------ MRI
    Method("zero_filled", "mri", "classical", "diffrecon.methods.zero_filled",
           "magnitude of F⁻¹y (RSS over coils)", label="Zero-filled"),
    Method("tv", "mri", "classical", "diffrecon.methods.tv",
           "total variation, sigpy PDHG; multi-coil maps by ESPIRiT from the ACS",
           defaults={"lam": 0.01, "iterations": 300, "seed": 0}, label="TV"),
    Method("unet", "mri", "supervised", "diffrecon.methods.unet",
           "fastMRI U-Net on the zero-filled magnitude (instance-normalised), one per mask family", model="unet",
           defaults={"batch_limit": 64}, label="U-Net"),
    Method("score", "mri", "diffusion", "diffrecon.methods.score",
           "score-MRI, Algorithm 2 / 3 / 4 (SSOS) by coil mode", model="score_mri",
           defaults={"n_steps": 2000, "snr": 0.16, "n_samples": 1, "batch_limit": 256},
           paper_steps={None: 2000, "multicoil": 500}, label="score-MRI"),
    Method("score_hybrid", "mri", "diffusion", "diffrecon.methods.score",
           "score-MRI, Algorithm 5 (hybrid SENSE, ESPIRiT maps from the ACS)", model="score_mri",
           defaults={"n_steps": 500, "snr": 0.16, "n_samples": 1, "batch_limit": 256},
           coil_modes=("multicoil",), paper_steps={None: 500}, label="score-MRI (hybrid)"),
    # ------------------------------------------------------------------------------------- CT
    Method("fbp", "ct", "classical", "diffrecon.methods.fbp", "filtered backprojection (Ram-Lak), ASTRA", label="FBP"),
    Method("fbp_unet", "ct", "supervised", "diffrecon.methods.fbp_unet",
           "residual U-Net on the FBP, one per setting", model="fbp_unet", label="FBP-UNet"),
    Method("dds_2d", "ct", "diffusion", "diffrecon.methods.ct_diffusion",
           "DDS 2-D: slice prior, DDIM, proximal CG (I + γAᵀA)x = x̂0 + γAᵀy",
           model="ct_slice",
           defaults={"n_steps": 50, "eta": 0.85, "dc": "proximal", "gamma": 1.0, "cg_iter": 5,
                     "dc_scale": "original"}, paper_steps={None: 50}, label="DDS 2D"),
    Method("dds", "ct", "diffusion", "diffrecon.methods.ct_diffusion",
           "DDS: slice prior, DDIM, one ADMM z-TV iteration per step", model="ct_slice",
           defaults={"n_steps": 50, "eta": 0.85, "rho": 10.0, "lam": 0.04, "lam_limited_angle": 0.4,
                     "cg_iter": 5, "dc_scale": "original"}, paper_steps={None: 50}, label="DDS"),
    Method("diffusion_mbir", "ct", "diffusion", "diffrecon.methods.ct_diffusion",
           "DiffusionMBIR: VE slice prior, predictor-corrector, ADMM z-TV (1 CG)", model="ct_score",
           defaults={"n_steps": 2000, "snr": 0.16, "rho": 10.0, "lam": 0.04, "cg_iter": 1,
                     "langevin_batch": 12, "dc_scale": "original"}, paper_steps={None: 2000}, label="DiffusionMBIR"),
    Method("diffusion_blend", "ct", "diffusion", "diffrecon.methods.ct_diffusion",
           "DiffusionBlend: 3-slice patch prior, adjacent partitions, DDIM + ADMM z-TV", model="ct_patch",
           defaults={**_BLEND, "jump_every": 0}, paper_steps={None: 200}, label="DiffusionBlend"),
    Method("diffusion_blend_pp", "ct", "diffusion", "diffrecon.methods.ct_diffusion",
           "DiffusionBlend++: adjacent and jump-3 partitions alternating", model="ct_patch",
           defaults={**_BLEND, "jump_every": 2, "jump": 3}, paper_steps={None: 200}, label="DiffusionBlend++"),
    Method("tpdm", "ct", "diffusion", "diffrecon.methods.tpdm",
           "TPDM: axial and perpendicular slice priors alternated (auxiliary with probability 1/K), "
           "DDIM, DPS gradient through the prior (ζ = 4·0.025 on the VP state)", model="ct_slice_perp",
           extra_models={"axial_model": "ct_slice"},
           defaults={"n_steps": 50, "eta": 0.85, "aux_every": 2.7, "alternation": "random",
                     "perp_plane": "coronal", "dc": "dps", "zeta": 0.1, "gamma": 1.0, "cg_iter": 5,
                     "dc_scale": "original"}, paper_steps={None: 50}, label="TPDM"),
):
    register(_m)

# ------------------------------------------------------------- DPS and DiffPIR (both modalities)
#: DPS (Chung et al. 2023): 1000 ancestral steps, ζ = 1; DiffPIR (Zhu et al. 2023): 100 steps,
#: λ = 7, ζ = 0.3, σ_n floor 1e-3 for noise-free data (methods/solvers.py; MRI: the VE forms).
_DPS = {"n_steps": 1000, "zeta": 1.0, "batch_limit": 64, "seed": 0}
_DIFFPIR = {"n_steps": 100, "lam": 7.0, "zeta": 0.3, "sigma_n": 0.001, "cg_iter": 5, "batch_limit": 64, "seed": 0}
for _m in (
    Method("dps", "mri", "diffusion", "diffrecon.methods.solvers",
           "DPS: VE prior, ancestral step − ζ∇‖y − A x̂0‖ through the network; SENSE with ESPIRiT maps multi-coil",
           model="score_mri", defaults=_DPS, paper_steps={None: 1000}, label="DPS"),
    Method("diffpir", "mri", "diffusion", "diffrecon.methods.solvers",
           "DiffPIR: VE prior, proximal data step on x̂0 (ρ = λσ_n²/σ²), re-noising with ζ",
           model="score_mri", defaults=_DIFFPIR, paper_steps={None: 100}, label="DiffPIR"),
    Method("dps_ct", "ct", "diffusion", "diffrecon.methods.solvers",
           "DPS: slice prior, DDPM step − ζ∇‖y − A x̂0‖ through the network", model="ct_slice",
           defaults=_DPS, paper_steps={None: 1000}, label="DPS"),
    Method("diffpir_ct", "ct", "diffusion", "diffrecon.methods.solvers",
           "DiffPIR: slice prior, proximal CG (AᵀA + ρ)u = Aᵀy + ρ û0, re-noising with ζ", model="ct_slice",
           defaults=_DIFFPIR, paper_steps={None: 100}, label="DiffPIR"),
):
    register(_m)

# E2E-VarNet (fastMRI's VarNet with its sensitivity network), a multi-coil MRI baseline
register(Method("varnet", "mri", "supervised", "diffrecon.methods.varnet",
                "E2E-VarNet (fastMRI): cascades of k-space DC + U-Net, learned coil maps; one per mask family",
                model="varnet", defaults={"batch_limit": 8}, coil_modes=("multicoil",), label="E2E-VarNet"))


def get(name: str, modality: str | None = None) -> Method:
    """The method called ``name`` (of ``modality`` when given); ValueError naming the choices."""
    method = METHODS.get(name)
    if method is None or (modality is not None and method.modality != modality):
        choices = names(modality) if modality else list(METHODS)
        what = f"{modality.upper()} method" if modality else "method"
        raise ValueError(f"{what} '{name}' is not one of {', '.join(choices)}")
    return method


def names(modality: str | None = None, kind: str | None = None) -> list[str]:
    """Method names (of one modality / kind), in table order."""
    return [m.name for m in METHODS.values()
            if (modality is None or m.modality == modality) and (kind is None or m.kind == kind)]


def learned(modality: str | None = None) -> list[str]:
    """Names of the methods that load a trained model."""
    return [n for n in names(modality) if METHODS[n].learned]


def sampling(modality: str | None = None) -> list[str]:
    """Names of the diffusion methods (they request a GPU on a cluster)."""
    return names(modality, kind="diffusion")


def resolve_params(name: str, params: dict | None = None, limited_angle: bool = False) -> dict:
    """The method's defaults updated by ``params``; ``<key>_limited_angle`` replaces ``<key>`` in
    limited-angle settings and is dropped otherwise."""
    out = {**get(name).defaults, **(params or {})}
    for key in [k for k in out if k.endswith("_limited_angle")]:
        value = out.pop(key)
        if limited_angle:
            out[key[: -len("_limited_angle")]] = value
    return out


def build_runner(name: str, problem, params: dict | None = None, model=None):
    """Build the runner of method ``name`` for ``problem`` (see :mod:`diffrecon.methods.runner`)."""
    method = get(name, problem.modality)
    if not method.applies_to(getattr(problem, "coil_mode", None)):
        raise ValueError(f"method '{name}' does not apply to coil mode '{problem.coil_mode}' "
                         f"(only {', '.join(method.coil_modes)})")
    if method.learned and model is None:
        raise ValueError(f"method '{name}' needs a trained model ({MODELS[method.model]}): give its checkpoint")
    for key, extra in method.extra_models.items():
        if not (params or {}).get(key):
            raise ValueError(f"method '{name}' needs a second trained model ({MODELS[extra]}): give its checkpoint "
                             f"as parameter {key}")
    resolved = resolve_params(name, params, limited_angle=getattr(problem, "limited_angle", False))
    return importlib.import_module(method.module).build(method, problem, resolved, model)


def label(name: str) -> str:
    """The printed name of method ``name`` (``name`` itself when it is not a registered method)."""
    method = METHODS.get(name)
    return method.display if method is not None else str(name)


def markdown_table() -> str:
    """The docs' method table (``docs/methods.md``), generated from :data:`METHODS`."""
    rows = ["| method | printed as | modality | kind | trained model | what it does |", "|---|---|---|---|---|---|"]
    for m in METHODS.values():
        model = f"`{m.model}`" if m.model else "–"
        rows.append(f"| `{m.name}` | {m.display} | {m.modality.upper()} | {m.kind} | {model} | {m.summary} |")
    return "\n".join(rows) + "\n"
