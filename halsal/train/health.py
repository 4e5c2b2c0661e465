"""Saliency health: is the hallucinated map alive, structured, and on the object?

With Eq. 2, ``l * (s + 1)``, a map that is zero everywhere turns the network into
Baseline-RGB at test time. A 1x1 score followed by a ReLU can die that way during training
(every pre-activation pushed below zero, after which no gradient reaches it). These
statistics make that visible in every run (``metrics.json``'s ``saliency`` object, Step 1's
JSON, and the per-epoch ``val_dead_fraction`` of ``history.tsv``):

- ``mean``: the map's mean value over all images and positions;
- ``dead_fraction``: the share of images whose map is all zero;
- ``spatial_cv``: the mean over images of the map's spatial std / mean (a flat map scores 0,
  a dead map counts as 0);
- ``object_ratio``: where the images have object boxes, the mean over live images of the map's
  mean inside the object divided by its mean over the whole image (1.0: no preference,
  > 1: on the object); ``None`` where no box or no live map exists.

A map ``(N, H, W)`` is at the fusion point's resolution; a box is in the pixels of the network
input (the centre crop), and becomes a per-cell coverage weight at the map's resolution.
"""

from __future__ import annotations

import numpy as np

STAT_KEYS = ("n", "mean", "dead_fraction", "spatial_cv", "object_ratio", "n_boxes")
DEAD_THRESHOLD = 0.5  # a run's map is dead when at least this share of its images is all zero


def box_weights(boxes: np.ndarray, input_size: int, map_shape: tuple[int, int]) -> np.ndarray:
    """Per-cell coverage (0..1) of each box ``(x0, y0, x1, y1)`` (input pixels; NaN: no box) on an
    ``H x W`` map covering the ``input_size`` square. Rows without a box are all NaN."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = map_shape
    out = np.full((len(boxes), h, w), np.nan)
    ys = np.linspace(0, input_size, h + 1)
    xs = np.linspace(0, input_size, w + 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not np.isfinite([x0, y0, x1, y1]).all():
            continue
        cover_y = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0, None) / np.diff(ys)
        cover_x = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0, None) / np.diff(xs)
        out[i] = cover_y[:, None] * cover_x[None, :]
    return out


def saliency_stats(maps, weights: np.ndarray | None = None) -> dict:
    """Health statistics of maps ``(N, H, W)``; ``weights`` from :func:`box_weights` or None."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"saliency maps must be (N, H, W), got shape {m.shape}")
    n = len(m)
    if n == 0:
        return {"n": 0, "mean": None, "dead_fraction": None, "spatial_cv": None, "object_ratio": None, "n_boxes": 0}
    flat = m.reshape(n, -1)
    img_mean = flat.mean(1)
    dead = flat.max(1) <= 0
    live = ~dead
    cv = np.zeros(n)
    cv[live] = flat[live].std(1) / img_mean[live]
    ratio, n_boxes = None, 0
    if weights is not None:
        wf = np.asarray(weights, dtype=np.float64).reshape(n, -1)
        has_box = np.isfinite(wf).all(1) & (np.nan_to_num(wf).sum(1) > 0)
        n_boxes = int(has_box.sum())
        use = has_box & live
        if use.any():
            inside = (flat[use] * wf[use]).sum(1) / wf[use].sum(1)
            ratio = float(np.mean(inside / img_mean[use]))
    return {"n": int(n), "mean": float(m.mean()), "dead_fraction": float(dead.mean()),
            "spatial_cv": float(cv.mean()), "object_ratio": ratio, "n_boxes": n_boxes}


def is_dead(stats: dict | None, threshold: float = DEAD_THRESHOLD) -> bool:
    """A map counts as dead in a run when at least ``threshold`` of its images are all zero."""
    return bool(stats) and stats.get("dead_fraction") is not None and stats["dead_fraction"] >= threshold
