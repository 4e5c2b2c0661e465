"""Report figures, one seaborn style: accuracy vs k, improvement over Baseline-RGB vs k,
Figure 2 (accuracy vs saliency depth), Figure 3 (accuracy vs fusion point), learning curves.

Every figure that comes from synthetic runs carries the synthetic label in its title. A
figure whose runs are absent is still written, as a panel saying "not run in this
configuration", so the report never points at a file that does not exist.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from halsal.errors import HalsalError  # noqa: E402
from halsal.io import atomic_write  # noqa: E402
from halsal import spec  # noqa: E402
from halsal.report.aggregate import SYNTHETIC_NOTE, any_synthetic, k_sort_key, sort_ks  # noqa: E402
from halsal.report.paper import METHOD_LABELS, method_labels  # noqa: E402
from halsal.report.stats import mean_ci  # noqa: E402

# Fusion points in network order (AlexNet's, then ResNet-152's); unknown ones sort last.
FUSION_ORDER = [f for arch in spec.ARCHS for f in spec.FUSION_POINTS[arch]]
PALETTE = dict(zip(spec.METHOD_NAMES, sns.color_palette("colorblind", len(spec.METHOD_NAMES))))


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)


def title_for(text: str, synthetic: bool) -> str:
    return f"{text}\n{SYNTHETIC_NOTE}" if synthetic else text


def save(fig, path) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def placeholder(path, title: str, message: str, synthetic: bool = False) -> None:
    """A figure that says why there is nothing to plot (keeps the report's file list fixed)."""
    set_style()
    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.axis("off")
    ax.set_title(title_for(title, synthetic), fontsize=10)
    ax.text(0.5, 0.45, message, ha="center", va="center", wrap=True, fontsize=10, color="#555")
    save(fig, path)


def _k_positions(ks) -> dict:
    return {k: i for i, k in enumerate(sort_ks(ks))}


def accuracy_vs_k(runs: pd.DataFrame, arch: str, dataset: str, path) -> None:
    """Mean test accuracy per method over k, band = ± std over seeds (k on an ordinal axis: K is last)."""
    set_style()
    sel = runs[(runs.arch == arch) & (runs.dataset == dataset)].copy()
    pos = _k_positions(sel.k)
    sel["x"] = sel.k.map(pos)
    sel["acc"] = sel.test_acc * 100
    labels = method_labels(sel)  # SMIC with spectral-residual maps is named so
    sel["Method"] = sel.method.map(labels)
    order = [labels[m] for m in spec.METHOD_NAMES if m in set(sel.method)]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    sns.lineplot(data=sel, x="x", y="acc", hue="Method", hue_order=order, errorbar="sd", marker="o",
                 palette={labels[m]: c for m, c in PALETTE.items()}, ax=ax)
    ax.set_xticks(list(pos.values()), list(pos.keys()))
    ax.set_xlabel("training images per class (k)")
    ax.set_ylabel("test accuracy (%)")
    n = sel.groupby(["method", "k"]).seed.nunique().max()
    ax.set_title(title_for(f"{spec.arch_label(arch)} / {dataset}: accuracy vs k "
                           f"(mean, band \u00b1 std over {n} seed(s))", any_synthetic(sel)), fontsize=10)
    save(fig, path)


def improvement_vs_k(runs: pd.DataFrame, arch: str, dataset: str, path, reference: str = spec.BASELINE) -> None:
    """Per-seed paired difference to Baseline-RGB, mean with its 95% t interval (as in the stats table)."""
    set_style()
    sel = runs[(runs.arch == arch) & (runs.dataset == dataset)]
    acc = sel.pivot_table(index=["k", "seed"], columns="method", values="test_acc", aggfunc="mean") * 100
    methods = [m for m in spec.METHOD_NAMES if m != reference and m in acc]
    if reference not in acc or not methods:
        placeholder(path, f"{dataset}: improvement over {METHOD_LABELS[reference]}",
                    f"not run in this configuration: needs {METHOD_LABELS[reference]} and another method",
                    any_synthetic(sel))
        return
    ks = sort_ks(sel.k)
    pos = _k_positions(ks)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.axhline(0, color="#444", lw=1, ls="--")
    for m in methods:
        pts = []
        for k in ks:
            d = (acc[m] - acc[reference]).dropna()
            d = d.xs(k, level="k") if k in d.index.get_level_values("k") else pd.Series(dtype=float)
            if len(d):
                pts.append((pos[k], *mean_ci(d.values)[:3]))
        if not pts:
            continue
        x, mean, low, high = map(np.array, zip(*pts))
        ax.plot(x, mean, marker="o", color=PALETTE[m], label=method_labels(sel)[m])
        ok = ~np.isnan(low)
        ax.fill_between(x[ok], low[ok], high[ok], color=PALETTE[m], alpha=0.15)
    ax.set_xticks(list(pos.values()), list(pos.keys()))
    ax.set_xlabel("training images per class (k)")
    ax.set_ylabel(f"accuracy \u2212 {METHOD_LABELS[reference]} (points)")
    ax.legend(fontsize=8)
    ax.set_title(title_for(f"{spec.arch_label(arch)} / {dataset}: improvement over "
                           f"{METHOD_LABELS[reference]} (band: 95% t CI over seeds)", any_synthetic(sel)), fontsize=10)
    save(fig, path)


def ablation_plot(runs: pd.DataFrame, default_variant: str, factor: str, path) -> bool:
    """Figure 2 (``factor='depth'``) or Figure 3 (``factor='fusion'``); False if it drew a placeholder.

    Uses the runs whose variant differs from the default only in ``factor``; needs at least two
    values of it. One panel per (arch, dataset, k); Baseline-RGB (no saliency branch, so no
    variant dependence) is the dashed reference line at the same k.
    """
    from halsal.spec import parse_variant

    set_style()
    d = parse_variant(default_variant)
    fixed = [f for f in ("depth", "fusion", "modulation") if f != factor]
    sal = runs[(runs.method != spec.BASELINE)]
    for f in fixed:
        sal = sal[sal[f].astype(str) == str(d[f])]
    name = {"depth": "Figure 2: accuracy vs saliency-branch depth (conv layers)",
            "fusion": "Figure 3: accuracy vs fusion point"}[factor]
    groups = [g for g, grp in sal.groupby(["arch", "dataset", "k"]) if grp[factor].nunique() >= 2]
    if not groups:
        placeholder(path, name, f"not run in this configuration: no runs that vary the {factor} "
                    f"(default variant {default_variant} only)", any_synthetic(runs))
        return False
    groups.sort(key=lambda g: (g[0], g[1], k_sort_key(g[2])))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 3.8), squeeze=False)
    for ax, (arch, dataset, k) in zip(axes[0], groups):
        sub = sal[(sal.arch == arch) & (sal.dataset == dataset) & (sal.k == k)]
        varied = sub.groupby("method")[factor].nunique()
        sub = sub[sub.method.isin(varied[varied >= 2].index)].copy()  # a single point is not a curve
        sub["acc"] = sub.test_acc * 100
        labels = method_labels(sub)
        sub["Method"] = sub.method.map(labels)
        if factor == "fusion":
            levels = sorted(set(sub.fusion), key=lambda f: (FUSION_ORDER.index(f) if f in FUSION_ORDER else 99, f))
            sub["x"] = sub.fusion.map({f: i for i, f in enumerate(levels)})
        else:
            levels = sorted(set(sub.depth))
            sub["x"] = sub.depth
        sns.lineplot(data=sub, x="x", y="acc", hue="Method", errorbar="sd", marker="o", ax=ax,
                     palette={labels[m]: c for m, c in PALETTE.items()})
        base = runs[(runs.method == spec.BASELINE) & (runs.arch == arch) & (runs.dataset == dataset) & (runs.k == k)]
        if len(base):
            ax.axhline(base.test_acc.mean() * 100, color=PALETTE[spec.BASELINE], ls="--", label=METHOD_LABELS[spec.BASELINE])
            ax.legend(fontsize=8)
        if factor == "fusion":
            ax.set_xticks(range(len(levels)), [f"before {f}" if f.startswith("pool") else f"after {f}" for f in levels],
                          rotation=30)
        else:
            ax.set_xticks(levels)
        ax.set_xlabel({"depth": "conv layers in the saliency branch", "fusion": "fusion point"}[factor])
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{spec.arch_label(arch)} / {dataset} / k={k}", fontsize=9)
    fig.suptitle(title_for(name, any_synthetic(runs)), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


def choose_curve_run(runs: pd.DataFrame, dataset=None, k=None, seed=None) -> tuple:
    """(arch, dataset, k, seed) for the learning curves: the given values, else the first arch and
    dataset, the largest k, the first seed."""
    if not len(runs):
        return None
    sel = runs
    for col, val in (("dataset", dataset), ("k", None if k is None else str(k)), ("seed", seed)):
        if val is not None:
            sel = sel[sel[col].astype(str) == str(val)]
    if not len(sel):
        raise HalsalError(f"no finished run matches the learning-curve choice dataset={dataset} k={k} seed={seed}; "
                          "pick one listed in results/tables/runs.tsv")
    arch, ds = sel.arch.iloc[0], sel.dataset.iloc[0]
    sel = sel[(sel.arch == arch) & (sel.dataset == ds)]
    kk = sort_ks(sel.k)[-1]
    return arch, ds, kk, int(sel[sel.k == kk].seed.min())


def learning_curves(runs: pd.DataFrame, variant: str, path, dataset=None, k=None, seed=None) -> bool:
    """Train loss and validation accuracy per epoch, every method of one (arch, dataset, k, seed)."""
    set_style()
    from halsal.report.aggregate import main_runs

    main = main_runs(runs, variant)
    choice = choose_curve_run(main, dataset, k, seed)
    if choice is None:
        placeholder(path, "Learning curves", "no finished runs")
        return False
    arch, ds, kk, sd = choice
    sel = main[(main.arch == arch) & (main.dataset == ds) & (main.k == kk) & (main.seed == sd)]
    frames = []
    labels = method_labels(sel)
    for _, r in sel.iterrows():
        hist = Path(r.run_dir) / "history.tsv"
        if hist.exists():
            h = pd.read_csv(hist, sep="\t")
            h["Method"] = labels[r.method]
            h["best_epoch"] = r.best_epoch
            frames.append(h)
    if not frames:
        placeholder(path, "Learning curves", f"no history.tsv beside the runs of {arch}/{ds}/k{kk}/seed{sd}",
                    any_synthetic(sel))
        return False
    hist = pd.concat(frames, ignore_index=True)
    pal = {labels[m]: c for m, c in PALETTE.items()}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.lineplot(data=hist, x="epoch", y="train_loss", hue="Method", palette=pal, ax=a1)
    hist = hist.assign(val_pct=hist.val_acc * 100).dropna(subset=["val_pct"])  # the validated epochs (eval_every)
    sns.lineplot(data=hist, marker="o", x="epoch", y="val_pct", hue="Method", palette=pal, ax=a2, legend=False)
    for _, r in sel.iterrows():  # the selected epoch (best validation accuracy)
        if r.best_epoch == r.best_epoch and r.best_epoch is not None:
            a2.axvline(float(r.best_epoch), color=PALETTE[r.method], ls=":", lw=1)
    a1.set_ylabel("train loss")
    a2.set_ylabel("validation accuracy (%)")
    fig.suptitle(title_for(f"Learning curves: {spec.arch_label(arch)} / {ds} / k={kk} / seed {sd} "
                           "(dotted: selected epoch)", any_synthetic(sel)), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


def write_plots(runs: pd.DataFrame, outdir, variant: str, curve_dataset=None, curve_k=None, curve_seed=None) -> list[Path]:
    """accuracy/{arch}/{dataset}/{accuracy,improvement}.png plus the fixed-name figures."""
    outdir = Path(outdir)
    written = []
    from halsal.report.aggregate import main_runs, variant_of

    main = main_runs(runs, variant)
    for (arch, dataset), _ in (main.groupby(["arch", "dataset"]) if len(main) else []):
        for kind, fn in (("accuracy", accuracy_vs_k), ("improvement", improvement_vs_k)):
            p = outdir / "accuracy" / arch / dataset / f"{kind}.png"
            fn(main, arch, dataset, p)
            written.append(p)
    (outdir / "accuracy").mkdir(parents=True, exist_ok=True)
    for factor, name in (("depth", "figure2_depth.png"), ("fusion", "figure3_fusion.png")):
        # Figures 2-3 are AlexNet ablations in the paper: the first arch's main variant.
        first = runs.arch.iloc[0] if len(runs) else "alexnet"
        ablation_plot(runs, variant_of(variant, first), factor, outdir / name)
        written.append(outdir / name)
    learning_curves(runs, variant, outdir / "learning_curves.png", curve_dataset, curve_k, curve_seed)
    written.append(outdir / "learning_curves.png")
    return written
