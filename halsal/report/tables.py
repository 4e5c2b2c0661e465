"""Accuracy tables in the paper's layout (Tables 1-2) and the paired-difference table.

Per architecture: one row per (dataset, method), one column per k plus AVG. Each cell is
the mean ± sample std over seeds of the test accuracy in %, with the paper's printed value
and the difference beside it. AVG is recomputed from the cells shown (for the paper too),
and only where every k of the row is present. A cell without runs says "missing" (the run
is configured but absent) or "not run" (the method/arch is not in this configuration);
it is never 0.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from halsal import spec
from halsal.io import write_text, write_tsv
from halsal.report.aggregate import variant_of, SYNTHETIC_NOTE, sort_ks
from halsal.report.page import html_page
from halsal.report.health import dead_warnings, warning_html, write_health
from halsal.report.paper import (METHOD_LABELS, SMIC_NOTE, SMIC_SPECTRAL_LABEL,
                                 SMIC_SPECTRAL_NOTE, comparability, method_labels, paper_dataset, paper_value,
                                 smic_maps_kind)

MISSING, NOT_RUN = "missing", "not run"
CELL_COLUMNS = ["arch", "dataset", "paper_dataset", "comparison", "synthetic", "method", "label", "k", "status",
                "n", "mean", "std", "paper", "diff"]
SMIC_SPECTRAL_COMPARISON = ("not comparable: SMIC fed with spectral-residual maps, not the paper's explicit "
                            "saliency method; the paper's SMIC value is shown for reference")


def _comparison(dataset: str, synthetic: bool, kind: str | None = None, num_classes=None, ks=()) -> str:
    """"comparable", or why not: only the paper dataset fetched in full (config `kind`, not the
    name), with its class count and k values of the paper, is compared (see paper.comparability)."""
    pdata, _ = paper_dataset(dataset, kind)
    if synthetic:
        return f"not comparable ({SYNTHETIC_NOTE}); paper {pdata} shown for reference"
    why = comparability(dataset, kind, num_classes, ks)
    if why:
        return f"reference only: {why}; paper {pdata} shown for reference, no difference"
    return "comparable"


def _num_classes(runs: pd.DataFrame, dataset: str):
    """The class count the runs of a dataset trained on (after dropped classes), None when unknown."""
    if not len(runs) or "num_classes" not in runs:
        return None
    n = pd.to_numeric(runs[runs.dataset == dataset].num_classes, errors="coerce").dropna()
    return int(n.min()) if len(n) else None  # the smallest: a run with fewer classes is not the paper's


def accuracy_cells(runs: pd.DataFrame, arch: str, variant: str, datasets=(), methods=(), ks=(),
                   synthetic_datasets=(), arch_configured: bool = True, dataset_kinds=None) -> pd.DataFrame:
    """Long table, one row per (dataset, method, k or AVG) of the expected grid plus whatever ran.

    ``datasets``/``methods``/``ks`` are the configured grid: a configured cell without runs is
    "missing"; a method outside the configuration is "not run" (all of the paper's methods get
    a row, so SMIC is listed even where it was not run). SMIC runs whose maps are spectral
    residual are labelled "SMIC (spectral-residual maps)" and never compared with the paper's SMIC.
    ``dataset_kinds`` ({dataset: config kind}) decides which datasets are the paper's (without
    it none is): the others show the paper's row for reference, with no difference.
    """
    kinds = dict(dataset_kinds or {})
    sel = runs[(runs.arch == arch) & (runs.variant == variant_of(variant, arch))] if len(runs) else runs
    datasets = list(dict.fromkeys([*datasets, *sorted(set(sel.dataset) - set(datasets))]))
    ks = sort_ks([*ks, *sel.k])
    configured = set(methods) | set(sel.method)
    arch_configured = arch_configured or len(sel) > 0
    syn = set(synthetic_datasets) | set(sel[sel.synthetic.astype(bool)].dataset if len(sel) else [])
    labels = {**method_labels(sel), spec.LINEAR_PROBE: spec.LINEAR_PROBE_LABEL}
    order = [*spec.METHOD_NAMES] + ([spec.LINEAR_PROBE] if len(sel) and (sel.method == spec.LINEAR_PROBE).any() else [])
    smic_spectral = smic_maps_kind(sel) == "spectral_residual"
    rows = []
    for dataset in datasets:
        kind = kinds.get(dataset)
        comparison = _comparison(dataset, dataset in syn, kind, _num_classes(sel, dataset), ks)
        for method in order:
            cell_runs = sel[(sel.dataset == dataset) & (sel.method == method)]
            own = SMIC_SPECTRAL_COMPARISON if method == "smic" and smic_spectral else comparison
            compared = own == "comparable"  # otherwise the paper's value is for reference: no difference
            base = {"arch": arch, "dataset": dataset, "paper_dataset": paper_dataset(dataset, kind)[0],
                    "comparison": own, "synthetic": dataset in syn, "method": method, "label": labels[method]}
            per_k = []
            for k in ks:
                acc = cell_runs[cell_runs.k == k].groupby("seed").test_acc.mean() * 100
                n = len(acc)
                status = "ok" if n else (MISSING if method in configured and arch_configured else NOT_RUN)
                paper = paper_value(arch, dataset, method, k, kind)
                mean = float(acc.mean()) if n else math.nan
                per_k.append((k, acc))
                rows.append({**base, "k": k, "status": status, "n": n, "mean": mean,
                             "std": float(acc.std(ddof=1)) if n > 1 else math.nan,
                             "paper": paper, "diff": mean - paper if compared else math.nan})
            # AVG over the k columns shown: per seed, for seeds that have every k.
            by_seed = pd.concat({k: a for k, a in per_k}, axis=1) if per_k else pd.DataFrame()
            complete = all(len(a) for _, a in per_k) and len(per_k) > 0
            seed_avg = by_seed.dropna().mean(axis=1) if complete else pd.Series(dtype=float)
            paper_k = [paper_value(arch, dataset, method, k, kind) for k in ks]
            paper_avg = float(np.mean(paper_k)) if paper_k and not any(math.isnan(p) for p in paper_k) else math.nan
            mean = float(np.mean([a.mean() for _, a in per_k])) if complete else math.nan
            k_status = {r["status"] for r in rows[-len(ks):]}
            status = "ok" if complete else (MISSING if k_status & {"ok", MISSING} else NOT_RUN)
            rows.append({**base, "k": "AVG", "status": status, "n": len(seed_avg), "mean": mean,
                         "std": float(seed_avg.std(ddof=1)) if len(seed_avg) > 1 else math.nan,
                         "paper": paper_avg, "diff": mean - paper_avg if compared else math.nan})
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def fmt_cell(row) -> str:
    """'58.0 ± 2.1' (std over seeds), '58.0' for one seed, or the missing/not-run marker."""
    if row["status"] != "ok":
        return row["status"]
    if math.isnan(row["std"]):
        return f"{row['mean']:.1f}"
    return f"{row['mean']:.1f} \u00b1 {row['std']:.1f}"


def _fmt(x: float, signed: bool = False) -> str:
    return "" if x is None or math.isnan(x) else (f"{x:+.1f}" if signed else f"{x:.1f}")


def wide_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The TSV layout: dataset, method rows; for every k (and AVG) ours, paper, diff."""
    ks = [k for k in dict.fromkeys(cells.k)]
    out = []
    for (dataset, method), grp in cells.groupby(["dataset", "method"], sort=False):
        first = grp.iloc[0]
        row = {"dataset": dataset, "data": "SYNTHETIC" if first.synthetic else "real",
               "method": first.label, "comparison": first.comparison}
        comparable = first.comparison == "comparable"
        for _, c in grp.set_index("k").loc[ks].reset_index().iterrows():
            label = "AVG" if c.k == "AVG" else f"k={c.k}"
            row[label] = fmt_cell(c)
            row[f"{label} paper"] = _fmt(c.paper)
            row[f"{label} diff"] = _fmt(c["diff"], signed=True) if comparable else ("n/c" if c.status == "ok" else "")
            row[f"{label} n"] = int(c.n)
        out.append(row)
    return pd.DataFrame(out)


