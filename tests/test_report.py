"""The report layer on a fake results tree: tables (missing cells, averages, paper values),
paired-difference CIs (over seeds; two-level bootstrap over seeds and test images), saliency
health and the dead-map warning, the SMIC label, plots and qualitative grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from halsal.cli import main as halsal_main
from halsal.errors import HalsalError
from halsal.report.aggregate import SAL_COLUMNS, collect_runs, read_runs, write_aggregate
from halsal.report.health import dead_warnings, health_table
from halsal.report.paper import SMIC_SPECTRAL_LABEL, paper_table, paper_value
from halsal.report.stats import mean_ci, paired_differences, two_level_bootstrap
from halsal.report.tables import accuracy_cells, write_tables

VARIANT = "d4-pool2-eq2"  # the fake tree's main variant (tests/fixtures_report.py)
METHODS = ["baseline", "scratch_sal", "approach_a", "approach_b"]
KS = ["1", "3", "K"]
# approach_a at k=3 is configured but has no runs at all: its cell must read "missing".
SKIP = {("synth_fine", "approach_a", "3", s) for s in (0, 1, 2)}
# Killed maps (all zero after fine-tuning): scratch SAL at k=1 in every seed, Approach B at K in seed 1.
DEAD = {("synth_fine", "scratch_sal", "1", s) for s in (0, 1, 2)} | {("synth_fine", "approach_b", "K", 1)}


@pytest.fixture(scope="module")
def results(tmp_path_factory, fake_results):
    assert fake_results.VARIANT == VARIANT
    root = tmp_path_factory.mktemp("rep")
    return fake_results.build_tree(root, skip=SKIP, dead=DEAD,
                                   variants=["d2-pool2-eq2", "d3-pool2-eq2", "d4-pool1-eq2", "d4-conv3-eq2"])


@pytest.fixture(scope="module")
def runs(results, fake_results):
    return collect_runs(fake_results.metrics_paths(results))


@pytest.fixture
def build_tree(fake_results):
    return fake_results.build_tree


@pytest.fixture
def metrics_paths(fake_results):
    return fake_results.metrics_paths


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
    # approach_a lacks k=3 entirely: its rows are k=1 and K, and AVG (seeds complete in k) has no seeds.
    assert d[d.method == "approach_a"].k.tolist() == ["1", "K", "AVG"]
    a = d[(d.method == "approach_a") & (d.k == "AVG")].iloc[0]
    assert (a.n, a.seeds, a.ci_method, a.verdict) == (0, "", "none", "undetermined (needs 2+ seeds)")
    assert math.isnan(a.mean_diff) and math.isnan(a.boot_mean)
    a1 = d[(d.method == "approach_a") & (d.k == "1")].iloc[0]  # fixture: approach_a = baseline + 2 points
    assert (a1.n, a1.mean_diff, a1.seeds) == (3, pytest.approx(2.0), "0,1,2")
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
    assert halsal_main(["aggregate", "--runs-root", str(results / "runs"), "--runs-tsv", str(runs_tsv),
                        "--summary-csv", str(tmp_path / "summary.csv")]) == 0
    out = tmp_path / "report"
    assert halsal_main(["plots", "--runs", str(runs_tsv), "--outdir", str(out / "plots"), "--variant", VARIANT]) == 0
    for name in ("accuracy/alexnet/synth_fine/accuracy.png", "accuracy/alexnet/synth_fine/improvement.png",
                 "figure2_depth.png", "figure3_fusion.png", "learning_curves.png"):
        _png_ok(out / "plots" / name, 20_000)  # real plots, not the small "not run" panels
    inputs = {"synth_fine": {"images": str(results / "prepared/synth_fine/images.npy"),
                             "index": str(results / "datasets/synth_fine/index.tsv")}}
    assert halsal_main(["qualitative", "--runs", str(runs_tsv), "--outdir", str(out / "qual"), "--variant", VARIANT,
                        "--inputs", json.dumps(inputs), "--datasets", "synth_fine"]) == 0
    for name in ("success", "failure", "saliency"):
        _png_ok(out / "qual" / "synth_fine" / f"{name}.png", 50_000)


def test_qualitative_reads_the_given_files_not_the_results_layout(results, runs, tmp_path, monkeypatch, capsys):
    """--inputs names each dataset's images.npy and index.tsv; no results/prepared/... path is
    built: files moved out of the results/ layout give the same figures."""
    import shutil

    from halsal.report.qualitative import load_dataset

    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    monkeypatch.chdir(tmp_path)  # no results/ here
    images, index = tmp_path / "cache" / "fine-images.npy", tmp_path / "lists" / "fine.tsv"
    for src, dst in ((results / "prepared/synth_fine/images.npy", images), (results / "datasets/synth_fine/index.tsv", index)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    got_images, got_index = load_dataset(images, index, "synth_fine")
    assert len(got_images) == len(got_index) > 0
    runs_tsv = tmp_path / "runs.tsv"
    runs.to_csv(runs_tsv, sep="\t", index=False)
    args = ["qualitative", "--runs", str(runs_tsv), "--outdir", str(tmp_path / "q"), "--variant", VARIANT,
            "--datasets", "synth_fine", "--inputs"]
    assert halsal_main(args + [json.dumps({"synth_fine": {"images": str(images), "index": str(index)}})]) == 0
    for name in ("success", "failure", "saliency"):
        _png_ok(tmp_path / "q" / "synth_fine" / f"{name}.png", 50_000)
    capsys.readouterr()
    assert halsal_main(args + ["{}"]) == 2  # cases to show, no files given for the dataset: an error naming it
    assert "no images and index file given for dataset 'synth_fine'" in capsys.readouterr().err


def test_absent_run_sets_give_not_run_panels(tmp_path, monkeypatch, build_tree, metrics_paths):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from halsal.report.plots import ablation_plot
    from halsal.report.qualitative import case_grid

    results = build_tree(tmp_path, methods=("baseline", "approach_a"), ks=("1",), seeds=(0,))
    runs = collect_runs(metrics_paths(results))
    assert ablation_plot(runs, VARIANT, "depth", tmp_path / "f2.png") is False  # default variant only
    _png_ok(tmp_path / "f2.png", 2_000)
    assert case_grid(runs, "alexnet", "synth_fine", VARIANT, "success", None, tmp_path / "s.png") == 0  # reads no file
    _png_ok(tmp_path / "s.png", 2_000)


# --- saliency health ---------------------------------------------------------------------


def test_aggregate_flattens_the_saliency_object(results, runs, tmp_path):
    assert set(SAL_COLUMNS) <= set(runs.columns)
    base = runs[runs.method == "baseline"]
    assert base[SAL_COLUMNS].isna().all().all()  # no map, no statistics
    b = runs[(runs.method == "approach_b") & (runs.variant == VARIANT) & (runs.k == "3") & (runs.seed == 2)].iloc[0]
    assert b.sal_test_mean == pytest.approx(0.3) and b.sal_test_object_ratio == pytest.approx(2.5)
    assert b.sal_before_mean == pytest.approx(0.5) and b.sal_before_object_ratio == pytest.approx(1.0)
    assert b.sal_test_dead_fraction == 0 and b.sal_test_spatial_cv == pytest.approx(0.75 ** 0.5) and b.sal_test_n == 200
    killed = runs[(runs.method == "approach_b") & (runs.variant == VARIANT) & (runs.k == "K") & (runs.seed == 1)].iloc[0]
    assert killed.sal_test_dead_fraction == 1.0 and math.isnan(killed.sal_test_object_ratio)
    write_aggregate(runs, tmp_path / "runs.tsv", tmp_path / "summary.csv")
    back = read_runs(tmp_path / "runs.tsv")
    assert back.sal_test_dead_fraction.tolist() == pytest.approx(runs.sal_test_dead_fraction.tolist(), nan_ok=True)


def test_the_report_and_the_training_log_call_the_same_maps_dead(tmp_path):
    """A run whose test maps are all zero on exactly half the images is dead for the report's
    table and warning and for the training step's WARNING; one image fewer is alive for both."""
    from halsal.report.health import dead_mask
    from halsal.train.health import is_dead, saliency_stats

    maps = np.ones((8, 2, 2))
    maps[:4] = 0  # 4 of 8 all zero
    half, below = saliency_stats(maps), saliency_stats(maps[1:])  # 4 of 8, 3 of 7
    runs = pd.DataFrame({"sal_test_dead_fraction": [half["dead_fraction"], below["dead_fraction"]]})
    assert dead_mask(runs).tolist() == [True, False] == [is_dead(half), is_dead(below)]


