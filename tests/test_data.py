"""Datasets, synthetic generation and k-shot splits (Sec. 4.1)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from halsal.data.boxes import BOX_COLUMNS
from halsal.data.datasets import index_folder
from halsal.data.splits import make_split, relabel, select
from halsal.data.synthetic import class_names, generate, render
from halsal.errors import HalsalError


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
    # A different seed gives different images.
    assert not np.array_equal(np.asarray(render("fine", 0, 0, 7, 64)), np.asarray(render("fine", 0, 0, 8, 64)))
    assert (tmp_path / "a" / "classes.tsv").read_text() == (tmp_path / "b" / "classes.tsv").read_text()


def test_synthetic_image_does_not_depend_on_what_else_is_generated(tmp_path):
    """An image (and its object box) depends only on (task, label, index, seed, size): more
    classes or more images per class add images and leave the shared ones unchanged."""
    small = generate(tmp_path / "small", task="fine", classes=3, images_per_class=2, image_size=64, seed=7)
    big = generate(tmp_path / "big", task="fine", classes=5, images_per_class=4, image_size=64, seed=7)
    assert len(small) == 6 and len(big) == 20
    by_name = big.assign(file=[p.split("/")[-1] for p in big["path"]]).set_index(["label", "file"])
    for row in small.itertuples():
        other = by_name.loc[(row.label, row.path.split("/")[-1])]
        assert other["class_name"] == row.class_name
        assert np.array_equal(np.asarray(Image.open(row.path)), np.asarray(Image.open(other["path"]))), row.path
        assert [getattr(row, c) for c in BOX_COLUMNS] == other[BOX_COLUMNS].tolist()


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


def test_index_folder_on_real_photographs(shared_data):
    root = shared_data("flowers102-tiny")
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


# --- folder datasets as a user makes them (issue 12) -----------------------------------------


def _jpeg(path, colour=(200, 40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path, "JPEG")


def test_scan_folder_skips_hidden_and_counts_ignored_files(tmp_path):
    from halsal.data.datasets import scan_folder

    for c in ("001_Red_Crown", "002_blue_wing"):
        for i in range(3):
            _jpeg(tmp_path / "images" / c / f"{i}.jpg")
    (tmp_path / "images" / "001_Red_Crown" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "images" / "001_Red_Crown" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble
    (tmp_path / "images" / "002_blue_wing" / "notes.txt").write_text("stray")
    (tmp_path / "images" / "002_blue_wing" / "clip.GIF").write_bytes(b"GIF89a")  # not in IMAGE_EXTENSIONS
    (tmp_path / "images" / "002_blue_wing" / "sub").mkdir()
    (tmp_path / "images" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "images" / "__MACOSX").mkdir()
    index, info = scan_folder(tmp_path)
    assert len(index) == 6 and index.label.nunique() == 2
    assert not index.path.str.contains(r"/\.").any()
    assert info["ignored"]["hidden"]["count"] == 4
    assert "images/001_Red_Crown/._0.jpg" in info["ignored"]["hidden"]["examples"]
    assert info["ignored"]["non_image"] == {"count": 2, "examples": ["images/002_blue_wing/clip.GIF",
                                                                    "images/002_blue_wing/notes.txt"]}
    assert info["ignored"]["folders"]["count"] == 1
    # No classes.tsv: names from the folders, capitalisation kept.
    assert list(dict.fromkeys(index.class_name)) == ["Red Crown", "blue wing"]
    assert info["class_names_from"] == "folder names" and info["images"] == 6


def test_class_names_come_from_classes_tsv(tmp_path):
    from halsal.data.datasets import scan_folder

    for c in ("003_sooty_albatross", "017_cardinal", "020_other"):
        _jpeg(tmp_path / "images" / c / "a.jpg")
    (tmp_path / "classes.tsv").write_text("class_id\tname\n3\tSooty_Albatross\n17\tNorthern Cardinal\n")
    index, info = scan_folder(tmp_path)
    assert list(index.class_name) == ["Sooty Albatross", "Northern Cardinal", "other"]
    assert info["class_names_from"].startswith("classes.tsv (2 of 3")
    # A `folder` column names folders directly.
    (tmp_path / "classes.tsv").write_text("folder\tname\n020_other\tThe Other One\n")
    assert scan_folder(tmp_path)[0].class_name.iloc[-1] == "The Other One"


def test_class_names_from_classes_tsv_on_real_photographs(shared_data):
    index = index_folder(shared_data("cub200-tiny"))  # folders are lower-case slugs; classes.tsv is not
    assert index["class_name"].iloc[0] == "Sooty Albatross"
    assert "Cardinal" in set(index["class_name"])


def test_fetch_keeps_exactly_the_files_the_indexer_reads(tmp_path):
    """A fetcher keeps a file when the folder indexer would index it, and only then."""
    from halsal.data.fetch.common import is_image

    names = ["a.jpg", "b.JPEG", "c.png", "d.webp", "e.tif", "f.gif", "g.txt", ".h.jpg", "i.jpg.part"]
    for cls in ("000_x", "001_y"):  # a dataset needs two classes
        (tmp_path / cls).mkdir()
        for name in names:
            (tmp_path / cls / name).write_bytes(b"not decoded by the indexer")
    indexed = {Path(p).name for p in index_folder(tmp_path)["path"]}
    assert indexed == {n for n in names if is_image(Path(n))} == {"a.jpg", "b.JPEG", "c.png", "d.webp", "e.tif"}


def test_bad_images_never_hold_a_val_or_test_place():
    from halsal.data.splits import usable_rows

    index = _index([12, 12])
    manifest = pd.DataFrame({"row": range(24), "path": index.path, "status": "ok", "reason": ""})
    manifest.loc[3, ["status", "reason"]] = ["skipped", "truncated"]
    usable = usable_rows(index, manifest)
    for seed in range(5):
        split, notes = make_split(index, seed=seed, max_k=1, usable=usable)
        assert notes == [] and 3 not in set(split["row"])
        per = split.groupby(["label", "role"]).size().unstack()
        assert (per["val"] == 5).all() and (per["test"] == 5).all()
        assert list(per["train"]) == [1, 2]  # class 0: 11 usable images
        # rows still point into the index (and the prepared cache)
        assert (split["path"].to_numpy() == index.path.to_numpy()[split["row"].to_numpy()]).all()
    # Two bad files leave 10 usable images: too few for k=1, named as such.
    manifest.loc[4, "status"] = "skipped"
    with pytest.raises(HalsalError, match=r"has 10 usable images \(2 did not decode\)"):
        make_split(index, seed=0, max_k=1, usable=usable_rows(index, manifest))
    # Dropping that class would leave one class: an error too (issue 20), never a one-class run.
    with pytest.raises(HalsalError, match=r"only 1 class is left \('c1'\).*the largest of them \('c0'\) with 10"):
        make_split(index, seed=0, max_k=1, usable=usable_rows(index, manifest), too_few="drop_class")
    # A manifest of another index is an error, not a silent misalignment.
    with pytest.raises(HalsalError, match="does not match the index"):
        usable_rows(index.iloc[:10], manifest)
