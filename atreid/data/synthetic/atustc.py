"""Synthetic AT-USTC: a miniature in the exact release layout, every flag populated.

:func:`generate_atustc` writes real JPEG files::

    out_dir/AT-USTC/pPPP-dDD-cCC/camKK-fF-NNNN.jpg
    out_dir/synthetic_counts.json

(person PPP, date DD, clothes CC per person, camera KK: 1-8 RGB, 9-16 IR, flag F,
frame NNNN), rendered by :mod:`atreid.data.synthetic.render`. The dataset is built in a
temporary sibling folder and moved into place only when every image is written.

Design (``data.synthetic`` in params.yaml holds the knobs):

* Persons ``1..train_persons`` are training identities, the next ``test_persons`` the
  disjoint test identities (the real data splits its 270 volunteers 135/135).
* Every person comes on every capture date ``1..dates`` wearing one outfit per date;
  each person owns between ``outfits[0]`` and ``outfits[1]`` outfits (at most ``dates``,
  at least 2 for test persons), each worn on one or more dates. Clothes ids ``cCC``
  number a person's outfits in order of first appearance.
* Training identities: each (person, date) session is filmed by
  ``train_cameras_per_outfit`` cameras, half RGB and half IR (odd counts: one more of a
  random modality), ``train_frames_per_clip`` frames per clip, so every person has both
  modalities. About ``val_fraction`` of the training identities' clips (largest-remainder
  quotas per person) get flag 1; the rest flag 0. Validation never takes a person's
  last flag-0 clip of an outfit or of a modality.
* Test identities: per outfit, eight clips of 3 frames each, one per role: RGB flags
  2 (DT-ST query), 6 (DT-ST gallery), 3 (DT-LT query), 7 (DT-LT gallery) and the IR
  flags 4, 8, 5, 9 likewise. Per person the 8 RGB cameras are shuffled into disjoint
  pools - 2 for LT queries, 2 for LT galleries, 4 for ST clips - and the same for the
  IR cameras; each outfit takes an ST query and an ST gallery camera (distinct) from
  the ST pool and one camera from each LT pool; each clip is filmed on one of the
  outfit's dates. Hence every query is valid in its scenarios: an ST query has a
  same-outfit gallery clip of both modalities on another camera (DT/NT-ST and AD-ST),
  and an LT query has gallery clips of every other outfit in both modalities on
  cameras that are never its own (DT/NT-LT and AD-LT).
* Each (person, date, clothes, camera) clip carries exactly one flag.
* Deterministic: identities, outfits and cameras are drawn from generators seeded by
  ``(seed, kind, ids...)``, the plan from ``(seed, ...)`` and every clip's frames from
  ``(seed, person, date, clothes, camera, flag)``, so the bytes do not depend on the
  number of worker processes.

Counts (``synthetic_counts.json`` and the return value) have the structure
:meth:`atreid.data.benchmarks.atustc.ATUSTC.statistics` computes from the index::

    {"train":   {"ids", "outfits", "rgb_cameras", "ir_cameras", "clips", "images"},  # flag 0
     "val":     {...},  # flag 1
     "query":   {...},  # flags 2-5
     "gallery": {...},  # flags 6-9
     "test":    {...},  # flags 2-9
     "flag0": {...}, ..., "flag9": {...},
     "all":     {...}}

with ``outfits`` = distinct (person, clothes) pairs and ``clips`` = distinct
(person, date, clothes, camera) clips.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from atreid.constants import FLAG_NAMES, IR_CAMERAS, RGB_CAMERAS
from atreid.errors import AtreidError
from atreid.io import atomic_output_dir, atomic_write_json, progress
from atreid.data.synthetic.render import Camera, Identity, Outfit, render_image

TOP_FOLDER = "AT-USTC"
COUNTS_FILE = "synthetic_counts.json"
TEST_FRAMES = 3                       # query/gallery images per test clip (protocol)
SPLIT_FLAGS: dict[str, tuple[int, ...]] = {
    "train": (0,), "val": (1,), "query": (2, 3, 4, 5), "gallery": (6, 7, 8, 9),
    "test": (2, 3, 4, 5, 6, 7, 8, 9),
}
# Test clip roles per modality: (ST query, ST gallery, LT query, LT gallery) flags.
RGB_ROLES = (2, 6, 3, 7)
IR_ROLES = (4, 8, 5, 9)

# Seed-stream tags, so the draws of different kinds never share a generator.
_IDENTITY, _OUTFIT, _CAMERA, _SCHEDULE, _CLIP, _VAL = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the plan: a (person, date, clothes, camera) video with one flag."""

    person: int
    date: int
    clothes: int
    camera: int
    flag: int
    frames: tuple[int, ...]

    @property
    def folder(self) -> str:
        return f"p{self.person:03d}-d{self.date:02d}-c{self.clothes:02d}"

    def file_name(self, frame: int) -> str:
        return f"cam{self.camera:02d}-f{self.flag}-{frame:04d}.jpg"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def _check_settings(train_persons: int, test_persons: int, outfits: Sequence[int], dates: int,
                    train_cameras_per_outfit: int, train_frames_per_clip: int, val_fraction: float,
                    image_height: int, image_width: int, jpeg_quality: int) -> None:
    problems = []
    if train_persons < 1 or test_persons < 2 or train_persons + test_persons > 999:
        problems.append("train_persons >= 1, test_persons >= 2 and their sum <= 999 (3-digit person ids)")
    if len(outfits) != 2 or not 1 <= outfits[0] <= outfits[1]:
        problems.append("outfits = [min, max] with 1 <= min <= max")
    if not 2 <= dates <= 99:
        problems.append("dates between 2 and 99 (test persons need two outfits on different dates)")
    if not 2 <= train_cameras_per_outfit <= 16:
        problems.append("train_cameras_per_outfit between 2 and 16 (at least one RGB and one IR camera)")
    if not 1 <= train_frames_per_clip <= 9000:
        problems.append("train_frames_per_clip between 1 and 9000 (4-digit frame numbers)")
    if not 0 <= val_fraction < 1:
        problems.append("val_fraction in [0, 1)")
    if image_height < 32 or image_width < 16:
        problems.append("image_height >= 32 and image_width >= 16")
    if not 1 <= jpeg_quality <= 100:
        problems.append("jpeg_quality between 1 and 100")
    if problems:
        raise AtreidError("data.synthetic: invalid settings: need " + "; ".join(problems))


