"""The GPU path, checked where there is no GPU (issue 18): one GPU per job, a loud stop where a
GPU is asked for and none works, the resolved device in metrics.json, a cache that reaches the
device as one copy, and bf16 gated on the compute capability. Devices are simulated
(HALSAL_GPU_COUNT, mocks, the meta device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from halsal import gpu
from halsal.errors import HalsalError

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import os, sys, time
sys.path.insert(0, {repo!r})
from halsal.gpu import claim_gpus
claim_gpus(1, poll_s=0.05)
print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
while not os.path.exists({release!r}):
    time.sleep(0.05)
"""


def _job(tmp_path, name, env):
    """A GPU job (its claim, as `python -m halsal --gpus 1` makes it) that holds its GPU until released."""
    code = HOLD.format(repo=str(REPO), release=str(tmp_path / f"release-{name}"))
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=err)


def _wait_for(path: Path, text: str | None = None, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = path.read_text() if path.exists() else ""
        if (text in got) if text else got.strip():
            return got.strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not show {text or 'a line'} within {timeout} s: {got!r}")


def test_two_jobs_sharing_two_gpus_get_different_devices(tmp_path):
    """Two jobs that Snakemake runs side by side under `--resources gpu=2` (two GPUs, simulated):
    each gets its own device; a third waits until one of them ends, then takes its GPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(HALSAL_GPU_COUNT="2", HALSAL_GPU_LOCK_DIR=str(tmp_path / "locks"))
    jobs = {name: _job(tmp_path, name, env) for name in "ab"}
    try:
        dev = {name: _wait_for(tmp_path / f"{name}.out") for name in "ab"}
        assert sorted(dev.values()) == ["0", "1"]
        jobs["c"] = _job(tmp_path, "c", env)
        _wait_for(tmp_path / "c.err", "waiting")  # both GPUs busy: the third job runs on neither
        assert (tmp_path / "c.out").read_text() == ""
        (tmp_path / "release-a").touch()
        assert _wait_for(tmp_path / "c.out") == dev["a"]  # a's GPU, once a has ended
    finally:
        for name in jobs:
            (tmp_path / f"release-{name}").touch()
        for proc in jobs.values():
            proc.wait(timeout=30)


def test_slurm_allocation_is_kept_and_only_narrowed_inside_the_job(tmp_path):
    logs = []
    one = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3", "HALSAL_GPU_LOCK_DIR": str(tmp_path)}
    assert gpu.claim_gpus(1, one, log=logs.append) == "3" and one["CUDA_VISIBLE_DEVICES"] == "3"
    assert not any(tmp_path.iterdir())  # its whole allocation: no locks, nothing overridden
    # A group job with two GPUs running two members at once: one GPU of the allocation each,
    # locks private to the SLURM job (another job on the node also sees its GPUs as 0,1).
    envs = [{"SLURM_JOB_ID": "8", "CUDA_VISIBLE_DEVICES": "0,1", "HALSAL_GPU_LOCK_DIR": str(tmp_path)} for _ in range(2)]
    try:
        got = [gpu.claim_gpus(1, e, log=logs.append) for e in envs]
        assert sorted(got) == ["0", "1"]
        assert sorted(p.name for p in (tmp_path / "slurm-8").iterdir()) == ["gpu0.lock", "gpu1.lock"]
    finally:
        gpu.release_gpus()


def test_cpu_only_config_hides_the_gpus_and_auto_means_cpu():
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpu.claim_gpus(0, env, log=lambda m: None) == "" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert gpu.visible_devices(env) == []
    assert gpu.resolve_device("auto", 0) == torch.device("cpu")
    with pytest.raises(HalsalError, match="resources.gpu is 0"):
        gpu.resolve_device("cuda", 0)


def test_auto_with_no_gpus_is_the_cpu_even_where_torch_sees_a_gpu(monkeypatch):
    """Issue 26, item 1: the contract of ``gpus == 0`` does not depend on claim_gpus having
    emptied CUDA_VISIBLE_DEVICES before torch started (on a GPU machine torch still sees one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu.resolve_device("auto", 0) == torch.device("cpu")
    assert gpu.resolve_device("cpu", 0) == torch.device("cpu")
    assert gpu.resolve_device("auto", None) == torch.device("cuda")  # outside the workflow: torch decides


def _gpu_rules() -> dict:
    """{rule name: shell command} of every rule that requests GPUs, as Snakemake itself parses
    the workflow (the demo config)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
                                config_settings=ConfigSettings(configfiles=[REPO / "config/config.yaml"]),
                                snakefile=REPO / "Snakefile", workdir=REPO)._workflow
        return {rule.name: rule.shellcmd for rule in workflow.rules if "gpu" in rule.resources}


def test_every_gpu_rule_claims_its_gpus():
    """Each rule that requests GPUs runs `python -m halsal --gpus {resources.gpu}`, and every rule
    that runs a GPU step (prepare, Steps 0-2, the probe) requests them."""
    rules = _gpu_rules()
    assert {"prepare", "backbone", "pretrain_saliency", "finetune", "probe"} <= set(rules)
    for name, shell in rules.items():
        assert shell.startswith("python -m halsal --gpus {resources.gpu} "), name


def test_every_gpu_rule_goes_to_the_slurm_gpu_partition():
    """Issue 26, item 7: a rule that requests GPUs but is missing from the SLURM profile's
    set-resources is sent to the CPU partition with --gpus=1."""
    import yaml

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())["set-resources"]
    for name in _gpu_rules():
        assert profile.get(name, {}).get("slurm_partition") == "gpu", f"rule {name}"


@pytest.fixture
def no_gpu(monkeypatch):
    """torch with a CUDA build and a driver too old for it; DALI sees no GPU."""
    from halsal.data import decode as D

    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12040).\nmore text")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "init", init)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(D, "gpu_reason", lambda: "no CUDA GPU visible to DALI")


@pytest.mark.parametrize("device, gpus", [("auto", 1), ("cuda", None), ("cuda", 1)])
def test_asking_for_a_gpu_without_one_is_an_error_naming_the_cause(no_gpu, device, gpus):
    with pytest.raises(HalsalError) as err:
        gpu.resolve_device(device, gpus)
    msg = str(err.value)
    assert "driver on your system is too old (found version 12040)" in msg  # the cause
    assert "DALI: no CUDA GPU visible to DALI" in msg
    assert "CUDA 13.0" in msg and "driver >= 580" in msg  # what the pinned builds need
    assert "train.device: cpu" in msg and "resources.gpu: 0" in msg  # the way to the CPU on purpose
    assert gpu.resolve_device("cpu", gpus) == torch.device("cpu")  # on purpose: allowed


def test_prepare_asking_for_a_gpu_without_one_is_an_error(no_gpu):
    with pytest.raises(HalsalError, match=r"decode_backend is 'auto' and resources.gpu is 1.*driver >= 580"):
        gpu.resolve_decode_backend("auto", 1)
    assert gpu.resolve_decode_backend("auto", 0) in ("dali-cpu", "torchvision")
    assert gpu.resolve_decode_backend("dali-cpu", 1) == "dali-cpu"


def test_prepare_decodes_on_the_cpu_where_only_dali_fails(monkeypatch, capsys):
    from halsal.data import decode as D

    def broken(device_id=0):
        raise D.GpuDecoderError("DALI's GPU (mixed) decoder failed on a test image (nvJPEG error)")

    monkeypatch.setattr(D, "gpu_reason", lambda: None)
    monkeypatch.setattr(D, "check_gpu_decoder", broken)
    monkeypatch.setattr(gpu, "torch_gpu_reason", lambda: None)  # torch's GPU works
    assert gpu.resolve_decode_backend("auto", 1) == ("dali-cpu" if D.dali_available() else "torchvision")
    err = capsys.readouterr().err
    assert "torch sees the GPU but DALI cannot decode on it" in err and "nvJPEG error" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the no-GPU error cannot be provoked")
def test_cli_job_asking_for_a_gpu_on_a_machine_without_one_stops(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HALSAL_GPU_LOCK_DIR": str(tmp_path / "locks"),
           "HALSAL_GPU_COUNT": "0"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "halsal", "--gpus", "1", "finetune", "--arch", "alexnet", "--method", "baseline",
           "--variant", "d4-pool2-eq2", "--dataset", "x", "--prepared", str(tmp_path), "--backbone", "b.pt",
           "--k", "1", "--seed", "0", "--split", "s.tsv", "--out-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "train.device is 'auto' and resources.gpu is 1, but no usable GPU was found" in proc.stderr
    assert "driver >= 580" in proc.stderr and "train.device: cpu" in proc.stderr
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_resolved_device_and_decode_backend_are_in_metrics_json(tiny, tmp_path):
    from halsal.train.loop import OptimConfig
    from halsal.train.steps import finetune

    m = finetune(arch="alexnet", method="baseline", variant="d4-pool2-eq2", k=1, seed=0, dataset="fine",
                 prepared=tiny / "fine" / "prepared", split_tsv=tiny / "fine" / "seed0.tsv",
                 backbone_pt=tiny / "backbone.pt", out_dir=tmp_path / "run", input_size=64,
                 cfg=OptimConfig(epochs=1, lr=0.01, batch_size=8), device=gpu.resolve_device("cpu"))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["device"] == m["device"] == "cpu" and written["device_name"] == "cpu"
    assert written["decode_backend"] == "pil"  # the backend that made the cache (tiny: prepare backend='pil')
    assert "cuda_visible_devices" in written
    for step in ("backbone.json", "sal.json"):  # Steps 0 and 1 record theirs too
        info = json.loads((tiny / step).read_text())
        assert info["device"] == "cpu" and info["decode_backend"] == "pil"


class _DeviceAllocations:
    """Every tensor that an aten op creates on ``device_type`` (views and in-place results excluded)."""

    def __init__(self, device_type: str):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self
        self.fresh: list[tuple[str, int]] = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                for ret, o in zip(func._schema.returns, outs):
                    if isinstance(o, torch.Tensor) and o.device.type == device_type and ret.alias_info is None:
                        outer.fresh.append((str(func), o.numel() * o.element_size()))
                return out

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_loaded_cache_holds_one_copy(tmp_path, monkeypatch):
    """The cache reaches a non-CPU device (meta: allocations without memory) as ONE NCHW tensor:
    no NHWC upload beside the permuted copy; the SMIC maps likewise. On the CPU the values are
    the NCHW permute of the cache, also from a read-only memory map, in several chunks."""
    from halsal.train import device_cache
    from halsal.train.device_cache import DeviceImages
    from halsal.train.inputs import DeviceImagesWithMaps

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    maps = rng.integers(0, 256, (10, 40, 40), dtype=np.uint8)
    labels = np.arange(10) % 3
    monkeypatch.setattr(device_cache, "UPLOAD_CHUNK_BYTES", 3 * images[0].nbytes)  # 4 chunks
    meta = torch.device("meta")
    with _DeviceAllocations("meta") as seen:
        data = DeviceImages(images, labels, meta, 32)
    big = [b for _, b in seen.fresh if b >= images[0].nbytes]
    assert big == [images.nbytes], seen.fresh  # exactly one image-sized allocation on the device
    assert sum(b for _, b in seen.fresh) <= images.nbytes + labels.size * 8 + 1024  # nothing else of note
    assert data.images.shape == (10, 3, 40, 40) and data.images.is_contiguous()
    with _DeviceAllocations("meta") as seen:
        DeviceImagesWithMaps(images, maps, labels, meta, 32)
    assert sorted(b for _, b in seen.fresh if b >= maps[0].nbytes) == [maps.nbytes, images.nbytes]

    np.save(tmp_path / "images.npy", images)
    mm = np.load(tmp_path / "images.npy", mmap_mode="r")
    cpu = DeviceImages(mm, labels, torch.device("cpu"), 32)
    assert cpu.images.is_contiguous() and torch.equal(cpu.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert cpu.images.untyped_storage().nbytes() == images.nbytes  # its own storage, one copy


def test_bf16_is_gated_on_the_compute_capability(monkeypatch):
    from halsal.train.loop import check_precision

    asked = []
    cap = {"value": (7, 5)}

    def capability(device=None):
        asked.append(device)
        return cap["value"]

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # emulation says yes
    cuda = torch.device("cuda")
    with pytest.raises(HalsalError, match=r"Tesla T4 has compute capability 7\.5; bfloat16 needs 8\.0"):
        check_precision(cuda, "bf16")
    assert asked and asked[0] == cuda  # the capability of the training device was read
    cap["value"] = (7, 0)  # V100
    with pytest.raises(HalsalError, match="7.0"):
        check_precision(cuda, "bf16")
    for ok in ((8, 0), (9, 0)):  # A100, H100
        cap["value"] = ok
        check_precision(cuda, "bf16")
    cap["value"] = (6, 1)
    check_precision(cuda, "fp32")  # fp32 runs anywhere


def test_report_shows_device_and_decode_backend_per_stage(tmp_path):
    import pandas as pd

    from halsal.report.devices import devices_md

    rows = []
    for i, (method, device, name) in enumerate([("baseline", "cuda", "NVIDIA H200"), ("baseline", "cuda", "NVIDIA H200"),
                                                 ("approach_b", "cpu", "cpu")]):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"device": device, "device_name": name,
                                                      "decode_backend": "dali-gpu"}))
        rows.append({"dataset": "flowers102", "method": method, "run_dir": str(run)})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.tsv", sep="\t", index=False)
    (tmp_path / "backbone.json").write_text(json.dumps({"arch": "alexnet", "weights": "imagenet"}))  # an old record
    (tmp_path / "sal.json").write_text(json.dumps({"arch": "alexnet", "variant": "d4-pool2-eq2", "device": "cuda",
                                                   "device_name": "NVIDIA H200", "decode_backend": "dali-cpu"}))
    md = devices_md(tmp_path / "runs.tsv", [tmp_path / "backbone.json"], [tmp_path / "sal.json"])
    assert "| Step 0 (alexnet) | 1 | not recorded | not recorded |" in md
    assert "| Step 1 (alexnet, d4-pool2-eq2) | 1 | cuda (NVIDIA H200) | dali-cpu |" in md
    assert "| prepare: flowers102 | 1 | — | dali-gpu |" in md
    assert "| finetune: baseline | 2 | cuda (NVIDIA H200) | dali-gpu |" in md
    assert "| finetune: approach_b | 1 | cpu | dali-gpu |" in md


HOLD_AS = """
import os, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from halsal import gpu
{prelude}
gpu.claim_gpus({n}, poll_s=0.05)
print(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), flush=True)
while not os.path.exists({release!r}):
    time.sleep(0.05)
"""


def _job_as(tmp_path, name, env, prelude="", n=1):
    """:func:`_job`, with ``prelude`` run before the claim (e.g. to play another user)."""
    code = HOLD_AS.format(repo=str(REPO), prelude=prelude, n=n, release=str(tmp_path / f"release-{name}"))
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=err)


def _end(tmp_path, jobs):
    for name in jobs:
        (tmp_path / f"release-{name}").touch()
    for proc in jobs.values():
        proc.wait(timeout=30)


def _bare_env(**extra):
    """This process's environment without a GPU, SLURM job or lock folder of its own, plus ``extra``."""
    drop = ("CUDA_VISIBLE_DEVICES", "HALSAL_GPU_LOCK_DIR", "HALSAL_GPU_COUNT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    return {**env, **extra}


def test_two_users_jobs_get_different_gpus(tmp_path):
    """Issue 26, item 5: the jobs of two users of one workstation (two GPUs, simulated) share the
    GPUs out by one machine-wide lock folder (mode 1777, lock files 0666 that every user can
    open), not one folder per user. Each job plays its own uid; the folder is tmp_path/shared in
    place of /tmp/halsal-gpu-locks. A third user's job waits for a GPU, and gets the first one freed."""
    shared = tmp_path / "shared"
    env = _bare_env(HALSAL_GPU_COUNT="2")

    def user(uid):
        return f"gpu.SHARED_LOCK_DIR = Path({str(shared)!r}); os.getuid = lambda: {uid}"

    jobs = {"alice": _job_as(tmp_path, "alice", env, user(1001)), "bob": _job_as(tmp_path, "bob", env, user(1002))}
    try:
        dev = {name: _wait_for(tmp_path / f"{name}.out") for name in jobs}
        assert sorted(dev.values()) == ["0", "1"], dev
        assert shared.stat().st_mode & 0o7777 == 0o1777  # every user may add locks, none may delete another's
        for d in "01":
            assert (shared / f"gpu{d}.lock").stat().st_mode & 0o777 == 0o666  # every user can open it
        assert "uid 1001" in (shared / f"gpu{dev['alice']}.lock").read_text()  # who holds it
        jobs["carol"] = _job_as(tmp_path, "carol", env, user(1003))
        waiting = _wait_for(tmp_path / "carol.err", "waiting")
        assert "uid 1001" in waiting and "uid 1002" in waiting  # the message names the holders
        assert (tmp_path / "carol.out").read_text() == ""
        (tmp_path / "release-alice").touch()
        assert _wait_for(tmp_path / "carol.out") == dev["alice"]
    finally:
        _end(tmp_path, jobs)


def test_slurm_jobs_without_cuda_visible_devices_do_not_wait_on_each_other(tmp_path):
    """Issue 26, item 6: SLURM sets no CUDA_VISIBLE_DEVICES (gres without File=; the job's device
    cgroup shows it its own GPU, as GPU 0). Two such jobs on one node, sharing the node's lock
    folder, both start at once on their GPU 0, and neither waits for the other."""
    locks = tmp_path / "locks"
    jobs = {}
    try:
        for job in ("101", "102"):
            env = _bare_env(HALSAL_GPU_COUNT="1", HALSAL_GPU_LOCK_DIR=str(locks), SLURM_JOB_ID=job,
                            SLURM_GPUS_ON_NODE="1")
            jobs[job] = _job_as(tmp_path, job, env)
        got = {job: _wait_for(tmp_path / f"{job}.out", timeout=30) for job in jobs}  # both have started
        for job in jobs:
            err = (tmp_path / f"{job}.err").read_text()
            assert "waiting" not in err and "its device cgroup shows" in err, err
        assert got == {"101": "unset", "102": "unset"}  # each its whole allocation, left as SLURM set it
    finally:
        _end(tmp_path, jobs)


def test_slurm_group_jobs_without_cuda_visible_devices_share_out_their_own_gpus(tmp_path):
    """Issue 26, item 6: two SLURM jobs of two GPUs each on one node, without CUDA_VISIBLE_DEVICES
    (each sees its GPUs as 0,1), each running two members at once: every member starts at once,
    the two members of a job get different GPUs, by locks private to the SLURM job."""
    locks = tmp_path / "locks"
    jobs = {}
    try:
        for job in ("201", "202"):
            env = _bare_env(HALSAL_GPU_COUNT="2", HALSAL_GPU_LOCK_DIR=str(locks), SLURM_JOB_ID=job,
                            SLURM_JOB_GPUS="4,5" if job == "201" else "6,7")
            for member in "ab":
                jobs[job + member] = _job_as(tmp_path, job + member, env)
        got = {name: _wait_for(tmp_path / f"{name}.out", timeout=30) for name in jobs}  # all four have started
        assert not any("waiting" in (tmp_path / f"{name}.err").read_text() for name in jobs)
        for job in ("201", "202"):
            assert sorted(got[job + m] for m in "ab") == ["0", "1"], got
            assert sorted(p.name for p in (locks / f"slurm-{job}").iterdir()) == ["gpu0.lock", "gpu1.lock"]
        assert not any(p.is_file() for p in locks.iterdir())  # nothing in the node's own folder
    finally:
        _end(tmp_path, jobs)


def test_slurm_node_that_does_not_isolate_gpus_shares_them_machine_wide(tmp_path):
    """A SLURM job that sees more GPUs than SLURM gave it (no CUDA_VISIBLE_DEVICES, no device
    cgroup): its GPU 0 is every job's GPU 0, so the jobs of the node share the GPUs out by the
    machine-wide locks, as on a workstation."""
    logs = []
    envs = [{"SLURM_JOB_ID": job, "SLURM_GPUS_ON_NODE": "1", "HALSAL_GPU_COUNT": "2",
             "HALSAL_GPU_LOCK_DIR": str(tmp_path)} for job in ("301", "302")]
    try:
        got = [gpu.claim_gpus(1, e, poll_s=0.05, log=logs.append) for e in envs]
        assert sorted(got) == ["0", "1"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu1.lock"]
        assert any("does not isolate its GPUs" in m for m in logs)
    finally:
        gpu.release_gpus()
