"""k-shot splits as in Sec. 4.1 of the paper.

Per class and seed: 5 validation and 5 test images are fixed, the rest are shuffled into a
training order; the k-shot training set is the first k of that order (K: all of them). So
the sets are nested across k for one seed, and the validation/test sets do not depend on k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from halsal import settings, spec
from halsal.data.datasets import HASH_COLUMN, duplicate_groups
from halsal.data.manifest import ok_rows
from halsal.errors import HalsalError

DUPLICATE_POLICIES = settings.choices("data.duplicates")
SHOWN_GROUPS = 5  # duplicate groups named in an error message (index.json and the report list all)


def make_split(index: pd.DataFrame, seed: int, *, val_per_class: int = settings.default("data.val_per_class"),
               test_per_class: int = settings.default("data.test_per_class"), max_k: int = 1,
               too_few: str = settings.default("data.too_few_images"), usable: pd.Series | None = None,
               duplicates: str = settings.default("data.duplicates"), name: str = "the dataset") -> tuple[pd.DataFrame, list[str]]:
    """Assign every image a role (train/val/test) and a rank within its class and role.

    ``usable`` (boolean, aligned with ``index``; see :func:`usable_rows`) marks the images that
    decode: the others never take a place, so a class keeps ``val + test`` images that
    exist. ``max_k`` is the largest integer k the config asks for: a class with fewer than
    ``max_k + val + test`` usable images is an error naming the class and the counts
    (``too_few='error'``), or is dropped and reported (``too_few='drop_class'``). Fewer than 2
    classes left is always an error (one class has no accuracy to report); every such message
    carries the class sizes and the largest k the data allows.

    Exact duplicates (the index's ``sha256`` column; an index without one is not checked):
    ``duplicates='drop'`` keeps the first copy of a group within one class and drops every copy
    of a group across classes (a label conflict); ``'warn'`` keeps every copy, in train only;
    ``'error'`` stops, naming the groups. Either way no group spans two roles.
    Returns the split table (``row``: the image's row in the index and the prepared cache) and
    a list of human-readable notes about dropped classes and duplicates.
    """
    if val_per_class < 1 or test_per_class < 1:
        raise HalsalError(f"val_per_class and test_per_class must be at least 1 (got {val_per_class} and "
                          f"{test_per_class}): without val or test images a run has no accuracy to report")
    if duplicates not in DUPLICATE_POLICIES:
        raise HalsalError(f"duplicates policy {duplicates!r} is not one of {', '.join(DUPLICATE_POLICIES)}")
    need = max_k + val_per_class + test_per_class
    ok = (np.ones(len(index), dtype=bool) if usable is None
          else pd.Series(usable).reindex(index.index, fill_value=False).astype(bool).to_numpy().copy())
    decodes = ok.copy()
    frame = index.reset_index().rename(columns={"index": "row"})  # row: the index's own row labels
    tied = np.zeros(len(frame), dtype=bool)  # copies kept under duplicates: warn (train only)
    notes = []
    if HASH_COLUMN in index:
        groups = duplicate_groups(index, usable=ok)
        if groups and duplicates == "error":
            raise HalsalError(_duplicates_error(name, groups))
        for g in groups:
            if duplicates == "drop":
                ok[g["rows"] if g["kind"] == "across_classes" else g["rows"][1:]] = False
            else:
                tied[g["rows"]] = True
        if groups:
            notes.append(_duplicates_note(groups, duplicates))
    hashes = frame[HASH_COLUMN].astype(str).to_numpy() if HASH_COLUMN in frame else frame["row"].astype(str).to_numpy()

    classes = []  # per class: label, name, its usable rows, images without a copy, did not decode
    for label, whole in frame.groupby("label", sort=True):
        group = whole[ok[whole.index]]
        bad = int((~decodes[whole.index]).sum())
        copies = int((decodes[whole.index] & ~ok[whole.index]).sum())
        left_out = ", ".join(([f"{bad} did not decode"] if bad else []) + ([f"{copies} dropped as duplicates"] if copies else []))
        classes.append((label, whole["class_name"].iloc[0], group, int((~tied[group.index]).sum()), left_out))
    sizes = [len(c[2]) for c in classes]
    rooms = [n - val_per_class - test_per_class if free >= val_per_class + test_per_class else 0
             for n, (_, _, _, free, _) in zip(sizes, classes)]
    evidence = _evidence(sizes, rooms, val_per_class, test_per_class, too_few)
    rows, dropped = [], []
    for (label, cname, group, free, bad), room in zip(classes, rooms):
        if room < max_k:
            have = f"{len(group)} usable images ({bad})" if bad else f"{len(group)} images"
            msg = (f"class {cname!r} (label {label}) has {have}, but k={max_k} needs "
                   f"{max_k} train + {val_per_class} val + {test_per_class} test = {need}")
            if free < val_per_class + test_per_class and len(group) >= need:
                msg += (f"; only {free} of them have no copy (copies stay in train under `duplicates: warn`), "
                        f"fewer than the {val_per_class + test_per_class} val + test places")
            if too_few == "error":
                raise HalsalError(f"{msg}. {evidence[0]}. To change: {evidence[1]}, or set `too_few_images: "
                                  "drop_class` (under `data:` or the dataset) to drop such classes (they are then "
                                  "listed in the report)")
            notes.append(msg + "; class dropped")
            dropped.append((cname, len(group)))
            continue
        rows.append(_draw(group, seed, label, tied, hashes, val_per_class, test_per_class))
    if len(rows) < 2:
        raise HalsalError(_too_few_classes(name, classes, rows, dropped, max_k, need, val_per_class,
                                           test_per_class, evidence))
    split = pd.concat(rows, ignore_index=True)[["row", "path", "label", "class_name", "role", "rank"]]
    return split, notes


def _draw(group: pd.DataFrame, seed: int, label, tied, hashes, val: int, test: int) -> pd.DataFrame:
    """One class's roles and ranks. One RNG per (seed, class), so a class's split does not depend
    on the others. Images with a copy (kept under ``duplicates: warn``) take train places only,
    and the second and later copies within the class go to the end of the training order, so a
    k-shot set holds k different photos while the class has them. Without copies this is the
    plain shuffle of Sec. 4.1."""
    rng = np.random.default_rng([seed, int(label)])
    order = group.iloc[rng.permutation(len(group))]
    free = np.flatnonzero(~tied[order.index])
    roles = np.array(["train"] * len(order), dtype=object)
    roles[free[:val]] = "val"
    roles[free[val:val + test]] = "test"
    order = order.assign(role=roles)
    later = tied[order.index] & pd.Series(hashes[order.index]).duplicated().to_numpy()
    order = order.iloc[np.argsort(later, kind="stable")]
    return order.assign(rank=order.groupby("role").cumcount())


def _largest_k(rooms: list[int], keep: int) -> int:
    """The largest k that keeps at least ``keep`` classes (0: none)."""
    ranked = sorted(rooms, reverse=True)
    return max(ranked[keep - 1], 0) if len(ranked) >= keep else 0


def _evidence(sizes: list[int], rooms: list[int], val: int, test: int, too_few: str) -> tuple[str, str]:
    """The class sizes and the largest k they allow, and what to change, for an error message."""
    if not sizes:
        return "the index has no class", "index a dataset with at least 2 classes"
    every, two = _largest_k(rooms, len(rooms)), _largest_k(rooms, 2)
    text = (f"{len(sizes)} classes, usable images per class: largest {max(sizes)}, median {np.median(sizes):g}; "
            f"a class of n images allows k up to n - {val} val - {test} test, so ")
    if every:
        text += f"the largest k that keeps every class is {every}"
    else:
        text += "no k >= 1 keeps every class"
    if two:
        text += f", and the largest k that keeps at least 2 classes (too_few_images: drop_class) is {two}"
        keep_all = too_few == "error" or not two
        fix = f"set the largest k in `ks` to {every if keep_all and every else two} or less" + (
            "" if every or too_few != "error" else " with `too_few_images: drop_class`")
    else:
        text += f", and no k >= 1 keeps 2 classes (that needs 2 classes of at least {val + test + 1} usable images)"
        fix = "no k fits this data: add images, use a dataset with larger classes, or lower data.val_per_class / " \
              "data.test_per_class"
    return text, fix


def _too_few_classes(name, classes, rows, dropped, max_k, need, val, test, evidence) -> str:
    kept = [str(r["class_name"].iloc[0]) for r in rows]
    head = f"dataset {name!r}: "
    if not kept:
        head += f"every class was dropped, none has the {need} usable images k={max_k} needs"
    else:
        head += f"only 1 class is left ({kept[0]!r}), and one class has no accuracy to report"
    if dropped:
        largest = max(dropped, key=lambda d: d[1])
        head += (f"; {len(dropped)} of {len(classes)} classes were dropped (too_few_images: drop_class), the largest "
                 f"of them ({largest[0]!r}) with {largest[1]} usable image(s)")
    text, fix = evidence
    return (f"{head}; k={max_k} needs {max_k} train + {val} val + {test} test = {need} per class. {text}. "
            f"Nothing is trained: {fix}")


def _duplicates_note(groups: list[dict], policy: str) -> str:
    within = sum(g["kind"] == "within_class" for g in groups)
    across = len(groups) - within
    files = sum(len(g["rows"]) for g in groups)
    what = {"drop": "kept the first copy of each group within a class and dropped every copy of a group across "
                    "classes (a label conflict)",
            "warn": "kept every copy, in train only (no copy takes a val or test place)"}[policy]
    return (f"duplicates: {len(groups)} group(s) of identical files ({files} files; {within} within a class, "
            f"{across} across classes): {what} (duplicates: {policy}; every group is listed in the report's Data "
            "section)")


def _duplicates_error(name: str, groups: list[dict]) -> str:
    across = sum(g["kind"] == "across_classes" for g in groups)
    shown = "; ".join(" = ".join(f"{p} [{c}]" for p, c in zip(g["paths"], g["classes"]))
                      + (" (label conflict)" if g["kind"] == "across_classes" else "") for g in groups[:SHOWN_GROUPS])
    more = f"; and {len(groups) - SHOWN_GROUPS} more groups" if len(groups) > SHOWN_GROUPS else ""
    return (f"dataset {name!r} has {len(groups)} group(s) of identical image files ({len(groups) - across} within a "
            f"class, {across} across classes): {shown}{more}. Remove the copies, or set `duplicates: drop` (keep one "
            "copy within a class, drop label conflicts) or `duplicates: warn` (keep every copy, in train only) "
            "under `data:` or the dataset")


def usable_rows(index: pd.DataFrame, manifest: pd.DataFrame) -> pd.Series:
    """Which index rows decoded (prepare's ``manifest.tsv``: ``row``, ``path``, ``status``).

    A manifest that does not match the index (another row count or other paths) is an error:
    the index changed after the images were prepared.
    """
    if len(manifest) != len(index) or list(manifest["path"]) != list(index["path"]):
        raise HalsalError(f"the prepared manifest ({len(manifest)} images) does not match the index "
                          f"({len(index)} images): re-run the prepare rule for this dataset")
    return pd.Series(ok_rows(manifest, range(len(index))), index=index.index)


def select(split: pd.DataFrame, role: str, k: str | int | None = None) -> pd.DataFrame:
    """Rows of one role; for 'train', the k-shot subset (k an int, or spec.K_ALL for all)."""
    part = split[split["role"] == role]
    if role == "train" and k not in (None, spec.K_ALL):
        part = part[part["rank"] < int(k)]
    return part.sort_values(["label", "rank"]).reset_index(drop=True)


def relabel(split: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Make labels contiguous 0..C-1 after dropped classes; returns the class names in order."""
    labels = sorted(split["label"].unique())
    if len(labels) < 2:
        raise HalsalError(f"the split has {len(labels)} class(es) with usable images; a classifier needs at least 2 "
                          "and one class has no accuracy to report: re-run the split rule (it stops such data) "
                          "or use data with more classes")
    mapping = {old: new for new, old in enumerate(labels)}
    names = [split.loc[split["label"] == old, "class_name"].iloc[0] for old in labels]
    return split.assign(label=split["label"].map(mapping)), names
