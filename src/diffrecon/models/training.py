"""The training loop of every learned prior and baseline network.

Deterministic and resumable: the minibatch and the noise of step k are drawn from a
generator seeded with (seed, k), so a run killed after its checkpoint at step k and resumed
reaches bit-identical weights on CPU to an uninterrupted run. A checkpoint made with another
configuration is refused, except that the step budget may grow (a longer run continues a
shorter one). Adam with linear warm-up,
gradient-norm clipping, and an EMA of the weights with the warm-up
decay_k = min(decay, (1 + k) / (10 + k)). Progress (loss) is shown with tqdm.

Loss functions take ``(model, x0, generator)`` (plus the batch's labels when the training set
has labels) and return the mean loss of the batch; the diffusion losses live next to their
processes:

* :func:`diffrecon.diffusion.sde.ve_dsm_loss` — denoising score matching of the VE priors;
* :func:`diffrecon.diffusion.vp.vp_eps_loss` — ε-prediction MSE of the VP (DDPM) priors, with
  optional class labels (DiffusionBlend's slice spacing).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from diffrecon.devices import use_bf16
from diffrecon.models.checkpoint import (
    config_hash,
    git_commit,
    library_versions,
    load_checkpoint,
    prefixed,
    save_checkpoint,
    unprefixed,
)
from diffrecon.options import Options

log = logging.getLogger("diffrecon.training")


@dataclass
class TrainConfig(Options):
    """Optimisation settings of :func:`train` (the ``train`` block of a prior's config)."""

    steps: int = 1000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0
    precision: str = "float32"     # float32 | bfloat16 (autocast of the forward pass) | auto


def _optimizer_tensors(opt: torch.optim.Adam) -> dict:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{i}.{name}"] = torch.as_tensor(value)
    return out


def _load_optimizer(opt: torch.optim.Adam, tensors: dict) -> None:
    sd = opt.state_dict()
    state = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def train(model: nn.Module, data: torch.Tensor, loss_fn: Callable, cfg: TrainConfig, out_stem,
          meta: dict | None = None, device: str | torch.device = "cpu", resume: bool = True,
          progress: bool = True, labels: torch.Tensor | None = None) -> dict:
    """Train ``model`` on ``data`` (N, C, H, W); checkpoints at ``out_stem`` (+ ``.safetensors``/``.json``).

    With ``labels`` (N,), the loss is called as ``loss_fn(model, x0, gen, labels_of_the_batch)``.

    Returns the final sidecar metadata. If a checkpoint exists at ``out_stem`` and ``resume``,
    training continues from its step.
    """
    out_stem = Path(out_stem)
    device = torch.device(device)
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    run_meta = {"train": asdict(cfg), **(meta or {})}
    # the step budget and checkpoint spacing may change between runs: a longer run continues a shorter one
    hashed = {**run_meta, "train": {k: v for k, v in run_meta["train"].items() if k not in ("steps", "checkpoint_every")}}
    run_meta["config_hash"] = config_hash(hashed)
    step, history = 0, []
    if resume and out_stem.with_suffix(".safetensors").is_file():
        tensors, old = load_checkpoint(out_stem)
        if old.get("config_hash") != run_meta["config_hash"]:
            raise ValueError(f"{out_stem}: existing checkpoint was made with another config "
                             f"({old.get('config_hash')} vs {run_meta['config_hash']}); delete it to retrain")
        model.load_state_dict(unprefixed("model", tensors))
        ema.load_state_dict(unprefixed("ema", tensors))
        _load_optimizer(opt, tensors)
        step, history = int(old["step"]), list(old.get("loss_history", []))
        log.info("resumed from step %d", step)
    data = data.to(device)
    n = data.shape[0]
    bf16 = use_bf16(cfg.precision, device.type)
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        labels = labels.to(device)
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    t_start = time.perf_counter()
    running = None

    def checkpoint():
        tensors = {**prefixed("model", model.state_dict()), **prefixed("ema", ema.state_dict()),
                   **_optimizer_tensors(opt)}
        save_checkpoint(out_stem, tensors, {**run_meta, "step": step, "loss_history": history,
                                            "git_commit": git_commit(), "versions": library_versions(),
                                            "device": str(device), "seconds": time.perf_counter() - t_start})

    while step < cfg.steps:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, data[idx], gen) if labels is None else loss_fn(model, data[idx], gen, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4g}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            history.append([step, running])
            checkpoint()
    bar.close()
    if not out_stem.with_suffix(".safetensors").is_file():   # steps already reached: nothing trained
        checkpoint()
    _, final = load_checkpoint(out_stem)
    return final
