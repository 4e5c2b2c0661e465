"""The results as one Markdown page: the report's own tables, for a docs page.

``halsal results-md`` (rule ``report_markdown``) renders, from the files the other report
rules wrote and nothing typed by hand:

1. test accuracy, mean ± std over seeds (``table_<arch>.tsv``; the paper's value and the
   difference only where the report found the protocol comparable);
2. Approach A / B minus Baseline-RGB with the seed (t) and two-level bootstrap intervals
   (``differences.tsv``);
3. saliency health, object ratio included (``saliency_health.tsv``), and the Step-1 maps;
4. Step 0's and Step 1's own accuracy on the source set (``results/models/<arch>/*.json``);
5. the data used (``data_summary.tsv``);
6. wall time per stage (the jobs' benchmark files, given grouped by stage: ``--benchmarks``);
7. a few plots, copied small beside the page.

``halsal publish-md`` splices that section into a hand-written page (docs/results-photos.md)
between two markers and copies its images beside the page, so the page's numbers are always
the workflow's. Reads TSV/JSON/PNG only; never imports torch.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shutil
from pathlib import Path

import pandas as pd

from halsal import spec
from halsal.errors import HalsalError
from halsal.io import atomic_write, write_text
from halsal.report.aggregate import k_sort_key
from halsal.report.paper import method_labels
from halsal.report.wall_time import wall_time
from halsal.report.devices import devices_md

BEGIN = "<!-- BEGIN generated: halsal publish-md replaces everything down to END; do not edit by hand -->"
END = "<!-- END generated -->"
IMAGES = "results_md"  # images folder beside results.md
KCOL = re.compile(r"^(k=\S+|AVG)$")
IMAGE_WIDTH = 760  # px: the plots are copied at most this wide


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _num(x, digits: int = 2, signed: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def md_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table (pipes in cells escaped)."""
    if not len(frame):
        return "_(no rows)_\n"
    frame = frame.astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    return frame.to_markdown(index=False, disable_numparse=True) + "\n"  # keep "+2.0" as written


def machine() -> str:
    """CPU model, cores and OS of this machine (the one that ran the report)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def accuracy_md(table_tsv) -> tuple[str, list[str]]:
    """Table 1's cells (mean ± std over seeds; seeds per cell), per dataset and method."""
    t = _read(table_tsv)
    kcols = [c for c in t.columns if KCOL.match(c)]
    rows, notes = [], []
    for dataset, g in t.groupby("dataset", sort=False):
        comparable = (g.comparison == "comparable").all()
        notes.append(f"- `{dataset}` ({g.data.iloc[0]}): {g.comparison.iloc[0]}")
        for _, r in g.iterrows():
            if all(r[c] in ("not run", "") for c in kcols):
                continue
            row = {"dataset": dataset, "method": r.method}
            for c in kcols:
                row[c] = r[c] + (f" (n={r[c + ' n']})" if r.get(c + " n", "") not in ("", "0") else "")
                if comparable:
                    row[f"{c} paper"], row[f"{c} diff"] = r[f"{c} paper"], r[f"{c} diff"]
            rows.append(row)
    return md_table(pd.DataFrame(rows)), notes


def epochs_md(runs_tsv, arch: str, variant: str | None = None, datasets=()) -> str:
    """Per dataset, k and method: the budget (optimizer steps, where the config set one, and
    epochs), the epoch selected on validation (median, range) and how many runs selected the
    last epoch (many: training may have stopped too early; the last epoch is always validated)."""
    r = pd.read_csv(runs_tsv, sep="\t")
    r = r[(r.arch == arch) & ((r.variant == variant) if variant else True)]
    if not len(r):
        return "_(no runs)_\n"
    labels = method_labels(r)
    d_order = {d: i for i, d in enumerate([*datasets, *sorted(set(r.dataset) - set(datasets))])}
    m_order = {m: i for i, m in enumerate(spec.METHOD_NAMES)}
    steps = "steps" in r and r["steps"].notna().any()
    rows = []
    for (dataset, k, method), g in sorted(r.groupby(["dataset", "k", "method"]),
                                          key=lambda item: (d_order[item[0][0]], k_sort_key(str(item[0][1])),
                                                            m_order.get(item[0][2], 99))):
        last = int((g.best_epoch >= g.epochs).sum())
        row = {"dataset": dataset, "k": k, "method": labels.get(method, method)}
        if steps:
            row["optimizer steps"] = _span(g["steps"])
        row.update({"epochs": _span(g.epochs),
                    "selected epoch: median (min-max)": f"{g.best_epoch.median():g} ({g.best_epoch.min()}-{g.best_epoch.max()})",
                    "runs that selected the last epoch": f"{last} of {len(g)}"})
        rows.append(row)
    return md_table(pd.DataFrame(rows))


