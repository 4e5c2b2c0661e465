"""A user's own `kind: folder` dataset (issue 12): the report's Data section, re-indexing when
the folder changes, splits drawn from the images that decode, per-dataset data policies, and
comparison with the paper only for the paper's datasets fetched in full."""

import json
import math
import re
import shutil

import pandas as pd
import pytest
import yaml

from halsal.report.data_section import write_data_section
from halsal.report.tables import accuracy_cells, accuracy_html
from tests.conftest import REPO, shared_dataset
from tests.conftest import count_jobs as job_counts, run_snakemake as snakemake

# --- the Data section, from files written by hand ------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_data_section_lists_skipped_files_dropped_classes_and_ignored_files(tmp_path):
    r = tmp_path / "results"
    paths = [f"/data/own/images/{c}/{i}.jpg" for c in ("a", "b") for i in range(12)] + ["/data/own/images/c/0.jpg"]
    index = pd.DataFrame({"path": paths, "label": [0] * 12 + [1] * 12 + [2], "class_name": ["A"] * 12 + ["B"] * 12 + ["C"],
                          "official_split": ""})
    _write(r / "datasets/own/index.tsv", index.to_csv(sep="\t", index=False))
    info = {"root": "/data/own", "class_names_from": "classes.tsv",
            "ignored": {"hidden": {"count": 7, "examples": [f"images/a/._{i}.jpg" for i in range(7)]},
                        "non_image": {"count": 1, "examples": ["images/b/notes.txt"]},
                        "folders": {"count": 0, "examples": []}}}
    _write(r / "datasets/own/index.json", json.dumps(info))
    status = ["ok"] * 25
    status[3] = "skipped"
    reasons = [""] * 25
    reasons[3] = "zero-byte file"
    _write(r / "prepared/own/manifest.tsv", pd.DataFrame({"row": range(25), "path": paths, "status": status,
                                                          "reason": reasons}).to_csv(sep="\t", index=False))
    rows = [i for i in range(24) if i != 3]
    split = pd.DataFrame({"row": rows, "path": [paths[i] for i in rows], "label": index.label[rows],
                          "class_name": index.class_name[rows],
                          "role": (["val"] * 5 + ["test"] * 5 + ["train"]) + (["val"] * 5 + ["test"] * 5 + ["train"] * 2),
                          "rank": 0})
    _write(r / "splits/own/seed0.tsv", split.to_csv(sep="\t", index=False))
    _write(r / "splits/own/seed0.notes.txt", "class 'C' (label 2) has 1 images, but k=1 needs 11; class dropped\n")
    inputs = {"own": {"index": str(r / "datasets/own/index.tsv"), "info": str(r / "datasets/own/index.json"),
                      "manifest": str(r / "prepared/own/manifest.tsv"), "splits": {"0": str(r / "splits/own/seed0.tsv")},
                      "notes": {"0": str(r / "splits/own/seed0.notes.txt")}}}
    summary, items = write_data_section([{"name": "own", "kind": "folder", "on_bad_image": "skip",
                                          "too_few_images": "drop_class"}], inputs, tmp_path / "data.html",
                                        tmp_path / "data.tsv", tmp_path / "summary.tsv")
    s = summary.iloc[0]
    assert (s.images_indexed, s.images_skipped, s.classes_dropped, s.images_used) == (25, 1, 1, 23)
    assert (s.val_per_class, s.test_per_class, s.hidden_files, s.non_image_files) == ("5", "5", 7, 1)
    skipped = items[items.item == "skipped_file"].iloc[0]
    assert skipped["name"] == "images/a/3.jpg" and skipped.reason == "zero-byte file"
    dropped = items[items.item == "dropped_class"].iloc[0]
    assert dropped["name"] == "C" and dropped["count"] == 1 and "label 2" in dropped.reason
    page = (tmp_path / "data.html").read_text()
    assert "images/a/3.jpg" in page and "zero-byte file" in page and "C" in page
    assert "images/a/._4.jpg" in page and "images/a/._5.jpg" not in page and "and 2 more" in page
    assert "images/b/notes.txt" in page
    assert pd.read_csv(tmp_path / "data.tsv", sep="\t").shape[0] == 1 + 1 + 7 + 1


# --- comparison with the paper --------------------------------------------------------------------

VARIANT = "d4-pool2-eq2"


