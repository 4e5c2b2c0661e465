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


def assert_eq3_gradient(model, x):
    """Eq. 3 of the paper at the model's fusion point: dL/dl = dL/dl_hat * (s + 1)."""
    import torch

    from halsal.models.saliency import modulate

    l = model.rgb_branch(x)
    l.retain_grad()
    s = model.saliency_map(x, tuple(l.shape[-2:]))
    l_hat = modulate(l, s, "eq2")
    l_hat.retain_grad()
    model.joint_branch(l_hat).sum().backward()
    assert s.min() > 0 and s.shape[-2:] == l.shape[-2:]  # a non-zero map, so the check is not trivial
    torch.testing.assert_close(l.grad, l_hat.grad * (s + 1))


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(f"real photographs not available: {path} is absent (see the project README, 'Test data')")
    return path