def accuracy_html(cells: pd.DataFrame, arch: str, not_run_note: str | None = None, warning: str = "") -> str:
    """The table page; ``warning``: HTML shown above the table (dead saliency maps)."""
    synthetic = bool(cells.synthetic.any())
    ks = list(dict.fromkeys(cells.k))
    head = "".join(f"<th>{'AVG' if k == 'AVG' else 'k=' + html.escape(k)}</th>" for k in ks)
    body = []
    max_n = int(cells.n.max()) if len(cells) else 0  # cells with fewer seeds say so
    for dataset, dgrp in cells.groupby("dataset", sort=False):
        methods = list(dict.fromkeys(dgrp.method))
        comp = dgrp.comparison.iloc[0]  # the dataset's (Baseline-RGB comes first)
        for i, method in enumerate(methods):
            mrows = dgrp[dgrp.method == method]
            comparable = mrows.comparison.iloc[0] == "comparable"
            tds = []
            for _, c in mrows.set_index("k").loc[ks].reset_index().iterrows():
                if c.status == "ok":
                    fewer = f' <span class="paper">(n={int(c.n)})</span>' if c.n < max_n else ""
                    ours = f'<div class="ours">{html.escape(fmt_cell(c))}{fewer}</div>'
                else:
                    ours = f'<div class="{c.status.replace(" ", "-")}">{c.status}</div>'
                paper = ""
                if not math.isnan(c.paper):
                    delta = f" \u00b7 \u0394 {_fmt(c['diff'], True)}" if comparable and c.status == "ok" else ""
                    paper = f'<div class="paper">paper {_fmt(c.paper)}{delta}</div>'
                tds.append(f"<td>{ours}{paper}</td>")
            name = f'<td class="name" rowspan="{len(methods)}"><b>{html.escape(dataset)}</b><br>'\
                   f'<span class="paper">{html.escape(comp)}</span></td>' if i == 0 else ""
            own = mrows.comparison.iloc[0]
            sub = f'<br><span class="paper">{html.escape(own)}</span>' if own != comp else ""
            body.append(f"<tr>{name}<td class=\"name\">{html.escape(mrows.label.iloc[0])}{sub}</td>{''.join(tds)}</tr>")
    n_seeds = sorted({int(n) for n in cells[cells.status == "ok"].n}) or [0]
    notes = [
        "Test accuracy (%) at the epoch with the best validation accuracy; mean \u00b1 sample std over seeds "
        f"(seeds per cell: {', '.join(map(str, n_seeds))}). Below each cell: the paper's printed value and, "
        "where the data are comparable, the difference (ours \u2212 paper).",
        "AVG is recomputed over the k columns shown, for ours and for the paper, and only where every k "
        "of the row is present (the paper's printed AVG covers k=1..30,K and is off for three rows).",
        "<span class=\"missing\">missing</span>: configured but no finished run; "
        "<span class=\"not-run\">not run</span>: not part of this configuration. Neither is ever shown as 0.",
        html.escape(SMIC_NOTE),
    ]
    if (cells.label == SMIC_SPECTRAL_LABEL).any():
        notes.append(html.escape(SMIC_SPECTRAL_NOTE))
    notrun = f'<div class="notrun">{html.escape(not_run_note)}</div>' if not_run_note else ""
    if spec.not_paper_note(arch):  # never compared with the paper: it has no such table
        notrun = f'<div class="notrun">{html.escape(spec.not_paper_note(arch))}; the paper has no table ' \
                 f'for it, so no paper values are shown.</div>' + notrun
    if (cells.method == spec.LINEAR_PROBE).any():
        notes.append(html.escape(f"{spec.LINEAR_PROBE_LABEL}: scikit-learn logistic regression on the frozen "
                                 "backbone's pooled features (centre crops), same splits, k and seeds; C chosen on "
                                 "validation. Not a method of the paper: the simplest use of the same features."))
    table = f"<table><tr><th>Dataset</th><th>Method</th>{head}</tr>{''.join(body)}</table>"
    title = f"{spec.arch_label(arch)}: test accuracy (%) vs training images per class (k)"
    if synthetic:
        title += f" \u2014 {SYNTHETIC_NOTE}"
    return html_page(title, warning + notrun + table + "".join(f'<p class="note">{n}</p>' for n in notes), synthetic)


