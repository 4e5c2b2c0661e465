"""What the per-dataset fetchers share: the :class:`Build` context they fill in, and the
helpers that name and place files in a ready tree (see :mod:`halsal.data.fetch`)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from halsal.data.datasets import IMAGE_EXTENSIONS, is_hidden


def slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def class_dir(class_id: int, name: str, width: int = 3) -> str:
    return f"{class_id:0{width}d}_{slug(name)}"


def is_image(path: Path) -> bool:
    """The folder indexer's rule (halsal.data.datasets), so a fetched tree indexes whole."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(path.name)


def place(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst``: ``move`` (our own extraction) or ``link`` (a user's files:
    hard link when on the same file system, else copy; the user's tree is never modified)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class Build:
    """What a dataset builder gets (``ctx``) and fills in (records, classes, verified)."""

    name: str
    root: Path
    entry: dict
    source: list[Path]
    progress: bool
    options: dict
    records: list[tuple[str, int, str, str]] = field(default_factory=list)
    classes: list[tuple] = field(default_factory=list)
    verified: dict[str, dict] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    absolute_paths: bool = False

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def staging(self) -> Path:
        return self.root / ".extract"

    def add(self, dst: Path, class_id: int, class_name: str, split: str) -> None:
        path = str(dst) if self.absolute_paths else dst.relative_to(self.root).as_posix()
        self.records.append((path, int(class_id), class_name, split))
