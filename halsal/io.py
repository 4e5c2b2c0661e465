"""Atomic file output.

Every file halsal writes goes to a temporary name in the destination directory first and is
renamed into place only when complete, so a killed job never leaves a file that looks
finished (Snakemake would otherwise take it as done on the next run).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600 files; give the final file the usual permissions (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_tsv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as TSV (no index)."""
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def torch_save(path: str | os.PathLike, obj) -> None:
    """Save tensors/plain containers only, so they load with ``weights_only=True``."""
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path: str | os.PathLike, map_location="cpu"):
    """Load a checkpoint without unpickling arbitrary objects."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
