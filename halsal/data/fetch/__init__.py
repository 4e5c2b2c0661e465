"""Fetch a dataset into a verified, ready tree: ``fetch_dataset(name, root, ...)``.

A ready tree at ``root`` holds

- ``images/<class_dir>/<file>``: the images, ``class_dir`` like ``001_pink_primrose``
  (files are moved out of the extracted archive, or hard-linked/copied from a user folder);
- ``images.tsv``: ``path`` (relative to ``root``; ABSOLUTE for ``folder``, which indexes
  the source in place and copies nothing), ``class_id`` (the dataset's official id, 1-based),
  ``class_name``, ``official_split`` (``train``/``val``/``test``, empty when unknown);
- ``classes.tsv``: ``class_id``, ``name`` (plus ``wnid`` for imagenet_val);
- ``downloads/``: the verified archives, and the place to drop files fetched by hand;
- ``READY.json``: written last and atomically; its presence is what makes the tree ready.

While a tree is being built a ``.halsal-partial`` marker sits in ``root``; a later run
finding the marker (an interrupted build) rebuilds ``images/`` from scratch, reusing the
verified downloads. Re-running on a ready tree is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from halsal.data.fetch import cars, folder, imagenet, official
from halsal.data.fetch.common import Build
from halsal.errors import HalsalError
from halsal.io import write_json, write_tsv

__all__ = ["BUILDERS", "DATASETS", "READY", "Build", "fetch_dataset", "load_checksums", "read_ready"]

READY = "READY.json"
PARTIAL = ".halsal-partial"
FORMAT_VERSION = 1

# name -> builder; each fills in a Build (halsal.data.fetch.common) from downloads or a user source
BUILDERS: dict[str, Callable[[Build], None]] = {
    "flowers102": official.build_flowers102,
    "cub200": official.build_cub200,
    "cars196": cars.build_cars196,
    "imagenet_val": imagenet.build_imagenet_val,
    "folder": folder.build_folder,
}
DATASETS = tuple(BUILDERS)


def load_checksums() -> dict:
    """The shipped registry of known files (halsal/resources/checksums.json)."""
    text = resources.files("halsal").joinpath("resources/checksums.json").read_text()
    return json.loads(text)


def read_ready(root: str | os.PathLike) -> dict | None:
    """The READY.json of a tree, or None when it is not (yet) a ready tree."""
    path = Path(root) / READY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HalsalError(f"{path} is unreadable ({exc}); delete it and re-run the fetch.") from exc


def _as_list(source) -> list:
    if source is None:
        return []
    return list(source) if isinstance(source, (list, tuple)) else [source]


def fetch_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    source: str | os.PathLike | list | tuple | None = None,
    progress: bool = True,
    subset_per_class: int | None = None,
    seed: int = 0,
    checksums: dict | None = None,
) -> Path:
    """Produce (or find) the verified, ready tree of dataset ``name`` at ``root``.

    ``source``: a user path (or several) for datasets that cannot be downloaded: cars196
    (archives or extracted folder), imagenet_val (val images + devkit labels, or a
    ``<wnid>/<file>`` folder), folder (an ``images/<class>/<file>`` tree). flowers102 and
    cub200 download their official archives into ``root/downloads`` (a file placed there by
    hand is verified and used offline). ``subset_per_class``/``seed``: imagenet_val only, a
    deterministic per-class subset. ``checksums``: registry overriding the shipped one
    (same structure as checksums.json; used by tests and for mirrors).
    """
    if name not in DATASETS:
        raise HalsalError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if subset_per_class is not None and name != "imagenet_val":
        raise HalsalError(f"subset_per_class applies to imagenet_val only, not {name!r}.")
    if subset_per_class is not None and int(subset_per_class) < 1:
        raise HalsalError(f"subset_per_class must be >= 1 (got {subset_per_class}).")
    root = Path(root).expanduser().absolute()
    options = {"subset_per_class": subset_per_class, "seed": int(seed)}

    ready = read_ready(root)
    if ready is not None:
        if ready.get("name") != name:
            raise HalsalError(
                f"{root} already holds a ready {ready.get('name')!r} tree, not {name!r}; "
                f"choose another --root."
            )
        wanted = [str(Path(s).expanduser().absolute()) for s in _as_list(source)]
        if name == "folder" and wanted and ready.get("source") != wanted:
            raise HalsalError(
                f"{root} already indexes {ready.get('source')}, not {wanted}; choose another "
                f"--root or delete {root / READY} to re-index."
            )
        if name == "imagenet_val" and ready.get("options") != options:
            raise HalsalError(
                f"{root} was fetched with {ready.get('options')}, not {options}; choose another "
                f"--root or delete {root / READY} to rebuild."
            )
        return root

    registry = checksums if checksums is not None else load_checksums()
    sources = [Path(s).expanduser().absolute() for s in _as_list(source)]
    ctx = Build(name, root, registry.get(name, {}), sources, progress, options)
    _start(ctx)
    BUILDERS[name](ctx)
    _finish(ctx)
    return root


def _start(ctx: Build) -> None:
    root = ctx.root
    root.mkdir(parents=True, exist_ok=True)
    marker = root / PARTIAL
    if ctx.name != "folder":  # folder never writes images/ (it indexes the source in place)
        if ctx.images.exists() and not marker.exists():
            raise HalsalError(
                f"{ctx.images} exists but was not made by an unfinished halsal fetch (no {PARTIAL} "
                f"marker and no {READY}); choose an empty --root so nothing of yours is overwritten."
            )
        # An interrupted build: start images/ over; verified downloads are kept.
        for stale in (ctx.images, ctx.staging):
            if stale.exists():
                shutil.rmtree(stale)
    marker.write_text(ctx.name + "\n")


def _finish(ctx: Build) -> None:
    import pandas as pd

    if not ctx.records:
        raise HalsalError(f"no images were found for {ctx.name} under {ctx.root}; nothing to index.")
    if ctx.staging.exists():
        shutil.rmtree(ctx.staging)
    recs = sorted(ctx.records, key=lambda r: (r[1], r[0]))
    frame = pd.DataFrame(recs, columns=["path", "class_id", "class_name", "official_split"])
    write_tsv(ctx.root / "images.tsv", frame)
    cols = ["class_id", "name", "wnid"][: len(ctx.classes[0])]
    write_tsv(ctx.root / "classes.tsv", pd.DataFrame(sorted(ctx.classes), columns=cols))
    per_split = {str(k): int(v) for k, v in frame["official_split"].value_counts().sort_index().items()}
    per_class = frame["class_id"].value_counts()
    write_json(ctx.root / READY, {
        "name": ctx.name,
        "format_version": FORMAT_VERSION,
        "counts": {
            "images": len(frame),
            "classes": len(ctx.classes),
            "images_per_class_min": int(per_class.min()),
            "images_per_class_max": int(per_class.max()),
            "per_split": per_split,
        },
        "paths": "absolute" if ctx.absolute_paths else "relative",
        "source": [str(s) for s in ctx.source],
        "options": ctx.options,
        "checksums_verified": ctx.verified,
        **ctx.extra,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    (ctx.root / PARTIAL).unlink()
