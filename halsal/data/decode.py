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
- :func:`decode_dali_gpu`: DALI ``mixed`` decoder (nvJPEG, hardware decoder where present).
  Before a dataset is decoded, one small JPEG goes through it: if that fails (old driver, no
  nvJPEG), backend ``auto`` falls back to DALI on the CPU with a warning naming the cause, and
  an explicit ``dali-gpu`` raises :class:`GpuDecoderError` (a HalsalError);
- :func:`decode_torchvision`: ``torchvision.io.decode_image``, used where DALI is missing.

:func:`decode_images` picks a path, and applies the bad-file policy (raise, or skip and
report). All paths share the same geometry: EXIF orientation applied, the resized size is
torchvision's (``long = int(resize * long / short)``), and the crop offset is torchvision's
``round((size - crop) / 2)`` (Python's round, half to even), so DALI matches the reference
to well under one grey level on average instead of sitting a pixel off.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from halsal.errors import HalsalError

BACKENDS = ("auto", "dali-gpu", "dali-cpu", "torchvision", "pil")
SKIP_HINT = "set `data.on_bad_image: skip` in the config to skip such files (they are listed in the manifest)"


@dataclass
class DecodeResult:
    images: np.ndarray                      # uint8 (N, crop, crop, 3), input order; skipped rows are zeros
    status: list[str] = field(default_factory=list)   # 'ok' / 'skipped' per file
    reasons: list[str] = field(default_factory=list)  # '' when ok
    backend: str = ""


# ---------------------------------------------------------------------------------------------
# availability

def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_available() -> bool:
    """True when DALI sees a CUDA GPU (CPU-only torch builds would say no even where there is one)."""
    return _gpu_reason() is None


def _gpu_reason() -> str | None:
    if not dali_available():
        return "DALI (nvidia-dali-cuda130) is not installed"
    try:
        from nvidia.dali.backend import GetCUDADeviceCount
        count = GetCUDADeviceCount()
    except Exception as exc:  # no driver / libcuda
        return f"no CUDA GPU visible to DALI ({exc})"
    return None if count > 0 else "no CUDA GPU visible to DALI"


# ---------------------------------------------------------------------------------------------
# cheap validation, shared by every path

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2",
          b"P3", b"P4", b"P5", b"P6")


def _sniff(data: bytes | memoryview) -> str | None:
    """Classify encoded bytes: None = looks complete, 'zero' = empty, 'suspect' = let PIL decide.

    A JPEG without its end-of-image marker or a PNG without IEND is usually truncated; files of
    unknown format may still be images PIL can read. Suspects are decoded by the reference
    path, which either yields the image or names the problem, so every path agrees on which
    files are bad. Corrupt files that pass this check make their DALI batch fail; that batch
    is then redone file by file (see :func:`_dali_into`).
    """
    if len(data) == 0:
        return "zero"
    head = bytes(data[:12])
    if head.startswith(b"\xff\xd8\xff"):
        return None if bytes(data[-2:]) == b"\xff\xd9" else "suspect"
    if head.startswith(b"\x89PNG"):
        return None if b"IEND" in bytes(data[-12:]) else "suspect"
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return "suspect"


