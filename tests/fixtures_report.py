"""A fake finished results tree for the report tests (no training, no torch). Tests reach it
through the ``fake_results`` fixture of conftest.py, never by importing it.

Accuracies follow a known formula so tests can assert exact table values:
    baseline    = 0.30 + 0.10 * (position of k) + 0.01 * seed
    approach_b  = baseline + 0.01 * (seed + 1)      # paired diffs 1, 2, 3 points for seeds 0, 1, 2
    approach_a  = baseline + 0.02
    scratch_sal = baseline + 0.005
Variant runs (ablations) add ``0.01 * depth`` for depth variants and a fusion-dependent offset.

Every accuracy is a multiple of 0.5 points, so predictions.tsv (200 test images: 50 per class)
matches it exactly: per (dataset, k, seed) one shuffled order of the test images, Baseline-RGB
right on the first ``acc * 200`` of it and every other method on the same number of images
from position 4 on (paired, with cases both ways for the Table 3-4 grids).

Saliency (every method but the baseline; SMIC with ``SMIC_MAPS`` as its map source): the test
images' object box is the centre half of the input, the map 8 x 8; ``before`` is 0.5
everywhere (mean 0.5, object ratio 1), ``after`` is ``0.1 * (seed + 1) * P`` where ``P`` is
2.5 inside the box and 0.5 outside (mean 0.1 * (seed + 1), object ratio 2.5, spatial CV
sqrt(0.75)). Runs listed in ``dead`` get an all-zero ``after`` map (a deliberately killed map:
``dead_fraction`` 1.0). metrics.json's ``saliency`` object comes from halsal.train.health, as
in training.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

OFFSET = {"baseline": 0.0, "scratch_sal": 0.005, "approach_a": 0.02, "smic": 0.03}
VARIANT = "d4-pool2-eq2"
TEST_PER_CLASS = 50
MAP_SIZE = 8
SMIC_MAPS = "spectral residual (Hou & Zhang 2007), computed from the prepared images"


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


def fixture_maps(n: int, seed: int, dead: bool, input_size: int, map_size: int = MAP_SIZE):
    """(before, after, boxes) of the fixture's saliency runs (see the module docstring)."""
    q = input_size / 4
    boxes = np.tile([q, q, 3 * q, 3 * q], (n, 1))
    inside = np.zeros((map_size, map_size), bool)
    inside[map_size // 4: 3 * map_size // 4, map_size // 4: 3 * map_size // 4] = True
    pattern = np.where(inside, 2.5, 0.5)
    before = np.full((n, map_size, map_size), 0.5, dtype=np.float32)
    after = np.zeros_like(before) if dead else np.broadcast_to(0.1 * (seed + 1) * pattern, before.shape).astype(np.float32)
    return before, after, boxes


def saliency_object(before, after, boxes, input_size: int) -> dict:
    """metrics.json's "saliency" object, by the training code's own functions (numpy only)."""
    from halsal.train.health import box_weights, saliency_stats

    w = box_weights(boxes, input_size, after.shape[-2:])
    test = saliency_stats(after, w)
    return {"before": saliency_stats(before, w), "val": dict(test), "test": test}


def write_run(run_dir: Path, meta: dict, index: pd.DataFrame, test_rows, order, saliency: bool, dead: bool = False):
    """One run's files. ``order``: the (dataset, k, seed) shuffle of the test positions that
    decides which images are right (see the module docstring)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = index.label.values[test_rows]
    classes = int(index.label.max()) + 1
    n = len(test_rows)
    n_right = int(round(meta["test_acc"] * n))
    start = 0 if meta["method"] == "baseline" else 4
    right = np.zeros(n, bool)
    right[order[start:start + n_right]] = True
    pred = np.where(right, labels, (labels + 1) % classes)
    assert abs(right.mean() - meta["test_acc"]) < 1e-9, "fixture accuracies must be multiples of 1/n_test"
    if saliency:
        before, after, boxes = fixture_maps(n, meta["seed"], dead, meta["input_size"])
        meta = {**meta, "saliency": saliency_object(before, after, boxes, meta["input_size"])}
        if meta["method"] == "smic":
            meta["saliency_maps"] = SMIC_MAPS
        np.savez_compressed(run_dir / "saliency.npz", before=before.astype(np.float16), after=after.astype(np.float16),
                            rows=np.asarray(test_rows, dtype=np.int64), boxes=boxes)
    else:  # as Step 2 writes it for a method without a map: an empty file
        empty = np.zeros((0, 0, 0), dtype=np.float16)
        np.savez_compressed(run_dir / "saliency.npz", before=empty, after=empty, rows=np.zeros(0, dtype=np.int64),
                            boxes=np.zeros((0, 4)))
    (run_dir / "metrics.json").write_text(json.dumps(meta, indent=2))
    epochs = meta["epochs"]
    hist = {"epoch": np.arange(1, epochs + 1), "train_loss": np.linspace(2.0, 0.5, epochs),
            "train_acc": np.linspace(0.2, 0.9, epochs), "val_acc": np.linspace(0.2, meta["val_acc"], epochs),
            "seconds": 0.1}
    if saliency:
        hist.update(val_dead_fraction=np.linspace(0.0, 1.0 if dead else 0.0, epochs),
                    val_saliency_mean=np.full(epochs, meta["saliency"]["val"]["mean"]))
    pd.DataFrame(hist).to_csv(run_dir / "history.tsv", sep="\t", index=False)
    pd.DataFrame({"row": test_rows, "path": index.path.values[test_rows], "label": labels, "pred": pred,
                  "class_name": index.class_name.values[test_rows],
                  "pred_name": [f"class_{p}" for p in pred]}).to_csv(run_dir / "predictions.tsv", sep="\t", index=False)


def build_tree(root, archs=("alexnet",), datasets=("synth_fine",), methods=("baseline", "scratch_sal", "approach_a", "approach_b"),
               ks=("1", "3", "K"), seeds=(0, 1, 2), synthetic=True, skip=(), variants=(), classes=4,
               per_class=TEST_PER_CLASS + 4, size=32, input_size=28, epochs=4, dead=()) -> Path:
    """Write results/{datasets,prepared,runs} under ``root``; ``skip`` lists (dataset, method, k, seed) left out,
    ``dead`` the (dataset, method, k, seed) of the main variant whose map is killed (all zero after fine-tuning).

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
        # Test set: the last TEST_PER_CLASS images of each class (same rows for every method and k at a
        # seed, as the splits).
        test_rows = [int(r) for c in range(classes) for r in np.flatnonzero(index.label.values == c)[-TEST_PER_CLASS:]]
        acc = accuracy(method, list(ks).index(k), seed, variant)
        meta = {"arch": arch, "dataset": dataset, "method": method, "variant": variant, "k": k, "seed": seed,
                "num_classes": classes, "synthetic": synthetic, "input_size": input_size, "epochs": epochs,
                "best_epoch": epochs - 1, "val_acc": acc, "test_acc": acc, "n_train": classes, "n_val": classes,
                "n_test": len(test_rows), "skipped_images": 0,
                "config": {"epochs": epochs, "lr": 0.003, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.005,
                           "batch_size": 32, "checkpoint_seconds": 0.0, "augment": False},
                "wall_seconds": 1.0, "device": "cpu"}
        order = np.random.default_rng(zlib.crc32(f"{dataset}{k}{seed}".encode())).permutation(len(test_rows))
        write_run(results / "runs" / arch / dataset / method / variant / f"k{k}" / f"seed{seed}", meta, index,
                  test_rows, order, saliency=method != "baseline",
                  dead=variant == VARIANT and (dataset, method, k, seed) in set(dead))
    return results


def metrics_paths(results: Path) -> list[Path]:
    return sorted(Path(results).glob("runs/*/*/*/*/k*/seed*/metrics.json"))


REPO = Path(__file__).resolve().parents[1]
WORKFLOW_DEAD = {("synth_fine", "approach_b", "K", 1)}

TINY_CONFIG = """\
datasets:
  synth_fine: {kind: synthetic, task: fine, classes: 4, images_per_class: 54, image_size: 32, seed: 0}
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
        plan.report_targets(),


rule fake_finetune:
    output:
        **{{f.split(".")[0]: tree.run_file("{{arch}}", "{{dataset}}", "{{method}}", "{{variant}}", "{{k}}", "{{seed}}", f)
           for f in halsal_tree.RUN_FILES}},
    params:
        src=lambda wc: FIX + "/" + tree.run_dir(wc.arch, wc.dataset, wc.method, wc.variant, wc.k, wc.seed),
        dst=lambda wc: tree.run_dir(wc.arch, wc.dataset, wc.method, wc.variant, wc.k, wc.seed),
    shell:
        "cp {{params.src}}/* {{params.dst}}/"


# The benchmark files of the stand-in jobs, which the Markdown report's wall-time table reads.
rule fake_benchmark:
    output:
        "benchmarks/{{stage}}/{{name}}.tsv",
    wildcard_constraints:
        stage="(?!report)[a-z_]+",
    shell:
        "printf 's\\tcpu_time\\n1.0\\t0.5\\n' > {{output}}"


rule fake_dataset:
    output:
        "results/datasets/{{dataset}}/index.tsv",
        "results/prepared/{{dataset}}/images.npy",
    shell:
        "cp {{FIX}}/{{output[0]}} {{output[0]}} && cp {{FIX}}/{{output[1]}} {{output[1]}}"


rule fake_manifest:
    output:
        "results/prepared/{{dataset}}/manifest.tsv",
    shell:
        "cp {{FIX}}/{{output}} {{output}}"


rule fake_models:
    output:
        "results/models/{{arch}}/{{name}}.json",
    shell:
        "cp {{FIX}}/{{output}} {{output}}"


rule fake_split:
    output:
        split=tree.split("{{dataset}}", "{{seed}}"),
        notes=tree.split_notes("{{dataset}}", "{{seed}}"),  # no class dropped
    shell:
        "cp {{FIX}}/{{output.split}} {{output.split}} && : > {{output.notes}}"
"""


def write_data_files(results: Path, dataset: str, seeds=(0, 1, 2), val_per_class: int = 2) -> None:
    """The data stage's manifest.tsv (every image decoded) and split tables of a fixture dataset
    (the report's Data section reads them): per class the last TEST_PER_CLASS images are test,
    the ``val_per_class`` before them val, the rest train."""
    index = pd.read_csv(results / "datasets" / dataset / "index.tsv", sep="\t")
    (results / "prepared" / dataset).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"row": index.index, "status": "ok", "reason": ""}).to_csv(
        results / "prepared" / dataset / "manifest.tsv", sep="\t", index=False)
    pos = index.groupby("label").cumcount(ascending=False)  # 0 = last image of its class
    role = np.where(pos < TEST_PER_CLASS, "test", np.where(pos < TEST_PER_CLASS + val_per_class, "val", "train"))
    (results / "splits" / dataset).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        pd.DataFrame({"row": index.index, "label": index.label, "role": role}).to_csv(
            results / "splits" / dataset / f"seed{seed}.tsv", sep="\t", index=False)


