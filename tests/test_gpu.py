"""The CUDA paths, as strict as the CPU tests (issue 18): DALI's GPU decoder per image against
the PIL reference (prepare's 256/256 squares too), the CUDA device cache and SMIC cache against
the CPU ones bit for bit, ResNet-152 with frozen batch norm, resume with map_location=cuda, and
fine-tuning runs of Approach B and SMIC that learn on CUDA.

Skipped, with the reason, where torch sees no GPU; "torch sees a GPU but DALI does not" is a
failure. Imports neither pandas nor Snakemake at module level (`make gpu-check` runs this on a
bare GPU machine); the end-to-end tests import the data pipeline inside.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from halsal.data import decode as D

pytestmark = pytest.mark.gpu
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        from halsal.gpu import torch_gpu_reason

        pytest.skip(f"no CUDA GPU visible to torch ({torch_gpu_reason()})")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def dali_gpu(cuda):
    """DALI's GPU decoder; a GPU that torch sees and DALI does not is a failure, not a skip."""
    reason = D.gpu_reason()
    if reason:
        try:
            import nvidia.dali

            version = nvidia.dali.__version__
        except ImportError:
            version = "(not installed)"
        pytest.fail(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {torch.cuda.get_device_name(0)} "
                    f"but DALI {version} does not: {reason}")
    return True


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _photo(w, h, seed):
    rng = np.random.default_rng(seed)
    arr = np.array(Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    arr[: h // 3, : w // 4] = (250, 30, 30)  # a wrong rotation or shifted crop shows
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Valid files of every awkward kind the CPU tests use, plus the real photographs if present."""
    d = tmp_path_factory.mktemp("gpu-jpegs")
    im = _photo(341, 256, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    kinds = {"good1.jpg": (im, {}), "good2.jpg": (_photo(300, 400, 1), {}), "gray.jpg": (im.convert("L"), {}),
             "cmyk.jpg": (im.convert("CMYK"), {}), "small.jpg": (im.resize((120, 90)), {}),
             "exif6.jpg": (_photo(300, 200, 2), {"exif": exif}), "palette.png": (im.convert("P"), {})}
    files = []
    for name, (img, kw) in kinds.items():
        img.save(d / name, **({"quality": 90} if name.endswith(".jpg") else {}), **kw)
        files.append(d / name)
    good = (d / "good1.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(4000) + b"\xff\xd9")
    photos = SHARED / "flowers102-tiny" / "images"
    if photos.is_dir():
        found = sorted(photos.rglob("*.jpg"))
        files += found[:: max(1, len(found) // 20)][:20]
    return files, [d / "truncated.jpg", d / "junk.jpg"]


# --- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("resize, crop", [(256, 227), (256, 256), (224, 200)])  # 256/256: what prepare runs
def test_dali_gpu_decode_matches_pil_per_image(dali_gpu, jpegs, resize, crop):
    files, _ = jpegs
    ref = D.decode_pil(files, resize, crop)
    got = D.decode_dali_gpu(files, resize, crop, batch_size=4)
    assert got.shape == ref.shape == (len(files), crop, crop, 3) and got.dtype == np.uint8
    per_image = {Path(f).name: mad(g, r) for f, g, r in zip(files, got, ref)}
    # The same bound as the CPU paths, on every card: the GPU graph pins nvJPEG's CUDA decoder
    # (hw_decoder_load=0; DALI's fn.decoders.image doc: the mixed backend otherwise sends that share
    # of JPEGs to the hardware decoder of A100/H100/H200, whose chroma upsampling differs from
    # libjpeg-turbo's) and asks for libjpeg-turbo's chroma upsampling (jpeg_fancy_upsampling=True,
    # same doc). See halsal.data.decode_dali.dali_pipeline; tests/test_decode.py checks the pin.
    assert max(per_image.values()) < 1.0, per_image  # every image, as the CPU paths are checked
    assert all(g.std() > 10 for g in got)


def test_dali_gpu_skips_bad_files_like_the_cpu_paths(dali_gpu, jpegs):
    files, bad = jpegs
    with warnings.catch_warnings():  # junk.jpg makes its DALI batch fail: redone with PIL, with a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        res = D.decode_images(files + bad, 256, 256, backend="dali-gpu", on_error="skip", progress=False, batch_size=4)
    assert res.backend == "dali-gpu" and res.status == ["ok"] * len(files) + ["skipped"] * len(bad)
    ref = D.decode_pil(files, 256, 256)
    assert max(mad(g, r) for g, r in zip(res.images, ref)) < 1.0 and not res.images[len(files):].any()


def test_auto_with_a_gpu_decodes_on_the_gpu(dali_gpu):
    from halsal.gpu import resolve_decode_backend

    assert resolve_decode_backend("auto", 1) == "dali-gpu"


# --- the device cache --------------------------------------------------------------------------

def _cache(n=9, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 256, (n, size, size), dtype=np.uint8),
            np.arange(n) % 3)


def test_cuda_cache_batches_equal_the_cpu_ones_bit_for_bit(cuda):
    from halsal.train.device_cache import DeviceImages

    images, _, labels = _cache()
    got, ref = DeviceImages(images, labels, cuda, 32), DeviceImages(images, labels, torch.device("cpu"), 32)
    assert got.images.device.type == cuda.type and torch.equal(got.images.cpu(), ref.images)
    for (x, y), (rx, ry) in zip(got.train_batches(4, torch.Generator().manual_seed(1)),
                                ref.train_batches(4, torch.Generator().manual_seed(1))):
        assert torch.equal(x.cpu(), rx) and torch.equal(y.cpu(), ry)  # gather kernel == CPU slices
    for (x, y), (rx, ry) in zip(got.eval_batches(4), ref.eval_batches(4)):
        assert torch.equal(x.cpu(), rx) and torch.equal(y.cpu(), ry)


def test_cuda_upload_holds_one_copy(cuda, monkeypatch):
    from halsal.train import device_cache

    images, _, labels = _cache(n=64, size=64)
    monkeypatch.setattr(device_cache, "UPLOAD_CHUNK_BYTES", 8 * images[0].nbytes)
    torch.cuda.synchronize(), torch.cuda.empty_cache(), torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    data = device_cache.DeviceImages(images, labels, cuda, 32)
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < images.nbytes + 9 * images[0].nbytes + (1 << 20), (peak, images.nbytes)  # not 2x


def test_cuda_smic_cache_equals_the_cpu_one(cuda):
    from halsal.train.inputs import DeviceImagesWithMaps

    images, maps, labels = _cache()
    got = DeviceImagesWithMaps(images, maps, labels, cuda, 32)
    ref = DeviceImagesWithMaps(images, maps, labels, torch.device("cpu"), 32)
    for (x, _), (rx, _) in zip(got.train_batches(4, torch.Generator().manual_seed(2)),
                               ref.train_batches(4, torch.Generator().manual_seed(2))):
        assert x.shape[1] == 4 and torch.equal(x.cpu(), rx)  # the map cut and flipped with its image
    for (x, _), (rx, _) in zip(got.eval_batches(4), ref.eval_batches(4)):
        assert torch.equal(x.cpu(), rx)


# --- models and training -----------------------------------------------------------------------

def test_resnet152_frozen_batchnorm_on_cuda(cuda):
    from halsal.models import build_model, frozen_bn_eval

    torch.manual_seed(0)
    model = build_model("resnet152", 3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.eval()(x)
    model.to(cuda)
    with torch.no_grad():
        got = model(x.to(cuda)).cpu()
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2  # TF32 convolutions: close, not equal
    for p in model.rgb_and_joint_parameters():
        p.requires_grad_(False)
    frozen_bn_eval(model)
    assert model.training and not model.bn1.training and not model.layer3[5].bn2.training
    stats, frozen = model.bn1.running_mean.clone(), model.layer1[0].conv1.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    score = model.saliency_branch.score.weight.clone()
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64, device=cuda)),
                                          torch.tensor([0, 1, 2, 0], device=cuda)).backward()
        opt.step()
    assert torch.equal(model.bn1.running_mean, stats) and torch.equal(model.layer1[0].conv1.weight, frozen)
    assert not torch.equal(model.saliency_branch.score.weight, score)  # the branch learns


from tests.conftest import separable as _separable  # noqa: E402


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True)])
def test_cuda_fit_learns(cuda, precision, channels_last):
    from halsal.models import build_model
    from halsal.train.loop import OptimConfig, fit

    if precision == "bf16" and torch.cuda.get_device_capability(cuda) < (8, 0):
        pytest.skip(f"{torch.cuda.get_device_name(cuda)}: compute capability below 8.0, bf16 is refused there")
    train, val = _separable(cuda)
    torch.manual_seed(0)
    model = build_model("alexnet", 2, fc_width=64).to(cuda)
    cfg = OptimConfig(epochs=4, lr=5e-4, optimizer="adam", batch_size=8, precision=precision, channels_last=channels_last)
    result = fit(model, train, val, cfg, seed=0)
    losses = [h["train_loss"] for h in result.history]
    assert min(losses[1:]) < 0.5 * losses[0] and result.best_val_acc >= 0.9


def test_resume_on_cuda_continues_the_run(cuda, tmp_path, monkeypatch):
    """A run killed after its epoch-2 checkpoint, resumed with map_location=cuda, ends where an
    uninterrupted run ends: to float rounding (cuDNN autotuning and atomic adds), not bit for bit."""
    import halsal.train.loop as loop
    from halsal.models import build_model

    train, val = _separable(cuda)
    cfg = loop.OptimConfig(epochs=4, lr=5e-4, optimizer="adam", batch_size=8, checkpoint_seconds=0)

    def run(ckpt):
        torch.manual_seed(0)
        model = build_model("alexnet", 2, fc_width=64).to(cuda)
        return model, loop.fit(model, train, val, cfg, seed=0, checkpoint=ckpt)

    ref_model, ref = run(None)
    real_save, saves = loop.torch_save, []

    def save_then_die(path, obj):
        real_save(path, obj)
        saves.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise KeyboardInterrupt("killed after the epoch-2 checkpoint")

    monkeypatch.setattr(loop, "torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "ckpt.pt")
    monkeypatch.setattr(loop, "torch_save", real_save)
    model, got = run(tmp_path / "ckpt.pt")
    assert saves == [1, 2] and len(got.history) == 4
    assert all(t.device.type == cuda.type for t in model.state_dict().values())
    np.testing.assert_allclose([h["train_loss"] for h in got.history], [h["train_loss"] for h in ref.history], rtol=1e-3)
    assert got.best_epoch == ref.best_epoch and abs(got.best_val_acc - ref.best_val_acc) < 1e-6
    for k, v in ref_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-3, atol=1e-4)


# --- fine-tuning end to end ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def learnable(cuda, tmp_path_factory):
    """A prepared two-class dataset (bright top / bright bottom, 30 JPEGs per class), a backbone
    trained from scratch on it and Step-1 saliency weights, all on CUDA."""
    from halsal.data.datasets import index_folder
    from halsal.data.prepare import prepare
    from halsal.data.splits import make_split
    from halsal.io import write_tsv
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import backbone, pretrain_saliency

    root = tmp_path_factory.mktemp("gpu-learnable")
    rng = np.random.default_rng(0)
    for label, name in enumerate(("top", "bottom")):
        (root / "images" / name).mkdir(parents=True)
        for i in range(30):
            x = rng.integers(0, 60, (80, 80, 3)).astype(np.uint8)
            x[slice(0, 40) if label == 0 else slice(40, 80)] += 150
            Image.fromarray(x).save(root / "images" / name / f"{i:02d}.jpg", quality=95)
    index = index_folder(root)
    write_tsv(root / "index.tsv", index)
    write_tsv(root / "seed0.tsv", make_split(index, 0, max_k=5)[0])
    prepare(root / "index.tsv", root / "prepared", resize=72, backend="dali-gpu", progress=False)
    kw = dict(source_prepared=root / "prepared", source_split=root / "seed0.tsv", input_size=64, device=cuda)
    cfg = OptimConfig(epochs=3, lr=5e-4, optimizer="adam", batch_size=8)
    backbone("alexnet", "scratch", root / "backbone.pt", cfg=cfg, fc_width=64, **kw)
    pretrain_saliency("alexnet", "d4-pool2-eq2", root / "backbone.pt", root / "sal.pt", cfg=cfg, **kw)
    return root


@pytest.mark.parametrize("method", ["approach_b", "smic"])
def test_cuda_finetune_learns(learnable, cuda, tmp_path, method):
    from halsal.data.smic_maps import smic_maps
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import finetune

    extra = {"saliency_pt": learnable / "sal.pt"} if method == "approach_b" else {}
    if method == "smic":
        smic_maps(learnable / "index.tsv", learnable / "prepared", tmp_path / "maps.npy")
        extra = {"maps": tmp_path / "maps.npy"}
    m = finetune(arch="alexnet", method=method, variant="d4-pool2-eq2", k="K", seed=0, dataset="learnable",
                 prepared=learnable / "prepared", split_tsv=learnable / "seed0.tsv", backbone_pt=learnable / "backbone.pt",
                 out_dir=tmp_path / "run", input_size=64, device=cuda,
                 cfg=OptimConfig(epochs=6, lr=5e-4, optimizer="adam", batch_size=8), **extra)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["device"] == "cuda" and written["device_name"] == torch.cuda.get_device_name(cuda)
    assert written["decode_backend"] == "dali-gpu"
    assert m["val_acc"] >= 0.9 and m["test_acc"] >= 0.9, m  # chance is 0.5
