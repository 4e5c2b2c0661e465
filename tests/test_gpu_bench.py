"""bench/bench_decode.py's GPU row, checked on the CPU (issue 18): halsal's DALI pipeline is
built once and timed over repeated passes, and no path is timed twice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
bench_decode = pytest.importorskip("bench_decode")
D = bench_decode.D


@pytest.mark.parametrize("dali, gpu", [(True, True), (True, False), (False, False)])
def test_each_decode_path_has_one_row(dali, gpu):
    auto = "dali-gpu" if gpu else ("dali-cpu" if dali else "torchvision")
    rows = bench_decode.halsal_rows(auto, dali, gpu)
    names, paths = [n for n, _ in rows], [w for _, w in rows]
    assert len(set(paths)) == len(paths) and len(set(names)) == len(names)
    assert sum("(= auto)" in n for n in names) == 1
    assert ("dali-gpu-pipeline" in paths) == gpu and "dali-gpu" not in paths  # the GPU path: the built-once row only


@pytest.mark.skipif(not D.dali_available(), reason="DALI (nvidia-dali-cuda130) is not installed")
def test_pipeline_is_built_once_and_timed_over_passes(tmp_path, monkeypatch):
    files = []
    rng = np.random.default_rng(0)
    for i in range(5):
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(files[-1], quality=90)
    built = []
    real = D.dali_pipeline
    monkeypatch.setattr(D, "dali_pipeline", lambda *a, **kw: built.append(kw["device"]) or real(*a, **kw))
    one_pass = bench_decode.pipeline_passes(files, 48, 40, device="cpu", batch_size=2, num_threads=1)  # the GPU graph's CPU twin
    assert built == ["cpu"]
    counts = [one_pass() for _ in range(3)]
    assert built == ["cpu"]  # three passes, one pipeline
    assert counts == [6, 6, 6]  # ceil(5 / 2) batches of 2 per pass


@pytest.mark.parametrize("capability, native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_step_bench_runs_bf16_only_where_training_accepts_it(monkeypatch, capability, native):
    """Issue 26, item 4: bench/bench_step.py asks training's own check (compute capability 8.0+),
    not ``torch.cuda.is_bf16_supported()``, which also says yes to emulated bf16 (V100, T4)."""
    import torch

    bench_step = pytest.importorskip("bench_step")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "a fake GPU")
    assert bench_step.bf16_native(torch.device("cuda")) is native
    assert bench_step.bf16_native(torch.device("cpu")) is True
