"""The CPU decode paths of :mod:`halsal.data.decode` and their bad-file reporting.

- the cheap check every path applies to encoded bytes before decoding them (:func:`sniff`), and
  the file read that names why a file cannot be read (:func:`read_bytes`);
- the reference path, PIL + torchvision's PIL transforms (:func:`pil_one`): it decodes a file or
  raises :class:`BadImage` with the reason written into the manifest, and is where every other
  path sends a file it cannot decode, so all paths agree on which files are bad;
- the torchvision path (``torchvision.io.decode_image``), used where DALI is missing.

The geometry (resize, centre crop) is the module doc of :mod:`halsal.data.decode`.
"""

from __future__ import annotations

import io
import warnings
from typing import Callable

import numpy as np

# ---------------------------------------------------------------------------------------------
# cheap validation, shared by every path

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"P1", b"P2",
          b"P3", b"P4", b"P5", b"P6")


def sniff(data: bytes | memoryview) -> str | None:
    """Classify encoded bytes: None = looks complete, 'zero' = empty, 'suspect' = let PIL decide.

    A JPEG without its end-of-image marker or a PNG without IEND is usually truncated; files of
    unknown format may still be images PIL can read. Suspects are decoded by the reference
    path, which either yields the image or names the problem, so every path agrees on which
    files are bad. Corrupt files that pass this check make their DALI batch fail; that batch
    is then redone file by file (see :func:`halsal.data.decode_dali.dali_into`).
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


def read_bytes(path) -> bytes | str:
    """The file's bytes, or the reason it cannot be read (missing, permissions)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or exc})"


# ---------------------------------------------------------------------------------------------
# reference path: PIL

def pil_one(path, resize: int, crop: int) -> np.ndarray:
    """Decode one file the reference way; raises BadImage with a reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    import torchvision.transforms.functional as TF

    data = read_bytes(path)
    if isinstance(data, str):
        raise BadImage(data)
    if not data:
        raise BadImage("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # grayscale, CMYK, palette, alpha -> RGB
    except UnidentifiedImageError:
        raise BadImage("not an image (no decoder recognises its contents)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"truncated or corrupt image data ({exc})") from None
    im = TF.resize(im, resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return np.asarray(TF.center_crop(im, crop), dtype=np.uint8)


class BadImage(Exception):
    """A file no path can decode; its message is the reason written into the manifest."""


def pil_into(path, out: np.ndarray, row: int, resize: int, crop: int, bad: Callable) -> None:
    try:
        out[row] = pil_one(path, resize, crop)
    except BadImage as exc:
        bad(row, str(exc))


# ---------------------------------------------------------------------------------------------
# torchvision path (no DALI)

def torch_resize_crop(img, resize: int, crop: int) -> np.ndarray:
    """CHW uint8 tensor -> HWC uint8 array, resized and centre-cropped like the reference."""
    import torchvision.transforms.v2.functional as F

    img = F.resize(img, [resize], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(img, [crop]).permute(1, 2, 0).numpy()


def torchvision_into(files, rows, out, resize, crop, bad, tick) -> None:
    import torch
    import torchvision.transforms.v2.functional as F
    from torchvision.io import ImageReadMode, decode_image

    for path, row in zip(files, rows):
        data = read_bytes(path)
        kind = data if isinstance(data, str) else sniff(data)
        if kind == "zero":
            bad(row, "zero-byte file")
        elif isinstance(data, str):
            bad(row, data)
        elif kind == "suspect":
            pil_into(path, out, row, resize, crop, bad)
        else:
            try:
                with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (-> torchcodec)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                       mode=ImageReadMode.RGB, apply_exif_orientation=True)
            except RuntimeError:
                pil_into(path, out, row, resize, crop, bad)  # PIL names the problem (or decodes it)
            else:
                if img.dtype != torch.uint8:  # 16-bit PNG
                    img = F.to_dtype(img, torch.uint8, scale=True)
                out[row] = torch_resize_crop(img, resize, crop)
        tick(1)
