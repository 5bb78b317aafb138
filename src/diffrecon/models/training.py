"""The training loop of every learned prior and baseline network.

Deterministic and resumable: the minibatch and the noise of step k are drawn from a
generator seeded with (seed, k) — :func:`step_generator`: first the batch's indices
``torch.randint(0, N, (batch_size,))``, then the loss's draws (times, noise) from the same
generator — so a run killed after its checkpoint at step k and resumed reaches bit-identical
weights on CPU to an uninterrupted run. A checkpoint made with another configuration is refused,
except that the step budget may grow (a longer run continues a shorter one) and the loader
settings (``loader``, ``workers``) and the number of processes may change. Adam with linear
warm-up, gradient-norm clipping, and an EMA of the weights with the warm-up
decay_k = min(decay, (1 + k) / (10 + k)). Progress (loss) is shown with tqdm.

Training data come as one tensor (the in-memory loader: moved to the device once, batches are
rows of it) or as a :class:`torch.utils.data.Dataset` of single samples (the streaming loader,
:mod:`diffrecon.data.streaming`: a :class:`~torch.utils.data.DataLoader` with worker processes
reads step k's samples, in the order :class:`StepBatchSampler` gives). Both see the same indices,
hence the same batches, and reach the same weights.

Data-parallel (``torchrun --nproc_per_node P``, :mod:`diffrecon.models.distributed`): the global
batch of ``batch_size`` samples is split into P equal shares (``batch_size`` must be a multiple
of P); process r takes rows [r b, (r + 1) b), b = batch_size / P, of step k's index draw, and its
loss draws the randomness of the whole global batch and keeps its own rows
(:class:`~diffrecon.diffusion.batch_noise.BatchShare`), so every sample's noise depends on
(seed, k, its position in the global batch) only. Gradients are averaged over the processes
(DDP), which with equal shares is the gradient of the mean loss over the global batch: P
processes reach the weights of one process up to the order of floating-point sums. Rank 0 keeps
the EMA, writes the checkpoints (the other processes wait at a barrier) and shows the progress
bar; on resume every process loads the checkpoint.

Loss functions take ``(model, x0, generator)`` (plus the batch's labels when the training set
has labels) and return the mean loss of the batch; they draw their randomness with
:mod:`diffrecon.diffusion.batch_noise` (which accepts a generator or a share). The diffusion
losses live next to their processes:

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
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from diffrecon.devices import use_bf16
from diffrecon.diffusion.batch_noise import BatchShare
from diffrecon.models import distributed
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
    loader: str = "memory"         # memory (one tensor on the device) | stream (read sample by sample)
    workers: int = 0               # DataLoader worker processes of the stream loader (0: read in the main process)


#: TrainConfig fields that do not change what is computed (a resumed run may change them)
NOT_HASHED = ("steps", "checkpoint_every", "loader", "workers")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step ``step``: seeded with ``seed * 1_000_003 + step``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def step_indices(n: int, batch_size: int, seed: int, step: int) -> tuple[torch.Generator, torch.Tensor]:
    """Step ``step``'s global batch: ``batch_size`` indices into ``n`` samples (int64, with repeats),
    and the step's generator after that draw (the loss draws its noise from it next)."""
    gen = step_generator(seed, step)
    return gen, torch.randint(0, n, (batch_size,), generator=gen)


