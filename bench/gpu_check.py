"""``make gpu-check``: everything that needs a CUDA GPU, in one command, as one markdown table.

    python3 bench/gpu_check.py --fetch [--python-version 3.12]   # where a package index is reachable
    python3 bench/gpu_check.py [--images DIR] [--n 1000] [--quick]

Runs with whatever Python calls it (the Makefile passes ``python3``; no ``.venv`` is built):
it needs torch and torchvision from the machine. What else the checks import is installed,
where missing, from wheels in ``.whl/``:

- ``--fetch`` downloads them, ONE package per ``pip download --python-version X
  --only-binary=:all: --no-deps`` call (X: the GPU machine's Python, ``make gpu-check``'s
  ``GPU_PYTHON_VERSION``, default 3.12), at the versions of requirements/constraints.txt, and
  lists any that failed; it never stops at the first;
- the check installs each missing one on its own (``pip install --no-index --no-deps --target
  .whl/site/<package>``: one folder per package, so a bad wheel costs only the tests that need
  it, and the ``nvidia`` namespace of DALI and nvimgcodec merges with the machine's).

The pytest and bench subprocesses get the same packages (``.whl/site/*`` appended to their
``sys.path``, after the machine's), ``PYTHONPATH`` led by ``.whl/boot``, whose ``nvidia/__init__.py``
merges every ``nvidia`` folder on the path (so ``import nvidia.dali`` works even where the machine's
``site-packages/nvidia`` is a regular package with an ``__init__.py``), and ``LD_LIBRARY_PATH`` led
by the ``nvidia/*/lib`` folders of the machine and of ``.whl/site/*``: DALI and nvimgcodec find
libnvjpeg, libnvjpeg2k, libnvtiff and libnvcomp through ``$ORIGIN``-relative RUNPATHs, which do not
reach across the per-package folders.

Then:

1. the GPU tests, ``pytest -m gpu tests/test_gpu.py`` (which imports neither pandas nor
   Snakemake at module level): DALI ``mixed`` per image against PIL at 256/227, 256/256 and
   224/200, the CUDA device and SMIC caches bit for bit against the CPU ones, the upload's peak
   memory, ResNet-152 with frozen batch norm, fit in fp32 and bf16 + channels-last, resume with
   map_location=cuda, and ``finetune()`` of Approach B and SMIC that learns;
2. ``bench/bench_decode.py`` (the dali-gpu pipeline built once, timed over repeated passes) on
   ``../shared/data/flowers102/images`` if present, else on generated JPEGs;
3. ``bench/bench_step.py`` at 227 px, batch 128: torchvision's AlexNet against HalSal's
   configurations, fp32 and bf16, with the FLOP ratio; Approach B with cuDNN autotuning off
   (as before issue 11); and whole epochs of the training loop before/after issue 11.

It ends with one markdown table to paste into docs/benchmarks.md. On a machine without an NVIDIA
device (no ``nvidia-smi``, no ``/dev/nvidia0``) it says so and exits 0. On a machine with one whose
torch cannot start CUDA (a driver too old for CUDA 13, a CPU-only torch, no torch), it prints
torch's reason (``halsal.gpu.torch_gpu_reason()``) and exits 1: nothing was checked. With a GPU,
it exits 1 if a GPU test fails, and if torch sees the GPU but DALI does not (both versions
printed).
"""

from __future__ import annotations

import argparse
import importlib.metadata  # binds importlib too
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
SITE = WHEELS / "site"
BOOT = WHEELS / "boot"  # PYTHONPATH of the subprocesses: holds only the nvidia/__init__.py below
# distribution -> the module that shows it is there (None: check its metadata), in install
# order; the machine's torch and torchvision are not fetched.
PACKAGES = {
    # the GPU tests
    "pytest": "pytest", "iniconfig": None, "pluggy": None, "packaging": None, "Pygments": None,
    "numpy": "numpy", "scipy": "scipy", "pillow": "PIL", "tqdm": "tqdm",  # scipy: halsal/data/smic_maps.py
    # the end-to-end tests (prepare, splits, finetune), imported inside them
    "pandas": "pandas", "python-dateutil": "dateutil", "six": "six", "tzdata": None,
    # DALI and what it imports
    "nvidia-dali-cuda130": "nvidia.dali", "nvidia-nvimgcodec-cu13": None, "nvidia-libnvcomp-cu13": None,
    "astunparse": None, "gast": None, "libcst": None, "PyYAML": "yaml", "makefun": None, "nvtx": None,
    "optree": None, "typing_extensions": None, "wheel": None,
    # the codec libraries nvimgcodec loads for DALI's `mixed` decoder (its extras [nvjpeg, nvjpeg2k,
    # nvtiff]; without them `mixed` fails or decodes on the CPU). Files only: checked by metadata.
    "nvidia-nvjpeg": None, "nvidia-nvjpeg2k-cu13": None, "nvidia-nvtiff-cu13": None,
}
# Where DALI (libdali*.so) and nvimgcodec (libnvimgcodec.so.0, its extensions) look for the CUDA
# libraries, relative to an ``nvidia`` folder (their RUNPATHs, ``$ORIGIN/../<dir>``).
NVIDIA_LIB_DIRS = ("cu13/lib", "nvjpeg/lib", "nvjpeg2k/lib", "nvtiff/lib", "libnvcomp/lib64", "nvcomp",
                   "nvimgcodec", "cufft/lib", "npp/lib")
