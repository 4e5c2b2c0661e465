"""The DALI decode paths of :mod:`halsal.data.decode`: the pipeline (CPU operators, or the
``mixed`` GPU decoder) with torchvision's output size and crop offset, and the loop that feeds it
files batch by batch, sets suspect files aside for the reference decoder and redoes a batch DALI
fails on file by file (:func:`dali_into`).

A failed batch is either a bad file or a sick backend, and the two get different answers:

- an error that names the device (CUDA, out of memory, nvJPEG/nvImageCodec allocation or
  execution failures: :func:`_is_device_error`) stops the job with :class:`DecoderFaultError`;
- any other error redoes the batch file by file on the same backend. A file that fails alone is
  corrupt (or of a kind DALI does not read) and goes to the reference decoder, which decodes it or
  names the problem for the manifest. If every file of a batch of two or more fails alone although
  PIL reads some of them, the backend is at fault, and the job stops with DecoderFaultError too.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from halsal.data.decode_cpu import BadImage, pil_into, pil_one, read_bytes, sniff, torch_resize_crop
from halsal.errors import HalsalError


class DecoderFaultError(HalsalError):
    """The decode backend failed in a way no file explains (a device error, or every file of a
    batch failing alone): the job stops instead of listing good files as bad ones."""


def dali_pipeline(source, *, device: str, resize: int, crop: int, batch_size: int, num_threads: int,
                   device_id, prefetch: int, resampler: str):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import math as dmath

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  prefetch_queue_depth=prefetch, exec_dynamic=True,
                  enable_conditionals=True)
    def pipe():
        enc = fn.external_source(source=source, batch=True, dtype=types.UINT8, ndim=1, no_copy=True)
        # Output size and crop offset computed exactly as torchvision does (halsal.data.decode's doc);
        # peek_image_shape reads the header and applies EXIF orientation like the decoder.
        shape = fn.cast(fn.peek_image_shape(enc), dtype=types.FLOAT)
        h, w = shape[0], shape[1]
        short = dmath.min(h, w)
        new_h = dmath.floor(resize * h / short)
        new_w = dmath.floor(resize * w / short)
        if device == "gpu":  # GPU resampling is cheap: one graph for every image
            # The decoder is pinned so that one numeric path runs on every card (tests/test_gpu.py's
            # per-image bound against PIL). DALI 2.4's doc of fn.decoders.image
            # (docs.nvidia.com/deeplearning/dali/user-guide/docs/operations/nvidia.dali.fn.decoders.image.html):
            # - hw_decoder_load (default 0.65) is "the percentage of the image data to be processed by
            #   the HW JPEG decoder", used "if available" (A100, H100, H200); 0 leaves every JPEG to
            #   nvJPEG's CUDA decoder, since the hardware decoder's chroma upsampling is not
            #   libjpeg-turbo's (PIL's, and DALI's CPU decoder's);
            # - jpeg_fancy_upsampling=True: "Make the mixed backend use the same chroma upsampling
            #   approach as the cpu one" (libjpeg-turbo's fancy upsampling).
            # The cache is decoded once per dataset, so the hardware decoder's throughput is not
            # worth a second numeric path.
            img = fn.decoders.image(enc, device="mixed", output_type=types.RGB, hw_decoder_load=0.0,
                                    jpeg_fancy_upsampling=True)
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
            data = read_bytes(path)
            kind = data if isinstance(data, str) else sniff(data)  # str: cannot be read
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


def dali_into(files, rows, out, resize, crop, bad, tick, *, device, batch_size, num_threads, device_id,
               prefetch=2, resampler="torch") -> None:
    """Decode ``files`` into ``out[rows]`` with DALI; ``num_threads`` (the job's threads; None: every
    core this process may use) sizes DALI's pipeline and the pool that resamples full-size images."""
    explicit = num_threads is not None
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    backend = f"dali-{device}"
    feeder = _Feeder(files, rows, batch_size)
    pool = ThreadPoolExecutor(num_threads)
    torch_threads: list = []  # torch's thread count before it was set to 1, to restore at the end

    def handle_aside():
        while feeder.aside:
            path, row, kind = feeder.aside.pop(0)
            if kind == "suspect":
                pil_into(path, out, row, resize, crop, bad)
            else:
                bad(row, "zero-byte file" if kind == "zero" else kind)
            tick(1)

    def make(source, size, depth):
        return dali_pipeline(source, device=device, resize=resize, crop=crop, batch_size=size,
                              num_threads=num_threads, device_id=device_id, prefetch=depth, resampler=resampler)

    def store(brows, batch, flags):
        if device == "gpu":
            batch = batch.as_cpu()
        todo = [i for i, f in enumerate(flags[0]) if np.asarray(f)] if flags else []
        if todo:  # full-size images: torchvision resamples them, in threads (torch releases the GIL)
            import torch

            if explicit and not torch_threads:  # the pool is the parallelism: one torch thread per worker
                torch_threads.append(torch.get_num_threads())
                torch.set_num_threads(1)

            def finish(i):
                out[brows[i]] = torch_resize_crop(torch.from_numpy(np.asarray(batch[i])).permute(2, 0, 1),
                                                   resize, crop)
            list(pool.map(finish, todo))
            for i in set(range(len(brows))) - set(todo):
                out[brows[i]] = np.asarray(batch[i])
        elif brows[-1] - brows[0] == len(brows) - 1:  # contiguous rows (no file set aside): slice
            out[brows[0]: brows[-1] + 1] = np.asarray(batch.as_tensor())  # a view of DALI's buffer
        else:
            out[np.asarray(brows)] = np.asarray(batch.as_tensor())
        tick(len(brows))

    def redo(failed, exc):
        """A batch DALI failed on: stop on a device error, else decode its files one by one."""
        _stop_if_device_error(exc, backend, device_id, failed[0])
        paths, brows, arrays = failed
        alone = _Feeder([], [], 1)
        alone.replay = deque(([p], [r], [a]) for p, r, a in zip(paths, brows, arrays))
        failing = []

        def failed_alone(one, err):
            _stop_if_device_error(err, backend, device_id, one[0])
            failing.append((one[0][0], one[1][0]))

        _drain(alone, lambda: make(alone, 1, 1), store, failed_alone)
        if not failing:
            return
        if len(failing) == len(paths) > 1 and any(_pil_reads(path, resize, crop) for path, _ in failing):
            raise _fault(backend, device_id, paths, f"every file of the batch fails alone, yet PIL reads "
                                                    f"some of them ({dali_cause(exc)})") from exc
        warnings.warn(f"DALI failed on a batch of {len(paths)} files; decoded one by one on {backend}, "
                      f"{len(failing)} of them failed alone and are decoded with PIL instead ({dali_cause(exc)})",
                      RuntimeWarning, stacklevel=2)
        for path, row in failing:
            pil_into(path, out, row, resize, crop, bad)
            tick(1)

    try:
        _drain(feeder, lambda: make(feeder, batch_size, prefetch), store, redo, before=handle_aside)
        handle_aside()
    except RuntimeError as exc:  # no batch to blame (a pipeline built after a failure, an empty queue)
        if not isinstance(exc, HalsalError):
            _stop_if_device_error(exc, backend, device_id, None)
        raise
    finally:
        pool.shutdown()
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads[0])


