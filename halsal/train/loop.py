"""The training loop shared by Steps 0-2: epochs, validation-based epoch selection, resume.

``fit`` trains the parameters that require grad for a budget of epochs (``epochs``) or of
optimizer steps (``steps``: the last epoch is cut short so the run takes exactly that many
steps), evaluates validation accuracy on a cadence (``eval_every`` optimizer steps, at the first
epoch end at or after each multiple; every epoch when unset; the last epoch always), keeps the
weights of the best evaluated epoch (ties: the earliest), and writes resumable checkpoints at
epoch ends. Test accuracy is never looked at here: the caller
measures it once, on the selected weights.

Determinism: the RNGs are re-seeded from (seed, epoch) at the start of every epoch, so a run
resumed from its epoch-e checkpoint continues exactly as an uninterrupted run would: bit for bit
on the CPU. On CUDA the batches are the same bits (drawn on the CPU), but the results match only
to float rounding: ``cudnn.benchmark`` picks kernels by timing, and the backward passes of
bilinear interpolation and adaptive average pooling add with atomics (docs/decisions.md,
"GPU path").

Speed: the loss and accuracy sums stay on the device (one host sync per epoch, not per batch);
``precision: bf16`` runs the forward pass under ``torch.autocast`` (CUDA and CPU), and
``channels_last`` stores weights and batches in NHWC. Evaluation always runs in fp32, so
validation/test accuracy and the saliency statistics do not depend on the training precision.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from halsal import settings
from halsal.errors import HalsalError
from halsal.io import torch_load, torch_save
from halsal.train.device_cache import DeviceImages
from halsal.train.health import box_weights, saliency_stats


_DEFAULTS = settings.optim_defaults()


@dataclass
class OptimConfig:
    """A training step's optimiser and run settings; every default is the config schema's
    (:func:`halsal.settings.optim_defaults`), so the CLI, the workflow and this class agree."""

    epochs: int = _DEFAULTS["epochs"]
    # The budget in optimizer steps (None: ``epochs`` full epochs). Set, it replaces ``epochs``:
    # small training sets (k = 1) get as many updates as large ones (docs/decisions.md). A
    # mapping {k: steps} gives each k its own budget; :meth:`at_k` resolves it for one run.
    steps: int | dict | None = _DEFAULTS["steps"]
    # Optimizer steps between validations (None: after every epoch); the last epoch is always
    # validated, and the selected epoch is the best validated one.
    eval_every: int | None = _DEFAULTS["eval_every"]
    lr: float = _DEFAULTS["lr"]
    # 'constant' or 'cosine' (decay to 0 over the run's steps, :func:`lr_factor`), or a mapping
    # {k: schedule} resolved by :meth:`at_k`; not in the paper.
    lr_schedule: str | dict = _DEFAULTS["lr_schedule"]
    optimizer: str = _DEFAULTS["optimizer"]
    momentum: float = _DEFAULTS["momentum"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    batch_size: int = _DEFAULTS["batch_size"]
    # Seconds between resumable checkpoints (0: after every epoch). A checkpoint of AlexNet
    # with its optimizer state is ~0.7 GB, so writing one every epoch of a short run costs
    # more than the epoch; resuming from an older checkpoint gives the same result.
    checkpoint_seconds: float = _DEFAULTS["checkpoint_seconds"]
    # Learning rate of the saliency branch (None: ``lr``). Not in the paper: a lever against the
    # dead-ReLU collapse of the map (docs/decisions.md, "Saliency health").
    saliency_lr: float | None = _DEFAULTS["saliency_lr"]
    # Not in the paper, speed only: autocast precision of the training forward pass ('fp32' or
    # 'bf16'; no loss scaling is needed for bf16) and NHWC memory format for weights and batches.
    precision: str = _DEFAULTS["precision"]
    channels_last: bool = _DEFAULTS["channels_last"]

    @classmethod
    def from_dict(cls, d: dict) -> "OptimConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def at_k(self, k) -> "OptimConfig":
        """The settings of one run at ``k``: a ``steps`` or ``lr_schedule`` mapping by k becomes
        that k's value."""
        out = self
        for key, what, cast in (("steps", "a budget", int), ("lr_schedule", "a schedule", str)):
            value = getattr(self, key)
            if not isinstance(value, dict):
                continue
            by_k = {str(name): v for name, v in value.items()}
            if str(k) not in by_k:
                raise HalsalError(f"train.finetune.{key} gives {what} for k = {', '.join(by_k)} but not for "
                                  f"k = {k}: add '{k}: <value>' to it, or give one value for every k")
            out = dataclasses.replace(out, **{key: cast(by_k[str(k)])})
        return out


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val_acc: float
    history: list[dict] = field(default_factory=list)
    # The saliency stats on the validation images at the selected epoch (None without a map):
    # recorded when the epoch is validated, so nobody evaluates the validation set again.
    best_val_saliency: dict | None = None
    epochs: int = 0  # the epochs the schedule ran (the last may be cut short by ``steps``)
    steps: int = 0  # the optimizer steps the schedule ran


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer over the parameters that require grad; the saliency branch gets
    ``cfg.saliency_lr`` where set. ``adam`` adds L2 weight decay to the gradient (PyTorch's Adam),
    ``adamw`` decouples it (Loshchilov & Hutter)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sal = [p for n, p in named if n.startswith("saliency_branch.")]
    rest = [p for n, p in named if not n.startswith("saliency_branch.")]
    groups = [g for g in ({"params": rest}, {"params": sal, "lr": cfg.saliency_lr or cfg.lr}) if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_factor(schedule_name: str, step: int, total: int) -> float:
    """The multiplier of every group's base lr before optimizer step ``step`` (0-based) of ``total``:
    1 for 'constant'; (1 + cos(pi * step / total)) / 2 for 'cosine' (1 at the first step, near 0
    at the last). A function of the step alone, so a resumed run sets the same rates."""
    if schedule_name == "constant":
        return 1.0
    if schedule_name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    raise ValueError(f"unknown lr_schedule {schedule_name!r}; one of constant, cosine")


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context for ``precision`` on ``device`` (disabled for fp32); weights stay
    fp32 and the loss is computed in fp32 (autocast's rule for cross-entropy)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_precision(device: torch.device, precision: str) -> None:
    if precision not in PRECISIONS:
        raise HalsalError(f"train precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    # The compute capability, not torch.cuda.is_bf16_supported(): that accepts emulated bf16
    # (including_emulation=True), so V100 (7.0) and T4 (7.5) would pass and run bf16 slowly.
    if precision == "bf16" and device.type == "cuda" and tuple(torch.cuda.get_device_capability(device)) < (8, 0):
        major, minor = torch.cuda.get_device_capability(device)
        raise HalsalError(f"train.precision is 'bf16' but {torch.cuda.get_device_name(device)} has compute capability "
                          f"{major}.{minor}; bfloat16 needs 8.0+ (Ampere or newer; older GPUs only emulate it): "
                          "set train.precision to 'fp32'")


def seed_everything(seed: int, epoch: int = 0) -> torch.Generator:
    """Seed torch's global RNG (dropout) and return a generator for shuffling/augmentation."""
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


@torch.no_grad()
def predict(model: nn.Module, data: DeviceImages, batch_size: int | None = None, with_saliency: bool = False, **fwd):
    """Predicted labels (and saliency maps) for ``data`` in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    preds, maps = [], []
    for x, _ in data.eval_batches(batch_size):  # kept on the device: one transfer at the end
        if with_saliency:
            logits, s = model(x, return_saliency=True, **fwd)
            maps.append(s[:, 0].float())  # float maps whatever the model's dtype
        else:
            logits = model(x, **fwd)
        preds.append(logits.argmax(1))
    model.train(was_training)
    preds = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
    return (preds, torch.cat(maps).cpu()) if with_saliency else preds


def evaluate(model: nn.Module, data: DeviceImages, boxes=None):
    """``(accuracy, saliency stats, predictions, maps)`` on ``data``; the stats and maps are None
    for a model without a map. ``boxes``: the images' object boxes in input pixels (N, 4)."""
    if not getattr(model, "has_saliency", False):
        preds = predict(model, data)
        return _acc(preds, data), None, preds, None
    preds, maps = predict(model, data, with_saliency=True)
    weights = box_weights(boxes, data.input_size, tuple(maps.shape[-2:])) if boxes is not None else None
    return _acc(preds, data), saliency_stats(maps.numpy(), weights), preds, maps


def _acc(preds: torch.Tensor, data: DeviceImages) -> float:
    return (preds == data.labels.cpu()).float().mean().item() if len(data) else float("nan")


def accuracy(model: nn.Module, data: DeviceImages) -> float:
    if len(data) == 0:
        return float("nan")
    return (predict(model, data) == data.labels.cpu()).float().mean().item()


@dataclass(frozen=True)
class Epoch:
    """One epoch of a run's schedule: its optimizer steps, the steps done after it, and
    whether validation follows it."""

    steps: int
    total_steps: int
    evaluate: bool


def schedule(n_train: int, cfg: OptimConfig) -> list[Epoch]:
    """The epochs of a run on ``n_train`` images: ``cfg.steps`` optimizer steps (the last epoch
    cut short) or ``cfg.epochs`` full epochs, each validated per ``cfg.eval_every``."""
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    for key in ("steps", "lr_schedule"):
        if isinstance(getattr(cfg, key), dict):
            raise HalsalError(f"{key} {getattr(cfg, key)} is given by k: resolve it for one run with OptimConfig.at_k "
                              "(only fine-tuning runs have a k; Steps 0-1 take one value)")
    if cfg.steps is not None:
        n_epochs = math.ceil(cfg.steps / per_epoch)
        steps = [per_epoch] * (n_epochs - 1) + [cfg.steps - per_epoch * (n_epochs - 1)]
    else:
        steps = [per_epoch] * cfg.epochs
    out, done = [], 0
    for i, n in enumerate(steps):
        before, done = done, done + n
        every = cfg.eval_every
        out.append(Epoch(n, done, every is None or i == len(steps) - 1 or done // every > before // every))
    return out


def train_epoch(model: nn.Module, train: DeviceImages, optimizer: torch.optim.Optimizer, loss_fn, cfg: OptimConfig,
                generator: torch.Generator, max_steps: int | None = None, set_lr=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One epoch of training steps (at most ``max_steps``): ``(loss sum, correct predictions, images)``.
    ``set_lr(i)``, where given, sets the rates before the epoch's ``i``-th step.

    The sums stay on the device, so no step waits for the GPU (``loss.item()`` per batch did);
    the caller reads them once. The float64 loss sum equals, bit for bit, the Python-float sum
    of ``loss.item() * len(y)`` it replaces.
    """
    device = train.device
    total = 0
    loss_sum = torch.zeros((), dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for step, (x, y) in enumerate(train.train_batches(cfg.batch_size, generator)):
        if max_steps is not None and step >= max_steps:
            break
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.precision):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if set_lr is not None:
            set_lr(step)
        optimizer.step()
        loss_sum += loss.detach().to(loss_sum.dtype) * len(y)
        correct += (logits.argmax(1) == y).sum()
        total += len(y)
    return loss_sum, correct, total


def fit(model: nn.Module, train: DeviceImages, val: DeviceImages, cfg: OptimConfig, *, seed: int,
        checkpoint: str | Path | None = None, desc: str = "train", fingerprint: dict | None = None,
        train_mode=None, val_boxes=None) -> FitResult:
    """Train ``model`` on :func:`schedule`'s epochs; resume from ``checkpoint`` when it matches.

    ``train_mode(model)`` switches the model to training mode (default ``model.train()``);
    Step 1 and Approach A use it to keep frozen parts in eval mode. ``val_boxes``: the validation
    images' object boxes, for the object ratio in ``best_val_saliency``.
    """
    device = train.device
    check_precision(device, cfg.precision)
    if device.type == "cuda":
        # Fixed input size: let cuDNN pick the fastest kernels (by timing, so two runs may pick
        # different ones: CUDA results agree to float rounding, not bit for bit; see the docstring).
        torch.backends.cudnn.benchmark = True
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # in place: the optimizer below sees the same tensors
    optimizer = make_optimizer(model, cfg)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a checkpoint's (scaled) rates load
    loss_fn = nn.CrossEntropyLoss()
    key = _fingerprint(cfg, seed, fingerprint)
    start, history = 0, []
    best = {"epoch": -1, "acc": -1.0, "state": copy.deepcopy(model.state_dict()), "sal": None}
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch_load(ckpt, map_location=device)
        if state.get("fingerprint") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, history = int(state["epoch"]), list(state["history"])
            best = {"epoch": int(state["best_epoch"]), "acc": float(state["best_acc"]), "state": state["best_state"],
                    "sal": state.get("best_saliency")}
            tqdm.write(f"{desc}: resuming from {ckpt} after epoch {start}", file=sys.stderr)
        else:
            tqdm.write(f"{desc}: ignoring {ckpt}, written for a different configuration", file=sys.stderr)
    last_ckpt = time.monotonic()
    plan = schedule(len(train), cfg)
    bar = tqdm(range(start, len(plan)), desc=desc, initial=start, total=len(plan), unit="epoch", mininterval=1.0)
    for epoch in bar:
        t0 = time.perf_counter()
        gen = seed_everything(seed, epoch)
        (train_mode or nn.Module.train)(model)
        first, total_steps = plan[epoch].total_steps - plan[epoch].steps, plan[-1].total_steps

        def set_lr(i, first=first, total_steps=total_steps):
            factor = lr_factor(cfg.lr_schedule, first + i, total_steps)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor

        loss_sum, correct, total = train_epoch(model, train, optimizer, loss_fn, cfg, gen, plan[epoch].steps,
                                               None if cfg.lr_schedule == "constant" else set_lr)
        t_val = time.perf_counter()  # val_seconds: the eval-cadence lever (on CUDA it also holds queued training work)
        val_acc = val_sal = None
        if plan[epoch].evaluate:
            val_acc, val_sal, _, _ = evaluate(model, val, val_boxes)
        loss_sum, correct = loss_sum.item(), int(correct.item())  # the epoch's one host sync
        t1 = time.perf_counter()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1),
               "val_acc": val_acc, "seconds": round(t1 - t0, 3), "val_seconds": round(t1 - t_val, 3)}
        if cfg.steps is not None or cfg.eval_every is not None:  # absent from runs on the default cadence
            row["step"] = plan[epoch].total_steps
        if val_sal is not None:  # the epoch where a map dies shows in history.tsv
            row.update(val_dead_fraction=val_sal["dead_fraction"], val_saliency_mean=round(val_sal["mean"], 6))
        history.append(row)
        if val_acc is not None and val_acc > best["acc"]:  # strict: ties keep the earliest epoch
            best = {"epoch": epoch + 1, "acc": val_acc, "state": copy.deepcopy(model.state_dict()), "sal": val_sal}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val="-" if val_acc is None else f"{val_acc:.3f}", best=best["epoch"])
        if ckpt and (epoch + 1 < len(plan)) and time.monotonic() - last_ckpt >= cfg.checkpoint_seconds:
            last_ckpt = time.monotonic()
            torch_save(ckpt, {"fingerprint": key, "epoch": epoch + 1, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "history": history,
                              "best_epoch": best["epoch"], "best_acc": best["acc"], "best_state": best["state"],
                              "best_saliency": best["sal"]})
    bar.close()
    return FitResult(best_state=best["state"], best_epoch=best["epoch"], best_val_acc=best["acc"], history=history,
                     best_val_saliency=best["sal"], epochs=len(plan), steps=plan[-1].total_steps if plan else 0)


def _fingerprint(cfg: OptimConfig, seed: int, extra: dict | None) -> str:
    # The speed-only settings enter the key only where they are not the default, so that
    # checkpoints written before they existed still resume.
    defaults = {"precision": "fp32", "channels_last": False, "steps": None, "eval_every": None,
                "lr_schedule": "constant"}
    settings = {k: v for k, v in cfg.__dict__.items()
                if k != "checkpoint_seconds" and not (k in defaults and v == defaults[k])}
    blob = json.dumps({"cfg": settings, "seed": seed, "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, data, batch_size: int = 64) -> None:
    """Batch-norm running statistics recomputed as exact averages over ``data`` (centre crops),
    for a backbone trained from scratch: after a short Step 0 the running averages still lean
    on their initial values, and Steps 1-2 use the frozen backbone in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for x, _ in data.eval_batches(batch_size):
        model(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
