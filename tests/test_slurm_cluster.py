"""The smallest pipeline on a real (single-node) SLURM cluster, through profiles/slurm.

tests/slurm/start_cluster.sh installs Debian's SLURM (apt) and starts munge, MariaDB +
slurmdbd, slurmctld and slurmd on this machine, on 127.0.0.1 only: one node declared as
32 CPUs, 128 GB and two `gpu` GRES, partitions `main` (default) and `gpus`, account
`atreid-lab`, and JobRequeue=0 (jobs are requeueable only when they ask for it). Then, in
two copies of the repository with the same shrunk params.yaml (one variant, one seed, 5
short epochs, AT-USTC + Market-1501):

1. `snakemake --cores 2 results/table.csv` runs it locally: the reference (in a copy of
   the session's tiny pipeline, tests/conftest.py, whose data and pre-training are the
   same: only the training, the evaluation and the table run);
2. `snakemake --profile profiles/slurm results/table.csv` runs it on SLURM, the profile
   unchanged, only its site variables set (ATREID_SLURM_PARTITION=main,
   ATREID_SLURM_GPU_PARTITION=gpus, ATREID_SLURM_ACCOUNT=atreid-lab);
3. once the training job has written its first epoch's checkpoint, `scontrol requeue`
   puts it back in the queue, as SLURM does to a job preempted with PreemptMode=REQUEUE
   or one whose node failed (the test only lifts SLURM's 2-minute hold on requeued
   jobs); once its second start has resumed and checkpointed a later epoch, its training
   process is killed (SIGKILL, as by the OOM killer): the job FAILS, and snakemake
   submits it again (the profile's retries);
4. checks: sacct lists exactly one COMPLETED job per job of the run except the local
   rules (install_*), plus the failed training job, each with the partition, the
   account and, for training and evaluation, one GPU; the training job's history is
   REQUEUED then FAILED, its second start resumed after the first epoch and the retry
   after a later one (the logs say so); each job's SLURM log is in
   .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log and each rule's log under
   logs/; results/table.csv is byte for byte the local run's.

The daemons are stopped afterwards, also when the test fails. The test is skipped, with
the reason, where the cluster cannot start (not root, no apt-get, a package that does not
install, a daemon that does not come up).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e import BIN, commit_all, copy_pipeline, copy_tracked_files, jobs_of_dry_run, run, tiny_params

SCRIPTS = REPO / "tests" / "slurm"
SITE = {"ATREID_SLURM_PARTITION": "main", "ATREID_SLURM_GPU_PARTITION": "gpus",
        "ATREID_SLURM_ACCOUNT": "atreid-lab"}
LOCAL_RULES = {"install_atustc", "install_benchmark"}
GPU_RULES = {"train_model", "evaluate_run"}
# Five epochs: the requeue lands after the first one, the kill after a later one.
FIVE_EPOCHS = {"train": {"epochs": 5, "iters_per_epoch": 6}}


def shrink(work: Path) -> Path:
    """Shrink the params.yaml of ``work`` (a copy of the repository) to this test's pipeline."""
    variants = yaml.safe_load((REPO / "params.yaml").read_text())["variants"]
    tiny_params(work, {"full": variants["full"]}, benchmarks=["atustc", "market1501"], overrides=FIVE_EPOCHS)
    return work


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    """The environment of commands on a running single-node cluster (with the site variables)."""
    state = tmp_path_factory.mktemp("slurm-cluster")
    try:
        started = subprocess.run(["bash", str(SCRIPTS / "start_cluster.sh"), str(state)],
                                 capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)
        pytest.skip("SLURM test cluster: start_cluster.sh took over 15 min")
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)
        reason = started.stderr.strip().splitlines()
        pytest.skip("SLURM test cluster did not start: " + "\n".join(reason[:1] + reason[-20:]))
    try:
        yield dict(os.environ, **SITE)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_cluster.sh"), str(state)], timeout=120)


def slurm(cmd: list[str], env: dict[str, str]) -> str:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def wait_for(condition, snakemake: subprocess.Popen, what: str, timeout: float = 900):
    """The first true value of ``condition()``, polled while snakemake runs."""
    deadline = time.monotonic() + timeout
    while snakemake.poll() is None and time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not seen while snakemake ran (or within {timeout} s): {what}")


