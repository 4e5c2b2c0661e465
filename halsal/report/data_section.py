"""The report's Data section: what each dataset gave, and everything that was left out.

Per dataset (targets and the source set): images and classes indexed, images used (in the
split: train pool + val + test), every file skipped because it did not decode (with the
decoder's reason), every class dropped for having too few images (with its counts), and the
files the indexer ignored (hidden files, non-image files, nested folders: counts with the
first few names). It reads only files the workflow already wrote, with pandas, each given by
its path (one entry per dataset, the rule's declared inputs; no path is built here):

- ``index``: the dataset's ``index.tsv`` and ``info``: for folder datasets, its ``index.json``
  (null otherwise);
- ``manifest``: ``results/prepared/<name>/manifest.tsv`` (``status``/``reason`` per index row);
- ``splits``: {seed: ``results/splits/<name>/seed<s>.tsv``} and, optionally, ``notes``:
  {seed: its ``.notes.txt``} (the reason a class was dropped).

Exact duplicates (identical files: index.tsv's ``sha256`` column, or the files hashed now for an
index written before it) are listed group by group, every copy with its class and where the
split put it (its role, or left out by the ``duplicates`` policy), so a copy in train and in test,
or one photo under two classes, is never silent.

The skipped files and dropped classes are computed from the manifest and the split tables
themselves, so the section does not depend on a log or a note mentioning them.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from halsal.data.datasets import duplicate_groups
from halsal.data.manifest import read_manifest
from halsal.errors import HalsalError
from halsal.io import write_text, write_tsv
from halsal.report.page import html_document

SHOWN = 5  # ignored-file names shown per kind in the HTML (index.json keeps more)
SUMMARY_COLUMNS = ["dataset", "role", "kind", "on_bad_image", "too_few_images", "classes_indexed", "images_indexed",
                   "images_skipped", "classes_dropped", "images_in_dropped_classes", "classes_used", "images_used",
                   "val_per_class", "test_per_class", "hidden_files", "non_image_files", "nested_folders",
                   "class_names_from", "duplicates", "duplicate_groups", "duplicate_files", "label_conflicts",
                   "duplicates_left_out", "duplicate_groups_across_roles"]
ITEM_COLUMNS = ["dataset", "item", "name", "class_name", "count", "reason"]
IGNORED_KINDS = {"hidden": ("hidden_file", "hidden files and folders (names starting with '.', __MACOSX)"),
                 "non_image": ("non_image_file", "non-image files (extension not an image type)"),
                 "folders": ("nested_folder", "folders inside class folders (not indexed)")}


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _display(path: str, root: str | None) -> str:
    """A file's path relative to the dataset folder where it lies inside it."""
    if root:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return path


def _seed_paths(entry: dict, key: str) -> dict[int, Path]:
    """{seed: path} of an entry's ``splits`` or ``notes`` ({"<seed>": path}), in the given order."""
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise HalsalError(f"{key!r} expects {{\"<seed>\": path, ...}}, got {value!r}")
    try:
        return {int(seed): Path(path) for seed, path in value.items() if path}
    except (TypeError, ValueError):
        raise HalsalError(f"{key!r} expects {{\"<seed>\": path, ...}} with integer seeds, got {value!r}") from None