def rank_rows(batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of a global batch that process ``rank`` of ``world`` takes (equal shares)."""
    if batch_size % world:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by the {world} training processes "
                         "(train.gpus): every process takes an equal share of the global batch")
    share = batch_size // world
    return rank * share, (rank + 1) * share


class StepBatchSampler(Sampler[list[int]]):
    """The batches of steps ``start`` … ``stop − 1`` for a :class:`~torch.utils.data.DataLoader`:
    step k yields rows [lo, hi) (this process's share) of :func:`step_indices` ``(n, batch_size, seed, k)``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rows: tuple[int, int] | None = None):
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rows = rows or (0, batch_size)

    def __iter__(self):
        lo, hi = self.rows
        for step in range(self.start, self.stop):
            yield step_indices(self.n, self.batch_size, self.seed, step)[1][lo:hi].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


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


def _memory_batches(data: torch.Tensor, labels, device, cfg: TrainConfig, rows, start: int):
    """Step by step: (generator after the index draw, x0 rows, labels rows or None) from one tensor."""
    data = data.to(device)
    n = data.shape[0]
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        labels = labels.to(device)
    lo, hi = rows
    step = start
    while True:
        gen, idx = step_indices(n, cfg.batch_size, cfg.seed, step)
        if (lo, hi) != (0, cfg.batch_size):
            idx = idx[lo:hi]
        yield gen, data[idx], (None if labels is None else labels[idx])
        step += 1


def _stream_batches(dataset: Dataset, device, cfg: TrainConfig, rows, start: int):
    """Step by step, as :func:`_memory_batches`, with samples read by a DataLoader."""
    n = len(dataset)
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(n, cfg.batch_size, cfg.seed, start, cfg.steps, rows),
                        num_workers=cfg.workers, pin_memory=cuda, persistent_workers=cfg.workers > 0,
                        prefetch_factor=4 if cfg.workers > 0 else None)
    step = start
    for batch in loader:
        gen, _ = step_indices(n, cfg.batch_size, cfg.seed, step)     # the generator where the sampler left it
        x, y = batch if isinstance(batch, (list, tuple)) else (batch, None)
        yield gen, x.to(device, non_blocking=cuda), (None if y is None else y.to(device, non_blocking=cuda))
        step += 1


def train(model: nn.Module, data: torch.Tensor | Dataset, loss_fn: Callable, cfg: TrainConfig, out_stem,
          meta: dict | None = None, device: str | torch.device = "cpu", resume: bool = True,
          progress: bool = True, labels: torch.Tensor | None = None) -> dict:
    """Train ``model``; checkpoints at ``out_stem`` (+ ``.safetensors``/``.json``).

    ``data``: a tensor (N, C, H, W) (in-memory loader; with ``labels`` (N,) the loss is called as
    ``loss_fn(model, x0, gen, labels_of_the_batch)``), or a dataset of N samples, each a tensor
    (C, H, W) or a pair (tensor, int label) (streaming loader, ``cfg.workers`` worker processes).

    Under ``torchrun`` every process calls this with the same arguments (see the module
    docstring). Returns the final sidecar metadata. If a checkpoint exists at ``out_stem`` and
    ``resume``, training continues from its step.
    """
    out_stem = Path(out_stem)
    env, device = distributed.setup(device)
    rows = rank_rows(cfg.batch_size, env.rank, env.world)
    if cfg.loader not in ("memory", "stream"):
        raise ValueError(f"train.loader '{cfg.loader}' is not one of memory, stream")
    if cfg.workers < 0:
        raise ValueError(f"train.workers {cfg.workers} must be >= 0")
    streaming = not isinstance(data, torch.Tensor)
    if streaming and labels is not None:
        raise ValueError("labels go with a tensor of samples; a dataset returns its own (sample, label) pairs")
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if env.is_main else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    run_meta = {"train": asdict(cfg), **(meta or {})}
    # the step budget and checkpoint spacing may change between runs: a longer run continues a shorter
    # one; the loader settings and the process count change how, not what, is computed
    hashed = {**run_meta, "train": {k: v for k, v in run_meta["train"].items() if k not in NOT_HASHED}}
    run_meta["config_hash"] = config_hash(hashed)
    step, history = 0, []
    seconds_before = 0.0                   # training time of the run before this resume
    weights = out_stem.with_suffix(".safetensors")

    def check_existing():
        if not (resume and weights.is_file()):
            return False
        old = load_checkpoint(out_stem)[1]
        if old.get("config_hash") != run_meta["config_hash"]:
            raise ValueError(f"{out_stem}: existing checkpoint was made with another config "
                             f"({old.get('config_hash')} vs {run_meta['config_hash']}); delete it to retrain")
        return True

    if distributed.from_main(check_existing):
        tensors, old = load_checkpoint(out_stem)
        model.load_state_dict(unprefixed("model", tensors))
        if ema is not None:
            ema.load_state_dict(unprefixed("ema", tensors))
        _load_optimizer(opt, tensors)
        step, history = int(old["step"]), list(old.get("loss_history", []))
        seconds_before = float(old.get("seconds", 0.0))
        log.info("resumed from step %d", step)
    net = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    bf16 = use_bf16(cfg.precision, device.type)
    batches = (_stream_batches(data, device, cfg, rows, step) if streaming
               else _memory_batches(data, labels, device, cfg, rows, step))
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not (progress and env.is_main),
               dynamic_ncols=True)
    t_start = time.perf_counter()
    running = None

    def checkpoint():
        if env.is_main:
            tensors = {**prefixed("model", model.state_dict()), **prefixed("ema", ema.state_dict()),
                       **_optimizer_tensors(opt)}
            save_checkpoint(out_stem, tensors, {**run_meta, "step": step, "loss_history": history,
                                                "git_commit": git_commit(), "versions": library_versions(),
                                                "device": str(device), "world_size": env.world,
                                                "seconds": seconds_before + time.perf_counter() - t_start})
        distributed.barrier()

    while step < cfg.steps:
        gen, x0, y = next(batches)
        noise = gen if not env.distributed else BatchShare(gen, rows[0], rows[1], cfg.batch_size)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net, x0, noise) if y is None else loss_fn(net, x0, noise, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        step += 1
        value = float(distributed.mean_of(loss.detach()))
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4g}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            history.append([step, running])
            checkpoint()
    bar.close()
    batches.close()
    if not distributed.from_main(weights.is_file):   # steps already reached: nothing trained
        checkpoint()
    return distributed.from_main(lambda: load_checkpoint(out_stem)[1])
