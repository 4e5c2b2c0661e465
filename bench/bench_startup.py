"""Fixed cost per fine-tuning run: one process per run against one process per batch of runs.

GitHub issue 11. Every `halsal finetune` process pays a start-up cost before it trains:
importing torch and torchvision, reading the image cache, the backbone and the Step-1 weights.
With one process per run (the workflow before issue 11) every run pays it; a batch job
(`halsal finetune --run ... --run ...`, what the `finetune` rule runs now) pays it once.

On the same N tiny runs (synthetic data, AlexNet, 64 px, a few epochs; CPU), in one
invocation and interleaved (before, after, before, after, ...):

- before: N `python -m halsal finetune --k K --seed S ...` processes, one after another;
- after: one `python -m halsal finetune --run K S SPLIT DIR ...` process for all N runs.

The fixed cost per run is (process wall time - the runs' own training time, from their
metrics.json `wall_seconds`) / N. Prints both, the ratio, and the import time of torch +
torchvision alone.

    python bench/bench_startup.py [--n 6] [--epochs 1] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halsal.data.prepare import prepare  # noqa: E402
from halsal.data.splits import make_split  # noqa: E402
from halsal.data.synthetic import generate  # noqa: E402
from halsal import spec  # noqa: E402
from halsal.io import write_tsv  # noqa: E402
from halsal.train.loop import OptimConfig  # noqa: E402
from halsal.train.steps import backbone, pretrain_saliency  # noqa: E402

KS = ["1", "2", spec.K_ALL]


def make_inputs(root: Path, seeds: list[int]) -> None:
    """A tiny prepared dataset, its splits, a scratch backbone and Step-1 weights (1 epoch each)."""
    for name, task, seed in (("fine", "fine", 0), ("src", "coarse", 1)):
        index = generate(root / name, task=task, classes=3, images_per_class=12, image_size=80, seed=seed)
        write_tsv(root / name / "index.tsv", index)
        for s in seeds if name == "fine" else [0]:
            write_tsv(root / name / f"seed{s}.tsv", make_split(index, s, max_k=2)[0])
        prepare(root / name / "index.tsv", root / name / "prepared", resize=72, backend="pil", progress=False)
    cfg = OptimConfig(epochs=1, lr=0.01, batch_size=8)
    backbone("alexnet", "scratch", root / "backbone.pt", source_prepared=root / "src" / "prepared",
             source_split=root / "src" / "seed0.tsv", cfg=cfg, fc_width=64, input_size=64)
    pretrain_saliency("alexnet", "d4-pool2-eq2", root / "backbone.pt", root / "sal.pt",
                      source_prepared=root / "src" / "prepared", source_split=root / "src" / "seed0.tsv", cfg=cfg,
                      input_size=64)


def common_args(root: Path, epochs: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "halsal", "finetune", "--arch", "alexnet", "--method", "approach_b",
            "--variant", "d4-pool2-eq2", "--dataset", "fine", "--prepared", str(root / "fine" / "prepared"),
            "--backbone", str(root / "backbone.pt"), "--saliency", str(root / "sal.pt"), "--synthetic",
            "--epochs", str(epochs), "--lr", "0.01", "--batch-size", "4", "--input-size", "64",
            "--checkpoint-seconds", "600", "--device", "cpu", "--threads", str(threads)]


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def train_seconds(dirs: list[Path]) -> float:
    return sum(json.loads((d / "metrics.json").read_text())["wall_seconds"] for d in dirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="runs (k in 1, 2, K over as many seeds as needed)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved before/after pairs")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    args = ap.parse_args()
    seeds = list(range(-(-args.n // len(KS))))
    runs = [(k, s) for s in seeds for k in KS][:args.n]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="halsal-bench-startup-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_inputs(root, seeds)
        print(f"inputs: {len(runs)} runs (AlexNet, 64 px, {args.epochs} epoch(s), CPU, {args.threads} thread(s)); "
              f"set up in {time.perf_counter() - t0:.1f} s")
        imports = [run([sys.executable, "-c", "import torch, torchvision"], env) for _ in range(args.repeats)]
        print(f"python -c 'import torch, torchvision': {statistics.median(imports):.2f} s (median of {len(imports)})")
        base = common_args(root, args.epochs, args.threads)
        rows = {"before": [], "after": []}
        for rep in range(args.repeats):
            out = root / f"before{rep}"
            dirs = [out / f"k{k}" / f"seed{s}" for k, s in runs]
            wall = sum(run(base + ["--k", k, "--seed", str(s), "--split", str(root / "fine" / f"seed{s}.tsv"),
                                   "--out-dir", str(d)], env) for (k, s), d in zip(runs, dirs))
            rows["before"].append((wall, train_seconds(dirs)))
            out = root / f"after{rep}"
            dirs = [out / f"k{k}" / f"seed{s}" for k, s in runs]
            cmd = list(base)
            for (k, s), d in zip(runs, dirs):
                cmd += ["--run", k, str(s), str(root / "fine" / f"seed{s}.tsv"), str(d)]
            rows["after"].append((run(cmd, env), train_seconds(dirs)))
        n = len(runs)
        print(f"\n| mode | processes | wall (s) | training (s) | fixed cost per run (s) |")
        print("|---|---|---|---|---|")
        fixed = {}
        for mode, procs in (("before: one process per run", n), ("after: one batch job", 1)):
            key = mode.split(":")[0]
            walls = [w for w, _ in rows[key]]
            trains = [t for _, t in rows[key]]
            per_run = [(w - t) / n for w, t in rows[key]]
            fixed[key] = statistics.median(per_run)
            print(f"| {mode} | {procs} | {statistics.median(walls):.1f} | {statistics.median(trains):.1f} | "
                  f"{fixed[key]:.2f} ({', '.join(f'{x:.2f}' for x in per_run)}) |")
        print(f"\nfixed cost per run: {fixed['before']:.2f} s -> {fixed['after']:.2f} s, "
              f"{fixed['before'] / fixed['after']:.1f}x less with the batch job")


if __name__ == "__main__":
    main()
