"""Saliency health in the report: is each run's map alive, and where does it look?

With Eq. 2, ``l * (s + 1)``, a map that is zero everywhere leaves the RGB features unchanged:
the run is Baseline-RGB at test time, whatever its method is called. Every run with a map
(scratch SAL, Approach A/B: hallucinated; SMIC: explicit) records the map's statistics in
metrics.json (``saliency``: ``before`` fine-tuning, at the selected epoch on ``val`` and
``test``; defined in halsal/train/health.py), which ``halsal aggregate`` flattens into the
runs table's ``sal_<part>_<stat>`` columns. This module reads only those columns:

- :func:`health_table`: per arch, dataset, method, variant and k, how many runs have a dead
  map (n of N), the mean map value and the object ratio at test time and before fine-tuning;
- :func:`dead_warnings` / :func:`warning_html`: the warning shown above the accuracy tables
  and the paired differences whenever a map is dead in any run.

A run's map is dead when at least ``DEAD_THRESHOLD`` of its test images have an all-zero map
(``halsal.train.health``'s, the module that measures the maps: numpy only, so the report still
never imports torch).
"""

from __future__ import annotations

import html
import math

import pandas as pd

from halsal.io import write_text, write_tsv
from halsal import spec
from halsal.report.aggregate import SYNTHETIC_NOTE, any_synthetic, k_sort_key, variant_of
from halsal.spec import parse_variant
from halsal.report.page import html_page
from halsal.report.paper import method_labels
from halsal.train.health import DEAD_THRESHOLD

HEALTH_COLUMNS = ["arch", "dataset", "method", "label", "variant", "k", "n_runs", "n_stats", "n_dead", "dead",
                  "dead_seeds", "test_mean", "before_mean", "test_object_ratio", "before_object_ratio",
                  "test_spatial_cv", "test_dead_fraction", "val_dead_fraction", "synthetic"]


def dead_mask(runs: pd.DataFrame) -> pd.Series:
    """True for the runs whose map is dead at test time (NaN statistics -> False)."""
    if not len(runs) or "sal_test_dead_fraction" not in runs:
        return pd.Series(False, index=runs.index)
    return pd.to_numeric(runs.sal_test_dead_fraction, errors="coerce").ge(DEAD_THRESHOLD).fillna(False)


def map_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of methods with a map: everything but Baseline-RGB (whose runs have no statistics)."""
    return runs[runs.method != spec.BASELINE] if len(runs) else runs


def _mean(values) -> float:
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def health_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (arch, dataset, method, variant, k) with a map: dead runs (n of N), mean map
    value and object ratio at test time and before fine-tuning (means over the runs; a dead
    map has no object ratio and is left out of that mean). ``n_stats`` < ``n_runs`` where some
    metrics.json predate the saliency statistics."""
    sel = map_runs(runs)
    if not len(sel):
        return pd.DataFrame(columns=HEALTH_COLUMNS)
    labels = method_labels(runs)
    has = pd.to_numeric(sel.get("sal_test_n", pd.Series(math.nan, index=sel.index)), errors="coerce").notna()
    sel = sel.assign(_dead=dead_mask(sel), _has=has, _k=sel.k.map(k_sort_key),
                     _m=sel.method.map({m: i for i, m in enumerate(spec.METHOD_NAMES)}).fillna(99))
    rows = []
    for (arch, dataset, _, method, variant, _, k), g in sel.groupby(
            ["arch", "dataset", "_m", "method", "variant", "_k", "k"], sort=True):
        n_dead, n_stats = int(g._dead.sum()), int(g._has.sum())
        rows.append({
            "arch": arch, "dataset": dataset, "method": method, "label": labels.get(method, method),
            "variant": variant, "k": k, "n_runs": len(g), "n_stats": n_stats, "n_dead": n_dead,
            "dead": f"{n_dead} of {n_stats}" if n_stats else "no statistics (re-run)",
            "dead_seeds": ",".join(str(int(s)) for s in sorted(g[g._dead].seed)),
            "test_mean": _mean(g.sal_test_mean), "before_mean": _mean(g.sal_before_mean),
            "test_object_ratio": _mean(g.sal_test_object_ratio), "before_object_ratio": _mean(g.sal_before_object_ratio),
            "test_spatial_cv": _mean(g.sal_test_spatial_cv), "test_dead_fraction": _mean(g.sal_test_dead_fraction),
            "val_dead_fraction": _mean(g.sal_val_dead_fraction), "synthetic": bool(g.synthetic.astype(bool).any()),
        })
    out = pd.DataFrame(rows, columns=HEALTH_COLUMNS)
    return out.round({c: 4 for c in ("test_mean", "before_mean", "test_object_ratio", "before_object_ratio",
                                     "test_spatial_cv", "test_dead_fraction", "val_dead_fraction")})


def dead_warnings(runs: pd.DataFrame, variant: str | dict | None = None, arch: str | None = None) -> list[dict]:
    """Per (arch, dataset, method) with at least one dead map: the ks, n dead of N runs per k.

    ``variant``: only each arch's main variant (what the accuracy tables show); ``arch``: one arch."""
    sel = map_runs(runs)
    if arch is not None and len(sel):
        sel = sel[sel.arch == arch]
    if variant is not None and len(sel):
        sel = sel[[v == variant_of(variant, a) for a, v in zip(sel.arch, sel.variant)]]
    table = health_table(sel)
    if not len(table):
        return []
    labels = method_labels(runs)
    out = []
    for (a, dataset, method, var), g in table.groupby(["arch", "dataset", "method", "variant"], sort=False):
        g = g[g.n_dead > 0]
        if not len(g):
            continue
        modulation = parse_variant(var)["modulation"]
        all_rows = table[(table.arch == a) & (table.dataset == dataset) & (table.method == method) & (table.variant == var)]
        out.append({"arch": a, "dataset": dataset, "method": method, "label": labels.get(method, method),
                    "variant": var, "modulation": modulation, "n_dead": int(g.n_dead.sum()),
                    "n": int(all_rows.n_stats.sum()),
                    "per_k": [(str(r.k), int(r.n_dead), int(r.n_stats), r.dead_seeds) for r in g.itertuples()]})
    return out


