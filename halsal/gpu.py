"""Which GPU a job runs on, and a loud stop where a job asks for one that does not work.

Torch-free at import: :func:`claim_gpus` runs in ``halsal``'s ``main`` before any command
imports torch or DALI, because ``CUDA_VISIBLE_DEVICES`` is read once, when CUDA starts.

One GPU per job (``python -m halsal --gpus N <command>``, which every GPU rule runs with
``N = {resources.gpu}``):

- ``N = 0`` (a CPU-only config): ``CUDA_VISIBLE_DEVICES`` is set empty, so neither torch nor
  DALI starts CUDA work that Snakemake did not count (``device: auto`` then means the CPU).
- ``N > 0``: the job takes N free slots among the devices it may use and narrows
  ``CUDA_VISIBLE_DEVICES`` to them. A slot is an ``flock`` on ``<lock dir>/gpu<id>.lock``,
  held by the process until it exits (also when it is killed), so jobs that Snakemake runs side
  by side (at most ``--resources gpu=<GPU count>`` GPUs at once) get different devices; a job
  that finds every slot taken waits for one. The lock dir is one per machine,
  ``/tmp/halsal-gpu-locks`` (mode 1777, lock files 0666), so the jobs of every user of the
  machine's GPUs share them out (``HALSAL_GPU_LOCK_DIR`` names another, e.g. where /tmp is
  private to each user). The devices are those of a preset ``CUDA_VISIBLE_DEVICES`` (an
  ``nvidia-smi -L`` count where there is none, or ``HALSAL_GPU_COUNT``).
- On SLURM, ``CUDA_VISIBLE_DEVICES`` is the job's allocation: it is kept as it is when the
  job may use all of it, and only narrowed (never replaced) when a group job with several GPUs
  runs several members at once; the slots are then private to the SLURM job
  (``<lock dir>/slurm-<job id>``), since two SLURM jobs on a node both see their GPU as 0.
  Where SLURM sets no ``CUDA_VISIBLE_DEVICES`` (gres without ``File=``, the job's device cgroup
  isolating its GPUs) the GPUs ``nvidia-smi -L`` lists inside the job are its allocation in the
  same way, unless it lists more than SLURM gave the job (``SLURM_GPUS_ON_NODE``,
  ``SLURM_STEP_GPUS``, ``SLURM_JOB_GPUS``): such a node does not isolate its GPUs, and its jobs
  share them out by the machine-wide locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from halsal.errors import HalsalError

# What the pinned builds need (requirements/constraints.txt: torch 2.14.1+cu130, DALI cuda130).
NEEDS = ("the pinned builds (torch 2.14.1+cu130, nvidia-dali-cuda130 2.4.0) need CUDA 13.0, i.e. an NVIDIA "
         "driver >= 580 (`nvidia-smi` prints the driver version)")
CPU_HINT = ("to run on the CPU on purpose, set train.device: cpu and resources.gpu: 0 in the config "
            "(data.decode_backend: dali-cpu for decoding)")
_held: list = []  # open lock files: the slots this process holds until it exits
# The slot locks of every user of this machine's GPUs (mode 1777); HALSAL_GPU_LOCK_DIR overrides it.
SHARED_LOCK_DIR = Path("/tmp/halsal-gpu-locks")


def lock_dir(env=os.environ, devices: list[str] | None = None) -> Path:
    """The folder of the GPU slot locks: :data:`SHARED_LOCK_DIR` (or ``HALSAL_GPU_LOCK_DIR``),
    shared by every user of this machine; ``<that>/slurm-<job id>`` for a SLURM job whose GPUs
    are its own (:func:`slurm_owns_gpus`). ``devices``: :func:`visible_devices`, if known."""
    base = Path(env.get("HALSAL_GPU_LOCK_DIR") or SHARED_LOCK_DIR)
    if slurm_owns_gpus(env, devices):
        base = base / f"slurm-{env['SLURM_JOB_ID']}"
    return base


def slurm_allocated(env=os.environ) -> int | None:
    """How many GPUs SLURM gave this job on this node (None: not a SLURM job, or SLURM did not say)."""
    if not env.get("SLURM_JOB_ID"):
        return None
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if count.isdigit():
        return int(count)
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):  # global ids, e.g. "2,3"
        ids = [i for i in env.get(key, "").split(",") if i.strip()]
        if ids:
            return len(ids)
    return None


def slurm_owns_gpus(env=os.environ, devices: list[str] | None = None) -> bool:
    """True where the devices this job sees are its SLURM allocation, which no other job on the
    node sees: SLURM set ``CUDA_VISIBLE_DEVICES``, or it did not (gres without ``File=``,
    isolation by the job's device cgroup only) and the job sees no more GPUs than SLURM gave it.
    Such jobs number their GPUs from 0 each, so their slot locks must be private to the job.
    A job that sees more GPUs than it was given (a node that does not isolate them) shares them
    out with the other jobs of the node, by the machine-wide locks."""
    if not env.get("SLURM_JOB_ID"):
        return False
    if env.get("CUDA_VISIBLE_DEVICES"):
        return True
    given = slurm_allocated(env)
    if given is None:  # SLURM did not say: take what the job sees as its own
        return True
    return len(visible_devices(env) if devices is None else devices) <= given


def visible_devices(env=os.environ) -> list[str]:
    """The devices this job may use: a preset CUDA_VISIBLE_DEVICES, else 0..count-1."""
    preset = env.get("CUDA_VISIBLE_DEVICES")
    if preset is not None and preset.strip():
        return [d.strip() for d in preset.split(",") if d.strip()]
    if preset is not None:  # set empty: nothing is visible
        return []
    if env.get("HALSAL_GPU_COUNT"):
        return [str(i) for i in range(int(env["HALSAL_GPU_COUNT"]))]
    return [str(i) for i in range(nvidia_smi_count())]


def nvidia_smi_count() -> int:
    """GPUs listed by ``nvidia-smi -L`` (0 without it); starts no CUDA in this process."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def _make_lock_folder(folder: Path, shared: bool) -> None:
    """Create ``folder``; ``shared``: world-writable and sticky (mode 1777, like /tmp), so every
    user's jobs create and open their locks there and none can delete another's."""
    if not shared:
        folder.mkdir(parents=True, exist_ok=True)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0)
    try:
        os.mkdir(folder, 0o1777)  # created with its mode at once: no moment where others cannot write
    except FileExistsError:
        pass
    finally:
        os.umask(old)
    st = folder.stat()
    if (st.st_mode & 0o1777) != 0o1777 and st.st_uid == os.getuid():
        os.chmod(folder, 0o1777)  # e.g. made by hand: mend it where we may


