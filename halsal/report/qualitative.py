"""Qualitative grids as in the paper's Tables 3-4, and a saliency gallery.

Table 3: test images that Approach B classifies correctly and Baseline-RGB does not; Table 4:
the reverse. Each row shows the test image, Approach B's hallucinated saliency map (the
``after`` map: weights of the selected epoch) as an overlay, the true class, both
predictions, and an example image of the wrongly predicted class (as in the paper). Cases
are pooled over every k and seed of the first architecture, smallest k first, one row per
test image. Images come from each dataset's prepared ``images.npy`` (index.tsv order) and
class names from its ``index.tsv``, both given per dataset (``inputs``: {dataset: {"images":
path, "index": path}}, the workflow's declared inputs; no path is built here).

Every overlaid map is min-max normalised for display, so each one is labelled with its own
``mean`` and ``object_ratio`` (:func:`map_summary`, the per-image form of the run statistics
of halsal/train/health.py, from saliency.npz's maps and ``boxes``): a flat map no longer looks
like a map (a constant map is drawn without overlay and marked "flat"), and an all-zero map is
drawn without overlay and labelled "dead (all zero)".
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from halsal.report.aggregate import variant_of

from halsal.errors import HalsalError
from halsal.report.aggregate import any_synthetic, k_sort_key
from halsal import spec
from halsal.report.paper import METHOD_LABELS
from halsal.report.plots import placeholder, plt, save, set_style, title_for

GOOD, BAD = spec.QUALITATIVE_PAIR


def load_dataset(images_npy, index_tsv, dataset: str = "") -> tuple[np.ndarray, pd.DataFrame]:
    """A dataset's prepared images (``images.npy``, memory-mapped) and its ``index.tsv``."""
    npy, tsv = Path(images_npy), Path(index_tsv)
    for p in (npy, tsv):
        if not p.exists():
            raise HalsalError(f"{p} does not exist: run the prepare/dataset rules for {dataset!r} first")
    images = np.load(npy, mmap_mode="r", allow_pickle=False)
    index = pd.read_csv(tsv, sep="\t")
    if len(index) != len(images):
        raise HalsalError(f"{npy} has {len(images)} images but {tsv} lists {len(index)}: re-run prepare for {dataset!r}")
    return images, index


def _load(data: dict | None, dataset: str) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`load_dataset` of one dataset's ``inputs`` entry ({"images": path, "index": path})."""
    missing = [key for key in ("images", "index") if not (data or {}).get(key)]
    if missing:
        raise HalsalError(f"no {' and '.join(missing)} file given for dataset {dataset!r} "
                          f"(--inputs '{{\"{dataset}\": {{\"images\": ..., \"index\": ...}}}}')")
    return load_dataset(data["images"], data["index"], dataset)


def _predictions(run_dir) -> pd.DataFrame | None:
    p = Path(run_dir) / "predictions.tsv"
    return pd.read_csv(p, sep="\t") if p.exists() else None


def _saliency(run_dir, key: str = "after") -> dict:
    """{index.tsv row: map} from saliency.npz, or {} when the run has none."""
    p = Path(run_dir) / "saliency.npz"
    if not p.exists():
        return {}
    with np.load(p, allow_pickle=False) as z:
        if key not in z or "rows" not in z:
            raise HalsalError(f"{p} lacks '{key}' or 'rows': re-run its finetune rule")
        return {int(r): np.asarray(m, dtype=np.float32) for r, m in zip(z["rows"], z[key])}


def _boxes(run_dir) -> dict:
    """{index.tsv row: (x0, y0, x1, y1)} in the network input's pixels from saliency.npz
    (absent in files written before boxes were recorded; NaN rows: no box)."""
    p = Path(run_dir) / "saliency.npz"
    if not p.exists():
        return {}
    with np.load(p, allow_pickle=False) as z:
        if "boxes" not in z or "rows" not in z or len(z["boxes"]) != len(z["rows"]):
            return {}
        return {int(r): np.asarray(b, dtype=np.float64) for r, b in zip(z["rows"], z["boxes"])}


