"""Training step time of HalSal's AlexNet configurations against torchvision's AlexNet.

    python bench/bench_step.py                          # GPU defaults: 227 px, batch 128
    python bench/bench_step.py --batch 16 --steps 2 --rounds 2 --threads 1   # 2-core CPU, ~2 min
    python bench/bench_step.py --profile approach_b     # where the time goes (torch.profiler)
    python bench/bench_step.py --loop                   # the training loop, before/after issue 11

One training step = ``halsal.train.loop.train_epoch`` over one fixed batch (forward under the
precision's autocast, cross-entropy, ``zero_grad``, backward, the optimizer of ``make_optimizer``:
SGD, momentum 0.9, weight decay 5e-3, as the paper). Contenders, all with ``--classes`` outputs:

- ``torchvision``: ``torchvision.models.alexnet``, every parameter trained (the reference);
- ``baseline``: ``build_model(saliency="none")`` (Baseline-RGB: should be 1.0x);
- ``approach_a``: the saliency branch frozen (forward only), the rest trained;
- ``approach_b``: everything trained (the paper's Approach B, Step 2);
- ``step1`` (not in the default set): only the saliency branch trained (Step 1).

Each is timed in fp32 and bf16 (``torch.autocast``), ``--rounds`` rounds interleaved (A B C D,
A B C D, ...) so that load from other processes falls on all of them alike; a round is one
warm-up step and ``--steps`` timed steps, and the median step is reported. The FLOP ratio
(forward + backward of one step, ``torch.utils.flop_counter.FlopCounterMode``; the optimizer
step is not counted) is printed next to the time ratio: a time ratio above the FLOP ratio
means HalSal's extra work runs less efficiently than AlexNet's own layers.

``--loop`` times whole epochs of Approach B from a device-resident image cache
(``halsal.train.device_cache.DeviceImages``): the loop as it was before issue 11 (``loss.item()`` and
``.sum().item()`` every batch, four blocking host-to-device copies per batch) against
``train_epoch`` (sums kept on the device, one pinned non-blocking copy per batch).
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
from halsal.train.loop import OptimConfig, autocast, make_optimizer, train_epoch  # noqa: E402

MODELS = ("torchvision", "baseline", "approach_a", "approach_b")
EXTRA = ("step1",)


def make_model(name: str, classes: int) -> torch.nn.Module:
    if name == "torchvision":
        from torchvision.models import alexnet

        return alexnet(weights=None, num_classes=classes)
    model = build_model("alexnet", classes, saliency="none" if name == "baseline" else "hallucinated")
    if name == "approach_a":
        model.saliency_branch.requires_grad_(False)
    if name == "step1":
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("saliency_branch."))
    return model


def pick_device(name: str) -> torch.device:
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OneBatch:
    """A stand-in for ``DeviceImages`` whose every epoch is one fixed batch: ``train_epoch`` over it
    is one training step, without the crop/flip/normalise of the input pipeline."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.device = x, y, x.device

    def train_batches(self, batch_size: int, generator: torch.Generator):
        yield self.x, self.y


class Contender:
    """A model, its optimizer (``make_optimizer``: SGD, the training defaults) and a fixed batch on
    ``device``; step times per precision, a step being ``train_epoch`` over that one batch."""

    def __init__(self, name: str, args, device: torch.device):
        torch.manual_seed(0)
        self.name, self.device = name, device
        self.model = make_model(name, args.classes).to(device).train()
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.cfg = {p: OptimConfig(batch_size=args.batch, lr=1e-4, precision=p, channels_last=args.channels_last)
                    for p in args.precisions.split(",") if p}
        self.opt = make_optimizer(self.model, next(iter(self.cfg.values())))
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
        self.batch = OneBatch(x, torch.randint(0, args.classes, (args.batch,), device=device))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.generator = torch.Generator()
        self.times: dict[str, list[float]] = {}

    def step(self, precision: str) -> None:
        train_epoch(self.model, self.batch, self.opt, self.loss_fn, self.cfg[precision], self.generator)

    def timed(self, precision: str, steps: int) -> None:
        self.step(precision)  # warm-up (cuDNN autotuning, allocator, oneDNN primitive caches)
        sync(self.device)
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step(precision)
            sync(self.device)
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
    return (f"CPU {platform.processor() or platform.machine()}, {cores} cores, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}")


def run(args) -> tuple[list[dict], torch.device]:
    """Rows ``{model, gflops, ratio_flops, <p>_ms, <p>_ratio, bf16_speedup}``, ratios against
    torchvision's AlexNet (or the first model) in the same precision."""
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark  # fit() turns it on
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    for m in models:
        if m not in MODELS + EXTRA:
            sys.exit(f"unknown model {m!r}; choose from {', '.join(MODELS + EXTRA)}")
    if "bf16" in precisions and not bf16_native(device):
        print(f"bf16: skipped ({torch.cuda.get_device_name(device)} only emulates bfloat16: compute capability < 8.0)")
        precisions = [p for p in precisions if p != "bf16"]
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
        if "fp32" in precisions and "bf16" in precisions:
            row["bf16_speedup"] = row["fp32_ms"] / row["bf16_ms"]
        rows.append(row)
    return rows, device


def markdown(rows: list[dict]) -> str:
    precisions = [p for p in ("fp32", "bf16") if f"{p}_ms" in rows[0]]
    head = ["model", "GFLOP/img (fwd+bwd)", "FLOP ratio"]
    for p in precisions:
        head += [f"{p} ms/step", f"{p} time ratio"]
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


# --- the training loop, before and after issue 11 -------------------------------------------

