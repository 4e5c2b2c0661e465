"""The paper's printed numbers (Tables 1-2) and the names the report uses.

The tables ship as package data (``halsal/resources/paper/table*_*.tsv``, accuracy in %),
one row per (arch, dataset, method) with columns ``k=1 .. k=K`` and the printed ``AVG``.
The printed AVG is never used: it is off for three rows (see /work/shared/paper/README.md),
so the report recomputes the average over the k columns it shows.
"""

from __future__ import annotations

import functools
import importlib.resources

import pandas as pd

# Method ids (paths, config) -> the paper's row names, in the paper's row order.
METHOD_LABELS = {
    "baseline": "Baseline-RGB",
    "scratch_sal": "Baseline-RGB + scratch SAL",
    "smic": "SMIC*",
    "approach_a": "Approach A",
    "approach_b": "Approach B",
}
METHOD_ORDER = list(METHOD_LABELS)
# The paper's asterisk: SMIC needs an explicit saliency method (a saliency dataset).
SMIC_NOTE = "* requires an explicit saliency method (SMIC, Flores et al. 2019)"
ARCH_LABELS = {"alexnet": "AlexNet", "resnet152": "ResNet-152"}
PAPER_TABLES = {"alexnet": "table1_alexnet.tsv", "resnet152": "table2_resnet152.tsv"}
PAPER_KS = ["1", "2", "3", "5", "10", "15", "20", "25", "30", "K"]
_PAPER_METHOD = {"Baseline-RGB": "baseline", "Baseline-RGB + scratch SAL": "scratch_sal",
                 "SMIC": "smic", "Approach A": "approach_a", "Approach B": "approach_b"}


@functools.lru_cache(maxsize=None)
def paper_table() -> pd.DataFrame:
    """Both tables in long form: arch, dataset (Flowers/Cars/Birds), method (id), k (str), acc (%)."""
    frames = []
    for arch, name in PAPER_TABLES.items():
        with importlib.resources.files("halsal").joinpath("resources", "paper", name).open() as fh:
            wide = pd.read_csv(fh, sep="\t", dtype={"arch": str})
        ks = [c for c in wide.columns if c.startswith("k=")]
        long = wide.melt(id_vars=["arch", "dataset", "method"], value_vars=ks, var_name="k", value_name="acc")
        long["k"] = long["k"].str[2:]
        long["method"] = long["method"].map(_PAPER_METHOD)
        frames.append(long)
    return pd.concat(frames, ignore_index=True)


def paper_dataset(name: str) -> tuple[str, bool]:
    """The paper dataset a run's dataset is compared with, and whether the match is by name.

    Flowers/Birds/Cars are recognised by name (flowers102, cub200, cars196, ...). Any other
    dataset (the synthetic default, a user folder) gets Flowers, the paper's main dataset
    and the one of its Figures 2-3, as a reference only (``False``).
    """
    low = name.lower()
    for key, paper in (("flower", "Flowers"), ("cub", "Birds"), ("bird", "Birds"), ("car", "Cars")):
        if key in low:
            return paper, True
    return "Flowers", False


def paper_value(arch: str, dataset: str, method: str, k: str) -> float:
    """The printed accuracy (%) or NaN where the paper has no such cell."""
    table = paper_table()
    pdata, _ = paper_dataset(dataset)
    hit = table[(table.arch == arch) & (table.dataset == pdata) & (table.method == method) & (table.k == str(k))]
    return float(hit.acc.iloc[0]) if len(hit) else float("nan")
