"""Datasets, synthetic generation and k-shot splits (Sec. 4.1)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from halsal.data.datasets import index_folder
from halsal.data.splits import make_split, relabel, select
from halsal.data.synthetic import class_names, generate, render
from halsal.errors import HalsalError
from tests.conftest import shared_dataset


def _index(counts):
    rows = [{"path": f"/x/c{c}/{i}.jpg", "label": c, "class_name": f"c{c}", "official_split": ""}
            for c, n in enumerate(counts) for i in range(n)]
    return pd.DataFrame(rows)


def test_synthetic_generator_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", task="fine", classes=3, images_per_class=4, image_size=64, seed=7)
    b = generate(tmp_path / "b", task="fine", classes=3, images_per_class=4, image_size=64, seed=7)
    assert len(a) == 12 and list(a["label"]) == [0] * 4 + [1] * 4 + [2] * 4
    for pa, pb in zip(a["path"], b["path"]):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    # A different seed gives different images; each image is independent of the others.
    assert not np.array_equal(np.asarray(render("fine", 0, 0, 7, 64)), np.asarray(render("fine", 0, 0, 8, 64)))
    # An image depends only on (task, label, index, seed, size), not on what else was generated.
    assert np.array_equal(np.asarray(render("fine", 2, 3, 7, 64)), np.asarray(render("fine", 2, 3, 7, 64)))
    assert (tmp_path / "a" / "classes.tsv").read_text() == (tmp_path / "b" / "classes.tsv").read_text()


def test_synthetic_class_names():
    names = class_names("fine", 10)
    assert names[:3] == ["red_crown", "red_wing", "red_belly"] and len(set(names)) == 10
    assert class_names("coarse", 3) == ["circle", "square", "triangle"]
    assert render("coarse", 1, 0, 0, 96).size == (96, 96)
    with pytest.raises(ValueError):
        class_names("fine", 31)


def test_split_roles_counts_and_nesting():
    index = _index([20, 15, 30])
    split, notes = make_split(index, seed=3, max_k=5)
    assert notes == []
    per = split.groupby(["label", "role"]).size().unstack()
    assert (per["val"] == 5).all() and (per["test"] == 5).all()
    assert list(per["train"]) == [10, 5, 20]
    k1 = set(select(split, "train", 1)["row"])
    k3 = set(select(split, "train", 3)["row"])
    kK = set(select(split, "train", "K")["row"])
    assert k1 < k3 < kK and len(k3) == 9
    # val/test never overlap train, and do not depend on k
    assert not (set(select(split, "val")["row"]) | set(select(split, "test")["row"])) & kK


def test_split_is_deterministic_per_seed():
    index = _index([25, 25])
    a, _ = make_split(index, seed=0, max_k=10)
    b, _ = make_split(index, seed=0, max_k=10)
    c, _ = make_split(index, seed=1, max_k=10)
    pd.testing.assert_frame_equal(a, b)
    assert not a["row"].equals(c["row"])


def test_too_few_images_is_an_error_naming_the_class():
    index = _index([20, 12])
    with pytest.raises(HalsalError, match=r"class 'c1' \(label 1\) has 12 images, but k=5 needs 5 train \+ 5 val \+ 5 test = 15"):
        make_split(index, seed=0, max_k=5)


def test_too_few_images_drop_class_policy_is_reported():
    index = _index([20, 12, 18])
    split, notes = make_split(index, seed=0, max_k=5, too_few="drop_class")
    assert sorted(split["label"].unique()) == [0, 2]
    assert len(notes) == 1 and "'c1'" in notes[0] and "dropped" in notes[0]
    relabelled, names = relabel(split)
    assert sorted(relabelled["label"].unique()) == [0, 1] and names == ["c0", "c2"]


def test_index_folder_on_real_photographs():
    root = shared_dataset("flowers102-tiny")
    index = index_folder(root)
    assert len(index) == 120 and index["label"].nunique() == 10
    assert index["class_name"].iloc[0] == "tiger lily"
    assert set(index["official_split"]) <= {"train", "val", "test"}


def test_index_folder_errors(tmp_path):
    with pytest.raises(HalsalError, match="does not exist"):
        index_folder(tmp_path / "nope")
    (tmp_path / "images" / "only").mkdir(parents=True)
    with pytest.raises(HalsalError, match="at least 2"):
        index_folder(tmp_path)
