"""Degenerate data never becomes a number (issue 20): fewer than 2 classes left, every class
dropped, and exact duplicate images within a class, across classes and across the roles of a
split. Each case is a folder of real photographs (../shared/data/flowers102) built in tmp_path,
indexed and split with the `halsal` command line as the workflow's rules call it."""

import json
import shutil

import pandas as pd
import pytest

from halsal.cli import main as halsal
from halsal.data.datasets import content_hashes
from halsal.errors import HalsalError
from halsal.report.aggregate import collect_runs, write_aggregate
from halsal.report.data_section import write_data_section
from tests.conftest import REPO, shared_dataset


def _photos(n_classes: int) -> list[list]:
    """The photos of the first ``n_classes`` classes of ../shared/data/flowers102 (40 each)."""
    folders = sorted((shared_dataset("flowers102") / "images").iterdir())[:n_classes]
    return [sorted(f.glob("*.jpg")) for f in folders]


def _folder(root, counts: dict) -> None:
    """``root/images/<class>/`` with the first ``counts[class]`` photos of one real class each."""
    for (name, n), photos in zip(counts.items(), _photos(len(counts))):
        (root / "images" / name).mkdir(parents=True)
        for f in photos[:n]:
            shutil.copy(f, root / "images" / name / f.name)


def _index(tmp_path, root, name="own"):
    out = tmp_path / "results/datasets" / name / "index.tsv"
    assert halsal(["index", "--root", str(root), "--out", str(out)]) == 0
    return out


def _split_path(index_tsv, seed=0):
    return index_tsv.parents[2] / "splits" / index_tsv.parent.name / f"seed{seed}.tsv"


def _split(index_tsv, seed=0, max_k=1, too_few="drop_class", duplicates=None):
    out = _split_path(index_tsv, seed)
    args = ["split", "--dataset", index_tsv.parent.name, "--index", str(index_tsv), "--seed", str(seed), "--max-k", str(max_k), "--too-few", too_few,
            "--notes", str(out.with_suffix(".notes.txt")), "--out", str(out)]
    return halsal(args + (["--duplicates", duplicates] if duplicates else [])), out


# --- at least two classes, and errors that carry their own evidence -------------------------------


def test_one_class_left_is_an_error_and_nothing_is_trained(tmp_path, capsys):
    """The issue's case: 20 + 2 + 2 photos, too_few_images: drop_class, ks: [1]."""
    _folder(tmp_path / "own", {"001_big": 20, "002_small": 2, "003_smaller": 2})
    rc, split = _split(_index(tmp_path, tmp_path / "own"))
    err = capsys.readouterr().err
    assert rc == 2 and not split.exists()
    for part in ("dataset 'own'", "only 1 class is left ('big')", "2 of 3 classes were dropped",
                 "the largest of them ('small') with 2 usable image(s)", "k=1 needs 1 train + 5 val + 5 test = 11",
                 "no k >= 1 keeps 2 classes", "Nothing is trained"):
        assert part in err, (part, err)
    assert "messages above" not in err
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize("counts, max_k, too_few, expected", [
    # 40 classes of 1 photo and one of 4 (the "200 classes of one image", smaller)
    ({**{f"{i:03d}_c{i}": 1 for i in range(1, 41)}, "041_four": 4}, 1, "drop_class",
     ["every class was dropped", "41 of 41 classes were dropped", "largest 4, median 1",
      "k=1 needs 1 train + 5 val + 5 test = 11", "no k >= 1 keeps every class", "no k >= 1 keeps 2 classes"]),
    # classes of 20, 15 and 12 photos, k=30 asked: k=5 would keep two, k=2 all three
    ({"001_a": 20, "002_b": 15, "003_c": 12}, 30, "drop_class",
     ["every class was dropped", "largest 20, median 15", "k=30 needs 30 train + 5 val + 5 test = 40",
      "the largest k that keeps every class is 2", "at least 2 classes (too_few_images: drop_class) is 5",
      "set the largest k in `ks` to 5 or less"]),
    # the `error` policy stops at the first class too small, with the same evidence
    ({"001_a": 20, "002_b": 15, "003_c": 12}, 5, "error",
     ["class 'c' (label 2) has 12 images, but k=5 needs 5 train + 5 val + 5 test = 15", "largest 20, median 15",
      "the largest k that keeps every class is 2", "set the largest k in `ks` to 2 or less"]),
])
def test_too_small_data_names_sizes_and_the_largest_k(tmp_path, capsys, counts, max_k, too_few, expected):
    _folder(tmp_path / "own", counts)
    rc, split = _split(_index(tmp_path, tmp_path / "own"), max_k=max_k, too_few=too_few)
    err = capsys.readouterr().err
    assert rc == 2 and not split.exists()
    for part in expected:
        assert part in err, (part, err)
    assert "messages above" not in err