def dataset_data(name: str, paths: dict, seeds=None, role: str = "target", kind: str = "",
                 on_bad_image: str = "", too_few_images: str = "", duplicates: str = "") -> tuple[dict, list[dict]]:
    """One dataset's summary row and its listed items (skipped files, dropped classes, ignored files).

    ``paths``: the dataset's files, ``{"index": index.tsv, "info": index.json or None,
    "manifest": manifest.tsv, "splits": {"<seed>": seed<s>.tsv, ...}}`` and optionally ``"notes":
    {"<seed>": seed<s>.notes.txt}``. ``seeds``: the split seeds to read (default: the keys of
    ``splits``, in their order); a seed without a split file (not given, or not on disk) is left
    out, as is a manifest or ``info`` that is not given or not on disk."""
    if not paths or not paths.get("index"):
        raise HalsalError(f"no index.tsv given for dataset {name!r} (its entry needs \"index\": path)")
    index_path = Path(paths["index"])
    if not index_path.is_file():
        raise HalsalError(f"{index_path} is missing: run the dataset's index/fetch/generate rule first")
    index = _read_tsv(index_path)
    index["label"] = index["label"].astype(int)
    info_path = Path(paths["info"]) if paths.get("info") else None
    info = json.loads(info_path.read_text()) if info_path and info_path.is_file() else {}
    root = info.get("root")
    summary = {"dataset": name, "role": role, "kind": kind, "on_bad_image": on_bad_image,
               "too_few_images": too_few_images, "classes_indexed": int(index["label"].nunique()),
               "images_indexed": len(index), "class_names_from": info.get("class_names_from", ""),
               "duplicates": duplicates}
    items: list[dict] = []

    # Files that did not decode (prepare, on_bad_image: skip).
    manifest_path = Path(paths["manifest"]) if paths.get("manifest") else None
    ok = pd.Series(True, index=index.index)
    if manifest_path and manifest_path.is_file():
        manifest = read_manifest(manifest_path)
        status = manifest["status"].reindex(index.index, fill_value="ok")
        reason = manifest["reason"].reindex(index.index, fill_value="")
        ok = status.eq("ok")
        for row in index.index[~ok]:
            items.append({"dataset": name, "item": "skipped_file", "name": _display(index.at[row, "path"], root),
                          "class_name": index.at[row, "class_name"], "count": 1,
                          "reason": reason.at[row] or status.at[row]})
    summary["images_skipped"] = int((~ok).sum())

    # Classes dropped by the split (too_few_images: drop_class): in the index, not in the split.
    given, notes_given = _seed_paths(paths, "splits"), _seed_paths(paths, "notes")
    seeds = list(given) if seeds is None else [int(s) for s in seeds]
    splits = [(s, given[s]) for s in seeds if s in given and given[s].is_file()]
    if splits:
        seed, path = splits[0]
        split = _read_tsv(path)
        split["label"] = split["label"].astype(int)
        notes_path = notes_given.get(seed)
        notes = notes_path.read_text().splitlines() if notes_path and notes_path.is_file() else []
        kept = set(split["label"])
        dropped = [label for label in sorted(index["label"].unique()) if label not in kept]
        for label in dropped:
            in_class = index["label"].eq(label)
            usable = int((in_class & ok).sum())
            note = next((n for n in notes if f"(label {label})" in n), "")
            items.append({"dataset": name, "item": "dropped_class", "name": index.loc[in_class, "class_name"].iloc[0],
                          "class_name": index.loc[in_class, "class_name"].iloc[0], "count": int(in_class.sum()),
                          "reason": note or f"{usable} usable images: too few for the largest k plus val and test"})
        summary["classes_dropped"] = len(dropped)
        summary["images_in_dropped_classes"] = int(index["label"].isin(dropped).sum())
        summary["classes_used"] = len(kept)
        summary["images_used"] = len(split)
        tables = [_read_tsv(p) for _, p in splits]
        per_role = [t.groupby(["label", "role"]).size().unstack(fill_value=0) for t in tables]
        for role_name in ("val", "test"):
            counts = pd.concat([r[role_name] if role_name in r else pd.Series(0, index=r.index) for r in per_role])
            lo, hi = int(counts.min()), int(counts.max())
            summary[f"{role_name}_per_class"] = str(lo) if lo == hi else f"{lo}-{hi}"
    else:
        tables, dropped = [], []
        for key in ("classes_dropped", "images_in_dropped_classes", "classes_used", "images_used",
                    "val_per_class", "test_per_class"):
            summary[key] = ""
    dup_summary, dup_items = _duplicates(name, index, ok, root, tables, dropped)
    summary.update(dup_summary)
    items += dup_items

    # Files the indexer did not take (folder datasets: index.json).
    ignored = info.get("ignored", {})
    for key, (item, _) in IGNORED_KINDS.items():
        entry = ignored.get(key)
        column = {"hidden": "hidden_files", "non_image": "non_image_files", "folders": "nested_folders"}[key]
        summary[column] = "" if entry is None else int(entry["count"])
        for example in (entry or {}).get("examples", []):
            items.append({"dataset": name, "item": item, "name": example, "class_name": "", "count": 1,
                          "reason": "not indexed"})
    return summary, items


