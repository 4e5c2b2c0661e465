"""`halsal data-report --inputs JSON`: the Data section reads the files it is given, one entry per
dataset, and never builds a path of its own (results/datasets/..., results/prepared/...,
results/splits/..., an index.json beside index.tsv)."""

import json

import pandas as pd

from halsal.cli import main as halsal_main


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _own(base, names: dict) -> dict:
    """A folder dataset of 25 images (classes A and B of 12, C of 1), row 3 not decoded, class C
    dropped; two split seeds (seed 1 with 4 val images in class A). Written at ``names``'
    paths under ``base`` (not the results/ layout); returns its --inputs entry."""
    paths = [f"/data/own/images/{c}/{i}.jpg" for c in ("a", "b") for i in range(12)] + ["/data/own/images/c/0.jpg"]
    index = pd.DataFrame({"path": paths, "label": [0] * 12 + [1] * 12 + [2], "class_name": ["A"] * 12 + ["B"] * 12 + ["C"],
                          "official_split": ""})
    info = {"root": "/data/own", "class_names_from": "classes.tsv",
            "ignored": {"hidden": {"count": 7, "examples": [f"images/a/._{i}.jpg" for i in range(7)]},
                        "non_image": {"count": 1, "examples": ["images/b/notes.txt"]},
                        "folders": {"count": 0, "examples": []}}}
    status, reasons = ["ok"] * 25, [""] * 25
    status[3], reasons[3] = "skipped", "zero-byte file"
    rows = [i for i in range(24) if i != 3]

    def split(val_a):
        roles = ["val"] * val_a + ["test"] * 5 + ["train"] * (11 - val_a - 5) + ["val"] * 5 + ["test"] * 5 + ["train"] * 2
        return pd.DataFrame({"row": rows, "path": [paths[i] for i in rows], "label": index.label[rows],
                             "class_name": index.class_name[rows], "role": roles, "rank": 0}).to_csv(sep="\t", index=False)

    return {"index": _write(base / names["index"], index.to_csv(sep="\t", index=False)),
            "info": _write(base / names["info"], json.dumps(info)),
            "manifest": _write(base / names["manifest"], pd.DataFrame(
                {"row": range(25), "path": paths, "status": status, "reason": reasons}).to_csv(sep="\t", index=False)),
            "splits": {"0": _write(base / names["seed0"], split(5)), "1": _write(base / names["seed1"], split(4))},
            "notes": {"0": _write(base / names["notes0"], "class 'C' (label 2) has 1 images, but k=1 needs 11; "
                                                          "class dropped\n")}}


def _decoys(root):
    """A results/ tree where a rebuilt path would look: other numbers for every file."""
    index = pd.DataFrame({"path": ["x/0.jpg", "x/1.jpg"], "label": [0, 1], "class_name": ["X", "Y"], "official_split": ""})
    for name in ("own", "plain"):
        _write(root / f"results/datasets/{name}/index.tsv", index.to_csv(sep="\t", index=False))
        _write(root / f"results/datasets/{name}/index.json", json.dumps({"ignored": {"hidden": {"count": 99}}}))
        _write(root / f"results/prepared/{name}/manifest.tsv", "row\tstatus\treason\n0\tskipped\tdecoy\n1\tok\t\n")
        for seed in range(3):
            _write(root / f"results/splits/{name}/seed{seed}.tsv", "row\tlabel\trole\n1\t1\ttest\n")


def _report(tmp_path, inputs, *extra):
    out = tmp_path / "out"
    rc = halsal_main(["data-report", "--inputs", json.dumps(inputs), "--html", str(out / "data.html"),
                      "--tsv", str(out / "data.tsv"), "--summary-tsv", str(out / "summary.tsv"), *extra])
    if rc:
        return rc, None, None
    read = dict(sep="\t", dtype=str, keep_default_na=False)
    return rc, pd.read_csv(out / "summary.tsv", **read).set_index("dataset"), pd.read_csv(out / "data.tsv", **read)


