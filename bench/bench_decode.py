"""Decode + resize(256) + centre crop(227) throughput: halsal's prepare path vs DataLoader baselines.

    python bench/bench_decode.py [--images DIR] [--n N] [--repeats R]

All contenders decode the same N JPEGs in one run (page cache warmed first, one warm-up pass
each), and the table prints img/s and the ratio to the best baseline:

1. halsal ``decode_images`` once per distinct CPU backend (``auto``'s choice marked; dali-cpu
   also with DALI's own resampler);
2. torchvision ``ImageFolder`` + ``DataLoader``, PIL transforms, ``num_workers`` = cores;
3. a ``DataLoader`` over ``torchvision.io.decode_jpeg`` + tensor resize/crop, same workers;
4. halsal's DALI GPU graph (``dali-gpu``: mixed decoder + GPU resize/crop, copied to the host)
   when a GPU is visible, else reported as skipped: ONE pipeline, built before the clock starts
   and timed over repeated passes over the files (what a long prepare job sees; one
   ``decode_images`` call would also time the decoder probe and the pipeline build). One row:
   with a GPU, ``auto`` is this path, so it is not timed a second time.

Item (b) of issue 4 (per-epoch training input cost) is measured elsewhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.io import ImageReadMode, decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from halsal.data import decode as D  # noqa: E402

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers102" / "images"
BATCH = 64
RESIZE, CROP = 256, 227  # overridable with --resize/--crop


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo, plus family/model (VMs often report a bare 'AMD EPYC')."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                    if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    except OSError:
        return platform.processor() or "unknown"


class JpegFiles(Dataset):
    """Baseline 3: torchvision.io.decode_jpeg on the file bytes, then tensor resize/crop."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        data = torch.frombuffer(bytearray(Path(self.files[i]).read_bytes()), dtype=torch.uint8)
        img = decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        img = F.resize(img, [RESIZE], antialias=True)
        return F.center_crop(img, [CROP]), 0


def drain(loader) -> int:
    n = 0
    for x, _ in loader:
        n += len(x)
    return n


def make_imagefolder(files, root: Path) -> Path:
    """ImageFolder over exactly these files: a temporary tree of symlinks (no copies)."""
    for i, f in enumerate(files):
        d = root / Path(f).parent.name
        d.mkdir(exist_ok=True)
        (d / f"{i:06d}_{Path(f).name}").symlink_to(f)
    return root


class Cycle:
    """external_source callback: the encoded files, batch after batch, round and round."""

    def __init__(self, encoded: list, batch_size: int):
        self.encoded, self.batch_size, self.i = encoded, batch_size, 0

    def __call__(self):
        out = [self.encoded[(self.i + j) % len(self.encoded)] for j in range(self.batch_size)]
        self.i = (self.i + self.batch_size) % len(self.encoded)
        return out