# .whl/boot/nvidia/__init__.py: every ``nvidia`` folder on sys.path (the machine's first), then those
# of .whl/site/* (for a process whose sys.path lacks them).
NVIDIA_INIT = '''# Written by bench/gpu_check.py (make gpu-check): merges the nvidia namespace across folders.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
__path__ += [p for p in {portions!r} if p not in __path__ and __import__("os").path.isdir(p)]
'''
PHOTOS = REPO.parent / "shared" / "data" / "flowers102" / "images"


def say(msg: str) -> None:
    print(f"gpu-check: {msg}", flush=True)


def importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # ImportError, or a broken install
        return False
    return True


def installed(dist: str) -> bool:
    module = PACKAGES.get(dist)
    if module:
        return importable(module)
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def nvidia_device() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def torch_reason() -> str:
    """Why torch cannot use CUDA here: ``halsal.gpu.torch_gpu_reason()`` (torch's own error)."""
    try:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from halsal import gpu

        reason = gpu.torch_gpu_reason()
    except Exception as exc:  # the reason must not hide behind a second failure
        return f"torch.cuda.is_available() is False (halsal.gpu.torch_gpu_reason() failed: {exc!r})"
    return reason or "torch.cuda.is_available() is False"


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def pins() -> dict:
    """name -> version from requirements/constraints.txt (lower-case, - and _ alike)."""
    out = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            out[_norm(m[1])] = m[2]
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def fetch(python_version: str, dest: Path | None = None) -> int:
    """Download every wheel the checks need, one pip call per package; 1 if any failed."""
    dest = dest or WHEELS
    dest.mkdir(parents=True, exist_ok=True)
    versions, failed = pins(), []
    for dist in PACKAGES:
        spec = f"{dist}=={versions[_norm(dist)]}" if _norm(dist) in versions else dist
        have = _wheel_for(dist, dest)
        if have is not None and (f"-cp{python_version.replace('.', '')}-" in have.name or "-cp3" not in have.name):
            say(f"{spec}: ok (already in {dest.name}/: {have.name})")
            continue
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--retries", "1", "--timeout", "20",
                               "--python-version", python_version, "--only-binary=:all:", "--no-deps", "-d", str(dest),
                               spec], capture_output=True, text=True)
        if proc.returncode:
            failed.append(spec)
            say(f"{spec}: FAILED ({_last_line(proc.stderr or proc.stdout)})")
        else:
            say(f"{spec}: ok")
    say(f"{len(PACKAGES) - len(failed)} of {len(PACKAGES)} wheels for Python {python_version} in {dest}/"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def site_dirs() -> list[Path]:  # one folder per installed package
    return sorted(p for p in SITE.iterdir() if p.is_dir()) if SITE.is_dir() else []


def use_site() -> None:
    """Make each ``.whl/site/<package>`` importable, after the machine's own packages (they win)."""
    for d in site_dirs():
        if str(d) not in sys.path:
            sys.path.append(str(d))
    importlib.invalidate_caches()
    try:  # a namespace package follows sys.path; a regular one (an __init__.py) must be extended
        nvidia = sys.modules.get("nvidia") or importlib.import_module("nvidia")
    except Exception:  # no nvidia folder anywhere (or a broken one): nothing to merge
        return
    if isinstance(getattr(nvidia, "__path__", None), list):
        for d in site_dirs():
            if (d / "nvidia").is_dir() and str(d / "nvidia") not in nvidia.__path__:
                nvidia.__path__.append(str(d / "nvidia"))
    importlib.invalidate_caches()


def nvidia_folders() -> list[Path]:
    """Every ``nvidia`` folder on sys.path, then in ``.whl/site/*``, in that order."""
    out = []
    for entry in [*sys.path, *map(str, site_dirs())]:
        d = Path(entry or ".").resolve() / "nvidia"
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def library_dirs() -> list[str]:
    """The CUDA library folders of all ``nvidia`` folders, for ``LD_LIBRARY_PATH``."""
    return [str(d / sub) for d in nvidia_folders() for sub in NVIDIA_LIB_DIRS if (d / sub).is_dir()]


def write_boot() -> Path:
    """(Re)write ``.whl/boot/nvidia/__init__.py``; returns the folder for PYTHONPATH."""
    init = BOOT / "nvidia" / "__init__.py"
    text = NVIDIA_INIT.format(portions=[str(d / "nvidia") for d in site_dirs() if (d / "nvidia").is_dir()])
    if not init.is_file() or init.read_text() != text:
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(text)
    return BOOT


def _wheel_for(dist: str, folder: Path | None = None) -> Path | None:
    found = [w for w in (folder or WHEELS).glob("*.whl") if _norm(w.name.split("-")[0]) == _norm(dist)]
    return sorted(found)[-1] if found else None


def ensure_packages() -> list[str]:
    """Install what is missing from ``.whl/``, one package per pip call; return what is still missing."""
    use_site()
    missing = [dist for dist in PACKAGES if not installed(dist)]
    if not missing:
        return []
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for dist in missing:
        wheel = _wheel_for(dist)
        if wheel is None:
            say(f"{dist}: missing, and no wheel in {WHEELS}/ (run `make gpu-wheels` where an index is reachable)")
            continue
        if "-cp3" in wheel.name and f"-{py}-" not in wheel.name and "-abi3-" not in wheel.name:
            say(f"{dist}: {wheel.name} is not for this Python ({py}); set GPU_PYTHON_VERSION and fetch again")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                               "--target", str(SITE / _norm(dist)), str(wheel)], capture_output=True, text=True)
        say(f"{dist}: " + (f"pip failed: {_last_line(proc.stderr or proc.stdout)}" if proc.returncode else
                           f"installed from {wheel.name}"))
    use_site()
    return [dist for dist in missing if not installed(dist)]


