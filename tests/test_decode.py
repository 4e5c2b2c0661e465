"""Decode paths: parity with the PIL reference, awkward files, bad-file policy, GPU path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from halsal.data import decode as D
from halsal.errors import HalsalError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CPU_BACKENDS = ["pil", "torchvision"] + (["dali-cpu"] if D.dali_available() else [])
FAST = {"torchvision": D.decode_torchvision}
if D.dali_available():
    FAST["dali-cpu"] = D.decode_dali_cpu
    # DALI's own resampler (ROI resize + truncated crop): the graph the GPU path runs, checked on CPU
    FAST["dali-cpu-dali-resampler"] = lambda files, resize=256, crop=227: D.decode_images(
        files, resize, crop, backend="dali-cpu", progress=False, resampler="dali").images


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in 0-255 units."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def photos(name: str, n: int = 20) -> list[Path]:
    images = SHARED / name / "images"
    if not images.is_dir():
        pytest.skip(f"real photographs not found at {images} (the shared data folder is absent)")
    files = sorted(images.rglob("*.jpg"))
    return files[:: max(1, len(files) // n)][:n]  # spread over the classes


def smooth_photo(w: int = 341, h: int = 256, seed: int = 0) -> Image.Image:
    """A photo-like RGB image (smooth random field plus an asymmetric bright block)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
    arr = np.array(small.resize((w, h), Image.BICUBIC))
    arr[: h // 3, : w // 4] = (250, 30, 30)  # top-left marker: a wrong rotation is visible
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("awkward")
    im = smooth_photo()
    files = {}

    def save(name, img, **kw):
        files[name] = d / name
        img.save(files[name], **kw)

    save("good1.jpg", im, quality=90)
    save("good2.jpg", smooth_photo(300, 400, seed=1), quality=90)
    save("gray.jpg", im.convert("L"), quality=90)
    save("cmyk.jpg", im.convert("CMYK"), quality=90)
    rgba = np.array(im.convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1], dtype=np.uint8)
    save("alpha.png", Image.fromarray(rgba))
    save("palette.png", im.convert("P"))
    save("small.jpg", im.resize((120, 90)), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the viewer rotates 90 degrees clockwise
    save("exif6.jpg", smooth_photo(300, 200, seed=2), quality=90, exif=exif)
    good = (d / "good1.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    # passes the cheap header/trailer check, so it reaches a DALI batch and makes it fail
    (d / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(0).bytes(4000) + b"\xff\xd9")
    for name in ("truncated.jpg", "zero.jpg", "text.jpg", "junk.jpg"):
        files[name] = d / name
    files["missing.jpg"] = d / "missing.jpg"  # listed in an index but gone from disk
    return files


# --- parity on real photographs -------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["flowers102-tiny", "cub200-tiny"])
@pytest.mark.parametrize("backend", list(FAST))
@pytest.mark.parametrize("resize,crop", [(256, 227), (224, 200)])  # 224: real resampling
def test_parity_with_pil_on_photographs(dataset, backend, resize, crop):
    files = photos(dataset)
    ref = D.decode_pil(files, resize, crop)
    got = FAST[backend](files, resize, crop)
    assert got.shape == ref.shape == (len(files), crop, crop, 3) and got.dtype == np.uint8
    assert mad(got, ref) < 1.0
    assert max(mad(g, r) for g, r in zip(got, ref)) < 1.0  # no single image off (e.g. a shifted crop)


# --- awkward but valid files ----------------------------------------------------------------

AWKWARD_OK = ["gray.jpg", "cmyk.jpg", "alpha.png", "palette.png", "small.jpg", "exif6.jpg"]


@pytest.mark.parametrize("backend", list(FAST))
@pytest.mark.parametrize("resize,crop", [(256, 227), (200, 180)])  # 200: exif6 needs no resize
def test_awkward_files_match_reference(awkward, backend, resize, crop):
    files = [awkward[n] for n in AWKWARD_OK]
    ref = D.decode_pil(files, resize, crop)
    got = FAST[backend](files, resize, crop)
    assert got.shape == (len(files), crop, crop, 3)
    for name, g, r in zip(AWKWARD_OK, got, ref):
        assert mad(g, r) < 1.0, name
        assert g.std() > 10, f"{name} decoded to a flat image"
    gray = got[AWKWARD_OK.index("gray.jpg")].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1 and np.abs(gray[..., 0] - gray[..., 2]).max() <= 1


def test_reference_applies_exif_rotation(awkward):
    """The parity check above is only meaningful if orientation changes the output."""
    stored = Image.open(awkward["exif6.jpg"]).convert("RGB")  # as stored: 300 wide, 200 high
    ref = D.decode_pil([awkward["exif6.jpg"]], 200, 180)[0]
    unrotated = np.asarray(stored.resize((300, 200)))[10:190, 60:240]
    rotated = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))[60:240, 10:190]  # 90 deg clockwise
    assert mad(ref, rotated) < 1.0 and mad(ref, unrotated) > 10
    # the red marker, top-left as stored, ends up top-right after the rotation
    assert ref[:20, -20:, 0].mean() > 200 and ref[:20, :20, 0].mean() < 200


