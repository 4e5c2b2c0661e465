"""Speed levers and the fine-tuning lr of the pretrained config (config/photos.yaml), measured
before sizing its grid (GitHub issue 17).

Part 1 (no data needed) times training and evaluation steps of EfficientNet-Lite0 at 160 px,
batch 32, without and with the saliency branch, per setting (fp32, channels_last, bf16
autocast, 1 or 2 threads), and prints each as images/s and as a ratio to fp32 with 2 threads,
all in the same run. Part 2 needs the prepared Flowers 102 cache, its seed-0 split and the
backbone of a `make photos` tree (results/): it trains Baseline-RGB at each candidate lr and
prints the best *validation* accuracy (test is never looked at); config/photos.yaml takes the lr
with the best validation accuracy.

    .venv/bin/python bench/pretrained_levers.py [--epochs-lr 5] [--lrs 3e-4 1e-3] [--skip-lr]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from halsal.models import build_model
from halsal.train.loop import OptimConfig, autocast
from halsal.train.steps import finetune

ARCH, VARIANT, DATASET = "efficientnet_lite0", "d4-stage2-eq2", "flowers102"
SETTINGS = (("fp32, 2 threads", False, "fp32", 2), ("fp32 + channels_last, 2 threads", True, "fp32", 2),
            ("bf16 autocast + channels_last, 2 threads", True, "bf16", 2), ("fp32 + channels_last, 1 thread", True, "fp32", 1))


def images_per_s(model, x, train: bool, cl: bool, precision: str, threads: int, reps: int = 3) -> float:
    torch.set_num_threads(threads)
    if cl:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    best = float("inf")
    for i in range(reps + 1):  # the first is a warm-up
        t = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            if train:
                model.train()
                loss = model(x).float().logsumexp(1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                model.eval()
                with torch.no_grad():
                    model(x)
        if i:
            best = min(best, time.perf_counter() - t)
    return len(x) / best


def speed_table(size: int = 160) -> None:
    x = torch.randn(32, 3, size, size)
    print(f"| network ({size} px, batch 32) | setting | train img/s | vs ref | eval img/s | vs ref |")
    print("|---|---|---|---|---|---|")
    for name, kw in (("Baseline-RGB", {"saliency": "none"}), ("two-branch (saliency branch)", {})):
        ref = None
        for label, cl, precision, threads in SETTINGS:
            torch.manual_seed(0)
            tr = images_per_s(build_model(ARCH, 102, **kw), x, True, cl, precision, threads)
            ev = images_per_s(build_model(ARCH, 102, **kw), x, False, cl, precision, threads)
            ref = ref or (tr, ev)
            print(f"| {name} | {label} | {tr:.1f} | {tr / ref[0]:.2f}x | {ev:.1f} | {ev / ref[1]:.2f}x |", flush=True)
    torch.set_num_threads(2)


def run(tmp: Path, method: str, k: str, cfg: OptimConfig, threads: int, results: Path) -> dict:
    out = tmp / f"{method}-{cfg.lr}-{cfg.precision}-{cfg.channels_last}-{threads}-{time.time_ns()}"
    m = finetune(arch=ARCH, method=method, variant=VARIANT, k=k, seed=0, dataset=DATASET,
                    prepared=results / "prepared" / DATASET, split_tsv=results / "splits" / DATASET / "seed0.tsv",
                    backbone_pt=results / "models" / ARCH / "backbone.pt", out_dir=out, cfg=cfg, input_size=160,
                    threads=threads)
    m["_history"] = [json.dumps(r) for r in pd.read_csv(out / "history.tsv", sep="\t").to_dict("records")]
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--epochs-lr", type=int, default=5)
    ap.add_argument("--lrs", type=float, nargs="*", default=[3e-4, 1e-3])
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--skip-lr", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each lr run (part 2)")
    ap.add_argument("--method", default="baseline", help="method of the lr runs (part 2)")
    ap.add_argument("--k", default="5", help="shots of the lr runs (part 2)")
    ap.add_argument("--batch", type=int, default=32, help="batch size of the lr runs (part 2)")
    args = ap.parse_args()
    if not args.skip_time:
        speed_table()
    if args.skip_lr:
        return
    results = Path(args.results)
    base = dict(optimizer="adam", weight_decay=5e-4, batch_size=args.batch, saliency_lr=3e-6, checkpoint_seconds=1e9,
                channels_last=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n| lr ({args.method}, Flowers k={args.k} seed 0, batch {args.batch}, fp32 + channels_last, {args.threads} threads) "
              "| best val acc | selected epoch | val acc per epoch | s per epoch (train + val) |")
        print("|---|---|---|---|---|")
        for lr in args.lrs:
            m = run(Path(tmp), args.method, args.k, OptimConfig(epochs=args.epochs_lr, lr=lr, **base), args.threads, results)
            hist = [json.loads(line) for line in m.pop("_history")]
            curve = " ".join(f"{h['val_acc']:.3f}" for h in hist)
            secs = sum(h["seconds"] for h in hist) / len(hist)
            print(f"| {lr:g} | {m['val_acc']:.3f} | {m['best_epoch']} of {args.epochs_lr} | {curve} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
