"""DDP through the Snakemake rule: `train_model` with ``train.devices: 2`` on CPU (gloo).

Runs the real rule (`snakemake --cores 2 models/<variant>/seed0/model.pt`) in a copy of
the repository on a shrunk configuration (one seed, one epoch of 4 iterations, 64x32
images) for two variants that differ only in ``train.devices`` and ``train.cpu_threads``
(so that every process has one torch thread):

- ``two``: ``devices: 2``; the job relaunches itself under torchrun with 2 gloo ranks,
  each taking 2 of the batch's 4 identities;
- ``one``: ``devices: 1``, the documented single-process equivalent: the same global
  P x K = 4 x 4 batch in one process.

The variant is ``full`` (SAID, MoAE, HDW) with the triplet loss on from the first
epoch. The runs must end with the same weights: the two ranks' batches together are the
single-process batch (same rows, same augmentation seeds; tests/test_ddp.py), DDP
averages the gradients, and every batch statistic is that of the global batch -- the BN
necks' (:class:`atreid.engine.distributed.GlooSyncBatchNorm` on CPU), SAID's subset
counts, HDW's group means (the criterion's ``rank_sum``) and the triplet loss's hardest
positives and negatives (``rank_gather``). Measured difference: 6.6e-7 at most (BN
running means of magnitude 1, a few float32 ulps; 2.6e-7 on the parameters): sums
taken in another order (all-reduce, per-rank batches). With per-rank statistics it was
0.3 on the running means and 0.04 on the classifiers (BN), 0.012 on the classifiers
(HDW).

The variant has MoAE, the one whose DDP wrapper had ``find_unused_parameters``: it is
off, and 4 steps without DDP's "parameters that were not used" error show none is
needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.e2e import copy_pipeline, run, tiny_params

# Float summation order: all-reduce and per-rank sums add in another order than one
# process does; after 4 SGD steps weights agree to a few float32 ulps.
TOLERANCE = 2e-6

# params.yaml's full (Uni-AT), with the triplet loss from the first epoch (the recipe has it never).
VARIANT = {"ncls": 6, "said": True, "moae": True, "hdw": True, "train": {"triplet_start_epoch": 0}}


@pytest.fixture(scope="module")
def trained(tiny_pipeline, tmp_path_factory) -> Path:
    """The two trainings, in a copy of the session's tiny pipeline (its data and
    pre-training are current: only the two train_model jobs run)."""
    from atreid.config import deep_merge

    work = copy_pipeline(tiny_pipeline.work, tmp_path_factory.mktemp("ddp_rule") / "repo")
    tiny_params(work, {"two": deep_merge(VARIANT, {"train": {"devices": 2, "cpu_threads": 1}}),
                       "one": deep_merge(VARIANT, {"train": {"devices": 1, "cpu_threads": 1}})},
                overrides={"train": {"iters_per_epoch": 4}})
    done = run(["snakemake", "--cores", "2", "models/two/seed0/model.pt", "models/one/seed0/model.pt"], work)
    (work / "snakemake.out").write_text(done.stdout + done.stderr)
    return work


def job_block(output: str, variant: str) -> str:
    """Snakemake's announcement of the train_model job of ``variant`` (threads, resources)."""
    blocks = output.split("rule train_model:")[1:]
    return next(b for b in blocks if f"wildcards: variant={variant}," in b.split("Shell command")[0])


@pytest.mark.slow
def test_two_gloo_ranks_ran_in_the_rule(trained):
    log = (trained / "logs" / "train" / "two" / "seed0.log").read_text()
    assert "relaunching under torchrun" in log, log
    for rank in (0, 1):
        assert f"rank {rank}/2 joined the gloo process group" in log, log
    assert "find_unused_parameters" not in log, log  # off, and DDP found no unused parameter either
    single = (trained / "logs" / "train" / "one" / "seed0.log").read_text()
    assert "torchrun" not in single and "process group" not in single, single
    # The relaunched ranks trained on the settings the job was given (they differ from the
    # single process's in the name and the device count only), and one epoch leaves no
    # checkpoint (this was tests/test_ddp.py's own `atreid train` relaunch test).
    two, one = (torch.load(trained / "models" / v / "seed0" / "model.pt", weights_only=True)["settings"]
                for v in ("two", "one"))
    assert (two.pop("name"), one.pop("name")) == ("two", "one")
    assert (two["train"].pop("devices"), one["train"].pop("devices")) == (2, 1) and two == one
    assert not (trained / "checkpoints" / "two").exists()
    # The DDP job holds 2 cores (one torch thread per rank) and asks for 2 GPUs; with no
    # --resources gpu=N on the command line snakemake does not limit the resource, so
    # the job runs on a machine without GPUs.
    output = (trained / "snakemake.out").read_text()
    two, one = job_block(output, "two"), job_block(output, "one")
    assert re.search(r"threads: 2\n", two) and re.search(r"resources: .*\bgpu=2\b", two), two
    assert "threads:" not in one.split("Shell command")[0] and re.search(r"\bgpu=1\b", one), one  # 1 thread


@pytest.mark.slow
def test_same_weights_as_the_single_process_equivalent(trained):
    two = torch.load(trained / "models" / "two" / "seed0" / "model.pt", weights_only=True)
    one = torch.load(trained / "models" / "one" / "seed0" / "model.pt", weights_only=True)
    assert two["epoch"] == one["epoch"] == 1 and two["state_dict"].keys() == one["state_dict"].keys()
    # Every tensor: parameters and the BN running statistics (and batch counts).
    diffs = {key: (value.double() - one["state_dict"][key].double()).abs().max().item()
             for key, value in two["state_dict"].items()}
    worst = max(diffs, key=diffs.get)
    # Measured 6.6e-7 (a BN running mean of magnitude 1, a few float32 ulps), 2.6e-7 on the
    # parameters; with per-rank BN and HDW statistics it was 0.3 (running means) and 0.04
    # (classifiers).
    assert diffs[worst] <= TOLERANCE, f"{worst}: {diffs[worst]:.3g}"
    for variant in ("two", "one"):  # the triplet loss took part
        history = pd.read_csv(trained / "models" / variant / "seed0" / "history.csv")
        assert (history["loss_triplet"] > 0).all(), history
