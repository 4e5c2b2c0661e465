"""The report commands: aggregate, tables, plots, qualitative, data-report, results-md,
publish-md. Each parses its arguments and calls one function of :mod:`halsal.report`; the files a
workflow rule passes come as JSON objects built from the rule's declared inputs."""

from __future__ import annotations

import argparse
import json

from halsal import spec
from halsal.errors import HalsalError
from halsal.report.aggregate import parse_variant_arg


def json_object(text: str) -> dict:
    """An option's value as a JSON object (argparse ``type``): the file paths a workflow rule
    passes to a report command, built from the rule's declared inputs (insertion order kept)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expects a JSON object {{...}}, got {type(value).__name__}: {text[:200]!r}")
    return value


def cmd_aggregate(args) -> None:
    from halsal.io import write_tsv
    from halsal.report.aggregate import accuracy_table, collect_runs, glob_metrics, write_aggregate

    paths = list(args.metrics or [])
    if args.runs_root:
        paths += [str(p) for p in glob_metrics(args.runs_root)]
    runs = collect_runs(paths, allow_missing=args.allow_missing)
    write_aggregate(runs, args.runs_tsv, args.summary_csv)
    if args.accuracy_tsv:
        write_tsv(args.accuracy_tsv, accuracy_table(runs))
    syn = " (SYNTHETIC data)" if len(runs) and runs.synthetic.any() else ""
    print(f"aggregate: {len(runs)} runs{syn} -> {args.runs_tsv}, {args.summary_csv}")


def cmd_tables(args) -> None:
    from halsal.report.aggregate import read_runs
    from halsal.report.tables import read_probes, write_tables

    runs = read_runs(args.runs)
    bad = {d: p for d, p in args.reference_maps.items() if not isinstance(p, str)}
    if bad:
        raise HalsalError(f"--reference-maps: expects {{dataset: maps.npy path}}, got {bad}")
    out = write_tables(runs, args.outdir, parse_variant_arg(args.variant), configured_archs=args.archs, datasets=args.datasets,
                       probes=read_probes(args.probe), methods=args.methods, ks=args.ks, synthetic_datasets=args.synthetic_datasets,
                       dataset_kinds=dict(v.partition("=")[::2] for v in args.dataset_kinds),
                       reference_maps=args.reference_maps)
    dead = int((out["health"].n_dead > 0).sum()) if len(out["health"]) else 0
    print(f"tables: {len(out['cells'])} cells, {len(out['differences'])} paired differences, "
          f"{len(out['health'])} saliency-health rows ({dead} with a dead map) -> {args.outdir}")


def cmd_plots(args) -> None:
    from halsal.report.aggregate import read_runs
    from halsal.report.plots import write_plots

    written = write_plots(read_runs(args.runs), args.outdir, parse_variant_arg(args.variant), args.curve_dataset, args.curve_k,
                          args.curve_seed)
    print(f"plots: {len(written)} figures -> {args.outdir}")


def cmd_qualitative(args) -> None:
    from halsal.report.aggregate import read_runs
    from halsal.report.qualitative import write_qualitative

    written = write_qualitative(read_runs(args.runs), args.outdir, parse_variant_arg(args.variant), args.inputs,
                                datasets=args.datasets, arch=args.arch)
    print(f"qualitative: {len(written)} figures -> {args.outdir}")


def _pairs(values, what: str) -> dict:
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep:
            raise HalsalError(f"--{what} expects name=value, got {v!r}")
        out[key] = val
    return out


def cmd_data_report(args) -> None:
    from halsal.report import data_section

    kinds, policies = _pairs(args.kinds, "kinds"), _pairs(args.policies, "policies")
    entries = []
    for name, role in [(d, "target") for d in args.targets] + ([(args.source, "source")] if args.source else []):
        on_bad, too_few, duplicates = (policies.get(name, "").split(",") + ["", "", ""])[:3]
        entry = {"name": name, "role": role, "kind": kinds.get(name, ""), "on_bad_image": on_bad,
                 "too_few_images": too_few, "duplicates": duplicates}
        if role == "source":
            entry["seeds"] = [0]
        elif args.seeds is not None:
            entry["seeds"] = args.seeds
        entries.append(entry)  # no "seeds": the keys of the dataset's "splits"
    summary, items = data_section.write_data_section(entries, args.inputs, args.html, args.tsv, args.summary_tsv)
    print(f"data-report: {len(summary)} datasets, {int((items.item == 'skipped_file').sum())} skipped files, "
          f"{int((items.item == 'dropped_class').sum())} dropped classes, "
          f"{int(summary['duplicate_groups'].sum()) if len(summary) else 0} groups of identical files -> {args.html}")


def cmd_results_md(args) -> None:
    from halsal.report import results_md

    bad = {k: v for k, v in args.benchmarks.items()
           if not (isinstance(v, list) and all(isinstance(p, str) for p in v))}
    if bad:
        raise HalsalError(f"--benchmarks expects {{stage label: [benchmark .tsv paths]}}, got {bad}")
    text = results_md.render(args.report_dir, args.arch, args.out, benchmarks=args.benchmarks, backbone_jsons=args.backbone,
                  saliency_jsons=args.saliency, source=args.source, source_classes=args.source_classes,
                  datasets=args.datasets, title=args.title, runs_tsv=args.runs, variant=args.variant)
    print(f"results-md: {len(text.splitlines())} lines -> {args.out}")


def cmd_publish_md(args) -> None:
    from halsal.report import results_md

    results_md.publish(args.markdown, args.doc, args.images_dir, args.elapsed_s, args.command, args.elapsed_note)
    print(f"publish-md: {args.markdown} -> {args.doc}")


# The report commands' options: (flag, argparse keywords), per command.
# What each JSON option holds (the workflow builds them from its rules' declared inputs).
JSON_HELP = {
    "reference-maps": '{"<dataset>": "<maps.npy>", ...}: each dataset\'s spectral-residual maps, a reference row per '
                      "dataset in the saliency-health table, on the same test images and resolution (not in the "
                      "paper); {} or left out: none",
    "qualitative": '{"<dataset>": {"images": "<prepared images.npy>", "index": "<index.tsv>"}, ...}: the files of '
                   "each dataset whose images the grids show",
    "data-report": 'every file read, per dataset of --targets and --source: {"<dataset>": {"index": "<index.tsv>", '
                   '"info": "<index.json>" or null (folder datasets only), "manifest": "<manifest.tsv>", "splits": '
                   '{"<seed>": "<seed<s>.tsv>", ...}, "notes": {"<seed>": "<seed<s>.notes.txt>", ...} (optional: '
                   "why a class was dropped)}, ...}",
    "benchmarks": 'the jobs\' benchmark files by row of the wall-time table, in row order: {"<stage label>": '
                  '["<benchmark .tsv>", ...], ...}, e.g. {"datasets": [...], "finetune: approach_a": [...]}; a '
                  "label without a file that exists and holds a row is left out",
}

RUN_TABLE_OPTIONS = (  # tables, plots and qualitative read runs.tsv
    ("--runs", dict(required=True, help='results/tables/runs.tsv from `halsal aggregate`')),
    ("--outdir", dict(required=True)),
    ("--variant", dict(required=True, nargs='+', help="the main (non-ablation) variant, e.g. d4-pool2-eq2, or one per"
                                                      " arch: alexnet=d4-pool2-eq2 resnet152=d4-layer2.0-eq2")),
)

COMMANDS = (  # name, its function, its one-line help, whether it reads runs.tsv, its options
    ("aggregate", cmd_aggregate, 'metrics.json files -> runs.tsv (one row per run) and summary.csv', False, (
        ("--metrics", dict(nargs='*', default=[], help='metrics.json files (the configured grid)')),
        ("--runs-root", dict(help='also collect every metrics.json under this folder (results/runs)')),
        ("--allow-missing", dict(action='store_true', help='skip listed metrics files that do not exist')),
        ("--runs-tsv", dict(required=True)),
        ("--summary-csv", dict(required=True)),
        ("--accuracy-tsv", dict(help='mean/std/n per arch, dataset, method, variant, k')),
    )),
    ("tables", cmd_tables, "accuracy tables in the paper's layout, paired differences and saliency health (TSV, "
                           "HTML); reads each run's predictions.tsv via runs.tsv's run_dir", True, (
        ("--archs", dict(nargs='*', default=[], help="configured archs (others say 'not run')")),
        ("--probe", dict(nargs='*', default=[], help="probe.tsv files of `halsal probe` (a reference row, not in the "
                                                     "paper)")),
        ("--reference-maps", dict(type=json_object, default={}, metavar="JSON", help=JSON_HELP["reference-maps"])),
        ("--datasets", dict(nargs='*', default=[], help='configured datasets')),
        ("--methods", dict(nargs='*', default=[], help="configured methods (others say 'not run')")),
        ("--ks", dict(nargs='*', default=[], help='configured k values')),
        ("--synthetic-datasets", dict(nargs='*', default=[], help='datasets to label as synthetic')),
        ("--dataset-kinds", dict(nargs='*', default=[], help="name=kind per dataset (config `kind`): only "
                                                             "flowers102/cub200/cars196 are compared with the paper")),
    )),
    ("plots", cmd_plots, 'accuracy/improvement vs k, Figures 2-3, learning curves (PNG)', True, (
        ("--curve-dataset", dict(help='learning curves: dataset (default: the first)')),
        ("--curve-k", dict(help='learning curves: k (default: the largest)')),
        ("--curve-seed", dict(type=int, help='learning curves: seed (default: the first)')),
    )),
    ("qualitative", cmd_qualitative, 'Tables 3-4 grids and saliency galleries (PNG)', True, (
        ("--inputs", dict(type=json_object, required=True, metavar="JSON", help=JSON_HELP["qualitative"])),
        ("--datasets", dict(nargs='*', default=[])),
        ("--arch", dict(help='architecture whose runs are shown (default: the first)')),
    )),
    ("data-report", cmd_data_report, "the report's Data section: skipped files, dropped classes, ignored files, "
                                     "identical files", False, (
        ("--inputs", dict(type=json_object, required=True, metavar="JSON", help=JSON_HELP["data-report"])),
        ("--targets", dict(nargs='*', default=[], help='target datasets')),
        ("--source", dict(default=None, help='the source set (its split is seed 0)')),
        ("--seeds", dict(nargs='*', type=int, default=None, help="split seeds of the target datasets (default: the "
                                                                 'keys of each one\'s "splits"); a seed without a '
                                                                 "split file in --inputs is left out")),
        ("--kinds", dict(nargs='*', default=[], help='name=kind (folder, synthetic, cub200, ...)')),
        ("--policies", dict(nargs='*', default=[], help='name=on_bad_image,too_few_images[,duplicates]')),
        ("--html", dict(required=True)),
        ("--tsv", dict(required=True, help='one row per skipped file, dropped class, ignored file and duplicate')),
        ("--summary-tsv", dict(default=None, help='one row per dataset')),
    )),
    ("results-md", cmd_results_md, "the report's tables, Step 0/1, wall time and a few plots as one Markdown section "
                                   "(rule report_markdown)", False, (
        ("--report-dir", dict(required=True, help='results/report (table_<arch>.tsv, differences.tsv, ...)')),
        ("--arch", dict(default=spec.ARCHS[0], help='the architecture whose table is shown')),
        ("--out", dict(required=True, help='the Markdown file; its images go to results_md/ beside it')),
        ("--benchmarks", dict(type=json_object, default={}, metavar="JSON", help=JSON_HELP["benchmarks"])),
        ("--backbone", dict(nargs='*', default=[], help="Step 0's backbone.json files")),
        ("--saliency", dict(nargs='*', default=[], help="Step 1's saliency_<variant>.json files")),
        ("--source", dict(default='', help="the source set's name")),
        ("--source-classes", dict(type=int, default=None, help="the source set's class count (chance level)")),
        ("--datasets", dict(nargs='*', default=[], help='the target datasets (plots)')),
        ("--title", dict(default='Results')),
        ("--runs", dict(default=None, help='results/tables/runs.tsv (the selected epoch of each run)')),
        ("--variant", dict(default=None, help='the main variant of --arch (default: every run of --arch)')),
    )),
    ("publish-md", cmd_publish_md, "splice results-md's section into a docs page between its BEGIN/END markers and "
                                   "copy its images beside the page", False, (
        ("--markdown", dict(required=True, help='results/report/results.md')),
        ("--doc", dict(required=True, help='the page, e.g. docs/results-photos.md')),
        ("--images-dir", dict(default=None, help='folder for the images, relative to the page')),
        ("--elapsed-s", dict(type=float, default=None, help="measured wall seconds of the whole run, stated at the "
                                                            "top")),
        ("--command", dict(default='', help='the command whose time --elapsed-s is')),
        ("--elapsed-note", dict(default='', help='what --elapsed-s covers, printed beside it')),
    )),
)


def register(subparsers) -> None:
    for name, func, help_, reads_runs, options in COMMANDS:
        p = subparsers.add_parser(name, help=help_, description=func.__doc__ or help_)
        for flag, kw in (RUN_TABLE_OPTIONS if reads_runs else ()) + options:
            p.add_argument(flag, **kw)
        p.set_defaults(func=func)
