"""The per-class cap (config `datasets.<name>.per_class` / `per_class_seed`): a seeded sample of
at most N images per class, drawn per class, applied where the index is written."""

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml

from halsal.cli import main
from halsal.data.datasets import cap_per_class, read_index

from tests.conftest import REPO


def frame(sizes: dict[str, int]) -> pd.DataFrame:
    """An index with ``sizes[folder]`` images in each class folder (labels in sorted order)."""
    rows = [{"path": f"/data/images/{folder}/img_{i:03d}.jpg", "label": label, "class_name": folder, "official_split": ""}
            for label, folder in enumerate(sorted(sizes)) for i in range(sizes[folder])]
    return pd.DataFrame(rows)


def paths_of(index: pd.DataFrame, folder: str) -> list[str]:
    return sorted(p for p in index["path"] if f"/{folder}/" in p)


def test_cap_keeps_exactly_n_per_class_and_small_classes_whole():
    index = frame({"001_a": 50, "002_b": 12, "003_c": 7, "004_d": 40})
    capped = cap_per_class(index, 12, seed=0)
    assert capped.groupby("label").size().to_dict() == {0: 12, 1: 12, 2: 7, 3: 12}
    assert paths_of(capped, "003_c") == paths_of(index, "003_c")  # smaller than N: kept whole
    assert paths_of(capped, "002_b") == paths_of(index, "002_b")  # exactly N: kept whole
    assert set(capped["path"]) <= set(index["path"])
    assert list(capped.columns) == list(index.columns) and list(capped.index) == list(range(len(capped)))
    # Rows keep their order (labels unchanged, paths ascending within a class as in the input).
    assert capped["label"].is_monotonic_increasing
    assert all(g["path"].is_monotonic_increasing for _, g in capped.groupby("label"))
    assert cap_per_class(index, None) is index


def test_cap_is_deterministic_and_follows_the_seed():
    index = frame({"001_a": 60, "002_b": 60})
    first, again = cap_per_class(index, 10, seed=0), cap_per_class(index, 10, seed=0)
    pd.testing.assert_frame_equal(first, again)
    other = cap_per_class(index, 10, seed=1)
    assert set(other["path"]) != set(first["path"])
    # Row order of the input does not matter.
    shuffled = index.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert set(cap_per_class(shuffled, 10, seed=0)["path"]) == set(first["path"])


def test_each_class_sample_is_independent_of_the_other_classes():
    full = frame({"001_a": 30, "002_b": 45, "003_c": 80})
    chosen = paths_of(cap_per_class(full, 20, seed=5), "002_b")
    # Without class a (class b's label becomes 0), with another class added, with c smaller:
    for sizes in ({"002_b": 45, "003_c": 80}, {"001_a": 30, "002_b": 45, "003_c": 80, "000_z": 100},
                  {"001_a": 3, "002_b": 45, "003_c": 21}):
        assert paths_of(cap_per_class(frame(sizes), 20, seed=5), "002_b") == chosen, sizes
    # Different classes of the same size get different draws (their own RNG each).
    capped = cap_per_class(frame({"001_a": 40, "002_b": 40}), 10, seed=0)
    picks = [sorted(int(p[-7:-4]) for p in paths_of(capped, f)) for f in ("001_a", "002_b")]
    assert picks[0] != picks[1]


def test_cap_rejects_a_cap_below_one():
    from halsal.errors import HalsalError

    with pytest.raises(HalsalError, match="per_class"):
        cap_per_class(frame({"001_a": 5, "002_b": 5}), 0)


def test_index_command_caps_and_records_it(tmp_path):
    """`halsal index --per-class` (what the index_folder rule runs): the index and index.json."""
    root = tmp_path / "birds"
    for folder, n in (("001_jay", 25), ("002_wren", 8)):
        (root / "images" / folder).mkdir(parents=True)
        for i in range(n):
            (root / "images" / folder / f"p{i:02d}.jpg").write_bytes(b"")  # the index reads names only
    out = tmp_path / "index.tsv"
    assert main(["index", "--root", str(root), "--out", str(out), "--per-class", "10", "--per-class-seed", "2"]) == 0
    index = read_index(out)
    assert index.groupby("class_name").size().to_dict() == {"jay": 10, "wren": 8}
    info = json.loads((tmp_path / "index.json").read_text())
    assert info["images"] == 18 and info["per_class_cap"] == {"per_class": 10, "seed": 2, "images_before": 33}
    assert [(c["images"], c["images_before_cap"]) for c in info["per_class"]] == [(10, 25), (8, 8)]
    # Same command, same rows; without the cap, every image.
    main(["index", "--root", str(root), "--out", str(tmp_path / "again.tsv"), "--per-class", "10", "--per-class-seed", "2"])
    assert read_index(tmp_path / "again.tsv")["path"].tolist() == index["path"].tolist()
    main(["index", "--root", str(root), "--out", str(tmp_path / "all.tsv")])
    assert len(read_index(tmp_path / "all.tsv")) == 33
    assert "per_class_cap" not in json.loads((tmp_path / "index.json").read_text())


def test_generate_command_caps(tmp_path):
    out = tmp_path / "index.tsv"
    main(["generate", "--root", str(tmp_path / "synth"), "--out", str(out), "--task", "fine", "--classes", "2",
          "--images-per-class", "6", "--image-size", "32", "--per-class", "4"])
    assert read_index(out).groupby("label").size().tolist() == [4, 4]


def test_schema_accepts_the_cap_and_rejects_zero():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    dataset = {**schema["definitions"]["dataset"], "definitions": schema["definitions"]}
    jsonschema.validate({"kind": "folder", "source": "x", "per_class": 40, "per_class_seed": 3}, dataset)
    jsonschema.validate({"kind": "cub200", "per_class": None}, dataset)
    for bad in ({"kind": "folder", "per_class": 0}, {"kind": "folder", "per_class_seed": -1},
                {"kind": "folder", "per_class": "40"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, dataset)


def test_sample_is_uniform_enough():
    """Over many seeds every image of a class is picked about N/n of the time (no bias to the
    first or last files)."""
    index = frame({"001_a": 20, "002_b": 20})
    counts = np.zeros(20)
    for seed in range(400):
        picked = paths_of(cap_per_class(index, 5, seed=seed), "001_a")
        counts[[int(p[-7:-4]) for p in picked]] += 1
    assert counts.sum() == 400 * 5
    assert counts.min() > 0.6 * 100 and counts.max() < 1.4 * 100  # expected 400 * 5 / 20 = 100 each
