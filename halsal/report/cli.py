"""Report subcommands of the `halsal` CLI: aggregate, tables, plots, qualitative, data-report,
results-md, publish-md.

``register(subparsers)`` adds them to halsal/cli.py's parser (``halsal <command>``); the
commands only parse arguments and call halsal.report's functions.
"""

from __future__ import annotations

import argparse
import json

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


def register(subparsers) -> None:
    p = subparsers.add_parser("aggregate", help="metrics.json files -> runs.tsv (one row per run) and summary.csv")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files (the configured grid)")
    p.add_argument("--runs-root", help="also collect every metrics.json under this folder (results/runs)")
    p.add_argument("--allow-missing", action="store_true", help="skip listed metrics files that do not exist")
    p.add_argument("--runs-tsv", required=True)
    p.add_argument("--summary-csv", required=True)
    p.add_argument("--accuracy-tsv", help="mean/std/n per arch, dataset, method, variant, k")
    p.set_defaults(func=cmd_aggregate)

    def common(p):
        p.add_argument("--runs", required=True, help="results/tables/runs.tsv from `halsal aggregate`")
        p.add_argument("--outdir", required=True)
        p.add_argument("--variant", required=True, nargs="+",
                       help="the main (non-ablation) variant, e.g. d4-pool2-eq2, or one per arch: "
                            "alexnet=d4-pool2-eq2 resnet152=d4-layer2.0-eq2")

    p = subparsers.add_parser("tables", help="accuracy tables in the paper's layout, paired differences and "
                              "saliency health (TSV, HTML); reads each run's predictions.tsv via runs.tsv's run_dir")
    common(p)
    p.add_argument("--archs", nargs="*", default=[], help="configured archs (others say 'not run')")
    p.add_argument("--probe", nargs="*", default=[], help="probe.tsv files of `halsal probe` (a reference row, not in the paper)")
    p.add_argument("--reference-maps", type=json_object, default={}, metavar="JSON",
                   help='{"<dataset>": "<maps.npy>", ...}: each dataset\'s spectral-residual maps (results/smic/'
                        '<dataset>/maps.npy), a reference row per dataset in the saliency-health table, on the same '
                        'test images and resolution (not in the paper); {} or left out: none')
    p.add_argument("--datasets", nargs="*", default=[], help="configured datasets")
    p.add_argument("--methods", nargs="*", default=[], help="configured methods (others say 'not run')")
    p.add_argument("--ks", nargs="*", default=[], help="configured k values")
    p.add_argument("--synthetic-datasets", nargs="*", default=[], help="datasets to label as synthetic")
    p.add_argument("--dataset-kinds", nargs="*", default=[],
                   help="name=kind per dataset (config `kind`): only flowers102/cub200/cars196 are compared with the paper")
    p.set_defaults(func=cmd_tables)

    p = subparsers.add_parser("plots", help="accuracy/improvement vs k, Figures 2-3, learning curves (PNG)")
    common(p)
    p.add_argument("--curve-dataset", help="learning curves: dataset (default: the first)")
    p.add_argument("--curve-k", help="learning curves: k (default: the largest)")
    p.add_argument("--curve-seed", type=int, help="learning curves: seed (default: the first)")
    p.set_defaults(func=cmd_plots)

    p = subparsers.add_parser("qualitative", help="Tables 3-4 grids and saliency galleries (PNG)")
    common(p)
    p.add_argument("--inputs", type=json_object, required=True, metavar="JSON",
                   help='{"<dataset>": {"images": "<prepared images.npy>", "index": "<index.tsv>"}, ...}: the files '
                        'of each dataset whose images the grids show')
    p.add_argument("--datasets", nargs="*", default=[])
    p.add_argument("--arch", help="architecture whose runs are shown (default: the first)")
    p.set_defaults(func=cmd_qualitative)

    from halsal.report.data_section import register as register_data

    register_data(subparsers)  # data-report: the report's Data section

    from halsal.report.results_md import register as register_md

    register_md(subparsers)  # results-md, publish-md: the results as Markdown for a docs page
