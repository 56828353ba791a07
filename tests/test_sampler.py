"""PK sampler: composition, modality balancing, determinism, DDP sharding; transforms."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from atreid.engine.sampler import PKSampler
from atreid.engine.transforms import ERASE_MAX_AREA, SeededTransform, train_transform
from atreid.engine.transforms import test_transform as eval_transform
from atreid.errors import AtreidError


def make_rows(seed: int = 0):
    """12 persons: 0-7 have RGB and IR images, 8-9 RGB only, 10 IR only with 2 images, 11 RGB with 1 image."""
    rng = np.random.default_rng(seed)
    persons, modalities = [], []
    for person in range(12):
        if person < 8:
            counts = {0: int(rng.integers(5, 20)), 1: int(rng.integers(5, 20))}
        elif person < 10:
            counts = {0: 10}
        elif person == 10:
            counts = {1: 2}
        else:
            counts = {0: 1}
        for modality, n in counts.items():
            persons += [person] * n
            modalities += [modality] * n
    order = rng.permutation(len(persons))  # rows in no particular order
    return np.array(persons)[order], np.array(modalities)[order]


def sampler(world_size: int = 1, rank: int = 0, **kwargs) -> PKSampler:
    persons, modalities = make_rows()
    options = dict(batch_p=4, batch_k=8, iters_per_epoch=50, seed=3)
    options.update(kwargs)
    return PKSampler(persons, modalities, rank=rank, world_size=world_size, **options)


def test_batch_composition_and_modality_balance():
    s = sampler()
    persons, modalities = make_rows()
    seen_persons = set()
    for batch in s:
        assert len(batch) == 4 * 8
        rows = [row for row, _ in batch]
        ids = persons[rows]
        counts = Counter(ids.tolist())
        assert len(counts) == 4 and set(counts.values()) == {8}  # P distinct ids, K each
        seen_persons |= set(counts)
        for person in counts:
            person_rows = [r for r in rows if persons[r] == person]
            available = Counter(modalities[persons == person].tolist())
            drawn = Counter(modalities[person_rows].tolist())
            if len(available) == 2:
                assert drawn == {0: 4, 1: 4}  # K/2 from each modality
            else:
                assert set(drawn) == set(available)
            for modality, n in drawn.items():
                rows_m = [r for r in person_rows if modalities[r] == modality]
                if available[modality] >= n:  # enough images: no repeats
                    assert len(set(rows_m)) == n
                else:  # too few: with replacement, only the available rows
                    assert len(set(rows_m)) <= available[modality]
    assert seen_persons == set(range(12))  # uniform over identities: all appear in 50 batches


def test_split_k_fills_the_batch():
    assert PKSampler.split_k(8, 2) == [4, 4]
    assert PKSampler.split_k(7, 2) == [4, 3]
    assert PKSampler.split_k(8, 1) == [8]
    s = sampler(batch_k=5)
    assert all(len(batch) == 20 for batch in s)


def test_deterministic_per_seed_and_epoch():
    a, b = sampler(), sampler()
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    c = sampler(seed=4)
    c.set_epoch(4)
    assert list(a) != list(c)
    # A fresh sampler restored from a state dict continues identically (resume).
    d = sampler()
    d.load_state_dict(a.state_dict())
    assert list(d) == list(a)
    # Every sample gets its own augmentation seed.
    seeds = [seed for batch in a for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ddp_shards_union_equals_global_batch(world_size):
    single = sampler()
    shards = [sampler(world_size=world_size, rank=r) for r in range(world_size)]
    persons, _ = make_rows()
    for epoch in (1, 2):
        for s in [single, *shards]:
            s.set_epoch(epoch)
        for full, *parts in zip(single, *shards):
            assert sorted(x for part in parts for x in part) == sorted(full)
            assert all(len(part) == len(full) // world_size for part in parts)
            # Whole identities per rank: no person split across ranks.
            owners = [set(persons[[r for r, _ in part]].tolist()) for part in parts]
            assert sum(len(o) for o in owners) == len(set().union(*owners)) == 4


def test_errors():
    with pytest.raises(AtreidError, match="batch_p"):
        sampler(batch_p=13)
    with pytest.raises(AtreidError, match="divisible"):
        sampler(world_size=3, rank=0)


def test_train_transform_seeded_and_restores_global_rng():
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, size=(40, 20, 3), dtype=np.uint8))
    transform = SeededTransform(train_transform((32, 16), pad=4, flip=0.5, random_erasing=1.0))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = transform(image, 7), transform(image, 7), transform(image, 8)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.shape == (3, 32, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = eval_transform((32, 16))(image)
    assert plain.shape == (3, 32, 16)


def test_seeded_transform_in_a_worker_gives_the_same_images(monkeypatch):
    """In a DataLoader worker the global states are not saved and restored (nothing else
    there draws from them): the images are those of the main process, seed for seed."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, size=(40, 20, 3), dtype=np.uint8))
    transform = SeededTransform(train_transform((32, 16), pad=4, flip=0.5, random_erasing=1.0))
    main = [transform(image, seed) for seed in range(6)]
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    monkeypatch.setattr(random, "getstate", lambda: pytest.fail("a worker saved the global state"))
    worker = [transform(image, seed) for seed in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(main, worker))


def test_random_erasing_geometry_is_the_recipe():
    transform = train_transform((32, 16), random_erasing=0.5)
    erasing = transform.transforms[-1]
    assert erasing.probability == 0.5 and erasing.max_area == ERASE_MAX_AREA == 0.4
    assert erasing.min_area == 0.02 and erasing.per_pixel and erasing.max_count == 1