def _runs(dataset, num_classes, ks=("1",)):
    return pd.DataFrame([{"arch": "alexnet", "dataset": dataset, "method": "baseline", "variant": VARIANT, "k": k,
                          "seed": 0, "test_acc": 0.5, "synthetic": False, "num_classes": num_classes}
                         for k in ks])


def _base(cells, k="1"):
    return cells[(cells.method == "baseline") & (cells.k == k)].iloc[0]


def test_only_the_paper_dataset_in_full_is_compared():
    # A 10-class folder dataset whose name says "car": the Cars row for reference, no difference.
    cells = accuracy_cells(_runs("my_cars", 10), "alexnet", VARIANT, ["my_cars"], ["baseline"], ["1"],
                           dataset_kinds={"my_cars": "folder"})
    base = _base(cells)
    assert base.paper_dataset == "Cars" and not math.isnan(base.paper)
    assert base.comparison.startswith("reference only") and "folder" in base.comparison
    assert math.isnan(base["diff"]) and cells["diff"].isna().all()
    page = accuracy_html(cells, "alexnet")
    assert "\u0394" not in page and "reference only" in page
    # Stanford Cars by kind, but not in full (classes dropped): reference only, saying why.
    base = _base(accuracy_cells(_runs("cars", 150), "alexnet", VARIANT, ["cars"], ["baseline"], ["1"],
                                dataset_kinds={"cars": "cars196"}))
    assert "150 classes" in base.comparison and "196" in base.comparison and math.isnan(base["diff"])
    # In full, at a k of the paper: compared.
    base = _base(accuracy_cells(_runs("cars", 196), "alexnet", VARIANT, ["cars"], ["baseline"], ["1"],
                                dataset_kinds={"cars": "cars196"}))
    assert base.comparison == "comparable" and base["diff"] == pytest.approx(50.0 - base.paper)
    # No k of the paper: nothing to compare.
    base = _base(accuracy_cells(_runs("cars", 196, ks=("4",)), "alexnet", VARIANT, ["cars"], ["baseline"], ["4"],
                                dataset_kinds={"cars": "cars196"}), "4")
    assert "none of the k values" in base.comparison and math.isnan(base["diff"])
    # The name alone never makes a dataset the paper's.
    base = _base(accuracy_cells(_runs("flowers102", 102), "alexnet", VARIANT, ["flowers102"], ["baseline"], ["1"]))
    assert base.comparison.startswith("reference only") and math.isnan(base["diff"])


# --- the workflow on a folder dataset with bad files ----------------------------------------------