def test_saliency_health_table_counts_dead_runs_and_means(runs):
    h = health_table(runs)
    main = h[h.variant == VARIANT].set_index(["method", "k"])
    assert "baseline" not in set(h.method)
    sal1 = main.loc[("scratch_sal", "1")]
    assert (sal1.dead, sal1.n_dead, sal1.n_runs, sal1.dead_seeds) == ("3 of 3", 3, 3, "0,1,2")
    assert sal1.test_mean == 0 and sal1.before_mean == pytest.approx(0.5) and math.isnan(sal1.test_object_ratio)
    bk = main.loc[("approach_b", "K")]
    assert (bk.dead, bk.dead_seeds) == ("1 of 3", "1")
    assert bk.test_mean == pytest.approx((0.1 + 0.0 + 0.3) / 3, abs=1e-4)  # the dead run's mean is 0
    assert bk.test_object_ratio == pytest.approx(2.5) and bk.before_object_ratio == pytest.approx(1.0)
    alive = main.loc[("approach_b", "1")]
    assert alive.dead == "0 of 3" and alive.test_mean == pytest.approx(0.2, abs=1e-4)
    assert ("approach_a", "3") not in main.index  # skipped: no runs, no row
    # Ablation runs keep their own rows (and are alive).
    assert (h[h.variant == "d2-pool2-eq2"].n_dead == 0).all() and len(h[h.variant == "d2-pool2-eq2"]) == 3


