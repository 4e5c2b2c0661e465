"""Per-epoch input cost of halsal's training loop against a torchvision ImageFolder pipeline.

Issue 4, item 5b. On the same JPEGs in one run:

- halsal: the uint8 cache (decoded once by `halsal prepare`) lives on the training device;
  each batch is a random 227 crop + flip + normalisation cut from it (halsal.train.device_cache).
- baseline: torchvision ImageFolder + DataLoader (PIL decode, Resize(256), RandomCrop(227),
  RandomHorizontalFlip, ToTensor, Normalize) with as many workers as cores, which decodes
  every JPEG again every epoch.

Both are compared with the time of one AlexNet training step (forward + backward + SGD) on a
batch, so the input cost can be read as a fraction of a step. Prints img/s and ratios.

    python bench/bench_train_input.py [--images DIR] [--n 1000] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halsal.data.decode import decode_images  # noqa: E402
from halsal.models import build_model  # noqa: E402
from halsal.train.device_cache import DeviceImages, resolve_device  # noqa: E402


def imagefolder_copy(files: list[Path], root: Path) -> Path:
    """Symlink the chosen files into an ImageFolder layout (class = parent folder)."""
    for f in files:
        dest = root / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(f, dest)
    return root


def time_imagefolder_epoch(root: Path, batch_size: int, workers: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(256), transforms.RandomCrop(227), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(root, tf), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, persistent_workers=False)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - t0)


def time_device_epoch(data: DeviceImages, batch_size: int, epoch: int) -> float:
    gen = torch.Generator().manual_seed(epoch)
    t0 = time.perf_counter()
    n = 0
    for x, y in data.train_batches(batch_size, gen):
        n += len(y)
    if data.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def time_train_step(device: torch.device, batch_size: int, steps: int = 3) -> float:
    model = build_model("alexnet", 102).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-3)
    x = torch.randn(batch_size, 3, 227, 227, device=device)
    y = torch.randint(0, 102, (batch_size,), device=device)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "flowers102" / "images"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    files = sorted(Path(args.images).rglob("*.jpg"))[: args.n]
    if not files:
        sys.exit(f"no JPEGs under {args.images}")
    device = resolve_device("auto")
    workers = os.cpu_count() or 1
    print(f"{len(files)} JPEGs from {args.images}; device {device}; {workers} cores; batch {args.batch_size}")

    t0 = time.perf_counter()
    cache = decode_images([str(f) for f in files], resize=256, crop=256, progress=False)
    prep_s = time.perf_counter() - t0
    labels = torch.tensor([hash(f.parent.name) % 102 for f in files])
    data = DeviceImages(cache.images, labels.numpy(), device, 227)
    print(f"one-off prepare (decode+resize+crop to the 256 cache, {cache.backend}): {prep_s:.2f} s "
          f"({len(files) / prep_s:.0f} img/s)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-if-"))
    try:
        root = imagefolder_copy(files, tmp)
        time_imagefolder_epoch(root, args.batch_size, workers)  # warm page cache and workers
        halsal, folder = [], []
        for epoch in range(args.epochs):  # interleaved, so machine load falls on both alike
            halsal.append(time_device_epoch(data, args.batch_size, epoch))
            folder.append(time_imagefolder_epoch(root, args.batch_size, workers))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    h, f = statistics.median(halsal), statistics.median(folder)
    step = time_train_step(device, args.batch_size)
    per_batch_h, per_batch_f = args.batch_size / h, args.batch_size / f
    print(f"\n{'input pipeline':44s} {'img/s':>10s} {'ratio':>8s} {'per batch':>10s} {'% of a step':>12s}")
    print(f"{'halsal device cache (crop+flip+normalise)':44s} {h:10.0f} {h / f:7.1f}x {per_batch_h * 1e3:8.2f}ms {100 * per_batch_h / step:11.2f}%")
    print(f"{'ImageFolder + DataLoader (PIL), ' + str(workers) + ' workers':44s} {f:10.0f} {1.0:7.1f}x {per_batch_f * 1e3:8.2f}ms {100 * per_batch_f / step:11.2f}%")
    print(f"\nAlexNet training step (227 px, batch {args.batch_size}, {device}): {step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
