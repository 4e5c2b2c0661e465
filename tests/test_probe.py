"""The linear-probe reference row (issue 25): scaling and C chosen together on validation only,
a C grid that grows past whichever edge the best C is on, and the choice recorded per run."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from halsal.train import probe


def _problem(seed=0, classes=4, per_role=(3, 6, 6), dim=24, scale=None):
    """Gaussian classes; rows 0..N-1 of ``features``, and the split's rows, labels, roles and ranks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim))
    rows, feats = [], []
    for c in range(classes):
        for role, n in zip(("train", "val", "test"), per_role):
            for rank in range(n):
                rows.append({"row": len(feats), "label": c, "class_name": f"c{c}", "role": role, "rank": rank})
                feats.append(centres[c] + rng.normal(0, 1.5, dim))
    feats = np.asarray(feats, dtype=np.float32)
    if scale is not None:
        feats = feats * scale
    return feats, pd.DataFrame(rows)


def _edges(grid: str) -> tuple[float, float]:
    lo, hi = grid.split("..")
    return float(lo), float(hi)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choice_is_the_best_on_validation_and_not_at_the_grid_edge(seed):
    feats, split = _problem(seed)
    r = probe.probe_split(feats, split, "K")
    lo, hi = _edges(r["C_grid"])
    assert r["scaling"] in probe.SCALINGS
    assert lo < r["C"] < hi or r["C"] in probe.C_LIMITS  # never at a searched edge short of the limits
    # brute force over the final grid and both scalings: the recorded choice has the best val accuracy
    tr, va = split[split.role == "train"], split[split.role == "val"]
    best = 0.0
    for scaling in probe.SCALINGS:
        x_tr, x_va = feats[tr.row], feats[va.row]
        if scaling == "standardised":
            sc = StandardScaler().fit(x_tr)
            x_tr, x_va = sc.transform(x_tr), sc.transform(x_va)
        c = lo
        while c <= hi * 1.0001:
            clf = LogisticRegression(C=c, max_iter=2000).fit(x_tr, tr.label)
            best = max(best, float((clf.predict(x_va) == va.label.to_numpy()).mean()))
            c *= 10
    assert r["val_acc"] == pytest.approx(best)


def test_grid_grows_past_the_edge_where_the_best_c_sits():
    """Features scaled down by 1e-4 need a large C (raw); the starting grid's top edge (100) is too small."""
    feats, split = _problem(3, scale=1e-4)
    r = probe.probe_split(feats, split, "K", cs=(0.01, 0.1, 1.0))
    lo, hi = _edges(r["C_grid"])
    assert hi > 1.0 or lo < 0.01  # the grid grew
    assert lo < r["C"] < hi or r["C"] in probe.C_LIMITS


def test_choice_uses_validation_only():
    """Changing the test images (features and labels) changes nothing but the test accuracy."""
    feats, split = _problem(4)
    a = probe.probe_split(feats, split, 2)
    test_rows = split.loc[split.role == "test", "row"].to_numpy()
    rng = np.random.default_rng(9)
    feats2 = feats.copy()
    feats2[test_rows] = rng.normal(0, 5, feats2[test_rows].shape)
    split2 = split.copy()
    split2.loc[split2.role == "test", "label"] = rng.permutation(split2.loc[split2.role == "test", "label"].to_numpy())
    b = probe.probe_split(feats2, split2, 2)
    for key in ("C", "scaling", "C_grid", "val_acc", "n_train", "n_val"):
        assert a[key] == b[key], key
    assert a["test_acc"] != b["test_acc"]
