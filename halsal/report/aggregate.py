"""One row per fine-tuning run: metrics.json files -> runs.tsv and a timm-style summary.csv.

Everything downstream (tables, statistics, plots, grids) reads the runs table, never the
metrics files, so a run that is absent is simply a row that is not there; the tables turn
the configured grid minus the present rows into cells marked "missing".

A degenerate run (fewer than 2 classes, or no test image: a number that means nothing, such as
the 100% of a one-class "classifier") never becomes a row: :func:`collect_runs` sets it aside
with its reason, the aggregate log names it and ``skipped_runs.tsv`` beside runs.tsv lists it
(docs/decisions.md, "Degenerate data"). The split stops such data before training; this guard
covers metrics from elsewhere (an older version, a hand-made split, ``--runs-root``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from halsal import spec
from halsal.errors import HalsalError
from halsal.io import atomic_write, write_tsv

SYNTHETIC_NOTE = "SYNTHETIC data \u2014 not a reproduction of the paper"
RUN_COLUMNS = [
    "arch", "dataset", "method", "variant", "depth", "fusion", "modulation", "k", "seed",
    "synthetic", "num_classes", "input_size", "epochs", "steps", "best_epoch", "val_acc", "test_acc",
    "n_train", "n_val", "n_test", "weights", "wall_seconds", "device", "saliency_maps",
]
# metrics.json's "saliency" object ({"before"|"val"|"test": stats}, runs with a map only;
# halsal/train/health.py) flattened to sal_<part>_<stat>; NaN for runs without a map.
SAL_PARTS = ("before", "val", "test")
SAL_STATS = ("mean", "dead_fraction", "spatial_cv", "object_ratio", "n")
SAL_COLUMNS = [f"sal_{part}_{stat}" for part in SAL_PARTS for stat in SAL_STATS]
RUN_COLUMNS += SAL_COLUMNS + ["run_dir"]
SKIPPED_COLUMNS = ["run_dir", "arch", "dataset", "method", "variant", "k", "seed", "num_classes", "n_test", "reason"]


def variant_of(variant: str | dict, arch: str) -> str:
    """The main variant of ``arch``: ``variant`` is one variant for all, or {arch: variant}."""
    return variant.get(arch, "") if isinstance(variant, dict) else variant


def main_runs(runs: pd.DataFrame, variant: str | dict) -> pd.DataFrame:
    """The runs of each architecture's main (non-ablation) variant."""
    if not len(runs):
        return runs
    return runs[[v == variant_of(variant, a) for a, v in zip(runs.arch, runs.variant)]]


def parse_variant_arg(values: list[str]) -> str | dict:
    """CLI ``--variant``: 'd4-pool2-eq2', or 'alexnet=d4-pool2-eq2 resnet152=d4-layer2.0-eq2'."""
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    return dict(v.split("=", 1) for v in values)


def k_sort_key(k) -> float:
    """Numeric k ascending, then K (all remaining training images) last."""
    return math.inf if str(k) == spec.K_ALL else float(k)


def sort_ks(ks: Iterable) -> list[str]:
    return sorted({str(k) for k in ks}, key=k_sort_key)


def read_metrics(path: str | Path) -> dict:
    """One metrics.json as a flat row of the runs table."""
    path = Path(path)
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HalsalError(f"cannot read run metrics {path}: {exc}; re-run its finetune rule") from exc
    missing = [key for key in ("arch", "dataset", "method", "variant", "k", "seed", "test_acc") if key not in m]
    if missing:
        raise HalsalError(f"{path} lacks the keys {missing}: it was not written by `halsal finetune`; delete it and re-run")
    row = {key: m.get(key) for key in RUN_COLUMNS}
    try:
        row.update(spec.parse_variant(m["variant"]))  # depth, fusion, modulation
    except ValueError as exc:
        raise HalsalError(f"{path}: run {exc}") from None
    row["k"] = str(m["k"])
    row["seed"] = int(m["seed"])
    row["synthetic"] = bool(m.get("synthetic", False))
    # Backbone weights: metrics.json of `halsal finetune` does not record them today (its
    # "config" is the optimiser's); left empty rather than guessed from the current config.
    row["weights"] = m.get("weights", (m.get("config") or {}).get("weights"))
    sal = m.get("saliency") or {}
    for part in SAL_PARTS:
        stats = sal.get(part) or {}
        for stat in SAL_STATS:
            value = stats.get(stat)
            row[f"sal_{part}_{stat}"] = math.nan if value is None else float(value)
    row["run_dir"] = str(path.parent)
    return row


