"""A fake finished results tree for the report tests (no training, no torch).

Accuracies follow a known formula so tests can assert exact table values:
    baseline    = 0.30 + 0.10 * (position of k) + 0.01 * seed
    approach_b  = baseline + 0.01 * (seed + 1)      # paired diffs 1, 2, 3 points for seeds 0, 1, 2
    approach_a  = baseline + 0.02
    scratch_sal = baseline + 0.005
Variant runs (ablations) add ``0.01 * depth`` for depth variants and a fusion-dependent offset.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

OFFSET = {"baseline": 0.0, "scratch_sal": 0.005, "approach_a": 0.02, "smic": 0.03}
VARIANT = "d4-pool2-eq2"


def accuracy(method: str, kpos: int, seed: int, variant: str = VARIANT) -> float:
    base = 0.30 + 0.10 * kpos + 0.01 * seed
    if method == "approach_b":
        acc = base + 0.01 * (seed + 1)
    else:
        acc = base + OFFSET[method]
    if variant != VARIANT and method != "baseline":
        depth, fusion, _ = variant.split("-")
        acc += 0.01 * (int(depth[1:]) - 4) + {"pool1": -0.02, "pool2": 0.0, "conv3": -0.01}.get(fusion, 0.0)
    return round(acc, 6)


def write_dataset(root: Path, dataset: str, classes: int, per_class: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = classes * per_class
    labels = np.repeat(np.arange(classes), per_class)
    index = pd.DataFrame({"path": [f"/fake/{dataset}/c{lab}/{i}.jpg" for i, lab in enumerate(labels)],
                          "label": labels, "class_name": [f"class_{lab}" for lab in labels], "official_split": ""})
    (root / "datasets" / dataset).mkdir(parents=True, exist_ok=True)
    index.to_csv(root / "datasets" / dataset / "index.tsv", sep="\t", index=False)
    (root / "prepared" / dataset).mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    np.save(root / "prepared" / dataset / "images.npy", images, allow_pickle=False)
    return index


def write_run(run_dir: Path, meta: dict, index: pd.DataFrame, test_rows, rng, saliency: bool, map_size: int):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(meta, indent=2))
    epochs = meta["epochs"]
    pd.DataFrame({"epoch": np.arange(1, epochs + 1), "train_loss": np.linspace(2.0, 0.5, epochs),
                  "train_acc": np.linspace(0.2, 0.9, epochs), "val_acc": np.linspace(0.2, meta["val_acc"], epochs),
                  "seconds": 0.1}).to_csv(run_dir / "history.tsv", sep="\t", index=False)
    labels = index.label.values[test_rows]
    classes = int(index.label.max()) + 1
    # About half right, the rest a neighbouring class, so both Table 3 and Table 4 cases occur.
    pred = np.where(rng.random(len(test_rows)) < 0.5, labels, (labels + 1) % classes)
    pd.DataFrame({"row": test_rows, "path": index.path.values[test_rows], "label": labels, "pred": pred,
                  "class_name": index.class_name.values[test_rows],
                  "pred_name": [f"class_{p}" for p in pred]}).to_csv(run_dir / "predictions.tsv", sep="\t", index=False)
    if saliency:
        maps = rng.random((len(test_rows), map_size, map_size)).astype(np.float16)
        np.savez_compressed(run_dir / "saliency.npz", before=maps, after=(maps * 0.5 + 0.25).astype(np.float16),
                            rows=np.asarray(test_rows, dtype=np.int64))


def build_tree(root, archs=("alexnet",), datasets=("synth_fine",), methods=("baseline", "scratch_sal", "approach_a", "approach_b"),
               ks=("1", "3", "K"), seeds=(0, 1, 2), synthetic=True, skip=(), variants=(), classes=4, per_class=6,
               size=32, input_size=28, epochs=4) -> Path:
    """Write results/{datasets,prepared,runs} under ``root``; ``skip`` lists (dataset, method, k, seed) left out.

    ``variants`` adds ablation runs of approach_b (and baseline is shared) at every k and seed.
    Returns the results folder.
    """
    results = Path(root) / "results"
    runs = [(a, d, m, VARIANT, k, s) for a in archs for d in datasets for m in methods for k in ks for s in seeds]
    runs += [(a, d, "approach_b", v, k, s) for a in archs for d in datasets for v in variants for k in ks for s in seeds]
    indexes = {d: write_dataset(results, d, classes, per_class, size, seed=i) for i, d in enumerate(datasets)}
    for arch, dataset, method, variant, k, seed in runs:
        if (dataset, method, k, seed) in skip:
            continue
        index = indexes[dataset]
        # Test set: the last 2 images of each class (same rows for every method at a seed, as the splits).
        test_rows = [int(r) for c in range(classes) for r in np.flatnonzero(index.label.values == c)[-2:]]
        acc = accuracy(method, list(ks).index(k), seed, variant)
        meta = {"arch": arch, "dataset": dataset, "method": method, "variant": variant, "k": k, "seed": seed,
                "num_classes": classes, "synthetic": synthetic, "input_size": input_size, "epochs": epochs,
                "best_epoch": epochs - 1, "val_acc": acc, "test_acc": acc, "n_train": classes, "n_val": classes,
                "n_test": len(test_rows), "config": {"lr": 0.003, "weights": "scratch"}, "wall_seconds": 1.0,
                "device": "cpu"}
        rng = np.random.default_rng(zlib.crc32(f"{method}{variant}{k}{seed}".encode()))
        write_run(results / "runs" / arch / dataset / method / variant / f"k{k}" / f"seed{seed}", meta, index,
                  test_rows, rng, saliency=method not in ("baseline", "smic"), map_size=7)
    return results


def metrics_paths(results: Path) -> list[Path]:
    return sorted(Path(results).glob("runs/*/*/*/*/k*/seed*/metrics.json"))


REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = """\
datasets:
  synth_fine: {kind: synthetic, task: fine, classes: 4, images_per_class: 6, image_size: 32, seed: 0}
