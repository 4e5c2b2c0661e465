"""Decode image files once into uint8 arrays: shorter side -> ``resize``, centre crop ``crop``.

One function per path, each taking a list of files and returning ``(N, crop, crop, 3)``
uint8, so the tests compare the paths directly:

- :func:`decode_pil`: the reference (PIL + torchvision's PIL transforms);
- :func:`decode_dali_cpu`: DALI with CPU operators (``device_id=None``). DALI decodes in its
  threads; an image whose shorter side already equals ``resize`` is decoded inside its crop
  window only (``decoders.image_crop``, resizing would be the identity), any other is
  resampled with torchvision's resize in a thread pool, which measured ~6x faster than DALI's
  CPU resampler on this machine (``resampler='dali'`` keeps it all in DALI; see
  docs/benchmarks.md);
- :func:`decode_dali_gpu`: DALI ``mixed`` decoder, pinned to nvJPEG's CUDA decoder (the hardware
  JPEG decoder of A100/H100/H200 is off: its chroma upsampling differs from libjpeg-turbo's; see
  :func:`halsal.data.decode_dali.dali_pipeline`). Before a dataset is decoded, one small JPEG
  goes through it: if that fails (old driver, no nvJPEG), backend ``auto`` falls back to DALI on
  the CPU with a warning naming the cause, and an explicit ``dali-gpu`` raises
  :class:`GpuDecoderError` (a HalsalError). A device error later, mid-dataset (CUDA, out of
  memory), is no bad file: it stops the job with :class:`DecoderFaultError` whatever the backend
  setting (see :mod:`halsal.data.decode_dali`);
- :func:`decode_torchvision`: ``torchvision.io.decode_image``, used where DALI is missing.

:func:`decode_images` picks a path, and applies the bad-file policy (raise, or skip and
report). All paths share the same geometry: EXIF orientation applied, the resized size is
torchvision's (``long = int(resize * long / short)``), and the crop offset is torchvision's
``round((size - crop) / 2)`` (Python's round, half to even), so DALI matches the reference
to well under one grey level on average instead of sitting a pixel off.

This module holds the entry points, the backend choice and the GPU-decoder probe; the paths
themselves are :mod:`halsal.data.decode_cpu` (the byte check, PIL with its bad-file reasons,
torchvision) and :mod:`halsal.data.decode_dali` (the DALI pipeline and the loop feeding it).
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from halsal import settings
from halsal.data.decode_cpu import pil_into, torchvision_into
from halsal.data.decode_dali import DecoderFaultError, dali_cause, dali_into, dali_pipeline  # noqa: F401 (DecoderFaultError: re-exported, the decode API raises it)
from halsal.errors import HalsalError

_RESIZE, _CROP = settings.default("data.resize"), settings.default("data.input_size")  # the config's
BACKENDS = settings.DECODE_BACKENDS  # the config schema's data.decode_backend choices
SKIP_HINT = "set `data.on_bad_image: skip` in the config to skip such files (they are listed in the manifest)"


@dataclass
class DecodeResult:
    images: np.ndarray                      # uint8 (N, crop, crop, 3), input order; skipped rows are zeros
    status: list[str] = field(default_factory=list)   # 'ok' / 'skipped' per file
    reasons: list[str] = field(default_factory=list)  # '' when ok
    backend: str = ""


# ---------------------------------------------------------------------------------------------
# availability, and the probe of DALI's GPU decoder

def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_available() -> bool:
    """True when DALI sees a CUDA GPU (CPU-only torch builds would say no even where there is one)."""
    return gpu_reason() is None


def gpu_reason() -> str | None:
    if not dali_available():
        return "DALI (nvidia-dali-cuda130) is not installed"
    try:
        from nvidia.dali.backend import GetCUDADeviceCount
        count = GetCUDADeviceCount()
    except Exception as exc:  # no driver / libcuda
        return f"no CUDA GPU visible to DALI ({exc})"
    return None if count > 0 else "no CUDA GPU visible to DALI"


class GpuDecoderError(HalsalError):
    """DALI's GPU (``mixed``) decoder cannot run on this machine, whatever the files."""


def _probe_gpu_decoder(device_id: int = 0) -> None:
    """Decode one small in-memory JPEG with the GPU pipeline; raises what DALI raises.

    A GPU decoder that cannot run at all (driver too old for DALI's CUDA, nvJPEG missing) is
    caught here, on an image known to be good, before any file is decoded, so that backend
    ``auto`` can still choose DALI on the CPU; a device error after this point stops the job
    (:class:`DecoderFaultError`).
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "JPEG")
    data = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    pipe = dali_pipeline(lambda: [data], device="gpu", resize=32, crop=32, batch_size=1, num_threads=1,
                          device_id=device_id, prefetch=1, resampler="torch")
    (out,) = pipe.run()
    np.asarray(out.as_cpu()[0])
    del pipe


def check_gpu_decoder(device_id: int = 0) -> None:
    """Raise GpuDecoderError naming the cause where DALI's mixed decoder fails on a good JPEG."""
    try:
        _probe_gpu_decoder(device_id)
    except HalsalError:
        raise
    except Exception as exc:  # DALI raises RuntimeError; anything else is as fatal here
        raise GpuDecoderError(f"decode backend 'dali-gpu' cannot run: DALI's GPU (mixed) decoder failed on a "
                              f"test image ({dali_cause(exc)}); set data.decode_backend to 'auto' or "
                              f"'dali-cpu'") from exc


# ---------------------------------------------------------------------------------------------
# public API