def _span(values: pd.Series) -> str:
    lo, hi = values.min(), values.max()
    return "—" if pd.isna(lo) else f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def differences_md(diff_tsv) -> str:
    d = _read(diff_tsv)
    if not len(d):
        return "_(no paired differences: Approach A/B or Baseline-RGB not run)_\n"
    labels = method_labels()
    out = pd.DataFrame({
        "dataset": d.dataset,
        "difference": [f"{labels.get(m, m)} − {labels.get(r, r)}" for m, r in zip(d.method, d.reference)],
        "k": d.k,
        "seeds": d.n,
        "mean (points)": d.mean_diff.map(lambda x: _num(x, 1, signed=True)),
        "95% t over seeds": [f"[{_num(a, 1, True)}, {_num(b, 1, True)}]" for a, b in zip(d.ci_low, d.ci_high)],
        "t verdict": d.verdict,
        "95% two-level bootstrap": [f"[{_num(a, 1, True)}, {_num(b, 1, True)}]" for a, b in zip(d.boot_low, d.boot_high)],
        "bootstrap verdict": d.boot_verdict,
        "test images per seed": d.n_images,
    })
    return md_table(out)


def health_md(health_tsv) -> str:
    h = _read(health_tsv)
    if not len(h):
        return "_(no run with a saliency map)_\n"
    out = pd.DataFrame({
        "dataset": h.dataset, "method": h.label, "k": h.k,
        "dead map (runs)": h.dead,
        "map mean: test (before)": [f"{_num(a, 3)} ({_num(b, 3)})" for a, b in zip(h.test_mean, h.before_mean)],
        "object ratio: test (before)": [f"{_num(a)} ({_num(b)})" if _num(a) != "—" or _num(b) != "—" else "— (no boxes)"
                                        for a, b in zip(h.test_object_ratio, h.before_object_ratio)],
        "spatial CV (test)": h.test_spatial_cv.map(_num),
        "all-zero test maps": h.test_dead_fraction.map(lambda x: _num(float(x) * 100, 0) + "%" if _num(x) != "—" else "—"),
    })
    return md_table(out)


def _pct(x) -> str:
    return _num(float(x) * 100, 1) + "%" if x is not None else "—"


def _step_row(step: str, what: str, info: dict, classes: int | None) -> dict:
    return {"step": step, "what": what, "classes": classes, "epochs": info.get("epochs"),
            "selected epoch (val)": info.get("best_epoch"), "val acc": _pct(info.get("val_acc")),
            "test acc": _pct(info.get("test_acc")), "chance": _pct(1 / classes) if classes else "—"}


def steps_md(backbone_jsons=(), saliency_jsons=(), source: str = "", source_classes: int | None = None) -> str:
    """Step 0 (the backbone trained on the source set) and Step 1 (the saliency branch)."""
    rows = []
    for path in backbone_jsons:
        b = json.loads(Path(path).read_text())
        source_classes = source_classes or b.get("num_classes")
        if b.get("weights") != "scratch":
            st = b.get("source_test") or {}
            what = f"weights: {b.get('source') or b.get('weights')}, not trained here"
            if st:
                what += f"; measured on {source}'s {st.get('n')} test images"
                if st.get("restricted_to"):
                    what += f" (top-1 over its {st['restricted_to']} classes {_pct(st.get('top1_restricted'))})"
            rows.append({"step": f"Step 0 ({b.get('arch')})", "what": what, "classes": b.get("num_classes"),
                         "test acc": _pct(st.get("top1")) if st else "—",
                         "chance": _pct(1 / b["num_classes"]) if b.get("num_classes") else "—"})
            continue
        rows.append(_step_row(f"Step 0 ({b.get('arch')})", f"backbone from scratch on {source}", b, source_classes))
    for path in saliency_jsons:
        s = json.loads(Path(path).read_text())
        sal = s.get("saliency") or {}
        before, test = sal.get("before") or {}, sal.get("test") or {}
        what = (f"saliency branch only, on {source}; map mean {_num(before.get('mean'), 3)} -> "
                f"{_num(test.get('mean'), 3)}, all-zero maps {_pct(test.get('dead_fraction'))}"
                + (f", object ratio {_num(test.get('object_ratio'))}" if test.get("object_ratio") else ""))
        st = s.get("source_test") or {}
        if st.get("restricted_to"):
            what += f"; top-1 over the source's {st['restricted_to']} classes {_pct(st.get('top1_restricted'))}"
        rows.append(_step_row(f"Step 1 ({s.get('arch')}, {s.get('variant')})", what, s,
                              s.get("num_classes") or source_classes))
    return md_table(pd.DataFrame(rows).fillna("—")) if rows else "_(Step 0 and Step 1 not run)_\n"


