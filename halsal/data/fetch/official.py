"""Builders for the datasets with a working official download: flowers102 and cub200.

Each downloads its official files into ``root/downloads`` (verified against the registry),
extracts the archive into ``root/.extract`` and moves the images into
``root/images/<class_dir>/``, reading labels and the official split from the dataset's own
metadata files.
"""

from __future__ import annotations

from pathlib import Path

from halsal.data.fetch.common import Build, class_dir, place
from halsal.data.fetch.download import download_file, expected_digests
from halsal.data.fetch.extract import extract_archive
from halsal.errors import HalsalError


def _download_all(ctx: Build, names: tuple[str, ...]) -> dict[str, Path]:
    files = ctx.entry.get("files", {})
    paths = {}
    for n in names:
        if n not in files:
            raise HalsalError(f"the checksum registry has no entry for {ctx.name}/{n}.")
        paths[n] = download_file(n, files[n], ctx.downloads, progress=ctx.progress)
        ctx.verified[n] = expected_digests(files[n])
    return paths


def _find(base: Path, filename: str, archive: Path) -> Path:
    """The unique ``filename`` inside an extracted archive (any depth)."""
    hits = sorted(base.rglob(filename))
    if not hits:
        raise HalsalError(f"{archive} has no {filename}; it is not the expected archive: fetch it again.")
    return hits[0]


def build_flowers102(ctx: Build) -> None:
    import numpy as np
    from scipy.io import loadmat

    paths = _download_all(ctx, ("102flowers.tgz", "imagelabels.mat", "setid.mat"))
    names = ctx.entry.get("class_names") or []
    labels = [int(v) for v in np.atleast_1d(loadmat(paths["imagelabels.mat"])["labels"]).ravel()]
    setid = loadmat(paths["setid.mat"])  # no squeeze_me: a 1-element id list stays an array
    split = {}
    for key, role in (("trnid", "train"), ("valid", "val"), ("tstid", "test")):
        for image_id in setid[key].ravel():
            split[int(image_id)] = role
    if labels and max(labels) > len(names):
        raise HalsalError(
            f"imagelabels.mat has label {max(labels)} but the registry names only {len(names)} "
            f"flowers102 classes (key flowers102.class_names of checksums.json)."
        )
    archive = paths["102flowers.tgz"]
    extract_archive(archive, ctx.staging, progress=ctx.progress)
    jpg = _find(ctx.staging, "image_00001.jpg", archive).parent
    for image_id, cid in enumerate(labels, 1):
        src = jpg / f"image_{image_id:05d}.jpg"
        if not src.is_file():
            raise HalsalError(f"{archive} lacks {src.name}, listed in imagelabels.mat; fetch it again.")
        cname = names[cid - 1]
        dst = ctx.images / class_dir(cid, cname) / src.name
        place(src, dst, "move")
        ctx.add(dst, cid, cname, split.get(image_id, ""))
    ctx.classes = [(c, names[c - 1]) for c in sorted(set(labels))]


def _table(path: Path) -> dict[int, str]:
    """CUB's ``<id> <value>`` text files."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            out[int(key)] = value.strip()
    return out


def build_cub200(ctx: Build) -> None:
    archive = _download_all(ctx, ("CUB_200_2011.tgz",))["CUB_200_2011.tgz"]
    extract_archive(archive, ctx.staging, progress=ctx.progress)
    base = _find(ctx.staging, "classes.txt", archive).parent
    tables = {}
    for fname in ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt"):
        tables[fname] = _table(_find(base, fname, archive))
    # classes.txt: "1 001.Black_footed_Albatross" -> name "Black_footed_Albatross"
    classes = {cid: v.split(".", 1)[-1] for cid, v in tables["classes.txt"].items()}
    labels, is_train = tables["image_class_labels.txt"], tables["train_test_split.txt"]
    for image_id, rel in sorted(tables["images.txt"].items()):
        src = base / "images" / rel
        if not src.is_file():
            raise HalsalError(f"{archive} lacks images/{rel}, listed in images.txt; fetch it again.")
        if image_id not in labels or image_id not in is_train:
            raise HalsalError(f"{archive}: image {image_id} ({rel}) has no label or split entry.")
        cid = int(labels[image_id])
        dst = ctx.images / class_dir(cid, classes[cid]) / src.name
        place(src, dst, "move")
        ctx.add(dst, cid, classes[cid], "train" if is_train[image_id] == "1" else "test")
    ctx.classes = sorted(classes.items())
