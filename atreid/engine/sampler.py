"""PK batch sampler with modality balancing (the Uni-AT training recipe).

Every global batch holds ``P`` identities drawn uniformly without replacement; for each
identity up to two of its modalities are chosen (with RGB/IR: both whenever the person
has both) and ``K / |modalities|`` images are drawn from each, with replacement only
when a modality has too few images. An epoch is a fixed number of batches.

The sampler is a *batch* sampler: each batch is a list of ``(row, sample_seed)`` pairs.
``sample_seed`` seeds that sample's augmentation (see :mod:`atreid.engine.transforms`),
so data order AND augmentation are a pure function of ``(seed, epoch)``: a resumed run,
a run with DataLoader workers and a DDP run all see exactly the same samples.

Under DDP every rank draws the same global batch and keeps the identities
``rank::world_size`` of it, so the union of the ranks' batches is the single-process
batch (same rows, same augmentation seeds) and every identity's images stay together on
one rank (the triplet loss and the per-head losses need them side by side).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from atreid.errors import AtreidError

# Stream tag mixed into the epoch seed so this generator never coincides with the
# model-initialisation or dropout seeds derived from the same global seed.
_SAMPLER_STREAM = 0x5A3D


class PKSampler(Sampler[list[tuple[int, int]]]):
    """Deterministic, shardable PK batch sampler.

    Args:
        persons: identity label of every dataset row.
        modalities: modality code (or any sub-group id) of every row; up to two groups
            per identity are sampled per batch.
        batch_p: identities per global batch (P).
        batch_k: images per identity (K), split over the chosen groups.
        iters_per_epoch: batches per epoch.
        seed: global seed; with the epoch it decides everything drawn.
        rank: this process's rank under DDP.
        world_size: number of DDP processes; must divide ``batch_p``.
        max_groups: at most this many groups per identity (2 in the recipe).
    """

    def __init__(self, persons: Sequence[int], modalities: Sequence[int], *, batch_p: int, batch_k: int,
                 iters_per_epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                 max_groups: int = 2) -> None:
        persons = np.asarray(persons, dtype=np.int64)
        modalities = np.asarray(modalities, dtype=np.int64)
        if persons.shape != modalities.shape:
            raise ValueError("persons and modalities must have one entry per dataset row")
        if batch_p < 1 or batch_k < 1 or iters_per_epoch < 1:
            raise AtreidError("train.batch_p, train.batch_k and train.iters_per_epoch must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if batch_p % world_size:
            raise AtreidError(f"train.batch_p = {batch_p} is not divisible by train.devices = {world_size}; "
                              "each device takes whole identities of the global batch")
        table: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for row, (person, modality) in enumerate(zip(persons.tolist(), modalities.tolist())):
            table[person][modality].append(row)
        self.person_ids = sorted(table)
        if batch_p > len(self.person_ids):
            raise AtreidError(f"train.batch_p = {batch_p} exceeds the {len(self.person_ids)} identities of the "
                              "training index; lower train.batch_p")
        # Per identity: sorted groups, each an int64 array of rows (sorted by construction).
        self.groups = [[np.asarray(table[p][m], dtype=np.int64) for m in sorted(table[p])]
                       for p in self.person_ids]
        self.batch_p, self.batch_k = batch_p, batch_k
        self.iters_per_epoch = iters_per_epoch
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.max_groups = max_groups
        self.epoch = 1

    # ---- state -------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the (1-based) epoch whose batches ``__iter__`` yields."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "batch_p": self.batch_p, "batch_k": self.batch_k,
                "iters_per_epoch": self.iters_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "batch_p", "batch_k", "iters_per_epoch"):
            if int(state[key]) != getattr(self, key):
                raise AtreidError(f"checkpoint sampler {key}={state[key]} differs from {getattr(self, key)}")
        self.epoch = int(state["epoch"])

    # ---- drawing -----------------------------------------------------------------
    @staticmethod
    def split_k(k: int, groups: int) -> list[int]:
        """Images per group: ``k // groups`` each, the remainder to the first groups.

        With the recipe's even K this is exactly K/|groups|; an odd K still fills the
        batch to P*K (the reference would truncate it).
        """
        base, extra = divmod(k, groups)
        return [base + (1 if i < extra else 0) for i in range(groups)]

    def _draw_batch(self, rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
        chosen = np.sort(rng.choice(len(self.person_ids), self.batch_p, replace=False))
        per_person: list[list[int]] = []
        for pid_index in chosen.tolist():
            groups = self.groups[pid_index]
            n = min(len(groups), self.max_groups)
            picked = np.sort(rng.choice(len(groups), n, replace=False)) if len(groups) > n else np.arange(n)
            rows: list[int] = []
            for group_index, k in zip(picked.tolist(), self.split_k(self.batch_k, n)):
                candidates = groups[group_index]
                rows.extend(rng.choice(candidates, k, replace=len(candidates) < k).tolist())
            per_person.append(rows)
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.batch_p * self.batch_k, dtype=np.int64)
        return per_person, seeds

    def global_batches(self, epoch: int | None = None) -> Iterator[list[tuple[int, int]]]:
        """The full (unsharded) batches of ``epoch`` as lists of ``(row, sample_seed)``."""
        for per_person, seeds in self._iter_draws(epoch):
            rows = [row for person_rows in per_person for row in person_rows]
            yield list(zip(rows, seeds.tolist()))

    def _iter_draws(self, epoch: int | None) -> Iterator[tuple[list[list[int]], np.ndarray]]:
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch, _SAMPLER_STREAM])
        for _ in range(self.iters_per_epoch):
            yield self._draw_batch(rng)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.batch_k
        for per_person, seeds in self._iter_draws(None):
            batch: list[tuple[int, int]] = []
            # Identity slot j of the global batch owns positions j*K .. j*K+K-1 (and seeds).
            for slot in range(self.rank, self.batch_p, self.world_size):
                batch.extend(zip(per_person[slot], seeds[slot * k:(slot + 1) * k].tolist()))
            yield batch

    def __len__(self) -> int:
        return self.iters_per_epoch

    @property
    def local_batch_size(self) -> int:
        return self.batch_p // self.world_size * self.batch_k
