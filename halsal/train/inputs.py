"""Reading a prepared dataset and its split into device-resident train/val/test sets.

For SMIC the per-image saliency maps (uint8 ``(N, S, S)``, aligned with the image cache) are
stacked as a 4th channel of the device cache, so every random crop and flip cuts the map
exactly as its image; the model splits the channel off again (halsal.models.smic.MapInput).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from halsal.data.boxes import crop_boxes
from halsal.data.manifest import cache_boxes, ok_rows, open_images, read_prepared_manifest
from halsal.data.splits import relabel, select
from halsal.errors import HalsalError
from halsal.train.device_cache import DeviceImages, eval_batch_size, upload


@dataclass
class SplitData:
    train: DeviceImages
    val: DeviceImages
    test: DeviceImages
    class_names: list[str]
    test_rows: pd.DataFrame  # row, path, label, class_name of the test images, in order
    skipped: int  # images of this split skipped by the prepare policy
    # Object boxes of the val/test images in the evaluation crop's pixels (N, 4), NaN where an
    # image has none; None when the dataset has no boxes.
    boxes: dict = field(default_factory=dict)


class DeviceImagesWithMaps(DeviceImages):
    """RGB images plus one saliency map per image (uint8 ``(N, S, S)``); batches are
    ``(B, 4, h, w)``: the RGB channels ImageNet-normalised, the map scaled to [0, 1], cut with
    the same crop offsets and flips as its image."""

    def __init__(self, images: np.ndarray, maps: np.ndarray, labels: np.ndarray, device: torch.device,
                 input_size: int, random_crop: bool = True, flip: bool = True, normalisation: tuple | None = None):
        super().__init__(images, labels, device, input_size, random_crop, flip, normalisation)
        if maps.shape != images.shape[:3]:
            raise HalsalError(f"saliency maps have shape {maps.shape}, the images {images.shape[:3]}")
        self.maps = upload(maps, device)  # chunked: one copy on the device

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 4:
            return torch.cat([super()._normalise(x[:, :3]), x[:, 3:].float() / 255], 1)
        return super()._normalise(x)

    def _crop(self, idx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        rgb = super()._crop(idx, oy, ox, flip)
        ar = torch.arange(self.input_size, device=self.device)
        cols = torch.where(flip[:, None], ox[:, None] + self.input_size - 1 - ar, ox[:, None] + ar)
        rows = oy[:, None] + ar
        maps = self.maps[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        return torch.cat([rgb, maps[:, None]], 1)

    def eval_batches(self, batch_size: int | None = None):
        """Centre crops in order, the map as the 4th channel."""
        batch_size = batch_size or eval_batch_size(self.device)
        off = (self.images.shape[-1] - self.input_size) // 2
        win = slice(off, off + self.input_size)
        for (x, y), start in zip(super().eval_batches(batch_size), range(0, len(self), batch_size)):
            m = self.maps[start:start + batch_size, None, win, win]
            yield torch.cat([x, m.float() / 255], 1), y


def load_split(prepared: str | Path, split_tsv: str | Path, k, device: torch.device, input_size: int,
               random_crop: bool = True, flip: bool = True, maps: np.ndarray | None = None,
               cache: np.ndarray | None = None, normalisation: tuple | None = None) -> SplitData:
    """Train/val/test sets of a split; ``maps`` (uint8 ``(N, S, S)``, rows as the cache) adds the
    SMIC saliency map as a 4th channel. ``cache``: ``prepared``'s images.npy already opened
    (a fine-tuning job opens it once for all its runs). ``normalisation``: the backbone weights'
    ``(mean, std)`` (:func:`halsal.models.weights.normalisation`)."""
    prepared = Path(prepared)
    if cache is None:
        cache = open_images(prepared)
    split = pd.read_csv(split_tsv, sep="\t", keep_default_na=False)
    man = read_prepared_manifest(prepared)
    boxes_by_row = cache_boxes(man)
    bad = ~ok_rows(man, split["row"])
    skipped = int(bad.sum())
    split = split[~bad]  # counted in metrics.json and listed in the manifest the report shows
    split, names = relabel(split)
    parts, boxes = {}, {}
    for role in ("train", "val", "test"):
        rows = select(split, role, k if role == "train" else None)
        if rows.empty:
            raise HalsalError(f"split {split_tsv} has no {role} images for k={k}")
        augment = role == "train"
        idx = rows["row"].to_numpy()
        opts = dict(random_crop=random_crop and augment, flip=flip and augment, normalisation=normalisation)
        if maps is None:
            parts[role] = DeviceImages(cache[idx], rows["label"].to_numpy(), device, input_size, **opts)
        else:
            parts[role] = DeviceImagesWithMaps(cache[idx], maps[idx], rows["label"].to_numpy(), device, input_size, **opts)
        if role == "test":
            test_rows = rows[["row", "path", "label", "class_name"]]
        if boxes_by_row is not None and role != "train":
            boxes[role] = crop_boxes(boxes_by_row.loc[idx].to_numpy(), cache.shape[1], input_size)
    return SplitData(parts["train"], parts["val"], parts["test"], names, test_rows, skipped, boxes)
