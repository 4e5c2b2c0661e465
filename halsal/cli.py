"""`halsal`: the command line every Snakemake rule calls.

The stages, in workflow order:

  generate / index / fetch   a dataset -> results/datasets/<name>/index.tsv
  split                      k-shot split (5 val + 5 test per class, nested train ranks)
  prepare                    decode + resize + crop once (DALI) -> images.npy + manifest
  backbone                   Step 0: ImageNet weights, a local file, or train from scratch
  pretrain-saliency          Step 1: saliency branch only, on the source set
  smic-maps                  explicit saliency maps of a dataset (SMIC): spectral residual or PNGs
  finetune                   Step 2: method / k / seed runs on a fine-grained dataset (one job, many runs)
  aggregate, tables, ...     the report (see `halsal <command> --help`)
  results-md, publish-md     the results as Markdown, spliced into a docs page (make photos)

Errors caused by inputs (missing data, corrupt images, bad weights) are printed as one
message naming the input and the fix, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from halsal import __version__, spec
from halsal.errors import HalsalError
from halsal.gpu import claim_gpus, job_device, resolve_decode_backend  # torch-free


def _optim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation (paper, Sec. 4.1: 70 epochs, lr 1e-4, weight decay 5e-3)")
    g.add_argument("--epochs", type=int, default=70)
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                   help="adam: L2 weight decay in the gradient; adamw: decoupled weight decay")
    g.add_argument("--saliency-lr", type=float, default=None,
                   help="learning rate of the saliency branch (default: --lr; not in the paper)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-3)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--input-size", type=int, default=227, help="network input side (paper: 227)")
    g.add_argument("--no-random-crop", action="store_true", help="train on centre crops")
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g.add_argument("--checkpoint-seconds", type=float, default=60.0,
                   help="seconds between resumable checkpoints (0: every epoch)")
    g.add_argument("--fc-width", type=int, default=4096, help="width of fc6/fc7 (AlexNet: 4096; ResNet-152 ignores it)")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="training forward pass precision (bf16: torch.autocast; evaluation stays fp32)")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for weights and batches")


def _optim(args):
    from halsal.train.loop import OptimConfig

    return OptimConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
                       weight_decay=args.weight_decay, batch_size=args.batch_size,
                       checkpoint_seconds=args.checkpoint_seconds, saliency_lr=args.saliency_lr,
                       precision=args.precision, channels_last=args.channels_last)


def _augment(args) -> dict:
    return {"random_crop": not args.no_random_crop, "flip": not args.no_flip}


def _per_class_args(p: argparse.ArgumentParser) -> None:
    """--per-class / --per-class-seed: config datasets.<name>.per_class / per_class_seed."""
    p.add_argument("--per-class", type=int, default=None,
                   help="keep at most N images per class, a seeded sample per class (default: all)")
    p.add_argument("--per-class-seed", type=int, default=0, help="seed of the --per-class sample")


def _cap(index, args):
    """The index capped at --per-class images per class (halsal.data.datasets.cap_per_class)."""
    if args.per_class is None:
        return index
    from halsal.data.datasets import cap_per_class

    before = len(index)
    index = cap_per_class(index, args.per_class, args.per_class_seed)
    print(f"per-class cap {args.per_class} (seed {args.per_class_seed}): {len(index)} of {before} images kept")
    return index


def cmd_generate(args) -> None:
    from halsal.data.datasets import with_hashes
    from halsal.data.synthetic import generate
    from halsal.io import write_tsv

    index = generate(args.root, task=args.task, classes=args.classes, images_per_class=args.images_per_class,
                     image_size=args.image_size, seed=args.seed)
    index = with_hashes(index)  # content hashes, as every indexer writes them
    index = _cap(index, args)
    write_tsv(args.out, index)
    print(f"SYNTHETIC dataset: {len(index)} images, {args.classes} classes -> {args.out}")


def cmd_index(args) -> None:
    from pathlib import Path

    from halsal.data.boxes import BOX_COLUMNS
    from halsal.data.datasets import duplicate_groups, duplicates_info, duplicates_warning, scan_folder
    from halsal.io import write_json, write_tsv

    index, info = scan_folder(args.root)
    if args.per_class is not None:
        index = _cap(index, args)
        counts = index["label"].value_counts()
        info.update(images=len(index), per_class_cap={"per_class": args.per_class, "seed": args.per_class_seed,
                                                      "images_before": info["images"]})
        if "images_with_boxes" in info:
            info["images_with_boxes"] = int(index.reindex(columns=BOX_COLUMNS).notna().all(axis=1).sum())
        for entry in info["per_class"]:
            entry["images_before_cap"], entry["images"] = entry["images"], int(counts.get(entry["label"], 0))
        info["duplicates"] = duplicates_info(duplicate_groups(index, root=info["root"]))
    ignored = info["ignored"]
    if info["duplicates"]["groups"]:
        print("WARNING:", duplicates_warning(info["duplicates"]), file=sys.stderr)
    for kind, what in (("hidden", "hidden files/folders"), ("non_image", "non-image files"),
                       ("folders", "folders inside class folders")):
        if ignored[kind]["count"]:
            print(f"WARNING: {ignored[kind]['count']} {what} not indexed, e.g. "
                  f"{', '.join(ignored[kind]['examples'][:3])}", file=sys.stderr)
    info_path = args.info or str(Path(args.out).with_name("index.json"))
    write_json(info_path, info)
    write_tsv(args.out, index)
    print(f"{args.root}: {len(index)} images, {index['label'].nunique()} classes (names from "
          f"{info['class_names_from']}) -> {args.out}, {info_path}")


def cmd_fetch(args) -> None:
    from halsal.data.datasets import index_folder
    from halsal.data.fetch import fetch_dataset
    from halsal.io import write_tsv

    source = args.source[0] if args.source and len(args.source) == 1 else args.source
    root = fetch_dataset(args.dataset, args.root, source=source, subset_per_class=args.subset_per_class, seed=args.seed)
    index = _cap(index_folder(root), args)
    write_tsv(args.out, index)
    print(f"{args.dataset}: {len(index)} images, {index['label'].nunique()} classes -> {args.out}")


def cmd_split(args) -> None:
    from halsal.data.datasets import read_index, with_hashes
    from halsal.data.splits import make_split
    from halsal.io import write_text, write_tsv

    index = read_index(args.index)
    usable = None
    if args.manifest:  # images that did not decode (on_bad_image: skip) never take a place
        from halsal.data.manifest import read_manifest
        from halsal.data.splits import usable_rows

        usable = usable_rows(index, read_manifest(args.manifest))
        if (~usable).any():
            print(f"{int((~usable).sum())} images that did not decode are left out before drawing "
                  f"(listed in {args.manifest} and the report's Data section)")
    split, notes = make_split(with_hashes(index), args.seed, val_per_class=args.val_per_class,  # older index: hashed now
                              test_per_class=args.test_per_class, max_k=args.max_k, too_few=args.too_few, usable=usable,
                              duplicates=args.duplicates, name=args.dataset or Path(args.index).parent.name)
    for note in notes:
        print("WARNING:", note, file=sys.stderr)
    if args.notes:
        write_text(args.notes, "".join(n + "\n" for n in notes))
    write_tsv(args.out, split)
    counts = split.groupby("role").size().to_dict()
    print(f"seed {args.seed}: {split['label'].nunique()} classes, {counts} -> {args.out}")


def cmd_prepare(args) -> None:
    from halsal.data.prepare import prepare

    backend = resolve_decode_backend(args.backend, args.gpus)  # logged; a GPU asked for that does not work: error
    summary = prepare(args.index, args.out_dir, resize=args.resize, backend=backend, on_error=args.on_error)
    print(summary)


def cmd_backbone(args) -> None:
    from halsal.train.steps import backbone

    info = backbone(args.arch, args.weights, args.out, source_prepared=args.source_prepared, source_split=args.source_split,
                    cfg=_optim(args), input_size=args.input_size, device=job_device(args.device, args.gpus, args.source_prepared),
                    augment=_augment(args), threads=args.threads, fc_width=args.fc_width)
    print({k: v for k, v in info.items() if k != "classes"})


def cmd_pretrain(args) -> None:
    from halsal.train.steps import pretrain_saliency

    info = pretrain_saliency(args.arch, args.variant, args.backbone, args.out, source_prepared=args.source_prepared,
                             source_split=args.source_split, cfg=_optim(args), input_size=args.input_size,
                             device=job_device(args.device, args.gpus, args.source_prepared), augment=_augment(args), threads=args.threads)
    print({k: v for k, v in info.items() if k != "history"})


def cmd_finetune(args) -> None:
    import torch

    from halsal.train.steps import FinetuneRun, finetune_batch, load_finetune_inputs

    single = [args.k, args.seed, args.split, args.out_dir]
    if args.run and any(v is not None for v in single):
        raise HalsalError("give either --run K SEED SPLIT OUT_DIR (once per run) or --k/--seed/--split/--out-dir, not both")
    if args.run:
        runs = args.run
    elif all(v is not None for v in single):
        runs = [single]
    else:
        raise HalsalError("no run given: add --run K SEED SPLIT OUT_DIR (once per run), "
                          "or --k, --seed, --split and --out-dir for one run")
    try:
        runs = [FinetuneRun(str(k), int(seed), Path(split), Path(out_dir)) for k, seed, split, out_dir in runs]
    except ValueError as exc:
        raise HalsalError(f"--run K SEED SPLIT OUT_DIR: the seed must be an integer ({exc})") from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    inputs = load_finetune_inputs(arch=args.arch, method=args.method, variant=args.variant, dataset=args.dataset,
                                  prepared=args.prepared, backbone_pt=args.backbone, saliency_pt=args.saliency,
                                  maps=args.maps, cfg=_optim(args), input_size=args.input_size,
                                  device=job_device(args.device, args.gpus, args.prepared), augment=_augment(args), synthetic=args.synthetic)
    print(f"{len(runs)} run(s) of {args.arch}/{args.dataset}/{args.method}/{args.variant}; "
          f"inputs loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    results = finetune_batch(inputs, runs, log=lambda line: print(line, flush=True))
    for run, (metrics, restored) in zip(runs, results):
        print(f"{args.method} k={run.k} seed={run.seed}: val {metrics['val_acc']:.3f} (epoch {metrics['best_epoch']}), "
              f"test {metrics['test_acc']:.3f}{' [restored]' if restored else ''}"
              f"{' [SYNTHETIC data]' if args.synthetic else ''}", flush=True)


def cmd_probe(args) -> None:
    import torch

    from halsal.train.probe import linear_probe

    if args.threads:
        torch.set_num_threads(args.threads)
    table = linear_probe(arch=args.arch, dataset=args.dataset, backbone_pt=args.backbone, prepared=args.prepared,
                         runs=[(k, int(s), p) for k, s, p in args.run], input_size=args.input_size, out_tsv=args.out,
                         device=job_device(args.device, args.gpus, args.prepared), synthetic=args.synthetic, variant=args.variant)
    for r in table.itertuples():
        print(f"linear probe k={r.k} seed={r.seed}: C={r.C} val {r.val_acc:.3f} test {r.test_acc:.3f}", flush=True)


def cmd_smic_maps(args) -> None:
    from halsal.data.smic_maps import smic_maps

    info = smic_maps(args.index, args.prepared, args.out, source=args.source, folder=args.folder)
    print(f"SMIC maps ({info['source']}): {info['n']} x {info['size']}x{info['size']} -> {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"halsal {__version__}")
    parser.add_argument("--gpus", type=int, default=None, metavar="N", help="the job's resources.gpu: 0 hides "
                        "the GPUs, N > 0 claims N of its own; a GPU asked for that does not work is an error (halsal/gpu.py)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="generate a SYNTHETIC dataset (the offline default)")
    p.add_argument("--root", required=True, help="output folder for images/<class>/<file>.jpg")
    p.add_argument("--out", required=True, help="index.tsv to write")
    p.add_argument("--task", choices=["fine", "coarse"], required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--images-per-class", type=int, required=True)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    _per_class_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("index", help="index an images/<class>/<file> folder")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--info", default=None,
                   help="index.json to write: counts of images, classes and ignored files (default: beside --out)")
    _per_class_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("fetch", help="download/verify/extract a dataset, then index it")
    p.add_argument("--dataset", required=True, choices=["flowers102", "cub200", "cars196", "imagenet_val", "folder"])
    p.add_argument("--root", required=True, help="where the ready images/<class>/<file> tree goes")
    p.add_argument("--source", action="append", default=None,
                   help="user-supplied archive or folder (cars196, imagenet_val, folder); repeat for several")
    p.add_argument("--subset-per-class", type=int, default=None, help="imagenet_val: images per class")
    p.add_argument("--seed", type=int, default=0, help="imagenet_val: seed of the subset")
    p.add_argument("--out", required=True, help="index.tsv to write")
    _per_class_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("split", help="k-shot split: val/test fixed per seed, nested train ranks")
    p.add_argument("--index", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-per-class", type=int, default=5)
    p.add_argument("--test-per-class", type=int, default=5)
    p.add_argument("--max-k", type=int, default=1, help="largest integer k that will be asked for")
    p.add_argument("--too-few", choices=["error", "drop_class"], default="error")
    p.add_argument("--duplicates", choices=["warn", "drop", "error"], default="warn",
                   help="identical files (content hash): warn = keep every copy, in train only; drop = keep one "
                        "copy within a class and drop label conflicts across classes; error = stop")
    p.add_argument("--dataset", default=None, help="the dataset's name in messages (default: the index's folder)")
    p.add_argument("--notes", default=None, help="file listing dropped classes and duplicates")
    p.add_argument("--manifest", default=None,
                   help="prepare's manifest.tsv: images whose status is not ok are left out before drawing")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("prepare", help="decode/resize/crop every image once into a uint8 cache")
    p.add_argument("--index", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--backend", default="auto", choices=["auto", "dali-gpu", "dali-cpu", "torchvision", "pil"])
    p.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("backbone", help="Step 0: the RGB+joint weights")
    p.add_argument("--arch", required=True, choices=spec.ARCHS)
    p.add_argument("--weights", required=True, help="imagenet | scratch | path to a weights file")
    p.add_argument("--source-prepared", default=None)
    p.add_argument("--source-split", default=None)
    p.add_argument("--out", required=True)
    _optim_args(p)
    p.set_defaults(func=cmd_backbone)

    p = sub.add_parser("pretrain-saliency", help="Step 1: train the saliency branch on the source set")
    p.add_argument("--arch", required=True, choices=spec.ARCHS)
    p.add_argument("--variant", required=True, help="d<depth>-<fusion>-<eq1|eq2>, e.g. d4-pool2-eq2")
    p.add_argument("--backbone", required=True)
    p.add_argument("--source-prepared", required=True)
    p.add_argument("--source-split", required=True)
    p.add_argument("--out", required=True)
    _optim_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("smic-maps", help="explicit saliency maps of a prepared dataset for the SMIC method")
    p.add_argument("--index", required=True, help="the dataset's index.tsv")
    p.add_argument("--prepared", required=True, help="its prepared folder (images.npy, manifest.tsv)")
    p.add_argument("--source", choices=["spectral_residual", "folder"], default="spectral_residual",
                   help="spectral residual of the cached images (Hou & Zhang 2007), or a folder of PNGs")
    p.add_argument("--folder", default=None, help="folder of grayscale PNGs, <class>/<file>.png like the images")
    p.add_argument("--out", required=True, help="maps.npy to write (uint8 N x S x S) and a .json beside it")
    p.set_defaults(func=cmd_smic_maps)

    p = sub.add_parser("finetune", help="Step 2: fine-tuning runs (method, k, seed) of one job, in one process",
                       description="Step 2: one or several fine-tuning runs of one arch, dataset, method and "
                                   "variant, trained one after another from inputs loaded once. A run that an "
                                   "earlier job finished (its complete.json matches) is restored, not retrained.")
    p.add_argument("--arch", required=True, choices=spec.ARCHS)
    p.add_argument("--method", required=True, choices=spec.METHOD_NAMES)
    p.add_argument("--variant", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--prepared", required=True)
    p.add_argument("--backbone", required=True)
    p.add_argument("--saliency", default=None, help="Step-1 saliency weights (approach_a/b)")
    p.add_argument("--maps", default=None, help="the dataset's SMIC saliency maps, from smic-maps (smic)")
    p.add_argument("--synthetic", action="store_true", help="label the results as synthetic")
    p.add_argument("--run", nargs=4, action="append", metavar=("K", "SEED", "SPLIT", "OUT_DIR"),
                   help="one run: k (or K), seed, its split file and its output folder; repeat for each run")
    g = p.add_argument_group("a single run (instead of --run)")
    g.add_argument("--k", default=None, help="training images per class, or K for all")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--split", default=None)
    g.add_argument("--out-dir", default=None)
    _optim_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("probe", help="reference row (not in the paper): logistic regression on frozen features",
                       description="A linear probe: scikit-learn logistic regression on the frozen backbone's pooled "
                                   "features (centre crops), per k and seed on the same splits as Step 2; C chosen "
                                   "on validation. Not a method of the paper: the simplest use of the same features.")
    p.add_argument("--arch", required=True, choices=spec.ARCHS)
    p.add_argument("--dataset", required=True)
    p.add_argument("--prepared", required=True)
    p.add_argument("--backbone", required=True, help="Step 0's backbone.pt")
    p.add_argument("--run", nargs=3, action="append", required=True, metavar=("K", "SEED", "SPLIT"),
                   help="one probe: k, seed and its split file; repeat for each")
    p.add_argument("--variant", default="", help="the main variant, to place the row in its table")
    p.add_argument("--synthetic", action="store_true", help="label the results as synthetic")
    p.add_argument("--input-size", type=int, default=227)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="probe.tsv to write")
    p.set_defaults(func=cmd_probe)

    from halsal.report import cli as report_cli

    report_cli.register(sub)  # aggregate, tables, plots, qualitative
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.gpus is not None:  # before any command imports torch or DALI
            claim_gpus(args.gpus)
        args.func(args)
    except HalsalError as exc:
        print(f"halsal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