def _duplicates(name: str, index: pd.DataFrame, ok: pd.Series, root, splits: list[pd.DataFrame],
                dropped_labels) -> tuple[dict, list[dict]]:
    """Every group of identical files among the images that decode: one item per copy, with its
    class and its place in the (first) split; and whether any group spans two roles in any seed."""
    groups = duplicate_groups(index, usable=ok.to_numpy(), root=root)
    roles = [dict(zip(t["row"].astype(int), t["role"])) for t in splits]
    across_roles, left_out, items = 0, 0, []
    for number, g in enumerate(groups, 1):
        if any(len({r[row] for row in g["rows"] if row in r}) > 1 for r in roles):
            across_roles += 1
        kind = "label conflict across classes" if g["kind"] == "across_classes" else "copies within a class"
        for row, path, label, cname in zip(g["rows"], g["paths"], g["labels"], g["classes"]):
            if not roles:
                where = "no split yet"
            elif row in roles[0]:
                where = roles[0][row]
            else:
                left_out += 1
                where = "class dropped (too few images)" if label in dropped_labels else "left out (duplicates policy)"
            items.append({"dataset": name, "item": "duplicate", "name": path,
                          "class_name": cname, "count": len(g["rows"]),
                          "reason": f"group {number}, {kind} (sha256 {g['sha256'][:12]}): {where}"})
    summary = {"duplicate_groups": len(groups), "duplicate_files": sum(len(g["rows"]) for g in groups),
               "label_conflicts": sum(g["kind"] == "across_classes" for g in groups),
               "duplicates_left_out": left_out if roles else "", "duplicate_groups_across_roles": across_roles}
    return summary, items