def _read(path) -> bytes | str:
    """The file's bytes, or the reason it cannot be read (missing, permissions)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"


# ---------------------------------------------------------------------------------------------
# reference path: PIL

def _pil_one(path, resize: int, crop: int) -> np.ndarray:
    """Decode one file the reference way; raises _BadImage with a reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    import torchvision.transforms.functional as TF

    data = _read(path)
    if isinstance(data, str):
        raise _BadImage(data)
    if not data:
        raise _BadImage("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # grayscale, CMYK, palette, alpha -> RGB
    except UnidentifiedImageError:
        raise _BadImage("not an image (no decoder recognises its contents)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _BadImage(f"truncated or corrupt image data ({exc})") from None
    im = TF.resize(im, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return np.asarray(TF.center_crop(im, crop), dtype=np.uint8)


class _BadImage(Exception):
    """A file no path can decode; its message is the reason written into the manifest."""


class GpuDecoderError(HalsalError):
    """DALI's GPU (``mixed``) decoder cannot run on this machine, whatever the files."""


def _pil_into(path, out: np.ndarray, row: int, resize: int, crop: int, bad: Callable) -> None:
    try:
        out[row] = _pil_one(path, resize, crop)
    except _BadImage as exc:
        bad(row, str(exc))


# ---------------------------------------------------------------------------------------------
# torchvision path (no DALI)

def _torch_resize_crop(img, resize: int, crop: int) -> np.ndarray:
    """CHW uint8 tensor -> HWC uint8 array, resized and centre-cropped like the reference."""
    import torchvision.transforms.v2.functional as F

    img = F.resize(img, [resize], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(img, [crop]).permute(1, 2, 0).numpy()


def _torchvision_into(files, rows, out, resize, crop, bad, tick) -> None:
    import torch
    import torchvision.transforms.v2.functional as F
    from torchvision.io import ImageReadMode, decode_image

    for path, row in zip(files, rows):
        data = _read(path)
        kind = data if isinstance(data, str) else _sniff(data)
        if kind == "zero":
            bad(row, "zero-byte file")
        elif isinstance(data, str):
            bad(row, data)
        elif kind == "suspect":
            _pil_into(path, out, row, resize, crop, bad)
        else:
            try:
                with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (-> torchcodec)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                       mode=ImageReadMode.RGB, apply_exif_orientation=True)
            except RuntimeError:
                _pil_into(path, out, row, resize, crop, bad)  # PIL names the problem (or decodes it)
            else:
                if img.dtype != torch.uint8:  # 16-bit PNG
                    img = F.to_dtype(img, torch.uint8, scale=True)
                out[row] = _torch_resize_crop(img, resize, crop)
        tick(1)


# ---------------------------------------------------------------------------------------------
# DALI paths

def _dali_pipeline(source, *, device: str, resize: int, crop: int, batch_size: int, num_threads: int,
                   device_id, prefetch: int, resampler: str):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=prefetch, exec_dynamic=True,
                  enable_conditionals=True)
    def pipe():
        enc = fn.external_source(source=source, batch=True, dtype=types.UINT8, ndim=1, no_copy=True)
        # Output size and crop offset computed exactly as torchvision does (see module doc);
        # peek_image_shape reads the header and applies EXIF orientation like the decoder.
        shape = fn.cast(fn.peek_image_shape(enc), dtype=types.FLOAT)
        h, w = shape[0], shape[1]
        short = dmath.min(h, w)
        new_h = dmath.floor(resize * h / short)
        new_w = dmath.floor(resize * w / short)
        if device == "gpu":  # GPU resampling is cheap: one graph for every image
            img = fn.decoders.image(enc, device="mixed", output_type=types.RGB)
            return _resize_crop(img, h, w, new_h, new_w, crop)
        if short == resize:
            # Resizing to the size an image already has is the identity on every path (PIL and
            # torchvision return it unchanged), yet DALI's CPU resampler would still filter it at
            # ~3x the cost of the decode. Photos stored with the shorter side = resize (as in
            # ../shared/data) are instead decoded inside the crop window only (same pixels).
            out = fn.decoders.image_crop(enc, device="cpu", output_type=types.RGB, crop=(crop, crop),
                                         crop_pos_x=_crop_pos(w - crop), crop_pos_y=_crop_pos(h - crop),
                                         rounding="truncate")
        else:
            out = fn.decoders.image(enc, device="cpu", output_type=types.RGB)
            if resampler == "dali":
                out = _resize_crop(out, h, w, new_h, new_w, crop)
        # resampler 'torch': full-size images (flag True) are resized and cropped by the caller
        # with torchvision's kernel, which is ~6x faster than DALI's CPU resampler here
        return (out, short != resize) if resampler == "torch" else out

    p = pipe()
    p.build()
    return p


def _probe_gpu_decoder(device_id: int = 0) -> None:
    """Decode one small in-memory JPEG with the GPU pipeline; raises what DALI raises.

    A DALI error on a real batch is taken for a bad file (the batch is redone with PIL), so a
    GPU decoder that cannot run at all (driver too old for DALI's CUDA, nvJPEG missing) must be
    caught here, on an image known to be good, before any file is decoded.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "JPEG")
    data = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    pipe = _dali_pipeline(lambda: [data], device="gpu", resize=32, crop=32, batch_size=1, num_threads=1,
                          device_id=device_id, prefetch=1, resampler="torch")
    (out,) = pipe.run()
    np.asarray(out.as_cpu()[0])
    del pipe


def _check_gpu_decoder(device_id: int = 0) -> None:
    """Raise GpuDecoderError naming the cause where DALI's mixed decoder fails on a good JPEG."""
    try:
        _probe_gpu_decoder(device_id)
    except HalsalError:
        raise
    except Exception as exc:  # DALI raises RuntimeError; anything else is as fatal here
        raise GpuDecoderError(f"decode backend 'dali-gpu' cannot run: DALI's GPU (mixed) decoder failed on a "
                              f"test image ({_dali_cause(exc)}); set data.decode_backend to 'auto' or "
                              f"'dali-cpu'") from exc


def _resize_crop(img, h, w, new_h, new_w, crop):
    """Resize to (new_h, new_w) and cut torchvision's centre crop, resampling only the crop.

    The crop window is mapped back to the input (a region of interest) and only that is
    resampled, at the scale of the full resize, so output pixel centres are the same as
    resize-then-crop; only filter taps across the window's edge differ (<0.2 grey levels
    mean on photographs), and the resampler does ~40% less work.
    """
    from nvidia.dali import fn, types

    ay, ax = _crop_anchor(new_h - crop), _crop_anchor(new_w - crop)
    sy, sx = h / new_h, w / new_w
    return fn.resize(img, resize_x=float(crop), resize_y=float(crop), interp_type=types.INTERP_LINEAR, antialias=True,
                     roi_start=fn.stack(ay * sy, ax * sx), roi_end=fn.stack((ay + crop) * sy, (ax + crop) * sx))


def _crop_anchor(d):
    """torchvision's centre-crop offset round(d / 2), with Python's half-to-even rounding."""
    from nvidia.dali import math as dmath

    half = dmath.floor(d * 0.5)
    d_odd = d - 2 * half
    half_odd = half - 2 * dmath.floor(half * 0.5)
    return half + d_odd * half_odd  # .5 rounds to the even neighbour


def _crop_pos(d):
    """DALI crop_pos (fraction of the slack ``d``) whose truncated anchor is torchvision's.

    DALI with rounding='truncate': anchor = floor(pos * d); +0.25 px keeps floor() exact
    despite float error.
    """
    from nvidia.dali import math as dmath

    return (_crop_anchor(d) + 0.25) / dmath.max(d, 1.0)


class _Feeder:
    """external_source callback: reads files batch by batch, setting suspects aside for PIL.

    It runs inside DALI's run(), so it never raises or decodes itself: the main loop handles
    ``aside`` (this keeps a HalsalError from being wrapped in a DALI error).

    Batches handed to DALI but not yet returned stay in ``inflight`` so that, if DALI fails on
    one, the failed batch can be redone file by file and the rest replayed into a new pipeline.
    """

    def __init__(self, files, rows, batch_size):
        self.todo = deque(zip(files, rows))
        self.batch_size = batch_size
        self.inflight: deque = deque()
        self.replay: deque = deque()
        self.aside: list = []  # (path, row, kind) for the main thread: zero-byte or suspect files

    def __call__(self):
        if self.replay:
            batch = self.replay.popleft()
        else:
            batch = self._next_batch()
        if batch is None:
            raise StopIteration
        self.inflight.append(batch)
        return batch[2]

    def _next_batch(self):
        paths, rows, arrays = [], [], []
        while self.todo and len(rows) < self.batch_size:
            path, row = self.todo.popleft()
            data = _read(path)
            kind = data if isinstance(data, str) else _sniff(data)  # str: cannot be read
            if kind is None:
                paths.append(path), rows.append(row), arrays.append(np.frombuffer(data, dtype=np.uint8))
                continue
            self.aside.append((path, row, kind))
        return (paths, rows, arrays) if rows else None

    def restart(self) -> tuple:
        """After a DALI failure: return the failed batch; queue the other in-flight ones again."""
        failed = self.inflight.popleft()
        self.replay = deque(list(self.inflight) + list(self.replay))
        self.inflight.clear()
        return failed


def _dali_into(files, rows, out, resize, crop, bad, tick, *, device, batch_size, num_threads, device_id,
               prefetch=2, resampler="torch") -> None:
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    feeder = _Feeder(files, rows, batch_size)

    def handle_aside():
        while feeder.aside:
            path, row, kind = feeder.aside.pop(0)
            if kind == "suspect":
                _pil_into(path, out, row, resize, crop, bad)
            else:
                bad(row, "zero-byte file" if kind == "zero" else kind)
            tick(1)

    make = lambda: _dali_pipeline(feeder, device=device, resize=resize, crop=crop, batch_size=batch_size,  # noqa: E731
                                  num_threads=num_threads, device_id=device_id, prefetch=prefetch,
                                  resampler=resampler)
    pipe = make()
    pool = ThreadPoolExecutor(num_threads)
    while True:
        handle_aside()
        try:
            batch, *flags = pipe.run()
        except StopIteration:
            handle_aside()
            break
        except RuntimeError as exc:
            if isinstance(exc, HalsalError) or not feeder.inflight:
                raise
            # A file DALI cannot decode although it looked complete: redo that batch with the
            # reference decoder (which decodes the good files and names the bad one), then go on
            # with a fresh pipeline, since DALI's state after an operator error is undefined.
            paths, brows, _ = feeder.restart()
            del pipe
            warnings.warn(f"DALI failed on a batch of {len(paths)} files, which are decoded with PIL instead "
                          f"({_dali_cause(exc)})", RuntimeWarning, stacklevel=2)
            for path, row in zip(paths, brows):
                _pil_into(path, out, row, resize, crop, bad)
            tick(len(brows))
            pipe = make()
            continue
        _, brows, _ = feeder.inflight.popleft()
        if device == "gpu":
            batch = batch.as_cpu()
        todo = [i for i, f in enumerate(flags[0]) if np.asarray(f)] if flags else []
        if todo:  # full-size images: torchvision resamples them, in threads (torch releases the GIL)
            import torch

            def finish(i):
                out[brows[i]] = _torch_resize_crop(torch.from_numpy(np.asarray(batch[i])).permute(2, 0, 1),
                                                   resize, crop)
            list(pool.map(finish, todo))
            for i in set(range(len(brows))) - set(todo):
                out[brows[i]] = np.asarray(batch[i])
        elif brows[-1] - brows[0] == len(brows) - 1:  # contiguous rows (no file set aside): slice
            out[brows[0]: brows[-1] + 1] = np.asarray(batch.as_tensor())  # a view of DALI's buffer
        else:
            out[np.asarray(brows)] = np.asarray(batch.as_tensor())
        tick(len(brows))
    pool.shutdown()
    del pipe


def _dali_cause(exc: Exception) -> str:
    """The informative line of a DALI error (the one after 'encountered:')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        return lines[lines.index("encountered:") + 1]
    return lines[0] if lines else type(exc).__name__


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
                _pil_into(path, out, row, resize, crop, bad)
                bar.update(1)
        elif backend == "torchvision":
            _torchvision_into(files, rows, out, resize, crop, bad, bar.update)
        elif backend in ("dali-cpu", "dali-gpu"):
            if not dali_available():
                raise HalsalError(f"decode backend {backend!r} needs DALI (pip install nvidia-dali-cuda130); "
                                  f"set data.decode_backend to 'auto' or 'torchvision'")
            gpu = backend == "dali-gpu"
            if gpu and (reason := _gpu_reason()):
                raise HalsalError(f"decode backend 'dali-gpu' cannot run: {reason}; "
                                  f"use 'auto' or 'dali-cpu' where there is no GPU")
            if gpu:
                _check_gpu_decoder(kw.get("device_id", 0))
            _dali_into(files, rows, out, resize, crop, bad, bar.update, device="gpu" if gpu else "cpu",
                       batch_size=kw.get("batch_size", 64), num_threads=kw.get("num_threads"),
                       device_id=kw.get("device_id", 0) if gpu else None, resampler=kw.get("resampler", "torch"))
        else:
            raise HalsalError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return DecodeResult(images=out, status=status, reasons=reasons, backend=backend)


def resolve_backend(backend: str = "auto") -> str:
    """'auto' -> 'dali-gpu' with a GPU, else 'dali-cpu' with DALI, else 'torchvision'."""
    if backend != "auto":
        return backend
    if gpu_available():
        return "dali-gpu"
    return "dali-cpu" if dali_available() else "torchvision"


def decode_images(files: Sequence, resize: int = 256, crop: int = 227, backend: str = "auto",
                  on_error: str = "raise", progress: bool = True, **kw) -> DecodeResult:
    """Decode ``files`` (one output row each, input order) with the bad-file policy ``on_error``.

    ``on_error='raise'``: the first bad file (truncated/corrupt, zero-byte, not an image) raises
    HalsalError naming it. ``'skip'``: its row stays zero and status/reasons say why.
    ``kw`` (batch_size, num_threads, device_id, resampler='torch'|'dali') go to the DALI paths.

    ``backend='auto'`` picks the GPU decoder where DALI sees a GPU; if that decoder then fails
    (see :func:`_check_gpu_decoder`), it warns with the cause and decodes with DALI on the CPU.
    """
    if on_error not in ("raise", "skip"):
        raise HalsalError(f"data.on_bad_image must be 'raise' or 'skip', not {on_error!r}")
    chosen = resolve_backend(backend)
    try:
        return _run(chosen, files, resize, crop, on_error, progress, **kw)
    except GpuDecoderError as exc:
        if backend != "auto":
            raise
        cause = _dali_cause(exc.__cause__) if exc.__cause__ is not None else str(exc)
        warnings.warn(f"data.decode_backend 'auto': DALI's GPU (mixed) decoder does not work here ({cause}); "
                      f"decoding with DALI on the CPU instead (set data.decode_backend: dali-cpu to skip the "
                      f"GPU attempt)", RuntimeWarning, stacklevel=2)
        kw.pop("device_id", None)
        return _run("dali-cpu", files, resize, crop, on_error, progress, **kw)


def decode_pil(files: Sequence, resize: int = 256, crop: int = 227) -> np.ndarray:
    return _run("pil", files, resize, crop, "raise", False).images


def decode_torchvision(files: Sequence, resize: int = 256, crop: int = 227) -> np.ndarray:
    return _run("torchvision", files, resize, crop, "raise", False).images


def decode_dali_cpu(files: Sequence, resize: int = 256, crop: int = 227, batch_size: int = 64,
                    num_threads: int | None = None) -> np.ndarray:
    return _run("dali-cpu", files, resize, crop, "raise", False, batch_size=batch_size,
                num_threads=num_threads).images


def decode_dali_gpu(files: Sequence, resize: int = 256, crop: int = 227, batch_size: int = 64,
                    device_id: int = 0) -> np.ndarray:
    return _run("dali-gpu", files, resize, crop, "raise", False, batch_size=batch_size,
                device_id=device_id).images