def test_a_split_of_one_class_is_never_trained():
    """A hand-made (or older) split of one class: training's relabel refuses it."""
    from halsal.data.splits import relabel

    one = pd.DataFrame({"row": range(3), "path": ["a", "b", "c"], "label": 4, "class_name": "x",
                        "role": ["train", "val", "test"], "rank": 0})
    with pytest.raises(HalsalError, match="1 class"):
        relabel(one)


# --- duplicates --------------------------------------------------------------------------------


def _with_copies(root):
    """Classes of 20, 14 and 14 photos; 5 class-a photos copied under class b (label conflicts) and
    two class-a photos copied within class a. Returns (cross-class originals, within-class originals)."""
    _folder(root, {"001_a": 20, "002_b": 14, "003_c": 14})
    a = sorted((root / "images/001_a").glob("*.jpg"))
    for f in a[:5]:
        shutil.copy(f, root / "images/002_b" / f"copy_{f.name}")
    for f in a[5:7]:
        shutil.copy(f, root / "images/001_a" / f"again_{f.name}")
    return a[:5], a[5:7]


def _roles_per_group(index_tsv, split):
    index = pd.read_csv(index_tsv, sep="\t", dtype=str, keep_default_na=False)
    split = split.assign(h=index["sha256"].to_numpy()[split["row"]])
    return split.groupby("h")["role"].agg(set)


def test_duplicates_are_grouped_in_the_index(tmp_path):
    across, within = _with_copies(tmp_path / "own")
    index_tsv = _index(tmp_path, tmp_path / "own")
    index = pd.read_csv(index_tsv, sep="\t", dtype=str, keep_default_na=False)
    assert index["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    dups = json.loads(index_tsv.with_name("index.json").read_text())["duplicates"]
    assert (dups["groups"], dups["files"], dups["across_classes"], dups["within_class"]) == (7, 14, 5, 2)
    groups = {tuple(g["paths"]): g for g in dups["list"]}
    for f in across:
        g = groups[(f"images/001_a/{f.name}", f"images/002_b/copy_{f.name}")]
        assert g["kind"] == "across_classes" and g["classes"] == ["a", "b"]
    for f in within:
        g = groups[(f"images/001_a/again_{f.name}", f"images/001_a/{f.name}")]
        assert g["kind"] == "within_class" and g["classes"] == ["a", "a"]


@pytest.mark.parametrize("policy", ["warn", "drop"])
def test_duplicates_follow_the_policy_and_never_span_two_roles(tmp_path, policy):
    across, within = _with_copies(tmp_path / "own")
    index_tsv = _index(tmp_path, tmp_path / "own")
    for seed in range(4):
        rc, out = _split(index_tsv, seed=seed, too_few="error", duplicates=policy)
        assert rc == 0
        split = pd.read_csv(out, sep="\t", keep_default_na=False)
        roles = _roles_per_group(index_tsv, split)
        assert (roles.map(len) == 1).all(), "a photo holds two roles"  # no group spans two roles
        per = split.groupby(["class_name", "role"]).size().unstack()
        assert (per["val"] == 5).all() and (per["test"] == 5).all()
        names = set(split["path"].map(lambda p: p.rsplit("/", 1)[-1]))
        if policy == "drop":  # one copy kept within a class; no copy of a label conflict
            assert not {f.name for f in across} & names and not {f"copy_{f.name}" for f in across} & names
            assert len(split) == 20 + 14 + 14 + 2 + 5 - 10 - 2
            assert split.groupby("path").size().max() == 1 and roles.index.is_unique
        else:  # every copy kept, in train only
            assert len(split) == 20 + 14 + 14 + 2 + 5
            hashes = pd.read_csv(index_tsv, sep="\t", dtype=str)["sha256"]
            copies = split[hashes.duplicated(keep=False).to_numpy()[split["row"]]]
            assert len(copies) == 14 and set(copies["role"]) == {"train"}
            # a second copy within a class comes last in the training order: k-shot sets of
            # different photos while the class has them
            train_a = split[(split.class_name == "a") & (split.role == "train")].sort_values("rank")
            h = hashes.to_numpy()[train_a["row"]]
            assert len(set(h[:-2])) == len(train_a) - 2 and set(h[-2:]) <= set(h[:-2])
        notes = out.with_suffix(".notes.txt").read_text()
        assert f"duplicates: {policy}" in notes and "7 group(s)" in notes

    # The report's Data section lists every group, with its paths, classes and places.
    splits = {str(seed): str(_split_path(index_tsv, seed)) for seed in range(4)}
    inputs = {"own": {"index": str(index_tsv), "info": str(index_tsv.with_name("index.json")), "manifest": None,
                      "splits": splits}}
    summary, items = write_data_section([{"name": "own", "kind": "folder", "duplicates": policy}],
                                        inputs, tmp_path / "data.html", tmp_path / "data.tsv")
    s = summary.iloc[0]
    assert (s.duplicate_groups, s.duplicate_files, s.label_conflicts) == (7, 14, 5)
    assert s.duplicate_groups_across_roles == 0 and s.duplicates_left_out == (12 if policy == "drop" else 0)
    copies = items[items.item == "duplicate"]
    assert len(copies) == 14 and set(copies.class_name) == {"a", "b"}
    assert set(copies.name) >= {f"images/002_b/copy_{f.name}" for f in across}
    page = (tmp_path / "data.html").read_text()
    assert "7 group(s) of identical files" in page and "No group spans two roles" in page
    for f in across + within:
        assert f"images/001_a/{f.name}" in page
    if policy == "drop":
        assert copies.reason.str.contains("left out \\(duplicates policy\\)").sum() == 12


def test_duplicates_error_policy_names_the_copies(tmp_path, capsys):
    across, _ = _with_copies(tmp_path / "own")
    rc, out = _split(_index(tmp_path, tmp_path / "own"), too_few="error", duplicates="error")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "dataset 'own' has 7 group(s) of identical image files (2 within a class, 5 across classes)" in err
    assert f"copy_{across[0].name} [b] (label conflict)" in err and "`duplicates: drop`" in err


def test_without_the_hashes_copies_would_span_roles(tmp_path):
    """The case is a real one: split without the hash column, some photo sits in train and in
    val/test (so the role check above would catch a split that ignored the copies)."""
    from halsal.data.datasets import read_index
    from halsal.data.splits import make_split

    _with_copies(tmp_path / "own")
    index = read_index(_index(tmp_path, tmp_path / "own"))
    spans = 0
    for seed in range(4):
        split, _ = make_split(index.drop(columns="sha256"), seed, max_k=1)
        h = index["sha256"].to_numpy()[split["row"]]
        spans += int((split.assign(h=h).groupby("h")["role"].nunique() > 1).sum())
    assert spans > 0  # unguarded, some photo sits in train and in val/test


# --- the report never shows a degenerate run -------------------------------------------------------


def _metrics(path, **over):
    m = {"arch": "alexnet", "dataset": "own", "method": "baseline", "variant": "d4-pool2-eq2", "k": "1", "seed": 0,
         "val_acc": 0.5, "test_acc": 0.4, "num_classes": 3, "n_test": 15, **over}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))
    return path


