"""Builder for ``cars196`` (Stanford Cars) from user-supplied files.

The official host is gone (torchvision's ``StanfordCars(download=True)`` answers 404), so
the files come from the user, through ``--source`` (a folder or archive) or placed in
``root/downloads``. Recognised, searched at any depth:

- classic: ``cars_train.tgz``, ``cars_test.tgz``, ``car_devkit.tgz``,
  ``cars_test_annos_withlabels.mat`` (each verified against its known md5), or their
  extracted form ``cars_train/``, ``cars_test/``, ``devkit/cars_meta.mat``,
  ``devkit/cars_train_annos.mat`` (the Kaggle "stanford-cars-dataset" copy nests them as
  ``cars_train/cars_train/``: any depth is fine);
- all-in-one: ``cars_annos.mat`` + ``car_ims/`` (the ``test`` flag gives the split).

Any other archive given as ``--source`` (e.g. a Kaggle zip) is extracted (safely) and
searched the same way; it has no known checksum, which READY.json records.
"""

from __future__ import annotations

from pathlib import Path

from halsal.data.fetch.common import Build, class_dir, place
from halsal.data.fetch.download import verify_placed
from halsal.data.fetch.extract import extract_archive, is_archive
from halsal.errors import HalsalError

CLASSIC = ("cars_train.tgz", "cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat")


def instructions(ctx: Build) -> str:
    files = ctx.entry.get("files", {})
    listing = "; ".join(
        f"{n} (md5 {files[n]['md5']})" if n in files and files[n].get("md5") else n for n in CLASSIC
    )
    return (
        "Stanford Cars (cars196) can no longer be downloaded from its official URL, so halsal "
        f"cannot fetch it. Obtain the classic files {listing}, or an extracted copy (e.g. the "
        "Kaggle 'stanford-cars-dataset': cars_train/, cars_test/, devkit/cars_meta.mat, "
        "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat), and place them in "
        f"{ctx.downloads} , or pass their folder or archive as --source PATH. Then re-run "
        f"`halsal fetch --dataset cars196 --root {ctx.root}`."
    )


def _search_roots(ctx: Build) -> list[Path]:
    roots = []
    for s in ctx.source:
        if not s.exists():
            raise HalsalError(f"cars196 source {s} does not exist. {instructions(ctx)}")
        roots.append(s)
    if ctx.downloads.is_dir():
        roots.append(ctx.downloads)
    return roots


def _unpack(ctx: Build, roots: list[Path]) -> list[Path]:
    """Verify + extract archives; return the directories to search for the extracted layout."""
    known = ctx.entry.get("files", {})
    dirs = []
    for r in roots:
        candidates = [r] if r.is_file() else sorted(p for p in r.rglob("*") if p.is_file())
        for p in candidates:
            if p.name in known:
                ctx.verified[p.name] = verify_placed(p, known[p.name], move_aside=False)
            if is_archive(p) and (p.name in known or p == r):
                out = ctx.staging / p.name.split(".")[0]
                extract_archive(p, out, progress=ctx.progress)
                dirs.append(out)
                if p.name not in known:
                    ctx.verified[p.name] = {"unverified": "no known checksum for this archive"}
        if r.is_dir():
            dirs.append(r)
    return dirs


def _first(dirs: list[Path], pattern: str, want_dir: bool = False) -> Path | None:
    for d in dirs:
        for p in sorted(d.rglob(pattern), key=lambda q: len(q.parts)):
            if want_dir and p.is_dir() and any(f.suffix.lower() == ".jpg" for f in p.iterdir()):
                return p
            if not want_dir and p.is_file():
                return p
    return None


def _annotations(path: Path) -> list[tuple[str, int, int]]:
    """(fname or relative_im_path, class 1..196, test flag) from a cars .mat file."""
    from scipy.io import loadmat

    ann = loadmat(path, squeeze_me=True)["annotations"]
    fields = ann.dtype.names
    name_key = "fname" if "fname" in fields else "relative_im_path"
    return [
        (str(a[name_key]), int(a["class"]), int(a["test"]) if "test" in fields else -1)
        for a in ann.ravel()
    ]


def _class_names(path: Path) -> list[str]:
    from scipy.io import loadmat

    return [str(n) for n in loadmat(path, squeeze_me=True)["class_names"].ravel()]


def build_cars196(ctx: Build) -> None:
    roots = _search_roots(ctx)
    if not roots:
        raise HalsalError(instructions(ctx))
    dirs = _unpack(ctx, roots)
    staged = str(ctx.staging)
    mode = lambda p: "move" if str(p).startswith(staged) else "link"  # noqa: E731

    all_in_one = _first(dirs, "cars_annos.mat")
    meta = _first(dirs, "cars_meta.mat")
    jobs: list[tuple[Path, int, str]] = []  # (file, class, split)
    if meta is not None:
        names = _class_names(meta)
        parts = {
            "train": (_first(dirs, "cars_train", True), _first(dirs, "cars_train_annos.mat")),
            "test": (_first(dirs, "cars_test", True), _first(dirs, "cars_test_annos_withlabels*.mat")),
        }
        missing = [k for k, (d, a) in parts.items() if d is None or a is None]
        if missing:
            raise HalsalError(
                f"cars196: the {' and '.join(missing)} images or annotations were not found. "
                + instructions(ctx)
            )
        for split, (img_dir, ann) in parts.items():
            jobs += [(img_dir / f, c, split) for f, c, _ in _annotations(ann)]
    elif all_in_one is not None:
        names = _class_names(all_in_one)
        jobs = [
            (all_in_one.parent / rel, c, "test" if t == 1 else "train")
            for rel, c, t in _annotations(all_in_one)
        ]
    else:
        where = ", ".join(map(str, roots))
        raise HalsalError(f"cars196: no cars_meta.mat or cars_annos.mat in {where}. {instructions(ctx)}")

    for src, cid, split in jobs:
        if not src.is_file():
            raise HalsalError(f"cars196: {src} is in the annotations but missing. {instructions(ctx)}")
        cname = names[cid - 1]
        # train and test both number their files from 00001.jpg: prefix the split.
        dst = ctx.images / class_dir(cid, cname) / f"{split}_{src.name}"
        place(src, dst, mode(src))
        ctx.add(dst, cid, cname, split)
    ctx.classes = [(c, names[c - 1]) for c in sorted({c for _, c, _ in jobs})]
