"""k-shot splits as in Sec. 4.1 of the paper.

Per class and seed: 5 validation and 5 test images are fixed, the rest are shuffled into a
training order; the k-shot training set is the first k of that order (K: all of them). So
the sets are nested across k for one seed, and the validation/test sets do not depend on k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from halsal.errors import HalsalError


def make_split(index: pd.DataFrame, seed: int, *, val_per_class: int = 5, test_per_class: int = 5,
               max_k: int = 1, too_few: str = "error", usable: pd.Series | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Assign every image a role (train/val/test) and a rank within its class and role.

    ``usable`` (boolean, aligned with ``index``; see :func:`usable_rows`) marks the images that
    decode: the others never take a place, so a class keeps ``val + test`` images that
    exist. ``max_k`` is the largest integer k the config asks for: a class with fewer than
    ``max_k + val + test`` usable images is an error naming the class and the counts
    (``too_few='error'``), or is dropped and reported (``too_few='drop_class'``).
    Returns the split table (``row``: the image's row in the index and the prepared cache) and
    a list of human-readable notes about dropped classes.
    """
    need = max_k + val_per_class + test_per_class
    ok = (pd.Series(True, index=index.index) if usable is None
          else pd.Series(usable).reindex(index.index, fill_value=False).astype(bool)).to_numpy()
    frame = index.reset_index().rename(columns={"index": "row"})  # row: the index's own row labels
    rows, notes = [], []
    for label, whole in frame.groupby("label", sort=True):
        name = whole["class_name"].iloc[0]
        group = whole[ok[whole.index]]
        bad = len(whole) - len(group)
        if len(group) < need:
            have = f"{len(group)} usable images ({bad} did not decode)" if bad else f"{len(group)} images"
            msg = (f"class {name!r} (label {label}) has {have}, but k={max_k} needs "
                   f"{max_k} train + {val_per_class} val + {test_per_class} test = {need}")
            if too_few == "error":
                raise HalsalError(msg + ": lower the largest k in `ks`, or set `too_few_images: drop_class` (under "
                                  "`data:` or the dataset) to drop such classes (they are then listed in the report)")
            notes.append(msg + "; class dropped")
            continue
        # One RNG per (seed, class), so a class's split does not depend on the others.
        rng = np.random.default_rng([seed, int(label)])
        order = group.iloc[rng.permutation(len(group))]
        roles = (["val"] * val_per_class + ["test"] * test_per_class
                 + ["train"] * (len(group) - val_per_class - test_per_class))
        order = order.assign(role=roles)
        order["rank"] = order.groupby("role").cumcount()
        rows.append(order)
    if not rows:
        raise HalsalError("no class has enough images for the requested k: see the messages above")
    split = pd.concat(rows, ignore_index=True)[["row", "path", "label", "class_name", "role", "rank"]]
    return split, notes


def usable_rows(index: pd.DataFrame, manifest: pd.DataFrame) -> pd.Series:
    """Which index rows decoded (prepare's ``manifest.tsv``: ``row``, ``path``, ``status``).

    A manifest that does not match the index (another row count or other paths) is an error:
    the index changed after the images were prepared.
    """
    if len(manifest) != len(index) or list(manifest["path"]) != list(index["path"]):
        raise HalsalError(f"the prepared manifest ({len(manifest)} images) does not match the index "
                          f"({len(index)} images): re-run the prepare rule for this dataset")
    return pd.Series(manifest.sort_values("row")["status"].to_numpy() == "ok", index=index.index)


def select(split: pd.DataFrame, role: str, k: str | int | None = None) -> pd.DataFrame:
    """Rows of one role; for 'train', the k-shot subset (k an int, or 'K' for all)."""
    part = split[split["role"] == role]
    if role == "train" and k not in (None, "K"):
        part = part[part["rank"] < int(k)]
    return part.sort_values(["label", "rank"]).reset_index(drop=True)


def relabel(split: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Make labels contiguous 0..C-1 after dropped classes; returns the class names in order."""
    labels = sorted(split["label"].unique())
    mapping = {old: new for new, old in enumerate(labels)}
    names = [split.loc[split["label"] == old, "class_name"].iloc[0] for old in labels]
    return split.assign(label=split["label"].map(mapping)), names