def degenerate_reason(row: dict) -> str:
    """Why a run's accuracy means nothing ("" when it is a result): fewer than 2 classes, or no
    test image. A run whose metrics do not record a count is taken as it is."""
    def count(key):
        value = row.get(key)
        try:
            return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)
        except (TypeError, ValueError):
            return None

    classes, n_test = count("num_classes"), count("n_test")
    if classes is not None and classes < 2:
        return f"{classes} class(es): one class has no accuracy to report"
    if n_test is not None and n_test < 1:
        return "no test image: the test accuracy is not a measurement"
    return ""


def collect_runs(paths: Iterable[str | Path], allow_missing: bool = False) -> pd.DataFrame:
    """The runs table for these metrics files. Absent files are an error unless ``allow_missing``.

    Degenerate runs (:func:`degenerate_reason`) are not rows: they are named on stderr and kept
    in ``runs.attrs["skipped"]`` (dicts of :data:`SKIPPED_COLUMNS`) for :func:`write_aggregate`.
    """
    import sys

    rows, skipped = [], []
    for p in paths:
        if not Path(p).exists():
            if allow_missing:
                continue
            raise HalsalError(f"run metrics {p} do not exist: run its finetune rule first, or pass --allow-missing")
        row = read_metrics(p)
        reason = degenerate_reason(row)
        if reason:
            print(f"WARNING: run {row['run_dir']} left out of the tables: {reason} (listed in skipped_runs.tsv)",
                  file=sys.stderr)
            skipped.append({**{c: row.get(c) for c in SKIPPED_COLUMNS}, "reason": reason})
            continue
        rows.append(row)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if len(runs):
        runs = runs.assign(_k=runs.k.map(k_sort_key)).sort_values(
            ["arch", "dataset", "method", "variant", "_k", "seed"]).drop(columns="_k").reset_index(drop=True)
    runs.attrs["skipped"] = skipped
    return runs


def glob_metrics(runs_root: str | Path) -> list[Path]:
    """Every metrics.json under results/runs (for use outside the workflow)."""
    return sorted(Path(runs_root).glob("*/*/*/*/k*/seed*/metrics.json"))


def read_runs(path: str | Path) -> pd.DataFrame:
    """runs.tsv back, with k as text (``K`` is a valid k) and booleans restored."""
    try:
        runs = pd.read_csv(path, sep="\t", dtype={"k": str, "fusion": str, "variant": str, "saliency_maps": str})
    except (OSError, pd.errors.EmptyDataError) as exc:
        raise HalsalError(f"cannot read the runs table {path}: {exc}; re-run `halsal aggregate`") from exc
    for col in RUN_COLUMNS:  # a runs.tsv from before a column existed: the column is empty
        if col not in runs:
            runs[col] = math.nan
    if "synthetic" in runs:
        runs["synthetic"] = runs["synthetic"].astype(str).str.lower().isin(["true", "1"])
    return runs


def any_synthetic(runs: pd.DataFrame) -> bool:
    return bool(len(runs)) and bool(runs["synthetic"].any())


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """timm-style results summary: one row per configuration, top-1 in %, mean over seeds."""
    cols = ["model", "dataset", "k", "seeds", "top1", "top1_std", "top1_err", "val_top1", "img_size", "epochs", "synthetic"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    g = runs.assign(model=runs.arch + "/" + runs.method + "/" + runs.variant).groupby(
        ["model", "dataset", "k"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), top1=("test_acc", "mean"), top1_std=("test_acc", "std"),
                val_top1=("val_acc", "mean"), img_size=("input_size", "first"), epochs=("epochs", "first"),
                synthetic=("synthetic", "any")).reset_index()
    for c in ("top1", "top1_std", "val_top1"):
        out[c] = (out[c] * 100).round(2)
    out["top1_err"] = (100 - out["top1"]).round(2)
    return out[cols]


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy per arch, dataset, method, variant and k over seeds: ``n``, ``mean`` and
    ``std`` (in %, 3 decimals), in the runs table's order."""
    acc = (runs.groupby(["arch", "dataset", "method", "variant", "k"], sort=False).test_acc
           .agg(["count", "mean", "std"]).reset_index().rename(columns={"count": "n"}))
    acc[["mean", "std"]] = (acc[["mean", "std"]] * 100).round(3)
    return acc


def write_aggregate(runs: pd.DataFrame, runs_tsv, summary_csv) -> None:
    """runs.tsv, summary.csv, and ``skipped_runs.tsv`` beside runs.tsv: the degenerate runs that
    :func:`collect_runs` left out, with the reason (header only when none was)."""
    write_tsv(Path(runs_tsv).with_name("skipped_runs.tsv"),
              pd.DataFrame(list(runs.attrs.get("skipped") or []), columns=SKIPPED_COLUMNS))
    write_tsv(runs_tsv, runs)
    with atomic_write(summary_csv) as tmp:
        summary(runs).to_csv(tmp, index=False)
