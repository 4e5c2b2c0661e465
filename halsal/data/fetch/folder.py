"""Builder for ``folder``: index any ``images/<class>/<file>`` tree in place.

Nothing is copied: ``images.tsv`` lists ABSOLUTE paths into the source (READY.json says
``"paths": "absolute"``), so moving or deleting the source breaks the ready tree.
Class ids: when every class folder is named ``<number>_<name>`` (the layout of
``shared/data`` and of halsal's own trees) the number is the class id and the rest the name
(names from the source's ``classes.tsv`` when it has one); otherwise ids are 1..C in sorted
folder order and the folder name is the class name. When the source has an ``images.tsv``
with ``path`` and ``official_split`` columns, the split is carried over.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from halsal.data.fetch.common import Build, is_image
from halsal.errors import HalsalError

_NUMBERED = re.compile(r"^(\d+)[_.\-](.+)$")


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def build_folder(ctx: Build) -> None:
    if len(ctx.source) != 1:
        raise HalsalError(
            "dataset 'folder' needs exactly one --source: a directory laid out as "
            "images/<class>/<file> (or <class>/<file>)."
        )
    src = ctx.source[0]
    if not src.is_dir():
        raise HalsalError(f"folder source {src} does not exist or is not a directory.")
    base = src / "images" if (src / "images").is_dir() else src
    if ctx.root.resolve() in (src.resolve(), base.resolve()):
        raise HalsalError(
            f"--root {ctx.root} is the source folder itself; choose a separate --root (the source "
            f"is indexed in place, only images.tsv, classes.tsv and READY.json go to --root)."
        )
    dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    ignored = 0
    per_class: dict[Path, list[Path]] = {}
    for d in dirs:
        files = sorted(f for f in d.iterdir() if f.is_file())
        images = [f for f in files if is_image(f)]
        ignored += len(files) - len(images)
        if not images:
            kinds = ", ".join(sorted({f.suffix or f.name for f in files})) or "empty"
            raise HalsalError(f"class folder {d} has no image files ({kinds}); remove it or add images.")
        per_class[d] = images
    if len(per_class) < 2:
        raise HalsalError(f"{base} has {len(per_class)} class folder(s); a dataset needs at least 2.")

    matches = [_NUMBERED.match(d.name) for d in per_class]
    numbered = all(matches) and len({int(m.group(1)) for m in matches}) == len(matches)
    names = {}
    if numbered and (src / "classes.tsv").is_file():
        rows = _read_tsv(src / "classes.tsv")
        names = {int(r["class_id"]): r["name"] for r in rows if r.get("class_id") and r.get("name")}
    splits = {}
    if (src / "images.tsv").is_file():
        rows = _read_tsv(src / "images.tsv")
        if rows and "path" in rows[0] and "official_split" in rows[0]:
            splits = {r["path"]: r["official_split"] or "" for r in rows}

    ctx.absolute_paths = True
    for i, (d, images) in enumerate(per_class.items(), 1):
        if numbered:
            m = _NUMBERED.match(d.name)
            cid = int(m.group(1))
            cname = names.get(cid, m.group(2).replace("_", " "))
        else:
            cid, cname = i, d.name
        ctx.classes.append((cid, cname))
        for f in images:
            ctx.add(f, cid, cname, splits.get(f.relative_to(src).as_posix(), ""))
    ctx.extra = {
        "indexed_in_place": True,
        "class_ids": "from folder names" if numbered else "1..C in sorted folder order",
        "ignored_non_image_files": ignored,
    }
