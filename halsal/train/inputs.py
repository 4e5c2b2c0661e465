"""Reading a prepared dataset and its split into device-resident train/val/test sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halsal.data.splits import relabel, select
from halsal.errors import HalsalError
from halsal.train.data import DeviceImages


@dataclass
class SplitData:
    train: DeviceImages
    val: DeviceImages
    test: DeviceImages
    class_names: list[str]
    test_rows: pd.DataFrame  # row, path, label, class_name of the test images, in order
    skipped: int  # images of this split skipped by the prepare policy


def load_split(prepared: str | Path, split_tsv: str | Path, k, device: torch.device, input_size: int,
               random_crop: bool = True, flip: bool = True) -> SplitData:
    prepared = Path(prepared)
    images_path = prepared / "images.npy"
    if not images_path.is_file():
        raise HalsalError(f"{images_path} is missing: run the prepare rule for this dataset first")
    # Memory-mapped: only the rows of this split are read from disk.
    cache = np.load(images_path, mmap_mode="r", allow_pickle=False)
    split = pd.read_csv(split_tsv, sep="\t", keep_default_na=False)
    manifest = prepared / "manifest.tsv"
    skipped = 0
    if manifest.is_file():
        status = pd.read_csv(manifest, sep="\t", keep_default_na=False).set_index("row")["status"]
        bad = split["row"].map(status).ne("ok")
        skipped = int(bad.sum())
        split = split[~bad]  # counted in metrics.json and listed in the manifest the report shows
    split, names = relabel(split)
    parts = {}
    for role in ("train", "val", "test"):
        rows = select(split, role, k if role == "train" else None)
        if rows.empty:
            raise HalsalError(f"split {split_tsv} has no {role} images for k={k}")
        augment = role == "train"
        parts[role] = DeviceImages(cache[rows["row"].to_numpy()], rows["label"].to_numpy(), device, input_size,
                                   random_crop=random_crop and augment, flip=flip and augment)
        if role == "test":
            test_rows = rows[["row", "path", "label", "class_name"]]
    return SplitData(parts["train"], parts["val"], parts["test"], names, test_rows, skipped)
