"""The rules' conda environments (envs/) pin exactly what the tests run with.

`snakemake --use-conda` builds envs/diffrecon.yaml (CPU) or envs/diffrecon-gpu.yaml (GPU nodes)
and their post-deploy scripts; conda cannot run here, so the files are checked against the
running interpreter instead: every pin equals the installed version, every runtime dependency of
pyproject.toml is pinned, the channels are conda-forge only, and the GPU file differs from the CPU
file in the PyTorch lines only (docs/environments.md).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CPU = ROOT / "envs" / "diffrecon.yaml"
GPU = ROOT / "envs" / "diffrecon-gpu.yaml"
ENVS = [CPU, GPU]

# conda-forge names whose distribution (what importlib.metadata knows) is spelled differently
CONDA_TO_DIST = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "py-opencv": "opencv-python",
}
# Listed without a pin on purpose: the installer of the `pip:` section, not a dependency of the
# package (the venv upgrades it to the newest release).
UNPINNED = {"pip"}
TORCH_INDEX = "https://download.pytorch.org/whl/"


def _normal(name: str) -> str:
    return canonicalize_name(CONDA_TO_DIST.get(name, name))


def parse_env(path: Path) -> dict:
    """channels, conda pins {dist name: version}, pip pins {dist name: version}, pip options."""
    env = yaml.safe_load(path.read_text())
    conda, pip, options, unpinned = {}, {}, [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"{path.name}: unexpected entry {entry}"
            for line in entry["pip"]:
                if line.startswith("-"):
                    options.append(line)
                    continue
                req = Requirement(line)
                specs = list(req.specifier)
                assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: not an == pin: {line}"
                pip[canonicalize_name(req.name)] = specs[0].version
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(?:==\s*([^\s=<>!*,|]+))?", entry)
        assert m, f"{path.name}: not a plain `name==version` conda pin: {entry!r}"
        name, version = m.groups()
        if version is None:
            unpinned.append(name)
            continue
        if name == "python":
            conda["python"] = version
        else:
            conda[_normal(name)] = version
    return {"channels": env["channels"], "conda": conda, "pip": pip, "options": options, "unpinned": unpinned}


def post_deploy_pins(path: Path) -> dict:
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    return {canonicalize_name(n): v for n, v in re.findall(r"([A-Za-z0-9_.\-]+)==([^\s\"']+)", text)}


def installed(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{dist} is pinned in envs/ but not installed in the interpreter running the tests")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module", params=ENVS, ids=lambda p: p.name)
def env(request):
    return request.param, parse_env(request.param)


def test_channels_are_conda_forge_only(env):
    path, e = env
    assert e["channels"] == ["conda-forge", "nodefaults"], path.name
    for bad in ("pytorch", "defaults", "nvidia", "anaconda"):
        assert bad not in e["channels"]


def test_only_the_pip_installer_is_unpinned(env):
    path, e = env
    assert set(e["unpinned"]) == UNPINNED, f"{path.name}: unpinned {e['unpinned']}"


def test_python_matches_the_interpreter(env):
    path, e = env
    assert e["conda"]["python"] == "{}.{}.{}".format(*sys.version_info[:3]), path.name


def test_each_package_in_one_section_only(env):
    path, e = env
    assert not set(e["conda"]) & set(e["pip"]), f"{path.name}: in both sections: {set(e['conda']) & set(e['pip'])}"


def test_every_pin_equals_the_installed_version(env):
    path, e = env
    pins = {**{k: v for k, v in e["conda"].items() if k != "python"}, **e["pip"]}
    wrong = {}
    for dist, pinned in pins.items():
        have = installed(dist)
        if dist == "torch":     # the build (+cpu, +cu128) is the file's choice; the version is not
            ok = Version(pinned).public == Version(have).public
        else:
            ok = Version(pinned) == Version(have) and pinned == have
        if not ok:
            wrong[dist] = (pinned, have)
    assert not wrong, f"{path.name}: pinned != installed: {wrong}"


def test_every_runtime_dependency_is_pinned(env):
    path, e = env
    pinned = set(e["conda"]) | set(e["pip"])
    declared = list(project()["dependencies"]) + list(project()["optional-dependencies"]["workflow"])
    missing = sorted(canonicalize_name(Requirement(r).name) for r in declared
                     if canonicalize_name(Requirement(r).name) not in pinned)
    assert not missing, f"{path.name}: runtime dependencies without a pin: {missing}"


def test_torch_build_matches_its_index():
    for path, local, index in ((CPU, "cpu", "cpu"), (GPU, None, None)):
        e = parse_env(path)
        torch = Version(e["pip"]["torch"])
        indexes = [o.split()[-1] for o in e["options"] if o.startswith("--extra-index-url")]
        assert len(indexes) == 1 and indexes[0].startswith(TORCH_INDEX), f"{path.name}: {e['options']}"
        assert not any(o.startswith("--index-url") for o in e["options"]), "would replace PyPI for every pip pin"
        label = indexes[0][len(TORCH_INDEX):].strip("/")
        assert torch.local == label, f"{path.name}: torch {torch} from the {label} index"
        if local is not None:
            assert label == local
        else:
            assert re.fullmatch(r"cu12\d", label), f"{path.name}: not a CUDA 12 build: {label}"


def test_gpu_env_differs_only_in_torch():
    cpu, gpu = parse_env(CPU), parse_env(GPU)
    assert gpu["channels"] == cpu["channels"]
    assert gpu["conda"] == cpu["conda"] and gpu["unpinned"] == cpu["unpinned"]
    assert {k: v for k, v in gpu["pip"].items() if k != "torch"} == {k: v for k, v in cpu["pip"].items() if k != "torch"}
    assert Version(gpu["pip"]["torch"]).public == Version(cpu["pip"]["torch"]).public
    assert gpu["options"] != cpu["options"]
    # line by line: nothing else (order included) outside comments
    strip = lambda p: [ln for ln in (l.split("#", 1)[0].rstrip() for l in p.read_text().splitlines()) if ln]
    diff = [(a, b) for a, b in zip(strip(CPU), strip(GPU)) if a != b]
    assert len(strip(CPU)) == len(strip(GPU))
    assert all("torch" in a + b for a, b in diff), diff


@pytest.mark.parametrize("script", ["diffrecon.post-deploy.sh", "diffrecon-gpu.post-deploy.sh"])
def test_post_deploy_pins_equal_the_installed_versions(script):
    path = ROOT / "envs" / script
    pins = post_deploy_pins(path)
    fastmri = {canonicalize_name(Requirement(r).name): str(next(iter(Requirement(r).specifier)).version)
               for r in project()["optional-dependencies"]["fastmri"]}
    assert pins == fastmri, f"{script}: {pins} != pyproject.toml's extra fastmri {fastmri}"
    for dist, pinned in pins.items():
        assert installed(dist) == pinned, f"{script}: {dist}=={pinned}, installed {installed(dist)}"
    text = path.read_text()
    assert 'pip install --no-deps -e "$DIFFRECON_ROOT"' in text
    assert "--no-deps fastmri==" in text


def test_each_env_has_its_post_deploy_script():
    # Snakemake runs <env file without .yaml>.post-deploy.sh, found next to the env file
    for path in ENVS:
        script = path.with_suffix(".post-deploy.sh")
        assert script.is_file(), script
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def test_the_workflow_names_both_envs():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    for path in ENVS:
        assert f'"../../envs/{path.name}"' in common