def dali_gpu_reason() -> str | None:
    """None when DALI sees a CUDA GPU, else why not."""
    try:
        from nvidia.dali.backend import GetCUDADeviceCount
    except Exception as exc:
        return f"DALI does not import ({exc})"
    try:
        count = GetCUDADeviceCount()
    except Exception as exc:
        return f"DALI cannot query CUDA ({exc})"
    return None if count > 0 else "DALI sees no CUDA device"


def python_cmd(code: str) -> list[str]:
    """A command running ``code`` with the repository and ``.whl/site/*`` importable."""
    boot = f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.extend({[str(d) for d in site_dirs()]!r}); "
    return [sys.executable, "-c", boot + code]


def env() -> dict:
    """The environment of the pytest and bench subprocesses: ``.whl/boot`` first on PYTHONPATH
    (the merged ``nvidia`` namespace) and the CUDA library folders first on LD_LIBRARY_PATH."""
    e = dict(os.environ)
    cache = Path(tempfile.gettempdir()) / "halsal-gpu-check-cache"
    e.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    e.setdefault("XDG_CACHE_HOME", str(cache))
    for var, first in (("PYTHONPATH", [str(write_boot())]), ("LD_LIBRARY_PATH", library_dirs())):
        rest = [p for p in e.get(var, "").split(os.pathsep) if p and p not in first]
        if first or rest:
            e[var] = os.pathsep.join(first + rest)
    return e


# --- 1. GPU tests -----------------------------------------------------------------------------

