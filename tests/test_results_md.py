"""The results as Markdown (halsal/report/results_md.py): the docs page's numbers come from the
report's own TSV/JSON files and the jobs' benchmark files, spliced between the page's markers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from halsal.cli import main as halsal_main
from halsal.errors import HalsalError
from halsal.report import results_md
from halsal.report.aggregate import collect_runs
from halsal.report.tables import write_tables

VARIANT = "d4-pool2-eq2"
KS = ["1", "3", "K"]
DEAD = {("synth_fine", "approach_b", "K", 1)}


@pytest.fixture(scope="module")
def report(tmp_path_factory, fake_results):
    """A report folder (tables of the fake tree), Step 0/1 JSON, benchmark files and two plots."""
    from PIL import Image

    root = tmp_path_factory.mktemp("md")
    results = fake_results.build_tree(root, dead=DEAD)
    runs = collect_runs(fake_results.metrics_paths(results))
    runs.loc[(runs.method == "approach_b") & (runs.k == "K"), "best_epoch"] = 4  # the last of 4 epochs
    runs_tsv = root / "runs.tsv"
    runs.to_csv(runs_tsv, sep="\t", index=False)
    rep = results / "report"
    write_tables(runs, rep, VARIANT, configured_archs=["alexnet"], datasets=["synth_fine"],
                 methods=["baseline", "scratch_sal", "approach_a", "approach_b"], ks=KS, synthetic_datasets=["synth_fine"])
    fake_results.write_models(results)
    # Benchmark files in no benchmarks/<stage>/... layout: the labels come with them, not from their paths.
    bench = root / "timings"
    for rel, s in {"step0.tsv": 100.0, "ft/1.tsv": 10.0, "ft/2.tsv": 20.0, "ft/3.tsv": 30.0}.items():
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"s": [s], "h:m:s": ["0:00:00"], "cpu_time": [s / 2]}).to_csv(bench / rel, sep="\t", index=False)
    (bench / "empty.tsv").write_text("")
    benchmarks = {"datasets": [str(bench / "absent.tsv")],  # not run: no row
                  "backbone": [str(bench / "step0.tsv")],
                  "finetune: baseline": [str(bench / "ft/1.tsv"), str(bench / "empty.tsv")],
                  "finetune: approach_b": [str(bench / "ft/2.tsv")],  # ft/3.tsv (not given) is not counted
                  "report": [str(bench / "empty.tsv")]}
    for rel in ("plots/accuracy/alexnet/synth_fine/improvement.png", "qualitative/synth_fine/saliency.png"):
        (rep / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (1520, 600), "white").save(rep / rel)
    return {"rep": rep, "bench": benchmarks, "bench_dir": bench, "models": results / "models" / "alexnet", "runs_tsv": runs_tsv}


@pytest.fixture(scope="module")
def rendered(report):
    out = report["rep"] / "results.md"
    text = results_md.render(report["rep"], "alexnet", out, benchmarks=report["bench"],
                             backbone_jsons=[report["models"] / "backbone.json"],
                             saliency_jsons=[report["models"] / f"saliency_{VARIANT}.json"],
                             source="tiny_imagenet", datasets=["synth_fine"], title="Fixture",
                             runs_tsv=report["runs_tsv"], variant=VARIANT)
    assert out.read_text() == text
    return text


def _table(text: str, section: str) -> pd.DataFrame:
    """The first Markdown table under the heading that starts with ``#### <section>``."""
    body = text.split(f"#### {section}", 1)[1].split("\n####", 1)[0] if section else text
    lines = body[body.index("\n|") + 1:].split("\n\n", 1)[0].splitlines()  # the first block of table rows
    lines = [r.strip().strip("|") for r in lines]
    header, rows = [c.strip() for c in lines[0].split("|")], lines[2:]
    return pd.DataFrame([[c.strip() for c in r.split("|")] for r in rows], columns=header)


def _one(table: pd.DataFrame, **where) -> pd.Series:
    sel = table
    for col, value in where.items():
        sel = sel[sel[col] == value]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


def test_accuracy_table_is_the_reports_cells_with_seed_counts(rendered):
    acc = _table(rendered, "1.")
    # fixture: Approach B at k=1 = 0.30 + 0.01 * seed + 0.01 * (seed + 1) -> 31, 33, 35 %
    assert _one(acc, dataset="synth_fine", method="Approach B")["k=1"] == "33.0 ± 2.0 (n=3)"
    assert _one(acc, dataset="synth_fine", method="Baseline-RGB")["k=3"] == "41.0 ± 1.0 (n=3)"
    assert list(acc.columns) == ["dataset", "method", "k=1", "k=3", "k=K", "AVG"]  # synthetic: no paper column
    assert "SMIC*" not in set(acc.method)  # not configured, not run: no row
    assert "SYNTHETIC data — not a reproduction of the paper" in rendered


def test_selected_epochs_count_runs_that_stopped_at_the_last_epoch(rendered):
    e = _table(rendered.split("Epoch selected on validation")[1], "")  # the table after that sentence
    # one row per dataset, k and method: the fixture's Approach B selects its last epoch at k = K only
    b = _one(e, dataset="synth_fine", method="Approach B", k="K")
    assert b["runs that selected the last epoch"] == "3 of 3" and b["epochs"] == "4"
    assert b["selected epoch: median (min-max)"] == "4 (4-4)"
    b1 = _one(e, dataset="synth_fine", method="Approach B", k="1")
    assert b1["runs that selected the last epoch"] == "0 of 3" and b1["selected epoch: median (min-max)"] == "3 (3-3)"
    assert list(e.k) == ["1"] * 4 + ["3"] * 4 + ["K"] * 4
    assert list(e.method[:4]) == ["Baseline-RGB", "Baseline-RGB + scratch SAL", "Approach A", "Approach B"]
    assert "optimizer steps" not in e.columns  # a budget in epochs: no steps column


