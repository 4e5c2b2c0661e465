"""Several fine-tuning runs per process (GitHub issue 11): a batch job equals its runs trained
one by one, and a job killed after some runs keeps them: run again, it restores their
metrics.json from the completion records instead of training them again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from halsal.data.datasets import read_index
from halsal.data.splits import make_split
from halsal.io import write_tsv
from halsal.train import records, steps
from halsal.train.loop import OptimConfig

REPO = Path(__file__).resolve().parents[1]
CFG = OptimConfig(epochs=2, lr=0.01, batch_size=4, checkpoint_seconds=0)
# Three runs over two seeds (two split files), as one job of the `finetune` rule would hold.
RUNS = [("1", 0), ("2", 0), ("K", 1)]
# Depend on the machine, not on the run.
VOLATILE = {"wall_seconds"}


@pytest.fixture(scope="module")
def splits(tiny, tmp_path_factory):
    """seed0 (the fixture's) and seed1 split files of the tiny "fine" dataset."""
    root = tmp_path_factory.mktemp("splits")
    write_tsv(root / "seed0.tsv", pd.read_csv(tiny / "fine" / "seed0.tsv", sep="\t", keep_default_na=False))
    write_tsv(root / "seed1.tsv", make_split(read_index(tiny / "fine" / "index.tsv"), 1, max_k=2)[0])
    return root


def _inputs(tiny, method="approach_b"):
    return steps.load_finetune_inputs(arch="alexnet", method=method, variant="d4-pool2-eq2", dataset="fine",
                                      prepared=tiny / "fine" / "prepared", backbone_pt=tiny / "backbone.pt",
                                      saliency_pt=tiny / "sal.pt", cfg=CFG, input_size=64, synthetic=True)


def _runs(splits, root):
    return [steps.FinetuneRun(k, seed, splits / f"seed{seed}.tsv", root / f"k{k}" / f"seed{seed}") for k, seed in RUNS]


def _metrics(run_dir):
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {key: value for key, value in m.items() if key not in VOLATILE}


def _history(run_dir):
    return pd.read_csv(Path(run_dir) / "history.tsv", sep="\t").drop(columns=["seconds", "val_seconds"])


@pytest.fixture(scope="module")
def reference(tiny, splits, tmp_path_factory):
    """The uninterrupted batch job."""
    root = tmp_path_factory.mktemp("uninterrupted")
    results = steps.finetune_batch(_inputs(tiny), _runs(splits, root))
    assert [restored for _, restored in results] == [False, False, False]
    return root


def test_batch_equals_runs_trained_one_per_call(tiny, splits, reference, tmp_path):
    # The last run alone, through the single-run entry point (a fresh model, seed and loader):
    # the runs before it in the same process do not change it.
    k, seed = RUNS[-1]
    alone = steps.finetune(arch="alexnet", method="approach_b", variant="d4-pool2-eq2", k=k, seed=seed,
                           dataset="fine", prepared=tiny / "fine" / "prepared", split_tsv=splits / f"seed{seed}.tsv",
                           backbone_pt=tiny / "backbone.pt", saliency_pt=tiny / "sal.pt", out_dir=tmp_path,
                           cfg=CFG, input_size=64, synthetic=True)
    ref_dir = reference / f"k{k}" / f"seed{seed}"
    assert _metrics(tmp_path) == _metrics(ref_dir)
    pd.testing.assert_frame_equal(_history(tmp_path), _history(ref_dir))
    # metrics.json names the backbone's weights (backbone.json), the runs table's `weights` column.
    assert alone["weights"] == "scratch"
    record = json.loads((ref_dir / records.RECORD).read_text())
    assert record["metrics"] == json.loads((ref_dir / "metrics.json").read_text())
    assert set(record["files"]) == {"saliency.npz", "predictions.tsv", "history.tsv"}


def test_failed_job_keeps_finished_runs_and_the_rerun_does_not_retrain_them(tiny, splits, reference, tmp_path,
                                                                            monkeypatch):
    runs = _runs(splits, tmp_path)
    real_fit = steps.fit
    calls = []

    def fit_that_dies_in_run_3(*args, **kw):
        calls.append(kw["desc"])
        if len(calls) == 3:
            raise RuntimeError("killed")  # the job dies during its third run
        return real_fit(*args, **kw)

    monkeypatch.setattr(steps, "fit", fit_that_dies_in_run_3)
    with pytest.raises(RuntimeError, match="killed"):
        steps.finetune_batch(_inputs(tiny), runs)
    monkeypatch.setattr(steps, "fit", real_fit)
    assert [(r.out_dir / "metrics.json").is_file() for r in runs] == [True, True, False]
    kept = {r.out_dir: (r.out_dir / "history.tsv").stat().st_mtime_ns for r in runs[:2]}
    digests = {r.out_dir: {n: records.file_sha256(r.out_dir / n) for n in records.RUN_FILES} for r in runs[:2]}
    # Snakemake deletes the declared outputs (every file of each run) of a failed job before the
    # re-run; the records' hard links in .kept/ survive.
    for r in runs:
        for name in ("metrics.json", *records.RUN_FILES):
            (r.out_dir / name).unlink(missing_ok=True)

    trained = []
    real_run = steps.finetune_run
    monkeypatch.setattr(steps, "finetune_run", lambda inputs, run: trained.append(run) or real_run(inputs, run))
    log = []
    results = steps.finetune_batch(_inputs(tiny), runs, log=log.append)
    assert [restored for _, restored in results] == [True, True, False]
    assert trained == runs[2:]  # only the run the failure interrupted was trained
    assert "restored" in log[0] and "restored" in log[1] and log[2].endswith("training")
    for run_dir, mtime in kept.items():
        assert (run_dir / "history.tsv").stat().st_mtime_ns == mtime  # put back as it was, not rewritten
        assert {n: records.file_sha256(run_dir / n) for n in records.RUN_FILES} == digests[run_dir]
    for r, (metrics, _) in zip(runs, results):
        ref_dir = reference / r.out_dir.relative_to(tmp_path)
        assert _metrics(r.out_dir) == _metrics(ref_dir)
        assert {k: v for k, v in metrics.items() if k not in VOLATILE} == _metrics(ref_dir)
        pd.testing.assert_frame_equal(_history(r.out_dir), _history(ref_dir))
        pd.testing.assert_frame_equal(pd.read_csv(r.out_dir / "predictions.tsv", sep="\t"),
                                      pd.read_csv(ref_dir / "predictions.tsv", sep="\t"))


def test_a_record_that_no_longer_matches_retrains(tiny, splits, reference, tmp_path, monkeypatch):
    run = _runs(splits, tmp_path)[0]
    steps.finetune_batch(_inputs(tiny), [run])
    inputs = _inputs(tiny)
    assert steps.restore_run(inputs, run) is not None
    # Other settings (here the learning rate) or a changed output file: trained again.
    other = steps.load_finetune_inputs(arch="alexnet", method="approach_b", variant="d4-pool2-eq2", dataset="fine",
                                       prepared=tiny / "fine" / "prepared", backbone_pt=tiny / "backbone.pt",
                                       saliency_pt=tiny / "sal.pt", cfg=OptimConfig(**{**CFG.__dict__, "lr": 0.02}),
                                       input_size=64, synthetic=True)
    assert steps.restore_run(other, run) is None
    write_tsv(run.out_dir / "history.tsv", _history(run.out_dir).head(1))
    assert steps.restore_run(inputs, run) is None


def _cli(tiny, splits, root):
    cmd = [sys.executable, "-m", "halsal", "finetune", "--arch", "alexnet", "--method", "approach_b",
           "--variant", "d4-pool2-eq2", "--dataset", "fine", "--prepared", str(tiny / "fine" / "prepared"),
           "--backbone", str(tiny / "backbone.pt"), "--saliency", str(tiny / "sal.pt"), "--synthetic",
           "--epochs", "2", "--lr", "0.01", "--batch-size", "4", "--input-size", "64", "--checkpoint-seconds", "0",
           "--device", "cpu"]
    for k, seed in RUNS:
        cmd += ["--run", k, str(seed), str(splits / f"seed{seed}.tsv"), str(root / f"k{k}" / f"seed{seed}")]
    return cmd


@pytest.mark.slow
def test_sigkilled_batch_job_resumes_without_retraining(tiny, splits, reference, tmp_path):
    """The `halsal finetune` process of a 3-run job, SIGKILLed once its second run is done."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "killed"
    dirs = [out / f"k{k}" / f"seed{seed}" for k, seed in RUNS]
    proc = subprocess.Popen(_cli(tiny, splits, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (dirs[1] / "metrics.json").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the job ended (or hung) before its second run finished")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (dirs[2] / "metrics.json").exists():
        pytest.skip("the third run finished before the kill landed (machine too fast for this tiny run)")
    for d in dirs:  # as Snakemake does with the declared outputs of a failed job
        (d / "metrics.json").unlink(missing_ok=True)
    again = subprocess.run(_cli(tiny, splits, out), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert "restored" in lines[0] and "restored" in lines[1] and lines[2].endswith("training"), again.stdout
    for d in dirs:  # the same as the uninterrupted job (in this process, same thread count)
        assert _metrics(d) == _metrics(reference / d.relative_to(out))
        pd.testing.assert_frame_equal(_history(d), _history(reference / d.relative_to(out)))
