"""Object boxes: from a dataset's own pixels to the prepared cache and the network input.

A dataset may give each image's object box (``bbox_x bbox_y bbox_w bbox_h`` in the stored
image's pixels: the CUB-200 bird boxes in ``images.tsv``, the synthetic generator's object).
The prepare stage maps each box through the same geometry as the pixels (shorter side resized
to ``resize`` as torchvision does, then the centre ``resize`` square), and the training input
maps it once more onto the evaluation centre crop. The saliency health statistics
(:mod:`halsal.train.health`) use it for ``object_ratio``.
"""

from __future__ import annotations

import numpy as np

BOX_COLUMNS = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]  # index.tsv / images.tsv: stored-image pixels
CACHE_BOX_COLUMNS = ["box_x0", "box_y0", "box_x1", "box_y1"]  # manifest.tsv: cache pixels


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """torchvision's ``resize(img, [resize])``: the shorter side -> resize, ``long = int(resize * long / short)``."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def box_to_cache(box, width: int, height: int, resize: int) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` in a ``width x height`` image -> ``(x0, y0, x1, y1)`` in the cached
    ``resize x resize`` centre square (clipped; NaN when the box lies outside it)."""
    x, y, w, h = (float(v) for v in box)
    new_w, new_h = resized_size(width, height, resize)
    sx, sy = new_w / width, new_h / height
    ox, oy = int(round((new_w - resize) / 2.0)), int(round((new_h - resize) / 2.0))  # torchvision's centre crop
    return clip_box((x * sx - ox, y * sy - oy, (x + w) * sx - ox, (y + h) * sy - oy), 0, resize)


def clip_box(box, low: float, high: float) -> tuple[float, float, float, float]:
    """Clip ``(x0, y0, x1, y1)`` to the square ``[low, high]``; all NaN when nothing is left."""
    x0, y0, x1, y1 = (min(max(float(v), low), high) for v in box)
    if not (x1 > x0 and y1 > y0):
        return (np.nan,) * 4
    return x0, y0, x1, y1


def crop_boxes(boxes: np.ndarray, cache_size: int, input_size: int) -> np.ndarray:
    """Cache-pixel boxes ``(N, 4)`` -> boxes in the evaluation centre crop (offset ``(S - s) // 2``)."""
    off = (cache_size - input_size) // 2
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.array([clip_box(b - off, 0, input_size) if np.isfinite(b).all() else (np.nan,) * 4 for b in boxes],
                    dtype=np.float64).reshape(-1, 4)