def test_small_image_is_upscaled(awkward):
    out = D.decode_pil([awkward["small.jpg"]])
    assert out.shape == (1, 227, 227, 3)
    # 90 px -> 256 px: bilinear upscaling leaves neighbouring pixels nearly equal
    assert np.abs(np.diff(out[0].astype(int), axis=1)).mean() < 6


# --- bad files ------------------------------------------------------------------------------

BAD = {"truncated.jpg": "truncated", "zero.jpg": "zero-byte", "text.jpg": "not an image", "junk.jpg": "corrupt",
       "missing.jpg": "cannot read the file"}


@pytest.mark.filterwarnings("ignore:DALI failed on a batch")  # junk.jpg: expected, asserted below
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bad", list(BAD))
def test_bad_file_raises_naming_file(awkward, backend, bad):
    files = [awkward["good1.jpg"], awkward[bad], awkward["good2.jpg"]]
    with pytest.raises(HalsalError) as err:
        D.decode_images(files, backend=backend, progress=False)
    msg = str(err.value)
    assert str(awkward[bad]) in msg and BAD[bad] in msg and "data.on_bad_image: skip" in msg


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_files_skipped_and_reported(awkward, backend):
    names = ["good1.jpg", "truncated.jpg", "gray.jpg", "zero.jpg", "junk.jpg", "text.jpg", "good2.jpg", "exif6.jpg",
             "missing.jpg", "small.jpg"]
    files = [awkward[n] for n in names]
    # batch_size 2 puts junk.jpg (which passes the cheap check) in a DALI batch with good2.jpg:
    # DALI fails on that batch, which is redone with PIL, and the next batches still use DALI
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = D.decode_images(files, backend=backend, on_error="skip", progress=False, batch_size=2)
    if backend == "dali-cpu":
        assert any("decoded with PIL instead" in str(w.message) for w in caught)
    assert res.backend == backend and res.images.shape == (len(files), 227, 227, 3)
    for name, status, reason, img in zip(names, res.status, res.reasons, res.images):
        if name in BAD:
            assert status == "skipped" and BAD[name] in reason and not img.any(), name
        else:
            assert status == "ok" and reason == "", name
    good = [i for i, n in enumerate(names) if n not in BAD]
    ref = D.decode_pil([files[i] for i in good])
    assert all(mad(res.images[i], r) < 1.0 for i, r in zip(good, ref))


# --- backend selection and errors -----------------------------------------------------------

@pytest.mark.parametrize("dali, gpu, expected", [(True, True, "dali-gpu"), (True, False, "dali-cpu"),
                                                 (False, False, "torchvision")])
def test_auto_backend_per_situation(monkeypatch, dali, gpu, expected):
    monkeypatch.setattr(D, "dali_available", lambda: dali)
    monkeypatch.setattr(D, "gpu_available", lambda: gpu)
    assert D.resolve_backend("auto") == expected
    assert D.resolve_backend() == expected  # 'auto' is the default
    for named in ("pil", "torchvision", "dali-cpu", "dali-gpu"):  # a named backend is kept as it is
        assert D.resolve_backend(named) == named


def test_auto_backend_and_argument_errors(awkward):
    assert D.decode_images([awkward["good1.jpg"]], progress=False).backend == D.resolve_backend("auto")
    with pytest.raises(HalsalError, match="unknown decode backend 'opencv'"):
        D.decode_images([awkward["good1.jpg"]], backend="opencv", progress=False)
    with pytest.raises(HalsalError, match="on_bad_image"):
        D.decode_images([awkward["good1.jpg"]], on_error="ignore", progress=False)
    with pytest.raises(HalsalError, match="crop 300 is larger than resize 256"):
        D.decode_pil([awkward["good1.jpg"]], 256, 300)
    assert D.decode_images([], progress=False).images.shape == (0, 227, 227, 3)


