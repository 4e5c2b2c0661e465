"""The training commands: Step 0 (backbone), Step 1 (pretrain-saliency), Step 2 (finetune) and
the linear probe. Each takes its step's settings from ``--settings`` or from flags."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from halsal import settings, spec
from halsal.cli.options import add_device_arg, add_optim_args, augment, optim_config
from halsal.errors import HalsalError
from halsal.gpu import job_device  # torch-free


def cmd_backbone(args) -> None:
    from halsal.train.steps import backbone

    info = backbone(args.arch, args.weights, args.out, source_prepared=args.source_prepared, source_split=args.source_split,
                    cfg=optim_config(args), input_size=args.input_size,
                    device=job_device(args.device, args.gpus, args.source_prepared),
                    augment=augment(args), threads=args.threads, fc_width=args.fc_width)
    print({k: v for k, v in info.items() if k != "classes"})


def cmd_pretrain(args) -> None:
    from halsal.train.steps import pretrain_saliency

    info = pretrain_saliency(args.arch, args.variant, args.backbone, args.out, source_prepared=args.source_prepared,
                             source_split=args.source_split, cfg=optim_config(args), input_size=args.input_size,
                             device=job_device(args.device, args.gpus, args.source_prepared), augment=augment(args),
                             threads=args.threads)
    print({k: v for k, v in info.items() if k != "history"})


def _runs(args):
    """The job's runs: ``--run`` (repeated), ``--runs JSON``, or the single-run flags."""
    import json

    from halsal.train.steps import FinetuneRun

    single = [args.k, args.seed, args.split, args.out_dir]
    given = [bool(args.run), bool(args.runs), all(v is not None for v in single)]
    if sum(given) > 1 or (any(v is not None for v in single) and not given[2]):
        raise HalsalError("give one of --run K SEED SPLIT OUT_DIR (once per run), --runs JSON, "
                          "or --k/--seed/--split/--out-dir for one run")
    if args.runs:
        try:
            runs = json.loads(args.runs)
        except json.JSONDecodeError as exc:
            raise HalsalError(f"--runs is not JSON ([[k, seed, split, out_dir], ...]): {exc}") from None
    elif args.run:
        runs = args.run
    elif given[2]:
        runs = [single]
    else:
        raise HalsalError("no run given: add --run K SEED SPLIT OUT_DIR (once per run), "
                          "or --k, --seed, --split and --out-dir for one run")
    try:
        return [FinetuneRun(str(k), int(seed), Path(split), Path(out_dir)) for k, seed, split, out_dir in runs]
    except ValueError as exc:
        raise HalsalError(f"--run K SEED SPLIT OUT_DIR: the seed must be an integer ({exc})") from exc


def arch_name(value: str) -> str:
    """``--arch``: one of :data:`halsal.spec.ARCHS`, or ``timm/<timm model name>``."""
    if not spec.is_arch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(spec.ARCHS)}, or timm/<timm model name>")
    return value


