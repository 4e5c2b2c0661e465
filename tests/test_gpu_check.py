"""``bench/gpu_check.py`` (``make gpu-check``) on this CPU machine, with fakes (issue 26, items 2-3):
it fails with torch's reason where an NVIDIA device exists but CUDA does not start, it installs
scipy and DALI's codec libraries, and its subprocesses can import the merged ``nvidia`` namespace."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("halsal_bench_gpu_check", REPO / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- item 2: a device node without working CUDA is a failure, with torch's reason ----------------

def test_device_node_without_cuda_exits_1_with_torchs_reason(gc, monkeypatch, capsys):
    import torch

    from halsal import gpu

    reason = "torch 9.9+cu999 (CUDA 99.9) cannot start CUDA: The NVIDIA driver on your system is too old (fake)"
    monkeypatch.chdir(REPO)  # main() changes into the repository
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gc, "nvidia_device", lambda: True)
    monkeypatch.setattr(gc, "driver_version", lambda: "470.1")
    monkeypatch.setattr(gpu, "torch_gpu_reason", lambda: reason)
    assert gc.main([]) == 1
    out = capsys.readouterr().out
    assert reason in out and "FAILED" in out and "NO GPU CHECK" not in out


def test_no_nvidia_device_still_says_so_and_exits_0(gc, monkeypatch, capsys):
    import torch

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gc, "nvidia_device", lambda: False)
    assert gc.main([]) == 0
    assert "NO GPU CHECK" in capsys.readouterr().out


@pytest.mark.slow  # a fresh process that imports torch
def test_make_gpu_check_with_a_fake_nvidia_smi_exits_1(tmp_path):
    """End to end, as ``make gpu-check`` runs it: a ``nvidia-smi`` on PATH (the device), and no
    CUDA for torch (CUDA_VISIBLE_DEVICES empty, also on a GPU machine): exit 1 with the reason."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 9\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "but torch cannot use it: " in proc.stdout and "CUDA_VISIBLE_DEVICES" in proc.stdout, proc.stdout


# --- item 3: what it installs --------------------------------------------------------------------

CODECS = ("nvidia-nvjpeg", "nvidia-nvjpeg2k-cu13", "nvidia-nvtiff-cu13")


def test_packages_include_scipy_and_dalis_codec_libraries_at_the_pinned_versions(gc, tmp_path, monkeypatch):
    assert gc.PACKAGES["scipy"] == "scipy"  # halsal/data/smic_maps.py imports scipy.ndimage
    for dist in CODECS:
        assert dist in gc.PACKAGES
    pins = gc.pins()
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd[-1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(gc.subprocess, "run", fake_run)
    assert gc.fetch("3.12", dest=tmp_path) == 0
    for dist in ("scipy", *CODECS):
        assert f"{dist}=={pins[gc._norm(dist)]}" in calls, (dist, calls)


# --- item 3: the subprocesses import the merged nvidia namespace -----------------------------------

def _fake_tree(root: Path) -> tuple[Path, Path]:
    """A "machine" folder whose nvidia/ is a regular package (an empty __init__.py, as in some
    wheels), and .whl/site/<package> folders like those gpu-check installs."""
    machine = root / "machine"
    (machine / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    (machine / "nvidia" / "__init__.py").write_text("")
    (machine / "nvidia" / "machine_probe.py").write_text("WHERE = 'machine'\n")
    site = root / "whl" / "site"
    dali = site / "nvidia-dali-cuda130" / "nvidia" / "halsal_dali_probe"
    dali.mkdir(parents=True)
    (dali / "__init__.py").write_text("WHERE = 'whl'\n")
    (site / "nvidia-nvjpeg" / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    tiff = site / "nvidia-nvtiff-cu13" / "nvidia"
    (tiff / "nvtiff" / "lib").mkdir(parents=True)
    (tiff / "__init__.py").write_text("__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
    return machine, site


def test_subprocess_environment_merges_the_nvidia_namespace(gc, tmp_path, monkeypatch):
    machine, site = _fake_tree(tmp_path)
    monkeypatch.setattr(gc, "SITE", site)
    monkeypatch.setattr(gc, "BOOT", tmp_path / "whl" / "boot")
    monkeypatch.setenv("PYTHONPATH", str(machine))  # the machine's nvidia/ (with __init__.py) comes first
    env = gc.env()
    code = ("import nvidia, nvidia.halsal_dali_probe, nvidia.machine_probe; "
            "print(nvidia.halsal_dali_probe.WHERE, nvidia.machine_probe.WHERE); print(*nvidia.__path__, sep='\\n')")
    proc = subprocess.run(gc.python_cmd(code), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "whl machine"
    path = lines[1:]
    assert path.index(str(machine / "nvidia")) < path.index(str(site / "nvidia-dali-cuda130" / "nvidia"))
    # the codec libraries' folders lead LD_LIBRARY_PATH (DALI's $ORIGIN RUNPATHs miss them)
    libs = env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    for d in (site / "nvidia-nvjpeg" / "nvidia" / "cu13" / "lib", site / "nvidia-nvtiff-cu13" / "nvidia" / "nvtiff" / "lib"):
        assert str(d) in libs


def test_in_process_merge_extends_a_regular_nvidia_package(gc, tmp_path, monkeypatch):
    machine, site = _fake_tree(tmp_path)
    monkeypatch.setattr(gc, "SITE", site)
    monkeypatch.setattr(sys, "path", [str(machine), *sys.path])

    def nvidia_modules():
        return {k: v for k, v in sys.modules.items() if k == "nvidia" or k.startswith("nvidia.")}

    saved = nvidia_modules()  # e.g. the real DALI, imported by another test
    for name in saved:
        del sys.modules[name]
    try:
        gc.use_site()
        import nvidia.halsal_dali_probe as probe

        assert probe.WHERE == "whl"
        assert sys.modules["nvidia"].__file__ == str(machine / "nvidia" / "__init__.py")
    finally:
        for name in nvidia_modules():
            del sys.modules[name]
        sys.modules.update(saved)
