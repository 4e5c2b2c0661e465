"""The data commands: generate / index / fetch a dataset, split it, decode it once, SMIC maps."""

from __future__ import annotations

import sys
from pathlib import Path

from halsal import settings
from halsal.cli.options import add_per_class_args
from halsal.gpu import resolve_decode_backend  # torch-free


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
    from halsal.data.datasets import capped_info, duplicates_warning, scan_folder
    from halsal.io import write_json, write_tsv

    index, info = scan_folder(args.root)
    if args.per_class is not None:
        index = _cap(index, args)
        info = capped_info(info, index, args.per_class, args.per_class_seed)
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
                              duplicates=args.duplicates, name=args.dataset or str(args.index))
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
    summary = prepare(args.index, args.out_dir, resize=args.resize, backend=backend, on_error=args.on_error,
                      threads=args.threads)
    print(summary)


def cmd_smic_maps(args) -> None:
    from halsal.data.smic_maps import smic_maps

    info = smic_maps(args.index, args.prepared, args.out, source=args.source, folder=args.folder)
    print(f"SMIC maps ({info.get('label', info['source'])}): {info['n']} x {info['size']}x{info['size']} -> {args.out}")


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a SYNTHETIC dataset (the offline default)")
    p.add_argument("--root", required=True, help="output folder for images/<class>/<file>.jpg")
    p.add_argument("--out", required=True, help="index.tsv to write")
    p.add_argument("--task", choices=settings.choices("definitions.dataset.task"), required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--images-per-class", type=int, required=True)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    add_per_class_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("index", help="index an images/<class>/<file> folder")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--info", default=None,
                   help="index.json to write: counts of images, classes and ignored files (default: beside --out)")
    add_per_class_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("fetch", help="download/verify/extract a dataset, then index it")
    p.add_argument("--dataset", required=True, choices=(*settings.FETCHED_KINDS, settings.FOLDER))
    p.add_argument("--root", required=True, help="where the ready images/<class>/<file> tree goes")
    p.add_argument("--source", action="append", default=None,
                   help="user-supplied archive or folder (cars196, imagenet_val, folder); repeat for several")
    p.add_argument("--subset-per-class", type=int, default=None, help="imagenet_val: images per class")
    p.add_argument("--seed", type=int, default=0, help="imagenet_val: seed of the subset")
    p.add_argument("--out", required=True, help="index.tsv to write")
    add_per_class_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("split", help="k-shot split: val/test fixed per seed, nested train ranks")
    p.add_argument("--index", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-per-class", type=int, default=settings.default("data.val_per_class"))
    p.add_argument("--test-per-class", type=int, default=settings.default("data.test_per_class"))
    p.add_argument("--max-k", type=int, default=1, help="largest integer k that will be asked for")
    p.add_argument("--too-few", choices=settings.choices("data.too_few_images"), default=settings.default("data.too_few_images"))
    p.add_argument("--duplicates", choices=settings.choices("data.duplicates"), default=settings.default("data.duplicates"),
                   help="identical files (content hash): warn = keep every copy, in train only; drop = keep one "
                        "copy within a class and drop label conflicts across classes; error = stop")
    p.add_argument("--dataset", default=None, help="the dataset's name in messages (default: the index file)")
    p.add_argument("--notes", default=None, help="file listing dropped classes and duplicates")
    p.add_argument("--manifest", default=None,
                   help="prepare's manifest.tsv: images whose status is not ok are left out before drawing")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("prepare", help="decode/resize/crop every image once into a uint8 cache")
    p.add_argument("--index", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--resize", type=int, default=settings.default("data.resize"))
    p.add_argument("--backend", default=settings.default("data.decode_backend"), choices=settings.DECODE_BACKENDS)
    p.add_argument("--on-error", default=settings.default("data.on_bad_image"), choices=settings.choices("data.on_bad_image"))
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for decoding (DALI's pipeline, the resampling pool); default: every core")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("smic-maps", help="explicit saliency maps of a prepared dataset for the SMIC method")
    p.add_argument("--index", required=True, help="the dataset's index.tsv")
    p.add_argument("--prepared", required=True, help="its prepared folder (images.npy, manifest.tsv)")
    p.add_argument("--source", choices=settings.choices("smic.source"), default=settings.default("smic.source"),
                   help="spectral residual of the cached images (Hou & Zhang 2007), or a folder of PNGs")
    p.add_argument("--folder", default=None, help="folder of grayscale PNGs, <class>/<file>.png like the images")
    p.add_argument("--out", required=True, help="maps.npy to write (uint8 N x S x S) and a .json beside it")
    p.set_defaults(func=cmd_smic_maps)