def _ci(low: float, high: float) -> str:
    return "" if low is None or math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"


_VERDICT_CLASS = {"within noise": "noise", "better than reference": "pos", "worse than reference": "neg"}


def differences_html(diffs: pd.DataFrame, synthetic: bool, not_run_note: str | None = None, warning: str = "",
                     labels: dict | None = None) -> str:
    labels = labels or METHOD_LABELS
    title = "Paired differences to Baseline-RGB (percentage points, 95% CI over seeds and over seeds + test images)"
    if synthetic:
        title += f" \u2014 {SYNTHETIC_NOTE}"
    if not len(diffs):
        return html_page(title, warning + f'<div class="notrun">{html.escape(not_run_note or "No paired runs: Baseline-RGB and Approach A/B were not run in this configuration.")}</div>', synthetic)
    rows = []
    for _, r in diffs.iterrows():
        cls = _VERDICT_CLASS.get(r.verdict, "noise")
        bcls = _VERDICT_CLASS.get(r.boot_verdict, "noise")
        rows.append(f"<tr><td>{html.escape(spec.arch_label(r.arch))}</td><td>{html.escape(r.dataset)}</td>"
                    f"<td>{html.escape(labels.get(r.method, r.method))}</td><td>{html.escape(str(r.k))}</td><td>{r.n}</td>"
                    f"<td>{html.escape(str(r.n_images))}</td><td>{r.mean_diff:+.2f}</td>"
                    f"<td>{_ci(r.ci_low, r.ci_high)}</td><td>{html.escape(r.ci_method)}</td>"
                    f'<td class="{cls}">{html.escape(r.verdict)}</td>'
                    f"<td>{_ci(r.boot_low, r.boot_high)}</td><td>{html.escape(r.boot_method)}</td>"
                    f'<td class="{bcls}">{html.escape(r.boot_verdict)}</td></tr>')
    head = ("<tr><th rowspan=\"2\">Arch</th><th rowspan=\"2\">Dataset</th><th rowspan=\"2\">Method</th>"
            "<th rowspan=\"2\">k</th><th rowspan=\"2\">n seeds</th><th rowspan=\"2\">test images per seed</th>"
            "<th rowspan=\"2\">mean diff</th><th colspan=\"3\">95% CI over seeds</th>"
            "<th colspan=\"3\">95% CI over seeds and test images</th></tr>"
            "<tr><th>interval</th><th>method</th><th>verdict</th><th>interval</th><th>method</th><th>verdict</th></tr>")
    note = ("Differences are paired by seed (same split and k-shot images). <b>Over seeds</b>: the per-seed accuracy "
            "differences, Student's t for fewer than 10 seeds, a percentile bootstrap otherwise; with 2-3 seeds it is "
            "wide. <b>Over seeds and test images</b>: a paired two-level percentile bootstrap on the per-image "
            "predictions (predictions.tsv): resample the seeds, then within each the test images (the same images "
            "for the method and Baseline-RGB), statistic = mean over seeds of the accuracy difference; fixed RNG "
            "seed, so the report is reproducible. With one seed it covers image noise only. \"within noise\" means "
            "the interval contains 0. AVG pairs the per-seed averages over the k columns of the accuracy table (the "
            "bootstrap resamples each seed's test images once for all k: the test set does not depend on k).")
    return html_page(title, f"{warning}<table>{head}{''.join(rows)}</table><p class=\"note\">{note}</p>", synthetic)