def _own_dataset(root):
    """Flowers photos as a user's folder: 3 classes of 11 good images plus one bad file each
    (truncated JPEG, zero-byte file, text named .jpg), a 3-image class, a hidden file, a stray .txt."""
    src = sorted((shared_dataset("flowers102-tiny") / "images").iterdir())
    classes = {"001_tiger_lily": 11, "002_mexican_aster": 11, "003_siam_tulip": 11, "004_tiny": 3}
    for (name, n), folder in zip(classes.items(), src):
        out = root / "images" / name
        out.mkdir(parents=True)
        for f in sorted(folder.glob("*.jpg"))[:n]:
            shutil.copy(f, out / f.name)
    jpeg = sorted(src[0].glob("*.jpg"))[11].read_bytes()
    (root / "images/001_tiger_lily/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "images/002_mexican_aster/empty.jpg").write_bytes(b"")
    (root / "images/003_siam_tulip/readme.jpg").write_text("this is not an image\n")
    (root / "images/001_tiger_lily/._image_x.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "images/002_mexican_aster/notes.txt").write_text("a stray note\n")
    (root / "classes.tsv").write_text("class_id\tname\n1\tTiger Lily\n2\tMexican Aster\n3\tSiam Tulip\n4\tTiny Class\n")


def _jobs_of(dry_run: str, dataset: str) -> list[str]:
    """The rules of a dry run's jobs whose wildcards name the dataset, sorted (Snakemake prints a
    job as `rule <name>:` followed by its indented directives, `wildcards: dataset=<name>, ...`)."""
    jobs, rule = [], None
    for line in dry_run.splitlines():
        m = re.match(r"(?:local)?rule (\w+):$", line)
        rule = m.group(1) if m else (rule if line.startswith(" ") else None)
        if rule and re.match(rf"\s+wildcards: (.*, )?dataset={re.escape(dataset)}(,|$)", line):
            jobs.append(rule)
    return sorted(jobs)


@pytest.mark.slow
def test_own_folder_dataset_data_section_reindex_and_policies(tmp_path):
    own = tmp_path / "own"
    _own_dataset(own)
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["datasets"] = {"own": {"kind": "folder", "source": str(own), "on_bad_image": "skip",
                               "too_few_images": "drop_class"}}
    cfg["data"]["decode_backend"] = "pil"
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/report/data.html"
    snakemake(target, "--cores", "2", "--configfile", str(tmp_path / "own.yaml"), cwd=tmp_path, timeout=600)

    items = pd.read_csv(tmp_path / "results/report/data.tsv", sep="\t", keep_default_na=False)
    skipped = set(items[items.item == "skipped_file"].name)
    assert skipped == {"images/001_tiger_lily/truncated.jpg", "images/002_mexican_aster/empty.jpg",
                       "images/003_siam_tulip/readme.jpg"}
    assert list(items[items.item == "dropped_class"].name) == ["Tiny Class"]
    assert list(items[items.item == "hidden_file"].name) == ["images/001_tiger_lily/._image_x.jpg"]
    assert list(items[items.item == "non_image_file"].name) == ["images/002_mexican_aster/notes.txt"]
    page = (tmp_path / target).read_text()
    for name in [*skipped, "Tiny Class", "._image_x.jpg", "notes.txt"]:
        assert name in page
    split = pd.read_csv(tmp_path / "results/splits/own/seed0.tsv", sep="\t")
    per = split.groupby(["class_name", "role"]).size().unstack()
    assert sorted(per.index) == ["Mexican Aster", "Siam Tulip", "Tiger Lily"]  # names from classes.tsv
    assert (per["val"] == 5).all() and (per["test"] == 5).all()
    assert not split.path.str.contains("truncated|empty|readme").any()

    # A policy change on the target re-runs that dataset's jobs only, never the source set's.
    cfg["datasets"]["own"]["too_few_images"] = "error"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(target, "-n", "--configfile", str(tmp_path / "policy.yaml"), cwd=tmp_path)
    assert job_counts(dry.stdout) == {"split": 1, "report_data": 1, "total": 2}
    assert _jobs_of(dry.stdout, "synth_tiny_source") == [] and _jobs_of(dry.stdout, "own") == ["split"]
    cfg["datasets"]["own"]["on_bad_image"] = "raise"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(target, "-n", "--configfile", str(tmp_path / "policy.yaml"), cwd=tmp_path)
    assert job_counts(dry.stdout) == {"prepare": 1, "split": 1, "report_data": 1, "total": 3}
    assert _jobs_of(dry.stdout, "synth_tiny_source") == [] and _jobs_of(dry.stdout, "own") == ["prepare", "split"]

    # The index follows the folder: remove the bad file, add an image, re-run; nothing fails.
    (own / "images/001_tiger_lily/truncated.jpg").unlink()
    shutil.copy(next((own / "images/001_tiger_lily").glob("image_*.jpg")), own / "images/004_tiny/added.jpg")
    snakemake(target, "--cores", "2", "--configfile", str(tmp_path / "own.yaml"), cwd=tmp_path, timeout=600)
    index = pd.read_csv(tmp_path / "results/datasets/own/index.tsv", sep="\t")
    assert len(index) == 33 + 2 + 4 and not index.path.str.contains("truncated").any()
    assert index.path.str.endswith("added.jpg").any()
    items = pd.read_csv(tmp_path / "results/report/data.tsv", sep="\t", keep_default_na=False)
    assert len(items[items.item == "skipped_file"]) == 2
    assert items[items.item == "dropped_class"]["count"].tolist() == [4]
    again = snakemake(target, "-n", "--configfile", str(tmp_path / "own.yaml"), cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_per_class_subset_of_a_paper_dataset_is_not_compared():
    """`datasets.<name>.per_class` makes the report pass the kind as '<kind>-subset'."""
    from halsal.report.paper import comparability

    assert comparability("flowers", "flowers102", 102, ["1", "5"]) is None
    why = comparability("flowers", "flowers102-subset", 102, ["1", "5"])
    assert why and "per-class subset of flowers102" in why
