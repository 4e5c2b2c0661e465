"""Safe archive extraction: nothing is ever written outside the target directory.

Every member is checked before it is written: absolute names, ``..`` components, links
whose target leaves the target directory, and device/FIFO members raise a HalsalError
naming the archive and the member. On Python >= 3.11.4 tarfile's own ``data`` filter runs
as well (it is stricter about permissions); our explicit check comes first because the
``data`` filter silently *strips* a leading ``/`` instead of refusing the member.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from halsal.errors import HalsalError

_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # () matches nothing on older Pythons


def _bad_name(name: str) -> str | None:
    """Why an archive member name is unsafe, or None."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in norm.split("/"):
        return "'..' in path"
    return None


def _inside(target: Path, path: str) -> bool:
    real = os.path.realpath(os.path.join(target, path))
    return real == str(target) or real.startswith(str(target) + os.sep)


def _check_tar_member(archive: Path, target: Path, m: tarfile.TarInfo) -> None:
    why = _bad_name(m.name)
    if why is None and not _inside(target, m.name):
        why = "path leaves the target (through a link)"
    if why is None and (m.issym() or m.islnk()):
        if m.issym():
            # a symlink's target is relative to the directory holding the link
            link = posixpath.join(posixpath.dirname(m.name), m.linkname)
        else:
            link = m.linkname  # hard link targets are relative to the archive root
        if m.linkname.startswith("/") or not _inside(target, link):
            why = f"link to {m.linkname!r} points outside the target"
    if why is None and (m.ischr() or m.isblk() or m.isfifo()):
        why = "device or FIFO member"
    if why:
        raise HalsalError(
            f"refusing to extract {archive}: member {m.name!r} is unsafe ({why}); nothing "
            f"outside {target} was written. The archive is not the expected file: fetch it again."
        )


def extract_tar(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    select: Callable[[tarfile.TarInfo], bool] | None = None,
    progress: bool = True,
) -> list[str]:
    """Extract a (possibly compressed) tar into ``target``; returns the extracted names.

    ``select`` picks members (e.g. an ImageNet subset); every member is still checked.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(target))
    from tqdm import tqdm

    names = []
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise HalsalError(f"cannot read archive {archive}: {exc}. Fetch it again.") from exc
    with tf, tqdm(desc=f"extract {archive.name}", unit="file", disable=not progress, leave=False) as bar:
        # Streaming (one pass over the compressed file): each member is checked just before
        # it is written, so a bad member stops extraction with only safe files in target.
        for m in tf:
            _check_tar_member(archive, target, m)
            if select is not None and not select(m):
                continue
            kwargs = {"filter": "data"} if _HAS_DATA_FILTER else {}
            try:
                tf.extract(m, target, **kwargs)
            except _FILTER_ERROR as exc:  # stricter data-filter refusals
                raise HalsalError(f"refusing to extract {archive}: member {m.name!r}: {exc}") from exc
            names.append(m.name)
            bar.update(1)
    return names


def extract_zip(
    archive: str | os.PathLike, target: str | os.PathLike, *, progress: bool = True
) -> list[str]:
    """Extract a zip into ``target`` after checking every member name."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(target))
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # zip has a central directory: check all before writing any
            why = _bad_name(info.filename) or (
                None if _inside(target, info.filename) else "path leaves the target"
            )
            if why:
                raise HalsalError(
                    f"refusing to extract {archive}: member {info.filename!r} is unsafe ({why}); "
                    f"nothing was written."
                )
        zf.extractall(target)
    return [i.filename for i in infos]


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike, **kw) -> list[str]:
    """Extract a tar (any compression) or zip archive safely."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return extract_zip(archive, target, progress=kw.get("progress", True))
    return extract_tar(archive, target, **kw)


def is_archive(path: Path) -> bool:
    suffixes: Iterable[str] = (".tar", ".tgz", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz")
    return path.is_file() and any(path.name.lower().endswith(s) for s in suffixes)
