"""Wall time per stage of a workflow run, from Snakemake's benchmark files: the rows of
results.md's "Wall time per stage" table.

The files come grouped by the row they count in, ``{stage label: [benchmark .tsv, ...]}``, in
the order of the rows (the workflow builds it from its own jobs' benchmark paths: nothing here
reads a folder or a path's parts)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

COLUMNS = ["stage", "jobs", "wall s (sum)", "wall s (longest job)", "CPU s (sum)"]


def _last_row(path) -> dict | None:
    """A benchmark file's wall and CPU seconds (its last row), or None when the file is absent,
    empty or has no ``s`` column."""
    path = Path(path)
    if not path.is_file() or not path.stat().st_size:
        return None
    try:
        b = pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:
        return None
    if not len(b) or "s" not in b:
        return None
    return {"s": float(b.s.iloc[-1]), "cpu": float(b.cpu_time.iloc[-1]) if "cpu_time" in b else math.nan}


def wall_time(benchmarks: dict) -> pd.DataFrame:
    """Per stage label of ``benchmarks`` ({label: [benchmark .tsv paths]}), in its order: jobs,
    the sum and the largest of their wall seconds, and CPU seconds (jobs of one stage may have run
    side by side), then an "all jobs" row. A label none of whose files exists or holds a row is
    left out."""
    rows = []
    for label, paths in (benchmarks or {}).items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            row = _last_row(path)
            if row is not None:
                rows.append({"stage": str(label), **row})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    r = pd.DataFrame(rows)
    g = r.groupby("stage", sort=False).agg(jobs=("s", "size"), total=("s", "sum"), longest=("s", "max"),
                                           cpu=("cpu", "sum")).reset_index()
    g.loc[len(g)] = ["all jobs", int(g.jobs.sum()), g.total.sum(), g.longest.max(), g.cpu.sum()]
    return g.rename(columns={"total": "wall s (sum)", "longest": "wall s (longest job)", "cpu": "CPU s (sum)"})
