"""Shared test setup: caches in a temp dir, the real-photo folder, tiny fixtures, the Snakemake
command line, the report's fake results tree and where artefacts go.

Tests take these as fixtures (``tiny``, ``repo``, ``shared_data``, ``eq3_gradient``,
``snakemake``, ``job_counts``, ``fake_results``, ``artifacts_dir``) and do not import each other.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
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


def assert_test_acc_is_predictions(run_dir, metrics: dict) -> None:
    """A run's test_acc is the accuracy of its predictions.tsv (one row per test image) and its
    val_acc the best of its history's validation accuracies (the selected epoch)."""
    import pandas as pd

    preds = pd.read_csv(Path(run_dir) / "predictions.tsv", sep="\t")
    assert len(preds) == metrics["n_test"] > 0
    assert abs(metrics["test_acc"] - (preds["pred"] == preds["label"]).mean()) < 1e-6, run_dir  # float32 in JSON
    history = pd.read_csv(Path(run_dir) / "history.tsv", sep="\t")
    assert abs(metrics["val_acc"] - history["val_acc"].max()) < 1e-6, run_dir
    assert int(metrics["best_epoch"]) == int(history.loc[history["val_acc"].idxmax(), "epoch"]), run_dir


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


@pytest.fixture(scope="session")
def repo() -> Path:
    """The checkout's root."""
    return REPO


@pytest.fixture(scope="session")
def eq3_gradient():
    """``eq3_gradient(model, x)``: see :func:`assert_eq3_gradient`."""
    return assert_eq3_gradient


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data(name)``: the real-photo folder ``../shared/data/<name>``; skips the test where
    it is absent."""
    return shared_dataset


# --- the Snakemake command line ------------------------------------------------------------


def run_snakemake(*args, cwd=REPO, timeout=900, check=True):
    """``snakemake --snakefile <repo>/Snakefile --directory <cwd> <args>``, this venv's first on PATH."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("snakemake"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([exe, "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def count_jobs(output: str) -> dict:
    """The job-count table of a (dry) run's output: rule -> number of jobs."""
    import re

    counts = {}
    for line in output.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="session")
def snakemake():
    """``snakemake(*args, cwd=..., timeout=..., check=True)``: see :func:`run_snakemake`."""
    return run_snakemake


@pytest.fixture(scope="session")
def job_counts():
    """``job_counts(output)``: see :func:`count_jobs`."""
    return count_jobs


# --- the report's fake results tree -------------------------------------------------------


@pytest.fixture(scope="session")
def fake_results():
    """tests/fixtures_report.py: a fake finished results tree with known accuracies and maps
    (``build_tree``, ``metrics_paths``, ``VARIANT``) and the tiny report workflow over it
    (``build_workflow``). A plain module, reached through this fixture only."""
    from tests import fixtures_report

    return fixtures_report


@pytest.fixture
def artifacts_dir(tmp_path) -> Path:
    """Where a test leaves files for people to look at (screenshots, a report): ``tmp_path``, or
    the folder named by HALSAL_TEST_ARTIFACTS. Never the checkout."""
    path = Path(os.environ.get("HALSAL_TEST_ARTIFACTS") or tmp_path / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def separable(device, n=16, size=72, input_size=64, seed=0):
    """Two classes that a network separates in a few epochs: the bright half of the image is
    the top (class 0) or the bottom (class 1); flips and crops keep it so."""
    from halsal.train.device_cache import DeviceImages

    def images(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 60, (2 * n, size, size, 3)).astype(np.uint8)
        x[:n, : size // 2] += 150
        x[n:, size // 2:] += 150
        return x, np.repeat([0, 1], n)

    return (DeviceImages(*images(n, seed), device, input_size),
            DeviceImages(*images(n // 2, seed + 1), device, input_size))