def pipeline_passes(files, resize: int, crop: int, device: str = "gpu", batch_size: int = 64,
                    num_threads: int | None = None):
    """One halsal DALI pipeline (``device='gpu'``: the dali-gpu graph), built here, once; returns
    a function that runs one pass of ceil(N / batch) batches, copied to host memory as prepare
    does, and returns the number of images decoded."""
    import numpy as np

    encoded = [np.frombuffer(Path(f).read_bytes(), dtype=np.uint8) for f in files]
    pipe = D.dali_pipeline(Cycle(encoded, batch_size), device=device, resize=resize, crop=crop,
                            batch_size=batch_size, num_threads=num_threads or cores(),
                            device_id=0 if device == "gpu" else None, prefetch=2, resampler="dali")
    batches = -(-len(files) // batch_size)

    def one_pass() -> int:
        n = 0
        for _ in range(batches):
            (out,) = pipe.run()
            n += len(np.asarray((out.as_cpu() if device == "gpu" else out).as_tensor()))
        return n

    one_pass.pipe = pipe  # kept alive with the function
    return one_pass


def halsal_rows(auto: str, dali: bool, gpu: bool) -> list[tuple[str, str]]:
    """(row name, what it times) of halsal's contenders: each path once, ``auto``'s marked."""
    rows = []
    for backend in dict.fromkeys([auto, "dali-cpu" if dali else "torchvision"]):
        if backend != "dali-gpu":
            mark = " (= auto)" if backend == auto else ""
            rows.append((f"halsal decode_images, {backend}{mark}", backend))
    if dali:
        rows.append(("halsal dali-cpu, resampler=dali", "dali-cpu-dali"))
    if gpu:
        mark = " (= auto)" if auto == "dali-gpu" else ""
        rows.append((f"halsal dali-gpu{mark}: pipeline built once, timed per pass", "dali-gpu-pipeline"))
    return rows


def measure(contenders: dict, n: int, repeats: int) -> dict:
    """Median img/s per contender. Each is warmed up once; the timed runs are interleaved
    (A B C, A B C, ...) so that load from other processes hits every contender alike."""
    for fn in contenders.values():
        fn()
    rates = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            got = fn()
            rates[name].append(got / (time.perf_counter() - t0))  # a pipeline pass may round up to whole batches
            assert n <= got < n + 256, (name, got, n)
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder searched for *.jpg (recursively)")
    ap.add_argument("--n", type=int, default=1000, help="number of JPEGs (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per contender; the median is reported")
    ap.add_argument("--batch-size", type=int, default=None, help="DALI batch size (default: halsal's)")
    ap.add_argument("--threads", type=int, default=None, help="DALI threads (default: halsal's)")
    ap.add_argument("--resize", type=int, default=256, help="shorter side after resizing (default 256)")
    ap.add_argument("--crop", type=int, default=227, help="centre crop (default 227)")
    args = ap.parse_args(argv)
    global RESIZE, CROP
    RESIZE, CROP = args.resize, args.crop

    files = sorted(str(p) for p in args.images.rglob("*.jpg"))[: args.n]
    if not files:
        sys.exit(f"no *.jpg under {args.images}; pass --images DIR")
    n, workers = len(files), cores()
    for f in files:  # warm the page cache so every contender reads from memory
        Path(f).read_bytes()
    from PIL import Image
    with Image.open(files[0]) as im:
        size = im.size
    print(f"machine: {cpu_model()}, {cores()} cores usable, torch {torch.__version__}, "
          f"DALI GPU: {'yes' if D.gpu_available() else 'no'}")
    print(f"images: {n} JPEGs from {args.images} (first is {size[0]}x{size[1]}); resize {RESIZE}, crop {CROP}; "
          f"DataLoader batch {BATCH}, workers {workers}; median of {args.repeats} interleaved runs after a warm-up\n")

    dali_kw = {k: v for k, v in (("batch_size", args.batch_size), ("num_threads", args.threads)) if v is not None}
    auto, gpu = D.resolve_backend("auto"), D.gpu_available()

    def halsal(what):
        if what == "dali-gpu-pipeline":
            return pipeline_passes(files, RESIZE, CROP, "gpu", args.batch_size or 64, args.threads)
        backend, kw = (what, dali_kw) if what != "dali-cpu-dali" else ("dali-cpu", {**dali_kw, "resampler": "dali"})
        return lambda: len(D.decode_images(files, RESIZE, CROP, backend=backend, progress=False, **kw).images)

    tmp = tempfile.TemporaryDirectory()
    folder = ImageFolder(make_imagefolder(files, Path(tmp.name)),
                         transform=T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.PILToTensor()]))
    pil_loader = DataLoader(folder, batch_size=BATCH, num_workers=workers, persistent_workers=True)
    jpeg_loader = DataLoader(JpegFiles(files), batch_size=BATCH, num_workers=workers, persistent_workers=True)
    contenders = {name: (halsal(what), False) for name, what in halsal_rows(auto, D.dali_available(), gpu)}
    contenders.update({  # name -> (function, is a baseline)
        f"ImageFolder + DataLoader, PIL ({workers} workers)": (lambda: drain(pil_loader), True),
        f"DataLoader, decode_jpeg ({workers} workers)": (lambda: drain(jpeg_loader), True),
    })
    if not gpu:
        print(f"dali-gpu: skipped ({D.gpu_reason()})\n")
    rates = measure({name: fn for name, (fn, _) in contenders.items()}, n, args.repeats)
    del pil_loader, jpeg_loader
    tmp.cleanup()
    rows = [(name, rates[name], baseline) for name, (_, baseline) in contenders.items()]

    best = max(rate for _, rate, baseline in rows if baseline)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'contender':<{width}}  {'img/s':>8}  {'vs best baseline':>16}")
    for name, rate, _ in rows:
        print(f"{name:<{width}}  {rate:8.0f}  {rate / best:15.2f}x")


if __name__ == "__main__":
    main()
