"""What the paper does not report: is a method's gain over Baseline-RGB larger than seed noise?

For each arch, dataset and k the test accuracies of a method and of the baseline are paired
by seed (same split, same k-shot images), and the mean of the per-seed differences gets a
95% confidence interval: Student's t for few seeds (the paper's protocol has three), a
percentile bootstrap from ``BOOTSTRAP_MIN_SEEDS`` seeds on. An interval that contains 0 is
reported as "within noise".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from halsal.report.aggregate import sort_ks

BOOTSTRAP_MIN_SEEDS = 10
DIFF_COLUMNS = ["arch", "dataset", "method", "reference", "k", "n", "mean_diff", "ci_low", "ci_high",
                "ci_method", "verdict", "seeds"]


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
    if low <= 0 <= high:
        return "within noise"
    return "better than reference" if low > 0 else "worse than reference"


def paired_differences(runs: pd.DataFrame, variant: str, reference: str = "baseline",
                       methods=("approach_a", "approach_b"), confidence: float = 0.95) -> pd.DataFrame:
    """Per arch/dataset/k (and AVG over the ks present for every seed): method - reference, in points."""
    rows = []
    from halsal.report.aggregate import main_runs

    main = main_runs(runs, variant)
    for (arch, dataset), grp in main.groupby(["arch", "dataset"], sort=True):
        acc = grp.pivot_table(index=["k", "seed"], columns="method", values="test_acc", aggfunc="mean") * 100
        ks = sort_ks(grp.k)
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
                rows.append({"arch": arch, "dataset": dataset, "method": method, "reference": reference, "k": k,
                             "n": len(d), "mean_diff": mean, "ci_low": low, "ci_high": high, "ci_method": how,
                             "verdict": verdict(len(d), low, high),
                             "seeds": ",".join(str(s) for s in sorted(d.index))})
    out = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    return out.round({"mean_diff": 4, "ci_low": 4, "ci_high": 4})
