"""The training loop shared by Steps 0-2: epochs, validation-based epoch selection, resume.

``fit`` trains the parameters that require grad, evaluates validation accuracy after every
epoch, keeps the weights of the best validation epoch (ties: the earliest), and writes a
resumable checkpoint after every epoch. Test accuracy is never looked at here: the caller
measures it once, on the selected weights.

Determinism: the RNGs are re-seeded from (seed, epoch) at the start of every epoch, so a run
resumed from its epoch-e checkpoint continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from halsal.io import torch_load, torch_save
from halsal.train.data import DeviceImages


@dataclass
class OptimConfig:
    epochs: int = 70
    lr: float = 1e-4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-3
    batch_size: int = 32
    # Seconds between resumable checkpoints (0: after every epoch). A checkpoint of AlexNet
    # with its optimizer state is ~0.7 GB, so writing one every epoch of a short run costs
    # more than the epoch; resuming from an older checkpoint gives the same result.
    checkpoint_seconds: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "OptimConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val_acc: float
    history: list[dict] = field(default_factory=list)


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def seed_everything(seed: int, epoch: int = 0) -> torch.Generator:
    """Seed torch's global RNG (dropout) and return a generator for shuffling/augmentation."""
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


@torch.no_grad()
def predict(model: nn.Module, data: DeviceImages, batch_size: int = 128, with_saliency: bool = False, **fwd):
    """Predicted labels (and saliency maps) for ``data`` in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    preds, maps = [], []
    for x, _ in data.eval_batches(batch_size):
        if with_saliency:
            logits, s = model(x, return_saliency=True, **fwd)
            maps.append(s[:, 0].float().cpu())
        else:
            logits = model(x, **fwd)
        preds.append(logits.argmax(1).cpu())
    model.train(was_training)
    preds = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    return (preds, torch.cat(maps)) if with_saliency else preds


def accuracy(model: nn.Module, data: DeviceImages) -> float:
    if len(data) == 0:
        return float("nan")
    return (predict(model, data) == data.labels.cpu()).float().mean().item()


def fit(model: nn.Module, train: DeviceImages, val: DeviceImages, cfg: OptimConfig, *, seed: int,
        checkpoint: str | Path | None = None, desc: str = "train", fingerprint: dict | None = None,
        train_mode=None) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs; resume from ``checkpoint`` when it matches.

    ``train_mode(model)`` switches the model to training mode (default ``model.train()``);
    Step 1 and Approach A use it to keep frozen parts in eval mode.
    """
    device = train.device
    optimizer = make_optimizer(model.parameters(), cfg)
    loss_fn = nn.CrossEntropyLoss()
    key = _fingerprint(cfg, seed, fingerprint)
    start, history = 0, []
    best = {"epoch": -1, "acc": -1.0, "state": copy.deepcopy(model.state_dict())}
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        state = torch_load(ckpt, map_location=device)
        if state.get("fingerprint") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, history = int(state["epoch"]), list(state["history"])
            best = {"epoch": int(state["best_epoch"]), "acc": float(state["best_acc"]), "state": state["best_state"]}
            tqdm.write(f"{desc}: resuming from {ckpt} after epoch {start}", file=sys.stderr)
        else:
            tqdm.write(f"{desc}: ignoring {ckpt}, written for a different configuration", file=sys.stderr)
    last_ckpt = time.monotonic()
    bar = tqdm(range(start, cfg.epochs), desc=desc, initial=start, total=cfg.epochs, unit="epoch", mininterval=1.0)
    for epoch in bar:
        t0 = time.perf_counter()
        gen = seed_everything(seed, epoch)
        (train_mode or nn.Module.train)(model)
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in train.train_batches(cfg.batch_size, gen):
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        val_acc = accuracy(model, val)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(total, 1), "train_acc": correct / max(total, 1),
               "val_acc": val_acc, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if val_acc > best["acc"]:  # strict: ties keep the earliest epoch
            best = {"epoch": epoch + 1, "acc": val_acc, "state": copy.deepcopy(model.state_dict())}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_acc:.3f}", best=best["epoch"])
        if ckpt and (epoch + 1 < cfg.epochs) and time.monotonic() - last_ckpt >= cfg.checkpoint_seconds:
            last_ckpt = time.monotonic()
            torch_save(ckpt, {"fingerprint": key, "epoch": epoch + 1, "model": model.state_dict(),
                              "optimizer": optimizer.state_dict(), "history": history,
                              "best_epoch": best["epoch"], "best_acc": best["acc"], "best_state": best["state"]})
    bar.close()
    return FitResult(best_state=best["state"], best_epoch=best["epoch"], best_val_acc=best["acc"], history=history)


def _fingerprint(cfg: OptimConfig, seed: int, extra: dict | None) -> str:
    settings = {k: v for k, v in cfg.__dict__.items() if k != "checkpoint_seconds"}
    blob = json.dumps({"cfg": settings, "seed": seed, "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