def _open_lock(path: Path):
    """The lock file at ``path``, opened (created mode 0666 where missing). An existing file is
    opened without O_CREAT (fs.protected_regular refuses O_CREAT on another user's file in a
    sticky folder), read-only where it is not writable: an flock needs no write access."""
    while True:
        try:
            return os.fdopen(os.open(path, os.O_RDWR), "r+")
        except FileNotFoundError:
            pass
        except PermissionError:
            return os.fdopen(os.open(path, os.O_RDONLY), "r")
        old = os.umask(0)
        try:
            return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), "r+")
        except FileExistsError:  # another job created it just now: open theirs
            continue
        finally:
            os.umask(old)


def _try_lock(path: Path):
    try:
        fh = _open_lock(path)
    except PermissionError as exc:
        raise HalsalError(f"cannot open the GPU slot lock {path} ({exc.strerror}): every user of this machine's "
                          f"GPUs must be able to create and open files in {path.parent} (mode 1777: "
                          f"`chmod 1777 {path.parent}` by its owner), or set HALSAL_GPU_LOCK_DIR to a folder "
                          "shared by all of them") from exc
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    if fh.writable():  # who holds it, for the waiting message of the next job
        fh.seek(0), fh.truncate(), fh.write(f"pid {os.getpid()} uid {os.getuid()}\n"), fh.flush()
    return fh


def _holders(folder: Path, devices: list[str]) -> str:
    held = []
    for dev in devices:
        try:
            held.append(f"GPU {dev}: {(folder / f'gpu{dev}.lock').read_text().strip() or '?'}")
        except OSError:
            pass
    return "; ".join(held)