def test_data_report_reads_the_given_files_not_the_results_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the old default --results-root "results" would find the decoys
    _decoys(tmp_path)
    own = _own(tmp_path / "elsewhere", {"index": "lists/own-files.tsv", "info": "meta/what-the-index-left.json",
                                        "manifest": "decoded/status.tsv", "seed0": "draws/first.tsv",
                                        "seed1": "draws/second.tsv", "notes0": "why/dropped.txt"})
    # "plain": a non-folder dataset (info null) whose index lies beside an index.json that must not be read
    plain = _own(tmp_path / "p", {"index": "x/index.tsv", "info": "x/index.json", "manifest": "m.tsv",
                                  "seed0": "s/a.tsv", "seed1": "s/b.tsv", "notes0": "n.txt"})
    plain["info"] = None
    src = _own(tmp_path / "src", {"index": "i.tsv", "info": "j.json", "manifest": "k.tsv", "seed0": "l.tsv",
                                  "seed1": "m.tsv", "notes0": "o.txt"})
    del src["splits"]["1"]
    inputs = {"own": own, "plain": plain, "src": src}
    rc, summary, items = _report(tmp_path, inputs, "--targets", "own", "plain", "--source", "src",
                                 "--kinds", "own=folder", "plain=synthetic", "--policies", "own=skip,drop_class,warn")
    assert rc == 0 and list(summary.index) == ["own", "plain", "src"]
    s = summary.loc["own"]
    assert (s.images_indexed, s.images_skipped, s.classes_dropped, s.images_used) == ("25", "1", "1", "23")
    assert (s.val_per_class, s.test_per_class) == ("4-5", "5")  # both seeds: the keys of "splits"
    assert (s.hidden_files, s.non_image_files, s.class_names_from) == ("7", "1", "classes.tsv")
    mine = items[items.dataset == "own"]
    assert mine[mine.item == "skipped_file"].name.tolist() == ["images/a/3.jpg"]  # relative to info's root
    assert "label 2" in mine[mine.item == "dropped_class"].reason.iloc[0]  # the notes file given
    p = summary.loc["plain"]
    assert (p.images_indexed, p.hidden_files, p.class_names_from) == ("25", "", "")  # no index.json looked up
    assert items[(items.dataset == "plain") & (items.item == "skipped_file")].name.tolist() == ["/data/own/images/a/3.jpg"]
    assert (summary.loc["src", "role"], summary.loc["src", "val_per_class"]) == ("source", "5")  # seed 0 only
    assert "decoy" not in (tmp_path / "out/data.html").read_text()


def test_data_report_seeds_left_out_without_a_split_and_missing_entries(tmp_path, capsys):
    own = _own(tmp_path, {"index": "a.tsv", "info": "b.json", "manifest": "c.tsv", "seed0": "d.tsv", "seed1": "e.tsv",
                          "notes0": "f.txt"})
    # --seeds chooses among the given splits; seed 7 has none: left out, as a split not on disk
    rc, summary, _ = _report(tmp_path, {"own": own}, "--targets", "own", "--seeds", "0", "7")
    assert rc == 0 and summary.loc["own", "val_per_class"] == "5" and summary.loc["own", "images_used"] == "23"
    rc, summary, items = _report(tmp_path, {"own": {**own, "splits": {}, "notes": {}}}, "--targets", "own")
    assert rc == 0 and summary.loc["own", "images_used"] == "" and not (items.item == "dropped_class").any()
    rc, summary, items = _report(tmp_path, {"own": {**own, "manifest": None}}, "--targets", "own")
    assert rc == 0 and summary.loc["own", "images_skipped"] == "0"
    capsys.readouterr()
    assert _report(tmp_path, {"own": own}, "--targets", "own", "other")[0] == 2
    assert "no files given for dataset 'other'" in capsys.readouterr().err