def test_auto_falls_back_to_torchvision_without_dali(awkward, monkeypatch):
    monkeypatch.setattr(D, "dali_available", lambda: False)
    monkeypatch.setattr(D, "gpu_available", lambda: False)
    res = D.decode_images([awkward["good1.jpg"]], progress=False)
    assert res.backend == "torchvision" and mad(res.images, D.decode_pil([awkward["good1.jpg"]])) < 1.0
    with pytest.raises(HalsalError, match="needs DALI"):
        D.decode_images([awkward["good1.jpg"]], backend="dali-cpu", progress=False)


def test_dali_gpu_without_gpu_names_reason(awkward):
    if D.gpu_available():
        pytest.skip("a GPU is visible; the no-GPU error cannot be provoked")
    with pytest.raises(HalsalError, match="dali-gpu.*(no CUDA GPU visible to DALI|not installed)"):
        D.decode_dali_gpu([awkward["good1.jpg"]])


NVJPEG_FAILURE = ("Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.image`,\n"
                  "encountered:\nnvJPEG error (NVJPEG_STATUS_ARCH_MISMATCH): the driver is too old\n")


@pytest.fixture
def broken_gpu_decoder(monkeypatch):
    """DALI sees a GPU, but its mixed decoder fails at run time (an old driver, no nvJPEG)."""
    if not D.dali_available():
        pytest.skip("needs DALI (the fallback goes to DALI on the CPU)")
    monkeypatch.setattr(D, "gpu_reason", lambda: None)
    monkeypatch.setattr(D, "gpu_available", lambda: True)
    real = D.dali_pipeline

    def pipeline(source, *, device, **kw):
        if device == "gpu":
            raise RuntimeError(NVJPEG_FAILURE)
        return real(source, device=device, **kw)

    monkeypatch.setattr(D, "dali_pipeline", pipeline)


def test_auto_falls_back_to_dali_cpu_when_the_gpu_decoder_fails(awkward, broken_gpu_decoder):
    files = [awkward[n] for n in ("good1.jpg", "good2.jpg", "exif6.jpg")]
    assert D.resolve_backend("auto") == "dali-gpu"
    with pytest.warns(RuntimeWarning, match=r"GPU \(mixed\) decoder does not work here \(nvJPEG error "
                                            r"\(NVJPEG_STATUS_ARCH_MISMATCH\).*DALI on the CPU instead"):
        res = D.decode_images(files, progress=False)
    assert res.backend == "dali-cpu" and np.array_equal(res.images, D.decode_dali_cpu(files))


