"""A linear-probe reference row (not in the paper): logistic regression on frozen features.

The simplest use of the same backbone: its pooled features (the input of the top layer, no
saliency branch, no training of the network), centre crops at the run's input size, then
scikit-learn's multinomial logistic regression on the same k-shot train images, with the same
splits and seeds as Step 2. The feature scaling (raw, or standardised on the train images) and
the inverse regularisation ``C`` are chosen together on the split's validation images (never on
test); the test accuracy of that choice is the row's value. The C grid starts at decades
10^-3..10^1 and grows by a decade past whichever edge the best C sits on, so the chosen C is
never at the grid's edge (up to :data:`C_LIMITS`). Each row records its scaling, its C and the
grid searched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from halsal.data.manifest import ok_rows, open_images, read_prepared_manifest
from halsal.data.splits import relabel, select
from halsal.errors import HalsalError
from halsal.io import torch_load, write_tsv
from halsal.models import build_model, shape_options, state_classes
from halsal.models.weights import load_backbone, normalisation
from halsal.train.device_cache import DeviceImages

METHOD = "linear_probe"
CS = tuple(10.0 ** e for e in range(-3, 2))  # the starting grid of inverse L2 strengths (1e-3 .. 10)
C_LIMITS = (1e-6, 1e5)  # the grid grows past an edge up to these
SCALINGS = ("raw", "standardised")  # chosen on validation with C


@torch.no_grad()
def pooled_features(arch: str, backbone_pt, images: np.ndarray, input_size: int, device=torch.device("cpu"),
                    batch_size: int | None = None) -> np.ndarray:
    """(N, D) features of the backbone's top-layer input for uint8 ``images`` (N, S, S, 3),
    centre-cropped to ``input_size`` and normalised as the weights expect."""
    state = torch_load(backbone_pt)
    model = build_model(arch, state_classes(arch, state), saliency="none", **shape_options(arch, state))
    load_backbone(model, state)
    top = model.top_layer()
    for name, module in model.named_modules():  # the top layer -> identity: the pooled features come out
        if module is top:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
    model.eval().to(device)
    data = DeviceImages(images, np.zeros(len(images)), device, input_size, False, False, normalisation(arch))
    return torch.cat([model(x).float().cpu() for x, _ in data.eval_batches(batch_size)]).numpy()


def probe_split(features: np.ndarray, split: pd.DataFrame, k, cs=CS) -> dict:
    """Fit on the k-shot train rows of ``split``, choose C on val, score test."""
    from sklearn.linear_model import LogisticRegression

    split, names = relabel(split)
    if len(names) < 2:
        raise HalsalError(f"a linear probe needs at least 2 classes, the split has {len(names)}")
    parts = {role: select(split, role, k if role == "train" else None) for role in ("train", "val", "test")}
    for role, rows in parts.items():
        if rows.empty:
            raise HalsalError(f"the split has no {role} images for k={k}")
    xs = {role: features[rows["row"].to_numpy()] for role, rows in parts.items()}
    ys = {role: rows["label"].to_numpy() for role, rows in parts.items()}
    scaled = {"raw": xs, "standardised": _standardised(xs)}
    tried: dict[tuple[str, float], tuple[float, np.ndarray, np.ndarray]] = {}  # val acc, weights, bias
    models = {s_: LogisticRegression(max_iter=2000, warm_start=True) for s_ in SCALINGS}  # along the C path

    def predict(scaling: str, coef: np.ndarray, bias: np.ndarray, role: str) -> np.ndarray:
        return models[scaling].classes_[np.argmax(scaled[scaling][role] @ coef.T + bias, axis=1)]

    grid = sorted(cs)
    while True:
        for scaling in SCALINGS:
            for c in grid:
                if (scaling, c) in tried:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # lbfgs convergence notes at large C on tiny k
                    clf = models[scaling].set_params(C=c).fit(scaled[scaling]["train"], ys["train"])
                coef, bias = clf.coef_.copy(), clf.intercept_.copy()
                tried[scaling, c] = (float((predict(scaling, coef, bias, "val") == ys["val"]).mean()), coef, bias)
        # best val; ties keep raw features and then the stronger regularisation (the smaller C)
        val, scaling, c = max((tried[s_, c_][0], -SCALINGS.index(s_), -c_) for s_, c_ in tried)
        scaling, c = SCALINGS[-scaling], -c
        if c == grid[0] and c / 10 >= C_LIMITS[0]:
            grid.insert(0, c / 10)
        elif c == grid[-1] and c * 10 <= C_LIMITS[1]:
            grid.append(c * 10)
        else:
            break
    test = float((predict(scaling, *tried[scaling, c][1:], "test") == ys["test"]).mean())
    return {"C": c, "scaling": scaling, "C_grid": f"{grid[0]:g}..{grid[-1]:g}", "val_acc": val, "test_acc": test, "num_classes": len(names),
            "n_train": len(ys["train"]), "n_val": len(ys["val"]), "n_test": len(ys["test"])}


def _standardised(xs: dict) -> dict:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xs["train"])  # the train images' statistics only
    return {role: scaler.transform(x) for role, x in xs.items()}


def linear_probe(*, arch: str, dataset: str, backbone_pt, prepared, runs, input_size: int, out_tsv,
                 device=torch.device("cpu"), synthetic: bool = False, variant: str = "") -> pd.DataFrame:
    """The probe for every ``(k, seed, split_tsv)`` of ``runs``; one row each in ``out_tsv``."""
    cache = open_images(prepared)
    splits = {str(s): pd.read_csv(s, sep="\t", keep_default_na=False) for _, _, s in runs}
    man = read_prepared_manifest(prepared)  # images that prepare skipped are left out, as in Step 2
    splits = {s: df[ok_rows(man, df["row"])] for s, df in splits.items()}
    used = np.unique(np.concatenate([df["row"].to_numpy() for df in splits.values()]))
    got = pooled_features(arch, backbone_pt, np.asarray(cache[used]), input_size, device)
    feats = np.zeros((len(cache), got.shape[1]), dtype=np.float32)
    feats[used] = got
    rows = []
    for k, seed, split_tsv in runs:
        r = probe_split(feats, splits[str(split_tsv)], str(k))
        rows.append({"arch": arch, "dataset": dataset, "method": METHOD, "variant": variant, "k": str(k),
                     "seed": int(seed), "synthetic": bool(synthetic), "input_size": input_size, **r})
    table = pd.DataFrame(rows)
    write_tsv(out_tsv, table)
    return table