def _schedule(seed: int, person: int, outfits: Sequence[int], dates: int, minimum: int) -> dict[int, int]:
    """date -> clothes id of one person (one outfit per date, every outfit worn at least once)."""
    rng = _rng(seed, _SCHEDULE, person)
    count = int(rng.integers(outfits[0], outfits[1] + 1))
    count = min(max(count, minimum), dates)
    order = rng.permutation(dates)
    worn = np.empty(dates, dtype=int)
    worn[order[:count]] = np.arange(count)
    if dates > count:
        worn[order[count:]] = rng.integers(0, count, dates - count)
    # Clothes ids in order of first appearance: c01 is the outfit of the first date.
    relabel: dict[int, int] = {}
    for outfit in worn:
        relabel.setdefault(int(outfit), len(relabel) + 1)
    return {date + 1: relabel[int(worn[date])] for date in range(dates)}


def _frames(rng: np.random.Generator, count: int, step: int) -> tuple[int, ...]:
    step = step if count * step < 9000 else 1
    start = int(rng.integers(0, 10000 - count * step))
    return tuple(start + step * i for i in range(count))


def _train_clips(seed: int, person: int, schedule: dict[int, int], cameras: int, frames: int) -> list[ClipSpec]:
    rng = _rng(seed, _SCHEDULE, person, 1)
    clips = []
    for date, clothes in schedule.items():
        n_rgb = cameras // 2 + (cameras % 2) * int(rng.integers(0, 2))
        chosen = sorted(rng.choice(list(RGB_CAMERAS), n_rgb, replace=False).tolist()
                        + rng.choice(list(IR_CAMERAS), cameras - n_rgb, replace=False).tolist())
        for camera in chosen:
            clips.append(ClipSpec(person, date, clothes, int(camera), 0, _frames(rng, frames, 5)))
    return clips