def test_differences_carry_both_intervals(rendered):
    d = _one(_table(rendered, "2."), difference="Approach B − Baseline-RGB", k="1")
    assert (d.seeds, d["mean (points)"]) == ("3", "+2.0")  # the paired diffs 1, 2, 3 points
    assert d["95% t over seeds"] == "[-0.5, +4.5]" and d["t verdict"] == "within noise"  # 2 +- 2.4841
    assert d["95% two-level bootstrap"].startswith("[") and d["test images per seed"] == "200"


def test_health_rows_show_dead_runs_and_object_ratio(rendered):
    h = _table(rendered, "3.")
    b = _one(h, dataset="synth_fine", method="Approach B", k="K")
    # alive seeds 0 and 2: object ratio 2.5 after, 1.0 before (fixture maps)
    assert b["dead map (runs)"] == "1 of 3" and b["object ratio: test (before)"] == "2.50 (1.00)"
    a = _one(h, dataset="synth_fine", method="Approach A", k="1")
    assert a["dead map (runs)"] == "0 of 3" and a["map mean: test (before)"] == "0.200 (0.500)"  # 0.1 * (seed + 1)


def test_steps_and_wall_time(rendered):
    steps = _table(rendered, "4.")
    s0 = _one(steps, step="Step 0 (alexnet)")
    assert list(s0[2:]) == ["200", "30", "12", "25.0%", "30.0%", "0.5%"]
    s1 = _one(steps, step="Step 1 (alexnet, d4-pool2-eq2)")
    assert "0.040 -> 0.200" in s1.what and "all-zero maps 12.5%" in s1.what and s1["val acc"] == "26.0%"
    w = _table(rendered, "6.").set_index("stage")
    # the labels given, in their order; one without a file that holds a row is left out
    assert list(w.index) == ["backbone", "finetune: baseline", "finetune: approach_b", "all jobs"]
    assert list(w.loc["finetune: baseline"]) == ["1", "10", "10", "5"]
    assert list(w.loc["finetune: approach_b"]) == ["1", "20", "20", "10"]
    assert list(w.loc["backbone"]) == ["1", "100", "100", "50"]
    assert list(w.loc["all jobs"]) == ["3", "130", "100", "65"]


def test_plots_copied_small(rendered, report):
    from PIL import Image

    for name in ("alexnet_synth_fine_improvement.png", "qualitative_synth_fine_saliency.png"):
        assert f"(results_md/{name})" in rendered
        with Image.open(report["rep"] / "results_md" / name) as im:
            assert im.size == (760, 300)


def test_publish_splices_between_markers_and_keeps_the_prose(rendered, report, tmp_path):
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    doc.write_text(f"# Page\n\nintro\n\n{results_md.BEGIN}\nold numbers\n{results_md.END}\n\n## After\nprose\n")
    assert halsal_main(["publish-md", "--markdown", str(report["rep"] / "results.md"), "--doc", str(doc),
                        "--images-dir", "page-img", "--elapsed-s", "3725", "--command", "make photos",
                        "--elapsed-note", "no venv"]) == 0
    text = doc.read_text()
    assert text.startswith("# Page\n\nintro\n\n") and text.endswith(f"{results_md.END}\n\n## After\nprose\n")
    assert "old numbers" not in text and "**Measured: `make photos` took 62 min 5 s** of wall time (no venv) on" in text
    assert "](page-img/alexnet_synth_fine_improvement.png)" in text and "](results_md/" not in text
    assert (doc.parent / "page-img" / "alexnet_synth_fine_improvement.png").is_file()
    assert _one(_table(text, "3."), method="Approach B", k="K")["dead map (runs)"] == "1 of 3"
    # again: the same page, the block replaced, not appended
    results_md.publish(report["rep"] / "results.md", doc, "page-img")
    assert doc.read_text().count(results_md.BEGIN) == 1 and "Measured" not in doc.read_text()


def test_publish_refuses_a_page_without_markers_or_results(report, tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("# no markers\n")
    with pytest.raises(HalsalError, match="page.md has no generated block"):
        results_md.publish(report["rep"] / "results.md", doc)
    assert doc.read_text() == "# no markers\n"
    with pytest.raises(HalsalError, match="run the workflow first"):
        results_md.publish(tmp_path / "absent.md", doc)


def test_results_md_cli(report, tmp_path):
    out = tmp_path / "r.md"
    assert halsal_main(["results-md", "--report-dir", str(report["rep"]), "--out", str(out), "--benchmarks",
                        json.dumps(report["bench"]), "--backbone", str(report["models"] / "backbone.json"),
                        "--source", "src", "--datasets", "synth_fine"]) == 0
    text = out.read_text()
    assert "backbone from scratch on src" in text
    w = _table(text, "6.").set_index("stage")
    assert list(w.index) == ["backbone", "finetune: baseline", "finetune: approach_b", "all jobs"]
    assert list(w.loc["all jobs"]) == ["3", "130", "100", "65"]
    assert f"and `{report['bench_dir']}/` on" in text  # the folder of the files given
    with pytest.raises(SystemExit):  # a folder, the old form, is refused: the files are given, not searched for
        halsal_main(["results-md", "--report-dir", str(report["rep"]), "--out", str(out), "--benchmarks",
                     str(report["bench_dir"])])
    assert halsal_main(["results-md", "--report-dir", str(report["rep"]), "--out", str(out), "--benchmarks",
                        json.dumps({"backbone": str(report["bench_dir"] / "step0.tsv")})]) == 2  # not a list
    assert json.loads((report["models"] / "backbone.json").read_text())["num_classes"] == 200