def _drain(feeder, make, store, on_error, before=None) -> None:
    """Run a pipeline fed by ``feeder`` until the files run out, storing each batch. When DALI
    fails on a batch, ``on_error(batch, exc)`` handles it and a fresh pipeline goes on with the
    rest, since DALI's state after an operator error is undefined."""
    pipe = make()
    while True:
        if before:
            before()
        try:
            batch, *flags = pipe.run()
        except StopIteration:
            break
        except RuntimeError as exc:
            if isinstance(exc, HalsalError) or not feeder.inflight:
                raise
            failed = feeder.restart()
            del pipe
            on_error(failed, exc)
            pipe = make()
            continue
        _, brows, _ = feeder.inflight.popleft()
        store(brows, batch, flags)
    del pipe


# Errors of the device, not of a file: CUDA (runtime/driver API errors, cudaError*, CUDA_ERROR_*),
# memory (GPU or host) and nvJPEG/nvImageCodec's allocation, execution and architecture failures.
_DEVICE_ERROR = re.compile(r"\bcuda|out of memory|bad_alloc|(NVJPEG|NVIMGCODEC)_STATUS_(ALLOCATOR_FAILURE|"
                           r"EXECUTION_FAILED|ARCH_MISMATCH)", re.IGNORECASE)


def _is_device_error(exc: Exception) -> bool:
    """Whether a DALI error is about the device rather than a file. Only what DALI says after
    'encountered:' counts (before it, the traceback quotes the pipeline's source, device="mixed"
    included), less the bracketed source locations of DALI's own files."""
    text = str(exc)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1]
    return bool(_DEVICE_ERROR.search(re.sub(r"\[/[^\]]*\]", "", text)))


def _fault(backend, device_id, paths, what) -> DecoderFaultError:
    where = f"GPU {device_id}" if backend == "dali-gpu" else "the CPU"
    batch = f" while decoding a batch of {len(paths)} files (the first: {paths[0]})" if paths else ""
    remedy = ("set data.decode_backend: dali-cpu to decode on the CPU, or free the GPU (another process may "
              "hold its memory: nvidia-smi) and run again" if backend == "dali-gpu" else
              "set data.decode_backend: torchvision, or give the job more memory, and run again")
    return DecoderFaultError(f"decode backend '{backend}' failed on {where}{batch}: {what}. This is not a bad "
                             f"file, so nothing is skipped and no cache is written; {remedy}")


def _stop_if_device_error(exc, backend, device_id, paths) -> None:
    if _is_device_error(exc):
        raise _fault(backend, device_id, paths, f"a device error ({dali_cause(exc)})") from exc


def _pil_reads(path, resize, crop) -> bool:
    try:
        pil_one(path, resize, crop)
    except BadImage:
        return False
    return True


def dali_cause(exc: Exception) -> str:
    """The informative line of a DALI error (the one after 'encountered:')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        return lines[lines.index("encountered:") + 1]
    return lines[0] if lines else type(exc).__name__
