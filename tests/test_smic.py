"""SMIC: spectral residual maps, precomputed PNG maps matched by path, maps cropped with their
images, and the smic method end to end at the step level."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from halsal.data.prepare import prepare
from halsal.data.splits import make_split
from halsal.data.synthetic import generate
from halsal.errors import HalsalError
from halsal.io import write_tsv
from halsal.data.smic_maps import (SPECTRAL_RESIDUAL_LABEL, folder_maps, image_root, read_maps_info, smic_maps,
                                   source_of_label, spectral_residual, spectral_residual_maps)
from halsal.report.paper import smic_maps_kind
from halsal.train.inputs import DeviceImagesWithMaps
from halsal.train.loop import OptimConfig
from halsal.train.steps import _maps_source, backbone, finetune
from tests.conftest import assert_test_acc_is_predictions


def test_spectral_residual_finds_the_odd_patch():
    # A small bright square on a textured background (a perfectly flat one has exact zeros in
    # its spectrum, a degenerate case for the log amplitude that no photograph has).
    img = 0.5 + 0.05 * np.random.default_rng(0).standard_normal((1, 64, 64))
    img[0, 36:44, 12:20] += 0.5
    sal = spectral_residual(img)
    assert sal.shape == (1, 64, 64) and sal.min() == 0.0 and sal.max() == pytest.approx(1.0)
    y, x = np.unravel_index(sal[0].argmax(), sal[0].shape)
    assert 32 <= y <= 48 and 8 <= x <= 24
    assert sal[0, 36:44, 12:20].mean() > 3 * sal[0, :20, 40:].mean()


def test_spectral_residual_maps_of_a_cache():
    rng = np.random.default_rng(0)
    cache = rng.integers(60, 100, size=(3, 96, 96, 3), dtype=np.uint8)
    cache[1, 10:30, 60:80] = 255
    maps = spectral_residual_maps(cache, batch=2)
    assert maps.shape == (3, 96, 96) and maps.dtype == np.uint8 and maps.max() >= 250
    y, x = np.unravel_index(maps[1].argmax(), maps[1].shape)
    assert 0 <= y <= 40 and 50 <= x <= 90


def _images_with_maps(root, maps_root, size=(60, 40)):
    """Two classes, two images each; each map is white on its left half."""
    rows = []
    for label, cls in enumerate(["a_class", "b_class"]):
        for i in range(2):
            path = root / "images" / cls / f"img{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (label * 200, 50, 50)).save(path)
            rows.append({"path": str(path), "label": label, "class_name": cls, "official_split": ""})
            m = np.zeros(size[::-1], dtype=np.uint8)
            m[:, : size[0] // 2] = 255
            (maps_root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).resize((size[0] * 2, size[1] * 2)).save(maps_root / cls / f"img{i}.png")  # another size
    return pd.DataFrame(rows)


def test_folder_maps_match_by_relative_path_and_follow_the_image_geometry(tmp_path):
    index = _images_with_maps(tmp_path / "data", tmp_path / "maps")
    assert image_root(index["path"]) == tmp_path / "data" / "images"
    maps = folder_maps(index, tmp_path / "maps", size=20)
    assert maps.shape == (4, 20, 20) and maps.dtype == np.uint8
    # 60x40 image -> centre square x in [10, 50): the map's white half (x < 30) is its left half.
    assert maps[:, :, :8].min() > 240 and maps[:, :, 12:].max() < 15


def test_a_missing_map_is_an_error_naming_the_image(tmp_path):
    index = _images_with_maps(tmp_path / "data", tmp_path / "maps")
    (tmp_path / "maps" / "b_class" / "img1.png").unlink()
    with pytest.raises(HalsalError) as err:
        folder_maps(index, tmp_path / "maps", size=20)
    assert "b_class/img1.jpg" in str(err.value) and "b_class/img1.png" in str(err.value)
    # An image the prepare stage skipped needs no map; its row stays zero.
    maps = folder_maps(index, tmp_path / "maps", size=20, ok=np.array([True, True, True, False]))
    assert maps[3].max() == 0 and maps[0].max() == 255
    with pytest.raises(HalsalError, match="does not exist"):
        folder_maps(index, tmp_path / "nowhere", size=20)


def test_maps_json_says_its_source_as_a_value_not_as_prose(tmp_path):
    # A folder whose path holds the words of the spectral-residual label is still a folder source.
    folder = tmp_path / "spectral residual (Hou & Zhang 2007), computed from the prepared images"
    index = _images_with_maps(tmp_path / "data", folder)
    write_tsv(tmp_path / "index.tsv", index)
    prepare(tmp_path / "index.tsv", tmp_path / "prepared", resize=20, backend="pil", progress=False)
    info = smic_maps(tmp_path / "index.tsv", tmp_path / "prepared", tmp_path / "maps.npy", source="folder", folder=folder)
    written = json.loads((tmp_path / "maps.json").read_text())
    assert written == info and written["n"] == 4 and written["size"] == 20
    assert written["source"] == "folder" and written["folder"] == str(folder)
    assert written["label"] == f"precomputed maps from {folder}"  # the text metrics.json and the report show
    assert read_maps_info(tmp_path / "maps.npy") == written
    label = _maps_source(tmp_path / "maps.npy")  # metrics.json saliency_maps
    assert label == written["label"] and source_of_label(label) == "folder"
    runs = pd.DataFrame({"method": ["smic", "baseline"], "saliency_maps": [label, None]})
    assert smic_maps_kind(runs) == "folder"  # the paper's SMIC, compared
    assert smic_maps_kind(runs.assign(saliency_maps=[SPECTRAL_RESIDUAL_LABEL, None])) == "spectral_residual"
    # Text that is neither label names no source, whatever words it holds.
    assert source_of_label("maps made with spectral residual") is None and source_of_label(None) is None


def test_a_maps_json_from_before_the_structured_source_is_still_read(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"source": SPECTRAL_RESIDUAL_LABEL, "n": 3, "size": 8, "mean": 0.1}))
    info = read_maps_info(old)
    assert (info["source"], info["folder"], info["label"], info["n"]) == ("spectral_residual", None, SPECTRAL_RESIDUAL_LABEL, 3)
    old.write_text(json.dumps({"source": "precomputed maps from /data/spectral residual maps", "n": 3}))
    info = read_maps_info(old)
    assert (info["source"], info["folder"]) == ("folder", "/data/spectral residual maps")
    assert info["label"] == "precomputed maps from /data/spectral residual maps"
    old.write_text(json.dumps({"source": "something else", "n": 3}))
    with pytest.raises(HalsalError, match="does not say where its maps came from"):
        read_maps_info(old)
    with pytest.raises(HalsalError, match="re-run the smic_maps rule"):
        read_maps_info(tmp_path / "missing.npy")
    assert _maps_source(tmp_path / "missing.npy") == str(tmp_path / "missing.npy")


def test_maps_are_cropped_and_flipped_with_their_images():
    n, size = 6, 24
    xs = np.tile(np.arange(size, dtype=np.uint8) * 10, (n, size, 1))  # value = 10 * column
    images = np.repeat(xs[..., None], 3, axis=-1)
    data = DeviceImagesWithMaps(images, xs.copy(), np.zeros(n), torch.device("cpu"), 16)
    (MEAN, STD) = data.normalisation  # torchvision's ImageNet statistics (the default)
    assert MEAN == (0.485, 0.456, 0.406)

    for x, _ in data.train_batches(3, torch.Generator().manual_seed(0)):
        assert x.shape == (3, 4, 16, 16)
        red = x[:, 0] * STD[0] * 255 + MEAN[0] * 255
        torch.testing.assert_close(x[:, 3] * 255, red, atol=1e-3, rtol=0)
    x, _ = next(data.eval_batches())
    torch.testing.assert_close(x[:, 3] * 255, torch.arange(4, 20.0).mul(10).expand(n, 16, 16))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("smic")
    for name, task, seed in (("fine", "fine", 0), ("src", "coarse", 1)):
        index = generate(root / name, task=task, classes=3, images_per_class=11, image_size=80, seed=seed)
        write_tsv(root / name / "index.tsv", index)
        write_tsv(root / name / "seed0.tsv", make_split(index, 0, max_k=1)[0])
        prepare(root / name / "index.tsv", root / name / "prepared", resize=72, backend="pil", progress=False)
    backbone("alexnet", "scratch", root / "backbone.pt", source_prepared=root / "src" / "prepared",
             source_split=root / "src" / "seed0.tsv", cfg=OptimConfig(epochs=1, lr=0.01, batch_size=8),
             input_size=64, fc_width=64)
    return root


def test_smic_method_end_to_end(tiny, tmp_path):
    info = smic_maps(tiny / "fine" / "index.tsv", tiny / "fine" / "prepared", tmp_path / "maps.npy")
    assert info["n"] == 33 and info["size"] == 72 and info["source"] == "spectral_residual" and info["folder"] is None
    assert info["label"] == "spectral residual (Hou & Zhang 2007), computed from the prepared images"
    maps = np.load(tmp_path / "maps.npy")
    assert maps.shape == (33, 72, 72) and maps.dtype == np.uint8
    kw = dict(arch="alexnet", variant="d4-pool2-eq2", k=1, seed=0, dataset="fine", prepared=tiny / "fine" / "prepared",
              split_tsv=tiny / "fine" / "seed0.tsv", backbone_pt=tiny / "backbone.pt",
              cfg=OptimConfig(epochs=1, lr=0.01, batch_size=4), input_size=64)
    m = finetune(method="smic", maps=tmp_path / "maps.npy", out_dir=tmp_path / "run", **kw)
    assert m["method"] == "smic" and m["saliency_maps"] == info["label"]  # metrics.json: the label, as before
    assert_test_acc_is_predictions(tmp_path / "run", m)
    sal = np.load(tmp_path / "run" / "saliency.npz")
    # The explicit map at the fusion point (7x7 for 64 px), unchanged by training.
    assert sal["before"].shape == (15, 7, 7) and np.array_equal(sal["before"], sal["after"]) and sal["before"].max() > 0
    with pytest.raises(HalsalError, match="saliency maps"):
        finetune(method="smic", maps=None, out_dir=tmp_path / "no", **kw)
    np.save(tmp_path / "bad.npy", maps[:5])
    with pytest.raises(HalsalError, match="re-run the smic_maps rule"):
        finetune(method="smic", maps=tmp_path / "bad.npy", out_dir=tmp_path / "no", **kw)
    assert json.loads((tmp_path / "maps.json").read_text())["n"] == 33