def test_dead_map_warning_names_method_dataset_ks_and_counts(runs, tmp_path):
    write_tables(runs, tmp_path, VARIANT, configured_archs=["alexnet"], datasets=["synth_fine"], methods=METHODS, ks=KS)
    for page in ("table_alexnet.html", "differences.html", "saliency_health.html"):
        text = (tmp_path / page).read_text()
        assert 'class="dead-warning"' in text, page
        assert text.index('class="dead-warning"') < text.index("<table"), page  # above the table
        assert "Baseline-RGB + scratch SAL on synth_fine" in text and "3 of 9 runs: k=1, 3 of 3 (seeds 0, 1, 2)" in text
        assert "Approach B on synth_fine" in text and "1 of 9 runs: k=K, 1 of 3 (seed 1)" in text
        assert "Baseline-RGB at test time" in text
        assert "Approach A on" not in text  # alive everywhere
    assert 'class="dead-warning"' not in (tmp_path / "table_resnet152.html").read_text()  # no ResNet runs
    health = pd.read_csv(tmp_path / "saliency_health.tsv", sep="\t", dtype={"k": str})
    assert health[(health.method == "approach_b") & (health.k == "K") & (health.variant == VARIANT)].n_dead.item() == 1


def test_no_warning_when_every_map_is_alive_and_a_killed_map_is_caught(tmp_path, build_tree, metrics_paths):
    import json

    results = build_tree(tmp_path / "t", ks=("1", "3"), seeds=(0,))
    runs = collect_runs(metrics_paths(results))
    assert dead_warnings(runs, VARIANT) == []
    write_tables(runs, tmp_path / "alive", VARIANT, configured_archs=["alexnet"])
    for page in ("table_alexnet.html", "differences.html", "saliency_health.html"):
        assert 'class="dead-warning"' not in (tmp_path / "alive" / page).read_text()
    # Kill one map in its metrics.json, as training would record it.
    path = next(p for p in metrics_paths(results) if "/approach_a/" in str(p) and "/k3/" in str(p))
    m = json.loads(path.read_text())
    m["saliency"]["test"].update(dead_fraction=1.0, mean=0.0, spatial_cv=0.0, object_ratio=None)
    path.write_text(json.dumps(m))
    runs = collect_runs(metrics_paths(results))
    (w,) = dead_warnings(runs, VARIANT)
    assert (w["method"], w["n_dead"], w["n"], w["per_k"][0][:3]) == ("approach_a", 1, 2, ("3", 1, 1))
    write_tables(runs, tmp_path / "dead", VARIANT, configured_archs=["alexnet"])
    text = (tmp_path / "dead" / "table_alexnet.html").read_text()
    assert "Approach A on synth_fine" in text and "1 of 2 runs: k=3, 1 of 1 (seed 0)" in text


# --- two-level bootstrap ------------------------------------------------------------------


def test_two_level_bootstrap_zero_when_method_equals_baseline():
    same = [np.zeros(300), np.zeros(250), np.zeros(300)]
    assert two_level_bootstrap(same) == (0.0, 0.0, 0.0)


def test_two_level_bootstrap_exact_mean_and_all_right_case():
    rng = np.random.default_rng(1)
    base = [rng.random(200) < p for p in (0.4, 0.5, 0.6)]  # baseline right/wrong per image, 3 seeds
    # The method is right on every image the baseline gets wrong (and on the others too).
    diffs = [(1.0 - b) * 100 for b in base]
    mean, low, high = two_level_bootstrap(diffs)
    assert mean == pytest.approx(np.mean([100 * (1 - b.mean()) for b in base]))
    assert low < mean < high
    assert two_level_bootstrap([np.full(50, 100.0), np.full(70, 100.0)]) == (100.0, 100.0, 100.0)
    assert two_level_bootstrap(diffs) == (mean, low, high)  # deterministic


