"""Builder for ``imagenet_val``: ILSVRC2012 validation images from a user path.

ImageNet needs a registration at image-net.org, so halsal never downloads it. Accepted
(through ``--source``, one or more paths, or placed in ``root/downloads``):

- images: ``ILSVRC2012_img_val.tar`` (md5-verified when it has that name), a folder of
  ``ILSVRC2012_val_*.JPEG`` files, or a folder of ``<wnid>/<file>`` class folders;
- labels (not needed for the ``<wnid>/`` layout): ``ILSVRC2012_devkit_t12.tar.gz``
  (md5-verified) or its extracted ``data/meta.mat`` + ``data/ILSVRC2012_validation_ground_truth.txt``.

Class ids are 1-based positions of the wnid in sorted wnid order (the order of
torchvision's ImageNet and of the usual pretrained classifiers), over the 1000 leaf synsets
of meta.mat when it is available, else over the wnids present. ``subset_per_class`` keeps a
deterministic sample per class: ``random.Random(f"{seed}:{wnid}")`` over the sorted file
names, so a class's subset does not depend on which other classes are present.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from halsal.data.fetch.common import Build, is_image, place
from halsal.data.fetch.download import verify_placed
from halsal.data.fetch.extract import extract_tar
from halsal.errors import HalsalError

VAL_TAR, DEVKIT = "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"
GT_TXT = "ILSVRC2012_validation_ground_truth.txt"
_WNID = re.compile(r"^n\d{8}$")
_VAL = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)


def instructions(ctx: Build, found: str) -> str:
    files = ctx.entry.get("files", {})
    md5 = lambda n: f" (md5 {files[n]['md5']})" if files.get(n, {}).get("md5") else ""  # noqa: E731
    return (
        f"imagenet_val needs the ILSVRC2012 validation images and their labels ({found}). "
        f"ImageNet requires registration at https://image-net.org, so halsal cannot download it. "
        f"Provide either (1) {VAL_TAR}{md5(VAL_TAR)} or a folder of ILSVRC2012_val_*.JPEG, together "
        f"with {DEVKIT}{md5(DEVKIT)} (or its extracted data/meta.mat and data/{GT_TXT}); or (2) a "
        f"folder of <wnid>/<file> class folders (e.g. n01440764/ILSVRC2012_val_00000293.JPEG). "
        f"Pass them as --source PATH (repeatable) or place them in {ctx.downloads}."
    )


def _candidates(ctx: Build) -> list[Path]:
    roots = [s for s in ctx.source]
    for s in roots:
        if not s.exists():
            raise HalsalError(f"imagenet_val source {s} does not exist. " + instructions(ctx, "missing path"))
    if ctx.downloads.is_dir():
        roots.append(ctx.downloads)
    return roots


def _known(ctx: Build, name: str) -> dict:
    return ctx.entry.get("files", {}).get(name, {})


def _non_images(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not _VAL.match(p.name)]


def _find_labels(ctx: Build, roots: list[Path]) -> tuple[dict[str, str], list[str] | None]:
    """(wnid -> class name over the 1000 leaves, ground-truth wnid per val index) or ({}, None)."""
    from scipy.io import loadmat

    meta = gt = None
    for r in roots:
        files = [r] if r.is_file() else _non_images(r)
        for p in files:
            if p.name == DEVKIT:
                ctx.verified[DEVKIT] = verify_placed(p, _known(ctx, DEVKIT), move_aside=False)
                out = ctx.staging / "devkit"
                wanted = lambda m: m.name.endswith(("meta.mat", GT_TXT))  # noqa: E731
                extract_tar(p, out, progress=False, select=wanted)
                meta, gt = next(out.rglob("meta.mat"), meta), next(out.rglob(GT_TXT), gt)
            elif p.name == "meta.mat" and meta is None:
                meta = p
            elif p.name == GT_TXT and gt is None:
                gt = p
    if meta is None:
        return {}, None
    synsets = loadmat(meta, squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    names = {str(s["WNID"]): str(s["words"]).split(", ")[0] for s in leaves}
    labels = None
    if gt is not None:
        labels = [id_to_wnid[int(v)] for v in gt.read_text().split()]
    return names, labels


def _pick(files: list[str], wnid: str, ctx: Build) -> list[str]:
    k = ctx.options["subset_per_class"]
    files = sorted(files)
    if k is None or k >= len(files):
        return files
    return sorted(random.Random(f"{ctx.options['seed']}:{wnid}").sample(files, k))


def build_imagenet_val(ctx: Build) -> None:
    roots = _candidates(ctx)
    names, gt = _find_labels(ctx, roots)
    # Locate the images: a <wnid>/ folder layout, a folder of val JPEGs, or the val tar.
    by_wnid: dict[str, list[Path]] = {}
    flat: dict[str, Path] = {}
    tar = None
    for r in roots:
        if r.is_file() and r.name.lower().endswith(".tar"):
            tar = tar or r
            continue
        if not r.is_dir():
            continue
        for d in (r, *[p for p in r.rglob("*") if p.is_dir()]):
            if _WNID.match(d.name):
                imgs = [f for f in d.iterdir() if f.is_file() and is_image(f)]
                if imgs:
                    by_wnid.setdefault(d.name, []).extend(imgs)
        for p in r.rglob("*"):
            if p.is_file() and _VAL.match(p.name) and not _WNID.match(p.parent.name):
                flat.setdefault(p.name, p)
            elif p.name == VAL_TAR and tar is None:
                tar = p
    if not by_wnid and (flat or tar) and gt is None:
        raise HalsalError(instructions(ctx, "found the images but no labels: no devkit ground truth"))
    if not by_wnid and not flat and tar is None:
        raise HalsalError(instructions(ctx, "no validation images found"))

    jobs: list[tuple[Path, str]] = []  # (file, wnid)
    if by_wnid:
        for wnid, files in by_wnid.items():
            keep = set(_pick([f.name for f in files], wnid, ctx))
            jobs += [(f, wnid) for f in files if f.name in keep]
    else:
        label_of = {f"ILSVRC2012_val_{i:08d}.JPEG": w for i, w in enumerate(gt, 1)}
        groups: dict[str, list[str]] = {}
        available = set(flat) if flat else set(label_of)
        for fname in available:
            if fname not in label_of:
                raise HalsalError(f"{fname} has no entry in the devkit ground truth ({len(gt)} images).")
            groups.setdefault(label_of[fname], []).append(fname)
        chosen = {f: w for w, fs in groups.items() for f in _pick(fs, w, ctx)}
        if flat:
            jobs = [(flat[f], w) for f, w in chosen.items()]
        else:
            if tar.name == VAL_TAR:
                ctx.verified[VAL_TAR] = verify_placed(tar, _known(ctx, VAL_TAR), move_aside=False)
            out = ctx.staging / "val"
            extract_tar(tar, out, progress=ctx.progress, select=lambda m: Path(m.name).name in chosen)
            jobs = [(p, chosen[p.name]) for p in out.rglob("*") if p.name in chosen]
            if len(jobs) != len(chosen):
                lacking = len(chosen) - len(jobs)
                raise HalsalError(f"{tar} lacks {lacking} of the validation images; fetch it again.")

    order = sorted(names) if names else sorted({w for _, w in jobs})
    cid = {w: i for i, w in enumerate(order, 1)}
    staged = str(ctx.staging)
    for src, wnid in jobs:
        if wnid not in cid:
            raise HalsalError(f"{src}: wnid {wnid} is not one of the {len(order)} classes in meta.mat.")
        dst = ctx.images / f"{cid[wnid]:04d}_{wnid}" / src.name
        place(src, dst, "move" if str(src).startswith(staged) else "link")
        ctx.add(dst, cid[wnid], names.get(wnid, wnid), "val")
    ctx.classes = [(cid[w], names.get(w, w), w) for w in sorted({w for _, w in jobs})]
    over = "the 1000 ILSVRC2012 classes of meta.mat" if names else "the wnids present (no meta.mat)"
    ctx.extra = {"class_ids": f"1-based position in sorted wnid order over {over}"}