def test_aggregation_leaves_out_degenerate_runs_and_lists_them(tmp_path, capsys):
    runs_root = tmp_path / "runs/alexnet/own/baseline/d4-pool2-eq2"
    paths = [_metrics(runs_root / "k1/seed0/metrics.json"),
             _metrics(runs_root / "k1/seed1/metrics.json", seed=1, num_classes=1, test_acc=1.0),
             _metrics(runs_root / "k1/seed2/metrics.json", seed=2, n_test=0, test_acc=0.0)]
    runs = collect_runs(paths)
    assert list(runs.seed) == [0]
    err = capsys.readouterr().err
    assert "seed1 left out of the tables: 1 class(es)" in err and "seed2 left out of the tables: no test image" in err
    write_aggregate(runs, tmp_path / "tables/runs.tsv", tmp_path / "summary.csv")
    skipped = pd.read_csv(tmp_path / "tables/skipped_runs.tsv", sep="\t")
    assert list(skipped.seed) == [1, 2] and skipped.reason.str.contains("class|test image").all()
    assert len(pd.read_csv(tmp_path / "tables/runs.tsv", sep="\t")) == 1
    assert (pd.read_csv(tmp_path / "summary.csv").top1 == 40.0).all()  # the 100% never reaches the summary


# --- make run's synthetic data -------------------------------------------------------------------


@pytest.mark.slow
def test_make_run_synthetic_data_has_no_duplicates(tmp_path):
    import yaml

    from halsal.data.datasets import duplicate_groups
    from halsal.data.synthetic import generate

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for name, spec in [*cfg["datasets"].items(), (cfg["source"]["name"], cfg["source"])]:
        index = generate(tmp_path / name, task=spec["task"], classes=spec["classes"],
                         images_per_class=spec["images_per_class"], image_size=spec["image_size"], seed=spec["seed"])
        assert (content_hashes(index) != "").all()
        assert duplicate_groups(index) == [], name
