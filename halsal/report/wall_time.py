"""Wall time per stage of a workflow run, from Snakemake's benchmark files (``benchmarks/``):
the rows of results.md's "Wall time per stage" table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


STAGE_ORDER = ("datasets", "prepare", "splits", "smic_maps", "backbone", "pretrain_saliency", "finetune",
               "finetune_ablation", "probe", "report")
SHARED_STAGES = ("backbone", "pretrain_saliency", "report")  # files named by arch or report part, not dataset


def stage_of(rel: Path) -> str:
    """The stage a benchmark file belongs to: its first folder, fine-tuning split by method."""
    parts = rel.parts
    if parts[0] in ("finetune", "finetune_ablation") and len(parts) >= 4:
        return f"{parts[0]}: {parts[3]}"
    return parts[0]


def _stage_key(stage: str) -> tuple:
    head = stage.split(":")[0]
    return (STAGE_ORDER.index(head) if head in STAGE_ORDER else len(STAGE_ORDER), stage)


def wall_time(bench_dir, datasets=()) -> pd.DataFrame:
    """Per stage: jobs, the sum and the largest of their wall seconds, and CPU seconds
    (Snakemake's benchmark files; jobs of one stage may have run side by side). With
    ``datasets`` (the targets and the source set), a file of another dataset (left by another
    configuration sharing benchmarks/) is not counted."""
    rows = []
    for path in sorted(Path(bench_dir).rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        if datasets and rel.parts[0] not in SHARED_STAGES and not {*rel.parts[1:-1], path.stem} & set(datasets):
            continue
        b = pd.read_csv(path, sep="\t")
        if not len(b) or "s" not in b:
            continue
        rows.append({"stage": stage_of(rel), "s": float(b.s.iloc[-1]),
                     "cpu": float(b.cpu_time.iloc[-1]) if "cpu_time" in b else math.nan})
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "wall s (sum)", "wall s (longest job)", "CPU s (sum)"])
    r = pd.DataFrame(rows)
    g = r.groupby("stage").agg(jobs=("s", "size"), total=("s", "sum"), longest=("s", "max"), cpu=("cpu", "sum"))
    g = g.loc[sorted(g.index, key=_stage_key)].reset_index()
    g.loc[len(g)] = ["all jobs", int(g.jobs.sum()), g.total.sum(), g.longest.max(), g.cpu.sum()]
    return g.rename(columns={"total": "wall s (sum)", "longest": "wall s (longest job)", "cpu": "CPU s (sum)"})