def test_two_level_bootstrap_narrower_than_t_with_two_seeds_and_many_images():
    n = 2000
    d = [np.r_[np.full(20, 100.0), np.zeros(n - 20)], np.r_[np.full(60, 100.0), np.zeros(n - 60)]]  # 1 and 3 points
    t_mean, t_low, t_high, how = mean_ci([x.mean() for x in d])
    mean, low, high = two_level_bootstrap(d)
    assert how == "t" and mean == pytest.approx(t_mean) == pytest.approx(2.0)
    assert high - low < (t_high - t_low) / 5 and low > 0 > t_low  # decides where the t interval cannot


def test_paired_differences_report_both_intervals(runs):
    d = paired_differences(runs, VARIANT)
    b1 = d[(d.method == "approach_b") & (d.k == "1")].iloc[0]
    assert b1.n_images == "200" and b1.boot_mean == pytest.approx(b1.mean_diff)  # predictions match test_acc
    assert b1.boot_low <= b1.boot_mean <= b1.boot_high and "two-level bootstrap" in b1.boot_method
    assert b1.ci_method == "t"


# --- SMIC naming ----------------------------------------------------------------------------


def test_smic_with_spectral_residual_maps_is_named_and_not_compared(tmp_path, build_tree, metrics_paths):
    import json

    results = build_tree(tmp_path / "t", datasets=("flowers102",), methods=("baseline", "smic"), ks=("1",),
                         seeds=(0,), synthetic=False)
    # The paper's Flowers in full (config kind, 102 classes), so that Baseline-RGB is compared.
    full = {"dataset_kinds": {"flowers102": "flowers102"}, "configured_archs": ["alexnet"]}
    runs = collect_runs(metrics_paths(results)).assign(num_classes=102)
    out = write_tables(runs, tmp_path / "sr", VARIANT, **full)
    smic = out["alexnet"][(out["alexnet"].method == "smic") & (out["alexnet"].k == "1")].iloc[0]
    assert smic.label == SMIC_SPECTRAL_LABEL and smic.comparison != "comparable"
    wide = pd.read_csv(tmp_path / "sr" / "table_alexnet.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = wide[wide.method == SMIC_SPECTRAL_LABEL].iloc[0]
    assert row["k=1 paper"] == "37.6" and row["k=1 diff"] == "n/c"  # paper value for reference, no difference
    base = wide[wide.method == "Baseline-RGB"].iloc[0]
    assert base["k=1 diff"] not in ("", "n/c")  # flowers102 is the paper's dataset: compared
    html = (tmp_path / "sr" / "table_alexnet.html").read_text()
    assert SMIC_SPECTRAL_LABEL in html and "SMIC*" not in html.split("<table")[1].split("</table>")[0]
    # Maps from a user's folder: the paper's SMIC, compared, even where the folder's path holds
    # the words of the spectral-residual label (the source is read from the label's form, not its words).
    for p in metrics_paths(results):
        m = json.loads(p.read_text())
        if m["method"] == "smic":
            m["saliency_maps"] = "precomputed maps from /data/spectral residual (Hou & Zhang 2007) maps"
            p.write_text(json.dumps(m))
    out = write_tables(collect_runs(metrics_paths(results)).assign(num_classes=102), tmp_path / "folder", VARIANT, **full)
    smic = out["alexnet"][(out["alexnet"].method == "smic") & (out["alexnet"].k == "1")].iloc[0]
    assert smic.label == "SMIC*" and smic.comparison == "comparable"
    assert smic["diff"] == pytest.approx(smic["mean"] - 37.6)


# --- gallery labels -------------------------------------------------------------------------


def test_map_summary_labels_dead_flat_and_object_ratio():
    from halsal.report.qualitative import map_label, map_summary

    box = [7, 7, 21, 21]  # the centre half of a 28 px input
    m = np.full((8, 8), 0.5)
    m[2:6, 2:6] = 2.5
    s = map_summary(m, box, 28)
    assert s["mean"] == pytest.approx(1.0) and s["object_ratio"] == pytest.approx(2.5) and not s["dead"]
    assert map_label(s) == "mean 1\nobject ratio 2.50"
    assert map_label(map_summary(np.zeros((8, 8)), box, 28)) == "dead (all zero)"
    flat = map_summary(np.full((8, 8), 0.3), box, 28)
    assert flat["flat"] and flat["object_ratio"] == pytest.approx(1.0) and "(flat)" in map_label(flat)
    assert map_summary(m, [np.nan] * 4, 28)["object_ratio"] is None
