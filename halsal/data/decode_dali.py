"""The DALI decode paths of :mod:`halsal.data.decode`: the pipeline (CPU operators, or the
``mixed`` GPU decoder) with torchvision's output size and crop offset, and the loop that feeds it
files batch by batch, sets suspect files aside for the reference decoder and redoes a batch DALI
fails on file by file (:func:`_dali_into`).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from halsal.data.decode_cpu import _pil_into, _read, _sniff, _torch_resize_crop
from halsal.errors import HalsalError


def _dali_pipeline(source, *, device: str, resize: int, crop: int, batch_size: int, num_threads: int,
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
