"""Saliency health: the statistics, the object boxes through the pixel geometry, and the
`saliency` object of every run with a map (issue: the map dies and nothing says so)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from halsal.data.boxes import box_to_cache, crop_boxes
from halsal.data.datasets import index_folder, read_index
from halsal.data.prepare import prepare
from halsal.data.synthetic import render, render_with_box
from halsal.io import torch_load, torch_save, write_tsv
from halsal.train.health import box_weights, saliency_stats
from halsal.train.loop import OptimConfig
from halsal.train.steps import finetune


def test_stats_of_dead_flat_and_object_maps():
    dead = np.zeros((2, 4, 4))
    flat = np.full((1, 4, 4), 0.5)
    obj = np.zeros((1, 4, 4))
    obj[0, :2, :2] = 1.0  # all mass in the top-left quarter
    s = saliency_stats(np.concatenate([dead, flat, obj]))
    assert s["n"] == 4 and s["dead_fraction"] == 0.5
    assert s["mean"] == pytest.approx((0 + 0 + 0.5 + 0.25) / 4)
    # spatial CV: dead and flat maps 0; the quarter map std/mean = sqrt(3)
    assert s["spatial_cv"] == pytest.approx(np.sqrt(3) / 4)
    assert s["object_ratio"] is None and s["n_boxes"] == 0
    # The object is the top-left quarter of a 64 px input: on it, ratio 1/0.25 = 4; a flat map 1.
    w = box_weights([[0, 0, 32, 32]] * 2, 64, (4, 4))
    assert w[0].sum() == 4 and w[0][:2, :2].min() == 1
    assert saliency_stats(np.concatenate([obj, flat]), w)["object_ratio"] == pytest.approx((4 + 1) / 2)
    # Dead maps and images without a box do not count.
    w2 = box_weights([[0, 0, 32, 32], [np.nan] * 4, [0, 0, 32, 32]], 64, (4, 4))
    s2 = saliency_stats(np.concatenate([obj, flat, dead[:1]]), w2)
    assert s2["object_ratio"] == pytest.approx(4) and s2["n_boxes"] == 2
    assert saliency_stats(dead, box_weights([[0, 0, 32, 32]] * 2, 64, (4, 4)))["object_ratio"] is None


def test_box_weights_cover_partial_cells():
    w = box_weights([[8, 0, 24, 16]], 32, (2, 2))  # cells are 16 px: half of cell (0,0) and of (0,1)
    np.testing.assert_allclose(w[0], [[0.5, 0.5], [0, 0]])


def test_box_follows_the_resize_and_crop_of_the_pixels(tmp_path):
    """A red rectangle drawn at a known box in a 160x100 photo lands where its mapped box says,
    in the cache (shorter side 50, centre square) and in the 40 px evaluation crop."""
    img = Image.new("RGB", (160, 100), (0, 90, 0))
    x, y, w, h = 70, 20, 40, 50
    img.paste((255, 0, 0), (x, y, x + w, y + h))
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        img.save(tmp_path / "images" / cls / "one.png")
    write_tsv(tmp_path / "images.tsv", pd.DataFrame({"path": ["images/a/one.png", "images/b/one.png"],
                                                     "bbox_x": [x, np.nan], "bbox_y": [y, np.nan],
                                                     "bbox_w": [w, np.nan], "bbox_h": [h, np.nan]}))
    index = index_folder(tmp_path)
    assert index["bbox_x"].tolist()[0] == x and np.isnan(index["bbox_x"].tolist()[1])
    write_tsv(tmp_path / "index.tsv", index)
    assert read_index(tmp_path / "index.tsv")["bbox_w"].dtype.kind == "f"
    prepare(tmp_path / "index.tsv", tmp_path / "prep", resize=50, backend="pil", progress=False)
    man = pd.read_csv(tmp_path / "prep" / "manifest.tsv", sep="\t")
    box = man.loc[0, ["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(float)
    assert np.isnan(man.loc[1, "box_x0"])
    # 160x100 -> 80x50, centre 50 square starts at x=15: x 70..110 -> 35..55 -> 20..40; y 20..70 -> 10..35
    np.testing.assert_allclose(box, [20, 10, 40, 35])
    red = np.load(tmp_path / "prep" / "images.npy")[0][..., 0] > 128
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    # the 40 px centre crop of the 50 px cache is offset by 5
    np.testing.assert_allclose(crop_boxes(box[None], 50, 40)[0], [15, 5, 35, 30])
    assert np.isnan(box_to_cache((0, 0, 10, 10), 160, 100, 50)).all()  # outside the centre square


def test_synthetic_images_carry_their_object_box():
    for task, label in (("fine", 7), ("coarse", 2)):
        img, (x, y, w, h) = render_with_box(task, label, 3, 0, 80)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(render(task, label, 3, 0, 80)))
        assert 0 <= x and 0 <= y and x + w <= 80 and y + h <= 80 and w * h >= 0.1 * 80 * 80
        assert w * h <= 0.8 * 80 * 80  # the object, not the whole image


def test_every_run_with_a_map_reports_its_health(tiny, tmp_path):
    cfg = OptimConfig(epochs=2, lr=0.01, batch_size=4, checkpoint_seconds=0)
    common = dict(arch="alexnet", variant="d4-pool2-eq2", k=2, seed=0, dataset="fine",
                  prepared=tiny / "fine" / "prepared", split_tsv=tiny / "fine" / "seed0.tsv",
                  backbone_pt=tiny / "backbone.pt", cfg=cfg, input_size=64)
    m = finetune(method="approach_a", saliency_pt=tiny / "sal.pt", out_dir=tmp_path / "a", **common)
    sal = m["saliency"]
    assert set(sal) == {"before", "val", "test"}
    assert sal["test"]["n"] == 15 and sal["val"]["n"] == 15 and sal["test"]["n_boxes"] == 15
    # Approach A's branch is frozen: the map at the selected epoch is the map before fine-tuning.
    assert sal["test"] == sal["before"]
    npz = np.load(tmp_path / "a" / "saliency.npz")
    assert sal["test"]["mean"] == pytest.approx(float(npz["after"].astype(np.float64).mean()), rel=1e-2)
    assert npz["boxes"].shape == (15, 4) and np.isfinite(npz["boxes"]).all()
    hist = pd.read_csv(tmp_path / "a" / "history.tsv", sep="\t")
    assert {"val_dead_fraction", "val_saliency_mean"} <= set(hist.columns)
    base = finetune(method="baseline", out_dir=tmp_path / "b", **common)
    assert "saliency" not in base
    assert "val_dead_fraction" not in pd.read_csv(tmp_path / "b" / "history.tsv", sep="\t")
    step1 = json.loads((tiny / "sal.json").read_text())["saliency"]
    assert set(step1) == {"before", "val", "test"} and step1["test"]["n_boxes"] == step1["test"]["n"] > 0


def test_a_killed_map_is_reported_dead(tiny, tmp_path, capfd):
    """The score's bias forced very negative: the ReLU passes zero everywhere, and both
    metrics.json and the log say that the run is Baseline-RGB at test time."""
    sal = torch_load(tiny / "sal.pt")
    sal["saliency_branch.score.bias"] = torch.full_like(sal["saliency_branch.score.bias"], -1e4)
    torch_save(tmp_path / "killed.pt", sal)
    m = finetune(arch="alexnet", method="approach_a", variant="d4-pool2-eq2", k=2, seed=0, dataset="fine",
                 prepared=tiny / "fine" / "prepared", split_tsv=tiny / "fine" / "seed0.tsv",
                 backbone_pt=tiny / "backbone.pt", saliency_pt=tmp_path / "killed.pt", out_dir=tmp_path / "run",
                 cfg=OptimConfig(epochs=1, lr=0.01, batch_size=4, checkpoint_seconds=0), input_size=64)
    for part in ("before", "val", "test"):
        assert m["saliency"][part]["dead_fraction"] == 1.0 and m["saliency"][part]["mean"] == 0.0
        assert m["saliency"][part]["object_ratio"] is None
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["saliency"]["test"]["dead_fraction"] == 1.0
    assert "Baseline-RGB there" in capfd.readouterr().err
    assert pd.read_csv(tmp_path / "run" / "history.tsv", sep="\t")["val_dead_fraction"].tolist() == [1.0]


def test_the_demo_settings_keep_approach_b_alive(tiny, tmp_path):
    """Approach B fine-tuned with the default demo's Step-2 optimizer settings (config/config.yaml,
    saliency_lr included) on a small config: its map is alive at the selected epoch."""
    import yaml

    from halsal.train.loop import OptimConfig as Cfg

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    ft = demo["train"]["finetune"]
    assert ft["saliency_lr"] and ft["saliency_lr"] < ft["lr"]  # the lever of docs/decisions.md
    cfg = Cfg.from_dict({**ft, "epochs": 3, "batch_size": 4, "checkpoint_seconds": 0})
    m = finetune(arch="alexnet", method="approach_b", variant="d4-pool2-eq2", k=2, seed=0, dataset="fine",
                 prepared=tiny / "fine" / "prepared", split_tsv=tiny / "fine" / "seed0.tsv",
                 backbone_pt=tiny / "backbone.pt", saliency_pt=tiny / "sal.pt", out_dir=tmp_path, cfg=cfg,
                 input_size=64)
    assert m["config"]["saliency_lr"] == ft["saliency_lr"]
    assert m["saliency"]["test"]["dead_fraction"] < 0.5 and m["saliency"]["val"]["dead_fraction"] < 0.5
    assert m["saliency"]["test"]["mean"] > 0