def gpu_tests(rows: list) -> bool:
    """Run the tests marked gpu; one row per test. True when none failed."""
    if not importable("pytest"):
        rows.append(("GPU tests", "pytest -m gpu", "not run: pytest is missing (`make gpu-wheels`, then again)", ""))
        return False
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        args = ["-m", "gpu", "-p", "no:cacheprovider", "-q", "-rA", f"--junitxml={xml}", "tests/test_gpu.py"]
        say("running the GPU tests: pytest " + " ".join(a for a in args if not a.startswith("--junitxml")))
        t0 = time.perf_counter()
        proc = subprocess.run(python_cmd(f"import pytest; sys.exit(pytest.main({args!r}))"), cwd=REPO, env=env(),
                              capture_output=True, text=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
        if not xml.is_file():
            rows.append(("GPU tests", "pytest -m gpu", f"did not run (exit {proc.returncode}): "
                         + _last_line(proc.stdout + proc.stderr), ""))
            return False
        ok = True
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '').split('.')[-1]}.py::{case.get('name')}"
            status, detail = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    status = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                    msg = (el.get("message") or "").strip()
                    detail = msg.splitlines()[0][:160].replace("|", "/") if msg else ""
                    ok &= tag == "skipped"
            rows.append(("GPU tests", name, f"{status}{': ' + detail if detail else ''}", ""))
        rows.append(("GPU tests", "pytest exit status", f"{proc.returncode} ({time.perf_counter() - t0:.0f} s)", ""))
        return ok and proc.returncode in (0, 5)  # 5: nothing selected


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200].replace("|", "/") if lines else ""


# --- 2. decode benchmark ----------------------------------------------------------------------