def map_summary(smap: np.ndarray, box=None, input_size: int = 0) -> dict:
    """One map's ``mean``, ``object_ratio`` (mean inside the object box, cells weighted by their
    coverage, over the mean on the whole map; None without a box or for a dead map), ``dead``
    (all zero) and ``flat`` (no spatial variation). The map covers the ``input_size`` square."""
    m = np.asarray(smap, dtype=np.float64)
    mean = float(m.mean())
    dead = bool(m.max() <= 0)
    ratio = None
    b = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1)
    if not dead and b is not None and len(b) == 4 and np.isfinite(b).all() and input_size:
        x0, y0, x1, y1 = b
        h, w = m.shape
        ys, xs = np.linspace(0, input_size, h + 1), np.linspace(0, input_size, w + 1)
        cy = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0, None) / np.diff(ys)
        cx = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0, None) / np.diff(xs)
        wgt = cy[:, None] * cx[None, :]
        if wgt.sum() > 0 and mean > 0:
            ratio = float((m * wgt).sum() / wgt.sum() / mean)
    flat = not dead and float(m.max() - m.min()) <= 1e-6 * max(abs(float(m.max())), 1e-12)
    return {"mean": mean, "object_ratio": ratio, "dead": dead, "flat": flat}


def map_label(summary: dict | None) -> str:
    """'mean 0.412' / 'object ratio 1.83' on two lines, '(flat)' for a constant map, or 'dead (all zero)'."""
    if summary is None:
        return "no saliency map"
    if summary["dead"]:
        return "dead (all zero)"
    ratio = summary["object_ratio"]
    obj = "no box" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}"
    flat = " (flat)" if summary["flat"] else ""
    return f"mean {summary['mean']:.3g}{flat}\nobject ratio {obj}"


def find_cases(runs: pd.DataFrame, arch: str, dataset: str, variant: str, kind: str) -> pd.DataFrame:
    """Test images where approach_b is right and baseline wrong (``success``) or the reverse (``failure``)."""
    sel = runs[(runs.arch == arch) & (runs.dataset == dataset) & (runs.variant == variant_of(variant, arch))]
    out = []
    for (k, seed), grp in sel.groupby(["k", "seed"]):
        dirs = dict(zip(grp.method, grp.run_dir))
        if GOOD not in dirs or BAD not in dirs:
            continue
        g, b = _predictions(dirs[GOOD]), _predictions(dirs[BAD])
        if g is None or b is None:
            continue
        m = g.merge(b[["row", "pred", "pred_name"]], on="row", suffixes=("_good", "_bad"))
        right, wrong = ("good", "bad") if kind == "success" else ("bad", "good")
        hit = m[(m[f"pred_{right}"] == m.label) & (m[f"pred_{wrong}"] != m.label)].copy()
        hit["wrong_pred"], hit["wrong_name"] = hit[f"pred_{wrong}"], hit[f"pred_name_{wrong}"]
        hit["k"], hit["seed"], hit["good_dir"] = k, seed, dirs[GOOD]
        hit["input_size"] = int(grp.input_size.iloc[0]) if "input_size" in grp and grp.input_size.notna().all() else 0
        out.append(hit)
    if not out:
        return pd.DataFrame()
    cases = pd.concat(out, ignore_index=True)
    cases["_k"] = cases.k.map(k_sort_key)
    return cases.sort_values(["_k", "seed", "row"]).drop_duplicates("row").drop(columns="_k").reset_index(drop=True)


