"""The paper's three training steps (Sec. 3.4), each a small function over files.

- Step 0, :func:`backbone`: the RGB+joint network's weights (torchvision ImageNet weights, a
  local file, or - offline - the plain network trained from scratch on the source set).
- Step 1, :func:`pretrain_saliency`: the saliency branch (Xavier init) trained on the source
  set by classification alone, with the RGB and joint branches frozen.
- Step 2, :func:`finetune`: one method, k and seed on a fine-grained dataset, fc8 re-initialised
  (Xavier), the epoch selected on validation accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halsal.errors import HalsalError
from halsal.io import save_npz, torch_load, torch_save, write_json, write_tsv
from halsal.models import build_model, init_from_scratch, parse_variant
from halsal.models.weights import backbone_state_dict, imagenet_state_dict, load_backbone, load_weights_file
from halsal.train.inputs import load_split
from halsal.train.loop import OptimConfig, accuracy, fit, predict, seed_everything

# Method -> (saliency kind, initialise the saliency branch from Step 1, freeze it).
METHODS = {
    "baseline": ("none", False, False),  # Baseline-RGB
    "scratch_sal": ("hallucinated", False, False),  # Baseline-RGB + scratch SAL
    "smic": ("external", False, False),  # SMIC: explicit saliency maps
    "approach_a": ("hallucinated", True, True),  # Step-1 saliency branch, frozen
    "approach_b": ("hallucinated", True, False),  # Step-1 saliency branch, fine-tuned
}


def _num_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def backbone(arch: str, weights: str, out: str | Path, *, source_prepared=None, source_split=None,
             cfg: OptimConfig | None = None, input_size: int = 227, device=torch.device("cpu"),
             augment: dict | None = None, threads: int | None = None, fc_width: int = 4096) -> dict:
    """Step 0: write a torchvision-keyed state dict to ``out`` and a JSON summary beside it."""
    _num_threads(threads)
    out = Path(out)
    info = {"arch": arch, "weights": weights}
    if weights == "imagenet":
        state = imagenet_state_dict(arch)
        info["source"] = "torchvision ImageNet weights"
    elif weights == "scratch":
        if source_prepared is None or source_split is None:
            raise HalsalError("model.weights is 'scratch' but no source set was given for Step 0")
        aug = augment or {}
        data = load_split(source_prepared, source_split, "K", device, input_size, aug.get("random_crop", True), aug.get("flip", True))
        seed_everything(0)
        model = build_model(arch, len(data.class_names), saliency="none", fc_width=fc_width)
        init_from_scratch(model)
        model.to(device)
        result = fit(model, data.train, data.val, cfg, seed=0, checkpoint=out.with_suffix(".ckpt"), desc="backbone",
                     fingerprint={"step": 0, "arch": arch, "input": input_size})
        model.load_state_dict(result.best_state)
        state = backbone_state_dict(model)
        info.update(source="trained from scratch on the source set", classes=data.class_names,
                    best_epoch=result.best_epoch, val_acc=result.best_val_acc, test_acc=accuracy(model, data.test),
                    epochs=cfg.epochs)
    else:
        state = load_weights_file(weights)
        info["source"] = f"local file {weights}"
    # Check it loads into the network before anything downstream relies on it.
    classes = state[_top_weight_key(arch)].shape[0]
    load_backbone(build_model(arch, classes, saliency="none", **_shape_opts(arch, state)), state)
    info["num_classes"] = int(classes)
    torch_save(out, {k: v.cpu() for k, v in state.items()})
    write_json(out.with_suffix(".json"), info)
    out.with_suffix(".ckpt").unlink(missing_ok=True)
    return info


def _top_weight_key(arch: str) -> str:
    return {"alexnet": "classifier.6.weight", "resnet152": "fc.weight"}[arch]


def _shape_opts(arch: str, state: dict) -> dict:
    """Model options implied by a backbone state dict (AlexNet's fc6/fc7 width)."""
    if arch == "alexnet":
        return {"fc_width": int(state["classifier.1.weight"].shape[0])}
    return {}


def pretrain_saliency(arch: str, variant: str, backbone_pt: str | Path, out: str | Path, *, source_prepared,
                      source_split, cfg: OptimConfig, input_size: int, device=torch.device("cpu"),
                      augment: dict | None = None, threads: int | None = None) -> dict:
    """Step 1: train only the saliency branch on the source set; save its state dict."""
    _num_threads(threads)
    out = Path(out)
    aug = augment or {}
    data = load_split(source_prepared, source_split, "K", device, input_size, aug.get("random_crop", True), aug.get("flip", True))
    state = torch_load(backbone_pt)
    classes = state[_top_weight_key(arch)].shape[0]
    if classes != len(data.class_names):
        raise HalsalError(
            f"the backbone {backbone_pt} has {classes} output classes but the source set has "
            f"{len(data.class_names)}: Step 1 keeps the backbone's classifier frozen, so the source set "
            f"must use the backbone's classes (ImageNet weights need ImageNet validation images with ImageNet labels)"
        )
    seed_everything(0)
    model = build_model(arch, classes, **parse_variant(variant), **_shape_opts(arch, state)).to(device)
    load_backbone(model, state)
    for p in model.rgb_and_joint_parameters():
        p.requires_grad_(False)  # frozen: only the saliency branch learns (Fig. 1, left)
    result = fit(model, data.train, data.val, cfg, seed=0, checkpoint=out.with_suffix(".ckpt"), desc="pretrain_saliency",
                 fingerprint={"step": 1, "arch": arch, "variant": variant, "input": input_size})
    model.load_state_dict(result.best_state)
    sal = {k: v.cpu() for k, v in model.state_dict().items() if k.startswith("saliency_branch.")}
    torch_save(out, sal)
    info = {"arch": arch, "variant": variant, "best_epoch": result.best_epoch, "val_acc": result.best_val_acc,
            "test_acc": accuracy(model, data.test), "epochs": cfg.epochs, "history": result.history}
    write_json(out.with_suffix(".json"), info)
    out.with_suffix(".ckpt").unlink(missing_ok=True)
    return info


def finetune(*, arch: str, method: str, variant: str, k, seed: int, dataset: str, prepared, split_tsv,
             backbone_pt, saliency_pt=None, out_dir, cfg: OptimConfig, input_size: int,
             device=torch.device("cpu"), augment: dict | None = None, synthetic: bool = False,
             threads: int | None = None) -> dict:
    """Step 2: one fine-tuning run. Writes metrics.json last, so its presence means done."""
    _num_threads(threads)
    if method not in METHODS:
        raise HalsalError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if method == "smic":
        raise HalsalError("method 'smic' needs explicit saliency maps; it is not available in this build")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    aug = augment or {}
    data = load_split(prepared, split_tsv, k, device, input_size, aug.get("random_crop", True), aug.get("flip", True))
    kind, from_step1, freeze = METHODS[method]
    seed_everything(seed)  # the Xavier init of fc8 (and of a scratch saliency branch) depends on the seed
    state = torch_load(backbone_pt)
    model = build_model(arch, len(data.class_names), saliency=kind, **parse_variant(variant), **_shape_opts(arch, state)).to(device)
    load_backbone(model, state, skip_top=True)
    if from_step1:
        if saliency_pt is None:
            raise HalsalError(f"method {method} needs the Step-1 saliency weights (pretrain_saliency output)")
        model.load_state_dict(torch_load(saliency_pt), strict=False)
    if freeze:
        for p in model.saliency_branch.parameters():
            p.requires_grad_(False)  # Approach A (Fig. 1, middle)
    has_map = model.saliency_branch is not None
    before = predict(model, data.test, with_saliency=True)[1] if has_map else None
    result = fit(model, data.train, data.val, cfg, seed=seed, checkpoint=out_dir / "checkpoint.pt", desc=f"{method} k={k} seed={seed}",
                 fingerprint={"step": 2, "arch": arch, "method": method, "variant": variant, "k": str(k),
                              "dataset": dataset, "input": input_size, "augment": aug})
    model.load_state_dict(result.best_state)
    if has_map:
        preds, after = predict(model, data.test, with_saliency=True)
        save_npz(out_dir / "saliency.npz", before=before.numpy().astype(np.float16),
                 after=after.numpy().astype(np.float16), rows=data.test_rows["row"].to_numpy(np.int64))
    else:  # no map to show; an empty file keeps the rule's outputs the same for every method
        preds = predict(model, data.test)
        empty = np.zeros((0, 0, 0), dtype=np.float16)
        save_npz(out_dir / "saliency.npz", before=empty, after=empty, rows=np.zeros(0, dtype=np.int64))
    labels = data.test.labels.cpu()
    test_acc = (preds == labels).float().mean().item()
    names = data.class_names
    write_tsv(out_dir / "predictions.tsv", data.test_rows.assign(pred=preds.numpy(), pred_name=[names[i] for i in preds.tolist()]))
    write_tsv(out_dir / "history.tsv", pd.DataFrame(result.history))
    metrics = {
        "arch": arch, "dataset": dataset, "method": method, "variant": variant, "k": str(k), "seed": seed,
        "num_classes": len(names), "synthetic": bool(synthetic), "input_size": input_size, "epochs": cfg.epochs,
        "best_epoch": result.best_epoch, "val_acc": result.best_val_acc, "test_acc": test_acc,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test), "skipped_images": data.skipped,
        "config": {**cfg.__dict__, "augment": aug}, "wall_seconds": round(time.perf_counter() - t0, 2),
        "device": str(device),
    }
    write_json(out_dir / "metrics.json", metrics)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return metrics