def data_md(summary_tsv) -> str:
    d = _read(summary_tsv)
    cols = {"dataset": "dataset", "role": "role", "kind": "kind", "classes_used": "classes used",
            "images_used": "images used", "images_skipped": "files skipped", "classes_dropped": "classes dropped",
            "val_per_class": "val/class", "test_per_class": "test/class"}
    return md_table(d[[c for c in cols if c in d]].rename(columns=cols))


def wall_time_md(benchmarks) -> str:
    """The wall-time table of ``benchmarks`` ({stage label: [benchmark .tsv paths]}, rows in that order)."""
    w = wall_time(benchmarks)
    for c in ("wall s (sum)", "wall s (longest job)", "CPU s (sum)"):
        w[c] = w[c].map(lambda x: _num(x, 0))
    return md_table(w)


def copy_image(src, dst, width: int = IMAGE_WIDTH) -> None:
    """Copy a PNG at most ``width`` px wide with a 256-colour palette (Pillow), atomically: a
    docs page's plots stay small (tens of kB, not hundreds)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        with atomic_write(dst) as tmp:
            im.save(tmp, format="PNG", optimize=True)


def default_plots(report_dir, arch: str, datasets, health_tsv=None) -> list[tuple[str, str]]:
    """(file under report_dir, caption): the improvement over Baseline-RGB against k per dataset,
    and the saliency gallery of the first dataset whose maps have an object ratio (boxes)."""
    report_dir = Path(report_dir)
    picks = [(f"plots/accuracy/{arch}/{d}/improvement.png",
              f"{d}: each method minus Baseline-RGB against k (points; mean over seeds)") for d in datasets]
    boxed = []
    if health_tsv and Path(health_tsv).exists():
        h = _read(health_tsv)
        boxed = [d for d in datasets if (h[h.dataset == d].test_object_ratio.replace("", None).dropna().size)]
    for d in boxed[:1] or list(datasets)[:1]:
        picks.append((f"qualitative/{d}/saliency.png", f"{d}: test images with the maps of each method"))
    return [(p, c) for p, c in picks if (report_dir / p).exists()]


def _bench_folder(benchmarks) -> str:
    """The folder holding every benchmark file given (for the page's first line only)."""
    dirs = [os.path.dirname(os.fspath(p)) or "." for paths in (benchmarks or {}).values()
            for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not dirs:
        return "no benchmark file"
    try:
        return f"{os.path.commonpath(dirs)}/"
    except ValueError:  # absolute and relative paths mixed
        return "the jobs' benchmark files"


def render(report_dir, arch: str, out_md, benchmarks=None, backbone_jsons=(), saliency_jsons=(),
           source: str = "", source_classes: int | None = None, datasets=(), title: str = "Results",
           runs_tsv=None, variant: str | None = None) -> str:
    """Write ``out_md`` (and its images in ``<out_md's folder>/results_md/``); returns the text.
    ``benchmarks``: {stage label: [benchmark .tsv paths]}, the wall-time rows in their order."""
    report_dir, out_md = Path(report_dir), Path(out_md)
    health_tsv = report_dir / "saliency_health.tsv"
    acc, notes = accuracy_md(report_dir / f"table_{spec.arch_slug(arch)}.tsv")
    runs_tsv = Path(runs_tsv) if runs_tsv else None
    synthetic = any("SYNTHETIC" in n for n in notes)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    not_paper = "" if arch in spec.PAPER_ARCHS else f" **{spec.not_paper_note(arch)}.**"
    parts = [
        f"### {title}\n",
        f"Generated by `halsal results-md` from `{report_dir}` and `{_bench_folder(benchmarks)}` on {now}; "
        f"machine: {machine()}."
        + (" **SYNTHETIC data — not a reproduction of the paper.**" if synthetic else "") + not_paper + "\n",
        "#### 1. Test accuracy (%)\n",
        "Mean ± sample std over seeds (n = seeds) of the test accuracy at the epoch selected on "
        "validation accuracy; AVG over the k shown. Comparison with the paper, per dataset:\n",
        "\n".join(notes) + "\n", acc,
    ]
    if runs_tsv and runs_tsv.exists():
        parts += ["Epoch selected on validation accuracy, per dataset, k and method, with each cell's training "
                  "budget (a run that selects its last epoch may have stopped learning too early; the last "
                  "epoch is always validated):\n", epochs_md(runs_tsv, arch, variant, datasets)]
    parts += [
        "#### 2. Approach A and Approach B minus Baseline-RGB\n",
        "Paired by seed (same split, same k-shot images); percentage points. Intervals: Student's t over "
        "the seeds' differences, and a two-level bootstrap (seeds, then test images within a seed, 2000 "
        "resamples). An interval holding 0 reads \"within noise\".\n",
        differences_md(report_dir / "differences.tsv"),
        "#### 3. Saliency health\n",
        "Per method and k, means over seeds. Dead: the map is all zero on at least half of the test "
        "images (Eq. 2 then leaves the RGB features unchanged: the run is Baseline-RGB at test time). "
        "Map mean: the map's mean value. Object ratio: the map's mean inside the object's box over its "
        "mean on the whole image (1 = no preference; needs boxes). (before) = before fine-tuning: for "
        "Approach A and B, Step 1's map; Approach A keeps it frozen. The spectral-residual row (config "
        "`smic.reference`, not in the paper) scores training-free maps on the same test images at the same "
        "resolution: the bar a learned map's object ratio has to clear.\n",
        health_md(health_tsv),
        "#### 4. Step 0 and Step 1 on the source set\n",
        steps_md(backbone_jsons, saliency_jsons, source, source_classes),
    ]
    if (report_dir / "data_summary.tsv").exists():
        parts += ["#### 5. Data\n", data_md(report_dir / "data_summary.tsv")]
    parts += ["#### 6. Wall time per stage\n",
              "Seconds from each job's Snakemake benchmark file; \"sum\" adds the jobs of a stage (two may "
              "have run side by side on the cores), \"CPU s\" is their CPU time.\n",
              wall_time_md(benchmarks),
              devices_md(runs_tsv, backbone_jsons, saliency_jsons)]  # halsal/report/devices.py
    plots = default_plots(report_dir, arch, datasets, health_tsv)
    if plots:
        parts.append("#### 7. Plots\n")
        img_dir = out_md.parent / IMAGES
        if img_dir.exists():
            shutil.rmtree(img_dir)
        img_dir.mkdir(parents=True)
        for rel, caption in plots:
            name = rel.replace("plots/accuracy/", "").replace("/", "_")
            copy_image(report_dir / rel, img_dir / name)
            parts.append(f"{caption}:\n\n![{caption}]({IMAGES}/{name})\n")
    text = "\n".join(parts)
    write_text(out_md, text)
    return text


def publish(generated_md, doc, images_dir=None, elapsed_s: float | None = None, command: str = "",
            elapsed_note: str = "") -> None:
    """Replace the block between BEGIN and END in ``doc`` with ``generated_md`` (its image links
    pointing at ``images_dir``, relative to the doc, where its images are copied)."""
    generated_md, doc = Path(generated_md), Path(doc)
    if not generated_md.exists():
        raise HalsalError(f"{generated_md} does not exist: run the workflow first (it writes it in rule report_markdown)")
    text = doc.read_text() if doc.exists() else ""
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise HalsalError(f"{doc} has no generated block: add the two lines\n{BEGIN}\n{END}\nwhere the results go")
    body = generated_md.read_text()
    if elapsed_s is not None:
        note = f" ({elapsed_note})" if elapsed_note else ""
        body = (f"**Measured: `{command or 'the workflow'}` took {int(elapsed_s // 60)} min {int(elapsed_s % 60)} s** "
                f"of wall time{note} on {machine()}.\n\n") + body
    src_images = generated_md.parent / IMAGES
    if images_dir is not None and src_images.is_dir():
        dst = doc.parent / images_dir
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src_images, dst, ignore=shutil.ignore_patterns(".*"))  # not Snakemake's marker
        body = body.replace(f"]({IMAGES}/", f"]({Path(images_dir).as_posix()}/")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    write_text(doc, f"{head}{BEGIN}\n{body.rstrip()}\n{END}{tail}")
