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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A prepared synthetic dataset ("fine", with object boxes) + source set ("src"), a scratch
    backbone and Step-1 saliency weights, each trained for 1 epoch (AlexNet, 64 px)."""
    from halsal.data.prepare import prepare
    from halsal.data.splits import make_split
    from halsal.data.synthetic import generate
    from halsal.io import write_tsv
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import backbone, pretrain_saliency

    root = tmp_path_factory.mktemp("tiny")
    for name, task, seed in (("fine", "fine", 0), ("src", "coarse", 1)):
        index = generate(root / name, task=task, classes=3, images_per_class=12, image_size=80, seed=seed)
        write_tsv(root / name / "index.tsv", index)
        split, _ = make_split(index, 0, max_k=2)
        write_tsv(root / name / "seed0.tsv", split)
        prepare(root / name / "index.tsv", root / name / "prepared", resize=72, backend="pil", progress=False)
    cfg = OptimConfig(epochs=1, lr=0.01, batch_size=8)
    backbone("alexnet", "scratch", root / "backbone.pt", source_prepared=root / "src" / "prepared",
             source_split=root / "src" / "seed0.tsv", cfg=cfg, fc_width=64, input_size=64)
    pretrain_saliency("alexnet", "d4-pool2-eq2", root / "backbone.pt", root / "sal.pt",
                      source_prepared=root / "src" / "prepared", source_split=root / "src" / "seed0.tsv", cfg=cfg,
                      input_size=64)
    return root