def claim_gpus(n: int, env=os.environ, poll_s: float = 1.0, log=None) -> str:
    """Point this process (and its children) at ``n`` GPUs of its own; returns the new
    ``CUDA_VISIBLE_DEVICES`` (see the module doc). Call before torch or DALI start CUDA."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if n <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
        log("gpus: resources.gpu is 0: GPUs hidden from this job (CUDA_VISIBLE_DEVICES='')")
        return ""
    devices = visible_devices(env)
    if not devices:  # nothing to share out; the device check names the problem
        log("gpus: no GPU found to claim (no CUDA_VISIBLE_DEVICES, no GPU in `nvidia-smi -L`)")
        return env.get("CUDA_VISIBLE_DEVICES", "")
    own = slurm_owns_gpus(env, devices)
    if own and len(devices) <= n:  # the job's whole allocation: nothing to share out, nothing to lock
        if env.get("CUDA_VISIBLE_DEVICES"):
            log(f"gpus: SLURM job {env['SLURM_JOB_ID']}: using its allocation CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}")
        else:
            log(f"gpus: SLURM job {env['SLURM_JOB_ID']}: using its allocation, the {len(devices)} GPU(s) its "
                "device cgroup shows (SLURM set no CUDA_VISIBLE_DEVICES)")
        return env.get("CUDA_VISIBLE_DEVICES", "")
    if env.get("SLURM_JOB_ID") and not own:
        log(f"gpus: SLURM job {env['SLURM_JOB_ID']} sees {len(devices)} GPUs but was given {slurm_allocated(env)}, "
            "and SLURM set no CUDA_VISIBLE_DEVICES: this node does not isolate its GPUs; taking a free one "
            "by the machine-wide locks")
    if n > len(devices):
        raise HalsalError(f"resources.gpu is {n} but this job can use only {len(devices)} GPU(s) "
                          f"({','.join(devices)}): lower resources.gpu")
    folder = lock_dir(env, devices)
    try:
        _make_lock_folder(folder.parent if own else folder, shared=not env.get("HALSAL_GPU_LOCK_DIR"))
        if own:
            folder.mkdir(exist_ok=True)  # private to the SLURM job: the job's user's own
    except OSError as exc:
        raise HalsalError(f"cannot create the GPU slot lock folder {folder} ({exc.strerror}): set "
                          "HALSAL_GPU_LOCK_DIR to a folder every user of this machine's GPUs can write") from exc
    waited = False
    while True:
        got = []
        for dev in devices:
            fh = _try_lock(folder / f"gpu{dev}.lock")
            if fh is not None:
                got.append((dev, fh))
                if len(got) == n:
                    break
        if len(got) == n:
            break
        for _, fh in got:  # all or nothing: never sit on part of a request
            fh.close()
        if not waited:
            log(f"gpus: all {len(devices)} GPU slots in {folder} are taken ({_holders(folder, devices)}); "
                "waiting for one (other jobs, maybe another user's, hold them; or the profile's gpu= is above "
                "the GPU count)")
            waited = True
        time.sleep(poll_s)
    _held.extend(fh for _, fh in got)
    chosen = ",".join(dev for dev, _ in got)
    env["CUDA_VISIBLE_DEVICES"] = chosen
    log(f"gpus: this job runs on GPU {chosen} of {','.join(devices)} (CUDA_VISIBLE_DEVICES={chosen}; slot locks in {folder})")
    return chosen


def release_gpus() -> None:
    while _held:
        _held.pop().close()


# --- can torch / DALI use a GPU? --------------------------------------------------------------

def torch_gpu_reason() -> str | None:
    """None when torch can run CUDA here, else why not (first line of torch's own error)."""
    import torch

    if torch.cuda.is_available():
        return None
    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU-only build"
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return "CUDA_VISIBLE_DEVICES is empty (this job was given no GPU: resources.gpu 0)"
    try:
        torch.cuda.init()
    except Exception as exc:  # e.g. "Found no NVIDIA driver", "The NVIDIA driver on your system is too old"
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot start CUDA: {str(exc).splitlines()[0].split('. Please')[0]}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"


def dali_gpu_reason() -> str | None:
    from halsal.data.decode import gpu_reason

    return gpu_reason()


def gpu_error(asked: str, torch_reason: str | None, dali_reason: str | None) -> HalsalError:
    parts = [f"torch: {torch_reason or 'sees a GPU'}", f"DALI: {dali_reason or 'sees a GPU'}"]
    return HalsalError(f"{asked}, but no usable GPU was found ({'; '.join(parts)}). {NEEDS}; {CPU_HINT}")


def resolve_device(name: str = "auto", gpus: int | None = None):
    """The torch device of a training job. ``gpus``: the job's ``resources.gpu`` (None: not run
    by the workflow). Asking for a GPU (``cuda``, or ``gpus > 0``) where torch cannot use one
    raises the error above instead of training on the CPU."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" and gpus == 0:
        raise HalsalError("train.device is 'cuda' but resources.gpu is 0, so the job was scheduled as a CPU job and "
                          "its GPUs are hidden (CUDA_VISIBLE_DEVICES=''): set resources.gpu: 1 (and the profile's "
                          "gpu= to your GPU count), or train.device: auto or cpu")
    if gpus == 0:  # a CPU job (resources.gpu: 0): the CPU, whatever torch sees (claim_gpus hides the GPUs too)
        return torch.device("cpu") if name == "auto" else torch.device(name)
    if name == "cuda" or (gpus or 0) > 0:
        reason = torch_gpu_reason()
        if reason:
            asked = (f"train.device is {name!r}" + (f" and resources.gpu is {gpus}" if gpus else ""))
            raise gpu_error(asked, reason, dali_gpu_reason())
        return torch.device("cuda")
    if name != "auto":
        return torch.device(name)
    if not torch.cuda.is_available() and gpus is None and Path("/dev/nvidia0").exists():
        print(f"WARNING: train.device 'auto' trains on the CPU although this machine has an NVIDIA device "
              f"({torch_gpu_reason()}). {NEEDS}", file=sys.stderr, flush=True)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_decode_backend(backend: str, gpus: int | None = None) -> str:
    """The decode backend of a prepare job. With ``gpus > 0`` and ``auto``: DALI's GPU decoder
    (probed on a test image); where it cannot run, the job stops if torch cannot use the GPU
    either, and otherwise decodes on the CPU with a warning (the GPU works, DALI does not)."""
    from halsal.data import decode

    if backend != "auto" or not gpus:
        return _log_backend(decode.resolve_backend(backend), backend)
    reason = decode.gpu_reason()
    if reason is None:
        try:
            decode.check_gpu_decoder(0)
        except decode.GpuDecoderError as exc:
            reason = str(exc)
    if reason is None:
        return _log_backend("dali-gpu", backend)
    torch_reason = torch_gpu_reason()
    if torch_reason:
        raise gpu_error(f"data.decode_backend is 'auto' and resources.gpu is {gpus}", torch_reason, reason)
    fallback = "dali-cpu" if decode.dali_available() else "torchvision"
    print(f"WARNING: torch sees the GPU but DALI cannot decode on it ({reason}); decoding with {fallback} on the "
          "CPU (set data.decode_backend: dali-cpu to say so in the config)", file=sys.stderr, flush=True)
    return _log_backend(fallback, backend)


def _log_backend(chosen: str, asked: str) -> str:
    print(f"decode backend: {chosen} (data.decode_backend: {asked}; "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})", flush=True)
    return chosen


# --- what ran where, for the logs and metrics.json ----------------------------------------------

def describe_device(device) -> dict:
    """``device``, ``device_name`` and ``cuda_visible_devices`` of a job, for its records."""
    out = {"device": str(device), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        out["device_name"] = torch.cuda.get_device_name(device)
    else:
        out["device_name"] = "cpu"
    return out


def run_record(device, prepared=None) -> dict:
    """What a training job writes into metrics.json / its Step-0/1 JSON: the resolved device
    and the decode backend that made the image cache it trained on."""
    return {**describe_device(device), "decode_backend": decode_backend_of(prepared) if prepared else None}


def decode_backend_of(prepared) -> str | None:
    """The decode backend that wrote a prepared cache (its prepare.json), None if unknown."""
    try:
        return json.loads((Path(prepared) / "prepare.json").read_text()).get("backend")
    except (OSError, ValueError, TypeError):
        return None


def job_device(name: str, gpus: int | None, prepared=None):
    """:func:`resolve_device`, with the resolved device written to the job's log."""
    device = resolve_device(name, gpus)
    print(device_line(device, prepared), flush=True)
    return device


def device_line(device, prepared=None) -> str:
    d = describe_device(device)
    line = f"device: {d['device']} ({d['device_name']}; CUDA_VISIBLE_DEVICES={d['cuda_visible_devices']})"
    if prepared is not None:
        line += f"; decode backend of the cache: {decode_backend_of(prepared) or 'unknown'}"
    return line
