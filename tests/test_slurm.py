"""The workflow on a real single-node SLURM cluster on localhost, through workflow/profiles/slurm.

tests/slurm/up.sh installs munge + Slurm (Debian packages) and starts munged, slurmctld and
slurmd; tests/slurm/down.sh stops exactly those daemons by pid. The runs use the profile
unchanged; the command line adds only what this accounting-less test cluster needs: job
status from `squeue` (no slurmdbd, so no `sacct`) and a short delay before the first status
check. Skips (with the reason) only where it cannot be root or cannot install the packages.

Run: .ci/slurm.sh, or `python -m pytest tests/test_slurm.py -m slow -q -s` as root.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import assert_test_acc_is_predictions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "slurm"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
TOY = HERE / "toy" / "Snakefile"
_PROFILE = yaml.safe_load((PROFILE / "config.yaml").read_text())
# Minutes per fine-tuning run: the profile's runtime is "<minutes> * len(input.split)", one
# split file per run of the job.
FINETUNE_RUNTIME_MIN = int(re.match(r"\s*(\d+)\s*\*", str(_PROFILE["set-resources"]["finetune"]["runtime"])).group(1))
GROUP_SIZE = int(dict(g.split("=") for g in _PROFILE["group-components"])["finetune"])
# Fine-tuning jobs bundled into one SLURM job in the toy test (the profile's default is 1, as
# each real job already trains a batch of runs; users of train.finetune_batch: run raise it).
TOY_GROUP = 4
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Wall-clock bounds: the plugin hangs for good when it cannot read job states, so a run
# that outlives these fails the test instead of stalling CI.
TOY_TIMEOUT_S = 300
REAL_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running test cluster: the environment that points clients at it, and its state dir."""
    if os.environ.get("HALSAL_SLURM_TEST") != "1":
        pytest.skip("starts Slurm daemons and takes ~6 minutes: run .ci/slurm.sh (as CI does), "
                    "or set HALSAL_SLURM_TEST=1")
    if os.geteuid() != 0:
        pytest.skip("needs root to install Slurm and start slurmctld/slurmd (run .ci/slurm.sh as root)")
    state = tmp_path_factory.mktemp("slurm-state")
    env = dict(os.environ)
    env.update(
        SLURM_CONF=str(state / "slurm.conf"),
        XDG_CACHE_HOME=str(tmp_path_factory.mktemp("xdg-cache")),
        MPLCONFIGDIR=str(tmp_path_factory.mktemp("mpl")),
    )
    try:
        up = subprocess.run(["bash", str(HERE / "up.sh"), str(state)], capture_output=True,
                            text=True, timeout=600, env=env)
        print(up.stderr)
        if up.returncode == 3:
            pytest.skip(up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, f"test cluster did not come up:\n{up.stdout}\n{up.stderr}"
        yield {"env": env, "state": state}
    finally:
        down = subprocess.run(["bash", str(HERE / "down.sh"), str(state)], capture_output=True,
                              text=True, timeout=120, env=env)
        print(down.stderr)


def snakemake(cluster, snakefile, workdir, *extra, timeout):
    """Run snakemake through the slurm profile; returns (returncode, combined output)."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
        "--workflow-profile", str(PROFILE),
        # Test-cluster specifics (a site with slurmdbd needs neither):
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
        "--jobs", "4", *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cluster["env"], cwd=ROOT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the session this call started, nothing else
        out, _ = proc.communicate()
        pytest.fail(f"snakemake did not finish within {timeout} s under SLURM (hang?):\n{out[-6000:]}")
    return proc.returncode, out


def toy_config(tmp_path, **values):
    # A config file, not --config: the profile's options are appended after the command
    # line and `--config KEY=VALUE...` would swallow them.
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(values))
    return ["--configfile", str(path)]


def submitted(out):
    """SLURM job ids (and their log paths) that snakemake reported, printed for the CI log."""
    jobs = [(int(j), log) for j, log in SUBMITTED.findall(out)]
    for j, log in jobs:
        print(f"SLURM job {j}: {log}")
    return jobs


def slurm_job(cluster, job_id):
    """`scontrol show job` as a dict (the controller's record: proof the job went through sbatch)."""
    text = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True,
                          text=True, env=cluster["env"], check=True).stdout
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def submitted_in_ctld_log(cluster):
    log = (cluster["state"] / "slurmctld.log").read_text()
    return {int(j) for j in re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", log)}


def test_toy_workflow_runs_through_sbatch_with_one_gpu_per_group(cluster, tmp_path):
    n = TOY_GROUP
    rc, out = snakemake(cluster, TOY, tmp_path, *toy_config(tmp_path, n=n), "--group-components",
                        f"finetune={TOY_GROUP}", timeout=TOY_TIMEOUT_S)
    assert rc == 0, out[-6000:]
    jobs = submitted(out)
    # prepare, ONE job for the 4 grouped finetune runs, aggregate.
    assert len(jobs) == 3, out[-6000:]
    ids = [j for j, _ in jobs]
    assert set(ids) <= submitted_in_ctld_log(cluster)
    records = {j: slurm_job(cluster, j) for j in ids}
    by_comment = {r["Comment"]: r for r in records.values()}
    assert set(by_comment) == {"rule_prepare", "rule_finetune_finetune", "rule_aggregate"}
    assert all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values())

    group = by_comment["rule_finetune_finetune"]
    # One GPU for the whole group, not one per member; its time limit is the members' sum.
    assert group["TresPerJob"] == "gres:gpu:1"
    assert group["Partition"] == "gpu"
    minutes = n * FINETUNE_RUNTIME_MIN  # n x the profile's finetune runtime
    assert group["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00"
    assert by_comment["rule_prepare"]["TresPerJob"] == "gres:gpu:1"
    assert "TresPerJob" not in by_comment["rule_aggregate"] or not by_comment["rule_aggregate"]["TresPerJob"]
    assert by_comment["rule_aggregate"]["Partition"] == "cpu"

    # Outputs: each computed inside the SLURM job that snakemake reported for it.
    group_id = int(group["JobId"])
    prepare_id = int(by_comment["rule_prepare"]["JobId"])
    assert (tmp_path / "results/prepared.txt").read_text().startswith(f"job={prepare_id} ")
    lines = (tmp_path / "results/summary.txt").read_text().splitlines()
    assert lines == [f"i={i} square={i * i} job={group_id}" for i in range(n)]
    # SLURM logs sit where snakemake said; the plugin deletes those of successful jobs.
    for j, log in jobs:
        assert Path(log).parent.parent == tmp_path / ".snakemake" / "slurm_logs" and Path(log).name == f"{j}.log"


def test_failing_rule_names_rule_slurm_job_and_logs(cluster, tmp_path):
    rc, out = snakemake(cluster, TOY, tmp_path, *toy_config(tmp_path, n=1, fail=True), timeout=TOY_TIMEOUT_S)
    assert rc != 0, out[-6000:]
    jobs = dict(submitted(out))
    broken = [j for j, log in jobs.items() if "/rule_broken/" in log]
    assert len(broken) == 1, out[-6000:]
    job_id = broken[0]
    slurm_log = tmp_path / ".snakemake" / "slurm_logs" / "rule_broken" / f"{job_id}.log"
    # The error names the rule, the SLURM job id, its state and both logs.
    assert "Error in rule broken:" in out
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'FAILED'" in out
    assert f"external_jobid: {job_id}" in out
    assert f"logs/broken.log, {slurm_log}" in out
    assert slurm_job(cluster, job_id)["JobState"] == "FAILED"
    assert slurm_job(cluster, job_id)["ExitCode"] == "1:0"
    # The rule's own log says why; the SLURM log holds the job's Snakemake output.
    assert "fails on purpose" in (tmp_path / "logs/broken.log").read_text()
    assert "Error in rule broken" in slurm_log.read_text()


REAL_READY = (ROOT / "Snakefile").is_file() and (ROOT / "config" / "test.yaml").is_file()


@pytest.mark.skipif(not REAL_READY, reason="the real workflow's Snakefile or config/test.yaml is not there yet")
def test_real_tiny_workflow_through_slurm_profile(cluster, tmp_path):
    # The test cluster's GPUs are gres entries without a device: the profile asks for a GPU, so
    # the jobs run on the CPU on purpose, as the no-GPU error says (else they stop with it).
    cpu = tmp_path / "cpu-on-purpose.json"
    cpu.write_text(json.dumps({"train": {"device": "cpu"}, "data": {"decode_backend": "dali-cpu"}}))
    rc, out = snakemake(cluster, ROOT / "Snakefile", tmp_path, "--configfile", str(ROOT / "config/test.yaml"),
                        str(cpu), timeout=REAL_TIMEOUT_S)
    assert rc == 0, out[-8000:]
    jobs = submitted(out)
    assert jobs and {j for j, _ in jobs} <= submitted_in_ctld_log(cluster)
    records = [slurm_job(cluster, j) for j, _ in jobs]
    assert all(r["JobState"] == "COMPLETED" for r in records)
    gpu_rules = {"rule_prepare", "rule_backbone", "rule_pretrain_saliency", "rule_finetune_finetune"}
    for r in records:
        if r["Comment"] in gpu_rules:
            assert r.get("TresPerJob") == "gres:gpu:1", r

    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    grid = [len(cfg[key]) for key in ("archs", "datasets", "methods", "ks", "seeds")]
    metrics = sorted(tmp_path.glob("results/runs/*/*/*/*/*/*/metrics.json"))
    assert len(metrics) == grid[0] * grid[1] * grid[2] * grid[3] * grid[4]
    assert (tmp_path / "results/summary.csv").is_file()
    groups = [r for r in records if r["Comment"] == "rule_finetune_finetune"]
    # One fine-tuning job per (arch, dataset, method) trains all its k and seeds (config
    # train.finetune_batch: all); the profile bundles GROUP_SIZE jobs into one SLURM job.
    jobs = grid[0] * grid[1] * grid[2]
    assert len(groups) == -(-jobs // GROUP_SIZE)
    if GROUP_SIZE == 1:  # its time limit: minutes per run x its runs
        minutes = FINETUNE_RUNTIME_MIN * grid[3] * grid[4]
        assert all(g["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00" for g in groups)
    for path in metrics:
        m = json.loads(path.read_text())
        assert_test_acc_is_predictions(path.parent, m)
        assert m["synthetic"] is True  # config/test.yaml is synthetic data


def test_profile_finetune_time_limit_counts_runs_not_characters():
    """A job of one run has input.split as one path (Snakemake collapses a 1-item list): its time
    limit is one run's, not 15 x the path's length; a job of n runs asks for n x 15 min."""
    from types import SimpleNamespace

    for rule in ("finetune", "finetune_ablation"):
        expr = str(_PROFILE["set-resources"][rule]["runtime"])
        one = eval(expr, {}, {"input": SimpleNamespace(split="results/splits/flowers102/seed0.tsv")})
        many = eval(expr, {}, {"input": SimpleNamespace(split=["a.tsv"] * 30)})
        assert (one, many) == (FINETUNE_RUNTIME_MIN, 30 * FINETUNE_RUNTIME_MIN)