def _test_clips(seed: int, person: int, schedule: dict[int, int]) -> list[ClipSpec]:
    rng = _rng(seed, _SCHEDULE, person, 2)
    dates_of: dict[int, list[int]] = {}
    for date, clothes in schedule.items():
        dates_of.setdefault(clothes, []).append(date)
    clips = []
    for cams, roles in ((RGB_CAMERAS, RGB_ROLES), (IR_CAMERAS, IR_ROLES)):
        perm = rng.permutation(list(cams))
        lt_query, lt_gallery, short_term = perm[:2], perm[2:4], perm[4:]
        st_query_flag, st_gallery_flag, lt_query_flag, lt_gallery_flag = roles
        for clothes in sorted(dates_of):
            st_q, st_g = rng.choice(short_term, 2, replace=False)
            for camera, flag in ((st_q, st_query_flag), (st_g, st_gallery_flag),
                                 (rng.choice(lt_query), lt_query_flag), (rng.choice(lt_gallery), lt_gallery_flag)):
                date = int(rng.choice(dates_of[clothes]))
                clips.append(ClipSpec(person, date, clothes, int(camera), flag, _frames(rng, TEST_FRAMES, 10)))
    return clips


def _assign_validation(seed: int, clips: list[ClipSpec], persons: Sequence[int], val_fraction: float) -> list[ClipSpec]:
    """Flag about ``val_fraction`` of the clips 1, keeping every outfit and modality in flag 0."""
    by_person: dict[int, list[int]] = {p: [] for p in persons}
    for i, clip in enumerate(clips):
        by_person[clip.person].append(i)
    # Largest-remainder quotas: the total is round(val_fraction * clips), ties broken at random.
    rng = _rng(seed, _VAL)
    exact = {p: val_fraction * len(idx) for p, idx in by_person.items()}
    quota = {p: math.floor(x) for p, x in exact.items()}
    extra = round(val_fraction * len(clips)) - sum(quota.values())
    tiebreak = dict(zip(persons, rng.permutation(len(persons)).tolist()))
    ranked = sorted(persons, key=lambda p: (-(exact[p] - quota[p]), tiebreak[p]))
    for p in ranked[:max(extra, 0)]:
        quota[p] += 1
    result = list(clips)
    for p in persons:
        idx = by_person[p]
        remaining_outfit: dict[int, int] = {}
        remaining_modality: dict[bool, int] = {}
        for i in idx:
            remaining_outfit[clips[i].clothes] = remaining_outfit.get(clips[i].clothes, 0) + 1
            ir = clips[i].camera in IR_CAMERAS
            remaining_modality[ir] = remaining_modality.get(ir, 0) + 1
        taken = 0
        for j in _rng(seed, _VAL, p).permutation(len(idx)):
            if taken >= quota[p]:
                break
            clip = clips[idx[j]]
            ir = clip.camera in IR_CAMERAS
            if remaining_outfit[clip.clothes] > 1 and remaining_modality[ir] > 1:
                remaining_outfit[clip.clothes] -= 1
                remaining_modality[ir] -= 1
                result[idx[j]] = ClipSpec(clip.person, clip.date, clip.clothes, clip.camera, 1, clip.frames)
                taken += 1
    return result


def plan_atustc(*, seed: int, train_persons: int, test_persons: int, outfits: Sequence[int], dates: int,
                train_cameras_per_outfit: int, train_frames_per_clip: int, val_fraction: float) -> list[ClipSpec]:
    """Every clip of the synthetic dataset (person, date, clothes, camera, flag, frames), sorted."""
    train_ids = list(range(1, train_persons + 1))
    test_ids = list(range(train_persons + 1, train_persons + test_persons + 1))
    train: list[ClipSpec] = []
    for person in train_ids:
        schedule = _schedule(seed, person, outfits, dates, minimum=1)
        train += _train_clips(seed, person, schedule, train_cameras_per_outfit, train_frames_per_clip)
    train = _assign_validation(seed, train, train_ids, val_fraction)
    test: list[ClipSpec] = []
    for person in test_ids:
        test += _test_clips(seed, person, _schedule(seed, person, outfits, dates, minimum=2))
    return sorted(train + test, key=lambda c: (c.person, c.date, c.clothes, c.camera, c.flag))


def plan_statistics(clips: Iterable[ClipSpec]) -> dict[str, dict[str, int]]:
    """Per split and per flag counts of a plan (see the module docstring)."""
    clips = list(clips)

    def stats(selected: list[ClipSpec]) -> dict[str, int]:
        return {
            "ids": len({c.person for c in selected}),
            "outfits": len({(c.person, c.clothes) for c in selected}),
            "rgb_cameras": len({c.camera for c in selected if c.camera in RGB_CAMERAS}),
            "ir_cameras": len({c.camera for c in selected if c.camera in IR_CAMERAS}),
            "clips": len({(c.person, c.date, c.clothes, c.camera) for c in selected}),
            "images": sum(len(c.frames) for c in selected),
        }

    result = {split: stats([c for c in clips if c.flag in flags]) for split, flags in SPLIT_FLAGS.items()}
    for flag in FLAG_NAMES:
        result[f"flag{flag}"] = stats([c for c in clips if c.flag == flag])
    result["all"] = stats(clips)
    return result