def data_tables(datasets: list[dict], inputs: dict, seeds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``datasets``: dicts with ``name`` and optionally ``role``, ``kind``, ``on_bad_image``,
    ``too_few_images``, ``duplicates``, ``seeds`` (the source set's split is seed 0 only);
    ``inputs``: {name: that dataset's files} (:func:`dataset_data`'s ``paths``). ``seeds``: the
    seeds of a dataset without its own (None: the keys of its ``splits``)."""
    rows, items = [], []
    for d in datasets:
        if d["name"] not in (inputs or {}):
            raise HalsalError(f"no files given for dataset {d['name']!r}: --inputs needs an entry "
                              f"{{\"{d['name']}\": {{\"index\": ..., \"info\": ..., \"manifest\": ..., \"splits\": {{...}}}}}}")
        summary, listed = dataset_data(d["name"], inputs[d["name"]], d.get("seeds", seeds),
                                       role=d.get("role", "target"), kind=d.get("kind", ""),
                                       on_bad_image=d.get("on_bad_image", ""),
                                       too_few_images=d.get("too_few_images", ""), duplicates=d.get("duplicates", ""))
        rows.append(summary)
        items += listed
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.DataFrame(items, columns=ITEM_COLUMNS)


_CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;font-size:13px;margin:12px;color:#222}
h2{font-size:16px;margin:4px 0 8px} h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.n{text-align:right}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px;margin:6px 0;max-width:80em}
.fine{color:#070} p.note{color:#555;font-size:12px;max-width:70em}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _kv(summary: pd.Series) -> str:
    labels = [("images_indexed", "images indexed"), ("classes_indexed", "classes indexed"),
              ("images_skipped", "images skipped (did not decode)"), ("classes_dropped", "classes dropped"),
              ("images_in_dropped_classes", "images in dropped classes"), ("images_used", "images used (in the split)"),
              ("classes_used", "classes used"), ("val_per_class", "val images per class"),
              ("test_per_class", "test images per class"), ("hidden_files", "hidden files ignored"),
              ("non_image_files", "non-image files ignored"), ("nested_folders", "nested folders ignored"),
              ("class_names_from", "class names from"), ("duplicate_groups", "groups of identical files"),
              ("duplicate_files", "files in those groups"), ("label_conflicts", "groups across classes (label conflicts)"),
              ("duplicates_left_out", "copies left out of the split")]
    cells = "".join(f"<tr><th>{_e(label)}</th><td class=\"n\">{_e(summary[key])}</td></tr>"
                    for key, label in labels if str(summary[key]) != "")
    return f"<table>{cells}</table>"


def _duplicates_html(s: pd.Series, copies: pd.DataFrame) -> str:
    spans = int(s["duplicate_groups_across_roles"] or 0)
    alarm = (f" <b>{spans} group(s) span two roles (train/val/test) in some seed: the split is wrong, re-run it.</b>"
             if spans else " No group spans two roles (train, val, test) in any seed.")
    rows = "".join(f"<tr><td>{_e(r['name'])}</td><td>{_e(r['class_name'])}</td><td class=\"n\">{_e(r['count'])}</td>"
                   f"<td>{_e(r['reason'])}</td></tr>" for _, r in copies.iterrows())
    return (f"<div class=\"warn\"><b>{_e(s['duplicate_groups'])} group(s) of identical files</b> "
            f"({_e(s['duplicate_files'])} files; {_e(s['label_conflicts'])} across classes, a label conflict: the same "
            f"photo under two classes).{alarm}</div>"
            f"<table><tr><th>file</th><th>class</th><th>copies</th><th>group, and its place in the split (first "
            f"seed)</th></tr>{rows}</table>")


def data_html(summary: pd.DataFrame, items: pd.DataFrame) -> str:
    parts = ["<h2>Data: what each dataset gave, and what was left out</h2>"]
    for _, s in summary.iterrows():
        name = s["dataset"]
        mine = items[items.dataset == name]
        policy = f"on_bad_image: {s['on_bad_image']}, too_few_images: {s['too_few_images']}" if s["on_bad_image"] else ""
        policy += f"{', ' if policy else ''}duplicates: {s['duplicates']}" if s["duplicates"] else ""
        parts.append(f"<h3>{_e(name)} <span style=\"font-weight:normal\">({_e(s['role'])}"
                     f"{', ' + _e(s['kind']) if s['kind'] else ''}{'; ' + _e(policy) if policy else ''})</span></h3>")
        parts.append(_kv(s))
        skipped = mine[mine.item == "skipped_file"]
        if len(skipped):
            rows = "".join(f"<tr><td>{_e(r['name'])}</td><td>{_e(r['class_name'])}</td><td>{_e(r['reason'])}</td></tr>"
                           for _, r in skipped.iterrows())
            parts.append(f"<div class=\"warn\"><b>{len(skipped)} file(s) skipped</b> (they did not decode; they hold "
                         "no train, val or test place)</div>"
                         f"<table><tr><th>file</th><th>class</th><th>reason</th></tr>{rows}</table>")
        dropped = mine[mine.item == "dropped_class"]
        if len(dropped):
            rows = "".join(f"<tr><td>{_e(r['name'])}</td><td class=\"n\">{_e(r['count'])}</td><td>{_e(r['reason'])}</td></tr>"
                           for _, r in dropped.iterrows())
            parts.append(f"<div class=\"warn\"><b>{len(dropped)} class(es) dropped</b> (too few images)</div>"
                         f"<table><tr><th>class</th><th>images</th><th>reason</th></tr>{rows}</table>")
        copies = mine[mine.item == "duplicate"]
        if len(copies):
            parts.append(_duplicates_html(s, copies))
        ignored = []
        for key, (item, what) in IGNORED_KINDS.items():
            column = {"hidden": "hidden_files", "non_image": "non_image_files", "folders": "nested_folders"}[key]
            count = s[column]
            if count in ("", 0):
                continue
            names = list(mine[mine.item == item]["name"])
            more = int(count) - min(len(names), SHOWN)
            shown = ", ".join(_e(n) for n in names[:SHOWN]) + (f", and {more} more" if more > 0 else "")
            ignored.append(f"<tr><td>{_e(what)}</td><td class=\"n\">{_e(count)}</td><td>{shown}</td></tr>")
        if ignored:
            parts.append("<p>Files the index left out:</p><table><tr><th>what</th><th>count</th><th>first names</th></tr>"
                         + "".join(ignored) + "</table>")
        if not (len(skipped) or len(dropped) or ignored or len(copies)):
            parts.append("<p class=\"fine\">Nothing was skipped, dropped or ignored, and no two files are identical.</p>")
    parts.append("<p class=\"note\">Skipped files are listed in results/prepared/&lt;dataset&gt;/manifest.tsv; the "
                 "split is drawn from the images that decode, so a skipped file never holds a val or test place. "
                 "Ignored files: results/datasets/&lt;dataset&gt;/index.json (folder datasets). Identical files (same "
                 "sha256) follow the dataset's `duplicates` policy (drop: one copy kept within a class, every copy of "
                 "a label conflict left out; warn: all kept, in train only); the split never puts two copies in two "
                 "roles. The same lists are in data.tsv.</p>")
    return html_document("Data", "".join(parts), _CSS)


def write_data_section(datasets: list[dict], inputs: dict, html_path, tsv_path, summary_tsv=None,
                       seeds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """data.html, data.tsv and (``summary_tsv``) data_summary.tsv of :func:`data_tables`."""
    summary, items = data_tables(datasets, inputs, seeds)
    if summary_tsv:
        write_tsv(summary_tsv, summary)
    write_tsv(tsv_path, items)
    write_text(html_path, data_html(summary, items))
    return summary, items
