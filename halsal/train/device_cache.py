"""Training input at memory speed.

The prepared uint8 cache (``images.npy``, ``resize x resize`` centre squares) is loaded once
per run onto the training device. Every batch is cut from it there: a random
``input_size`` crop and horizontal flip for training, the centre crop for evaluation, then
ImageNet normalisation. No epoch decodes or reads a JPEG.
"""

from __future__ import annotations

import numpy as np
import torch

from halsal.errors import HalsalError
from halsal.models.weights import normalisation as weights_normalisation


# Evaluation batch size per device type. On the CPU a small batch keeps each layer's activations
# in cache: 16 images a batch are 1.5-1.7x faster per image than 128 (EfficientNet-Lite0 at 160 px,
# one thread; bench/bench_eval_batch.py, docs/benchmarks.md). A GPU wants large batches.
EVAL_BATCH = {"cpu": 16}


def eval_batch_size(device: torch.device) -> int:
    return EVAL_BATCH.get(torch.device(device).type, 128)


class DeviceImages:
    """A uint8 image cache ``(N, S, S, 3)`` on ``device`` and the batches cut from it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, input_size: int,
                 random_crop: bool = True, flip: bool = True, normalisation: tuple | None = None):
        """``normalisation``: ``(mean, std)`` per channel on [0, 1] pixels, the one the backbone's
        weights were trained with (:func:`halsal.models.weights.normalisation`); None: torchvision's
        ImageNet weights' (AlexNet's enum)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise HalsalError(f"image cache has shape {images.shape}; expected (N, S, S, 3)")
        if images.shape[1] < input_size or images.shape[2] < input_size:
            raise HalsalError(f"cached images are {images.shape[1]}x{images.shape[2]}, smaller than "
                              f"data.input_size={input_size}: set data.resize >= data.input_size and re-run prepare")
        self.device = device
        # NHWC uint8 -> NCHW uint8 once, chunk by chunk (one copy on the device); stays there for the run.
        self.images = upload(images, device, nchw=True)
        self.labels = torch.as_tensor(np.array(labels), dtype=torch.long, device=device)
        self.input_size = input_size
        self.random_crop = random_crop
        self.flip = flip
        mean, std = normalisation or weights_normalisation("alexnet")
        self.normalisation = (tuple(mean), tuple(std))
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.labels)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x.sub_(self.mean).div_(self.std)

    def _crop(self, idx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Per-sample crops (and flips) of the cached images, as uint8 (B, 3, S, S)."""
        if self.device.type == "cuda":
            return gather_crops(self.images, idx, oy, ox, flip, self.input_size)
        return sliced_crops(self.images, idx, oy, ox, flip, self.input_size)

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """Shuffled, augmented batches for one epoch (deterministic in ``generator``)."""
        n, size = len(self), self.images.shape[-1]
        order = torch.randperm(n, generator=generator)
        span = size - self.input_size + 1
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            b = len(idx)
            if self.random_crop:
                oy = torch.randint(span, (b,), generator=generator)
                ox = torch.randint(span, (b,), generator=generator)
            else:
                oy = ox = torch.full((b,), (size - self.input_size) // 2)
            flip = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
            idx, oy, ox, flip = self._to_device(idx, oy, ox, flip)
            yield self._normalise(self._crop(idx, oy, ox, flip)), self.labels[idx]

    def _to_device(self, idx, oy, ox, flip):
        """The batch's indices and offsets (drawn on the CPU, so the epoch is the same on every
        device) on the training device. On CUDA: one pinned, non-blocking copy, where four
        plain ``.to()`` calls would each wait for the GPU to finish the previous step."""
        if self.device.type != "cuda":
            return idx, oy, ox, flip
        packed = torch.stack((idx, oy, ox, flip.long())).pin_memory().to(self.device, non_blocking=True)
        return packed[0], packed[1], packed[2], packed[3].bool()

    def eval_batches(self, batch_size: int | None = None):
        """Centre crops in order (``batch_size`` None: :func:`eval_batch_size`)."""
        batch_size = batch_size or eval_batch_size(self.device)
        size = self.images.shape[-1]
        off = (size - self.input_size) // 2
        for start in range(0, len(self), batch_size):
            x = self.images[start:start + batch_size, :, off:off + self.input_size, off:off + self.input_size]
            yield self._normalise(x), self.labels[start:start + batch_size]


def gather_crops(images, idx, oy, ox, flip, s: int) -> torch.Tensor:
    """One gather kernel (used on the GPU): rows oy + i, columns ox + j, mirrored where flipped."""
    ar = torch.arange(s, device=images.device)
    cols = torch.where(flip[:, None], ox[:, None] + s - 1 - ar, ox[:, None] + ar)
    ys = (oy[:, None] + ar)[:, None, :, None]
    c = torch.arange(3, device=images.device)[None, :, None, None]
    return images[idx[:, None, None, None], c, ys, cols[:, None, None, :]]


def sliced_crops(images, idx, oy, ox, flip, s: int) -> torch.Tensor:
    """Slice copies (used on the CPU, where they are 4x faster than the gather)."""
    out = torch.empty((len(idx), 3, s, s), dtype=images.dtype, device=images.device)
    for i, (j, y, x, f) in enumerate(zip(idx.tolist(), oy.tolist(), ox.tolist(), flip.tolist())):
        crop = images[j, :, y:y + s, x:x + s]
        out[i] = crop.flip(-1) if f else crop
    return out


UPLOAD_CHUNK_BYTES = 1 << 28  # host -> device in pieces of at most 256 MiB


def upload(array: np.ndarray, device: torch.device, nchw: bool = False) -> torch.Tensor:
    """``array`` as one tensor on ``device`` with no second full copy there: the target is
    allocated once and filled chunk by chunk, each chunk permuted NHWC -> NCHW on its way when
    ``nchw``. (``.to(device).permute(...).contiguous()`` held the NHWC upload and the NCHW copy
    at once: twice the cache in GPU memory, 18 GB for the paper's 9.8 GB Step-1 source.) On
    the CPU an array that needs no permute is shared, not copied."""
    device = torch.device(device)
    if device.type == "cpu" and not nchw:
        return torch.from_numpy(np.ascontiguousarray(array))
    n = len(array)
    shape = (n, array.shape[3], array.shape[1], array.shape[2]) if nchw else tuple(array.shape)
    out = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, device=device)
    rows = max(1, UPLOAD_CHUNK_BYTES // max(1, array[0].nbytes)) if n else 1
    for start in range(0, n, rows):
        chunk = array[start:start + rows]
        if not (chunk.flags.writeable and chunk.flags.c_contiguous):  # a read-only memory map: copy the chunk
            chunk = np.array(chunk)
        src = torch.from_numpy(chunk)
        out[start:start + len(chunk)].copy_(src.permute(0, 3, 1, 2) if nchw else src)
    return out


def resolve_device(name: str = "auto", gpus: int | None = None) -> torch.device:
    """The training device; asking for a GPU that torch cannot use is an error naming the cause
    (:func:`halsal.gpu.resolve_device`), never a quiet CPU run."""
    from halsal.gpu import resolve_device as resolve

    return resolve(name, gpus)
