"""The paper's three training steps (Sec. 3.4), each a small function over files.

- Step 0, :func:`backbone`: the RGB+joint network's weights (torchvision ImageNet weights, a
  local file, or - offline - the plain network trained from scratch on the source set).
- Step 1, :func:`pretrain_saliency`: the saliency branch (Xavier init) trained on the source
  set by classification alone, with the RGB and joint branches frozen.
- Step 2, :func:`finetune`: one method, k and seed on a fine-grained dataset, fc8 re-initialised
  (Xavier), the epoch selected on validation accuracy; :func:`finetune_batch` trains several
  runs in one process from inputs loaded once (:func:`load_finetune_inputs`).
- The SMIC row's explicit saliency maps are data preparation (:mod:`halsal.data.smic_maps`);
  method ``smic`` reads them with its ``maps`` file.

Batch norm (ResNet-152): layers whose parameters are frozen stay in eval mode (Step 1: the
whole backbone), everything trained is in train mode (Step 0 from scratch, Step 2).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halsal import settings, spec
from halsal.data.manifest import images_path, manifest_path, open_images
from halsal.data.smic_maps import load_maps, read_maps_info
from halsal.errors import HalsalError
from halsal.gpu import run_record
from halsal.io import save_npz, torch_load, torch_save, write_json, write_tsv
from halsal.models import build_model, variant_options, frozen_bn_eval, init_from_scratch, shape_options, state_classes
from halsal.models.saved import SAVE_CHOICES, save_run_model
from halsal.models.weights import (WEIGHT_ENUMS, timm_keys, backbone_state_dict, imagenet_state_dict, load_backbone,
                                   load_weights_file, normalisation)
from halsal.train import records
from halsal.train.inputs import load_split
from halsal.train.health import is_dead
from halsal.train.loop import OptimConfig, accuracy, evaluate, fit, recalibrate_batchnorm, seed_everything
from halsal.train.memory import check_gpu_memory, finetune_estimate, pretrain_estimate
from halsal.train.source import source_accuracy, source_labels


def _num_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def backbone(arch: str, weights: str, out: str | Path, *, source_prepared=None, source_split=None,
             cfg: OptimConfig | None = None, input_size: int = settings.default("data.input_size"), device=torch.device("cpu"),
             augment: dict | None = None, threads: int | None = None, fc_width: int = spec.ALEXNET_FC_WIDTH) -> dict:
    """Step 0: write a torchvision-keyed state dict to ``out`` and a JSON summary beside it."""
    _num_threads(threads)
    out = Path(out)
    info = {"arch": arch, "weights": weights, **run_record(device, source_prepared)}
    if weights == "imagenet":
        state = imagenet_state_dict(arch)
        enum = WEIGHT_ENUMS.get(arch)
        info["source"] = ("timm's pretrained weights" if enum is None else
                          f"ImageNet-1k weights from {enum.meta['package']} (sha256 {enum.meta['sha256'][:12]}...)"
                          if "package" in enum.meta else "torchvision ImageNet weights")
    elif weights == "scratch":
        if source_prepared is None or source_split is None:
            raise HalsalError("model.weights is 'scratch' but no source set was given for Step 0")
        aug = augment or {}
        data = load_split(source_prepared, source_split, spec.K_ALL, device, input_size, aug.get("random_crop", True),
                          aug.get("flip", True), normalisation=normalisation(arch))
        seed_everything(0)
        model = build_model(arch, len(data.class_names), saliency="none", fc_width=fc_width)
        init_from_scratch(model)
        model.to(device)
        result = fit(model, data.train, data.val, cfg, seed=0, checkpoint=out.with_suffix(".ckpt"), desc="backbone",
                     fingerprint={"step": 0, "arch": arch, "input": input_size})
        model.load_state_dict(result.best_state)
        _check_finite(result, "Step 0 (backbone from scratch)", "train.backbone.lr")
        recalibrate_batchnorm(model, data.train)
        state = backbone_state_dict(model)
        info.update(source="trained from scratch on the source set", classes=data.class_names,
                    best_epoch=result.best_epoch, val_acc=result.best_val_acc, test_acc=accuracy(model, data.test),
                    epochs=result.epochs)
    else:
        state = timm_keys(arch, load_weights_file(weights))  # a timm model's file loads by timm's keys
        info["source"] = f"local file {weights}"
    # Check it loads into the network before anything downstream relies on it.
    classes = state_classes(arch, state)
    net = build_model(arch, classes, saliency="none", **shape_options(arch, state))
    load_backbone(net, state)
    info["num_classes"] = int(classes)
    info["normalisation"] = dict(zip(("mean", "std"), normalisation(arch)))
    if weights != "scratch" and source_prepared is not None and source_split is not None:
        # No training: the weights' own accuracy on the source set's test images.
        data = load_split(source_prepared, source_split, spec.K_ALL, device, input_size, False, False,
                          normalisation=normalisation(arch))
        allowed = source_labels(data, classes, backbone_pt=f"the {weights} weights")
        info["source_test"] = source_accuracy(net.to(device), data.test, allowed)
    torch_save(out, {k: v.cpu() for k, v in state.items()})
    write_json(out.with_suffix(".json"), info)
    out.with_suffix(".ckpt").unlink(missing_ok=True)
    return info


def _warn_if_dead(stats: dict | None, where: str) -> None:
    """Say so in the log when a map is dead: with Eq. 2 the network is then Baseline-RGB."""
    if is_dead(stats):
        print(f"WARNING: the saliency map of {where} is all zero on {stats['dead_fraction']:.0%} of the images "
              "(dead ReLU): with l * (s + 1) this network is Baseline-RGB there. See docs/decisions.md, "
              "'Saliency health'.", file=sys.stderr)


def _check_finite(result, step: str, lr_key: str) -> None:
    """A diverged run (NaN/inf training loss) is an error, never a result at chance level."""
    bad = [row["epoch"] for row in result.history if not np.isfinite(row["train_loss"])]
    if bad:
        raise HalsalError(f"{step} diverged: the training loss is NaN/inf from epoch {bad[0]}; lower {lr_key}")


def _maps_source(maps) -> str:
    """What made the SMIC maps, for metrics.json ``saliency_maps``: the human label of the
    smic-maps JSON beside them (its structured ``source`` stays there); the maps' path when there
    is no readable JSON."""
    try:
        return read_maps_info(maps)["label"]
    except HalsalError:
        return str(maps)


def pretrain_saliency(arch: str, variant: str, backbone_pt: str | Path, out: str | Path, *, source_prepared,
                      source_split, cfg: OptimConfig, input_size: int, device=torch.device("cpu"),
                      augment: dict | None = None, threads: int | None = None) -> dict:
    """Step 1: train only the saliency branch on the source set; save its state dict."""
    _num_threads(threads)
    out = Path(out)
    aug = augment or {}
    state = torch_load(backbone_pt)
    classes = state_classes(arch, state)
    if device.type == "cuda":  # before the cache goes up: stop with the numbers, not out of memory (issue 26)
        check_gpu_memory(device, pretrain_estimate(arch, classes, {**_variant(arch, variant), **shape_options(arch, state)},
                                                   source_prepared, source_split, cfg, input_size),
                         step="Step 1 (pretrain_saliency)", batch_key="train.pretrain.batch_size")
    data = load_split(source_prepared, source_split, spec.K_ALL, device, input_size, aug.get("random_crop", True),
                      aug.get("flip", True), normalisation=normalisation(arch))
    allowed = source_labels(data, classes, backbone_pt)
    seed_everything(0)
    model = build_model(arch, classes, **_variant(arch, variant), **shape_options(arch, state)).to(device)
    load_backbone(model, state)
    for p in model.rgb_and_joint_parameters():
        p.requires_grad_(False)  # frozen: only the saliency branch learns (Fig. 1, left)
    sal_before = evaluate(model, data.test, data.boxes.get("test"))[1]
    # Frozen batch norm (ResNet) stays in eval mode: its ImageNet statistics are kept.
    result = fit(model, data.train, data.val, cfg, seed=0, checkpoint=out.with_suffix(".ckpt"), desc="pretrain_saliency",
                 fingerprint={"step": 1, "arch": arch, "variant": variant, "input": input_size},
                 train_mode=frozen_bn_eval, val_boxes=data.boxes.get("val"))
    model.load_state_dict(result.best_state)
    _check_finite(result, f"Step 1 ({arch}, {variant})", "train.pretrain.lr")
    sal = {k: v.cpu() for k, v in model.state_dict().items() if k.startswith("saliency_branch.")}
    torch_save(out, sal)
    sal_val = result.best_val_saliency
    test_acc, sal_test, _, _ = evaluate(model, data.test, data.boxes.get("test"))
    info = {"arch": arch, "variant": variant, "best_epoch": result.best_epoch, "val_acc": result.best_val_acc,
            "test_acc": test_acc, "num_classes": int(classes), "source_classes": len(data.class_names), **run_record(device, source_prepared),
            "source_test": source_accuracy(model, data.test, allowed), "epochs": result.epochs,
            "saliency": {"before": sal_before, "val": sal_val, "test": sal_test}, "history": result.history}
    _warn_if_dead(sal_test, f"Step 1 ({arch}, {variant}) on the source set's test images")
    write_json(out.with_suffix(".json"), info)
    out.with_suffix(".ckpt").unlink(missing_ok=True)
    return info


def _variant(arch: str, variant: str) -> dict:
    try:
        return variant_options(arch, variant)
    except ValueError as exc:
        raise HalsalError(f"{exc}; set model.fusion (or the ablation fusions) to a fusion point of {arch}") from exc


# Step 2. One fine-tuning *job* trains a batch of runs (GitHub issue 11): the inputs every run
# shares (image cache, SMIC maps, backbone, Step-1 weights) are loaded once by
# load_finetune_inputs(), then finetune_batch() trains the runs one after another. Each run
# leaves a completion record (complete.json) beside its outputs; a job that is run again (after
# a kill, or because Snakemake deleted the outputs of a failed job) restores metrics.json of
# every run whose record still matches instead of training it again.

@dataclass
class FinetuneInputs:
    """What every run of one fine-tuning job shares, loaded once."""

    arch: str
    method: str
    variant: str
    dataset: str
    prepared: Path
    cache: np.ndarray  # images.npy of ``prepared`` (memory-mapped)
    maps: np.ndarray | None  # SMIC maps aligned with the cache (method smic)
    maps_source: str | None
    backbone: dict  # torchvision-keyed state dict (Step 0)
    saliency: dict | None  # Step-1 saliency branch (approach_a/b)
    weights: str | None  # where the backbone came from (backbone.json: imagenet | scratch | path)
    cfg: OptimConfig
    input_size: int
    device: torch.device
    augment: dict
    synthetic: bool
    stamps: dict  # size and mtime of the shared input files, part of each run's fingerprint
    save_model: str = "none"  # train.save_model: "best" keeps each run's network (halsal.models.saved)


@dataclass
class FinetuneRun:
    """One run of a fine-tuning job: k, seed, its split file and its output directory."""

    k: str
    seed: int
    split_tsv: Path
    out_dir: Path


def _backbone_weights(backbone_pt) -> str | None:
    """model.weights of the backbone (imagenet | scratch | a path), from backbone.json beside it."""
    try:
        return json.loads(Path(backbone_pt).with_suffix(".json").read_text())["weights"]
    except (OSError, ValueError, KeyError):
        return None


def load_finetune_inputs(*, arch: str, method: str, variant: str, dataset: str, prepared, backbone_pt,
                         saliency_pt=None, maps=None, cfg: OptimConfig, input_size: int,
                         device=torch.device("cpu"), augment: dict | None = None,
                         synthetic: bool = False, save_model: str = "none") -> FinetuneInputs:
    """Check and load the inputs that every run of a fine-tuning job shares."""
    if method not in spec.METHODS:
        raise HalsalError(f"unknown method {method!r}; choose one of {sorted(spec.METHODS)}")
    if save_model not in SAVE_CHOICES:
        raise HalsalError(f"train.save_model is {save_model!r}; choose one of {', '.join(SAVE_CHOICES)}")
    kind, from_step1 = spec.METHODS[method].saliency, spec.METHODS[method].from_step1
    _variant(arch, variant)
    prepared = Path(prepared)
    cache = open_images(prepared)
    images_file = images_path(prepared)
    map_cache = maps_source = None
    if kind == "external":
        if maps is None:
            raise HalsalError("method smic needs the dataset's saliency maps (the smic_maps rule's maps.npy)")
        map_cache = load_maps(maps, cache.shape[0], cache.shape[1])
        maps_source = _maps_source(maps)
    sal = None
    if from_step1:
        if saliency_pt is None:
            raise HalsalError(f"method {method} needs the Step-1 saliency weights (pretrain_saliency output)")
        sal = torch_load(saliency_pt)
        if not all(torch.isfinite(v).all() for v in sal.values()):
            raise HalsalError(f"the Step-1 saliency weights {saliency_pt} hold NaN/inf (Step 1 diverged): "
                              "lower train.pretrain.lr, delete the file and re-run")
    aug = {"random_crop": True, "flip": True, **(augment or {})}  # explicit: part of the fingerprint
    manifest = manifest_path(prepared)
    stamp = records.stamp
    stamps = {"images": stamp(images_file), "manifest": stamp(manifest) if manifest.is_file() else None,
              "backbone": stamp(backbone_pt), "saliency": stamp(saliency_pt) if from_step1 else None,
              "maps": stamp(maps) if kind == "external" else None}
    return FinetuneInputs(arch=arch, method=method, variant=variant, dataset=dataset, prepared=prepared, cache=cache,
                          maps=map_cache, maps_source=maps_source, backbone=torch_load(backbone_pt), saliency=sal,
                          weights=_backbone_weights(backbone_pt), cfg=cfg, input_size=input_size, device=device,
                          augment=aug, synthetic=bool(synthetic), stamps=stamps, save_model=save_model)


def run_fingerprint(inputs: FinetuneInputs, run: FinetuneRun) -> str:
    """What a run's result depends on: its settings, the identity of its input files and
    halsal's training code (not the device, threads or checkpoint interval)."""
    optim = {k: v for k, v in inputs.cfg.at_k(run.k).__dict__.items() if k != "checkpoint_seconds"}
    return records.fingerprint({
        "step": 2, "arch": inputs.arch, "method": inputs.method, "variant": inputs.variant, "dataset": inputs.dataset,
        "k": str(run.k), "seed": int(run.seed), "input_size": inputs.input_size, "augment": inputs.augment,
        "optim": optim, "synthetic": inputs.synthetic, "inputs": {**inputs.stamps, "split": records.stamp(run.split_tsv)},
        **({"save_model": inputs.save_model} if inputs.save_model != "none" else {})})