def bf16_native(device: torch.device) -> bool:
    """Whether training's own check accepts bf16 here (halsal.train.loop.check_precision: compute
    capability 8.0+ on CUDA; ``torch.cuda.is_bf16_supported()`` also accepts emulation, which
    fails or crawls on V100/T4 and would lose gpu-check's whole table)."""
    from halsal.errors import HalsalError
    from halsal.train.loop import check_precision

    try:
        check_precision(device, "bf16")
    except HalsalError:
        return False
    return True


def _legacy_epoch(model, data, optimizer, loss_fn, batch_size, generator, precision):
    """The loop as it was: a host sync per batch for the loss and the accuracy, and four
    blocking ``.to(device)`` copies of the batch's indices and offsets."""
    device = data.device
    n, size = len(data), data.images.shape[-1]
    order = torch.randperm(n, generator=generator)
    span = size - data.input_size + 1
    total, correct, loss_sum = 0, 0, 0.0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        b = len(idx)
        oy = torch.randint(span, (b,), generator=generator)
        ox = torch.randint(span, (b,), generator=generator)
        flip = torch.rand(b, generator=generator) < 0.5
        idx, oy, ox, flip = (t.to(device) for t in (idx, oy, ox, flip))
        x, y = data._normalise(data._crop(idx, oy, ox, flip)), data.labels[idx]
        with autocast(device, precision):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    return loss_sum, correct, total


def loop_compare(args) -> tuple[list[dict], torch.device]:
    """Images/s of whole epochs, legacy loop vs ``train_epoch``, per precision (Approach B)."""
    import numpy as np

    from halsal.train.device_cache import DeviceImages
    from halsal.train.loop import OptimConfig, make_optimizer, train_epoch

    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    rng = np.random.default_rng(0)
    n, cache = args.batch * args.loop_batches, args.size + args.size // 8  # 227 -> a 255 px cache
    data = DeviceImages(rng.integers(0, 256, (n, cache, cache, 3), dtype=np.uint8),
                        rng.integers(0, args.classes, n), device, args.size)
    torch.manual_seed(0)
    model = make_model("approach_b", args.classes).to(device).train()
    loss_fn = torch.nn.CrossEntropyLoss()
    rows = []
    for p in [p for p in args.precisions.split(",") if p]:
        if p == "bf16" and not bf16_native(device):
            continue
        cfg = OptimConfig(batch_size=args.batch, lr=1e-4, precision=p)
        opt = make_optimizer(model, cfg)
        times = {"before (sync per batch)": [], "after (train_epoch)": []}

        def before(epoch):
            _legacy_epoch(model, data, opt, loss_fn, args.batch, torch.Generator().manual_seed(epoch), p)

        def after(epoch):
            loss_sum, correct, _ = train_epoch(model, data, opt, loss_fn, cfg, torch.Generator().manual_seed(epoch))
            loss_sum.item(), correct.item()

        before(0), after(0)  # warm-up
        for r in range(args.rounds):
            for name, fn in (("before (sync per batch)", before), ("after (train_epoch)", after)):
                sync(device)
                t0 = time.perf_counter()
                fn(r + 1)
                sync(device)
                times[name].append(n / (time.perf_counter() - t0))
        base = statistics.median(times["before (sync per batch)"])
        for name, rates in times.items():
            rows.append({"loop": name, "precision": p, "img_s": statistics.median(rates),
                         "ratio": statistics.median(rates) / base})
    return rows, device


def loop_markdown(rows: list[dict]) -> str:
    lines = ["| training loop (approach_b) | precision | img/s | vs before |", "|---|---|---|---|"]
    lines += [f"| {r['loop']} | {r['precision']} | {r['img_s']:.0f} | {r['ratio']:.2f}x |" for r in rows]
    return "\n".join(lines)


def profile(args) -> None:
    """Top operators of a few steps of one model, by self time."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    device = pick_device(args.device)
    precision = args.precisions.split(",")[0]
    c = Contender(args.profile, args, device)
    c.timed(precision, 1)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with tprofile(activities=acts, record_shapes=True) as prof:
        c.timed(precision, args.steps)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=30))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=227, help="input side (default 227, the paper's)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default 128; 8-16 on a CPU)")
    ap.add_argument("--classes", type=int, default=102, help="outputs (default 102, Flowers 102)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated subset of {','.join(MODELS + EXTRA)} (default: all but step1)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32,bf16")
    ap.add_argument("--channels-last", action="store_true", help="NHWC weights and batches")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--profile", choices=MODELS + EXTRA, default=None, help="profile this model instead of timing")
    ap.add_argument("--loop", action="store_true", help="time whole epochs: the loop before/after issue 11")
    ap.add_argument("--loop-batches", type=int, default=8, help="batches per epoch for --loop (default 8)")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile(args)
        return
    t0 = time.perf_counter()
    rows, device = loop_compare(args) if args.loop else run(args)
    print(f"machine: {machine(device)}")
    print(f"{args.size} px, batch {args.batch}, {args.classes} classes, SGD; median of {args.rounds} interleaved "
          f"rounds{'' if args.loop else f' x {args.steps} steps'}{', channels-last' if args.channels_last else ''}"
          f"{', cudnn.benchmark off' if args.no_cudnn_benchmark and device.type == 'cuda' else ''}; "
          f"{'epochs of ' + str(args.loop_batches) + ' batches' if args.loop else 'ratios against torchvision AlexNet in the same precision'}"
          f" ({time.perf_counter() - t0:.0f} s)\n")
    print(loop_markdown(rows) if args.loop else markdown(rows))


if __name__ == "__main__":
    main()
