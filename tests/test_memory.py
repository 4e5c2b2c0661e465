"""The GPU memory check before Step 1 and Step 2 (issue 26, item 10), on the CPU with a fake card:
torch.cuda.mem_get_info and get_device_name are patched, the device is ``torch.device("cuda")``
(an object torch builds without a GPU). The estimates run on the meta device (no memory, no
arithmetic), so ResNet-152 at batch 128 costs about half a second."""

import numpy as np
import pandas as pd
import pytest
import torch

from halsal.errors import HalsalError
from halsal.models import build_model
from halsal.train import memory
from halsal.train.memory import GIB, cache_bytes, check_gpu_memory, estimate_training_memory

CUDA = torch.device("cuda")


def fake_card(monkeypatch, free_gib: float, total_gib: float, name: str = "Fake GPU") -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * GIB), int(total_gib * GIB)))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


def step1_resnet152():
    """Step 1 of config/paper.yaml: ResNet-152, batch 128, 227 px, the saliency branch trains,
    50,000 ImageNet validation images cached at 256 px."""
    return estimate_training_memory("resnet152", 1000, 128, 227, frozen="rgb_and_joint",
                                    cache=cache_bytes(50_000, (256, 256, 3)))


def test_estimate_grows_with_batch_and_input_size():
    small = estimate_training_memory("alexnet", 10, 8, 64, model_options={"fc_width": 64})
    batch = estimate_training_memory("alexnet", 10, 16, 64, model_options={"fc_width": 64})
    size = estimate_training_memory("alexnet", 10, 8, 128, model_options={"fc_width": 64})
    assert small.activations > 0
    assert batch.total > small.total and size.total > small.total
    assert batch.activations == pytest.approx(2 * small.activations, rel=0.02)  # linear in the batch
    assert size.activations > 3 * small.activations  # about the square of the input size
    assert batch.weights == small.weights == size.weights and batch.training_state == small.training_state


def test_frozen_parameters_need_no_gradients_or_optimizer_state():
    trained = estimate_training_memory("alexnet", 10, 8, 64, model_options={"fc_width": 64})
    step1 = estimate_training_memory("alexnet", 10, 8, 64, model_options={"fc_width": 64}, frozen="rgb_and_joint")
    with torch.device("meta"):
        branch = sum(p.nbytes for p in build_model("alexnet", 10, fc_width=64).saliency_branch.parameters())
    assert step1.weights == trained.weights
    assert step1.training_state == 3 * branch < trained.training_state  # gradient, momentum, update
    assert step1.activations < trained.activations


def test_resnet152_step1_agrees_with_the_measured_table():
    """docs/benchmarks.md: cache 9.2 GiB, activations <= 24.3 GiB with everything trainable, about
    34 GiB in all; Step 1 itself freezes the backbone, so it needs less than that bound."""
    e = step1_resnet152()
    assert e.cache / GIB == pytest.approx(9.2, abs=0.1)
    assert 15 < e.activations / GIB < 24.3
    assert 25 < e.total / GIB < 34 < e.required / GIB + 3


def test_resnet152_batch128_fails_with_the_numbers_on_a_16_gib_card(monkeypatch):
    fake_card(monkeypatch, 15.6, 16.0, "Fake RTX A4000")
    e = step1_resnet152()
    with pytest.raises(HalsalError) as info:
        check_gpu_memory(CUDA, e, step="Step 1 (pretrain_saliency)", batch_key="train.pretrain.batch_size")
    msg = str(info.value)
    for part in ("Step 1 (pretrain_saliency)", "resnet152", "batch 128", "227 px", "Fake RTX A4000",
                 f"needs about {e.required / GIB:.1f} GiB", "15.6 GiB free of 16.0 GiB",
                 f"activations {e.activations / GIB:.1f} GiB", "image cache 9.2 GiB",
                 "lower train.pretrain.batch_size", f"batch {e.fitting_batch(int(15.6 * GIB))} would fit",
                 "data.input_size", "a GPU with at least"):
        assert part in msg, (part, msg)
    assert 0 < e.fitting_batch(int(15.6 * GIB)) < 128
    assert e.fitting_batch(int(9 * GIB)) == 0  # the cache alone does not fit


