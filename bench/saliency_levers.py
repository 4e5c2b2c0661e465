"""What kills the hallucinated saliency map during fine-tuning, and what keeps it alive.

Runs Approach B and scratch SAL (and Approach A, for Step-1 levers) in ONE process over an
existing results tree of the default demo (``make run`` or ``snakemake --cores all``: it needs
``results/prepared``, ``results/splits``, ``results/models/<arch>/backbone.pt`` and the Step-1
weights), once per "lever" (optimizer, learning rates, weight decay, Step-1 length), and prints
a markdown table: dead runs (n of N, dead = all-zero map on >= half the test images), the mean
map, object_ratio, test accuracy, and the first epoch at which the validation map was dead.

    python bench/saliency_levers.py --results results [--levers adam_l2 sgd_paper ...]

SYNTHETIC data (the default demo): the table says which settings keep the map alive there; it is
the evidence behind the demo's defaults in docs/decisions.md ("Saliency health"). On the tree of
`make photos` (real photographs), pass ``--real --dataset cub200 --source tiny_imagenet``; method
``baseline`` gives the reference accuracy (no map):

    python bench/saliency_levers.py --results results --real --dataset cub200 --source tiny_imagenet \
        --levers adam_sal_lr_0.01x sgd_paper --methods baseline approach_b --ks 10 --seeds 0 \
        --finetune '{"epochs": 15}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from halsal.train.loop import OptimConfig
from halsal.train.steps import finetune, pretrain_saliency

# name -> (Step-1 overrides or None to reuse the demo's Step-1 weights, Step-2 overrides)
LEVERS = {
    "adam_l2": (None, {}),  # the old demo default: Adam lr 3e-4, L2 weight decay 5e-4
    "adam_no_wd": (None, {"weight_decay": 0.0}),
    "adamw": (None, {"optimizer": "adamw"}),
    "adam_sal_lr_0.1x": (None, {"saliency_lr": 3e-5}),
    "adam_sal_lr_0.01x": (None, {"saliency_lr": 3e-6}),
    "sgd_paper": (None, {"optimizer": "sgd", "lr": 1e-4, "weight_decay": 5e-3}),
    "sgd_lr_1e-3": (None, {"optimizer": "sgd", "lr": 1e-3, "weight_decay": 5e-4}),
    "step1_x3_epochs": ({"epochs": 30}, {}),
}
DEMO_FINETUNE = dict(epochs=35, lr=3e-4, optimizer="adam", momentum=0.9, weight_decay=5e-4, batch_size=32)
DEMO_PRETRAIN = dict(epochs=10, lr=1e-4, optimizer="adam", momentum=0.9, weight_decay=5e-4, batch_size=64)


def first_dead_epoch(history: Path) -> str:
    import pandas as pd

    h = pd.read_csv(history, sep="\t")
    if "val_dead_fraction" not in h:
        return "-"
    dead = h[h["val_dead_fraction"] >= 0.5]
    return str(int(dead["epoch"].iloc[0])) if len(dead) else "never"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="results tree of the default demo")
    ap.add_argument("--dataset", default="synth_fine")
    ap.add_argument("--source", default="synth_source")
    ap.add_argument("--arch", default="alexnet")
    ap.add_argument("--variant", default="d4-pool2-eq2")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--levers", nargs="*", default=list(LEVERS), choices=list(LEVERS))
    ap.add_argument("--methods", nargs="*", default=["approach_b", "scratch_sal"])
    ap.add_argument("--ks", nargs="*", default=["1", "5"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--finetune", default="{}", help="JSON overrides of the Step-2 settings for every lever")
    ap.add_argument("--real", action="store_true", help="the dataset is real photographs (not SYNTHETIC)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = Path(args.results)
    models = res / "models" / args.arch
    common_ft = {**DEMO_FINETUNE, **json.loads(args.finetune)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="levers-") as tmp:
        for lever in args.levers:
            pre, ft = LEVERS[lever]
            saliency_pt = models / f"saliency_{args.variant}.pt"
            step1 = json.loads(saliency_pt.with_suffix(".json").read_text()).get("saliency", {}).get("test", {})
            methods = list(args.methods)
            if pre is not None:
                saliency_pt = Path(tmp) / lever / "saliency.pt"
                saliency_pt.parent.mkdir(parents=True)
                info = pretrain_saliency(args.arch, args.variant, models / "backbone.pt", saliency_pt,
                                         source_prepared=res / "prepared" / args.source,
                                         source_split=res / "splits" / args.source / "seed0.tsv",
                                         cfg=OptimConfig(**{**DEMO_PRETRAIN, **pre}), input_size=args.input_size)
                step1 = info["saliency"]["test"]
                methods = [m for m in methods if m != "scratch_sal"] + ["approach_a"]
            for method in methods:
                per = []
                t0 = time.perf_counter()
                for k in args.ks:
                    for seed in args.seeds:
                        out = Path(tmp) / lever / method / f"k{k}" / f"seed{seed}"
                        m = finetune(arch=args.arch, method=method, variant=args.variant, k=k, seed=seed,
                                     dataset=args.dataset, prepared=res / "prepared" / args.dataset,
                                     split_tsv=res / "splits" / args.dataset / f"seed{seed}.tsv",
                                     backbone_pt=models / "backbone.pt",
                                     saliency_pt=saliency_pt if method != "scratch_sal" else None, out_dir=out,
                                     cfg=OptimConfig(**{**common_ft, **ft}), input_size=args.input_size,
                                     synthetic=not args.real)
                        per.append((m, first_dead_epoch(out / "history.tsv")))
                sal = [(m.get("saliency") or {}).get("test") for m, _ in per]
                sal = [s for s in sal if s]  # Baseline-RGB has no map
                ratios = [s["object_ratio"] for s in sal if s.get("object_ratio") is not None]
                row = {"lever": lever, "method": method,
                       "dead": sum(s["dead_fraction"] >= 0.5 for s in sal) if sal else None,
                       "n": len(per), "mean_map": statistics.mean(s["mean"] for s in sal) if sal else None,
                       "object_ratio": statistics.mean(ratios) if ratios else None,
                       "test_acc": 100 * statistics.mean(m["test_acc"] for m, _ in per),
                       "first_dead_epoch": ",".join(e for _, e in per),
                       "step1_object_ratio": step1.get("object_ratio"), "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    data = "real photographs" if args.real else "SYNTHETIC data"
    print(f"\n{data} ({args.dataset}), k in {args.ks}, seeds {args.seeds}; Step-2 base {common_ft}\n")
    print("| lever | method | dead runs | mean map | object_ratio | test acc % | first dead val epoch per run |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "-" if r["object_ratio"] is None else f"{r['object_ratio']:.2f}"
        dead = "no map" if r["dead"] is None else f"{r['dead']}/{r['n']}"
        mean_map = "-" if r["mean_map"] is None else f"{r['mean_map']:.3f}"
        print(f"| {r['lever']} | {r['method']} | {dead} | {mean_map} | {ratio} | "
              f"{r['test_acc']:.1f} | {r['first_dead_epoch']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
