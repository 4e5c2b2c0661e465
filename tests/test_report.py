"""The report layer on a fake results tree: tables (missing cells, averages, paper values),
paired-difference CIs, plots and qualitative grids."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from halsal.errors import HalsalError
from halsal.report.aggregate import collect_runs, read_runs, write_aggregate
from halsal.report.cli import main as report_main
from halsal.report.paper import paper_table, paper_value
from halsal.report.stats import mean_ci, paired_differences
from halsal.report.tables import accuracy_cells, write_tables
from tests.fixtures_report import VARIANT, build_tree, metrics_paths

METHODS = ["baseline", "scratch_sal", "approach_a", "approach_b"]
KS = ["1", "3", "K"]
# approach_a at k=3 is configured but has no runs at all: its cell must read "missing".
SKIP = {("synth_fine", "approach_a", "3", s) for s in (0, 1, 2)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    return build_tree(root, skip=SKIP, variants=["d2-pool2-eq2", "d3-pool2-eq2", "d4-pool1-eq2", "d4-conv3-eq2"])


@pytest.fixture(scope="module")
def runs(results):
    return collect_runs(metrics_paths(results))


def _cell(cells, method, k):
    return cells[(cells.method == method) & (cells.k == k)].iloc[0]


def test_paper_tables_load_and_recomputed_average_differs_where_printed_is_off():
    t = paper_table()
    assert len(t) == 2 * 3 * 5 * 10
    assert paper_value("alexnet", "flowers102", "smic", "K") == 92.3
    flowers_base = t[(t.arch == "alexnet") & (t.dataset == "Flowers") & (t.method == "baseline")].acc
    assert flowers_base.mean() == pytest.approx(68.49)  # printed AVG is 68.3


def test_aggregate_one_row_per_run_and_missing_metrics_error(results, runs, tmp_path):
    assert len(runs) == 3 * 3 * 4 + 3 * 3 * 4 - 3  # main grid + 4 ablation variants, minus the skipped cell
    assert set(runs.k) == {"1", "3", "K"} and runs.synthetic.all()
    write_aggregate(runs, tmp_path / "runs.tsv", tmp_path / "summary.csv")
    back = read_runs(tmp_path / "runs.tsv")
    assert back.k.tolist() == runs.k.tolist() and back.synthetic.all()
    summary = pd.read_csv(tmp_path / "summary.csv", dtype={"k": str})
    row = summary[(summary.model == f"alexnet/baseline/{VARIANT}") & (summary.k == "1")].iloc[0]
    assert row.top1 == pytest.approx(31.0) and row.top1_std == pytest.approx(1.0) and row.seeds == 3
    with pytest.raises(HalsalError, match="nope/metrics.json"):
        collect_runs([tmp_path / "nope" / "metrics.json"])
    assert len(collect_runs([tmp_path / "nope" / "metrics.json"], allow_missing=True)) == 0


def test_table_cells_missing_mean_std_avg_and_paper(runs):
    cells = accuracy_cells(runs, "alexnet", VARIANT, datasets=["synth_fine"], methods=METHODS, ks=KS)
    miss = _cell(cells, "approach_a", "3")
    assert miss.status == "missing" and miss.n == 0 and math.isnan(miss["mean"])  # never 0
    assert _cell(cells, "approach_a", "AVG").status == "missing"
    smic = _cell(cells, "smic", "1")
    assert smic.status == "not run" and smic.paper == 37.6  # SMIC row listed with the paper's value
    base = _cell(cells, "baseline", "1")
    assert (base["mean"], base["std"], base.n) == (pytest.approx(31.0), pytest.approx(1.0), 3)
    assert base.paper == 31.8  # synthetic data -> compared against Flowers, for reference only
    assert "not comparable" in base.comparison
    # AVG is recomputed: ours over k=1,3,K -> (31 + 41 + 51) / 3; the paper's over the same columns.
    avg = _cell(cells, "baseline", "AVG")
    assert avg["mean"] == pytest.approx(41.0) and avg["std"] == pytest.approx(1.0)
    assert avg.paper == pytest.approx((31.8 + 53.1 + 87.8) / 3)


def test_written_tables_tsv_and_html(runs, tmp_path):
    out = write_tables(runs, tmp_path, VARIANT, configured_archs=["alexnet"], datasets=["synth_fine"],
                       methods=METHODS, ks=KS, synthetic_datasets=["synth_fine"])
    wide = pd.read_csv(tmp_path / "table_alexnet.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = wide[wide.method == "Approach A"].iloc[0]
    assert row["k=3"] == "missing" and row["k=3 paper"] == "56.9" and row["AVG"] == "missing"
    b = wide[wide.method == "Baseline-RGB"].iloc[0]
    assert b["k=1"] == "31.0 \u00b1 1.0" and b["k=1 paper"] == "31.8" and b["k=1 diff"] == "n/c"
    assert b["data"] == "SYNTHETIC"
    html = (tmp_path / "table_alexnet.html").read_text()
    assert "SYNTHETIC data \u2014 not a reproduction of the paper" in html
    assert "missing" in html and "SMIC*" in html and "paper 31.8" in html
    resnet = (tmp_path / "table_resnet152.html").read_text()
    assert "not run in this configuration" in resnet and "paper 39.0" in resnet
    assert len(out["differences"]) == 7  # B: 3 k + AVG; A: k=1, K + AVG (no k=3 runs)


def test_paired_difference_ci_known_example(runs):
    # t interval of [1, 2, 3]: 2 +- t(0.975, 2) * 1 / sqrt(3) = 2 +- 2.4841
    mean, low, high, how = mean_ci([1.0, 2.0, 3.0])
    assert (mean, how) == (2.0, "t")
    assert low == pytest.approx(-0.48414, abs=1e-4) and high == pytest.approx(4.48414, abs=1e-4)
    d = paired_differences(runs, VARIANT)
    b1 = d[(d.method == "approach_b") & (d.k == "1")].iloc[0]  # fixture diffs: 1, 2, 3 points
    assert b1.n == 3 and b1.mean_diff == pytest.approx(2.0)
    assert b1.ci_low == pytest.approx(-0.4841, abs=1e-3) and b1.verdict == "within noise"
    a = d[(d.method == "approach_a") & (d.k == "AVG")].iloc[0]
    assert a.n == 0 or a.verdict != "within noise"  # approach_a lacks k=3 entirely -> AVG has no seeds
    assert mean_ci([2.0])[3] == "none (1 seed)"
    many = mean_ci(np.arange(12, dtype=float))
    assert many[3] == "bootstrap" and many[1] < 5.5 < many[2]


def _png_ok(path, min_bytes=5_000):
    from PIL import Image

    assert path.exists() and path.stat().st_size > min_bytes, path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100


def test_cli_end_to_end_plots_and_grids(results, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    runs_tsv = tmp_path / "runs.tsv"
    assert report_main(["aggregate", "--runs-root", str(results / "runs"), "--runs-tsv", str(runs_tsv),
                        "--summary-csv", str(tmp_path / "summary.csv")]) == 0
    out = tmp_path / "report"
    assert report_main(["plots", "--runs", str(runs_tsv), "--outdir", str(out / "plots"), "--variant", VARIANT]) == 0
    for name in ("accuracy/alexnet/synth_fine/accuracy.png", "accuracy/alexnet/synth_fine/improvement.png",
                 "figure2_depth.png", "figure3_fusion.png", "learning_curves.png"):
        _png_ok(out / "plots" / name, 20_000)  # real plots, not the small "not run" panels
    assert report_main(["qualitative", "--runs", str(runs_tsv), "--outdir", str(out / "qual"), "--variant", VARIANT,
                        "--results-root", str(results), "--datasets", "synth_fine"]) == 0
    for name in ("success", "failure", "saliency"):
        _png_ok(out / "qual" / "synth_fine" / f"{name}.png", 50_000)


def test_absent_run_sets_give_not_run_panels(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from halsal.report.plots import ablation_plot
    from halsal.report.qualitative import case_grid

    results = build_tree(tmp_path, methods=("baseline", "approach_a"), ks=("1",), seeds=(0,))
    runs = collect_runs(metrics_paths(results))
    assert ablation_plot(runs, VARIANT, "depth", tmp_path / "f2.png") is False  # default variant only
    _png_ok(tmp_path / "f2.png", 2_000)
    assert case_grid(runs, "alexnet", "synth_fine", VARIANT, "success", results, tmp_path / "s.png") == 0
    _png_ok(tmp_path / "s.png", 2_000)