def _check_sizes(resize: int, crop: int) -> None:
    if crop > resize:
        raise HalsalError(f"decode: crop {crop} is larger than resize {resize}; the crop must fit in the "
                          f"resized image (set data.resize >= the crop size)")


def _run(backend: str, files: Sequence, resize: int, crop: int, on_error: str, progress: bool,
         **kw) -> DecodeResult:
    from tqdm.auto import tqdm

    _check_sizes(resize, crop)
    files = [str(f) for f in files]
    n = len(files)
    out = np.zeros((n, crop, crop, 3), dtype=np.uint8)  # preallocated: memory stays at the output size
    status, reasons = ["ok"] * n, [""] * n

    def bad(row: int, reason: str) -> None:
        if on_error == "raise":
            raise HalsalError(f"cannot decode image {files[row]}: {reason}. Replace or remove the file, "
                              f"or {SKIP_HINT}")
        out[row] = 0
        status[row], reasons[row] = "skipped", reason

    rows = list(range(n))
    with tqdm(total=n, desc=f"decode ({backend})", unit="img", disable=not progress) as bar:
        if backend == "pil":
            for path, row in zip(files, rows):
                pil_into(path, out, row, resize, crop, bad)
                bar.update(1)
        elif backend == "torchvision":
            with _torch_threads(kw.get("num_threads")):
                torchvision_into(files, rows, out, resize, crop, bad, bar.update)
        elif backend in ("dali-cpu", "dali-gpu"):
            if not dali_available():
                raise HalsalError(f"decode backend {backend!r} needs DALI (pip install nvidia-dali-cuda130); "
                                  f"set data.decode_backend to 'auto' or 'torchvision'")
            gpu = backend == "dali-gpu"
            if gpu and (reason := gpu_reason()):
                raise HalsalError(f"decode backend 'dali-gpu' cannot run: {reason}; "
                                  f"use 'auto' or 'dali-cpu' where there is no GPU")
            if gpu:
                check_gpu_decoder(kw.get("device_id", 0))
            dali_into(files, rows, out, resize, crop, bad, bar.update, device="gpu" if gpu else "cpu",
                       batch_size=kw.get("batch_size", 64), num_threads=kw.get("num_threads"),
                       device_id=kw.get("device_id", 0) if gpu else None, resampler=kw.get("resampler", "torch"))
        else:
            raise HalsalError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return DecodeResult(images=out, status=status, reasons=reasons, backend=backend)


@contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` (the job's threads) for the block; None: unchanged."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_backend(backend: str = "auto") -> str:
    """'auto' -> 'dali-gpu' with a GPU, else 'dali-cpu' with DALI, else 'torchvision'."""
    if backend != "auto":
        return backend
    if gpu_available():
        return "dali-gpu"
    return "dali-cpu" if dali_available() else "torchvision"


def decode_images(files: Sequence, resize: int = _RESIZE, crop: int = _CROP,
                  backend: str = settings.default("data.decode_backend"),
                  on_error: str = settings.default("data.on_bad_image"), progress: bool = True, **kw) -> DecodeResult:
    """Decode ``files`` (one output row each, input order) with the bad-file policy ``on_error``.

    ``on_error='raise'``: the first bad file (truncated/corrupt, zero-byte, not an image) raises
    HalsalError naming it. ``'skip'``: its row stays zero and status/reasons say why.
    ``kw`` (batch_size, num_threads, device_id, resampler='torch'|'dali') go to the DALI paths;
    ``num_threads`` (the job's CPU threads; None: every core) also caps torch on the torchvision path.

    ``backend='auto'`` picks the GPU decoder where DALI sees a GPU; if that decoder then fails
    (see :func:`check_gpu_decoder`), it warns with the cause and decodes with DALI on the CPU.
    A device error during decoding (DecoderFaultError) is not caught here: it stops the job.
    """
    if on_error not in ("raise", "skip"):
        raise HalsalError(f"data.on_bad_image must be 'raise' or 'skip', not {on_error!r}")
    chosen = resolve_backend(backend)
    try:
        return _run(chosen, files, resize, crop, on_error, progress, **kw)
    except GpuDecoderError as exc:
        if backend != "auto":
            raise
        cause = dali_cause(exc.__cause__) if exc.__cause__ is not None else str(exc)
        warnings.warn(f"data.decode_backend 'auto': DALI's GPU (mixed) decoder does not work here ({cause}); "
                      f"decoding with DALI on the CPU instead (set data.decode_backend: dali-cpu to skip the "
                      f"GPU attempt)", RuntimeWarning, stacklevel=2)
        kw.pop("device_id", None)
        return _run("dali-cpu", files, resize, crop, on_error, progress, **kw)


def decode_pil(files: Sequence, resize: int = _RESIZE, crop: int = _CROP) -> np.ndarray:
    return _run("pil", files, resize, crop, "raise", False).images


def decode_torchvision(files: Sequence, resize: int = _RESIZE, crop: int = _CROP) -> np.ndarray:
    return _run("torchvision", files, resize, crop, "raise", False).images


def decode_dali_cpu(files: Sequence, resize: int = _RESIZE, crop: int = _CROP, batch_size: int = 64,
                    num_threads: int | None = None) -> np.ndarray:
    return _run("dali-cpu", files, resize, crop, "raise", False, batch_size=batch_size,
                num_threads=num_threads).images


def decode_dali_gpu(files: Sequence, resize: int = _RESIZE, crop: int = _CROP, batch_size: int = 64,
                    device_id: int = 0) -> np.ndarray:
    return _run("dali-gpu", files, resize, crop, "raise", False, batch_size=batch_size,
                device_id=device_id).images