def warning_text(w: dict) -> str:
    """One warning as plain text (the HTML escapes this)."""
    ks = "; ".join(f"k={k}, {d} of {n} (seed{'s' if ',' in seeds else ''} {seeds.replace(',', ', ')})"
                   for k, d, n, seeds in w["per_k"])
    consequence = ("with Eq. 2, l\u00b7(s + 1), a zero map leaves the RGB features unchanged, so these runs are "
                   "Baseline-RGB at test time" if w["modulation"] == "eq2" else
                   "with Eq. 1, l\u00b7s, a zero map removes every feature at the fusion point, so these runs "
                   "classify from nothing")
    return (f"Dead saliency map: {w['label']} on {w['dataset']} ({spec.arch_label(w['arch'])}, "
            f"{w['variant']}): the map is all zero on at least {DEAD_THRESHOLD:.0%} of the test images in "
            f"{w['n_dead']} of {w['n']} runs: {ks}. {consequence[0].upper()}{consequence[1:]}; their accuracy "
            "says nothing about the saliency branch. See the Saliency health table.")


def warning_html(warnings: list[dict]) -> str:
    """The warning box (empty string when every map is alive)."""
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(warning_text(w))}</li>" for w in warnings)
    return (f'<div class="dead-warning" role="alert"><b>\u26a0 Warning: dead saliency maps.</b>'
            f"<ul>{items}</ul></div>")


def _f(x, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{digits}f}{unit}"


def health_html(table: pd.DataFrame, warnings: list[dict], synthetic: bool) -> str:

    title = "Saliency health: dead maps, mean map value and object ratio per run set"
    if synthetic:
        title += f" \u2014 {SYNTHETIC_NOTE}"
    if not len(table):
        return html_page(title, '<div class="notrun">No run with a saliency map in this configuration '
                         "(only Baseline-RGB, or no finished runs).</div>", synthetic)
    head = ("<tr><th>Arch</th><th>Dataset</th><th>Method</th><th>Variant</th><th>k</th>"
            "<th>runs with a dead map</th><th>dead seeds</th><th>map mean (test)</th><th>map mean (before)</th>"
            "<th>object ratio (test)</th><th>object ratio (before)</th><th>spatial CV (test)</th>"
            "<th>all-zero images (val)</th></tr>")
    rows = []
    for _, r in table.iterrows():
        cls = ' class="dead"' if r.n_dead > 0 else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(spec.arch_label(r.arch))}</td><td>{html.escape(r.dataset)}</td>"
            f"<td class=\"name\">{html.escape(r.label)}</td><td>{html.escape(r.variant)}</td><td>{html.escape(str(r.k))}</td>"
            f"<td>{html.escape(r.dead)}</td><td>{html.escape(r.dead_seeds)}</td><td>{_f(r.test_mean)}</td>"
            f"<td>{_f(r.before_mean)}</td><td>{_f(r.test_object_ratio, 2)}</td><td>{_f(r.before_object_ratio, 2)}</td>"
            f"<td>{_f(r.test_spatial_cv, 2)}</td><td>{_f(r.val_dead_fraction, 0, 100, '%')}</td></tr>")
    note = (f"A run's map is <b>dead</b> when it is all zero on at least {DEAD_THRESHOLD:.0%} of the test images at "
            "the selected epoch; with Eq. 2, l\u00b7(s + 1), such a run is Baseline-RGB at test time. "
            "<b>map mean</b>: the map's mean over test images and positions (mean over the runs), at the selected "
            "epoch (test) and before fine-tuning (before). <b>object ratio</b>: the map's mean inside the object box "
            "over its mean on the whole image (1 = no preference, &gt; 1 = on the object), over the live maps of "
            "images with a box; empty where the dataset has no boxes or every map is dead. <b>spatial CV</b>: "
            "spatial std / mean of a map (0 = flat or dead). <b>all-zero images (val)</b>: share of validation "
            "images with an all-zero map at the selected epoch.")
    return html_page(title, warning_html(warnings) + f"<table>{head}{''.join(rows)}</table><p class=\"note\">{note}</p>",
                     synthetic)


def write_health(runs: pd.DataFrame, outdir, synthetic: bool = False, reference_maps=None) -> pd.DataFrame:
    """saliency_health.tsv and saliency_health.html (every variant, every arch); ``reference_maps``
    (dataset -> spectral-residual maps.npy) adds a reference row per dataset (halsal.report.reference)."""
    from pathlib import Path

    from halsal.report.reference import reference_rows

    outdir = Path(outdir)
    table = health_table(runs)
    if reference_maps:
        ref = reference_rows(runs, reference_maps, HEALTH_COLUMNS)
        table = pd.concat([t for t in (table, ref) if len(t)], ignore_index=True) if len(ref) else table
    write_tsv(outdir / "saliency_health.tsv", table)
    synthetic = synthetic or any_synthetic(runs)
    write_text(outdir / "saliency_health.html", health_html(table, dead_warnings(runs), synthetic))
    return table

