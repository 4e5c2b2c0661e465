"""prepare's ``manifest.tsv``, read in one place.

One row per index row: ``row`` (its row in the index and in ``images.npy``), ``path``,
``status`` (``ok``, or why the image was skipped), ``reason``, and where the index has object
boxes, the box in the cache's pixels (``box_x0 .. box_y1``, empty where the image has none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from halsal.errors import HalsalError
from halsal.tree import PREPARED_IMAGES, PREPARED_MANIFEST

from halsal.data.boxes import CACHE_BOX_COLUMNS

MANIFEST = PREPARED_MANIFEST  # its name in a prepared folder, beside IMAGES
IMAGES = PREPARED_IMAGES  # the prepared uint8 cache's name in a prepared folder


def manifest_path(prepared: str | Path) -> Path:
    """The manifest of a prepared folder."""
    return Path(prepared) / MANIFEST


def images_path(prepared: str | Path) -> Path:
    """The uint8 image cache of a prepared folder (what `prepare` writes and every step reads)."""
    return Path(prepared) / IMAGES


def open_images(prepared: str | Path) -> np.ndarray:
    """A prepared folder's image cache, memory-mapped (only the rows used are read from disk);
    an error naming the file and the rule to run where it is missing."""
    path = images_path(prepared)
    if not path.is_file():
        raise HalsalError(f"{path} is missing: run the prepare rule for this dataset first")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest, indexed by ``row``: ``path``, ``status``, ``reason`` as strings and the
    cache boxes (where present) as floats, NaN where an image has none."""
    man = pd.read_csv(path, sep="\t", dtype={"path": str, "status": str, "reason": str}, keep_default_na=False,
                      na_values={c: [""] for c in CACHE_BOX_COLUMNS})
    man["row"] = man["row"].astype(int)
    return man.set_index("row", drop=False).rename_axis(None)


def read_prepared_manifest(prepared: str | Path) -> pd.DataFrame | None:
    """The manifest of a prepared folder, or None where it has none (an older cache)."""
    path = manifest_path(prepared)
    return read_manifest(path) if path.is_file() else None


def ok_rows(manifest: pd.DataFrame | None, rows) -> np.ndarray:
    """Whether each of ``rows`` decoded (status ``ok``); all True without a manifest."""
    rows = pd.Series(np.asarray(rows))
    if manifest is None:
        return np.ones(len(rows), dtype=bool)
    return rows.map(manifest["status"]).eq("ok").to_numpy()


def cache_boxes(manifest: pd.DataFrame | None) -> pd.DataFrame | None:
    """The cache boxes by row, or None where the manifest has no box columns."""
    if manifest is None or not set(CACHE_BOX_COLUMNS) <= set(manifest.columns):
        return None
    return manifest[CACHE_BOX_COLUMNS].astype(float)