def restore_run(inputs: FinetuneInputs, run: FinetuneRun) -> dict | None:
    """The metrics of a run an earlier job finished (its record matches), else None."""
    return records.restore(run.out_dir, run_fingerprint(inputs, run))


def finetune_run(inputs: FinetuneInputs, run: FinetuneRun) -> dict:
    """Step 2: one fine-tuning run from already loaded inputs. Writes saliency.npz,
    predictions.tsv, history.tsv, then the completion record, and metrics.json last (each
    atomically), so the presence of metrics.json means done."""
    t0 = time.perf_counter()
    arch, method, variant, k, seed = inputs.arch, inputs.method, inputs.variant, run.k, int(run.seed)
    cfg, device, aug, input_size = inputs.cfg.at_k(k), inputs.device, inputs.augment, inputs.input_size
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, freeze = spec.METHODS[method].saliency, spec.METHODS[method].frozen
    data = load_split(inputs.prepared, run.split_tsv, k, device, input_size, aug.get("random_crop", True),
                      aug.get("flip", True), maps=inputs.maps, cache=inputs.cache, normalisation=normalisation(arch))
    seed_everything(seed)  # the Xavier init of fc8 (and of a scratch saliency branch) depends on the seed
    state = inputs.backbone
    model = build_model(arch, len(data.class_names), saliency=kind, **_variant(arch, variant), **shape_options(arch, state)).to(device)
    load_backbone(model, state, skip_top=True)
    if inputs.saliency is not None:
        model.load_state_dict(inputs.saliency, strict=False)
    if freeze:
        for p in model.saliency_branch.parameters():
            p.requires_grad_(False)  # Approach A (Fig. 1, middle)
    has_map = model.has_saliency  # hallucinated, or SMIC's explicit map at the fusion point
    sal_before, before = (evaluate(model, data.test, data.boxes.get("test"))[1::2]) if has_map else (None, None)
    result = fit(model, data.train, data.val, cfg, seed=seed, checkpoint=out_dir / "checkpoint.pt", desc=f"{method} k={k} seed={seed}",
                 fingerprint={"step": 2, "arch": arch, "method": method, "variant": variant, "k": str(k),
                              "dataset": inputs.dataset, "input": input_size, "augment": aug},
                 train_mode=frozen_bn_eval, val_boxes=data.boxes.get("val"))
    model.load_state_dict(result.best_state)
    _check_finite(result, f"Step 2 ({arch}, {method}, {variant}, k={k}, seed={seed})", "train.finetune.lr")
    test_acc, sal_test, preds, after = evaluate(model, data.test, data.boxes.get("test"))
    if has_map:
        sal_val = result.best_val_saliency  # measured when the selected epoch was validated
        test_boxes = data.boxes.get("test")
        save_npz(out_dir / "saliency.npz", before=before.numpy().astype(np.float16),
                 after=after.numpy().astype(np.float16), rows=data.test_rows["row"].to_numpy(np.int64),
                 boxes=np.full((len(data.test), 4), np.nan) if test_boxes is None else test_boxes)
        _warn_if_dead(sal_test, f"Step 2 ({arch}, {method}, {variant}, k={k}, seed={seed}) on the test images")
    else:  # no map to show; an empty file keeps the outputs the same for every method
        empty = np.zeros((0, 0, 0), dtype=np.float16)
        save_npz(out_dir / "saliency.npz", before=empty, after=empty, rows=np.zeros(0, dtype=np.int64),
                 boxes=np.zeros((0, 4)))
    names = data.class_names
    if inputs.save_model == "best":  # the selected epoch's network, and what rebuilds it
        save_run_model(out_dir, model, {
            "arch": arch, "num_classes": len(names), "class_names": list(names), "saliency": kind,
            "variant": variant, "variant_options": _variant(arch, variant), "shape_options": shape_options(arch, state),
            "input_size": input_size, "normalisation": [list(v) for v in normalisation(arch)],
            "method": method, "dataset": inputs.dataset, "k": str(k), "seed": seed, "best_epoch": result.best_epoch})
    write_tsv(out_dir / "predictions.tsv", data.test_rows.assign(pred=preds.numpy(), pred_name=[names[i] for i in preds.tolist()]))
    write_tsv(out_dir / "history.tsv", pd.DataFrame(result.history))
    metrics = {
        "arch": arch, "dataset": inputs.dataset, "method": method, "variant": variant, "k": str(k), "seed": seed,
        "num_classes": len(names), "synthetic": inputs.synthetic, "input_size": input_size, "epochs": result.epochs,
        **({"steps": result.steps} if cfg.steps is not None or cfg.eval_every is not None else {}),
        "best_epoch": result.best_epoch, "val_acc": result.best_val_acc, "test_acc": test_acc,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test), "skipped_images": data.skipped,
        "config": {**cfg.__dict__, "augment": aug}, "weights": inputs.weights,
        "wall_seconds": round(time.perf_counter() - t0, 2), **run_record(device, inputs.prepared),
    }
    if has_map:  # before fine-tuning (test images), and at the selected epoch (val, test)
        metrics["saliency"] = {"before": sal_before, "val": sal_val, "test": sal_test}
    if kind == "external":
        metrics["saliency_maps"] = inputs.maps_source
    records.write_record(out_dir, run_fingerprint(inputs, run), metrics)
    write_json(out_dir / "metrics.json", metrics)
    (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return metrics


def finetune_batch(inputs: FinetuneInputs, runs, *, log=None) -> list[tuple[dict, bool]]:
    """Step 2 for several runs that share ``inputs``, one after another: each run is restored
    from its completion record when an earlier job finished it (same fingerprint, files intact),
    trained otherwise. Returns ``(metrics, restored)`` per run. A failure stops the job; the runs
    finished before it keep their outputs and records."""
    runs = [run if isinstance(run, FinetuneRun) else FinetuneRun(*run) for run in runs]
    if inputs.device.type == "cuda":  # once per job, before any run: its largest run must fit (issue 26)
        check_gpu_memory(inputs.device, finetune_estimate(inputs, runs), step="Step 2 (finetune)",
                         batch_key="train.finetune.batch_size")
    out = []
    for i, run in enumerate(runs, 1):
        metrics = restore_run(inputs, run)
        restored = metrics is not None
        if log:
            log(f"[{i}/{len(runs)}] {inputs.method} k={run.k} seed={run.seed} -> {run.out_dir}: "
                + ("restored from its completion record (finished by an earlier job)" if restored else "training"))
        if not restored:
            metrics = finetune_run(inputs, run)
        out.append((metrics, restored))
    return out


def finetune(*, arch: str, method: str, variant: str, k, seed: int, dataset: str, prepared, split_tsv,
             backbone_pt, saliency_pt=None, maps=None, out_dir, cfg: OptimConfig, input_size: int,
             device=torch.device("cpu"), augment: dict | None = None, synthetic: bool = False,
             threads: int | None = None) -> dict:
    """Step 2: one fine-tuning run (a job of one run; see finetune_batch). Writes metrics.json
    last, so its presence means done.

    ``maps`` (method ``smic``): the dataset's saliency maps file (``halsal smic-maps``).
    """
    _num_threads(threads)
    inputs = load_finetune_inputs(arch=arch, method=method, variant=variant, dataset=dataset, prepared=prepared,
                                  backbone_pt=backbone_pt, saliency_pt=saliency_pt, maps=maps, cfg=cfg,
                                  input_size=input_size, device=device, augment=augment, synthetic=synthetic)
    return finetune_batch(inputs, [FinetuneRun(str(k), int(seed), Path(split_tsv), Path(out_dir))])[0][0]