def make_jpegs(folder: Path, n: int) -> Path:
    """``n`` photo-like JPEGs (smooth random fields, 500 x 375) when no photographs are at hand."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        d = folder / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        small.resize((500, 375), Image.BICUBIC).save(d / f"{i:05d}.jpg", quality=90)
    return folder


def decode_bench(rows: list, images: Path | None, n: int) -> None:
    missing = [m for m in ("numpy", "PIL", "tqdm") if not importable(m)]
    if missing:
        rows.append(("decode", "bench/bench_decode.py", f"not run: {', '.join(missing)} missing", ""))
        return
    from halsal.data import decode as D

    reason = D.gpu_reason()
    with tempfile.TemporaryDirectory() as tmp:
        source = images or (PHOTOS if PHOTOS.is_dir() else None)
        label = str(source) if source else f"{n} generated 500x375 JPEGs"
        if source is None:
            say(f"no photographs at {PHOTOS}: generating {n} JPEGs for the decode benchmark")
            source = make_jpegs(Path(tmp) / "jpegs", n)
        say(f"decode benchmark on {label}")
        code = (f"import runpy; sys.argv = ['bench_decode.py', '--images', {str(source)!r}, '--n', '{n}']; "
                f"runpy.run_path('bench/bench_decode.py', run_name='__main__')")
        proc = subprocess.run(python_cmd(code), cwd=REPO, env=env(), capture_output=True, text=True)
    print(proc.stdout, proc.stderr[-2000:], sep="\n", flush=True)
    what = f"decode 256->227, {label.split('/')[-2] if '/' in label else label}"
    if proc.returncode:
        rows.append((what, "bench/bench_decode.py", "failed: " + _last_line(proc.stderr or proc.stdout), ""))
        return
    table = proc.stdout.split("vs best baseline", 1)[-1]
    for line in table.strip().splitlines():
        m = re.match(r"^(?P<name>.+?)\s{2,}(?P<rate>\d+)\s+(?P<ratio>[\d.]+)x$", line.strip())
        if m:
            rows.append((what, m["name"], f"{m['rate']} img/s", f"{m['ratio']}x vs best baseline"))
    if reason:
        rows.append((what, "halsal dali-gpu (mixed decoder)", f"not measured: {reason}", ""))


# --- 3. step benchmark ------------------------------------------------------------------------

def step_bench(rows: list, quick: bool) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO))
    import bench_step as B

    extra = ["--steps", "3", "--rounds", "2"] if quick else []
    args = B.parser().parse_args(extra)
    say(f"step benchmark: {args.size} px, batch {args.batch}, fp32 and bf16")
    table, _ = B.run(args)
    print(B.markdown(table), flush=True)
    what = f"train step {args.size} px, batch {args.batch}"
    for r in table:
        for p in ("fp32", "bf16"):
            if f"{p}_ms" in r:
                rows.append((f"{what}, {p}", f"{r['model']} / torchvision AlexNet", f"{r[f'{p}_ms']:.1f} ms/step",
                             f"{r[f'{p}_ratio']:.2f}x time, {r['ratio_flops']:.2f}x FLOPs"))
    off = B.parser().parse_args(extra + ["--models", "torchvision,approach_b", "--precisions", "fp32",
                                         "--no-cudnn-benchmark"])
    say("step benchmark with cudnn.benchmark off (the loop before issue 11)")
    t_off, _ = B.run(off)
    rows.append((f"{what}, fp32, cudnn.benchmark off", "approach_b / torchvision AlexNet",
                 f"{t_off[1]['fp32_ms']:.1f} ms/step", f"{t_off[1]['fp32_ratio']:.2f}x time "
                 f"(torchvision {t_off[0]['fp32_ms']:.1f} ms)"))
    say("training loop, before/after issue 11 (Approach B, whole epochs)")
    loop, _ = B.loop_compare(B.parser().parse_args(extra + ["--loop"]))
    print(B.loop_markdown(loop), flush=True)
    for r in loop:
        rows.append((f"training loop {args.size} px, batch {args.batch}, {r['precision']}", f"approach_b, {r['loop']}",
                     f"{r['img_s']:.0f} img/s", f"{r['ratio']:.2f}x"))


# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=None, help=f"JPEG folder for the decode benchmark (default {PHOTOS})")
    ap.add_argument("--n", type=int, default=1000, help="JPEGs for the decode benchmark (default 1000)")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps (a smoke run of this script)")
    ap.add_argument("--fetch", action="store_true", help="only download the wheels into .whl/, one package per call")
    ap.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                    help="--fetch: the GPU machine's Python (make: GPU_PYTHON_VERSION, default 3.12)")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    if args.fetch:
        return fetch(args.python_version)
    try:
        import torch
    except ImportError as exc:
        if nvidia_device():
            say(f"this machine has an NVIDIA device, but {sys.executable} cannot import torch ({exc}): install "
                f"torch + torchvision for it (or run with PYTHON=<a python that has them>)")
            return 1
        say(f"NO GPU CHECK: {sys.executable} has no torch ({exc}) and the machine shows no NVIDIA GPU "
            f"(no nvidia-smi, no /dev/nvidia0). Nothing was tested; exiting 0.")
        return 0
    if not torch.cuda.is_available():
        if nvidia_device():  # the case that matters: a GPU torch cannot use is a failure, with torch's reason
            say(f"FAILED: this machine has an NVIDIA device (nvidia-smi or /dev/nvidia0), but torch cannot use "
                f"it: {torch_reason()}. The pinned builds (torch cu130, DALI cuda130) need an NVIDIA driver >= 580; "
                f"`nvidia-smi` prints it (driver {driver_version()}). Nothing was tested; exiting 1.")
            return 1
        say(f"NO GPU CHECK: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees no CUDA GPU "
            f"(torch.cuda.is_available() is False) and the machine shows no NVIDIA device (no nvidia-smi, no "
            f"/dev/nvidia0). Nothing was tested; exiting 0. Run `make gpu-check` on a machine with a GPU.")
        return 0
    t0 = time.perf_counter()
    still_missing = ensure_packages()
    props = torch.cuda.get_device_properties(0)
    dali = "not installed"
    if importable("nvidia.dali"):
        import nvidia.dali

        dali = nvidia.dali.__version__
    import torchvision

    rows = [("machine", "GPU", f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}), "
             f"{torch.cuda.device_count()} visible, driver {driver_version()}", ""),
            ("machine", "software", f"Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA "
             f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), torchvision {torchvision.__version__}, "
             f"DALI {dali}", "")]
    if still_missing:
        rows.append(("machine", "missing", ", ".join(still_missing), "checks that need them fail"))
    dali_reason = dali_gpu_reason()
    if dali_reason:  # torch sees the GPU (checked above): a DALI that does not is a failure
        say(f"FAILED: torch {torch.__version__} (CUDA {torch.version.cuda}) sees {props.name}, but DALI {dali} does "
            f"not: {dali_reason}")
        rows.append(("machine", "DALI and the GPU", f"FAILED: torch {torch.__version__} sees the GPU, DALI {dali} "
                     f"does not ({dali_reason})", ""))
    ok = gpu_tests(rows) and not dali_reason
    decode_bench(rows, args.images, args.n)
    step_bench(rows, args.quick)
    print(f"\n## GPU check ({time.strftime('%Y-%m-%d')}, `make gpu-check`, {time.perf_counter() - t0:.0f} s)\n")
    print("| part | what | result | ratio |\n|---|---|---|---|")
    for part, what, result, ratio in rows:
        print(f"| {part} | {what} | {result} | {ratio} |")
    if not ok:
        say("a GPU test failed or did not run (see above); exiting 1")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