BACKBONE_INFO = {"arch": "alexnet", "weights": "scratch", "source": "trained from scratch on the source set",
                 "best_epoch": 12, "val_acc": 0.25, "test_acc": 0.3, "epochs": 30, "num_classes": 200}
STEP1_INFO = {"arch": "alexnet", "variant": VARIANT, "best_epoch": 4, "val_acc": 0.26, "test_acc": 0.31, "epochs": 10,
              "saliency": {"before": {"n": 8, "mean": 0.04, "dead_fraction": 0.0},
                           "test": {"n": 8, "mean": 0.2, "dead_fraction": 0.125}}}


def write_models(results: Path, arch: str = "alexnet") -> None:
    """Step 0's and Step 1's JSON (``BACKBONE_INFO``, ``STEP1_INFO``) as the training steps write them."""
    models = Path(results) / "models" / arch
    models.mkdir(parents=True, exist_ok=True)
    (models / "backbone.json").write_text(json.dumps(BACKBONE_INFO))
    (models / f"saliency_{VARIANT}.json").write_text(json.dumps(STEP1_INFO))


def build_workflow(root, python: str, repo: Path = REPO) -> Path:
    """A tiny finished-able workflow in ``root``: config, Snakefile, fixture tree, `halsal` shim on bin/."""
    root = Path(root)
    # One deliberately killed map, so the dead-map warning has something to show.
    results = build_tree(root / "fixture", ks=("1", "3", "K"), seeds=(0, 1, 2), dead=WORKFLOW_DEAD)
    write_dataset(results, "synth_source", 4, TEST_PER_CLASS + 4, 32, seed=1)  # Step 0-1's source set
    write_data_files(results, "synth_fine")
    write_data_files(results, "synth_source", seeds=(0,))
    write_models(results)
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "config.yaml").write_text(TINY_CONFIG)
    (root / "Snakefile").write_text(TINY_SNAKEFILE.format(repo=repo, fixture=root / "fixture"))
    (root / "bin").mkdir(exist_ok=True)
    shim = root / "bin" / "halsal"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{python}" -m halsal "$@"\n')
    shim.chmod(0o755)
    return root
