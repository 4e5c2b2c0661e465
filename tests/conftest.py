"""Shared test setup: caches in a temp dir, the real-photo folder, tiny fixtures."""

import os
import tempfile
from pathlib import Path

import pytest

# Matplotlib and Snakemake write caches under ~ unless told otherwise.
_CACHE = Path(tempfile.mkdtemp(prefix="halsal-test-cache-"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "mpl"))
os.environ.setdefault("XDG_CACHE_HOME", str(_CACHE / "xdg"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(f"real photographs not available: {path} is absent (see the project README, 'Test data')")
    return path