def test_explicit_dali_gpu_with_a_failing_gpu_decoder_is_a_clear_error(awkward, broken_gpu_decoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallback
        with pytest.raises(HalsalError, match=r"'dali-gpu' cannot run: DALI's GPU \(mixed\) decoder failed on a "
                                              r"test image \(nvJPEG error.*'auto' or 'dali-cpu'"):
            D.decode_images([awkward["good1.jpg"]], backend="dali-gpu", progress=False)


def test_prepare_records_the_fallback_backend(tmp_path, broken_gpu_decoder):
    import json

    from halsal.data.prepare import prepare
    from halsal.data.synthetic import generate
    from halsal.io import write_tsv

    write_tsv(tmp_path / "index.tsv", generate(tmp_path / "ds", task="fine", classes=2, images_per_class=2,
                                               image_size=80, seed=0))
    with pytest.warns(RuntimeWarning, match="nvJPEG error"):
        prepare(tmp_path / "index.tsv", tmp_path / "prepared", resize=72, backend="auto", progress=False)
    assert json.loads((tmp_path / "prepared" / "prepare.json").read_text())["backend"] == "dali-cpu"


# DALI's GPU decoder, per image, at 256/227, 256/256 and 224/200: tests/test_gpu.py.


# --- a device fault is not a bad file (issue 26, item 8) --------------------------------------

from halsal.data import decode_dali as DD  # noqa: E402

DEVICE_ERRORS = [  # what DALI raises: the pipeline traceback (which quotes device="mixed"), then the cause
    "CUDA runtime API error cudaErrorMemoryAllocation (2): out of memory",
    "nvJPEG error (NVJPEG_STATUS_EXECUTION_FAILED)",
    "CUDA driver API error CUDA_ERROR_ILLEGAL_ADDRESS (700): an illegal memory access was encountered",
]


def dali_error(cause: str) -> RuntimeError:
    return RuntimeError("Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.image`,\n"
                        "which was used in the pipeline definition with the following traceback:\n\n"
                        '    img = fn.decoders.image(enc, device="mixed", output_type=types.RGB)\n\n'
                        f"encountered:\n\n{cause}\nCurrent pipeline object is no longer valid.")


@pytest.fixture
def fake_gpu(monkeypatch):
    """DALI's GPU path with DALI's CPU operators underneath: DALI sees a GPU, the probe passes, and
    each pipeline is built on the CPU. ``fake_gpu.fail_on`` (run number -> exception) makes a run
    raise, as a GPU that falls sick in the middle of a dataset does; ``fake_gpu.built`` lists the
    (batch_size, num_threads) of each pipeline built."""
    if not D.dali_available():
        pytest.skip("needs DALI (its CPU operators stand in for the GPU)")
    monkeypatch.setattr(D, "gpu_reason", lambda: None)
    monkeypatch.setattr(D, "gpu_available", lambda: True)
    monkeypatch.setattr(D, "check_gpu_decoder", lambda device_id=0: None)
    real = DD.dali_pipeline
    state = {"runs": 0}

    class Pipe:
        def __init__(self, pipe):
            self.pipe = pipe

        def run(self):
            state["runs"] += 1
            out = self.pipe.run()  # the batch is fed (and in flight) before DALI reports an error
            if state["runs"] in fake.fail_on:
                raise fake.fail_on[state["runs"]]
            return out

    def pipeline(source, *, device, device_id, **kw):
        fake.built.append((kw["batch_size"], kw["num_threads"]))
        return Pipe(real(source, device="cpu", device_id=None, **kw))

    monkeypatch.setattr(DD, "dali_pipeline", pipeline)
    fake = type("FakeGpu", (), {"fail_on": {}, "built": []})()
    return fake


@pytest.mark.parametrize("cause, on_error", list(zip(DEVICE_ERRORS, ["skip", "raise", "skip"])))
def test_device_error_mid_decode_stops_the_job(awkward, fake_gpu, cause, on_error):
    files = [awkward[n] for n in ("good1.jpg", "good2.jpg", "gray.jpg", "exif6.jpg")]
    fake_gpu.fail_on[2] = dali_error(cause)  # the second batch: the GPU worked, then failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallback to PIL
        with pytest.raises(D.DecoderFaultError) as err:
            D.decode_images(files, backend="dali-gpu", on_error=on_error, progress=False, batch_size=2)
    msg = str(err.value)
    assert isinstance(err.value, HalsalError) and not isinstance(err.value, D.GpuDecoderError)
    assert "'dali-gpu' failed on GPU 0" in msg and f"a device error ({cause})" in msg
    assert str(files[2]) in msg and "not a bad file" in msg and "data.decode_backend: dali-cpu" in msg
    assert fake_gpu.built == [(2, fake_gpu.built[0][1])]  # no file-by-file retry on a sick device


def test_device_error_with_auto_stops_prepare_without_writing(tmp_path, fake_gpu):
    """'auto' does not switch to the CPU mid-dataset either, and prepare.json never says dali-gpu
    over images that were not decoded."""
    from halsal.data.prepare import prepare
    from halsal.data.synthetic import generate
    from halsal.io import write_tsv

    write_tsv(tmp_path / "index.tsv", generate(tmp_path / "ds", task="fine", classes=2, images_per_class=3,
                                               image_size=80, seed=0))
    fake_gpu.fail_on[1] = dali_error(DEVICE_ERRORS[0])
    with pytest.raises(D.DecoderFaultError, match="out of memory"):
        prepare(tmp_path / "index.tsv", tmp_path / "prepared", resize=72, backend="auto", on_error="skip",
                progress=False)
    assert not any((tmp_path / "prepared" / name).exists() for name in ("prepare.json", "images.npy"))


def test_corrupt_file_in_a_gpu_batch_is_redone_file_by_file(awkward, fake_gpu):
    names = ["good1.jpg", "junk.jpg", "good2.jpg", "gray.jpg", "exif6.jpg"]
    files = [awkward[n] for n in names]
    with pytest.warns(RuntimeWarning, match=r"batch of 3 files; decoded one by one on dali-gpu, 1 of them "
                                            r"failed alone and are decoded with PIL instead"):
        res = D.decode_images(files, backend="dali-gpu", on_error="skip", progress=False, batch_size=3)
    assert res.backend == "dali-gpu"
    assert res.status == ["ok", "skipped", "ok", "ok", "ok"] and "corrupt" in res.reasons[1]
    assert not res.images[1].any()
    ref = D.decode_pil([files[i] for i in (0, 2, 3, 4)])
    assert all(mad(res.images[i], r) < 1.0 for i, r in zip((0, 2, 3, 4), ref))
    # batch of 3 fails; its files go one by one (a fresh pipeline after junk.jpg); the rest goes on
    assert [size for size, _ in fake_gpu.built] == [3, 1, 1, 3]


def test_every_file_of_a_batch_failing_alone_is_a_fault(awkward, fake_gpu):
    """An error that names no device, yet no file of the batch decodes alone although PIL reads them."""
    files = [awkward[n] for n in ("good1.jpg", "good2.jpg")]
    fake_gpu.fail_on.update({run: dali_error("nvImageCodec failure: '#3'") for run in (1, 2, 3)})
    with pytest.raises(D.DecoderFaultError, match=r"'dali-gpu' failed on GPU 0 while decoding a batch of 2 files "
                                                  r".*every file of the batch fails alone, yet PIL reads some"):
        D.decode_images(files, backend="dali-gpu", on_error="skip", progress=False)


def test_device_errors_are_told_from_file_errors():
    for cause in DEVICE_ERRORS + ["std::bad_alloc", "cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy"]:
        assert DD._is_device_error(dali_error(cause)), cause
    for cause in ["nvImageCodec failure: '#3'", "nvJPEG error (NVJPEG_STATUS_BAD_JPEG)",
                  "[/opt/dali/dali/operators/imgcodec/cuda_decoder.cc:12] Unsupported JPEG"]:
        assert not DD._is_device_error(dali_error(cause)), cause  # the traceback's device="mixed" does not count


# --- the job's threads reach DALI (issue 26, item 9) ------------------------------------------

def test_prepare_threads_reach_the_dali_pipeline(tmp_path, monkeypatch):
    if not D.dali_available():
        pytest.skip("needs DALI")
    import os

    import torch

    from halsal.cli import build_parser
    from halsal.data.synthetic import generate
    from halsal.io import write_tsv

    write_tsv(tmp_path / "index.tsv", generate(tmp_path / "ds", task="fine", classes=2, images_per_class=2,
                                               image_size=80, seed=0))  # 80 px: resampled by the torch pool
    real, seen = DD.dali_pipeline, []

    def pipeline(source, **kw):
        seen.append(kw["num_threads"])
        return real(source, **kw)

    monkeypatch.setattr(DD, "dali_pipeline", pipeline)
    torch_threads = torch.get_num_threads()
    base = ["prepare", "--index", str(tmp_path / "index.tsv"), "--resize", "72", "--backend", "dali-cpu"]
    for extra, expected in ((["--threads", "3"], 3), ([], len(os.sched_getaffinity(0)))):
        seen.clear()
        args = build_parser().parse_args(base + ["--out-dir", str(tmp_path / f"prepared{len(extra)}")] + extra)
        args.func(args)
        assert seen == [expected], extra
        assert torch.get_num_threads() == torch_threads  # set to 1 for the pool's workers, then restored
    rule = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "prepare.smk").read_text()
    assert "--threads {threads}" in rule


# --- DALI's GPU decoder is pinned (issue 26, item 11) -----------------------------------------

def test_gpu_graph_pins_the_cuda_jpeg_decoder(monkeypatch):
    """The hardware JPEG decoder (A100/H100/H200) is off and chroma is upsampled as libjpeg-turbo
    does, so tests/test_gpu.py's per-image bound against PIL holds on every card."""
    if not D.dali_available():
        pytest.skip("needs DALI")
    from nvidia.dali import fn

    seen = {}

    class Defined(Exception):
        pass

    def image(enc, **kw):
        seen.update(kw)
        raise Defined

    monkeypatch.setattr(fn.decoders, "image", image)
    with pytest.raises(Defined):  # the graph is defined far enough: nothing needs a GPU
        DD.dali_pipeline(lambda: [np.zeros(4, np.uint8)], device="gpu", resize=32, crop=32, batch_size=1,
                          num_threads=1, device_id=None, prefetch=1, resampler="torch")
    assert seen["device"] == "mixed" and seen["hw_decoder_load"] == 0 and seen["jpeg_fancy_upsampling"] is True
