"""Decode every image of a dataset once into a uint8 cache (``images.npy``) with a manifest.

The cache holds ``resize x resize`` centre squares (shorter side resized to ``resize``, then
the centre crop); training cuts its random ``input_size`` crops from it on the device, and
evaluation its centre crop. Decoding uses DALI (GPU ``mixed`` where a GPU is present, CPU
operators otherwise), see :mod:`halsal.data.decode`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from halsal import settings
from halsal.data.boxes import BOX_COLUMNS, CACHE_BOX_COLUMNS, box_to_cache
from halsal.data.datasets import read_index
from halsal.data.decode import decode_images
from halsal.io import save_npy, write_json, write_tsv
from halsal.data.manifest import images_path, manifest_path


def prepare(index_tsv: str | Path, out_dir: str | Path, *, resize: int = settings.default("data.resize"),
            backend: str = settings.default("data.decode_backend"), on_error: str = settings.default("data.on_bad_image"),
            progress: bool = True, threads: int | None = None) -> dict:
    """Write ``out_dir/images.npy`` (N, resize, resize, 3) and ``out_dir/manifest.tsv``.

    ``threads``: the job's CPU threads (DALI's pipeline and the resampling pool); None: every core."""
    out_dir = Path(out_dir)
    index = read_index(index_tsv)
    result = decode_images(list(index["path"]), resize=resize, crop=resize, backend=backend,
                           on_error=on_error, progress=progress, num_threads=threads)
    manifest = pd.DataFrame({"row": range(len(index)), "path": index["path"], "status": result.status,
                             "reason": result.reasons})
    if set(BOX_COLUMNS) <= set(index.columns):
        manifest[CACHE_BOX_COLUMNS] = cache_boxes(index, resize)
    # The manifest goes first: images.npy is the rule's completion marker.
    write_tsv(manifest_path(out_dir), manifest)
    summary = {"images": len(index), "ok": int((manifest["status"] == "ok").sum()),
               "skipped": int((manifest["status"] != "ok").sum()), "backend": result.backend,
               "cache_shape": list(result.images.shape)}
    write_json(out_dir / "prepare.json", summary)
    save_npy(images_path(out_dir), result.images)
    return summary


def cache_boxes(index: pd.DataFrame, resize: int) -> np.ndarray:
    """Each image's object box in the cache's pixels ``(N, 4)``, NaN where it has none. The
    image's stored size comes from its header (boxes are in stored pixels, before EXIF rotation)."""
    from PIL import Image

    out = np.full((len(index), 4), np.nan)
    for i, (path, *box) in enumerate(zip(index["path"], *(index[c] for c in BOX_COLUMNS))):
        if not np.isfinite(np.asarray(box, dtype=float)).all():
            continue
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, ValueError):
            continue  # a file that does not decode is skipped (or fails) in the decode step
        out[i] = box_to_cache(box, width, height, resize)
    return out
