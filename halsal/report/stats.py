"""What the paper does not report: is a method's gain over Baseline-RGB larger than the noise?

For each arch, dataset and k the test accuracies of a method and of the baseline are paired
by seed (same split, same k-shot images), and the mean of the per-seed differences gets two
95% confidence intervals, side by side:

- over seeds only (:func:`mean_ci`): Student's t for few seeds (the paper's protocol has
  three), a percentile bootstrap from ``BOOTSTRAP_MIN_SEEDS`` seeds on. With 2-3 seeds its
  t quantile (12.7, 4.3) makes it too wide to decide much;
- a paired two-level bootstrap (:func:`two_level_bootstrap`) on the per-image predictions
  every run writes (predictions.tsv): resample seeds, then the test images within each
  resampled seed, the same images for the method and the baseline (a seed's test set is the
  same for both). It uses the test images as well as the seeds, so it can decide where the
  seed-level interval cannot; with one seed it covers image noise only.

An interval that contains 0 is reported as "within noise".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from halsal import spec
from halsal.report.aggregate import sort_ks

BOOTSTRAP_MIN_SEEDS = 10
BOOT_RESAMPLES = 2000
BOOT_SEED = 0
BOOT_METHOD = "two-level bootstrap (seeds, then test images)"
DIFF_COLUMNS = ["arch", "dataset", "method", "reference", "k", "n", "mean_diff", "ci_low", "ci_high",
                "ci_method", "verdict", "n_images", "boot_mean", "boot_low", "boot_high", "boot_method",
                "boot_verdict", "seeds"]


def mean_ci(diffs, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float, str]:
    """Mean of paired differences and its confidence interval: (mean, low, high, method)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan"), "none"
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan"), "none (1 seed)"
    if len(d) < BOOTSTRAP_MIN_SEEDS:
        if np.allclose(d, d[0]):  # zero spread: the t interval degenerates to a point
            return mean, mean, mean, "t"
        low, high = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
        return mean, float(low), float(high), "t"
    res = stats.bootstrap((d,), np.mean, confidence_level=confidence, method="percentile",
                          rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high), "bootstrap"


def verdict(n: int, low: float, high: float) -> str:
    if n < 2 or np.isnan(low):
        return "undetermined (needs 2+ seeds)"
    return interval_verdict(low, high)


def interval_verdict(low: float, high: float) -> str:
    if np.isnan(low):
        return "undetermined"
    if low <= 0 <= high:
        return "within noise"
    return "better than reference" if low > 0 else "worse than reference"