def cmd_finetune(args) -> None:
    """Step 2: one or several fine-tuning runs of one arch, dataset, method and variant, trained
    one after another from inputs loaded once. A run that an earlier job finished (its
    complete.json matches) is restored, not retrained."""
    import torch

    from halsal.train.steps import finetune_batch, load_finetune_inputs

    runs = _runs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    inputs = load_finetune_inputs(arch=args.arch, method=args.method, variant=args.variant, dataset=args.dataset,
                                  prepared=args.prepared, backbone_pt=args.backbone, saliency_pt=args.saliency,
                                  maps=args.maps, cfg=optim_config(args), input_size=args.input_size,
                                  device=job_device(args.device, args.gpus, args.prepared), augment=augment(args),
                                  synthetic=args.synthetic, save_model=args.save_model)
    print(f"{len(runs)} run(s) of {args.arch}/{args.dataset}/{args.method}/{args.variant}; "
          f"inputs loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    results = finetune_batch(inputs, runs, log=lambda line: print(line, flush=True))
    for run, (metrics, restored) in zip(runs, results):
        print(f"{args.method} k={run.k} seed={run.seed}: val {metrics['val_acc']:.3f} (epoch {metrics['best_epoch']}), "
              f"test {metrics['test_acc']:.3f}{' [restored]' if restored else ''}"
              f"{' [SYNTHETIC data]' if args.synthetic else ''}", flush=True)


def cmd_probe(args) -> None:
    """A linear probe: scikit-learn logistic regression on the frozen backbone's pooled features
    (centre crops), per k and seed on the same splits as Step 2; C chosen on validation. Not a
    method of the paper: the simplest use of the same features."""
    import json

    import torch

    from halsal.train.probe import linear_probe

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = json.loads(args.runs) if args.runs else (args.run or [])
    if not runs:
        raise HalsalError("no probe given: add --run K SEED SPLIT (once per probe) or --runs JSON")
    table = linear_probe(arch=args.arch, dataset=args.dataset, backbone_pt=args.backbone, prepared=args.prepared,
                         runs=[(str(k), int(s), p) for k, s, p in runs], input_size=args.input_size, out_tsv=args.out,
                         device=job_device(args.device, args.gpus, args.prepared), synthetic=args.synthetic,
                         variant=args.variant)
    for r in table.itertuples():
        print(f"linear probe k={r.k} seed={r.seed}: C={r.C} val {r.val_acc:.3f} test {r.test_acc:.3f}", flush=True)


def _dataset_job_args(p) -> None:
    """What a Step-2 or probe job works on: an arch's Step-0 backbone and a prepared dataset."""
    p.add_argument("--arch", required=True, type=arch_name, metavar="|".join(spec.ARCHS) + "|timm/<name>")
    p.add_argument("--dataset", required=True, help="the dataset's name (in results and messages)")
    p.add_argument("--prepared", required=True, help="its prepared folder (images.npy, manifest.tsv)")
    p.add_argument("--backbone", required=True, help="Step 0's backbone.pt")


def _runs_args(p, fields: tuple[str, ...], what: str) -> None:
    """``--run`` (one run, repeated) and ``--runs`` (every run as one JSON list: what the workflow passes)."""
    p.add_argument("--run", nargs=len(fields), action="append", metavar=fields, help=f"one {what}; repeat for each")
    p.add_argument("--runs", default=None, metavar="JSON",
                   help=f"every {what.split(':')[0]} at once, [[{', '.join(f.lower() for f in fields)}], ...]")


def _source_step_args(p, *, step1: bool) -> None:
    """Steps 0 and 1: an arch, the source set (Step 0 may have none: ImageNet weights), the output."""
    p.add_argument("--arch", required=True, type=arch_name, metavar="|".join(spec.ARCHS) + "|timm/<name>")
    if step1:
        p.add_argument("--variant", required=True, help="d<depth>-<fusion>-<eq1|eq2>, e.g. d4-pool2-eq2")
        p.add_argument("--backbone", required=True, help="Step 0's backbone.pt")
    else:
        p.add_argument("--weights", required=True, help="imagenet | scratch | path to a weights file")
    p.add_argument("--source-prepared", required=step1, help="the source set's prepared folder")
    p.add_argument("--source-split", required=step1, help="its split (seed 0)")
    p.add_argument("--out", required=True, help="the weights (.pt) to write, and a .json beside them")
    add_optim_args(p)


def _finetune_args(p) -> None:
    _dataset_job_args(p)
    p.add_argument("--method", required=True, choices=spec.METHOD_NAMES)
    p.add_argument("--variant", required=True)
    p.add_argument("--saliency", default=None, help="Step-1 saliency weights (approach_a/b)")
    p.add_argument("--maps", default=None, help="the dataset's SMIC saliency maps, from smic-maps (smic)")
    p.add_argument("--synthetic", action="store_true", help="label the results as synthetic")
    p.add_argument("--save-model", choices=settings.choices("train.save_model"), default=settings.default("train.save_model"),
                   help="best: keep each run's selected network as model.safetensors + model.json (not in the paper)")
    _runs_args(p, ("k", "SEED", "SPLIT", "OUT_DIR"), "run: k (or K), seed, its split file and its output folder")
    g = p.add_argument_group("a single run (instead of --run)")
    g.add_argument("--k", default=None, help=f"training images per class, or {spec.K_ALL} for all")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--split", default=None)
    g.add_argument("--out-dir", default=None)
    add_optim_args(p)


def _probe_args(p) -> None:
    _dataset_job_args(p)
    _runs_args(p, ("k", "SEED", "SPLIT"), "probe: k, seed and its split file")
    p.add_argument("--variant", default="", help="the main variant, to place the row in its table")
    p.add_argument("--synthetic", action="store_true", help="label the results as synthetic")
    p.add_argument("--input-size", type=int, default=settings.default("data.input_size"), help="network input side")
    add_device_arg(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="probe.tsv to write")


COMMANDS = (  # name, its function, its one-line help, its options
    ("backbone", cmd_backbone, "Step 0: the RGB+joint weights", lambda p: _source_step_args(p, step1=False)),
    ("pretrain-saliency", cmd_pretrain, "Step 1: train the saliency branch on the source set",
     lambda p: _source_step_args(p, step1=True)),
    ("finetune", cmd_finetune, "Step 2: fine-tuning runs (method, k, seed) of one job, in one process", _finetune_args),
    ("probe", cmd_probe, "reference row (not in the paper): logistic regression on frozen features", _probe_args),
)


def register(sub) -> None:
    for name, func, help_, add_args in COMMANDS:
        p = sub.add_parser(name, help=help_, description=func.__doc__ or help_)
        add_args(p)
        p.set_defaults(func=func)
