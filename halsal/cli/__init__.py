"""`halsal`: the command line every Snakemake rule calls.

The stages, in workflow order:

  generate / index / fetch   a dataset -> results/datasets/<name>/index.tsv
  split                      k-shot split (5 val + 5 test per class, nested train ranks)
  prepare                    decode + resize + crop once (DALI) -> images.npy + manifest
  backbone                   Step 0: ImageNet weights, a local file, or train from scratch
  pretrain-saliency          Step 1: saliency branch only, on the source set
  smic-maps                  explicit saliency maps of a dataset (SMIC): spectral residual or PNGs
  finetune                   Step 2: method / k / seed runs on a fine-grained dataset (one job, many runs)
  probe                      a reference row (not in the paper): a linear probe on frozen features
  aggregate, tables, ...     the report (see `halsal <command> --help`)
  results-md, publish-md     the results as Markdown, spliced into a docs page (make photos)

Every default and choice is the workflow config's (workflow/schemas/config.schema.yaml); the
training commands also take their step's settings as one JSON object (--settings), which is what
the workflow passes. Errors caused by inputs (missing data, corrupt images, bad weights) are
printed as one message naming the input and the fix, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from halsal import __version__
from halsal.cli import data, report, train
from halsal.cli.options import apply_settings
from halsal.errors import HalsalError
from halsal.gpu import claim_gpus  # torch-free


class _Parser(argparse.ArgumentParser):
    """The top-level parser; ``subcommands`` maps each command to its parser (``--settings``)."""

    subcommands: dict[str, argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="halsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"halsal {__version__}")
    parser.add_argument("--gpus", type=int, default=None, metavar="N", help="the job's resources.gpu: 0 hides "
                        "the GPUs, N > 0 claims N of its own; a GPU asked for that does not work is an error (halsal/gpu.py)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, train, report):
        module.register(sub)
    parser.subcommands = dict(sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = apply_settings(parser, args, argv)
        if args.gpus is not None:  # before any command imports torch or DALI
            claim_gpus(args.gpus)
        args.func(args)
    except HalsalError as exc:
        print(f"halsal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