source: {name: synth_source, kind: synthetic, task: coarse, classes: 4, images_per_class: 6, image_size: 32, seed: 1}
archs: [alexnet]
methods: [baseline, scratch_sal, approach_a, approach_b]
ks: [1, 3, K]
seeds: [0, 1, 2]
model: {weights: scratch, saliency_depth: 4, fusion: pool2, modulation: eq2}
data: {resize: 32, input_size: 28}
train: {finetune: {epochs: 4, lr: 0.003}}
resources: {gpu: 0, mem_mb: 1000, runtime: 10}
"""

# The project's report rules on top of stand-in rules that "produce" the runs by copying a
# fake results tree, so that every file has Snakemake metadata and `--report` works.
TINY_SNAKEFILE = """\
include: "{repo}/workflow/rules/common.smk"
include: "{repo}/workflow/rules/report.smk"

report: "{repo}/reports/workflow.rst"

FIX = "{fixture}"


rule all:
    input:
        report_targets(),


rule fake_finetune:
    output:
        "results/runs/{{arch}}/{{dataset}}/{{method}}/{{variant}}/k{{k}}/seed{{seed}}/metrics.json",
    shell:
        "cp $(dirname {{FIX}}/{{output}})/* $(dirname {{output}})/"


rule fake_dataset:
    output:
        "results/datasets/{{dataset}}/index.tsv",
        "results/prepared/{{dataset}}/images.npy",
    shell:
        "cp {{FIX}}/{{output[0]}} {{output[0]}} && cp {{FIX}}/{{output[1]}} {{output[1]}}"
"""


def build_workflow(root, python: str, repo: Path = REPO) -> Path:
    """A tiny finished-able workflow in ``root``: config, Snakefile, fixture tree, `halsal` shim on bin/."""
    root = Path(root)
    build_tree(root / "fixture", ks=("1", "3", "K"), seeds=(0, 1, 2))
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "config.yaml").write_text(TINY_CONFIG)
    (root / "Snakefile").write_text(TINY_SNAKEFILE.format(repo=repo, fixture=root / "fixture"))
    (root / "bin").mkdir(exist_ok=True)
    shim = root / "bin" / "halsal"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{python}" -m halsal.report.cli "$@"\n')
    shim.chmod(0o755)
    return root
