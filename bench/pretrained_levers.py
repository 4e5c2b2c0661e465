"""Speed levers and the fine-tuning lr of the pretrained config (config/photos.yaml), measured
before sizing its grid (GitHub issue 17).

Needs the prepared Flowers 102 cache, its seed-0 split and the EfficientNet-Lite0 backbone of a
`make photos` tree (results/). Part 1 times one fine-tuning run of the two-branch network
(scratch SAL: the same compute as Approach A/B) per setting, on Flowers k=5, and prints each
against fp32 as a ratio. Part 2 trains Baseline-RGB at each candidate lr on the same split and
prints the best *validation* accuracy (test is never looked at): the lr of config/photos.yaml
is the one with the best validation accuracy.

    .venv/bin/python bench/pretrained_levers.py [--epochs-time 2] [--epochs-lr 8] [--lrs 1e-4 3e-4 1e-3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from halsal.train.loop import OptimConfig
from halsal.train.steps import finetune

ARCH, VARIANT, DATASET = "efficientnet_lite0", "d4-stage2-eq2", "flowers102"


def run(tmp: Path, method: str, k: str, cfg: OptimConfig, threads: int, results: Path) -> dict:
    out = tmp / f"{method}-{cfg.lr}-{cfg.precision}-{cfg.channels_last}-{threads}-{time.time_ns()}"
    return finetune(arch=ARCH, method=method, variant=VARIANT, k=k, seed=0, dataset=DATASET,
                    prepared=results / "prepared" / DATASET, split_tsv=results / "splits" / DATASET / "seed0.tsv",
                    backbone_pt=results / "models" / ARCH / "backbone.pt", out_dir=out, cfg=cfg, input_size=160,
                    threads=threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--epochs-time", type=int, default=2)
    ap.add_argument("--epochs-lr", type=int, default=8)
    ap.add_argument("--lrs", type=float, nargs="*", default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--skip-time", action="store_true")
    args = ap.parse_args()
    results = Path(args.results)
    base = dict(optimizer="adam", weight_decay=5e-4, batch_size=32, saliency_lr=3e-6, checkpoint_seconds=1e9)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_time:
            print("| setting (scratch SAL, Flowers k=5, 510 train / 510 val images) | s per epoch (train + val) | vs fp32 |")
            print("|---|---|---|")
            ref = None
            for label, precision, cl, threads in (("fp32, 2 threads", "fp32", False, 2),
                                                  ("bf16, 2 threads", "bf16", False, 2),
                                                  ("bf16 + channels_last, 2 threads", "bf16", True, 2),
                                                  ("bf16, 1 thread", "bf16", False, 1)):
                cfg = OptimConfig(epochs=args.epochs_time, lr=3e-4, precision=precision, channels_last=cl, **base)
                m = run(tmp, "scratch_sal", "5", cfg, threads, results)
                per_epoch = m["wall_seconds"] / args.epochs_time
                ref = ref or per_epoch
                print(f"| {label} | {per_epoch:.1f} | {ref / per_epoch:.2f}x |", flush=True)
            torch.set_num_threads(2)
        print("\n| lr (Baseline-RGB, Flowers k=5 seed 0, bf16) | best val acc | selected epoch |")
        print("|---|---|---|")
        for lr in args.lrs:
            cfg = OptimConfig(epochs=args.epochs_lr, lr=lr, precision="bf16", **base)
            m = run(tmp, "baseline", "5", cfg, 2, results)
            print(f"| {lr:g} | {m['val_acc']:.3f} | {m['best_epoch']} of {args.epochs_lr} |", flush=True)


if __name__ == "__main__":
    main()