def read_probes(paths) -> pd.DataFrame:
    """The linear-probe rows of ``halsal probe`` (probe.tsv files), in the runs' columns."""
    frames = [pd.read_csv(p, sep="\t", dtype={"k": str}) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_tables(runs: pd.DataFrame, outdir, variant: str, archs=spec.PAPER_ARCHS, configured_archs=(),
                 datasets=(), methods=(), ks=(), synthetic_datasets=(), dataset_kinds=None,
                 probes: pd.DataFrame | None = None, reference_maps=None) -> dict:
    """table_{arch}.tsv/.html for every paper arch (a not-run note for unconfigured ones) and
    every configured arch that is not in the paper; ``probes`` (read_probes) adds the linear-probe
    reference row to the accuracy tables only (never to the differences or the health table).
    differences.tsv/.html, saliency_health.tsv/.html and accuracy cells for all archs;
    returns {name: DataFrame}. A dead saliency map in any run of an arch's main variant puts a
    warning above that arch's table and above the differences. ``reference_maps`` (dataset ->
    spectral-residual maps.npy): a reference row per dataset in the health table."""
    from halsal.report.stats import paired_differences

    out = {}
    outdir = Path(outdir)
    all_cells = []
    archs = [*archs, *(a for a in configured_archs if a not in archs)]
    with_probe = runs
    if probes is not None and len(probes):
        with_probe = pd.concat([runs, probes[[c for c in probes.columns if c in runs.columns or c in
                                              ("arch", "dataset", "method", "variant", "k", "seed", "test_acc",
                                               "synthetic")]]], ignore_index=True)
    for arch in archs:
        cells = accuracy_cells(with_probe, arch, variant, datasets, methods, ks, synthetic_datasets,
                               arch_configured=arch in configured_archs, dataset_kinds=dataset_kinds)
        ran = bool(len(runs)) and arch in set(runs.arch)
        note = None
        if not ran and arch in configured_archs:
            note = f"{spec.arch_label(arch)}: configured, but no finished runs yet."
        elif not ran:
            note = (f"{spec.arch_label(arch)}: not run in this configuration "
                    "(add it to `archs:` in the config). The paper's values are shown for reference.")
        warning = warning_html(dead_warnings(runs, variant, arch)) if ran else ""
        write_tsv(outdir / f"table_{spec.arch_slug(arch)}.tsv", wide_table(cells))
        write_text(outdir / f"table_{spec.arch_slug(arch)}.html", accuracy_html(cells, arch, note, warning))
        all_cells.append(cells)
        out[arch] = cells
    diffs = paired_differences(runs, variant) if len(runs) else paired_differences(
        pd.DataFrame(columns=["arch", "dataset", "method", "variant", "k", "seed", "test_acc"]), variant)
    write_tsv(outdir / "differences.tsv", diffs)
    synthetic = bool(len(runs)) and bool(runs.synthetic.any()) or bool(synthetic_datasets)
    warning = warning_html(dead_warnings(runs, variant)) if len(runs) else ""
    write_text(outdir / "differences.html", differences_html(diffs, synthetic, warning=warning,
                                                             labels=method_labels(runs)))
    out["differences"] = diffs
    out["health"] = write_health(runs, outdir, synthetic, reference_maps)
    out["cells"] = pd.concat(all_cells, ignore_index=True)
    return out