def person_identity(seed: int, person: int) -> Identity:
    return Identity.sample(_rng(seed, _IDENTITY, person))


def person_outfit(seed: int, person: int, clothes: int) -> Outfit:
    return Outfit.sample(_rng(seed, _OUTFIT, person, clothes))


def camera_model(seed: int, camera: int) -> Camera:
    return Camera.sample(_rng(seed, _CAMERA, camera), camera)


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    """Encode one frame (the single writer of the generator; tests replace it)."""
    # start-up: PIL loaded only when this runs
    from PIL import Image

    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def _render_person(task: tuple[Path, int, list[ClipSpec], int, int, int]) -> int:
    """Render and write every clip of one person; returns the number of images."""
    root, seed, clips, height, width, quality = task
    written = 0
    if not clips:
        return 0
    identity = person_identity(seed, clips[0].person)
    for clip in clips:
        outfit = person_outfit(seed, clip.person, clip.clothes)
        camera = camera_model(seed, clip.camera)
        rng = _rng(seed, _CLIP, clip.person, clip.date, clip.clothes, clip.camera, clip.flag)
        folder = root / clip.folder
        folder.mkdir(exist_ok=True)
        for frame in clip.frames:
            image = render_image(identity, outfit, camera, infrared=clip.camera in IR_CAMERAS,
                                 rng=rng, height=height, width=width)
            _write_jpeg(folder / clip.file_name(frame), image, quality)
            written += 1
    return written


def generate_atustc(out_dir: str | Path, *, seed: int, train_persons: int, test_persons: int,
                    outfits: Sequence[int], dates: int, train_cameras_per_outfit: int,
                    train_frames_per_clip: int, val_fraction: float, image_height: int,
                    image_width: int, jpeg_quality: int, workers: int = 1) -> dict[str, dict[str, int]]:
    """Generate the synthetic AT-USTC under ``out_dir/AT-USTC`` (see the module docstring).

    Args:
        out_dir: folder that receives ``AT-USTC/`` and ``synthetic_counts.json``.
        seed: seed of every draw; the same seed and sizes give byte-identical files.
        train_persons, test_persons: numbers of training and (disjoint) test identities.
        outfits: ``[min, max]`` outfits per person.
        dates: capture dates (each person wears one outfit per date).
        train_cameras_per_outfit: cameras filming one training session (half RGB, half IR).
        train_frames_per_clip: frames per training clip.
        val_fraction: share of the training identities' clips flagged 1 (validation).
        image_height, image_width: frame size in pixels.
        jpeg_quality: JPEG quality (1-100).
        workers: processes rendering persons in parallel (the output does not depend on it).

    Returns:
        The expected statistics (also written to ``out_dir/synthetic_counts.json``).
    """
    _check_settings(train_persons, test_persons, outfits, dates, train_cameras_per_outfit,
                    train_frames_per_clip, val_fraction, image_height, image_width, jpeg_quality)
    out_dir = Path(out_dir)
    clips = plan_atustc(seed=seed, train_persons=train_persons, test_persons=test_persons,
                        outfits=outfits, dates=dates, train_cameras_per_outfit=train_cameras_per_outfit,
                        train_frames_per_clip=train_frames_per_clip, val_fraction=val_fraction)
    counts = plan_statistics(clips)
    by_person: dict[int, list[ClipSpec]] = {}
    for clip in clips:
        by_person.setdefault(clip.person, []).append(clip)

    # Counts describe the dataset beside them: drop stale ones before replacing the images.
    (out_dir / COUNTS_FILE).unlink(missing_ok=True)
    with atomic_output_dir(out_dir / TOP_FOLDER) as root:
        tasks = [(root, seed, person_clips, image_height, image_width, jpeg_quality)
                 for person_clips in by_person.values()]
        desc = f"render AT-USTC ({counts['all']['images']} images)"
        if workers <= 1:
            for _ in progress(map(_render_person, tasks), total=len(tasks), desc=desc, unit="person"):
                pass
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in progress(pool.map(_render_person, tasks), total=len(tasks), desc=desc, unit="person"):
                    pass
        atomic_write_json(out_dir / COUNTS_FILE, counts)
    return counts
