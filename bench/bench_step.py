"""Training step time of HalSal's AlexNet configurations against torchvision's AlexNet.

    python bench/bench_step.py                          # GPU defaults: 227 px, batch 128
    python bench/bench_step.py --batch 8 --steps 2      # a 2-core CPU: about 2 minutes
    python bench/bench_step.py --profile approach_b     # where the time goes (torch.profiler)

One training step = what ``halsal.train.loop.fit`` does per batch: forward under the
precision's autocast, cross-entropy, ``zero_grad``, backward, SGD step (momentum 0.9, weight
decay 5e-3, as the paper). Contenders, all with ``--classes`` outputs:

- ``torchvision``: ``torchvision.models.alexnet``, every parameter trained (the reference);
- ``baseline``: ``build_model(saliency="none")`` (Baseline-RGB: should be 1.0x);
- ``approach_a``: the saliency branch frozen (forward only), the rest trained;
- ``approach_b``: everything trained (the paper's Approach B, Step 2).

Each is timed in fp32 and bf16 (``torch.autocast``), ``--rounds`` rounds interleaved (A B C D,
A B C D, ...) so that load from other processes falls on all of them alike; a round is
``--steps`` timed steps after one warm-up step, and the median step is reported. The FLOP ratio
(forward + backward of one step, ``torch.utils.flop_counter.FlopCounterMode``; the optimizer
step is not counted) is printed next to the time ratio: a time ratio above the FLOP ratio
means HalSal's extra work runs less efficiently than AlexNet's own layers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from halsal.models import build_model  # noqa: E402
from halsal.train.loop import autocast  # noqa: E402

MODELS = ("torchvision", "baseline", "approach_a", "approach_b")


def make_model(name: str, classes: int) -> torch.nn.Module:
    if name == "torchvision":
        from torchvision.models import alexnet

        return alexnet(weights=None, num_classes=classes)
    model = build_model("alexnet", classes, saliency="none" if name == "baseline" else "hallucinated")
    if name == "approach_a":
        model.saliency_branch.requires_grad_(False)
    return model


class Contender:
    """A model, its optimizer and a fixed batch on ``device``; step times per precision."""

    def __init__(self, name: str, args, device: torch.device):
        torch.manual_seed(0)
        self.name, self.device = name, device
        self.model = make_model(name, args.classes).to(device).train()
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-3)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        self.x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, args.classes, (args.batch,), device=device)
        self.times: dict[str, list[float]] = {}

    def step(self, precision: str) -> None:
        with autocast(self.device, precision):
            loss = F.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, precision: str, steps: int) -> None:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self.step(precision)  # warm-up (cuDNN autotuning, allocator, oneDNN primitive caches)
        sync()
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step(precision)
            sync()
            self.times.setdefault(precision, []).append(time.perf_counter() - t0)

    def ms(self, precision: str) -> float:
        return statistics.median(self.times[precision]) * 1e3


def step_flops(name: str, classes: int, size: int) -> int:
    """FLOPs of one training step's forward + backward, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model(name, classes).train()
    x, y = torch.randn(2, 3, size, size), torch.randint(0, classes, (2,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() // 2


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {platform.processor() or platform.machine()}, {cores} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def run(args) -> list[dict]:
    """Rows ``{model, flops, ratio_flops, fp32_ms, fp32_ratio, bf16_ms, bf16_ratio}``."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as halsal.train.loop.fit does
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    flops = {m: step_flops(m, args.classes, args.size) for m in models}
    contenders = {m: Contender(m, args, device) for m in models}
    for _ in range(args.rounds):
        for p in precisions:
            for c in contenders.values():
                c.timed(p, args.steps)
    ref = "torchvision" if "torchvision" in models else models[0]
    rows = []
    for m, c in contenders.items():
        row = {"model": m, "gflops": flops[m] / 1e9, "ratio_flops": flops[m] / flops[ref]}
        for p in precisions:
            row[f"{p}_ms"] = c.ms(p)
            row[f"{p}_ratio"] = c.ms(p) / contenders[ref].ms(p)
        rows.append(row)
    if "fp32" in precisions and "bf16" in precisions:
        for row in rows:
            row["bf16_speedup"] = row["fp32_ms"] / row["bf16_ms"]
    return rows, device


def markdown(rows: list[dict]) -> str:
    precisions = [p for p in ("fp32", "bf16") if f"{p}_ms" in rows[0]]
    head = ["model", "GFLOP/img (fwd+bwd)", "FLOP ratio"]
    for p in precisions:
        head += [f"{p} ms/step", f"{p} ratio"]
    if "bf16_speedup" in rows[0]:
        head.append("bf16 speed-up")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['gflops']:.2f}", f"{r['ratio_flops']:.2f}x"]
        for p in precisions:
            cells += [f"{r[f'{p}_ms']:.1f}", f"{r[f'{p}_ratio']:.2f}x"]
        if "bf16_speedup" in r:
            cells.append(f"{r['bf16_speedup']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile(args) -> None:
    """Top operators of a few steps of one model, by self time."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    precision = args.precisions.split(",")[0]
    c = Contender(args.profile, args, device)
    c.timed(precision, 1)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tprofile(activities=acts) as prof:
        c.timed(precision, args.steps)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=227, help="input side (default 227, the paper's)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default 128; use 4-8 on a CPU)")
    ap.add_argument("--classes", type=int, default=102, help="outputs (default 102, Flowers 102)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32,bf16")
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and batches")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--profile", choices=MODELS, default=None, help="profile this model instead of timing all")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile(args)
        return
    t0 = time.perf_counter()
    rows, device = run(args)
    print(f"machine: {machine(device)}")
    print(f"{args.size} px, batch {args.batch}, {args.classes} classes, SGD; median of {args.rounds} interleaved "
          f"rounds x {args.steps} steps{', channels-last' if args.channels_last else ''}; ratios against "
          f"torchvision's AlexNet in the same precision ({time.perf_counter() - t0:.0f} s)\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