def _crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to the network input (the map covers the evaluated crop, not the cached square)."""
    s = img.shape[0]
    if not size or size >= s:
        return np.asarray(img)
    o = (s - size) // 2
    return np.asarray(img[o:o + size, o:o + size])


def _overlay(ax, img: np.ndarray, smap: np.ndarray | None, box=None, input_size: int = 0) -> dict | None:
    """The image with the map over it (min-max normalised) and the map's own statistics as the
    panel's label; a dead map is not overlaid. Returns :func:`map_summary` or None (no map)."""
    ax.imshow(img)
    summary = None if smap is None else map_summary(smap, box, input_size or img.shape[0])
    ax.set_xlabel(map_label(summary), fontsize=6.5, color="#b00" if summary and summary["dead"] else "#222")
    if summary is not None and not summary["dead"] and not summary["flat"]:  # flat: nothing to normalise
        lo, hi = float(smap.min()), float(smap.max())
        norm = (smap - lo) / (hi - lo) if hi > lo else np.zeros_like(smap)
        ax.imshow(norm, cmap="jet", alpha=0.45, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5),
                  interpolation="bilinear", vmin=0, vmax=1)
    elif summary is not None and summary["dead"]:
        ax.text(0.5, 0.5, "dead\n(all zero)", transform=ax.transAxes, ha="center", va="center", color="w",
                fontsize=9, fontweight="bold", bbox={"facecolor": "#b00", "alpha": 0.8, "edgecolor": "none"})
    return summary


def _wrap(text: str, width: int = 30) -> str:
    """Wrap every line of ``text`` to ``width`` characters (long class names stay in their panel)."""
    return "\n".join(textwrap.fill(line, width, subsequent_indent="  ", break_long_words=True)
                     for line in text.split("\n"))


def _example_row(index: pd.DataFrame, label: int, avoid: set) -> int | None:
    rows = [r for r in np.flatnonzero(index.label.values == label) if r not in avoid]
    return int(rows[0]) if rows else None