def training_process(work: Path) -> int | None:
    """The pid of the `atreid train` process running in ``work``, if any."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"train" in argv and b"--checkpoint-dir" in argv and (proc / "cwd").resolve() == work.resolve():
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


def interrupt_training(snakemake: subprocess.Popen, work: Path, env: dict[str, str]) -> tuple[str, str]:
    """Requeue the training job after its first epoch, kill its training after a later one.

    The requeue is what SLURM does to a job preempted with PreemptMode=REQUEUE or one
    whose node failed. The kill (SIGKILL, as the kernel's OOM killer sends) makes the job
    FAILED, and snakemake submits it again (the profile's retries), as for a job over its
    time limit. Returns the job id and the training log as it was before the kill.
    """
    checkpoint = work / "checkpoints" / "full" / "seed0" / "last.pt"  # written atomically: complete
    train_log = work / "logs" / "train" / "full" / "seed0.log"

    def mtime() -> int | None:
        try:
            return checkpoint.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def running_training() -> str | None:
        jobs = [line.split("|") for line in slurm(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], env).split()]
        return next((job for job, comment in jobs if comment.startswith("rule_train_model")), None)

    job = wait_for(lambda: checkpoint.is_file() and running_training(), snakemake, "a first checkpoint")
    slurm(["scontrol", "requeue", job], env)
    # A requeued job may start again only 2 min later (its BeginTime): lift that.
    wait_for(lambda: "PENDING" in slurm(["squeue", "-h", "-j", job, "-o", "%T"], env), snakemake,
             f"job {job} back in the queue", timeout=30)
    slurm(["scontrol", "update", f"JobId={job}", "StartTime=now"], env)

    # Once the second start has resumed (its log is new) and replaced the checkpoint with
    # a later epoch's, kill its training.
    wait_for(lambda: train_log.is_file() and "resuming " in train_log.read_text(), snakemake, "the resume")
    resumed_from = mtime()
    wait_for(lambda: mtime() not in (None, resumed_from), snakemake, "a checkpoint after the resume")
    log_before_kill = train_log.read_text()
    os.kill(wait_for(lambda: training_process(work), snakemake, "the training process"), signal.SIGKILL)
    return job, log_before_kill


@pytest.mark.slow
def test_smallest_pipeline_on_slurm_equals_the_local_run(cluster, tiny_pipeline, tmp_path):
    local = shrink(copy_pipeline(tiny_pipeline.work, tmp_path / "local"))
    run(["snakemake", "--cores", "2", "results/table.csv"], local)

    work = shrink(copy_tracked_files(tmp_path / "slurm"))
    commit_all(work)
    env = dict(cluster, PATH=f"{BIN}{os.pathsep}{cluster.get('PATH', '')}", ATREID_QUIET="1")
    dry = run(["snakemake", "--profile", "profiles/slurm", "-n", "results/table.csv"], work)
    planned = jobs_of_dry_run(dry.stdout)
    rule_logs = {log for line in re.findall(r"^\s+log: (.+)$", dry.stdout, re.M) for log in line.split(", ")}
    expected = {rule: n for rule, n in planned.items() if rule not in LOCAL_RULES}
    assert set(planned) & LOCAL_RULES and expected.get("train_model") == 1, planned

    # The profile as it is; only the status polling starts sooner than the plugin's 40 s.
    command = ["snakemake", "--profile", "profiles/slurm", "results/table.csv",
               "--slurm-init-seconds-before-status-checks", "2"]
    with open(tmp_path / "snakemake.log", "w") as log:
        # SIGINT as in a terminal (a parent started in the background may ignore it).
        snakemake = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            interrupted, log_before_kill = interrupt_training(snakemake, work, env)
            assert snakemake.wait(timeout=600) == 0
        finally:
            if snakemake.poll() is None:  # Ctrl-C (cancels its jobs), then a kill
                snakemake.send_signal(signal.SIGINT)
                try:
                    snakemake.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    snakemake.kill()
                    snakemake.wait()
    output = (tmp_path / "snakemake.log").read_text()
    assert "SLURM run ID" in output, output[-3000:]
    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]

    # sacct: one COMPLETED job per non-local job (two for training: the failed one and its
    # retry), each where the profile sent it, and its SLURM log.
    sacct = slurm(["sacct", "-X", "-P", "-n", "--starttime", "2000-01-01", "--name", run_id,
                   "--format=JobIDRaw,State,Partition,Account,AllocTRES%200,Comment%300"], env)
    (tmp_path / "sacct.txt").write_text(sacct)
    rows = [line.split("|") for line in sacct.splitlines()]
    assert rows, output[-3000:]
    completed: dict[str, int] = {}
    for job_id, state, partition, account, tres, comment in rows:
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", comment)[1]
        if job_id == interrupted:
            assert rule == "train_model" and state == "FAILED", rows
        else:
            assert state == "COMPLETED", rows
            completed[rule] = completed.get(rule, 0) + 1
        assert account == "atreid-lab", rows
        assert partition == ("gpus" if rule in GPU_RULES else "main"), rows
        assert ("gres/gpu=1" in tres) == (rule in GPU_RULES), rows
        logs = list((work / ".snakemake" / "slurm_logs" / f"rule_{rule}").glob(f"**/{job_id}.log"))
        assert len(logs) == 1, (rule, job_id)
    assert completed == expected, (completed, expected)

    # Requeued by SLURM, the job resumed after the first epoch; failed, it was submitted
    # again (a new job) and resumed after a later one.
    history = slurm(["sacct", "-D", "-X", "-P", "-n", "-j", interrupted, "--format=State"], env).split()
    assert history == ["REQUEUED", "FAILED"], history
    assert re.search(r"resuming full.* after epoch [12] of 5", log_before_kill), log_before_kill
    train_log = (work / "logs" / "train" / "full" / "seed0.log").read_text()
    assert re.search(r"resuming full.* after epoch [234] of 5", train_log), train_log

    assert len(rule_logs) == sum(planned.values()), rule_logs
    for rule_log in rule_logs:
        assert rule_log.startswith("logs/") and (work / rule_log).is_file(), rule_log
    assert (work / "results" / "table.csv").read_bytes() == (local / "results" / "table.csv").read_bytes()


def profile(**site: str) -> dict:
    """profiles/slurm/config.yaml as snakemake reads it, with these site variables set."""
    import yte

    saved = {name: os.environ.pop(name, None) for name in (*SITE, "ATREID_SLURM_GPUS")}
    try:
        os.environ.update(site)
        with open(REPO / "profiles" / "slurm" / "config.yaml") as stream:
            return yte.process_yaml(stream, require_use_yte=True)
    finally:
        for name in (*SITE, "ATREID_SLURM_GPUS"):
            os.environ.pop(name, None)
            if saved[name] is not None:
                os.environ[name] = saved[name]


def test_profile_site_variables():
    plain = profile()
    assert plain["executor"] == "slurm" and plain["slurm-requeue"] is True and plain["retries"] >= 1
    assert plain["default-resources"]["slurm_partition"] == "cpu"
    assert "slurm_account" not in plain["default-resources"]
    assert plain["set-resources"]["train_model"]["slurm_partition"] == "gpu"
    assert "gpu" not in plain["set-resources"]["train_model"]  # the rule's: train.devices
    assert plain["set-resources"]["evaluate_run"]["gpu"] == 1
    # Threads stay the rules' own (CPU results depend on them).
    assert not set(plain.get("set-threads", {})) & {"train_model", "evaluate_run", "pretrain_backbone"}

    site = profile(**SITE)
    assert site["default-resources"]["slurm_partition"] == "main"
    assert site["default-resources"]["slurm_account"] == "atreid-lab"
    assert site["set-resources"]["evaluate_run"]["slurm_partition"] == "gpus"

    cpu_only = profile(ATREID_SLURM_PARTITION="batch", ATREID_SLURM_GPUS="0")
    for rule in ("train_model", "evaluate_run"):
        assert cpu_only["set-resources"][rule]["gpu"] == 0
        assert cpu_only["set-resources"][rule]["slurm_partition"] == "batch"


@pytest.mark.slow  # over the fast tier's 5 s (a Snakemake or interpreter start-up)
def test_gpu_requests_follow_train_devices(tmp_path):
    """`snakemake -n --profile profiles/slurm`: a training job asks for train.devices GPUs
    (none with ATREID_SLURM_GPUS=0), an evaluation job for one."""
    work = copy_tracked_files(tmp_path / "repo")
    variants = yaml.safe_load((work / "params.yaml").read_text())["variants"]
    tiny_params(work, {"full": variants["full"], "baseline": {**variants["baseline"], "train": {"devices": 2}}},
                benchmarks=["atustc"], overrides=FIVE_EPOCHS)

    def gpus(**site: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("ATREID_SLURM_")}
        env.update(site, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        dry = subprocess.run(["snakemake", "--profile", "profiles/slurm", "-n", "results/table.csv"], cwd=work,
                             env=env, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr[-3000:]
        found = {}
        for block in (dry.stdout + dry.stderr).split("rule ")[1:]:
            name = block.split(":")[0]
            wildcards = re.search(r"wildcards: (.*)", block)
            gpu = re.search(r"resources: .*\bgpu=(\d+)", block)
            key = f"{name} {wildcards[1] if wildcards else ''}".strip()
            found[key] = gpu[1] if gpu else "-"
        return found

    requests = gpus()
    assert requests["train_model variant=full, seed=0"] == "1"
    assert requests["train_model variant=baseline, seed=0"] == "2"
    assert requests["evaluate_run variant=full, run=seed0"] == "1"
    assert requests["prepare_atustc"] == "-"
    requests = gpus(ATREID_SLURM_GPUS="0")
    assert {requests["train_model variant=baseline, seed=0"], requests["evaluate_run variant=full, run=seed0"]} == {"0"}
