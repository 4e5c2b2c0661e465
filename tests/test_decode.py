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
    monkeypatch.setattr(D, "_gpu_reason", lambda: None)
    monkeypatch.setattr(D, "gpu_available", lambda: True)
    real = D._dali_pipeline

    def pipeline(source, *, device, **kw):
        if device == "gpu":
            raise RuntimeError(NVJPEG_FAILURE)
        return real(source, device=device, **kw)

    monkeypatch.setattr(D, "_dali_pipeline", pipeline)


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