def case_grid(runs: pd.DataFrame, arch: str, dataset: str, variant: str, kind: str, data: dict | None, path,
              max_rows: int = 6) -> int:
    """Write the Table 3 (``success``) or Table 4 (``failure``) grid; returns the number of rows shown.
    ``data``: the dataset's files, {"images": images.npy, "index": index.tsv} (read only when a case
    is shown)."""
    sel = runs[(runs.arch == arch) & (runs.dataset == dataset)]
    synthetic = any_synthetic(sel)
    what = {"success": f"{METHOD_LABELS[GOOD]} right, {METHOD_LABELS[BAD]} wrong (as the paper's Table 3)",
            "failure": f"{METHOD_LABELS[BAD]} right, {METHOD_LABELS[GOOD]} wrong (as the paper's Table 4)"}[kind]
    title = f"{dataset}: {what}"
    methods = set(sel.method)
    if not {GOOD, BAD} <= methods:
        placeholder(path, title, f"not run in this configuration: needs both {METHOD_LABELS[GOOD]} and "
                    f"{METHOD_LABELS[BAD]} runs", synthetic)
        return 0
    cases = find_cases(runs, arch, dataset, variant, kind)
    if not len(cases):
        placeholder(path, title, "no such test image in these runs", synthetic)
        return 0
    images, index = _load(data, dataset)
    cases = cases.head(max_rows)
    set_style()
    fig, axes = plt.subplots(len(cases), 4, figsize=(11, 2.7 * len(cases)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.35, 1]})
    heads = ["test image", f"{METHOD_LABELS[GOOD]} saliency\n(after fine-tuning, min-max normalised)", "classes",
             "example of the\nwrongly predicted class"]
    sal_cache: dict = {}
    for i, (_, c) in enumerate(cases.iterrows()):
        img = _crop(images[int(c.row)], int(c.input_size))
        smaps = sal_cache.setdefault(c.good_dir, _saliency(c.good_dir))
        boxes = sal_cache.setdefault((c.good_dir, "boxes"), _boxes(c.good_dir))
        axes[i, 0].imshow(img)
        _overlay(axes[i, 1], img, smaps.get(int(c.row)), boxes.get(int(c.row)), int(c.input_size))
        if int(c.row) not in smaps:
            axes[i, 1].text(0.5, 0.5, "no saliency map", transform=axes[i, 1].transAxes, ha="center", color="w")
        wrong_method = BAD if kind == "success" else GOOD
        # Wrapped to the panel (long class names used to run past the figure's right edge).
        axes[i, 2].text(0.0, 0.5, _wrap(f"true: {c.class_name}\n{METHOD_LABELS[wrong_method]}: {c.wrong_name} (wrong)\n"
                                        f"{METHOD_LABELS[GOOD if kind == 'success' else BAD]}: {c.class_name} (right)\n"
                                        f"k={c.k}, seed {c.seed}, test row {int(c.row)}"),
                        va="center", ha="left", fontsize=7.5, transform=axes[i, 2].transAxes)
        ex = _example_row(index, int(c.wrong_pred), set(cases.row.astype(int)))
        if ex is not None:
            axes[i, 3].imshow(_crop(images[ex], int(c.input_size)))
            axes[i, 3].set_xlabel(_wrap(str(c.wrong_name), 34), fontsize=8)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
            if j == 2:
                ax.axis("off")
                ax.set_xlim(0, 1)
            if i == 0:
                ax.set_title(heads[j], fontsize=8)
    fig.suptitle(title_for(title, synthetic), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return len(cases)


def saliency_gallery(runs: pd.DataFrame, arch: str, dataset: str, variant: str, data: dict | None, path,
                     method: str = GOOD, n: int = 6) -> int:
    """Test images with the hallucinated map before and after fine-tuning (one run: largest k, first seed).
    ``data``: as :func:`case_grid`'s."""
    sel = runs[(runs.arch == arch) & (runs.dataset == dataset) & (runs.variant == variant_of(variant, arch))
               & (runs.method == method)]
    title = f"{dataset}: {METHOD_LABELS[method]} saliency maps before / after fine-tuning"
    sel = sel[[(Path(d) / "saliency.npz").exists() for d in sel.run_dir]]
    if not len(sel):
        placeholder(path, title, f"not run in this configuration: no {METHOD_LABELS[method]} run with saliency.npz",
                    any_synthetic(runs[runs.dataset == dataset]))
        return 0
    run = sel.assign(_k=sel.k.map(k_sort_key)).sort_values(["_k", "seed"], ascending=[False, True]).iloc[0]
    before, after = _saliency(run.run_dir, "before"), _saliency(run.run_dir, "after")
    boxes = _boxes(run.run_dir)
    rows = sorted(after)[:n]
    images, index = _load(data, dataset)
    size = int(run.input_size) if run.input_size == run.input_size else 0
    set_style()
    fig, axes = plt.subplots(3, len(rows), figsize=(2.2 * len(rows), 6.8), squeeze=False)
    for j, r in enumerate(rows):
        img = _crop(images[r], size)
        axes[0, j].imshow(img)
        axes[0, j].set_title(str(index.class_name.iloc[r])[:18], fontsize=7)
        _overlay(axes[1, j], img, before.get(r), boxes.get(r), size)
        _overlay(axes[2, j], img, after.get(r), boxes.get(r), size)
        for ax in axes[:, j]:
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
    for i, lab in enumerate(["image", "before\n(initial weights)", "after\n(selected epoch)"]):
        axes[i, 0].set_ylabel(lab, fontsize=8)
    fig.suptitle(title_for(f"{title} ({arch}, k={run.k}, seed {run.seed})\nmaps min-max normalised for display; "
                           "below each: the map's own mean and object ratio (mean in the object box / mean)",
                           bool(run.synthetic)), fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return len(rows)


def write_qualitative(runs: pd.DataFrame, outdir, variant: str, inputs: dict, datasets=(), arch=None) -> list[Path]:
    """{dataset}/{success,failure,saliency}.png for every dataset (placeholders where nothing applies).
    ``inputs``: {dataset: {"images": images.npy, "index": index.tsv}}, each dataset's files."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    datasets = list(dict.fromkeys([*datasets, *(sorted(set(runs.dataset)) if len(runs) else [])]))
    arch = arch or (sorted(set(runs.arch))[0] if len(runs) else "alexnet")
    written = []
    for ds in datasets:
        data = (inputs or {}).get(ds)
        for kind in ("success", "failure"):
            p = outdir / ds / f"{kind}.png"
            case_grid(runs, arch, ds, variant, kind, data, p)
            written.append(p)
        p = outdir / ds / "saliency.png"
        saliency_gallery(runs, arch, ds, variant, data, p)
        written.append(p)
    return written