def test_resnet152_batch128_passes_on_an_80_gib_card(monkeypatch):
    fake_card(monkeypatch, 79.0, 80.0)
    assert check_gpu_memory(CUDA, step1_resnet152(), step="Step 1", batch_key="train.pretrain.batch_size") is None


def test_the_cpu_is_never_checked(monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("the CPU path asked CUDA for its memory")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_cuda)
    huge = estimate_training_memory("alexnet", 10, 8, 64, model_options={"fc_width": 64}, cache=10**15)
    assert check_gpu_memory(torch.device("cpu"), huge, step="Step 1", batch_key="train.pretrain.batch_size") is None


# --- the call sites: both steps stop before they put anything on the (fake) GPU ---------------


@pytest.fixture()
def job(tmp_path):
    """A prepared cache (images.npy, 3 classes x 4 images, 72 px), its split, an AlexNet backbone
    (fc6/fc7 64 wide) and Step-1 saliency weights; no training."""
    from halsal.io import torch_save, write_tsv
    from halsal.models.weights import backbone_state_dict

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "images.npy", np.zeros((12, 72, 72, 3), dtype=np.uint8))
    rows = [(i, i // 4, f"c{i // 4}", ("train", "train", "val", "test")[i % 4], i % 4 if i % 4 < 2 else 0)
            for i in range(12)]
    write_tsv(tmp_path / "split.tsv", pd.DataFrame(rows, columns=["row", "label", "class_name", "role", "rank"]))
    model = build_model("alexnet", 3, fc_width=64)
    torch_save(tmp_path / "backbone.pt", backbone_state_dict(model))
    torch_save(tmp_path / "sal.pt", {k: v for k, v in model.state_dict().items() if k.startswith("saliency_branch.")})
    return tmp_path


def test_pretrain_saliency_checks_before_it_uploads(job, monkeypatch):
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import pretrain_saliency

    fake_card(monkeypatch, 0.5, 16.0, "Fake small card")
    with pytest.raises(HalsalError, match=r"Step 1 \(pretrain_saliency\).*Fake small card.*train\.pretrain\.batch_size"):
        pretrain_saliency("alexnet", "d4-pool2-eq2", job / "backbone.pt", job / "sal_out.pt", source_prepared=job / "prepared",
                          source_split=job / "split.tsv", cfg=OptimConfig(epochs=1, batch_size=8), input_size=64, device=CUDA)


def test_finetune_checks_once_per_job_before_any_run(job, monkeypatch):
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import FinetuneRun, finetune_batch, load_finetune_inputs

    fake_card(monkeypatch, 0.5, 16.0, "Fake small card")
    inputs = load_finetune_inputs(arch="alexnet", method="approach_a", variant="d4-pool2-eq2", dataset="fine",
                                  prepared=job / "prepared", backbone_pt=job / "backbone.pt", saliency_pt=job / "sal.pt",
                                  cfg=OptimConfig(epochs=1, batch_size=8), input_size=64, device=CUDA)
    runs = [FinetuneRun(k, 0, job / "split.tsv", job / f"run{k}") for k in ("1", "K")]
    with pytest.raises(HalsalError, match=r"Step 2 \(finetune\).*Fake small card.*train\.finetune\.batch_size"):
        finetune_batch(inputs, runs)
    assert not any((job / f"run{k}").exists() for k in ("1", "K"))  # no run started
    # The job's largest run (k = K: 6 train + 3 val + 3 test images) sets the cache.
    assert memory.finetune_estimate(inputs, runs).cache == cache_bytes(12, (72, 72, 3))
