"""Evaluation speed on the CPU by batch size: halsal's CPU evaluation batch against 128 (the
batch it used before, and still uses on a GPU), in the same run.

Validation runs after every evaluated epoch and test once per run, so at k = 1 evaluation is
most of a run's time. Measures ``halsal.train.loop.predict`` (centre crops from the device
cache, the model in eval mode) on random images, EfficientNet-Lite0 at 160 px by default,
with and without the hallucinated saliency branch, and prints ms per image and the ratio.

    python bench/bench_eval_batch.py [--arch efficientnet_lite0] [--size 160] [--n 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from halsal.models import build_model
from halsal.models.weights import normalisation
from halsal.train.device_cache import DeviceImages, eval_batch_size
from halsal.train.loop import predict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.size + 16, args.size + 16, 3), dtype=np.uint8)
    data = DeviceImages(images, np.zeros(args.n), cpu, args.size, False, False, normalisation(args.arch))
    ours = eval_batch_size(cpu)
    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), {args.arch} at {args.size} px, "
          f"{args.n} images; median of {args.rounds} rounds")
    for saliency in ("none", "hallucinated"):
        model = build_model(args.arch, 10, saliency=saliency).eval().to(memory_format=torch.channels_last)
        ms = {}
        for batch in (128, ours):
            times = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                predict(model, data, batch_size=batch, with_saliency=saliency != "none")
                times.append((time.perf_counter() - t) / args.n * 1000)
            ms[batch] = statistics.median(times)
        print(f"saliency={saliency:12s} batch 128: {ms[128]:.1f} ms/img   batch {ours}: {ms[ours]:.1f} ms/img   "
              f"ratio {ms[128] / ms[ours]:.2f}x")


if __name__ == "__main__":
    main()
