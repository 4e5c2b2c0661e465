"""The paper's printed numbers (Tables 1-2) and the names the report uses.

The tables ship as package data (``halsal/resources/paper/table*_*.tsv``, accuracy in %),
one row per (arch, dataset, method) with columns ``k=1 .. k=K`` and the printed ``AVG``.
The printed AVG is never used: for three rows it is not the mean of the ten k columns (the
paper's Tables 1-2; see ``shared/paper/README.md`` beside the checkout), so the report
recomputes the average over the k columns it shows.
"""

from __future__ import annotations

import functools
import importlib.resources

import pandas as pd

from halsal import spec
from halsal.data.smic_maps import source_of_label

# Method ids (paths, config) -> the paper's row names, in the paper's row order (halsal.spec).
METHOD_LABELS = {name: m.label for name, m in spec.METHODS.items()}
# The paper's asterisk: SMIC needs an explicit saliency method (a saliency dataset).
SMIC_NOTE = "* requires an explicit saliency method (SMIC, Flores et al. 2019)"
# SMIC run with maps from the spectral residual (Hou & Zhang 2007), not from the explicit
# saliency method of the paper: same architecture, different maps, so it gets its own name
# and is never compared with the paper's SMIC row (the paper's value is shown for reference).
SMIC_SPECTRAL_LABEL = "SMIC (spectral-residual maps)"
SMIC_SPECTRAL_NOTE = (f"{SMIC_SPECTRAL_LABEL}: the SMIC network fed with spectral-residual maps (Hou & Zhang 2007, "
                      "an unsupervised method), not the explicit saliency method of the paper; the paper's SMIC "
                      "values are shown for reference only, without a difference.")
PAPER_TABLES = {"alexnet": "table1_alexnet.tsv", "resnet152": "table2_resnet152.tsv"}
PAPER_KS = ["1", "2", "3", "5", "10", "15", "20", "25", "30", spec.K_ALL]
# The printed tables' row names (SMIC without its asterisk) -> method ids.
_PAPER_METHOD = {m.label.rstrip("*"): name for name, m in spec.METHODS.items()}


def smic_maps_kind(runs: pd.DataFrame) -> str | None:
    """Where the SMIC runs' maps come from: "spectral_residual", "folder", or None when no SMIC
    run says. metrics.json ``saliency_maps`` (the runs table's column) holds the label of the
    maps' source (maps.json ``label``), read back as the exact inverse of the writer
    (:func:`halsal.data.smic_maps.source_of_label`), never by the words in it. Spectral residual
    in any run wins: those runs are not the paper's SMIC."""
    if not len(runs) or "saliency_maps" not in runs:
        return None
    kinds = {source_of_label(t) for t in runs[runs.method == "smic"].saliency_maps.dropna()}
    for kind in ("spectral_residual", "folder"):
        if kind in kinds:
            return kind
    return None


def method_labels(runs: pd.DataFrame | None = None) -> dict:
    """METHOD_LABELS for these runs: SMIC is "SMIC (spectral-residual maps)" when its maps are spectral residual."""
    labels = dict(METHOD_LABELS)
    if runs is not None and smic_maps_kind(runs) == "spectral_residual":
        labels["smic"] = SMIC_SPECTRAL_LABEL
    return labels


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


# The paper's datasets by config `kind` (what halsal fetches in full): the name of their
# rows in Tables 1-2, the full name and the number of classes.
PAPER_DATASETS = {"flowers102": ("Flowers", "Oxford Flowers 102", 102),
                  "cub200": ("Birds", "CUB-200-2011", 200),
                  "cars196": ("Cars", "Stanford Cars", 196)}


def paper_dataset(name: str, kind: str | None = None) -> tuple[str, bool]:
    """The paper's row shown beside a dataset, and whether the dataset IS that paper dataset.

    Only the config `kind` makes a dataset a paper dataset (``flowers102``/``cub200``/``cars196``:
    fetched in full), never its name: a folder named "cars_subset" is not Stanford Cars. For any
    other dataset the row is picked for reference only (``False``): by a hint in the name
    (flower, cub/bird, car), else Flowers, the paper's main dataset and that of Figures 2-3.
    """
    if kind in PAPER_DATASETS:
        return PAPER_DATASETS[kind][0], True
    low = name.lower()
    for key, paper in (("flower", "Flowers"), ("cub", "Birds"), ("bird", "Birds"), ("car", "Cars")):
        if key in low:
            return paper, False
    return "Flowers", False


def comparability(name: str, kind: str | None, num_classes=None, ks=()) -> str | None:
    """Why a dataset's runs are NOT comparable with the paper's row (None when they are).

    Comparable only when the dataset is the paper dataset fetched in full (its `kind`), has
    that dataset's class count (no class dropped; ``num_classes`` from the runs, None when no
    run finished), and at least one of its k values is in the paper (``ks``).
    """
    pdata, is_paper = paper_dataset(name, kind)
    if kind and kind.endswith("-subset"):
        return f"{name} is a per-class subset of {kind.removesuffix('-subset')} (datasets.{name}.per_class), not the whole dataset"
    if not is_paper:
        what = f"a {kind} dataset" if kind else "not a dataset of the paper"
        return f"{name} is {what} (only kind flowers102, cub200 or cars196, fetched in full, is the paper's data)"
    full, classes = PAPER_DATASETS[kind][1], PAPER_DATASETS[kind][2]
    if num_classes is None:
        return f"no finished run to check that {name} has {full}'s {classes} classes"
    if int(num_classes) != classes:
        return f"{name} has {int(num_classes)} classes, {full} in the paper has {classes}"
    if ks and not any(str(k) in PAPER_KS for k in ks):
        return f"none of the k values ({', '.join(map(str, ks))}) is in the paper"
    return None


def paper_value(arch: str, dataset: str, method: str, k: str, kind: str | None = None) -> float:
    """The printed accuracy (%) or NaN where the paper has no such cell (``kind``: the dataset's config kind)."""
    table = paper_table()
    pdata, _ = paper_dataset(dataset, kind)
    hit = table[(table.arch == arch) & (table.dataset == pdata) & (table.method == method) & (table.k == str(k))]
    return float(hit.acc.iloc[0]) if len(hit) else float("nan")