def _resampled_means(values: np.ndarray, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Means of ``len(values)`` draws with replacement from ``values``, ``shape`` times over.

    Drawing with replacement only matters through how often each distinct value is drawn, a
    multinomial count: exact, and O(distinct values) per resample instead of O(images)
    (per-image differences of two classifiers take the values -1, 0, 1 points x 100)."""
    uniq, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
    n = counts.sum()
    draws = rng.multinomial(n, counts / n, size=shape)
    return draws @ uniq / n


def two_level_bootstrap(per_seed, confidence: float = 0.95, n_boot: int = BOOT_RESAMPLES,
                        seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """Paired two-level percentile bootstrap of the mean over seeds of per-seed mean differences.

    ``per_seed``: one entry per seed, each a 1-D array of per-image differences (method -
    reference, in points, for the same test images) or a list of such arrays whose means are
    averaged (test sets drawn independently, e.g. ks whose images differ). Each resample draws
    the seeds with replacement, then for every drawn seed its images with replacement; the
    statistic is the mean over the drawn seeds. Returns (estimate, low, high); deterministic
    for a given ``seed``.
    """
    groups = [[np.asarray(c, dtype=float) for c in (e if isinstance(e, (list, tuple)) else [e])] for e in per_seed]
    groups = [[c for c in g if len(c)] for g in groups]
    groups = [g for g in groups if g]
    if not groups:
        return math.nan, math.nan, math.nan
    estimate = float(np.mean([np.mean([c.mean() for c in g]) for g in groups]))
    rng = np.random.default_rng(seed)
    s = len(groups)
    pick = rng.integers(0, s, size=(n_boot, s))  # level 1: seeds
    # level 2: images, for every (resample, slot) and every seed that could be drawn there
    means = np.stack([np.mean([_resampled_means(c, (n_boot, s), rng) for c in g], axis=0) for g in groups])
    stat = means[pick, np.arange(n_boot)[:, None], np.arange(s)[None, :]].mean(axis=1)
    alpha = (1 - confidence) / 2 * 100
    low, high = np.percentile(stat, [alpha, 100 - alpha])
    return estimate, float(low), float(high)


def _correct(run_dir, test_acc: float, cache: dict) -> pd.Series | None:
    """Per-image correctness (index: index.tsv row) from a run's predictions.tsv, or None when the
    file is absent or disagrees with the run's test accuracy (a stale file)."""
    if run_dir in cache:
        return cache[run_dir]
    p = Path(str(run_dir)) / "predictions.tsv"
    out = None
    if p.is_file():
        pred = pd.read_csv(p, sep="\t", usecols=["row", "label", "pred"])
        ok = pd.Series((pred.pred.values == pred.label.values).astype(float), index=pred.row.values)
        if len(ok) and not (test_acc == test_acc and abs(ok.mean() - test_acc) > 0.5 / len(ok)):
            out = ok[~ok.index.duplicated()]
    cache[run_dir] = out
    return out


def _image_diffs(dirs: dict, method: str, reference: str, k: str, seed: int, cache: dict) -> np.ndarray | None:
    """Per-image (method - reference) correctness in points, on the test images both runs share."""
    a, b = dirs.get((method, k, seed)), dirs.get((reference, k, seed))
    if a is None or b is None:
        return None
    ca, cb = _correct(*a, cache), _correct(*b, cache)
    if ca is None or cb is None:
        return None
    both = ca.index.intersection(cb.index)
    return pd.Series((ca[both].values - cb[both].values) * 100.0, index=both) if len(both) else None


def _bootstrap_cell(per_seed: list, confidence: float) -> dict:
    """The bootstrap columns of one row from per-seed lists of per-k image-difference Series."""
    if not per_seed:
        return {"n_images": "", "boot_mean": math.nan, "boot_low": math.nan, "boot_high": math.nan,
                "boot_method": "none (no seeds)", "boot_verdict": "undetermined"}
    if any(d is None for comps in per_seed for d in comps):
        return {"n_images": "", "boot_mean": math.nan, "boot_low": math.nan, "boot_high": math.nan,
                "boot_method": "none (predictions.tsv missing, or disagreeing with metrics.json's test_acc)",
                "boot_verdict": "undetermined"}
    groups, sizes = [], []
    for comps in per_seed:
        same = all(c.index.equals(comps[0].index) for c in comps)
        if same:  # one test set for every k of this seed (the splits' design): resample images once
            groups.append(np.mean([c.values for c in comps], axis=0))
            sizes.append(len(comps[0]))
        else:
            groups.append([c.values for c in comps])
            sizes.append(min(len(c) for c in comps))
    mean, low, high = two_level_bootstrap(groups, confidence)
    n_images = str(sizes[0]) if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
    return {"n_images": n_images, "boot_mean": mean, "boot_low": low, "boot_high": high,
            "boot_method": f"{BOOT_METHOD}, {BOOT_RESAMPLES} resamples", "boot_verdict": interval_verdict(low, high)}


def paired_differences(runs: pd.DataFrame, variant: str, reference: str = spec.BASELINE,
                       methods=spec.FROM_STEP1, confidence: float = 0.95) -> pd.DataFrame:
    """Per arch/dataset/k (and AVG over the ks present for every seed): method - reference, in points.

    Two intervals per row: over seeds (``ci_*``, :func:`mean_ci`) and the two-level bootstrap
    over seeds and test images (``boot_*``, :func:`two_level_bootstrap`). The latter reads each
    run's predictions.tsv through the runs table's ``run_dir``: written by the same finetune job
    as the metrics.json that `halsal aggregate` read, so it is as current as runs.tsv.
    """
    rows = []
    from halsal.report.aggregate import main_runs

    main = main_runs(runs, variant)
    cache: dict = {}
    for (arch, dataset), grp in main.groupby(["arch", "dataset"], sort=True):
        acc = grp.pivot_table(index=["k", "seed"], columns="method", values="test_acc", aggfunc="mean") * 100
        ks = sort_ks(grp.k)
        dirs = {}
        if "run_dir" in grp:
            for r in grp.itertuples():
                dirs.setdefault((r.method, str(r.k), int(r.seed)), (r.run_dir, float(r.test_acc)))
        for method in methods:
            if method not in acc or reference not in acc:
                continue
            diff = (acc[method] - acc[reference]).dropna()
            per_k = [(k, diff.xs(k, level="k")) for k in ks if k in diff.index.get_level_values("k")]
            # AVG: per seed, the mean over every k of the table, only for seeds complete in k.
            wide = diff.unstack("k").reindex(columns=ks)
            avg = wide.dropna().mean(axis=1)
            for k, d in per_k + [("AVG", avg)]:
                mean, low, high, how = mean_ci(d.values, confidence)
                cell_ks = ks if k == "AVG" else [k]
                per_seed = [[_image_diffs(dirs, method, reference, kk, int(seed), cache) for kk in cell_ks]
                            for seed in sorted(d.index)]
                rows.append({"arch": arch, "dataset": dataset, "method": method, "reference": reference, "k": k,
                             "n": len(d), "mean_diff": mean, "ci_low": low, "ci_high": high, "ci_method": how,
                             "verdict": verdict(len(d), low, high), **_bootstrap_cell(per_seed, confidence),
                             "seeds": ",".join(str(s) for s in sorted(d.index))})
    out = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    return out.round({"mean_diff": 4, "ci_low": 4, "ci_high": 4, "boot_mean": 4, "boot_low": 4, "boot_high": 4})
