"""The explicit saliency maps of the SMIC row of the paper (Flores et al. 2019): data preparation.

SMIC modulates the RGB features with a saliency map made by a separate saliency method. Two
sources of maps, both written as one uint8 array ``(N, S, S)`` aligned with the rows of
``index.tsv`` and with the prepared image cache (``S`` = its side, same centre square), so
the map is cropped and flipped together with its image during training:

- :func:`spectral_residual_maps`: Hou & Zhang (CVPR 2007), a classical unsupervised method
  computed from the prepared cache itself, so the row runs offline;
- :func:`folder_maps`: a folder of precomputed grayscale PNGs, one per image, matched by the
  image's path relative to the dataset's image root (``<class>/<file>.png``). A missing map
  is an error naming the image, never a silent zero map.

:func:`smic_maps` writes a dataset's maps file (``halsal smic-maps``) and ``maps.json`` beside it,
whose ``source`` says where the maps came from as a value (``spectral_residual`` | ``folder``,
:data:`MAP_SOURCES`), with the ``folder`` and a human ``label`` (:func:`source_label`; the text
metrics.json carries as ``saliency_maps``); :func:`read_maps_info` reads that JSON back (also one
written before the structured source), :func:`source_of_label` maps a label back to its source;
:func:`load_maps` reads the maps back, checked against the image cache. The value ``v`` of a map is used as ``s = v / 255``
in the modulation (Eq. 2: ``l * (s+1)``); the model side is :class:`halsal.models.smic.MapInput`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from halsal.data.manifest import images_path, ok_rows, open_images, read_prepared_manifest
from halsal.errors import HalsalError
from halsal.io import save_npy, write_json

SR_WIDTH = 64  # Hou & Zhang compute the spectrum of the image resized to 64 px wide
SR_AVG = 3  # the 3x3 mean filter h_n of the log amplitude
SR_SIGMA = 2.5  # Gaussian blur of the map (their released code: fspecial('gaussian', [10 10], 2.5))

# Where a dataset's SMIC maps come from (config smic.source, maps.json "source"), and the human
# label of each (maps.json "label", metrics.json "saliency_maps", the report's wording).
MAP_SOURCES = ("spectral_residual", "folder")
SPECTRAL_RESIDUAL_LABEL = "spectral residual (Hou & Zhang 2007), computed from the prepared images"
FOLDER_LABEL_PREFIX = "precomputed maps from "


def source_label(source: str, folder=None) -> str:
    """The human label of a map source (maps.json ``label``; metrics.json ``saliency_maps``)."""
    if source == "spectral_residual":
        return SPECTRAL_RESIDUAL_LABEL
    if source == "folder":
        return f"{FOLDER_LABEL_PREFIX}{folder}"
    raise HalsalError(f"unknown SMIC map source {source!r}; choose {' or '.join(MAP_SOURCES)}")


def source_of_label(label) -> str | None:
    """The map source a label of :func:`source_label` names ("spectral_residual" | "folder"), or
    None for any other text. The exact inverse of :func:`source_label` (the whole spectral-residual
    label, the folder label's prefix), never a word search: a folder whose path says "spectral
    residual" is a folder."""
    if not isinstance(label, str):
        return None
    if label == SPECTRAL_RESIDUAL_LABEL:
        return "spectral_residual"
    if label.startswith(FOLDER_LABEL_PREFIX):
        return "folder"
    return None


def read_maps_info(path) -> dict:
    """The JSON beside a maps file (``maps.json``, or ``path`` itself when it ends in .json) with a
    structured ``source`` (one of :data:`MAP_SOURCES`), ``folder`` (None unless a folder) and
    ``label``. A maps.json from before the structured source (``source`` was the label) is read
    the same; one whose source is neither is an error naming the file."""
    path = Path(path)
    info_path = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise HalsalError(f"cannot read the SMIC maps info {info_path}: {exc}; re-run the smic_maps rule") from exc
    source = info.get("source") if isinstance(info, dict) else None
    if source in MAP_SOURCES:
        folder = info.get("folder")
        return {**info, "folder": folder, "label": info.get("label") or source_label(source, folder)}
    kind = source_of_label(source)  # an older maps.json: the label in "source"
    if kind is None:
        raise HalsalError(f"{info_path} does not say where its maps came from (source {source!r}, not one of "
                          f"{', '.join(MAP_SOURCES)}): delete it and re-run the smic_maps rule")
    folder = source[len(FOLDER_LABEL_PREFIX):] if kind == "folder" else None
    return {**info, "source": kind, "folder": folder, "label": source}


def spectral_residual(gray: np.ndarray) -> np.ndarray:
    """Spectral residual saliency of ``(N, h, w)`` grayscale images; maps in [0, 1], same size.

    A(f) = log |F(I)|, P(f) = angle F(I), R(f) = A(f) - h_3 * A(f),
    S = g * |F^-1[exp(R(f) + i P(f))]|^2, then min-max normalised per image (mat2gray).
    """
    from scipy import ndimage

    spectrum = np.fft.fft2(gray.astype(np.float64), axes=(-2, -1))
    log_amp = np.log(np.abs(spectrum) + 1e-12)
    residual = log_amp - ndimage.uniform_filter(log_amp, size=(1, SR_AVG, SR_AVG), mode="nearest")
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)), axes=(-2, -1))) ** 2
    sal = ndimage.gaussian_filter(sal, sigma=(0, SR_SIGMA, SR_SIGMA), mode="constant", truncate=2.0)
    lo = sal.min(axis=(-2, -1), keepdims=True)
    hi = sal.max(axis=(-2, -1), keepdims=True)
    return ((sal - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def spectral_residual_maps(images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 maps ``(N, S, S)`` for a uint8 image cache ``(N, S, S, 3)`` (may be memory-mapped)."""
    import torch
    import torch.nn.functional as F

    n, h, w = images.shape[:3]
    out = np.zeros((n, h, w), dtype=np.uint8)
    small = (max(1, round(h * SR_WIDTH / w)), SR_WIDTH)
    for start in range(0, n, batch):
        x = torch.from_numpy(np.array(images[start:start + batch])).float().div_(255)  # a copy: mmap is read-only
        gray = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1)[:, None]  # rgb2gray weights
        gray = F.interpolate(gray, size=small, mode="bilinear", antialias=True, align_corners=False)
        sal = torch.from_numpy(spectral_residual(gray[:, 0].numpy()))[:, None]
        sal = F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
        out[start:start + batch] = (sal[:, 0] * 255).round().to(torch.uint8).numpy()
    return out


def image_root(paths) -> Path:
    """The folder the maps' relative paths start from: the images' deepest common folder."""
    paths = [str(p) for p in paths]
    common = Path(os.path.commonpath(paths))
    return common.parent if len(paths) == 1 else common


def map_path(folder: Path, rel: Path) -> Path | None:
    """The PNG for an image at ``rel``: ``<rel without suffix>.png`` or ``<rel>.png``."""
    for cand in (folder / rel.with_suffix(".png"), folder / (str(rel) + ".png")):
        if cand.is_file():
            return cand
    return None


def folder_maps(index: pd.DataFrame, folder: str | Path, size: int, ok: np.ndarray | None = None) -> np.ndarray:
    """uint8 maps ``(N, size, size)`` from one grayscale PNG per image of ``index``.

    Each map gets the geometry the prepare stage gives its image (resized to the image's size
    if it differs, centre square, resized to ``size``). Rows where ``ok`` is False (images the
    prepare stage skipped) need no map and stay zero; they never reach training.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise HalsalError(f"SMIC map folder {folder} does not exist: set `smic.folders` to a folder of grayscale "
                          "PNGs laid out like the images (<class>/<file>.png), or use `smic.source: spectral_residual`")
    root = image_root(index["path"])
    ok = np.ones(len(index), dtype=bool) if ok is None else ok
    rels = [Path(p).relative_to(root) for p in index["path"]]
    found = [map_path(folder, rel) if good else None for rel, good in zip(rels, ok)]
    missing = [(p, folder / rel.with_suffix(".png")) for p, rel, f, good in zip(index["path"], rels, found, ok)
               if good and f is None]
    if missing:
        listed = "; ".join(f"{img} (expected {m})" for img, m in missing[:5])
        raise HalsalError(f"{len(missing)} image(s) have no SMIC saliency map in {folder}: {listed}"
                          f"{' ...' if len(missing) > 5 else ''}. Add one grayscale PNG per image, "
                          "or use `smic.source: spectral_residual`")
    out = np.zeros((len(index), size, size), dtype=np.uint8)
    for i, (img_path, path) in enumerate(zip(index["path"], found)):
        if path is None:
            continue
        try:
            with Image.open(path) as im:
                m = im.convert("L")
            with Image.open(img_path) as im:
                img_size = im.size  # header only
        except OSError as exc:
            raise HalsalError(f"cannot read the SMIC map {path} of {img_path}: {exc}") from exc
        if m.size != img_size:
            m = m.resize(img_size, Image.BILINEAR)
        w, h = m.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        m = m.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(m, dtype=np.uint8)
    return out


def load_maps(path: str | Path, n_rows: int, size: int) -> np.ndarray:
    """The maps file of a dataset (memory-mapped), checked against its image cache."""
    path = Path(path)
    if not path.is_file():
        raise HalsalError(f"SMIC saliency maps {path} are missing: run the smic_maps rule for this dataset")
    maps = np.load(path, mmap_mode="r", allow_pickle=False)
    if maps.dtype != np.uint8 or maps.shape != (n_rows, size, size):
        raise HalsalError(f"{path} holds {maps.dtype} {maps.shape}, not uint8 ({n_rows}, {size}, {size}) like the "
                          "image cache: delete it and re-run the smic_maps rule")
    return maps


def smic_maps(index_tsv, prepared, out, *, source: str = "spectral_residual", folder=None) -> dict:
    """The SMIC maps of a dataset: uint8 ``(N, S, S)`` aligned with index.tsv and the image cache,
    from the spectral residual of the cached images or from a folder of PNGs; a JSON beside."""
    from halsal.data.datasets import read_index

    prepared = Path(prepared)
    images, images_file = open_images(prepared), images_path(prepared)
    index = read_index(index_tsv)
    if len(index) != images.shape[0]:
        raise HalsalError(f"{index_tsv} has {len(index)} rows but {images_file} {images.shape[0]}: re-run prepare")
    if source == "spectral_residual":
        maps = spectral_residual_maps(images)
        folder = None
    elif source == "folder":
        if not folder:
            raise HalsalError("smic.source is 'folder' but no folder was given for this dataset: set smic.folders.<dataset>")
        ok = None
        man = read_prepared_manifest(prepared)
        if man is not None:  # images the prepare stage skipped need no map
            ok = ok_rows(man, range(len(index)))
        maps = folder_maps(index, folder, images.shape[1], ok)
        folder = str(folder)
    else:
        raise HalsalError(f"unknown SMIC map source {source!r}; choose {' or '.join(MAP_SOURCES)}")
    out = Path(out)
    save_npy(out, maps)
    info = {"source": source, "folder": folder, "label": source_label(source, folder), "n": int(maps.shape[0]),
            "size": int(maps.shape[1]), "mean": float(maps.mean() / 255)}
    write_json(out.with_suffix(".json"), info)
    return info
