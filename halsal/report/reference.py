"""A reference map beside the hallucinated ones in the saliency-health table (not in the paper).

The object ratio of a hallucinated map (> 1: on the object) means little alone: a centre bias
or a generic "interesting texture" detector also scores above 1 on photographs whose object
sits in the middle. The spectral residual (Hou & Zhang 2007, the maps SMIC is fed with here,
``halsal smic-maps``) is a training-free bottom-up map, so its ratio on the *same* test
images, at the *same* resolution, is the bar a learned map has to clear.

Per arch, dataset, variant and seed, the test images, their object boxes and the map's
resolution come from one run's ``saliency.npz`` (every run of a seed shares its split's test
images); the spectral-residual map of each image (``results/smic/<dataset>/maps.npy``, at the
cache's resolution) is cut to the evaluation's centre crop and area-averaged to the
hallucinated map's H x W, and scored by the same statistics as every run
(``halsal.train.health``, numpy only). One row per (arch, dataset, variant), means over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from halsal import spec
from halsal.errors import HalsalError
from halsal.train.health import box_weights, is_dead, saliency_stats

REFERENCE_METHOD = "spectral_residual"
REFERENCE_LABEL = "Spectral residual (reference: no training, not in the paper)"
REFERENCE_K = "all"  # the test images of a seed are the same at every k


def area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)``: row i averages the input pixels under output cell i, each weighted by
    the fraction of it that the cell covers (exact area resampling, rows sum to 1)."""
    edges = np.linspace(0, n_in, n_out + 1)
    px = np.arange(n_in)[None, :]
    cover = np.clip(np.minimum(edges[1:, None], px + 1) - np.maximum(edges[:-1, None], px), 0, None)
    return cover / cover.sum(1, keepdims=True)


def crop_and_resample(maps: np.ndarray, input_size: int, shape: tuple[int, int]) -> np.ndarray:
    """Cache-resolution maps ``(N, S, S)`` (uint8 0-255 or float) -> the evaluation's centre
    ``input_size`` crop (offset ``(S - input_size) // 2``, as the device cache's) area-averaged to
    ``shape``, as floats in [0, 1] for uint8 input."""
    m = np.asarray(maps)
    scale = 255.0 if m.dtype == np.uint8 else 1.0
    size = m.shape[-1]
    if m.ndim != 3 or m.shape[1] != size or size < input_size:
        raise HalsalError(f"reference maps must be (N, S, S) with S >= the input size {input_size}, got {m.shape}")
    off = (size - input_size) // 2
    crop = m[:, off:off + input_size, off:off + input_size].astype(np.float64) / scale
    return np.einsum("hi,nij,wj->nhw", area_matrix(shape[0], input_size), crop, area_matrix(shape[1], input_size))


def _seed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run with a hallucinated map per (arch, dataset, variant, seed): its saliency.npz holds
    the seed's test rows, boxes and the map's resolution."""
    sel = runs[runs.method.isin([n for n, m in spec.METHODS.items() if m.saliency != "none"])]
    return sel.sort_values(["arch", "dataset", "variant", "seed", "method", "k"]).groupby(
        ["arch", "dataset", "variant", "seed"], sort=True).head(1)


def reference_rows(runs: pd.DataFrame, maps_by_dataset: dict[str, str | Path], columns) -> pd.DataFrame:
    """Health-table rows (``columns``) of the spectral-residual maps of each dataset in
    ``maps_by_dataset`` (dataset -> maps.npy), on the test images of the runs' seeds."""
    rows = []
    if not len(runs) or not maps_by_dataset:
        return pd.DataFrame(rows, columns=columns)
    for (arch, dataset, variant), g in _seed_runs(runs).groupby(["arch", "dataset", "variant"], sort=True):
        if dataset not in maps_by_dataset:
            continue
        path = Path(maps_by_dataset[dataset])
        if not path.exists():
            raise HalsalError(f"{path} does not exist: run the smic_maps rule for {dataset!r} (smic.reference)")
        all_maps = np.load(path, mmap_mode="r", allow_pickle=False)
        stats = []
        for r in g.itertuples():
            npz = Path(r.run_dir) / "saliency.npz"
            with np.load(npz, allow_pickle=False) as z:
                rows_idx, boxes, after = z["rows"], z["boxes"], z["after"]
            if after.ndim != 3 or not len(after):
                raise HalsalError(f"{npz} has no maps ({after.shape}): re-run its finetune rule")
            if rows_idx.max() >= len(all_maps):
                raise HalsalError(f"{npz} names image row {int(rows_idx.max())} but {path} has {len(all_maps)} maps: "
                                  f"re-run smic_maps for {dataset!r}")
            input_size, shape = int(r.input_size), tuple(after.shape[1:])
            maps = crop_and_resample(np.asarray(all_maps[rows_idx]), input_size, shape)
            weights = box_weights(boxes, input_size, shape) if np.isfinite(boxes).any() else None
            stats.append(saliency_stats(maps, weights))
        mean = lambda key: float(np.mean([s[key] for s in stats if s[key] is not None])) if any(  # noqa: E731
            s[key] is not None for s in stats) else math.nan
        n_dead = sum(is_dead(s) for s in stats)
        rows.append({
            "arch": arch, "dataset": dataset, "method": REFERENCE_METHOD, "label": REFERENCE_LABEL, "variant": variant,
            "k": REFERENCE_K, "n_runs": len(stats), "n_stats": len(stats), "n_dead": n_dead,
            "dead": f"{n_dead} of {len(stats)}", "dead_seeds": "", "test_mean": mean("mean"), "before_mean": math.nan,
            "test_object_ratio": mean("object_ratio"), "before_object_ratio": math.nan,
            "test_spatial_cv": mean("spatial_cv"), "test_dead_fraction": mean("dead_fraction"),
            "val_dead_fraction": math.nan, "synthetic": bool(g.synthetic.astype(bool).any()),
        })
    return pd.DataFrame(rows, columns=columns).round({c: 4 for c in ("test_mean", "test_object_ratio", "test_spatial_cv",
                                                                    "test_dead_fraction")})
