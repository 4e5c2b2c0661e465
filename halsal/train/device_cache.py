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
from halsal.models import MEAN, STD


class DeviceImages:
    """A uint8 image cache ``(N, S, S, 3)`` on ``device`` and the batches cut from it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device, input_size: int,
                 random_crop: bool = True, flip: bool = True):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise HalsalError(f"image cache has shape {images.shape}; expected (N, S, S, 3)")
        if images.shape[1] < input_size or images.shape[2] < input_size:
            raise HalsalError(f"cached images are {images.shape[1]}x{images.shape[2]}, smaller than "
                              f"data.input_size={input_size}: set data.resize >= data.input_size and re-run prepare")
        self.device = device
        # NHWC uint8 -> NCHW uint8 once; stays on the device for the whole run.
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(np.array(labels), dtype=torch.long, device=device)
        self.input_size = input_size
        self.random_crop = random_crop
        self.flip = flip
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

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

    def eval_batches(self, batch_size: int = 128):
        """Centre crops in order."""
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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise HalsalError("train.device is 'cuda' but torch sees no CUDA GPU: set train.device to 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
